//! Admin on consumer groups: listing, deleting, resetting, and looking at one message.

mod common;

use common::waiting::Polled;
use common::{Backend, WAIT, both_backends};
use embus::{
    Broker, Error, GroupOptions, ManualClock, Record, RecvError, Start, TopicOptions, TryRecvError,
};

both_backends!(groups_lists_every_group_sorted);
fn groups_lists_every_group_sorted(backend: Backend) {
    let bus = backend.bus();
    let t = bus.topic::<u32>("t").unwrap();
    assert!(t.groups().is_empty());
    let _b = t.join_group("b").unwrap();
    drop(t.join_group("a").unwrap()); // memberless groups are listed too
    let _c = t
        .join_group_with("c", GroupOptions::default().start(Start::Latest))
        .unwrap();
    assert_eq!(t.groups(), ["a", "b", "c"]);
    assert_eq!(
        bus.topic::<u32>("other").unwrap().groups(),
        Vec::<String>::new()
    );
}

both_backends!(deleting_a_group_tells_its_members_and_wakes_blocked_ones);
fn deleting_a_group_tells_its_members_and_wakes_blocked_ones(backend: Backend) {
    let bus = backend.bus();
    let t = bus.topic::<u32>("t").unwrap();
    let mut idle = t.join_group("g").unwrap();
    let mut member = t.join_group("g").unwrap();
    let blocked = Polled::waiting(member.recv_async());
    t.delete_group("g").unwrap();
    let woken = blocked.woken();
    assert!(
        matches!(&woken, Err(RecvError::Deleted(d)) if d.name() == "t" && d.group_name() == Some("g")),
        "{woken:?}"
    );
    let err = idle.try_recv().unwrap_err();
    assert!(matches!(&err, TryRecvError::Deleted(_)), "{err:?}");
    assert!(
        err.to_string().contains("`g`") && err.to_string().contains("`t`"),
        "{err}"
    );
    assert!(
        matches!(idle.try_recv(), Err(TryRecvError::Deleted(_))),
        "the end of the stream, as often as asked"
    );
    assert!(idle.iter().next().is_none(), "an iterator ends");
    assert!(t.groups().is_empty());
    assert_eq!(t.group_position("g"), None);
    assert!(matches!(
        t.delete_group("g"),
        Err(Error::NoSuchGroup { .. })
    ));
    // The name is free: a new group starts over, with new options.
    t.producer().send(1).unwrap();
    let mut fresh = t
        .join_group_with("g", GroupOptions::default().start(Start::Latest))
        .unwrap();
    t.producer().send(2).unwrap();
    assert_eq!(common::take(&mut fresh, 1), [2]);
}

both_backends!(a_message_of_a_deleted_group_settles_as_a_no_op);
fn a_message_of_a_deleted_group_settles_as_a_no_op(backend: Backend) {
    let bus = backend.bus();
    let t = bus.topic::<u32>("t").unwrap();
    let mut member = t.join_group("g").unwrap();
    t.producer().send_batch(vec![1, 2]).unwrap();
    let a = member.recv_timeout(WAIT).unwrap();
    let b = member.recv_timeout(WAIT).unwrap();
    t.delete_group("g").unwrap();
    let _g = t.join_group("g").unwrap(); // a new group of the same name
    a.ack().unwrap();
    drop(b);
    assert_eq!(
        t.group_position("g"),
        Some(vec![0]),
        "the new group is untouched"
    );
}

#[test]
fn a_deleted_group_stays_deleted_after_a_reopen() {
    let path = common::fresh_dir("group-delete-reopen").join("bus.embus");
    {
        let bus = Broker::open(&path).unwrap();
        let t = bus.topic::<u32>("t").unwrap();
        t.producer().send_batch(vec![1, 2]).unwrap();
        let opts = GroupOptions::default().max_deliveries(2).dead_letter("d");
        let mut g = t.join_group_with("gone", opts).unwrap();
        common::take(&mut g, 1);
        drop(g);
        drop(t.join_group("kept").unwrap());
        t.delete_group("gone").unwrap();
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let t = bus.topic::<u32>("t").unwrap();
    assert_eq!(t.groups(), ["kept"]);
    // Its stored options went too: a join with other options is no mismatch.
    let mut g = t.join_group_with("gone", GroupOptions::default()).unwrap();
    assert_eq!(
        common::take(&mut g, 2),
        [1, 2],
        "a new group, from the start"
    );
    bus.close().unwrap();
}

both_backends!(reset_moves_a_memberless_group);
fn reset_moves_a_memberless_group(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let opts = TopicOptions::default().partitions(2);
    let t = bus.topic_with::<u32>("t", opts).unwrap();
    t.producer().send_batch((0..6).collect()).unwrap();
    let mut member = t.join_group("g").unwrap();
    let held = member.recv_timeout(WAIT).unwrap();
    let busy = t.reset_group("g", Start::Earliest).unwrap_err();
    assert!(matches!(&busy, Error::GroupBusy { topic, group } if topic == "t" && group == "g"));
    assert!(busy.to_string().contains("`g`"), "{busy}");
    assert!(matches!(
        t.reset_group("nope", Start::Earliest),
        Err(Error::NoSuchGroup { .. })
    ));
    drop(held);
    drop(member);
    t.reset_group("g", Start::Latest).unwrap();
    assert_eq!(t.group_position("g"), Some(vec![3, 3]));
    t.reset_group("g", Start::Offset(1)).unwrap();
    assert_eq!(t.group_position("g"), Some(vec![1, 1]));
    let mut member = t.join_group("g").unwrap();
    let mut got = common::take(&mut member, 4);
    got.sort_unstable();
    assert_eq!(got, [2, 3, 4, 5]);
    assert!(member.try_recv().is_err());
}

#[test]
fn a_reset_position_is_stored() {
    let path = common::fresh_dir("group-reset-reopen").join("bus.embus");
    {
        let bus = Broker::open(&path).unwrap();
        let t = bus.topic::<u32>("t").unwrap();
        t.producer().send_batch(vec![1, 2, 3]).unwrap();
        let mut g = t.join_group("g").unwrap();
        common::take(&mut g, 3);
        drop(g);
        t.reset_group("g", Start::Offset(1)).unwrap();
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let t = bus.topic::<u32>("t").unwrap();
    assert_eq!(t.group_position("g"), Some(vec![1]));
    let mut g = t.join_group("g").unwrap();
    assert_eq!(common::take(&mut g, 2), [2, 3]);
    bus.close().unwrap();
}

both_backends!(get_copies_a_retained_message_and_changes_nothing);
fn get_copies_a_retained_message_and_changes_nothing(backend: Backend) {
    let bus = backend.bus();
    let opts = TopicOptions::default()
        .partitions(2)
        .retention(embus::Retention::messages(2));
    let t = bus.topic_with::<String>("t", opts).unwrap();
    let p = t.producer();
    let r = p
        .send_record(Record::new("a".to_owned()).key("k").header("h", "v"))
        .unwrap();
    let mut member = t.join_group("g").unwrap();
    let peeked = t.get(r.partition, r.offset).unwrap().unwrap();
    assert_eq!(peeked.payload(), "a");
    assert_eq!(peeked.key(), Some(&b"k"[..]));
    assert_eq!(peeked.headers().get("h"), Some(&b"v"[..]));
    assert_eq!(
        (peeked.partition(), peeked.offset()),
        (r.partition, r.offset)
    );
    assert_eq!(peeked.delivery_count(), 0);
    // Nothing moved: the group still gets it, as its first delivery.
    let m = member.recv_timeout(WAIT).unwrap();
    assert_eq!((m.payload().as_str(), m.delivery_count()), ("a", 1));
    m.ack().unwrap();
    assert!(
        t.get(r.partition, r.offset + 1).unwrap().is_none(),
        "not written yet"
    );
    let err = t.get(2, 0).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoSuchPartition {
                partition: 2,
                partitions: 2,
                ..
            }
        ),
        "{err}"
    );
    // A trimmed offset is gone (the group, under `Block`, would hold it).
    drop(member);
    t.delete_group("g").unwrap();
    for i in 0..4 {
        p.send_record(Record::new(i.to_string()).key("k")).unwrap();
    }
    assert!(t.get(r.partition, r.offset).unwrap().is_none(), "trimmed");
}

#[test]
fn get_reads_back_offsets_below_the_in_memory_tail() {
    let path = common::fresh_dir("topic-get-cold").join("bus.embus");
    let opts = TopicOptions::default().retention(embus::Retention::unlimited());
    let n = 20_000u64;
    {
        let bus = Broker::open(&path).unwrap();
        let t = bus.topic_with::<u64>("t", opts).unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
            t.producer().send_batch(chunk.to_vec()).unwrap();
        }
        assert_eq!(
            *t.get(0, 3).unwrap().unwrap().payload(),
            3,
            "cold in this run"
        );
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let t = bus.topic_with::<u64>("t", opts).unwrap();
    assert_eq!(*t.get(0, 7).unwrap().unwrap().payload(), 7);
    assert_eq!(*t.get(0, n - 1).unwrap().unwrap().payload(), n - 1);
    assert!(t.get(0, n).unwrap().is_none());
    let _ = RecvError::Disconnected;
    bus.close().unwrap();
}

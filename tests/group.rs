//! Consumer groups: assignment and rebalancing, acks and redelivery, positions, starts, lag, `Block`, `wait_idle`.

mod common;

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{BRIEF, Backend, WAIT, both_backends};
use embus::{
    Broker, Consumer, Error, GroupOptions, ManualClock, Message, Overflow, Payload,
    RecvTimeoutError, Retention, Start, Topic, TopicOptions,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn topic(bus: &Broker, partitions: u32) -> Topic<u64> {
    bus.topic_with("t", TopicOptions::default().partitions(partitions))
        .unwrap()
}

/// Receives one message within `WAIT`.
fn recv<T: Payload>(consumer: &mut Consumer<T>) -> Message<T> {
    consumer.recv_timeout(WAIT).unwrap()
}

/// Asserts that nothing arrives within `BRIEF`.
fn assert_nothing_arrives<T: Payload>(consumer: &mut Consumer<T>) {
    let got = consumer.recv_timeout(BRIEF);
    assert!(
        matches!(got, Err(RecvTimeoutError::Timeout)),
        "expected nothing, got {got:?}"
    );
}

/// Asserts that the members' assignments are disjoint and cover every partition.
fn assert_covers(members: &[&Consumer<u64>], partitions: u32) {
    let mut seen = BTreeSet::new();
    for (i, m) in members.iter().enumerate() {
        for p in m.partitions() {
            assert!(seen.insert(p), "partition {p} has two owners (member {i})");
        }
    }
    assert_eq!(
        seen,
        (0..partitions).collect(),
        "every partition has an owner"
    );
}

// ---------------------------------------------------------------------------------------------
// Assignment and rebalancing
// ---------------------------------------------------------------------------------------------

both_backends!(a_single_member_owns_every_partition);
fn a_single_member_owns_every_partition(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 3);
    let mut a = t.join_group("g").unwrap();
    assert_eq!(a.partitions(), [0, 1, 2]);
    t.producer().send_batch((0..6).collect()).unwrap();
    let mut got = common::take(&mut a, 6);
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2, 3, 4, 5]);
}

both_backends!(partitions_spread_evenly_over_members);
fn partitions_spread_evenly_over_members(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 4);
    let a = t.join_group("g").unwrap();
    let b = t.join_group("g").unwrap();
    assert_covers(&[&a, &b], 4);
    assert_eq!(a.partitions().len(), 2);
    assert_eq!(b.partitions().len(), 2);
}

both_backends!(each_member_receives_only_its_partitions_and_every_message_once);
fn each_member_receives_only_its_partitions_and_every_message_once(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 4);
    let mut a = t.join_group("g").unwrap();
    let mut b = t.join_group("g").unwrap();
    let receipts = t.producer().send_batch((0..40).collect()).unwrap(); // ten per partition
    let mut all = Vec::new();
    for member in [&mut a, &mut b] {
        let mine: BTreeSet<u32> = member.partitions().into_iter().collect();
        for _ in 0..20 {
            let m = recv(member);
            assert!(
                mine.contains(&m.partition()),
                "partition {} is not mine",
                m.partition()
            );
            assert_eq!(receipts[*m.payload() as usize].partition, m.partition());
            all.push(*m.payload());
            m.ack().unwrap();
        }
        assert_nothing_arrives(member);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..40).collect::<Vec<_>>(),
        "each message exactly once"
    );
}

both_backends!(rebalances_when_a_member_joins);
fn rebalances_when_a_member_joins(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 2);
    let a = t.join_group("g").unwrap();
    assert_eq!(a.partitions(), [0, 1]);
    let b = t.join_group("g").unwrap();
    assert_covers(&[&a, &b], 2);
    assert_eq!(a.partitions().len(), 1);
    assert_eq!(b.partitions().len(), 1);
}

both_backends!(joined_member_receives_new_messages_of_its_partitions);
fn joined_member_receives_new_messages_of_its_partitions(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 2);
    let mut a = t.join_group("g").unwrap();
    let mut b = t.join_group("g").unwrap();
    let receipts = t.producer().send_batch(vec![0, 1]).unwrap();
    let mb = recv(&mut b);
    assert_eq!(b.partitions(), [mb.partition()]);
    assert_eq!(receipts[*mb.payload() as usize].partition, mb.partition());
    mb.ack().unwrap();
    let ma = recv(&mut a);
    assert_ne!(ma.partition(), b.partitions()[0]);
    ma.ack().unwrap();
}

both_backends!(rebalances_when_a_member_is_dropped);
fn rebalances_when_a_member_is_dropped(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 2);
    let mut a = t.join_group("g").unwrap();
    let b = t.join_group("g").unwrap();
    assert_eq!(a.partitions().len(), 1);
    drop(b);
    assert_eq!(a.partitions(), [0, 1]);
    t.producer().send_batch(vec![0, 1]).unwrap();
    let got: BTreeSet<u32> = (0..2)
        .map(|_| {
            let m = recv(&mut a);
            let p = m.partition();
            m.ack().unwrap();
            p
        })
        .collect();
    assert_eq!(got, [0, 1].into(), "the survivor reads both partitions");
}

both_backends!(members_beyond_the_partition_count_stay_idle);
fn members_beyond_the_partition_count_stay_idle(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 2);
    let mut members: Vec<Consumer<u64>> = (0..3).map(|_| t.join_group("g").unwrap()).collect();
    assert_covers(&members.iter().collect::<Vec<_>>(), 2);
    let idle: Vec<usize> = (0..3)
        .filter(|&i| members[i].partitions().is_empty())
        .collect();
    assert_eq!(idle.len(), 1, "exactly one idle member");

    t.producer().send_batch((0..4).collect()).unwrap();
    for (i, member) in members.iter_mut().enumerate() {
        if i == idle[0] {
            assert_nothing_arrives(member);
            assert_eq!(member.lag(), 0);
        } else {
            assert_eq!(common::take(member, 2).len(), 2);
            assert_nothing_arrives(member);
        }
    }
}

both_backends!(idle_member_takes_over_when_an_owner_is_dropped);
fn idle_member_takes_over_when_an_owner_is_dropped(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 2);
    let mut members: Vec<Consumer<u64>> = (0..3).map(|_| t.join_group("g").unwrap()).collect();
    let idle = members
        .iter()
        .position(|m| m.partitions().is_empty())
        .unwrap();
    let mut was_idle = members.remove(idle);
    drop(members.remove(0)); // one of the two owners leaves
    let survivor = &members[0];
    assert_covers(&[&was_idle, survivor], 2);
    let taken = was_idle.partitions();
    assert_eq!(taken.len(), 1, "the idle member now owns a partition");

    t.producer().send_batch(vec![0, 1]).unwrap();
    let m = recv(&mut was_idle);
    assert_eq!(m.partition(), taken[0]);
    m.ack().unwrap();
}

both_backends!(rebalance_converges_after_many_joins_and_drops);
fn rebalance_converges_after_many_joins_and_drops(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 5);
    let mut members: Vec<Consumer<u64>> = Vec::new();
    for _ in 0..7 {
        members.push(t.join_group("g").unwrap());
        assert_covers(&members.iter().collect::<Vec<_>>(), 5);
    }
    while members.len() > 1 {
        members.remove(0);
        assert_covers(&members.iter().collect::<Vec<_>>(), 5);
        let busy = members
            .iter()
            .filter(|m| !m.partitions().is_empty())
            .count();
        assert_eq!(busy, members.len().min(5), "{} members", members.len());
    }
    assert_eq!(members[0].partitions(), [0, 1, 2, 3, 4]);
}

both_backends!(groups_are_independent_and_each_sees_every_message);
fn groups_are_independent_and_each_sees_every_message(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 2);
    let mut billing = t.join_group("billing").unwrap();
    let mut audit = t.join_group("audit").unwrap();
    assert_eq!(billing.partitions(), [0, 1]);
    assert_eq!(
        audit.partitions(),
        [0, 1],
        "another group has its own assignment"
    );
    t.producer().send_batch((0..6).collect()).unwrap();
    for member in [&mut billing, &mut audit] {
        let mut got = common::take(member, 6);
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    }
    assert_eq!(t.group_position("billing"), Some(vec![3, 3]));
    assert_eq!(t.group_position("audit"), Some(vec![3, 3]));
}

both_backends!(invalid_group_name_is_rejected);
fn invalid_group_name_is_rejected(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let err = t.join_group("no spaces").unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err:?}");
    let err = t.join_group("").unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err:?}");
}

both_backends!(members_in_threads_share_the_work);
fn members_in_threads_share_the_work(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 4);
    let members: Vec<Consumer<u64>> = (0..2).map(|_| t.join_group("g").unwrap()).collect();
    let workers: Vec<_> = members
        .into_iter()
        .map(|mut m| {
            assert_eq!(m.partitions().len(), 2);
            // Round-robin: 50 of the 200 messages per partition, 100 per member.
            thread::spawn(move || common::take(&mut m, 100))
        })
        .collect();
    let p = t.producer();
    for i in 0..200 {
        p.send(i).unwrap();
    }
    let mut all: Vec<u64> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>());
    bus.wait_idle(WAIT).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Acks and redelivery (at-least-once)
// ---------------------------------------------------------------------------------------------

both_backends!(acked_message_is_not_redelivered);
fn acked_message_is_not_redelivered(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    t.producer().send(7).unwrap();
    let m = recv(&mut a);
    assert_eq!((*m.payload(), m.delivery_count()), (7, 1));
    m.ack().unwrap();
    assert_nothing_arrives(&mut a);
}

both_backends!(members_see_each_partition_in_offset_order);
fn members_see_each_partition_in_offset_order(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    t.producer().send_batch((0..50).collect()).unwrap();
    for i in 0..50 {
        let m = recv(&mut a);
        assert_eq!((m.offset(), *m.payload()), (i, i));
        m.ack().unwrap();
    }
}

both_backends!(nack_redelivers_with_delivery_count_two);
fn nack_redelivers_with_delivery_count_two(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    t.producer().send(7).unwrap();
    let first = recv(&mut a);
    assert_eq!(first.delivery_count(), 1);
    first.nack().unwrap();
    let again = recv(&mut a);
    assert_eq!(
        (*again.payload(), again.offset(), again.delivery_count()),
        (7, 0, 2)
    );
    again.ack().unwrap();
    assert_nothing_arrives(&mut a);
}

both_backends!(delivery_count_keeps_rising_with_each_nack);
fn delivery_count_keeps_rising_with_each_nack(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    t.producer().send(7).unwrap();
    for count in 1..=4 {
        let m = recv(&mut a);
        assert_eq!(m.delivery_count(), count);
        m.nack().unwrap();
    }
    assert_eq!(recv(&mut a).delivery_count(), 5);
}

both_backends!(dropped_message_is_redelivered);
fn dropped_message_is_redelivered(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    t.producer().send(7).unwrap();
    drop(recv(&mut a));
    let again = recv(&mut a);
    assert_eq!((*again.payload(), again.delivery_count()), (7, 2));
    again.ack().unwrap();
}

both_backends!(nacked_message_keeps_its_key_and_headers);
fn nacked_message_keeps_its_key_and_headers(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    t.producer()
        .send_record(embus::Record::new(1).key("k").header("h", b"v"))
        .unwrap();
    recv(&mut a).nack().unwrap();
    let again = recv(&mut a);
    assert_eq!(again.key(), Some(&b"k"[..]));
    assert_eq!(again.headers().get("h"), Some(&b"v"[..]));
}

both_backends!(unacked_message_held_by_a_member_is_not_given_to_another);
fn unacked_message_held_by_a_member_is_not_given_to_another(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    let mut b = t.join_group("g").unwrap();
    t.producer().send(7).unwrap();
    let (owner, other) = if a.partitions().is_empty() {
        (&mut b, &mut a)
    } else {
        (&mut a, &mut b)
    };
    let held = recv(owner);
    assert_nothing_arrives(owner);
    assert_nothing_arrives(other);
    held.ack().unwrap();
}

both_backends!(a_join_that_leaves_a_partition_in_place_does_not_redeliver_it);
fn a_join_that_leaves_a_partition_in_place_does_not_redeliver_it(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    t.producer().send(7).unwrap();
    let held = recv(&mut a);
    let mut b = t.join_group("g").unwrap();
    assert_eq!(a.partitions(), [0], "the partition stays with its owner");
    assert_nothing_arrives(&mut a);
    assert_nothing_arrives(&mut b);
    held.ack().unwrap();
    assert_eq!(t.group_position("g"), Some(vec![1]));
}

both_backends!(blocked_idle_member_wakes_when_it_inherits_a_partition);
fn blocked_idle_member_wakes_when_it_inherits_a_partition(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    let mut b = t.join_group("g").unwrap();
    assert!(b.partitions().is_empty());
    let waiting = thread::spawn(move || {
        let m = b.recv_timeout(WAIT).unwrap();
        let got = (*m.payload(), m.delivery_count());
        m.ack().unwrap();
        got
    });
    t.producer().send(7).unwrap();
    let held = recv(&mut a);
    drop(a);
    assert_eq!(waiting.join().unwrap(), (7, 2));
    drop(held);
    assert_eq!(t.group_position("g"), Some(vec![1]));
}

both_backends!(dropped_members_unacked_messages_go_to_the_next_owner);
fn dropped_members_unacked_messages_go_to_the_next_owner(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    let mut b = t.join_group("g").unwrap();
    assert_eq!(a.partitions(), [0], "the first member owns the partition");
    assert!(b.partitions().is_empty());
    t.producer().send_batch(vec![10, 11, 12]).unwrap();

    recv(&mut a).ack().unwrap(); // offset 0 done
    let held = recv(&mut a); // offset 1 in flight
    assert_eq!(held.offset(), 1);
    drop(a);

    assert_eq!(b.partitions(), [0]);
    let m = recv(&mut b);
    assert_eq!((m.offset(), *m.payload(), m.delivery_count()), (1, 11, 2));
    m.ack().unwrap();
    let m = recv(&mut b);
    assert_eq!((m.offset(), m.delivery_count()), (2, 1));
    m.ack().unwrap();

    // The old delivery, dropped late, changes nothing.
    drop(held);
    assert_nothing_arrives(&mut b);
    assert_eq!(t.group_position("g"), Some(vec![3]));
}

both_backends!(released_message_of_a_dropped_member_goes_to_the_next_owner);
fn released_message_of_a_dropped_member_goes_to_the_next_owner(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    let mut b = t.join_group("g").unwrap();
    t.producer().send(7).unwrap();
    let m = recv(&mut a);
    drop(m); // released first, then the member leaves
    drop(a);
    let m = recv(&mut b);
    assert_eq!((*m.payload(), m.delivery_count()), (7, 2));
    m.ack().unwrap();
}

both_backends!(unacked_messages_move_with_a_partition_when_a_member_joins);
fn unacked_messages_move_with_a_partition_when_a_member_joins(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 2);
    let mut a = t.join_group("g").unwrap();
    t.producer().send_batch(vec![0, 1]).unwrap(); // one per partition
    let held = [recv(&mut a), recv(&mut a)];
    let mut b = t.join_group("g").unwrap();
    let moved = b.partitions();
    assert_eq!(moved.len(), 1);

    let m = recv(&mut b);
    assert_eq!(m.partition(), moved[0]);
    assert_eq!(m.delivery_count(), 2, "redelivered to the new owner");
    let original = held.iter().find(|h| h.partition() == moved[0]).unwrap();
    assert_eq!(
        (m.offset(), m.payload()),
        (original.offset(), original.payload())
    );
    m.ack().unwrap();
    assert_nothing_arrives(&mut a);
    drop(held);
    assert_nothing_arrives(&mut b);
}

both_backends!(a_member_that_leaves_with_nothing_in_flight_loses_nothing);
fn a_member_that_leaves_with_nothing_in_flight_loses_nothing(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 2);
    let mut a = t.join_group("g").unwrap();
    let b = t.join_group("g").unwrap();
    t.producer().send_batch((0..10).collect()).unwrap();
    drop(b);
    let mut got = common::take(&mut a, 10);
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert_nothing_arrives(&mut a);
}

// ---------------------------------------------------------------------------------------------
// Group positions
// ---------------------------------------------------------------------------------------------

both_backends!(group_position_is_none_before_anyone_joins);
fn group_position_is_none_before_anyone_joins(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 2);
    assert_eq!(t.group_position("g"), None);
    let _a = t.join_group("g").unwrap();
    assert_eq!(t.group_position("g"), Some(vec![0, 0]));
    assert_eq!(t.group_position("other"), None);
}

both_backends!(group_position_is_the_first_unacked_offset);
fn group_position_is_the_first_unacked_offset(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    t.producer().send_batch((0..6).collect()).unwrap();
    let mut held: Vec<Option<Message<u64>>> = (0..5).map(|_| Some(recv(&mut a))).collect();
    assert_eq!(
        t.group_position("g"),
        Some(vec![0]),
        "received is not acked"
    );

    let mut ack = |i: usize| held[i].take().unwrap().ack().unwrap();
    ack(0);
    ack(1);
    ack(3);
    assert_eq!(
        t.group_position("g"),
        Some(vec![2]),
        "a gap at 2 holds the position"
    );
    ack(2);
    assert_eq!(t.group_position("g"), Some(vec![4]));
    ack(4);
    assert_eq!(
        t.group_position("g"),
        Some(vec![5]),
        "offset 5 was never received"
    );
}

both_backends!(group_position_is_kept_per_partition);
fn group_position_is_kept_per_partition(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 2);
    let mut a = t.join_group("g").unwrap();
    t.producer().send_batch((0..6).collect()).unwrap(); // offsets 0..3 in each partition
    let mut held: Vec<Message<u64>> = (0..6).map(|_| recv(&mut a)).collect();
    held.sort_by_key(|m| (m.partition(), m.offset()));
    let mut held = held.into_iter();
    for _ in 0..3 {
        held.next().unwrap().ack().unwrap(); // all of partition 0
    }
    held.next().unwrap().ack().unwrap(); // partition 1, offset 0
    let p1_offset1 = held.next().unwrap();
    held.next().unwrap().ack().unwrap(); // partition 1, offset 2
    assert_eq!(t.group_position("g"), Some(vec![3, 1]));
    p1_offset1.ack().unwrap();
    assert_eq!(t.group_position("g"), Some(vec![3, 3]));
}

both_backends!(nack_does_not_move_the_group_position);
fn nack_does_not_move_the_group_position(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    t.producer().send_batch(vec![0, 1]).unwrap();
    recv(&mut a).nack().unwrap();
    assert_eq!(t.group_position("g"), Some(vec![0]));
}

both_backends!(group_keeps_its_position_when_every_member_leaves);
fn group_keeps_its_position_when_every_member_leaves(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    t.producer().send_batch((0..4).collect()).unwrap();
    assert_eq!(common::take(&mut a, 2), [0, 1]);
    let _unacked = recv(&mut a); // offset 2, never acked
    drop(a);
    assert_eq!(t.group_position("g"), Some(vec![2]));

    let mut again = t.join_group("g").unwrap();
    let m = recv(&mut again);
    assert_eq!((m.offset(), m.delivery_count()), (2, 2));
    m.ack().unwrap();
    assert_eq!(common::take(&mut again, 1), [3]);
    assert_eq!(t.group_position("g"), Some(vec![4]));
}

// ---------------------------------------------------------------------------------------------
// Where a group starts
// ---------------------------------------------------------------------------------------------

both_backends!(new_group_starts_at_earliest);
fn new_group_starts_at_earliest(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    t.producer().send_batch(vec![1, 2, 3]).unwrap();
    let mut a = t.join_group("g").unwrap();
    assert_eq!(t.group_position("g"), Some(vec![0]));
    assert_eq!(common::take(&mut a, 3), [1, 2, 3]);
}

both_backends!(new_group_starts_at_the_oldest_retained_message);
fn new_group_starts_at_the_oldest_retained_message(backend: Backend) {
    let bus = backend.bus();
    let t: Topic<u64> = bus
        .topic_with(
            "t",
            TopicOptions::default().retention(Retention::messages(3)),
        )
        .unwrap();
    t.producer().send_batch((0..5).collect()).unwrap(); // retains 2, 3, 4
    let mut a = t.join_group("g").unwrap();
    assert_eq!(t.group_position("g"), Some(vec![2]));
    let m = recv(&mut a); // not Lagged: the group never needed 0 and 1
    assert_eq!((m.offset(), *m.payload()), (2, 2));
}

both_backends!(new_group_after_age_expiry_starts_at_the_oldest_retained_message);
fn new_group_after_age_expiry_starts_at_the_oldest_retained_message(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let t: Topic<u64> = bus
        .topic_with(
            "t",
            TopicOptions::default().retention(Retention::age(Duration::from_secs(10))),
        )
        .unwrap();
    let p = t.producer();
    p.send_batch(vec![0, 1]).unwrap();
    clock.advance(Duration::from_secs(6));
    p.send(2).unwrap();
    clock.advance(Duration::from_secs(5)); // 0 and 1 expire, 2 does not
    let mut a = t.join_group("g").unwrap();
    let m = recv(&mut a);
    assert_eq!((m.offset(), *m.payload()), (2, 2));
    assert_eq!(t.group_position("g"), Some(vec![2]));
}

both_backends!(join_group_with_latest_skips_existing_messages);
fn join_group_with_latest_skips_existing_messages(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 2);
    let p = t.producer();
    p.send_batch((0..4).collect()).unwrap();
    let mut a = t
        .join_group_with("g", GroupOptions::default().start(Start::Latest))
        .unwrap();
    assert_eq!(t.group_position("g"), Some(vec![2, 2]));
    assert_nothing_arrives(&mut a);
    p.send(4).unwrap();
    let m = recv(&mut a);
    assert_eq!((*m.payload(), m.offset()), (4, 2));
    m.ack().unwrap();
}

both_backends!(join_group_with_offset_starts_there);
fn join_group_with_offset_starts_there(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    t.producer().send_batch((0..5).collect()).unwrap();
    let mut a = t
        .join_group_with("g", GroupOptions::default().start(Start::Offset(3)))
        .unwrap();
    assert_eq!(t.group_position("g"), Some(vec![3]));
    assert_eq!(common::take(&mut a, 2), [3, 4]);
}

both_backends!(join_group_with_time_starts_at_the_first_message_at_or_after_it);
fn join_group_with_time_starts_at_the_first_message_at_or_after_it(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let t = topic(&bus, 1);
    let p = t.producer();
    p.send(0).unwrap();
    clock.advance(Duration::from_secs(10));
    let from = clock.now();
    p.send_batch(vec![1, 2]).unwrap();
    let mut a = t
        .join_group_with("g", GroupOptions::default().start(Start::Time(from)))
        .unwrap();
    assert_eq!(common::take(&mut a, 2), [1, 2]);
}

both_backends!(an_existing_group_keeps_its_position_for_a_later_join);
fn an_existing_group_keeps_its_position_for_a_later_join(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    t.producer().send_batch((0..3).collect()).unwrap();
    let mut a = t.join_group("g").unwrap();
    assert_eq!(common::take(&mut a, 1), [0]);
    drop(a);
    let mut b = t.join_group("g").unwrap();
    assert_eq!(t.group_position("g"), Some(vec![1]));
    assert_eq!(common::take(&mut b, 2), [1, 2]);
}

// ---------------------------------------------------------------------------------------------
// Lag
// ---------------------------------------------------------------------------------------------

both_backends!(member_lag_counts_unacked_messages_of_its_partitions);
fn member_lag_counts_unacked_messages_of_its_partitions(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let mut a = t.join_group("g").unwrap();
    assert_eq!(a.lag(), 0);
    t.producer().send_batch((0..3).collect()).unwrap();
    assert_eq!(a.lag(), 3);
    recv(&mut a).ack().unwrap();
    assert_eq!(a.lag(), 2);
    let held = recv(&mut a);
    assert_eq!(a.lag(), 2, "received but unacked still counts");
    held.ack().unwrap();
    assert_eq!(a.lag(), 1);
}

both_backends!(member_lag_counts_only_its_own_partitions);
fn member_lag_counts_only_its_own_partitions(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 2);
    let a = t.join_group("g").unwrap();
    let b = t.join_group("g").unwrap();
    let c = t.join_group("g").unwrap(); // idle
    let receipts = t.producer().send_batch((0..5).collect()).unwrap();
    for m in [&a, &b, &c] {
        let mine = m.partitions();
        let expected = receipts
            .iter()
            .filter(|r| mine.contains(&r.partition))
            .count() as u64;
        assert_eq!(m.lag(), expected, "member with partitions {mine:?}");
    }
    assert_eq!(a.lag() + b.lag() + c.lag(), 5);
}

both_backends!(member_lag_counts_only_retained_messages);
fn member_lag_counts_only_retained_messages(backend: Backend) {
    let bus = backend.bus();
    let t: Topic<u64> = bus
        .topic_with(
            "t",
            TopicOptions::default().retention(Retention::messages(3)),
        )
        .unwrap();
    let lag = GroupOptions::default().overflow(Overflow::Lag);
    let a = t.join_group_with("g", lag).unwrap();
    t.producer().send_batch((0..10).collect()).unwrap();
    // "Messages this consumer has yet to receive": seven were trimmed, three can still come.
    assert_eq!(a.lag(), 3);
}

both_backends!(member_behind_lag_retention_gets_lagged_then_continues);
fn member_behind_lag_retention_gets_lagged_then_continues(backend: Backend) {
    let bus = backend.bus();
    let t: Topic<u64> = bus
        .topic_with(
            "t",
            TopicOptions::default()
                .retention(Retention::messages(3))
                .overflow(Overflow::Lag),
        )
        .unwrap();
    let lag = GroupOptions::default().overflow(Overflow::Lag);
    let mut a = t.join_group_with("g", lag).unwrap();
    t.producer().send_batch((0..10).collect()).unwrap();
    assert_eq!(
        a.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Lagged { skipped: 7 }
    );
    assert_eq!(common::take(&mut a, 3), [7, 8, 9]);
    assert_nothing_arrives(&mut a);
    assert_eq!(t.group_position("g"), Some(vec![10]));
}

// ---------------------------------------------------------------------------------------------
// Overflow::Block
// ---------------------------------------------------------------------------------------------

both_backends!(block_waits_for_the_group_to_ack);
fn block_waits_for_the_group_to_ack(backend: Backend) {
    let bus = backend.bus();
    let t: Topic<u64> = bus
        .topic_with(
            "t",
            TopicOptions::default()
                .retention(Retention::messages(2))
                .overflow(Overflow::Block),
        )
        .unwrap();
    let mut a = t.join_group("g").unwrap();
    let p = t.producer();
    p.send_batch(vec![0, 1]).unwrap();
    assert!(p.try_send(2).unwrap_err().is_full());
    let m = recv(&mut a);
    assert!(
        p.try_send(2).unwrap_err().is_full(),
        "received is not acked"
    );
    m.ack().unwrap();
    assert_eq!(p.try_send(2).unwrap().offset, 2);
}

both_backends!(block_send_completes_once_the_group_acks);
fn block_send_completes_once_the_group_acks(backend: Backend) {
    let bus = backend.bus();
    let t: Topic<u64> = bus
        .topic_with(
            "t",
            TopicOptions::default()
                .retention(Retention::messages(1))
                .overflow(Overflow::Block),
        )
        .unwrap();
    let mut a = t.join_group("g").unwrap();
    let p = t.producer();
    p.send(0).unwrap();
    let (done, sent) = mpsc::channel();
    let producer = thread::spawn(move || done.send(p.send(1).map_err(|e| e.into_inner())).unwrap());
    assert!(matches!(
        sent.recv_timeout(BRIEF),
        Err(mpsc::RecvTimeoutError::Timeout)
    ));
    recv(&mut a).ack().unwrap();
    assert_eq!(sent.recv_timeout(WAIT).unwrap().unwrap().offset, 1);
    producer.join().unwrap();
    assert_eq!(common::take(&mut a, 1), [1]);
}

// ---------------------------------------------------------------------------------------------
// wait_idle
// ---------------------------------------------------------------------------------------------

both_backends!(wait_idle_succeeds_once_the_group_caught_up);
fn wait_idle_succeeds_once_the_group_caught_up(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 2);
    let mut a = t.join_group("g").unwrap();
    t.producer().send_batch((0..4).collect()).unwrap();
    common::take(&mut a, 4);
    bus.wait_idle(WAIT).unwrap();
}

both_backends!(wait_idle_times_out_while_the_group_has_unacked_messages);
fn wait_idle_times_out_while_the_group_has_unacked_messages(backend: Backend) {
    let bus = backend.bus();
    let t: Topic<u64> = bus.topic("orders").unwrap();
    let mut a = t.join_group("billing").unwrap();
    t.producer().send_batch(vec![0, 1]).unwrap();
    let _held = recv(&mut a);
    match bus.wait_idle(BRIEF) {
        Err(Error::NotIdle { busy, .. }) => {
            assert!(busy.contains("billing"), "names the group: {busy}");
            assert!(busy.contains("orders"), "names the topic: {busy}");
        }
        other => panic!("expected NotIdle, got {other:?}"),
    }
}

both_backends!(wait_idle_counts_a_group_whose_members_all_left);
fn wait_idle_counts_a_group_whose_members_all_left(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    drop(t.join_group("g").unwrap());
    t.producer().send(1).unwrap();
    assert!(matches!(bus.wait_idle(BRIEF), Err(Error::NotIdle { .. })));
}

both_backends!(wait_idle_returns_when_another_thread_acks);
fn wait_idle_returns_when_another_thread_acks(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 2);
    let mut a = t.join_group("g").unwrap();
    t.producer().send_batch((0..20).collect()).unwrap();
    let worker = thread::spawn(move || common::take(&mut a, 20));
    bus.wait_idle(WAIT).unwrap();
    assert_eq!(t.group_position("g"), Some(vec![10, 10]));
    assert_eq!(worker.join().unwrap().len(), 20);
}

both_backends!(wait_idle_ignores_plain_subscribers);
fn wait_idle_ignores_plain_subscribers(backend: Backend) {
    let bus = backend.bus();
    let t = topic(&bus, 1);
    let _sub = t.subscribe(Start::Earliest).unwrap();
    t.producer().send_batch(vec![0, 1]).unwrap();
    bus.wait_idle(Duration::ZERO).unwrap();
}

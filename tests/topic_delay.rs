//! Delayed records on topics keep their place: readers of the partition reach them in offset
//! order and wait there until they are due.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::waiting::Polled;
use common::{BRIEF, Backend, WAIT, both_backends};
use embus::{Broker, ManualClock, Record, Start, TopicOptions};

both_backends!(a_subscriber_waits_at_a_delayed_record);
fn a_subscriber_waits_at_a_delayed_record(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let t = bus.topic::<u32>("t").unwrap();
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    p.send(0).unwrap();
    p.send_record(Record::new(1).delay(Duration::from_secs(10)))
        .unwrap();
    p.send(2).unwrap();
    assert_eq!(*sub.recv_timeout(WAIT).unwrap().payload(), 0);
    assert!(
        sub.recv_timeout(BRIEF).is_err(),
        "the delayed record and those after it wait"
    );
    clock.advance(Duration::from_secs(9));
    assert!(sub.try_recv().is_err());
    clock.advance(Duration::from_secs(1));
    assert_eq!(*sub.recv_timeout(WAIT).unwrap().payload(), 1);
    assert_eq!(*sub.recv_timeout(WAIT).unwrap().payload(), 2);
}

both_backends!(a_group_member_waits_at_a_delayed_record);
fn a_group_member_waits_at_a_delayed_record(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let t = bus.topic::<u32>("t").unwrap();
    let mut member = t.join_group("g").unwrap();
    let p = t.producer();
    let at = clock.now() + Duration::from_secs(5);
    p.send_record(Record::new(1).deliver_at(at)).unwrap();
    p.send(2).unwrap();
    assert!(member.recv_timeout(BRIEF).is_err());
    clock.advance(Duration::from_secs(5));
    assert_eq!(common::take(&mut member, 2), [1, 2]);
}

both_backends!(a_blocked_receive_wakes_when_the_clock_moves);
fn a_blocked_receive_wakes_when_the_clock_moves(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let t = bus.topic::<u32>("t").unwrap();
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    t.producer()
        .send_record(Record::new(1).delay(Duration::from_secs(60)))
        .unwrap();
    let reader = Polled::waiting(sub.recv_async());
    clock.advance(Duration::from_secs(60));
    assert_eq!(reader.woken().map(|m| *m.payload()), Ok(1));
}

both_backends!(other_partitions_are_not_held_up);
fn other_partitions_are_not_held_up(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let t = bus
        .topic_with::<u32>("t", TopicOptions::default().partitions(2))
        .unwrap();
    let mut member = t.join_group("g").unwrap();
    let p = t.producer();
    let late = p
        .send_record(Record::new(1).key("a").delay(Duration::from_secs(5)))
        .unwrap();
    let key = (0..100u32)
        .map(|i| i.to_string())
        .find(|k| {
            // A key of the other partition.
            let r = p.send_record(Record::new(99).key(k.as_str())).unwrap();
            r.partition != late.partition
        })
        .unwrap();
    let _ = key;
    let mut got = Vec::new();
    while let Ok(m) = member.recv_timeout(BRIEF) {
        got.push(*m.payload());
        m.ack().unwrap();
    }
    assert!(got.contains(&99) && !got.contains(&1), "{got:?}");
    clock.advance(Duration::from_secs(5));
    assert_eq!(common::take(&mut member, 1), [1]);
}

#[test]
fn a_delay_on_the_real_clock_is_waited_without_polling() {
    let bus = Broker::memory();
    let t = bus.topic::<u32>("t").unwrap();
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    let start = Instant::now();
    t.producer()
        .send_record(Record::new(1).delay(Duration::from_millis(100)))
        .unwrap();
    assert_eq!(*sub.recv_timeout(WAIT).unwrap().payload(), 1);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    assert!(waited < WAIT, "woken by its own deadline");
    let _ = SystemTime::now();
}

#[test]
fn a_delay_survives_a_reopen() {
    let path = common::fresh_dir("topic-delay-reopen").join("bus.embus");
    let clock = ManualClock::new();
    {
        let bus = Broker::builder()
            .path(&path)
            .clock(clock.clone())
            .open()
            .unwrap();
        let t = bus.topic::<u32>("t").unwrap();
        t.producer()
            .send_record(Record::new(1).delay(Duration::from_secs(30)))
            .unwrap();
        t.producer().send(2).unwrap();
        bus.close().unwrap();
    }
    let bus = Broker::builder()
        .path(&path)
        .clock(clock.clone())
        .open()
        .unwrap();
    let t = bus.topic::<u32>("t").unwrap();
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    let mut member = t.join_group("g").unwrap();
    assert!(sub.try_recv().is_err(), "still delayed after the reopen");
    assert!(member.try_recv().is_err());
    clock.advance(Duration::from_secs(30));
    assert_eq!(*sub.recv_timeout(WAIT).unwrap().payload(), 1);
    assert_eq!(common::take(&mut member, 2), [1, 2]);
    bus.close().unwrap();
}

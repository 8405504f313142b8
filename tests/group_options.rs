//! `GroupOptions`: declared by the first join, `Mismatch` on conflict, validated, stored with
//! the group (surviving a reopen), and the group's dead-letter queue.

mod common;

use std::time::Duration;

use common::{Backend, WAIT, both_backends, expect_invalid_option, expect_mismatch};
use embus::{
    Backoff, Broker, DEAD_LETTER_DELIVERIES, DEAD_LETTER_QUEUE, DEAD_LETTER_REASON, Error,
    GroupOptions, ManualClock, Overflow, QueueOptions, Start,
};

both_backends!(the_first_join_declares_the_options_and_a_conflicting_join_is_a_mismatch);
fn the_first_join_declares_the_options_and_a_conflicting_join_is_a_mismatch(backend: Backend) {
    let bus = backend.bus();
    let t = bus.topic::<u32>("t").unwrap();
    let options = GroupOptions::default()
        .ack_timeout(Duration::from_secs(60))
        .max_deliveries(3)
        .dead_letter("g.dead");
    let _a = t.join_group_with("g", options.clone()).unwrap();
    let _b = t.join_group_with("g", options.clone()).unwrap();
    let _c = t.join_group("g").unwrap(); // whatever its options
    let message = expect_mismatch(t.join_group_with("g", GroupOptions::default()), "g");
    assert!(message.contains("topic `t`"), "{message}");
    let other_start = options.clone().start(Start::Latest);
    expect_mismatch(t.join_group_with("g", other_start), "g");
    // The dead-letter queue is an ordinary queue, declared with the group.
    assert!(bus.queue::<u32>("g.dead").is_ok());
    expect_mismatch(bus.queue::<String>("g.dead"), "g.dead");
}

both_backends!(invalid_group_options_are_refused);
fn invalid_group_options_are_refused(backend: Backend) {
    let bus = backend.bus();
    let t = bus.topic::<u32>("t").unwrap();
    let no_dlq = GroupOptions::default().max_deliveries(3);
    expect_invalid_option(t.join_group_with("g", no_dlq), "g", "max_deliveries");
    let zero = GroupOptions::default().ack_timeout(Duration::ZERO);
    expect_invalid_option(t.join_group_with("g", zero), "g", "ack_timeout");
    let backwards = Backoff::exponential(Duration::from_secs(2), Duration::from_secs(1));
    expect_invalid_option(
        t.join_group_with("g", GroupOptions::default().backoff(backwards)),
        "g",
        "backoff",
    );
    assert!(t.groups().is_empty(), "a refused join declares nothing");
    // A dead-letter queue of another payload type: the join fails, nothing is declared.
    bus.queue::<String>("strings").unwrap();
    let wrong = GroupOptions::default()
        .max_deliveries(1)
        .dead_letter("strings");
    expect_mismatch(t.join_group_with("g", wrong), "strings");
    assert!(t.groups().is_empty());
}

both_backends!(a_nack_past_max_deliveries_dead_letters_with_the_queue_headers);
fn a_nack_past_max_deliveries_dead_letters_with_the_queue_headers(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let t = bus.topic::<String>("t").unwrap();
    let options = GroupOptions::default()
        .max_deliveries(2)
        .dead_letter("g.dead")
        .backoff(Backoff::none());
    let mut member = t.join_group_with("g", options).unwrap();
    let record = embus::Record::new("poison".to_owned())
        .key("k")
        .header("trace", "abc");
    t.producer().send_record(record).unwrap();
    t.producer().send("fine".to_owned()).unwrap();
    member.recv_timeout(WAIT).unwrap().nack().unwrap();
    member.recv_timeout(WAIT).unwrap().nack().unwrap(); // the 2nd: dead-lettered
    let fine = member.recv_timeout(WAIT).unwrap();
    assert_eq!(fine.payload(), "fine");
    fine.ack().unwrap();
    assert_eq!(t.group_position("g"), Some(vec![2]));
    let dead = bus.queue::<String>("g.dead").unwrap();
    let m = dead.consumer().recv_timeout(WAIT).unwrap();
    assert_eq!(m.payload(), "poison");
    assert_eq!(m.key(), Some(&b"k"[..]));
    assert_eq!(m.headers().get("trace"), Some(&b"abc"[..]));
    assert_eq!(m.headers().get(DEAD_LETTER_QUEUE), Some(&b"t/g"[..]));
    assert_eq!(m.headers().get(DEAD_LETTER_REASON), Some(&b"nack"[..]));
    assert_eq!(m.headers().get(DEAD_LETTER_DELIVERIES), Some(&b"2"[..]));
    // The topic keeps its message: the dead letter is a copy.
    assert_eq!(t.get(0, 0).unwrap().unwrap().payload(), "poison");
}

// A group's dead letters are parked, not work: the bus is idle once the group moved past them
// (as with a queue's dead-letter queue).
both_backends!(a_group_dead_letter_is_parked_not_work_for_wait_idle);
fn a_group_dead_letter_is_parked_not_work_for_wait_idle(backend: Backend) {
    let bus = backend.bus();
    let t = bus.topic::<u32>("t").unwrap();
    let options = GroupOptions::default()
        .max_deliveries(1)
        .dead_letter("g.dead");
    let mut member = t.join_group_with("g", options).unwrap();
    t.producer().send(7).unwrap();
    member.recv_timeout(WAIT).unwrap().nack().unwrap();
    bus.wait_idle(WAIT).unwrap();
    assert_eq!(bus.queue::<u32>("g.dead").unwrap().len(), 1);
}

both_backends!(an_ack_timeout_past_max_deliveries_dead_letters_without_anyone_looking);
fn an_ack_timeout_past_max_deliveries_dead_letters_without_anyone_looking(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let t = bus.topic::<u32>("t").unwrap();
    let options = GroupOptions::default()
        .ack_timeout(Duration::from_secs(10))
        .max_deliveries(1)
        .dead_letter("g.dead");
    let mut member = t.join_group_with("g", options).unwrap();
    t.producer().send(5).unwrap();
    let held = member.recv_timeout(WAIT).unwrap();
    clock.advance(Duration::from_secs(10));
    let dead = bus.queue::<u32>("g.dead").unwrap();
    assert_eq!(dead.len(), 1, "moved by the clock's advance");
    let m = dead.consumer().recv_timeout(WAIT).unwrap();
    assert_eq!(
        m.headers().get(DEAD_LETTER_REASON),
        Some(&b"ack-timeout"[..])
    );
    assert_eq!(t.group_position("g"), Some(vec![1]));
    held.ack().unwrap(); // too late: a no-op
    assert_eq!(dead.len(), 1);
}

#[test]
fn options_and_dead_letters_survive_a_reopen() {
    let path = common::fresh_dir("group-options-reopen").join("bus.embus");
    let clock = ManualClock::new();
    let options = GroupOptions::default()
        .start(Start::Latest)
        .ack_timeout(Duration::from_secs(7))
        .max_deliveries(2)
        .dead_letter("g.dead")
        .backoff(Backoff::none())
        .overflow(Overflow::Lag);
    {
        let bus = Broker::builder()
            .path(&path)
            .clock(clock.clone())
            .open()
            .unwrap();
        let t = bus.topic::<u32>("t").unwrap();
        t.producer().send(0).unwrap(); // history: `Latest` skips it
        let mut member = t.join_group_with("g", options.clone()).unwrap();
        t.producer().send_batch(vec![1, 2]).unwrap();
        member.recv_timeout(WAIT).unwrap().nack().unwrap();
        member.recv_timeout(WAIT).unwrap().nack().unwrap(); // 1 is dead-lettered
        drop(member);
        bus.close().unwrap();
    }
    let bus = Broker::builder()
        .path(&path)
        .clock(clock.clone())
        .open()
        .unwrap();
    let t = bus.topic::<u32>("t").unwrap();
    assert_eq!(t.groups(), ["g"]);
    assert_eq!(t.group_position("g"), Some(vec![2]), "past the dead letter");
    expect_mismatch(t.join_group_with("g", GroupOptions::default()), "g");
    let dead = bus.queue::<u32>("g.dead").unwrap();
    assert_eq!(dead.len(), 1);
    // The restored group keeps its stored options, joined by name or with the same options.
    let mut member = t.join_group("g").unwrap();
    let m = member.recv_timeout(WAIT).unwrap();
    assert_eq!(*m.payload(), 2);
    drop(m); // no backoff, max 2
    member.recv_timeout(WAIT).unwrap().nack().unwrap();
    assert_eq!(
        dead.len(),
        2,
        "max_deliveries and the dead-letter queue came back"
    );
    let _again = t.join_group_with("g", options).unwrap();
    bus.close().unwrap();
}

#[test]
fn a_dead_letter_is_stored_with_the_moved_position() {
    // After the dead letter, a reopen finds the message in the dead-letter queue and the
    // group past it, or the message still the group's: never neither.
    let path = common::fresh_dir("group-dead-letter-commit").join("bus.embus");
    let options = GroupOptions::default()
        .max_deliveries(1)
        .dead_letter("g.dead");
    {
        let bus = Broker::open(&path).unwrap();
        let t = bus.topic::<u32>("t").unwrap();
        let mut member = t.join_group_with("g", options.clone()).unwrap();
        t.producer().send(1).unwrap();
        member.recv_timeout(WAIT).unwrap().nack().unwrap();
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let t = bus.topic::<u32>("t").unwrap();
    let dead = bus
        .queue_with::<u32>("g.dead", QueueOptions::default())
        .unwrap();
    assert_eq!((dead.len(), t.group_position("g")), (1, Some(vec![1])));
    bus.close().unwrap();
}

both_backends!(join_group_on_a_closed_broker_is_closed);
fn join_group_on_a_closed_broker_is_closed(backend: Backend) {
    let bus = backend.bus();
    let t = bus.topic::<u32>("t").unwrap();
    bus.clone().close().unwrap();
    assert!(matches!(t.join_group("g"), Err(Error::Closed)));
}

#[test]
fn a_start_time_before_the_epoch_is_stored_and_read_back() {
    let path = common::fresh_dir("group-start-before-epoch").join("bus.embus");
    let before = std::time::UNIX_EPOCH - Duration::from_secs(5);
    let options = GroupOptions::default().start(Start::Time(before));
    {
        let bus = Broker::open(&path).unwrap();
        let t = bus.topic::<u32>("t").unwrap();
        drop(t.join_group_with("g", options.clone()).unwrap());
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let t = bus.topic::<u32>("t").unwrap();
    drop(t.join_group_with("g", options).unwrap()); // the same options: no mismatch
    bus.close().unwrap();
}

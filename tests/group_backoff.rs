//! Group redelivery is never a hot loop: every redelivery after a nack, a drop or an ack
//! timeout waits out the group's backoff (or `nack_after`'s delay), and the partition's other
//! messages keep coming meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::{BRIEF, Backend, WAIT, both_backends};
use embus::{
    Backoff, DEAD_LETTER_DELIVERIES, DEAD_LETTER_QUEUE, DEAD_LETTER_REASON, GroupOptions,
    ManualClock, Topic,
};

fn topic(bus: &embus::Broker) -> Topic<u32> {
    bus.topic::<u32>("t").unwrap()
}

/// Receives what is ready now, dropping every message; returns the payloads in order.
fn drop_ready(member: &mut embus::Consumer<u32>) -> Vec<u32> {
    let mut got = Vec::new();
    while let Ok(m) = member.try_recv() {
        got.push(*m.payload());
        assert!(got.len() < 1000, "a hot redelivery loop: {got:?}");
    }
    got
}

both_backends!(a_member_that_drops_everything_reaches_the_dead_letter_queue);
fn a_member_that_drops_everything_reaches_the_dead_letter_queue(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let t = topic(&bus);
    let options = GroupOptions::default()
        .max_deliveries(5)
        .dead_letter("g.dead");
    let mut member = t.join_group_with("g", options).unwrap();
    let dead = bus.queue::<u32>("g.dead").unwrap();
    t.producer().send_batch(vec![0, 1]).unwrap();
    // Without time passing: each message once, then its immediate retry, then nothing.
    let first = (0..4)
        .map(|_| *member.recv_timeout(WAIT).unwrap().payload())
        .collect::<Vec<_>>();
    assert_eq!(first, [0, 0, 1, 1]);
    assert!(
        member.try_recv().is_err(),
        "a retry came before its backoff"
    );
    let mut deliveries = first.len();
    for _ in 0..10 {
        clock.advance(Backoff::DEFAULT_MAX);
        deliveries += drop_ready(&mut member).len();
    }
    assert_eq!(
        deliveries, 10,
        "each message delivered max_deliveries times"
    );
    assert_eq!(dead.len(), 2);
    let mut letters = dead.consumer();
    for expected in [0, 1] {
        let m = letters.recv_timeout(WAIT).unwrap();
        assert_eq!(*m.payload(), expected);
        assert_eq!(m.headers().get(DEAD_LETTER_QUEUE), Some(&b"t/g"[..]));
        assert_eq!(m.headers().get(DEAD_LETTER_REASON), Some(&b"dropped"[..]));
        assert_eq!(m.headers().get(DEAD_LETTER_DELIVERIES), Some(&b"5"[..]));
        m.ack().unwrap();
    }
    assert_eq!(
        t.group_position("g"),
        Some(vec![2]),
        "the group moved past them"
    );
    assert_eq!(t.group_dead_lettered("g"), Some(2));
    assert!(member.recv_timeout(BRIEF).is_err());
}

// The probe: dropping message 0 got 0,1,0,1,... at full CPU, and on one partition
// the messages after 0 never arrived.
both_backends!(a_message_in_backoff_does_not_hold_back_the_others);
fn a_message_in_backoff_does_not_hold_back_the_others(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let t = topic(&bus);
    let mut member = t.join_group("g").unwrap();
    t.producer().send_batch((0..5).collect()).unwrap();
    let mut zeros = 0;
    let mut others = Vec::new();
    while let Ok(m) = member.recv_timeout(BRIEF) {
        if *m.payload() == 0 {
            zeros += 1;
            assert!(zeros < 100, "a hot redelivery loop");
            drop(m);
        } else {
            others.push(*m.payload());
            m.ack().unwrap();
        }
    }
    assert_eq!(others, [1, 2, 3, 4]);
    assert_eq!(
        zeros, 2,
        "the first delivery and its immediate retry, then the backoff"
    );
    clock.advance(Backoff::DEFAULT_INITIAL);
    let m = member.recv_timeout(WAIT).unwrap();
    assert_eq!((*m.payload(), m.delivery_count()), (0, 3));
    m.ack().unwrap();
    assert_eq!(t.group_position("g"), Some(vec![5]));
}

both_backends!(nack_after_waits_its_delay);
fn nack_after_waits_its_delay(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let t = topic(&bus);
    let mut member = t.join_group("g").unwrap();
    t.producer().send_batch(vec![7, 8]).unwrap();
    let m = member.recv_timeout(WAIT).unwrap();
    assert_eq!(*m.payload(), 7);
    m.nack_after(Duration::from_secs(60)).unwrap();
    let next = member.recv_timeout(WAIT).unwrap();
    assert_eq!(*next.payload(), 8, "the others go on meanwhile");
    next.ack().unwrap();
    clock.advance(Duration::from_secs(59));
    assert!(member.try_recv().is_err(), "redelivered before its delay");
    clock.advance(Duration::from_secs(1));
    let again = member.recv_timeout(WAIT).unwrap();
    assert_eq!((*again.payload(), again.delivery_count()), (7, 2));
    again.ack().unwrap();
}

both_backends!(an_ack_timeout_redelivers_after_the_backoff);
fn an_ack_timeout_redelivers_after_the_backoff(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let t = topic(&bus);
    let options = GroupOptions::default()
        .ack_timeout(Duration::from_secs(5))
        .backoff(Backoff::fixed(Duration::from_secs(1)));
    let mut member = t.join_group_with("g", options).unwrap();
    t.producer().send(1).unwrap();
    let held = member.recv_timeout(WAIT).unwrap();
    clock.advance(Duration::from_secs(4));
    assert!(member.try_recv().is_err(), "timed out early");
    clock.advance(Duration::from_secs(1)); // timed out: waits its backoff now
    assert!(member.try_recv().is_err(), "redelivered before its backoff");
    clock.advance(Duration::from_secs(1));
    let again = member.recv_timeout(WAIT).unwrap();
    assert_eq!(again.delivery_count(), 2);
    // A late ack of the delivery that timed out still acks the message (the work is done);
    // the redelivery's ack is then a no-op.
    held.ack().unwrap();
    assert_eq!(t.group_position("g"), Some(vec![1]));
    again.ack().unwrap();
    assert_eq!(t.group_position("g"), Some(vec![1]));
}

both_backends!(a_partition_that_moves_redelivers_after_the_backoff);
fn a_partition_that_moves_redelivers_after_the_backoff(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let t = topic(&bus);
    let options = GroupOptions::default().backoff(Backoff::fixed(Duration::from_secs(3)));
    let mut a = t.join_group_with("g", options).unwrap();
    t.producer().send(1).unwrap();
    let held = a.recv_timeout(WAIT).unwrap();
    let mut b = t.join_group("g").unwrap();
    drop(a); // the partition moves to `b` with the delivery unacked
    drop(held);
    assert!(b.try_recv().is_err(), "redelivered before the backoff");
    clock.advance(Duration::from_secs(3));
    let m = b.recv_timeout(WAIT).unwrap();
    assert_eq!((*m.payload(), m.delivery_count()), (1, 2));
    m.ack().unwrap();
}

/// The same on the real clock: deliveries counted over a window show waits, not a spin.
#[test]
fn a_member_that_drops_everything_uses_bounded_cpu_on_the_real_clock() {
    let bus = embus::Broker::memory();
    let t = topic(&bus);
    let options = GroupOptions::default().backoff(Backoff::exponential(
        Duration::from_millis(5),
        Duration::from_millis(50),
    ));
    let mut member = t.join_group_with("g", options).unwrap();
    t.producer().send_batch(vec![0, 1]).unwrap();
    let window = Duration::from_millis(400);
    let start = Instant::now();
    let mut deliveries = 0;
    while start.elapsed() < window {
        if let Ok(m) = member.recv_timeout(window.saturating_sub(start.elapsed())) {
            deliveries += 1;
            drop(m);
        }
    }
    // Per message: 0, 5, 10, 20, 40, 50, 50, ... ms apart: about 12 in 400 ms. A hot loop
    // makes hundreds of thousands.
    assert!(deliveries >= 6, "redelivered at all: {deliveries}");
    assert!(
        deliveries <= 60,
        "a hot loop: {deliveries} deliveries in {window:?}"
    );
}

#[test]
fn a_dead_letter_arrives_on_the_real_clock_without_anyone_advancing() {
    let bus = embus::Broker::memory();
    let t = topic(&bus);
    let options = GroupOptions::default()
        .backoff(Backoff::fixed(Duration::from_millis(5)))
        .max_deliveries(3)
        .dead_letter("g.dead");
    let mut member = t.join_group_with("g", options).unwrap();
    let dead = bus.queue::<u32>("g.dead").unwrap();
    t.producer().send(9).unwrap();
    for _ in 0..3 {
        drop(member.recv_timeout(WAIT).unwrap()); // each retry is woken by its timer
    }
    let mut letters = dead.consumer();
    assert_eq!(*letters.recv_timeout(WAIT).unwrap().payload(), 9);
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Wire {
    Num(u64),
    Text(String),
}

/// An undecodable record a member drops comes again after the backoff too (issue #11).
#[test]
fn a_dropped_undecodable_record_waits_out_the_backoff() {
    use embus::codec::CodecKind;
    use embus::{Broker, RecvTimeoutError, TryRecvError};
    let path = common::fresh_dir("group-undecodable-backoff").join("bus.embus");
    {
        let bus = Broker::builder()
            .path(&path)
            .codec(CodecKind::Json)
            .payload_name::<Wire>("Num")
            .open()
            .unwrap();
        let sends = vec![Wire::Text("oops".to_owned()), Wire::Num(1)];
        bus.topic::<Wire>("t")
            .unwrap()
            .producer()
            .send_batch(sends)
            .unwrap();
        bus.close().unwrap();
    }
    let clock = ManualClock::new();
    let bus = Broker::builder()
        .path(&path)
        .codec(CodecKind::Json)
        .payload_name::<u64>("Num")
        .clock(clock.clone())
        .open()
        .unwrap();
    let t = bus.topic::<u64>("t").unwrap();
    let options = GroupOptions::default().backoff(Backoff::fixed(Duration::from_secs(2)));
    let mut member = t.join_group_with("g", options).unwrap();
    let undecodable = |r| matches!(r, Err(RecvTimeoutError::Undecodable(_)));
    assert!(undecodable(member.recv_timeout(WAIT).map(|_| ())));
    // Dropped unsettled: the next message comes, the undecodable one waits its backoff.
    let m = member.recv_timeout(WAIT).unwrap();
    assert_eq!(*m.payload(), 1);
    m.ack().unwrap();
    assert!(matches!(member.try_recv(), Err(TryRecvError::Empty)));
    clock.advance(Duration::from_secs(2));
    assert!(undecodable(member.recv_timeout(WAIT).map(|_| ())));
    bus.close().unwrap();
}

/// An async receive waiting out a backoff on the real clock is woken by the broker's timer.
#[tokio::test]
async fn an_async_member_is_woken_when_its_backoff_ends() {
    let bus = embus::Broker::memory();
    let t = topic(&bus);
    let options = GroupOptions::default().backoff(Backoff::fixed(Duration::from_millis(20)));
    let mut member = t.join_group_with("g", options).unwrap();
    t.producer().send(1).unwrap();
    let start = Instant::now();
    drop(member.recv_async().await.unwrap()); // waits 20 ms before coming again
    let again = tokio::time::timeout(WAIT, member.recv_async())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.delivery_count(), 2);
    assert!(start.elapsed() >= Duration::from_millis(20));
    again.ack().unwrap();
}

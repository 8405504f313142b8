//! Redelivery backoff on queues: nack, drop, a dropped consumer and an ack timeout wait out
//! the queue's backoff (or `nack_after`'s wait) before the message is ready again; a message
//! backing off holds back no other, and comes back ahead of first deliveries.

mod common;

use std::time::{Duration, Instant};

use common::timed::{manual_bus, payload_and_count};
use common::{BRIEF, Backend, WAIT, both_backends};
use embus::{
    Backoff, Broker, DEAD_LETTER_DELIVERIES, DEAD_LETTER_REASON, Error, ManualClock, Queue,
    QueueOptions, TryRecvError,
};

const MS: Duration = Duration::from_millis(1);

fn dropping_options() -> QueueOptions {
    QueueOptions::default()
        .max_deliveries(5)
        .dead_letter("jobs.dead")
}

both_backends!(a_consumer_that_drops_everything_waits_out_the_backoff_then_dead_letters);
/// The probe: without a backoff it got 0,1,0,1,... at full CPU. Now only the first
/// retry is immediate; each later one waits until the clock passes its backoff (10 ms, 20 ms,
/// 40 ms by default), and after `max_deliveries` it is a dead letter with reason `dropped`.
fn a_consumer_that_drops_everything_waits_out_the_backoff_then_dead_letters(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = bus.queue_with::<u32>("jobs", dropping_options()).unwrap();
    let dead = bus.queue::<u32>("jobs.dead").unwrap();
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    drop(worker.recv_timeout(WAIT).unwrap()); // delivery 1
    let second = worker.try_recv().expect("the first retry is immediate");
    assert_eq!(payload_and_count(&second), (7, 2));
    drop(second);
    for (count, wait) in [(3, 10), (4, 20), (5, 40)] {
        assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
        assert_eq!((jobs.len(), jobs.delayed()), (0, 1), "backing off");
        clock.advance(MS * (wait - 1));
        assert_eq!(
            worker.try_recv().unwrap_err(),
            TryRecvError::Empty,
            "delivery {count} comes only after {wait} ms"
        );
        clock.advance(MS);
        let m = worker.try_recv().expect("due once the backoff passed");
        assert_eq!(payload_and_count(&m), (7, count));
        drop(m);
    }
    assert_eq!(jobs.dead_lettered(), 1);
    assert_eq!((jobs.len(), jobs.delayed(), jobs.in_flight()), (0, 0, 0));
    let mut letters = dead.consumer();
    let letter = letters.recv_timeout(WAIT).unwrap();
    assert_eq!(
        letter.headers().get(DEAD_LETTER_REASON),
        Some(&b"dropped"[..])
    );
    assert_eq!(
        letter.headers().get(DEAD_LETTER_DELIVERIES),
        Some(&b"5"[..])
    );
    letter.ack().unwrap();
}

/// On the system clock: a consumer that drops everything for a while gets a handful of
/// deliveries (1, the immediate retry, then after 10, 20, 40, 80, 160 ms ...), not a hot loop,
/// and its blocking `recv` is woken at each due time (nobody sends anything meanwhile).
#[test]
fn on_the_system_clock_a_dropping_consumer_gets_a_handful_of_deliveries_not_a_hot_loop() {
    let bus = Broker::memory();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    let window = Duration::from_millis(300);
    let started = Instant::now();
    let mut deliveries = 0;
    while let Some(left) = window.checked_sub(started.elapsed()) {
        match worker.recv_timeout(left) {
            Ok(m) => {
                deliveries += 1;
                drop(m);
            }
            Err(_) => break,
        }
    }
    // 1 + immediate + 10 + 20 + 40 + 80 (150 ms) + 160 (310 ms: maybe just past the window).
    assert!(
        (5..=8).contains(&deliveries),
        "{deliveries} deliveries in {window:?}"
    );
}

/// The same with a dead-letter queue: it gets there, in about the sum of the backoffs.
#[test]
fn on_the_system_clock_a_dropping_consumer_reaches_the_dead_letter_queue() {
    let bus = Broker::memory();
    let jobs = bus.queue_with::<u32>("jobs", dropping_options()).unwrap();
    let dead = bus.queue::<u32>("jobs.dead").unwrap();
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    let started = Instant::now();
    for count in 1..=5 {
        let m = worker.recv_timeout(WAIT).unwrap();
        assert_eq!(m.delivery_count(), count);
    }
    let took = started.elapsed();
    assert!(took >= MS * 70, "10 + 20 + 40 ms of backoff, took {took:?}");
    let mut letters = dead.consumer();
    let letter = letters.recv_timeout(WAIT).unwrap();
    assert_eq!(
        letter.headers().get(DEAD_LETTER_REASON),
        Some(&b"dropped"[..])
    );
    letter.ack().unwrap();
}

both_backends!(nack_after_waits_its_own_delay_instead_of_the_backoff);
fn nack_after_waits_its_own_delay_instead_of_the_backoff(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    worker
        .recv_timeout(WAIT)
        .unwrap()
        .nack_after(Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        worker.try_recv().unwrap_err(),
        TryRecvError::Empty,
        "not the immediate first retry: nack_after said 5 s"
    );
    clock.advance(Duration::from_millis(4_999));
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
    clock.advance(MS);
    let m = worker.try_recv().unwrap();
    assert_eq!(payload_and_count(&m), (7, 2));
    // A zero wait redelivers at once, whatever the backoff says.
    m.nack_after(Duration::ZERO).unwrap();
    let m = worker.try_recv().unwrap();
    assert_eq!(payload_and_count(&m), (7, 3));
    m.ack().unwrap();
}

both_backends!(a_message_backing_off_holds_back_no_other_and_comes_back_first);
fn a_message_backing_off_holds_back_no_other_and_comes_back_first(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send_batch(vec![1, 2]).unwrap();
    let mut worker = jobs.consumer();
    let one = worker.recv_timeout(WAIT).unwrap();
    one.nack_after(Duration::from_secs(1)).unwrap();
    let two = worker
        .try_recv()
        .expect("1 backing off does not hold back 2");
    assert_eq!(*two.payload(), 2);
    two.ack().unwrap();
    jobs.producer().send_batch(vec![3, 4]).unwrap();
    clock.advance(Duration::from_secs(1));
    let order: Vec<(u32, u32)> = (0..3)
        .map(|_| {
            let m = worker.try_recv().unwrap();
            let seen = payload_and_count(&m);
            m.ack().unwrap();
            seen
        })
        .collect();
    assert_eq!(
        order,
        [(1, 2), (3, 1), (4, 1)],
        "due again: ahead of first deliveries"
    );
}

both_backends!(an_ack_timeout_and_a_dropped_consumer_back_off_too);
fn an_ack_timeout_and_a_dropped_consumer_back_off_too(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let options = QueueOptions::default()
        .ack_timeout(Duration::from_secs(30))
        .backoff(Backoff::fixed(Duration::from_secs(2)));
    let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    let held = worker.recv_timeout(WAIT).unwrap();
    clock.advance(Duration::from_secs(31)); // timed out
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
    clock.advance(Duration::from_secs(2));
    let again = worker.try_recv().unwrap();
    assert_eq!(payload_and_count(&again), (7, 2));
    drop(held);
    // A dropped consumer releases what it held: that waits out the backoff as well.
    drop(worker);
    let mut other = jobs.consumer();
    assert_eq!(other.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(jobs.delayed(), 1);
    drop(again); // already released with its consumer
    clock.advance(Duration::from_secs(2));
    let third = other.try_recv().unwrap();
    assert_eq!(payload_and_count(&third), (7, 3));
    third.ack().unwrap();
}

both_backends!(waiting_for_idle_counts_a_message_backing_off_as_work);
fn waiting_for_idle_counts_a_message_backing_off_as_work(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    worker
        .recv_timeout(WAIT)
        .unwrap()
        .nack_after(Duration::from_secs(60))
        .unwrap();
    match bus.wait_idle(BRIEF) {
        Err(Error::NotIdle { busy, .. }) => assert!(busy.contains("1 waiting"), "{busy}"),
        other => panic!("a message backing off is work pending: {other:?}"),
    }
    clock.advance(Duration::from_secs(60));
    worker.recv_timeout(WAIT).unwrap().ack().unwrap();
    bus.wait_idle(WAIT).unwrap();
}

/// A backoff in progress is not stored: after a reopen the message is ready at once, as
/// deliveries in flight are (its delivery count is kept).
#[test]
fn after_a_reopen_a_message_backing_off_is_ready_at_once() {
    let clock = ManualClock::new();
    let (dir, open) = common::reopenable("backoff-reopen", &clock);
    let bus = open();
    let jobs: Queue<u32> = bus.queue("jobs").unwrap();
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    worker
        .recv_timeout(WAIT)
        .unwrap()
        .nack_after(Duration::from_secs(3600))
        .unwrap();
    drop((worker, jobs));
    bus.close().unwrap();
    let bus = open();
    let jobs: Queue<u32> = bus.queue("jobs").unwrap();
    let mut worker = jobs.consumer();
    let m = worker.try_recv().unwrap();
    assert_eq!(payload_and_count(&m), (7, 2));
    m.ack().unwrap();
    drop((worker, jobs));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

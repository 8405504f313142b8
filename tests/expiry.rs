//! Expiry on queues: `Record::ttl` and `QueueOptions::message_ttl` (the shorter wins). An
//! expired message is never delivered; it moves to the dead-letter queue with reason
//! `expired`, or is dropped and counted without one, with nobody looking; in-flight messages
//! do not expire.

mod common;

use std::time::{Duration, Instant};

use common::timed::manual_bus;
use common::{Backend, WAIT, both_backends};
use embus::{
    Broker, DEAD_LETTER_DELIVERIES, DEAD_LETTER_QUEUE, DEAD_LETTER_REASON, ManualClock, Queue,
    QueueOptions, Record, TryRecvError, TrySendError,
};

const SECOND: Duration = Duration::from_secs(1);

fn with_dead_letters() -> QueueOptions {
    QueueOptions::default().dead_letter("jobs.dead")
}

both_backends!(an_expired_message_moves_to_the_dead_letter_queue_with_nobody_looking);
fn an_expired_message_moves_to_the_dead_letter_queue_with_nobody_looking(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = bus.queue_with::<u32>("jobs", with_dead_letters()).unwrap();
    let dead = bus.queue::<u32>("jobs.dead").unwrap();
    jobs.producer()
        .send_record(Record::new(1).ttl(SECOND * 10).key("k").header("h", b"v"))
        .unwrap();
    jobs.producer().send(2).unwrap();
    clock.advance(SECOND * 10);
    // Nobody looked at `jobs`: the dead-letter queue has it already.
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (jobs.len(), jobs.dead_lettered(), jobs.expired()),
        (1, 1, 0)
    );
    let mut worker = jobs.consumer();
    let m = worker.try_recv().unwrap();
    assert_eq!(*m.payload(), 2, "the expired message is never delivered");
    m.ack().unwrap();
    let mut letters = dead.consumer();
    let letter = letters.try_recv().unwrap();
    assert_eq!((*letter.payload(), letter.key()), (1, Some(&b"k"[..])));
    let header = |name| letter.headers().get(name);
    assert_eq!(header("h"), Some(&b"v"[..]));
    assert_eq!(header(DEAD_LETTER_QUEUE), Some(&b"jobs"[..]));
    assert_eq!(header(DEAD_LETTER_REASON), Some(&b"expired"[..]));
    assert_eq!(header(DEAD_LETTER_DELIVERIES), Some(&b"0"[..]));
    letter.ack().unwrap();
}

both_backends!(without_a_dead_letter_queue_an_expired_message_is_dropped_counted_and_frees_room);
fn without_a_dead_letter_queue_an_expired_message_is_dropped_counted_and_frees_room(
    backend: Backend,
) {
    let (clock, bus) = manual_bus(backend);
    let options = QueueOptions::default().message_ttl(SECOND * 60).capacity(2);
    let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
    let producer = jobs.producer();
    producer.send_batch(vec![1, 2]).unwrap();
    assert!(matches!(producer.try_send(3), Err(TrySendError::Full(3))));
    clock.advance(SECOND * 59);
    assert_eq!((jobs.len(), jobs.expired()), (2, 0));
    clock.advance(SECOND);
    assert_eq!((jobs.len(), jobs.expired()), (0, 2));
    producer.try_send(3).expect("expiry freed the room");
    let mut worker = jobs.consumer();
    let m = worker.try_recv().unwrap();
    assert_eq!(*m.payload(), 3);
    m.ack().unwrap();
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
}

both_backends!(the_shorter_of_the_record_and_queue_ttl_wins);
fn the_shorter_of_the_record_and_queue_ttl_wins(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let options = QueueOptions::default().message_ttl(SECOND * 10);
    let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
    let producer = jobs.producer();
    producer
        .send_record(Record::new(1).ttl(SECOND * 5))
        .unwrap();
    producer
        .send_record(Record::new(2).ttl(SECOND * 100))
        .unwrap();
    producer.send(3).unwrap();
    clock.advance(SECOND * 5);
    assert_eq!((jobs.len(), jobs.expired()), (2, 1));
    clock.advance(SECOND * 5);
    assert_eq!((jobs.len(), jobs.expired()), (0, 3));
}

both_backends!(an_in_flight_message_does_not_expire_but_expires_when_released_late);
fn an_in_flight_message_does_not_expire_but_expires_when_released_late(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let options = with_dead_letters().no_ack_timeout();
    let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
    let dead = bus.queue::<u32>("jobs.dead").unwrap();
    let producer = jobs.producer();
    for i in [1, 2] {
        producer
            .send_record(Record::new(i).ttl(SECOND * 10))
            .unwrap();
    }
    let mut worker = jobs.consumer();
    let one = worker.try_recv().unwrap();
    let two = worker.try_recv().unwrap();
    clock.advance(SECOND * 20);
    assert_eq!(jobs.in_flight(), 2, "in flight: not expired");
    one.ack()
        .expect("acked after its expiry time: it was being worked on");
    two.nack().unwrap();
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
    let mut letters = dead.consumer();
    let letter = letters.try_recv().unwrap();
    assert_eq!(
        (*letter.payload(), letter.headers().get(DEAD_LETTER_REASON)),
        (2, Some(&b"expired"[..]))
    );
    letter.ack().unwrap();
}

both_backends!(a_delayed_message_can_expire_before_it_is_due);
fn a_delayed_message_can_expire_before_it_is_due(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer()
        .send_record(Record::new(1).delay(SECOND * 10).ttl(SECOND * 5))
        .unwrap();
    clock.advance(SECOND * 5);
    assert_eq!((jobs.delayed(), jobs.expired()), (0, 1));
    clock.advance(SECOND * 5);
    assert_eq!(jobs.consumer().try_recv().unwrap_err(), TryRecvError::Empty);
}

/// On the system clock the broker's timer moves an expired message to the dead-letter queue:
/// a consumer blocked there gets it though nobody looks at the source queue.
#[test]
fn on_the_system_clock_expired_messages_reach_a_waiting_dead_letter_consumer() {
    let bus = Broker::memory();
    let jobs = bus.queue_with::<u32>("jobs", with_dead_letters()).unwrap();
    let dead = bus.queue::<u32>("jobs.dead").unwrap();
    let mut letters = dead.consumer();
    let started = Instant::now();
    jobs.producer()
        .send_record(Record::new(1).ttl(Duration::from_millis(100)))
        .unwrap();
    let letter = letters.recv_timeout(WAIT).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(
        letter.headers().get(DEAD_LETTER_REASON),
        Some(&b"expired"[..])
    );
    letter.ack().unwrap();
}

/// Expiry times are stored with the record (the queue's `message_ttl` with its declaration):
/// they hold after a reopen, and the move to the dead-letter queue is stored.
#[test]
fn expiry_survives_a_reopen() {
    let clock = ManualClock::new();
    let (dir, open) = common::reopenable("expiry-reopen", &clock);
    let bus = open();
    let jobs: Queue<u32> = bus.queue_with("jobs", with_dead_letters()).unwrap();
    let producer = jobs.producer();
    producer
        .send_record(Record::new(1).ttl(SECOND * 10))
        .unwrap();
    producer
        .send_record(Record::new(2).ttl(SECOND * 20))
        .unwrap();
    drop((producer, jobs));
    bus.close().unwrap();

    let bus = open();
    let jobs: Queue<u32> = bus.queue("jobs").unwrap();
    assert_eq!(jobs.len(), 2);
    clock.advance(SECOND * 10);
    assert_eq!(jobs.len(), 1);
    drop(jobs);
    bus.close().unwrap();

    let bus = open();
    let jobs: Queue<u32> = bus.queue("jobs").unwrap();
    let dead: Queue<u32> = bus.queue("jobs.dead").unwrap();
    assert_eq!((jobs.len(), dead.len()), (1, 1), "the move was stored");
    clock.advance(SECOND * 10);
    assert_eq!((jobs.len(), dead.len()), (0, 2));
    drop((jobs, dead));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// On the system clock a producer blocked on a full queue goes on when expiry frees room,
/// though nobody consumes (the broker's timer).
#[test]
fn on_the_system_clock_expiry_releases_a_blocked_producer() {
    let bus = Broker::memory();
    let options = QueueOptions::default()
        .capacity(1)
        .message_ttl(Duration::from_millis(100));
    let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
    let producer = jobs.producer();
    producer.send(1).unwrap();
    let started = Instant::now();
    producer.send_timeout(2, WAIT).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(jobs.expired(), 1);
}

/// A dropped expiry (no dead-letter queue) is stored like an ack: gone after a reopen.
#[test]
fn a_dropped_expiry_is_stored() {
    let clock = ManualClock::new();
    let (dir, open) = common::reopenable("expiry-dropped", &clock);
    let bus = open();
    let options = QueueOptions::default().message_ttl(SECOND);
    let jobs: Queue<u32> = bus.queue_with("jobs", options).unwrap();
    jobs.producer().send(1).unwrap();
    clock.advance(SECOND);
    assert_eq!(jobs.expired(), 1);
    drop(jobs);
    bus.close().unwrap();
    let bus = open();
    let jobs: Queue<u32> = bus.queue("jobs").unwrap();
    assert_eq!((jobs.len(), jobs.delayed(), jobs.expired()), (0, 0, 0));
    drop(jobs);
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

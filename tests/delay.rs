//! Delayed delivery on queues: `Record::delay` and `Record::deliver_at` keep a message
//! invisible until it is due, hold back nothing sent after it, deliver due messages in due
//! order (send order for equal due times), and survive a reopen.

mod common;

use std::time::{Duration, Instant};

use common::{BRIEF, Backend, WAIT, both_backends};
use embus::{Broker, Error, ManualClock, Queue, Record, TryRecvError};

const SECOND: Duration = Duration::from_secs(1);

fn manual(backend: Backend) -> (ManualClock, common::Bus) {
    common::timed::manual_bus(backend)
}

both_backends!(a_delayed_message_is_invisible_until_due_and_holds_back_nothing);
fn a_delayed_message_is_invisible_until_due_and_holds_back_nothing(backend: Backend) {
    let (clock, bus) = manual(backend);
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let producer = jobs.producer();
    producer
        .send_record(Record::new(1).delay(SECOND * 10))
        .unwrap();
    producer.send(2).unwrap();
    let mut worker = jobs.consumer();
    let m = worker
        .try_recv()
        .expect("2 is not held back by the delayed 1");
    assert_eq!(*m.payload(), 2);
    m.ack().unwrap();
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!((jobs.len(), jobs.delayed()), (0, 1));
    clock.advance(SECOND * 9);
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
    clock.advance(SECOND);
    let m = worker.try_recv().expect("due");
    assert_eq!((*m.payload(), m.delivery_count()), (1, 1));
    m.ack().unwrap();
    assert_eq!(jobs.delayed(), 0);
}

both_backends!(due_messages_come_in_due_order_and_send_order_for_equal_due_times);
fn due_messages_come_in_due_order_and_send_order_for_equal_due_times(backend: Backend) {
    let (clock, bus) = manual(backend);
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let producer = jobs.producer();
    let start = clock.now();
    producer
        .send_record(Record::new(1).delay(SECOND * 3))
        .unwrap();
    producer.send_record(Record::new(2).delay(SECOND)).unwrap();
    producer
        .send_record(Record::new(3).deliver_at(start + SECOND))
        .unwrap();
    producer
        .send_record(Record::new(4).deliver_at(start + SECOND * 2))
        .unwrap();
    clock.advance(SECOND * 5);
    let mut worker = jobs.consumer();
    let order: Vec<u32> = (0..4)
        .map(|_| {
            let m = worker.try_recv().unwrap();
            let payload = *m.payload();
            m.ack().unwrap();
            payload
        })
        .collect();
    assert_eq!(order, [2, 3, 4, 1]);
}

both_backends!(a_due_time_in_the_past_delivers_at_once);
fn a_due_time_in_the_past_delivers_at_once(backend: Backend) {
    let (clock, bus) = manual(backend);
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let past = clock.now() - SECOND * 60;
    jobs.producer()
        .send_record(Record::new(1).deliver_at(past))
        .unwrap();
    jobs.producer()
        .send_record(Record::new(2).delay(Duration::ZERO))
        .unwrap();
    let mut worker = jobs.consumer();
    for want in [1, 2] {
        let m = worker.try_recv().unwrap();
        assert_eq!(*m.payload(), want);
        m.ack().unwrap();
    }
}

both_backends!(waiting_for_idle_counts_a_delayed_message_as_work);
fn waiting_for_idle_counts_a_delayed_message_as_work(backend: Backend) {
    let (clock, bus) = manual(backend);
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer()
        .send_record(Record::new(1).delay(SECOND))
        .unwrap();
    assert!(matches!(bus.wait_idle(BRIEF), Err(Error::NotIdle { .. })));
    clock.advance(SECOND);
    let mut worker = jobs.consumer();
    worker.recv_timeout(WAIT).unwrap().ack().unwrap();
    bus.wait_idle(WAIT).unwrap();
}

/// On the system clock a consumer blocked in `recv` is woken when the message falls due
/// (the broker's timer), though nothing else happens meanwhile.
#[test]
fn on_the_system_clock_a_blocked_consumer_gets_the_message_when_due() {
    let bus = Broker::memory();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let mut worker = jobs.consumer();
    let started = Instant::now();
    jobs.producer()
        .send_record(Record::new(1).delay(Duration::from_millis(100)))
        .unwrap();
    let m = worker.recv_timeout(WAIT).unwrap();
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(100)..WAIT).contains(&took),
        "{took:?}"
    );
    m.ack().unwrap();
}

/// The same for a consumer that was already waiting before the send, in an async task.
#[tokio::test]
async fn on_the_system_clock_an_async_consumer_gets_the_message_when_due() {
    let bus = Broker::memory();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let mut worker = jobs.consumer();
    let mut recv = std::pin::pin!(worker.recv_async());
    // Waiting (registered) before the send: polled once, by hand.
    assert!(futures_poll_once(recv.as_mut()).is_pending());
    let sent = Instant::now();
    jobs.producer()
        .send_record(Record::new(1).delay(Duration::from_millis(80)))
        .unwrap();
    let m = tokio::time::timeout(WAIT, recv).await.unwrap().unwrap();
    assert!(sent.elapsed() >= Duration::from_millis(80));
    m.ack().unwrap();
}

/// Polls a future once with a waker that does nothing.
fn futures_poll_once<F: std::future::Future>(
    fut: std::pin::Pin<&mut F>,
) -> std::task::Poll<F::Output> {
    fut.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

/// Due times are stored with the record: after a reopen the message is still invisible until
/// it is due (restoring reads the queue's rows anyway: no extra scan).
#[test]
fn a_due_time_survives_a_reopen() {
    let clock = ManualClock::new();
    let (dir, open) = common::reopenable("delay-reopen", &clock);
    let bus = open();
    let jobs: Queue<u32> = bus.queue("jobs").unwrap();
    let producer = jobs.producer();
    producer
        .send_record(Record::new(1).delay(SECOND * 10).key("k").header("h", b"v"))
        .unwrap();
    producer
        .send_record(Record::new(2).deliver_at(clock.now() + SECOND * 5))
        .unwrap();
    producer.send(3).unwrap();
    drop((producer, jobs));
    bus.close().unwrap();

    let bus = open();
    let jobs: Queue<u32> = bus.queue("jobs").unwrap();
    let mut worker = jobs.consumer();
    assert_eq!((jobs.len(), jobs.delayed()), (1, 2));
    worker.try_recv().unwrap().ack().unwrap(); // 3
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
    clock.advance(SECOND * 5);
    let m = worker.try_recv().unwrap();
    assert_eq!(*m.payload(), 2);
    m.ack().unwrap();
    clock.advance(SECOND * 5);
    let m = worker.try_recv().unwrap();
    assert_eq!((*m.payload(), m.key()), (1, Some(&b"k"[..])));
    assert_eq!(m.headers().get("h"), Some(&b"v"[..]));
    m.ack().unwrap();
    drop((worker, jobs));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

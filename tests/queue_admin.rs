//! Queue administration: `purge`, `peek` and `redrive`.

mod common;

use std::time::Duration;

use common::waiting::Polled;
use common::{Backend, WAIT, both_backends, expect_invalid_option};
use embus::{
    Backoff, Broker, DEAD_LETTER_QUEUE, DEAD_LETTER_REASON, ManualClock, Queue, QueueOptions,
    Record, TryRecvError,
};

both_backends!(purge_removes_ready_delayed_and_backing_off_messages_not_in_flight_ones);
fn purge_removes_ready_delayed_and_backing_off_messages_not_in_flight_ones(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let options = QueueOptions::default().no_ack_timeout();
    let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
    let producer = jobs.producer();
    producer.send_batch(vec![1, 2, 3, 4]).unwrap();
    producer
        .send_record(Record::new(5).delay(Duration::from_secs(60)))
        .unwrap();
    let mut worker = jobs.consumer();
    let held = worker.try_recv().unwrap();
    worker
        .try_recv()
        .unwrap()
        .nack_after(Duration::from_secs(60))
        .unwrap();
    assert_eq!((jobs.len(), jobs.delayed(), jobs.in_flight()), (2, 2, 1));
    assert_eq!(jobs.purge().unwrap(), 4);
    assert_eq!((jobs.len(), jobs.delayed(), jobs.in_flight()), (0, 0, 1));
    clock.advance(Duration::from_secs(60));
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
    held.ack().unwrap();
    assert_eq!(jobs.purge().unwrap(), 0);
    bus.wait_idle(WAIT).unwrap();
}

both_backends!(purge_frees_room_for_a_blocked_producer);
fn purge_frees_room_for_a_blocked_producer(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<u32>("jobs", QueueOptions::default().capacity(2))
        .unwrap();
    let producer = jobs.producer();
    producer.send_batch(vec![1, 2]).unwrap();
    let blocked = Polled::waiting(producer.send_async(3));
    assert_eq!(jobs.purge().unwrap(), 2);
    blocked.woken().unwrap();
    let mut worker = jobs.consumer();
    let m = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(*m.payload(), 3);
    m.ack().unwrap();
}

/// A purge is stored: purged messages do not come back after a reopen.
#[test]
fn a_purge_is_stored() {
    let dir = common::fresh_dir("purge-reopen");
    let path = dir.join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    let jobs: Queue<u32> = bus.queue("jobs").unwrap();
    jobs.producer().send_batch(vec![1, 2, 3]).unwrap();
    assert_eq!(jobs.purge().unwrap(), 3);
    jobs.producer().send(4).unwrap();
    drop(jobs);
    bus.close().unwrap();
    let bus = Broker::open(&path).unwrap();
    let jobs: Queue<u32> = bus.queue("jobs").unwrap();
    let next: Vec<u32> = jobs.peek(10).iter().map(|p| *p.payload()).collect();
    assert_eq!(next, [4]);
    drop(jobs);
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

both_backends!(peek_copies_the_next_messages_in_delivery_order_and_changes_nothing);
fn peek_copies_the_next_messages_in_delivery_order_and_changes_nothing(backend: Backend) {
    let bus = backend.bus();
    let options = QueueOptions::default()
        .priorities(2)
        .backoff(Backoff::none());
    let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
    let producer = jobs.producer();
    producer.send(1).unwrap();
    producer
        .send_record(Record::new(2).priority(1).key("k"))
        .unwrap();
    producer.send(3).unwrap();
    let mut worker = jobs.consumer();
    worker.try_recv().unwrap().nack().unwrap(); // 2, delivered once
    let peeked = jobs.peek(2);
    let seen: Vec<(u32, u32)> = peeked
        .iter()
        .map(|p| (*p.payload(), p.delivery_count()))
        .collect();
    assert_eq!(seen, [(2, 1), (1, 0)]);
    assert_eq!(peeked[0].key(), Some(&b"k"[..]));
    assert_eq!((jobs.len(), jobs.in_flight()), (3, 0), "nothing changed");
    assert_eq!(jobs.peek(10).len(), 3);
    assert!(jobs.peek(0).is_empty());
    let m = worker.try_recv().unwrap();
    assert_eq!((*m.payload(), m.delivery_count()), (2, 2));
    m.ack().unwrap();
}

fn dead_lettering(bus: &Broker) -> (Queue<u32>, Queue<u32>) {
    let options = QueueOptions::default()
        .max_deliveries(1)
        .dead_letter("jobs.dead");
    let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
    let dead = bus.queue::<u32>("jobs.dead").unwrap();
    (jobs, dead)
}

/// Sends `payloads` to `jobs` and nacks each once: all dead letters.
fn kill(jobs: &Queue<u32>, payloads: &[u32]) {
    jobs.producer().send_batch(payloads.to_vec()).unwrap();
    let mut worker = jobs.consumer();
    for _ in payloads {
        worker.recv_timeout(WAIT).unwrap().nack().unwrap();
    }
}

both_backends!(redrive_moves_dead_letters_back_with_their_headers_and_a_fresh_count);
fn redrive_moves_dead_letters_back_with_their_headers_and_a_fresh_count(backend: Backend) {
    let bus = backend.bus();
    let (jobs, dead) = dead_lettering(&bus);
    kill(&jobs, &[1, 2, 3]);
    assert_eq!(dead.len(), 3);
    assert_eq!(dead.redrive(&jobs, 2).unwrap(), 2);
    assert_eq!((jobs.len(), dead.len()), (2, 1));
    let mut worker = jobs.consumer();
    for want in [1, 2] {
        let m = worker.try_recv().unwrap();
        assert_eq!((*m.payload(), m.delivery_count()), (want, 1));
        assert_eq!(m.headers().get(DEAD_LETTER_REASON), Some(&b"nack"[..]));
        assert_eq!(m.headers().get(DEAD_LETTER_QUEUE), Some(&b"jobs"[..]));
        m.ack().unwrap();
    }
    assert_eq!(dead.redrive(&jobs, 10).unwrap(), 1, "only one was left");
    assert_eq!(dead.redrive(&jobs, 10).unwrap(), 0);
    worker.try_recv().unwrap().ack().unwrap();
}

both_backends!(redrive_stops_when_the_target_is_full);
fn redrive_stops_when_the_target_is_full(backend: Backend) {
    let bus = backend.bus();
    let (jobs, dead) = dead_lettering(&bus);
    kill(&jobs, &[1, 2, 3]);
    let small = bus
        .queue_with::<u32>("small", QueueOptions::default().capacity(2))
        .unwrap();
    small.producer().send(0).unwrap();
    assert_eq!(dead.redrive(&small, 10).unwrap(), 1);
    assert_eq!((small.len(), dead.len()), (2, 2));
    assert_eq!(dead.redrive(&small, 10).unwrap(), 0, "full");
}

both_backends!(redriving_a_queue_into_itself_is_an_invalid_option);
fn redriving_a_queue_into_itself_is_an_invalid_option(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send(1).unwrap();
    expect_invalid_option(jobs.redrive(&jobs, 1), "jobs", "redrive");
    assert_eq!(jobs.len(), 1);
}

/// A redrive is stored: each message is in exactly one of the two queues after a reopen.
#[test]
fn a_redrive_is_stored() {
    let dir = common::fresh_dir("redrive-reopen");
    let path = dir.join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    let (jobs, dead) = dead_lettering(&bus);
    kill(&jobs, &[1, 2, 3]);
    assert_eq!(dead.redrive(&jobs, 2).unwrap(), 2);
    drop((jobs, dead));
    bus.close().unwrap();
    let bus = Broker::open(&path).unwrap();
    let (jobs, dead) = dead_lettering(&bus);
    let payloads =
        |q: &Queue<u32>| -> Vec<u32> { q.peek(10).iter().map(|p| *p.payload()).collect() };
    assert_eq!((payloads(&jobs), payloads(&dead)), (vec![1, 2], vec![3]));
    let mut worker = jobs.consumer();
    let m = worker.try_recv().unwrap();
    assert_eq!(m.delivery_count(), 1, "the count starts again");
    assert_eq!(m.headers().get(DEAD_LETTER_REASON), Some(&b"nack"[..]));
    m.ack().unwrap();
    drop((worker, jobs, dead));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

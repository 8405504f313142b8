//! Priorities on queues: `QueueOptions::priorities(n)` and `Record::priority(p)`: higher
//! first, first-in first-out within a priority, redeliveries first within theirs; stored with
//! the record.

mod common;

use std::time::Duration;

use common::{Backend, both_backends};
use embus::{Backoff, Broker, Consumer, ManualClock, Queue, QueueOptions, Record};

fn drain(worker: &mut Consumer<u32>) -> Vec<u32> {
    let mut out = Vec::new();
    while let Ok(m) = worker.try_recv() {
        out.push(*m.payload());
        m.ack().unwrap();
    }
    out
}

fn send_prioritized(jobs: &Queue<u32>) {
    let producer = jobs.producer();
    // (payload, priority): payload = 10 * priority + send order.
    for (payload, priority) in [(0, 0), (20, 2), (10, 1), (21, 2), (1, 0), (11, 1), (22, 9)] {
        producer
            .send_record(Record::new(payload).priority(priority))
            .unwrap();
    }
}

both_backends!(higher_priorities_go_first_and_fifo_holds_within_one);
fn higher_priorities_go_first_and_fifo_holds_within_one(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<u32>("jobs", QueueOptions::default().priorities(3))
        .unwrap();
    send_prioritized(&jobs);
    assert_eq!(jobs.len(), 7);
    let mut worker = jobs.consumer();
    // 22 asked for 9: it counts as the top priority, 2, after those sent before it there.
    assert_eq!(drain(&mut worker), [20, 21, 22, 10, 11, 0, 1]);
}

both_backends!(without_priorities_the_priority_is_ignored);
fn without_priorities_the_priority_is_ignored(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    send_prioritized(&jobs);
    let mut worker = jobs.consumer();
    assert_eq!(drain(&mut worker), [0, 20, 10, 21, 1, 11, 22]);
}

both_backends!(a_redelivery_goes_first_within_its_priority_only);
fn a_redelivery_goes_first_within_its_priority_only(backend: Backend) {
    let bus = backend.bus();
    let options = QueueOptions::default()
        .priorities(3)
        .backoff(Backoff::none());
    let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
    send_prioritized(&jobs);
    let mut worker = jobs.consumer();
    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push(worker.try_recv().unwrap()); // 20, 21, 22
    }
    let eleven = {
        let ten = worker.try_recv().unwrap();
        assert_eq!(*ten.payload(), 10);
        ten.nack().unwrap(); // back in front of priority 1
        worker.try_recv().unwrap()
    };
    assert_eq!(*eleven.payload(), 10, "redelivered first within priority 1");
    eleven.ack().unwrap();
    drop(taken); // 20, 21, 22 released in turn, each to the front of priority 2
    assert_eq!(drain(&mut worker), [22, 21, 20, 11, 0, 1]);
}

both_backends!(delayed_messages_keep_their_priority_when_due);
fn delayed_messages_keep_their_priority_when_due(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let jobs = bus
        .queue_with::<u32>("jobs", QueueOptions::default().priorities(2))
        .unwrap();
    let producer = jobs.producer();
    producer.send(0).unwrap();
    producer
        .send_record(Record::new(10).priority(1).delay(Duration::from_secs(1)))
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let mut worker = jobs.consumer();
    assert_eq!(drain(&mut worker), [10, 0]);
}

/// Priorities are stored with the record: after a reopen the order holds.
#[test]
fn priorities_survive_a_reopen() {
    let dir = common::fresh_dir("priority-reopen");
    let path = dir.join("bus.embus");
    let open = || Broker::open(&path).unwrap();
    let bus = open();
    let jobs: Queue<u32> = bus
        .queue_with("jobs", QueueOptions::default().priorities(3))
        .unwrap();
    send_prioritized(&jobs);
    drop(jobs);
    bus.close().unwrap();
    let bus = open();
    let jobs: Queue<u32> = bus.queue("jobs").unwrap();
    let mut worker = jobs.consumer();
    assert_eq!(drain(&mut worker), [20, 21, 22, 10, 11, 0, 1]);
    drop((worker, jobs));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

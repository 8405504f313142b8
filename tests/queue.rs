//! Queues: ordering, competing consumers, acks, redelivery, prefetch, capacity, `wait_idle`, lag.

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::timed::{ACK_TIMEOUT, PAST_TIMEOUT, manual_bus, payload_and_count, timed_queue};
use common::{BRIEF, Backend, WAIT, both_backends, take};
use embus::{
    Backoff, Broker, Error, QueueOptions, RecvTimeoutError, SendTimeoutError, TryRecvError,
    TrySendError,
};

/// How long a helper thread waits for a wake-up the test then waits `WAIT` for. Longer than
/// `WAIT`, so that a missed wake-up fails the test rather than being hidden by the last
/// re-check a wait makes at its own deadline.
const THREAD_WAIT: Duration = Duration::from_secs(WAIT.as_secs() * 2);

/// Asserts that `wait_idle` fails right away with `NotIdle` naming `queue`.
fn assert_not_idle(bus: &Broker, queue: &str) {
    match bus.wait_idle(Duration::ZERO) {
        Err(Error::NotIdle { busy, .. }) => assert!(
            busy.contains(&format!("`{queue}`")),
            "NotIdle should name queue `{queue}`: {busy}"
        ),
        other => panic!("expected NotIdle naming `{queue}`, got {other:?}"),
    }
}

// ---- Ordering and distribution ----

both_backends!(first_deliveries_come_in_send_order);
fn first_deliveries_come_in_send_order(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let producer = jobs.producer();
    for i in 0..100 {
        producer.send(i).unwrap();
    }
    let mut worker = jobs.consumer();
    for i in 0..100 {
        let m = worker.recv_timeout(WAIT).unwrap();
        assert_eq!(payload_and_count(&m), (i, 1));
        m.ack().unwrap();
    }
}

both_backends!(receipts_number_queue_messages_in_send_order);
fn receipts_number_queue_messages_in_send_order(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let producer = jobs.producer();
    let receipts: Vec<_> = (0..3).map(|i| producer.send(i).unwrap()).collect();
    assert!(receipts.iter().all(|r| r.partition == 0));
    assert!(receipts.windows(2).all(|w| w[0].offset < w[1].offset));
    let mut worker = jobs.consumer();
    for receipt in receipts {
        let m = worker.recv_timeout(WAIT).unwrap();
        assert_eq!((m.partition(), m.offset()), (0, receipt.offset));
        m.ack().unwrap();
    }
}

both_backends!(competing_consumers_on_threads_receive_each_message_exactly_once);
fn competing_consumers_on_threads_receive_each_message_exactly_once(backend: Backend) {
    // Fewer on a durable broker, where every send waits for an fsync.
    let n = backend.scale(2_000u64);
    const K: usize = 4;
    // One per consumer, sent after the real messages: each thread stops at the first it gets,
    // so every thread gets exactly one.
    const STOP: u64 = u64::MAX;

    let bus = backend.bus();
    let jobs = bus
        .queue_with::<u64>("jobs", QueueOptions::default().no_ack_timeout())
        .unwrap();
    let workers: Vec<_> = (0..K)
        .map(|_| {
            let mut consumer = jobs.consumer();
            thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let m = consumer.recv_timeout(WAIT).unwrap();
                    assert_eq!(m.delivery_count(), 1, "nobody nacks: no redelivery");
                    let value = *m.payload();
                    m.ack().unwrap();
                    if value == STOP {
                        return got;
                    }
                    got.push(value);
                }
            })
        })
        .collect();

    let producer = jobs.producer();
    for i in 0..n {
        producer.send(i).unwrap();
    }
    for _ in 0..K {
        producer.send(STOP).unwrap();
    }

    let mut all = Vec::new();
    for worker in workers {
        let got = worker.join().unwrap();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "each consumer sees first deliveries in send order"
        );
        all.extend(got);
    }
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "a message was delivered twice");
    assert_eq!(distinct, (0..n).collect::<HashSet<_>>());
    assert!(jobs.is_empty());
    assert_eq!(jobs.in_flight(), 0);
    bus.wait_idle(WAIT).unwrap();
}

// ---- Ack ----

both_backends!(ack_deletes_the_message);
fn ack_deletes_the_message(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = timed_queue(&bus);
    jobs.producer().send(1).unwrap();
    jobs.producer().send(2).unwrap();
    assert_eq!(
        (jobs.len(), jobs.in_flight(), jobs.is_empty()),
        (2, 0, false)
    );

    let mut worker = jobs.consumer();
    let first = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(
        (jobs.len(), jobs.in_flight(), jobs.is_empty()),
        (1, 1, false)
    );
    first.ack().unwrap();
    assert_eq!(
        (jobs.len(), jobs.in_flight(), jobs.is_empty()),
        (1, 0, false)
    );

    assert_eq!(take(&mut worker, 1), [2]);
    assert_eq!(
        (jobs.len(), jobs.in_flight(), jobs.is_empty()),
        (0, 0, true)
    );

    // Acked messages are gone for good: no timeout brings them back.
    clock.advance(PAST_TIMEOUT * 10);
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
    assert!(jobs.is_empty());
}

// ---- Redelivery ----

both_backends!(nack_redelivers_with_delivery_count_plus_one);
fn nack_redelivers_with_delivery_count_plus_one(backend: Backend) {
    let bus = backend.bus();
    // Redelivered at once: about counts, not timing (tests/backoff.rs).
    let no_backoff = QueueOptions::default().backoff(Backoff::none());
    let jobs = bus.queue_with::<u32>("jobs", no_backoff).unwrap();
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    for count in 1..=3 {
        let m = worker.recv_timeout(WAIT).unwrap();
        assert_eq!(payload_and_count(&m), (7, count));
        m.nack().unwrap();
        assert_eq!((jobs.len(), jobs.in_flight()), (1, 0));
    }
    assert_eq!(take(&mut worker, 1), [7]);
    assert!(jobs.is_empty());
}

both_backends!(dropped_message_is_redelivered_with_delivery_count_plus_one);
fn dropped_message_is_redelivered_with_delivery_count_plus_one(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    let m = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(payload_and_count(&m), (7, 1));
    drop(m);
    assert_eq!((jobs.len(), jobs.in_flight()), (1, 0));
    let again = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(payload_and_count(&again), (7, 2));
}

both_backends!(dropped_consumer_releases_its_deliveries_to_other_consumers);
fn dropped_consumer_releases_its_deliveries_to_other_consumers(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send_batch(vec![1, 2]).unwrap();
    let mut first = jobs.consumer();
    // Keep the messages alive: it is the consumer's drop that must release them.
    let held = [
        first.recv_timeout(WAIT).unwrap(),
        first.recv_timeout(WAIT).unwrap(),
    ];
    assert_eq!(jobs.in_flight(), 2);
    drop(first);
    assert_eq!((jobs.len(), jobs.in_flight()), (2, 0));

    let mut second = jobs.consumer();
    let a = second.recv_timeout(WAIT).unwrap();
    let b = second.recv_timeout(WAIT).unwrap();
    let mut got = [payload_and_count(&a), payload_and_count(&b)];
    got.sort();
    assert_eq!(got, [(1, 2), (2, 2)]);
    drop(held); // stale deliveries: no effect
    assert_eq!((jobs.len(), jobs.in_flight()), (0, 2));
}

both_backends!(dropped_consumer_deliveries_are_retried_oldest_first_before_newer_messages);
fn dropped_consumer_deliveries_are_retried_oldest_first_before_newer_messages(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send_batch(vec![1, 2, 3]).unwrap();
    let mut first = jobs.consumer();
    let _held = [
        first.recv_timeout(WAIT).unwrap(),
        first.recv_timeout(WAIT).unwrap(),
    ];
    drop(first);
    let mut second = jobs.consumer();
    let got: Vec<_> = (0..3)
        .map(|_| {
            let m = second.recv_timeout(WAIT).unwrap();
            let seen = payload_and_count(&m);
            m.ack().unwrap();
            seen
        })
        .collect();
    assert_eq!(got, [(1, 2), (2, 2), (3, 1)]);
}

both_backends!(ack_timeout_redelivers_with_delivery_count_plus_one);
fn ack_timeout_redelivers_with_delivery_count_plus_one(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = timed_queue(&bus);
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    let _held = worker.recv_timeout(WAIT).unwrap();

    clock.advance(ACK_TIMEOUT - Duration::from_secs(1));
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(jobs.in_flight(), 1, "not timed out yet");

    clock.advance(Duration::from_secs(2));
    let again = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(payload_and_count(&again), (7, 2));
}

both_backends!(clock_advance_wakes_a_consumer_blocked_in_recv_on_another_thread);
fn clock_advance_wakes_a_consumer_blocked_in_recv_on_another_thread(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = timed_queue(&bus);
    jobs.producer().send(7).unwrap();
    let mut first = jobs.consumer();
    let _held = first.recv_timeout(WAIT).unwrap();

    let mut second = jobs.consumer();
    let (started_tx, started_rx) = mpsc::channel();
    let (got_tx, got_rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        started_tx.send(()).unwrap();
        let got = second.recv_timeout(THREAD_WAIT).map(|m| {
            let seen = payload_and_count(&m);
            m.ack().unwrap();
            seen
        });
        got_tx.send(got).unwrap();
    });
    started_rx.recv_timeout(WAIT).unwrap();
    assert!(
        got_rx.recv_timeout(BRIEF).is_err(),
        "nothing to receive before the ack timeout"
    );

    clock.advance(PAST_TIMEOUT);
    assert_eq!(got_rx.recv_timeout(WAIT).unwrap(), Ok((7, 2)));
    waiter.join().unwrap();
    assert!(jobs.is_empty());
}

both_backends!(no_ack_timeout_keeps_a_delivery_in_flight_however_much_time_passes);
fn no_ack_timeout_keeps_a_delivery_in_flight_however_much_time_passes(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = bus
        .queue_with::<u32>("jobs", QueueOptions::default().no_ack_timeout())
        .unwrap();
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    let held = worker.recv_timeout(WAIT).unwrap();
    clock.advance(Duration::from_secs(365 * 24 * 3600));
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(jobs.in_flight(), 1);
    held.ack().unwrap();
    assert!(jobs.is_empty());
}

both_backends!(nacked_message_is_retried_before_newer_messages);
fn nacked_message_is_retried_before_newer_messages(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send_batch(vec![1, 2, 3]).unwrap();
    let mut worker = jobs.consumer();
    let first = worker.recv_timeout(WAIT).unwrap();
    first.nack().unwrap();
    let got: Vec<_> = (0..3)
        .map(|_| {
            let m = worker.recv_timeout(WAIT).unwrap();
            let seen = payload_and_count(&m);
            m.ack().unwrap();
            seen
        })
        .collect();
    assert_eq!(got, [(1, 2), (2, 1), (3, 1)]);
}

both_backends!(timed_out_deliveries_are_retried_oldest_first_before_newer_messages);
fn timed_out_deliveries_are_retried_oldest_first_before_newer_messages(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = timed_queue(&bus);
    jobs.producer().send_batch(vec![1, 2, 3]).unwrap();
    let mut worker = jobs.consumer();
    let _held = [
        worker.recv_timeout(WAIT).unwrap(),
        worker.recv_timeout(WAIT).unwrap(),
    ];
    clock.advance(PAST_TIMEOUT);
    let got: Vec<_> = (0..3)
        .map(|_| {
            let m = worker.recv_timeout(WAIT).unwrap();
            let seen = payload_and_count(&m);
            m.ack().unwrap();
            seen
        })
        .collect();
    assert_eq!(got, [(1, 2), (2, 2), (3, 1)]);
}

// ---- Prefetch ----

both_backends!(prefetch_limits_unacked_deliveries_per_consumer);
fn prefetch_limits_unacked_deliveries_per_consumer(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<u32>("jobs", QueueOptions::default().prefetch(1))
        .unwrap();
    jobs.producer().send_batch(vec![1, 2]).unwrap();
    let mut worker = jobs.consumer();
    let first = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(*first.payload(), 1);
    assert_eq!(
        worker.recv_timeout(BRIEF).unwrap_err(),
        RecvTimeoutError::Timeout
    );
    assert_eq!(jobs.len(), 1, "the second message stays ready");
    first.ack().unwrap();
    assert_eq!(take(&mut worker, 1), [2]);
}

both_backends!(prefetch_limit_of_one_consumer_does_not_hold_back_others);
fn prefetch_limit_of_one_consumer_does_not_hold_back_others(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<u32>("jobs", QueueOptions::default().prefetch(1))
        .unwrap();
    jobs.producer().send_batch(vec![1, 2, 3]).unwrap();
    let mut busy = jobs.consumer();
    let mut other = jobs.consumer();
    let _held = busy.recv_timeout(WAIT).unwrap();
    assert_eq!(busy.try_recv().unwrap_err(), TryRecvError::Empty);
    let m = other.recv_timeout(WAIT).unwrap();
    assert_eq!(*m.payload(), 2);
    m.ack().unwrap();
    assert_eq!(take(&mut other, 1), [3]);
}

both_backends!(prefetch_window_reopens_after_a_nack);
fn prefetch_window_reopens_after_a_nack(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<u32>("jobs", QueueOptions::default().prefetch(1))
        .unwrap();
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    worker.recv_timeout(WAIT).unwrap().nack().unwrap();
    let again = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(payload_and_count(&again), (7, 2));
}

both_backends!(ack_on_another_thread_wakes_a_consumer_waiting_for_its_prefetch_window);
fn ack_on_another_thread_wakes_a_consumer_waiting_for_its_prefetch_window(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<u32>("jobs", QueueOptions::default().prefetch(1))
        .unwrap();
    jobs.producer().send_batch(vec![1, 2]).unwrap();
    let mut worker = jobs.consumer();
    let (handed_tx, handed_rx) = mpsc::channel();
    let (got_tx, got_rx) = mpsc::channel();
    let receiver = thread::spawn(move || {
        handed_tx.send(worker.recv_timeout(WAIT).unwrap()).unwrap();
        let next = worker.recv_timeout(THREAD_WAIT).map(|m| {
            let value = *m.payload();
            m.ack().unwrap();
            value
        });
        got_tx.send(next).unwrap();
    });
    let first = handed_rx.recv_timeout(WAIT).unwrap();
    assert_eq!(*first.payload(), 1);
    assert!(
        got_rx.recv_timeout(BRIEF).is_err(),
        "prefetch window is full until the ack"
    );
    first.ack().unwrap();
    assert_eq!(got_rx.recv_timeout(WAIT).unwrap(), Ok(2));
    receiver.join().unwrap();
}

// ---- Capacity ----

both_backends!(try_send_on_a_full_queue_hands_the_message_back);
fn try_send_on_a_full_queue_hands_the_message_back(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<String>("jobs", QueueOptions::default().capacity(2))
        .unwrap();
    let producer = jobs.producer();
    producer.try_send("a".to_string()).unwrap();
    producer.try_send("b".to_string()).unwrap();
    match producer.try_send("c".to_string()) {
        Err(TrySendError::Full(msg)) => assert_eq!(msg, "c"),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(jobs.len(), 2);
    let mut worker = jobs.consumer();
    assert_eq!(take(&mut worker, 2), ["a", "b"]);
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
}

both_backends!(capacity_counts_deliveries_in_flight_until_acked);
fn capacity_counts_deliveries_in_flight_until_acked(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<u32>("jobs", QueueOptions::default().capacity(1))
        .unwrap();
    let producer = jobs.producer();
    producer.send(1).unwrap();
    let mut worker = jobs.consumer();
    let m = worker.recv_timeout(WAIT).unwrap();
    assert!(producer.try_send(2).unwrap_err().is_full(), "in flight");
    m.nack().unwrap();
    assert!(producer.try_send(2).unwrap_err().is_full(), "nacked: ready");
    worker.recv_timeout(WAIT).unwrap().ack().unwrap();
    producer.try_send(2).unwrap();
    assert_eq!(take(&mut worker, 1), [2]);
}

both_backends!(send_timeout_on_a_full_queue_times_out_with_the_message);
fn send_timeout_on_a_full_queue_times_out_with_the_message(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<u32>("jobs", QueueOptions::default().capacity(1))
        .unwrap();
    let producer = jobs.producer();
    producer.send(1).unwrap();
    match producer.send_timeout(2, BRIEF) {
        Err(SendTimeoutError::Timeout(msg)) => assert_eq!(msg, 2),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(jobs.len(), 1);
}

both_backends!(blocked_send_completes_after_an_ack);
fn blocked_send_completes_after_an_ack(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<u32>("jobs", QueueOptions::default().capacity(1))
        .unwrap();
    let producer = jobs.producer();
    producer.send(1).unwrap();

    let (sent_tx, sent_rx) = mpsc::channel();
    let sender = {
        let producer = producer.clone();
        thread::spawn(move || {
            let result = producer.send(2).map_err(|e| e.into_inner());
            sent_tx.send(result).unwrap();
        })
    };
    assert!(
        sent_rx.recv_timeout(BRIEF).is_err(),
        "send must block while the queue is full"
    );

    let mut worker = jobs.consumer();
    let m = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(*m.payload(), 1);
    m.ack().unwrap();
    sent_rx
        .recv_timeout(WAIT)
        .expect("the blocked send completes after the ack")
        .unwrap();
    sender.join().unwrap();
    assert_eq!(take(&mut worker, 1), [2]);
}

// ---- wait_idle ----

both_backends!(wait_idle_names_a_queue_with_ready_messages);
fn wait_idle_names_a_queue_with_ready_messages(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send(1).unwrap();
    assert_not_idle(&bus, "jobs");
    match bus.wait_idle(BRIEF) {
        Err(Error::NotIdle { waited, .. }) => assert_eq!(waited, BRIEF),
        other => panic!("expected NotIdle, got {other:?}"),
    }
}

both_backends!(wait_idle_names_a_queue_with_deliveries_in_flight);
fn wait_idle_names_a_queue_with_deliveries_in_flight(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send(1).unwrap();
    let mut worker = jobs.consumer();
    let held = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(jobs.len(), 0);
    assert_not_idle(&bus, "jobs");
    held.ack().unwrap();
    bus.wait_idle(WAIT).unwrap();
}

both_backends!(wait_idle_succeeds_once_every_message_is_acked);
fn wait_idle_succeeds_once_every_message_is_acked(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send_batch(vec![1, 2, 3]).unwrap();
    let mut worker = jobs.consumer();
    assert_eq!(take(&mut worker, 3), [1, 2, 3]);
    bus.wait_idle(WAIT).unwrap();
}

both_backends!(wait_idle_returns_when_a_worker_thread_acks_the_last_message);
fn wait_idle_returns_when_a_worker_thread_acks_the_last_message(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send_batch(vec![1, 2]).unwrap();
    let mut worker = jobs.consumer();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let handle = thread::spawn(move || {
        go_rx.recv_timeout(WAIT).unwrap();
        take(&mut worker, 2)
    });
    assert_not_idle(&bus, "jobs");
    go_tx.send(()).unwrap();
    let started = Instant::now();
    bus.wait_idle(WAIT).unwrap();
    assert!(
        started.elapsed() < WAIT,
        "woken by the last ack, not by its own deadline"
    );
    assert_eq!(handle.join().unwrap(), [1, 2]);
    assert!(jobs.is_empty());
}

both_backends!(wait_idle_waits_through_an_ack_timeout_until_the_redelivery_is_acked);
fn wait_idle_waits_through_an_ack_timeout_until_the_redelivery_is_acked(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = timed_queue(&bus);
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    let _abandoned = worker.recv_timeout(WAIT).unwrap();

    let (idle_tx, idle_rx) = mpsc::channel();
    let waiter = {
        let bus = bus.clone();
        thread::spawn(move || idle_tx.send(bus.wait_idle(THREAD_WAIT)).unwrap())
    };
    assert!(
        idle_rx.recv_timeout(BRIEF).is_err(),
        "a delivery is in flight"
    );

    clock.advance(PAST_TIMEOUT);
    assert_eq!((jobs.len(), jobs.in_flight()), (1, 0), "timed out: ready");
    assert_not_idle(&bus, "jobs");
    let again = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(payload_and_count(&again), (7, 2));
    again.ack().unwrap();

    idle_rx
        .recv_timeout(WAIT)
        .expect("wait_idle returns once the redelivery is acked")
        .unwrap();
    waiter.join().unwrap();
}

// ---- Introspection ----

both_backends!(queue_consumer_lag_counts_ready_messages);
fn queue_consumer_lag_counts_ready_messages(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let mut worker = jobs.consumer();
    let idle = jobs.consumer();
    assert_eq!(worker.lag(), 0);
    jobs.producer().send_batch(vec![1, 2, 3]).unwrap();
    assert_eq!((worker.lag(), idle.lag()), (3, 3));

    let m = worker.recv_timeout(WAIT).unwrap();
    assert_eq!((worker.lag(), idle.lag()), (2, 2), "in flight is not lag");
    m.nack().unwrap();
    assert_eq!(worker.lag(), 3, "a nacked message is ready again");
    take(&mut worker, 3);
    assert_eq!((worker.lag(), idle.lag()), (0, 0));
}

both_backends!(queue_consumer_reads_partition_zero);
fn queue_consumer_reads_partition_zero(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    assert_eq!(jobs.consumer().partitions(), [0]);
}

both_backends!(queue_reports_its_name_options_and_capacity);
fn queue_reports_its_name_options_and_capacity(backend: Backend) {
    let bus = backend.bus();
    let options = QueueOptions::default()
        .capacity(5)
        .prefetch(2)
        .ack_timeout(ACK_TIMEOUT);
    let jobs = bus.queue_with::<u32>("jobs", options.clone()).unwrap();
    assert_eq!(jobs.name(), "jobs");
    assert_eq!(jobs.options(), &options);
    assert_eq!(jobs.capacity(), 5);
}

// ---- Declaration ----

both_backends!(queue_returns_the_existing_queue_whatever_its_options);
fn queue_returns_the_existing_queue_whatever_its_options(backend: Backend) {
    let bus = backend.bus();
    let declared = bus
        .queue_with::<u32>("jobs", QueueOptions::default().capacity(5))
        .unwrap();
    let found = bus.queue::<u32>("jobs").unwrap();
    assert_eq!(found.capacity(), 5);
    found.producer().send(1).unwrap();
    assert_eq!(declared.len(), 1, "the same queue");
}

both_backends!(queue_with_other_options_is_a_mismatch);
fn queue_with_other_options_is_a_mismatch(backend: Backend) {
    let bus = backend.bus();
    bus.queue_with::<u32>("jobs", QueueOptions::default().capacity(5))
        .unwrap();
    common::expect_mismatch(
        bus.queue_with::<u32>("jobs", QueueOptions::default().capacity(6)),
        "jobs",
    );
}

both_backends!(queue_with_zero_capacity_is_an_invalid_option);
fn queue_with_zero_capacity_is_an_invalid_option(backend: Backend) {
    let bus = backend.bus();
    common::expect_invalid_option(
        bus.queue_with::<u32>("jobs", QueueOptions::default().capacity(0)),
        "jobs",
        "capacity",
    );
}

both_backends!(try_recv_redelivers_a_delivery_whose_ack_timeout_passed_on_the_system_clock);
/// Regression: with the system clock, `try_recv` skipped the queue's lock whenever nothing was
/// ready, so a delivery whose ack timeout had passed was never redelivered to it.
fn try_recv_redelivers_a_delivery_whose_ack_timeout_passed_on_the_system_clock(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<u32>(
            "jobs",
            QueueOptions::default().ack_timeout(Duration::from_millis(1)),
        )
        .unwrap();
    jobs.producer().send(1).unwrap();
    let mut first = jobs.consumer();
    let held = first.try_recv().unwrap();
    let mut second = jobs.consumer();
    let again = try_recv_redelivered(&mut second);
    assert_eq!((*again.payload(), again.delivery_count()), (1, 2));
    drop(held);
}

both_backends!(an_ack_timeout_on_the_system_clock_never_passes_early);
/// A busy queue's lock-free looks and acks read the coarse clock, which lags: only to see a
/// timeout late, never to set a deadline, so a timeout never passes early.
fn an_ack_timeout_on_the_system_clock_never_passes_early(backend: Backend) {
    let timeout = Duration::from_millis(10);
    let bus = backend.bus();
    let options = QueueOptions::default().ack_timeout(timeout);
    let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
    let (mut first, mut second) = (jobs.consumer(), jobs.consumer());
    for i in 0..20 {
        jobs.producer().send(i).unwrap();
        // Each delivery at another point between two kernel ticks (a redelivery seen by the
        // coarse clock is seen at a tick, and the next delivery would otherwise follow it at
        // once): a deadline set from the coarse clock would then come early.
        let spin_until = Instant::now() + Duration::from_micros(u64::from(i) * 450 % 4_000);
        while Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        let before = Instant::now();
        let held = first.try_recv().unwrap();
        let again = try_recv_redelivered(&mut second);
        let waited = before.elapsed();
        assert!(
            waited >= timeout,
            "redelivered {waited:?} after the delivery"
        );
        assert_eq!((*again.payload(), again.delivery_count()), (i, 2));
        again.ack().unwrap();
        drop(held);
    }
}

/// `try_recv`s (never waiting, so only the looks that do not park) until a timed-out delivery
/// comes back, for up to `WAIT`.
fn try_recv_redelivered(consumer: &mut embus::Consumer<u32>) -> embus::Message<u32> {
    let deadline = Instant::now() + WAIT;
    loop {
        match consumer.try_recv() {
            Ok(m) => return m,
            Err(TryRecvError::Empty) if Instant::now() < deadline => thread::yield_now(),
            Err(e) => panic!("the timed-out delivery never came back: {e}"),
        }
    }
}

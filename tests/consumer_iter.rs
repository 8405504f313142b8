//! Consumer receive methods (`recv`, `try_recv`, `recv_timeout`, `recv_deadline`), iterators (`iter`, `try_iter`, `IntoIterator`) and `Message` accessors.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{BRIEF, Backend, WAIT, both_backends};
use embus::{
    Backoff, Consumer, Ended, Error, ManualClock, Message, QueueOptions, Record, RecvError,
    RecvTimeoutError, Retention, Start, TopicOptions, TryRecvError,
};

fn payloads(messages: Vec<Result<Message<u64>, RecvError>>) -> Vec<Result<u64, RecvError>> {
    messages
        .into_iter()
        .map(|m| m.map(|m| *m.payload()))
        .collect()
}

// ---- recv, try_recv, recv_timeout, recv_deadline -------------------------------------------

both_backends!(recv_waits_for_a_message_from_another_thread);
fn recv_waits_for_a_message_from_another_thread(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<u64>("t").unwrap();
    let queue = bus.queue::<u64>("q").unwrap();
    let mut sub = topic.subscribe(Start::Latest).unwrap();
    let mut worker = queue.consumer();
    let (tx, rx) = mpsc::channel();
    let receiver = thread::spawn(move || {
        let a = sub.recv().map(|m| *m.payload());
        let b = worker.recv().map(|m| {
            let p = *m.payload();
            m.ack().unwrap();
            p
        });
        tx.send((a, b)).unwrap();
    });
    assert!(
        rx.recv_timeout(BRIEF).is_err(),
        "recv returned with nothing sent"
    );
    topic.producer().send(1).unwrap();
    queue.producer().send(2).unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), (Ok(1), Ok(2)));
    receiver.join().unwrap();
}

both_backends!(try_recv_is_empty_until_a_message_is_ready);
fn try_recv_is_empty_until_a_message_is_ready(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<u64>("t").unwrap();
    let queue = bus.queue::<u64>("q").unwrap();
    let mut consumers: Vec<Consumer<u64>> = vec![
        topic.subscribe(Start::Earliest).unwrap(),
        topic.join_group("g").unwrap(),
        queue.consumer(),
    ];
    for c in &mut consumers {
        assert_eq!(c.try_recv().unwrap_err(), TryRecvError::Empty);
        assert!(c.try_recv().unwrap_err().is_empty());
    }
    topic.producer().send(1).unwrap();
    queue.producer().send(1).unwrap();
    for c in &mut consumers {
        let m = c.try_recv().unwrap();
        assert_eq!(*m.payload(), 1);
        m.ack().unwrap();
        assert_eq!(c.try_recv().unwrap_err(), TryRecvError::Empty);
    }
}

both_backends!(recv_timeout_times_out_then_receives);
fn recv_timeout_times_out_then_receives(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<u64>("t").unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let started = Instant::now();
    let err = sub.recv_timeout(BRIEF).unwrap_err();
    assert_eq!(err, RecvTimeoutError::Timeout);
    assert!(err.is_timeout());
    assert!(started.elapsed() >= BRIEF, "returned before the timeout");

    topic.producer().send(5).unwrap();
    assert_eq!(*sub.recv_timeout(WAIT).unwrap().payload(), 5);
    // A ready message is returned even with a zero timeout.
    topic.producer().send(6).unwrap();
    assert_eq!(*sub.recv_timeout(Duration::ZERO).unwrap().payload(), 6);
    assert_eq!(
        sub.recv_timeout(Duration::ZERO).unwrap_err(),
        RecvTimeoutError::Timeout
    );
}

both_backends!(recv_deadline_waits_until_the_deadline);
fn recv_deadline_waits_until_the_deadline(backend: Backend) {
    let bus = backend.bus();
    let queue = bus.queue::<u64>("q").unwrap();
    let mut worker = queue.consumer();

    let deadline = Instant::now() + BRIEF;
    assert_eq!(
        worker.recv_deadline(deadline).unwrap_err(),
        RecvTimeoutError::Timeout
    );
    assert!(Instant::now() >= deadline, "returned before the deadline");

    // A deadline in the past still takes a ready message.
    queue.producer().send(1).unwrap();
    let past = Instant::now() - Duration::from_millis(1);
    let m = worker.recv_deadline(past).unwrap();
    assert_eq!(*m.payload(), 1);
    m.ack().unwrap();
    assert_eq!(
        worker.recv_deadline(past).unwrap_err(),
        RecvTimeoutError::Timeout
    );

    // A message sent meanwhile from another thread ends the wait early.
    let producer = queue.producer();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let sender = thread::spawn(move || {
        go_rx.recv().unwrap();
        producer.send(2).unwrap();
    });
    go_tx.send(()).unwrap();
    let m = worker.recv_deadline(Instant::now() + WAIT).unwrap();
    assert_eq!(*m.payload(), 2);
    m.ack().unwrap();
    sender.join().unwrap();
}

// ---- iter --------------------------------------------------------------------------------------

both_backends!(iter_yields_messages_in_order_and_ends_after_close);
fn iter_yields_messages_in_order_and_ends_after_close(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<u64>("t").unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    topic.producer().send_batch(vec![1, 2, 3]).unwrap();
    bus.close().unwrap();
    let got = payloads(sub.iter().collect());
    assert_eq!(got, [Ok(1), Ok(2), Ok(3)]);
    // Ended for good.
    assert!(sub.iter().next().is_none());
    assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Disconnected);
}

both_backends!(iter_blocks_for_messages_sent_later);
fn iter_blocks_for_messages_sent_later(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<u64>("t").unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let producer = topic.producer();
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        for m in sub.iter() {
            tx.send(m.map(|m| *m.payload())).unwrap();
        }
    });
    for i in 0..3 {
        producer.send(i).unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), Ok(i));
    }
    assert!(
        rx.recv_timeout(BRIEF).is_err(),
        "iter yielded with nothing sent"
    );
    drop((bus, topic, producer)); // the last handles: the iterator ends
    reader.join().unwrap();
    assert!(rx.try_recv().is_err());
}

both_backends!(iter_over_a_group_and_a_queue_acks_as_it_goes);
fn iter_over_a_group_and_a_queue_acks_as_it_goes(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u64>("t", TopicOptions::default().partitions(3))
        .unwrap();
    let queue = bus.queue::<u64>("q").unwrap();
    let mut member = topic.join_group("g").unwrap();
    let mut worker = queue.consumer();
    topic.producer().send_batch((0..9).collect()).unwrap();
    queue.producer().send_batch((0..5).collect()).unwrap();

    let mut from_group: Vec<u64> = member
        .iter()
        .take(9)
        .map(|m| {
            let m = m.unwrap();
            let p = *m.payload();
            m.ack().unwrap();
            p
        })
        .collect();
    from_group.sort_unstable();
    assert_eq!(from_group, (0..9).collect::<Vec<_>>());
    let from_queue: Vec<u64> = worker
        .iter()
        .take(5)
        .map(|m| {
            let m = m.unwrap();
            let p = *m.payload();
            m.ack().unwrap();
            p
        })
        .collect();
    assert_eq!(from_queue, [0, 1, 2, 3, 4]);
    bus.wait_idle(WAIT).unwrap();
}

both_backends!(iter_yields_lagged_and_keeps_going);
fn iter_yields_lagged_and_keeps_going(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u64>(
            "t",
            TopicOptions::default().retention(Retention::messages(2)),
        )
        .unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let lag = embus::GroupOptions::default().overflow(embus::Overflow::Lag);
    let mut member = topic.join_group_with("g", lag).unwrap();
    topic.producer().send_batch(vec![0, 1, 2, 3, 4]).unwrap();
    assert_eq!(topic.offsets(0), Some(3..5));
    bus.close().unwrap();

    let expected = [Err(RecvError::Lagged { skipped: 3 }), Ok(3), Ok(4)];
    assert_eq!(payloads(sub.iter().collect()), expected);
    let from_group: Vec<_> = member
        .iter()
        .map(|m| {
            m.map(|m| {
                let p = *m.payload();
                backend.settled_after_close(m.ack());
                p
            })
        })
        .collect();
    assert_eq!(from_group, expected);
}

both_backends!(iter_reports_lag_in_the_middle_of_a_stream);
fn iter_reports_lag_in_the_middle_of_a_stream(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u64>(
            "t",
            TopicOptions::default().retention(Retention::messages(3)),
        )
        .unwrap();
    let producer = topic.producer();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    producer.send(0).unwrap();
    assert_eq!(payloads(sub.iter().take(1).collect()), [Ok(0)]);
    // The subscriber falls behind: offsets 1..=6 are sent, 4..=6 retained.
    producer.send_batch(vec![1, 2, 3, 4, 5, 6]).unwrap();
    let got = payloads(sub.iter().take(4).collect());
    assert_eq!(
        got,
        [Err(RecvError::Lagged { skipped: 3 }), Ok(4), Ok(5), Ok(6)]
    );
    // Lagged was reported once; the stream goes on.
    producer.send(7).unwrap();
    assert_eq!(payloads(sub.iter().take(1).collect()), [Ok(7)]);
}

both_backends!(a_subscriber_starting_below_retention_gets_lagged_first);
fn a_subscriber_starting_below_retention_gets_lagged_first(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u64>(
            "t",
            TopicOptions::default().retention(Retention::messages(2)),
        )
        .unwrap();
    topic.producer().send_batch(vec![0, 1, 2, 3]).unwrap();
    let mut sub = topic.subscribe(Start::Offset(0)).unwrap();
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Lagged { skipped: 2 }
    );
    assert_eq!(*sub.recv_timeout(WAIT).unwrap().payload(), 2);
    let mut late = topic.subscribe(Start::Offset(1)).unwrap();
    assert_eq!(
        late.try_recv().unwrap_err(),
        TryRecvError::Lagged { skipped: 1 }
    );
    assert_eq!(*late.try_recv().unwrap().payload(), 2);
}

// ---- try_iter ---------------------------------------------------------------------------------

both_backends!(try_iter_drains_what_is_ready_and_stops_without_blocking);
fn try_iter_drains_what_is_ready_and_stops_without_blocking(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<u64>("t").unwrap();
    let producer = topic.producer();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();

    assert!(sub.try_iter().next().is_none(), "nothing is ready");
    producer.send_batch(vec![1, 2, 3]).unwrap();
    assert_eq!(payloads(sub.try_iter().collect()), [Ok(1), Ok(2), Ok(3)]);
    assert!(sub.try_iter().next().is_none());
    // Not fused: what arrives later is drained by the next try_iter.
    producer.send(4).unwrap();
    assert_eq!(payloads(sub.try_iter().collect()), [Ok(4)]);

    // After close: drains what is left, then stops.
    producer.send_batch(vec![5, 6]).unwrap();
    bus.close().unwrap();
    assert_eq!(payloads(sub.try_iter().collect()), [Ok(5), Ok(6)]);
    assert!(sub.try_iter().next().is_none());
}

both_backends!(try_iter_over_a_queue_acks_and_stops_when_empty);
fn try_iter_over_a_queue_acks_and_stops_when_empty(backend: Backend) {
    let bus = backend.bus();
    let queue = bus.queue::<u64>("q").unwrap();
    let mut worker = queue.consumer();
    queue.producer().send_batch(vec![1, 2, 3]).unwrap();
    let got: Vec<u64> = worker
        .try_iter()
        .map(|m| {
            let m = m.unwrap();
            let p = *m.payload();
            m.ack().unwrap();
            p
        })
        .collect();
    assert_eq!(got, [1, 2, 3]);
    assert!(queue.is_empty());
    assert!(worker.try_iter().next().is_none());
}

both_backends!(try_iter_yields_lagged_and_keeps_going);
fn try_iter_yields_lagged_and_keeps_going(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u64>(
            "t",
            TopicOptions::default().retention(Retention::messages(2)),
        )
        .unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    topic.producer().send_batch(vec![0, 1, 2, 3, 4]).unwrap();
    assert_eq!(
        payloads(sub.try_iter().collect()),
        [Err(RecvError::Lagged { skipped: 3 }), Ok(3), Ok(4)]
    );
}

// ---- IntoIterator -------------------------------------------------------------------------------

both_backends!(for_loop_over_a_mutable_consumer_borrows_it);
fn for_loop_over_a_mutable_consumer_borrows_it(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<u64>("t").unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    topic.producer().send_batch(vec![1, 2, 3, 4]).unwrap();
    let mut seen = Vec::new();
    for m in &mut sub {
        let m = m.unwrap();
        seen.push(*m.payload());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, [1, 2]);
    // The consumer is still ours and continues where the loop stopped.
    assert_eq!(*sub.recv_timeout(WAIT).unwrap().payload(), 3);
    drop(topic);
    drop(bus);
    for m in &mut sub {
        seen.push(*m.unwrap().payload());
    }
    assert_eq!(seen, [1, 2, 4]);
}

both_backends!(into_iter_owns_the_consumer);
fn into_iter_owns_the_consumer(backend: Backend) {
    let bus = backend.bus();
    let queue = bus.queue::<u64>("q").unwrap();
    queue.producer().send_batch(vec![1, 2, 3]).unwrap();
    let worker = queue.consumer();
    let mut iter = worker.into_iter();
    let first = iter.next().unwrap().unwrap();
    assert_eq!(*first.payload(), 1);
    first.ack().unwrap();
    // Dropping the owning iterator drops the consumer: nothing in flight stays held.
    let second = iter.next().unwrap().unwrap();
    assert_eq!(queue.in_flight(), 1);
    drop(second); // unacked: released for redelivery
    drop(iter);
    assert_eq!(queue.in_flight(), 0);
    assert_eq!(queue.len(), 2);

    let topic = bus.topic::<u64>("t").unwrap();
    let sub = topic.subscribe(Start::Earliest).unwrap();
    topic.producer().send_batch(vec![7, 8]).unwrap();
    drop((bus, queue, topic));
    let all: Vec<u64> = sub.into_iter().map(|m| *m.unwrap().payload()).collect();
    assert_eq!(all, [7, 8]);
}

// ---- Message accessors --------------------------------------------------------------------------

both_backends!(topic_message_accessors);
fn topic_message_accessors(backend: Backend) {
    let clock = ManualClock::new();
    let t0 = clock.now();
    let bus = backend.bus_with_clock(clock.clone());
    let topic = bus
        .topic_with::<u64>("t", TopicOptions::default().partitions(4))
        .unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let producer = topic.producer();

    let keyed = producer
        .send_record(
            Record::new(10)
                .key("customer-42")
                .header("trace-id", b"abc")
                .header("trace-id", b"second")
                .header("empty", b""),
        )
        .unwrap();
    clock.advance(Duration::from_secs(5));
    let plain = producer.send(11).unwrap();
    let again = producer
        .send_record(Record::new(12).key("customer-42"))
        .unwrap();
    // One key, one partition, consecutive offsets.
    assert_eq!(again.partition, keyed.partition);
    assert_eq!(again.offset, keyed.offset + 1);

    let mut got: Vec<Message<u64>> = (0..3).map(|_| sub.recv_timeout(WAIT).unwrap()).collect();
    got.sort_by_key(|m| *m.payload());

    let m = &got[0];
    assert_eq!(*m.payload(), 10);
    assert_eq!(m.key(), Some(&b"customer-42"[..]));
    assert_eq!(m.headers().get("trace-id"), Some(&b"abc"[..]));
    assert_eq!(m.headers().get("empty"), Some(&b""[..]));
    assert_eq!(m.headers().get("missing"), None);
    assert_eq!(m.headers().len(), 3);
    assert_eq!(
        m.headers().iter().collect::<Vec<_>>(),
        [
            ("trace-id", &b"abc"[..]),
            ("trace-id", &b"second"[..]),
            ("empty", &b""[..])
        ]
    );
    assert_eq!((m.partition(), m.offset()), (keyed.partition, keyed.offset));
    assert_eq!(m.timestamp(), t0);
    assert_eq!(m.delivery_count(), 1);

    let m = &got[1];
    assert_eq!(*m.payload(), 11);
    assert_eq!(m.key(), None);
    assert!(m.headers().is_empty());
    assert_eq!((m.partition(), m.offset()), (plain.partition, plain.offset));
    assert_eq!(m.timestamp(), t0 + Duration::from_secs(5));
    assert_eq!(m.delivery_count(), 1);

    let m = &got[2];
    assert_eq!((m.partition(), m.offset()), (again.partition, again.offset));
    assert!(m.partition() < 4);

    // A plain subscriber's messages are always a first delivery, even on a replay.
    let mut replay = topic.subscribe(Start::Offset(0)).unwrap();
    let first: Vec<_> = replay.try_iter().map(|m| m.unwrap()).collect();
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|m| m.delivery_count() == 1));
    for m in first {
        m.nack().unwrap(); // a no-op for a subscriber
    }
    assert_eq!(replay.try_recv().unwrap_err(), TryRecvError::Empty);
}

both_backends!(group_message_delivery_count_rises_on_redelivery);
fn group_message_delivery_count_rises_on_redelivery(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let topic = bus.topic::<u64>("t").unwrap();
    let mut member = topic.join_group("g").unwrap();
    let receipt = topic
        .producer()
        .send_record(Record::new(1).key("k").header("h", "v"))
        .unwrap();
    let first = member.recv_timeout(WAIT).unwrap();
    assert_eq!(first.delivery_count(), 1);
    assert_eq!((first.partition(), first.offset()), (0, receipt.offset));
    first.nack().unwrap();
    clock.advance(Duration::from_secs(1));
    let second = member.recv_timeout(WAIT).unwrap();
    assert_eq!(second.delivery_count(), 2);
    assert_eq!(second.offset(), receipt.offset);
    assert_eq!(second.key(), Some(&b"k"[..]));
    assert_eq!(second.headers().get("h"), Some(&b"v"[..]));
    // The timestamp is when the broker accepted it, not when it was redelivered.
    assert_eq!(second.timestamp(), ManualClock::new().now());
    second.ack().unwrap();
    assert_eq!(topic.group_position("g"), Some(vec![1]));
}

both_backends!(queue_message_accessors);
fn queue_message_accessors(backend: Backend) {
    let clock = ManualClock::starting_at(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000));
    let bus = backend.bus_with_clock(clock.clone());
    let queue = bus
        .queue_with::<u64>(
            "q",
            // Redelivered at once: about accessors, not timing (tests/backoff.rs).
            QueueOptions::default()
                .ack_timeout(Duration::from_secs(10))
                .backoff(Backoff::none()),
        )
        .unwrap();
    let producer = queue.producer();
    let a = producer
        .send_record(Record::new(1).key("job-1").header("attempt", "x"))
        .unwrap();
    clock.advance(Duration::from_secs(2));
    let b = producer.send(2).unwrap();
    assert_eq!((a.partition, b.partition), (0, 0));
    assert!(b.offset > a.offset);

    let mut worker = queue.consumer();
    let m = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(*m.payload(), 1);
    assert_eq!(m.key(), Some(&b"job-1"[..]));
    assert_eq!(m.headers().get("attempt"), Some(&b"x"[..]));
    assert_eq!((m.partition(), m.offset()), (0, a.offset));
    assert_eq!(
        m.timestamp(),
        std::time::UNIX_EPOCH + Duration::from_secs(1_000_000)
    );
    assert_eq!(m.delivery_count(), 1);
    m.nack().unwrap();

    let m = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(
        (*m.payload(), m.delivery_count(), m.offset()),
        (1, 2, a.offset)
    );
    assert_eq!(m.key(), Some(&b"job-1"[..]));
    // Held past the ack timeout: redelivered a third time.
    clock.advance(Duration::from_secs(11));
    let again = worker.recv_timeout(WAIT).unwrap();
    assert_eq!((*again.payload(), again.delivery_count()), (1, 3));
    // Stale: does nothing, and says so.
    assert!(matches!(
        m.ack(),
        Err(Error::DeliveryEnded {
            reason: Ended::AckTimeout,
            ..
        })
    ));
    again.ack().unwrap();

    let m = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(
        (*m.payload(), m.offset(), m.delivery_count()),
        (2, b.offset, 1)
    );
    assert_eq!(m.key(), None);
    assert!(m.headers().is_empty());
    assert_eq!(
        m.timestamp(),
        std::time::UNIX_EPOCH + Duration::from_secs(1_000_002)
    );
    m.ack().unwrap();
    assert!(queue.is_empty());
}

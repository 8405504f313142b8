//! Broker lifecycle: which handles keep the bus open, and how `close()` and dropping the last handle disconnect consumers and producers.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{BRIEF, Backend, WAIT, both_backends};
use embus::{
    Broker, Consumer, Error, ManualClock, Overflow, QueueOptions, RecvError, RecvTimeoutError,
    Retention, SendError, SendTimeoutError, Start, TopicOptions, TryRecvError, TrySendError,
};

/// Runs `f` on another thread and returns a receiver for its result, so the test can wait for it
/// with a deadline instead of joining (which would hang forever on a lost wakeup).
fn spawn<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> mpsc::Receiver<R> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

/// Blocks in `recv` on another thread (after telling the test it is about to) and reports what
/// `recv` returned.
fn recv_on_thread(mut consumer: Consumer<u64>) -> mpsc::Receiver<Result<u64, RecvError>> {
    let (started_tx, started_rx) = mpsc::channel();
    let done = spawn(move || {
        started_tx.send(()).unwrap();
        consumer.recv().map(|m| {
            let payload = *m.payload();
            m.ack().unwrap();
            payload
        })
    });
    started_rx.recv_timeout(WAIT).unwrap();
    done
}

fn recv_all(consumer: &mut Consumer<u64>) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        match consumer.recv_timeout(WAIT) {
            Ok(m) => {
                got.push(*m.payload());
                // After close, a durable broker cannot store the ack, and says so.
                let acked = m.ack();
                assert!(matches!(acked, Ok(()) | Err(Error::Closed)), "{acked:?}");
            }
            Err(RecvTimeoutError::Disconnected) => return got,
            Err(e) => panic!("expected messages then Disconnected, got {e:?} after {got:?}"),
        }
    }
}

// ---- which handles keep the bus open -------------------------------------------------------

both_backends!(broker_clone_keeps_the_bus_open);
fn broker_clone_keeps_the_bus_open(backend: Backend) {
    let bus = backend.bus();
    let other = bus.clone();
    let topic = bus.topic::<u64>("t").unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    drop(topic);
    drop(bus);
    assert!(!other.is_closed());
    // The remaining clone is the same bus: the topic is still there, with its subscriber.
    other.topic::<u64>("t").unwrap().producer().send(1).unwrap();
    assert_eq!(*sub.recv_timeout(WAIT).unwrap().payload(), 1);
    drop(other);
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Disconnected
    );
}

both_backends!(a_topic_handle_alone_keeps_the_bus_open);
fn a_topic_handle_alone_keeps_the_bus_open(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<u64>("t").unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    drop(bus);
    // Still open: sends succeed, new subscribers and groups can be made.
    topic.producer().send(1).unwrap();
    let mut group = topic.join_group("g").unwrap();
    let mut late = topic.subscribe(Start::Earliest).unwrap();
    assert_eq!(*sub.recv_timeout(WAIT).unwrap().payload(), 1);
    assert_eq!(common::take(&mut group, 1), [1]);
    assert_eq!(common::take(&mut late, 1), [1]);
    assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Empty);

    drop(topic);
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Disconnected
    );
    assert_eq!(
        group.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Disconnected
    );
}

both_backends!(a_queue_handle_alone_keeps_the_bus_open);
fn a_queue_handle_alone_keeps_the_bus_open(backend: Backend) {
    let bus = backend.bus();
    let queue = bus.queue::<u64>("q").unwrap();
    let mut worker = queue.consumer();
    drop(bus);
    queue.producer().send(7).unwrap();
    assert_eq!(common::take(&mut worker, 1), [7]);
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);

    drop(queue);
    assert_eq!(
        worker.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Disconnected
    );
}

both_backends!(a_producer_alone_keeps_the_bus_open);
fn a_producer_alone_keeps_the_bus_open(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<u64>("t").unwrap();
    let queue = bus.queue::<u64>("q").unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let mut worker = queue.consumer();
    let topic_producer = topic.producer();
    let queue_producer = queue.producer();
    drop((bus, topic, queue));

    topic_producer.send(1).unwrap();
    queue_producer.send(2).unwrap();
    assert_eq!(*sub.recv_timeout(WAIT).unwrap().payload(), 1);
    assert_eq!(common::take(&mut worker, 1), [2]);

    // A clone of a producer counts as a handle too.
    let clone = queue_producer.clone();
    drop(queue_producer);
    clone.send(3).unwrap();
    assert_eq!(common::take(&mut worker, 1), [3]);

    drop(clone);
    // The topic producer still holds the bus open.
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
    drop(topic_producer);
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Disconnected
    );
    assert_eq!(
        worker.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Disconnected
    );
}

both_backends!(consumers_messages_and_clocks_do_not_keep_the_bus_open);
fn consumers_messages_and_clocks_do_not_keep_the_bus_open(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let topic = bus.topic::<u64>("t").unwrap();
    // A dead-letter queue (declared by the broker itself) does not hold the bus open either.
    let queue = bus
        .queue_with::<u64>(
            "q",
            QueueOptions::default()
                .max_deliveries(1)
                .dead_letter("q.dead"),
        )
        .unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let mut member = topic.join_group("g").unwrap();
    let mut worker = queue.consumer();
    topic.producer().send(1).unwrap();
    queue.producer().send(2).unwrap();
    let held = worker.recv_timeout(WAIT).unwrap();
    drop((bus, topic, queue));

    // Only consumers, an unacked message and the clock are left: the bus is closed.
    backend.settled_after_close(held.ack());
    assert_eq!(*sub.recv_timeout(WAIT).unwrap().payload(), 1);
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Disconnected
    );
    let m = member.recv_timeout(WAIT).unwrap();
    assert_eq!(*m.payload(), 1);
    backend.settled_after_close(m.ack());
    assert_eq!(
        member.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Disconnected
    );
    assert_eq!(
        worker.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Disconnected
    );
    clock.advance(Duration::from_secs(60)); // a clock outliving its broker is harmless
}

// ---- dropping the last handle wakes blocked consumers ------------------------------------------

both_backends!(dropping_the_last_handle_disconnects_a_blocked_subscriber);
fn dropping_the_last_handle_disconnects_a_blocked_subscriber(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<u64>("t").unwrap();
    let done = recv_on_thread(topic.subscribe(Start::Latest).unwrap());
    assert!(done.recv_timeout(BRIEF).is_err(), "recv returned early");
    drop(topic);
    assert!(
        done.recv_timeout(BRIEF).is_err(),
        "the Broker handle still holds the bus open"
    );
    drop(bus);
    assert_eq!(
        done.recv_timeout(WAIT).unwrap(),
        Err(RecvError::Disconnected)
    );
}

both_backends!(dropping_the_last_handle_disconnects_a_blocked_group_member);
fn dropping_the_last_handle_disconnects_a_blocked_group_member(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u64>("t", TopicOptions::default().partitions(3))
        .unwrap();
    let done = recv_on_thread(topic.join_group("g").unwrap());
    drop((bus, topic));
    assert_eq!(
        done.recv_timeout(WAIT).unwrap(),
        Err(RecvError::Disconnected)
    );
}

both_backends!(dropping_the_last_handle_disconnects_a_blocked_queue_consumer);
fn dropping_the_last_handle_disconnects_a_blocked_queue_consumer(backend: Backend) {
    let bus = backend.bus();
    let queue = bus.queue::<u64>("q").unwrap();
    let done = recv_on_thread(queue.consumer());
    drop(bus);
    assert!(
        done.recv_timeout(BRIEF).is_err(),
        "the Queue handle still holds the bus open"
    );
    drop(queue);
    assert_eq!(
        done.recv_timeout(WAIT).unwrap(),
        Err(RecvError::Disconnected)
    );
}

both_backends!(dropping_the_last_handle_ends_a_blocked_iterator);
fn dropping_the_last_handle_ends_a_blocked_iterator(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<u64>("t").unwrap();
    let sub = topic.subscribe(Start::Earliest).unwrap();
    let producer = topic.producer();
    drop((bus, topic));
    let done = spawn(move || {
        sub.into_iter()
            .map(|m| *m.unwrap().payload())
            .collect::<Vec<_>>()
    });
    producer.send_batch(vec![1, 2, 3]).unwrap();
    drop(producer);
    assert_eq!(done.recv_timeout(WAIT).unwrap(), [1, 2, 3]);
}

// ---- close() ----------------------------------------------------------------------------------

both_backends!(close_wakes_blocked_consumers_of_every_kind);
fn close_wakes_blocked_consumers_of_every_kind(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u64>("t", TopicOptions::default().partitions(2))
        .unwrap();
    let queue = bus.queue::<u64>("q").unwrap();
    let sub = recv_on_thread(topic.subscribe(Start::Latest).unwrap());
    let member = recv_on_thread(topic.join_group("g").unwrap());
    let other_member = recv_on_thread(topic.join_group("g").unwrap());
    // Two partitions, three members: this one owns nothing and waits for an assignment.
    let idle_member = recv_on_thread(topic.join_group("g").unwrap());
    let worker = recv_on_thread(queue.consumer());
    // Every handle is still alive: only close() can wake them.
    bus.clone().close().unwrap();
    for done in [sub, member, other_member, idle_member, worker] {
        assert_eq!(
            done.recv_timeout(WAIT).unwrap(),
            Err(RecvError::Disconnected)
        );
    }
    assert!(bus.is_closed());
    drop((topic, queue));
}

both_backends!(close_wakes_a_producer_blocked_on_a_full_queue_and_hands_the_message_back);
fn close_wakes_a_producer_blocked_on_a_full_queue_and_hands_the_message_back(backend: Backend) {
    let bus = backend.bus();
    let queue = bus
        .queue_with::<u64>("q", QueueOptions::default().capacity(1))
        .unwrap();
    let producer = queue.producer();
    producer.send(1).unwrap();
    assert!(producer.try_send(2).unwrap_err().is_full());

    let blocked = producer.clone();
    let done = spawn(move || blocked.send(2));
    assert!(
        done.recv_timeout(BRIEF).is_err(),
        "send on a full queue returned early"
    );
    bus.close().unwrap();
    let err: SendError<u64> = done.recv_timeout(WAIT).unwrap().unwrap_err();
    assert!(err.is_disconnected(), "{err:?}");
    assert_eq!(err.into_inner(), 2);

    // The message that was in the queue is still delivered, then Disconnected.
    let mut worker = queue.consumer();
    assert_eq!(recv_all(&mut worker), [1]);
}

both_backends!(close_wakes_a_producer_in_send_timeout_with_disconnected_not_timeout);
fn close_wakes_a_producer_in_send_timeout_with_disconnected_not_timeout(backend: Backend) {
    let bus = backend.bus();
    let queue = bus
        .queue_with::<String>("q", QueueOptions::default().capacity(1))
        .unwrap();
    let producer = queue.producer();
    producer.send("first".to_string()).unwrap();
    let blocked = producer.clone();
    let done = spawn(move || blocked.send_timeout("second".to_string(), WAIT * 6));
    assert!(done.recv_timeout(BRIEF).is_err());
    bus.close().unwrap();
    let err: SendTimeoutError<String> = done.recv_timeout(WAIT).unwrap().unwrap_err();
    assert!(err.is_disconnected(), "{err:?}");
    assert!(!err.is_timeout());
    assert_eq!(err.into_inner(), "second");
}

both_backends!(close_wakes_a_producer_blocked_on_a_full_block_topic);
fn close_wakes_a_producer_blocked_on_a_full_block_topic(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u64>(
            "t",
            TopicOptions::default()
                .retention(Retention::messages(1))
                .overflow(Overflow::Block),
        )
        .unwrap();
    let mut slow = topic.subscribe(Start::Earliest).unwrap();
    let producer = topic.producer();
    producer.send(1).unwrap();
    assert!(producer.try_send(2).unwrap_err().is_full());

    let blocked = producer.clone();
    let done = spawn(move || blocked.send(2));
    assert!(
        done.recv_timeout(BRIEF).is_err(),
        "send on a full Block topic returned early"
    );
    bus.close().unwrap();
    assert_eq!(
        done.recv_timeout(WAIT).unwrap().unwrap_err().into_inner(),
        2
    );
    assert_eq!(recv_all(&mut slow), [1]);
}

both_backends!(close_wakes_a_blocked_wait_idle);
fn close_wakes_a_blocked_wait_idle(backend: Backend) {
    let bus = backend.bus();
    let queue = bus.queue::<u64>("q").unwrap();
    queue.producer().send(1).unwrap(); // nobody consumes: never idle
    let waiter = bus.clone();
    let done = spawn(move || waiter.wait_idle(WAIT * 6));
    assert!(
        done.recv_timeout(BRIEF).is_err(),
        "wait_idle returned early"
    );
    bus.close().unwrap();
    assert!(matches!(
        done.recv_timeout(WAIT).unwrap(),
        Err(Error::Closed)
    ));
}

both_backends!(after_close_consumers_drain_what_was_available_then_disconnect);
fn after_close_consumers_drain_what_was_available_then_disconnect(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u64>("t", TopicOptions::default().partitions(2))
        .unwrap();
    let queue = bus.queue::<u64>("q").unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let mut member = topic.join_group("g").unwrap();
    let mut worker = queue.consumer();
    topic.producer().send_batch(vec![1, 2, 3, 4]).unwrap();
    queue.producer().send_batch(vec![5, 6, 7]).unwrap();

    bus.close().unwrap();

    let mut from_sub = recv_all(&mut sub);
    from_sub.sort_unstable();
    assert_eq!(from_sub, [1, 2, 3, 4]);
    let mut from_group = recv_all(&mut member);
    from_group.sort_unstable();
    assert_eq!(from_group, [1, 2, 3, 4]);
    assert_eq!(recv_all(&mut worker), [5, 6, 7]);

    // Disconnected is final, for every receive method.
    assert_eq!(sub.recv().unwrap_err(), RecvError::Disconnected);
    assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Disconnected);
    assert_eq!(member.try_recv().unwrap_err(), TryRecvError::Disconnected);
    assert_eq!(worker.recv().unwrap_err(), RecvError::Disconnected);
    assert_eq!(
        worker
            .recv_deadline(std::time::Instant::now() + WAIT)
            .unwrap_err(),
        RecvTimeoutError::Disconnected
    );
}

both_backends!(after_close_sends_fail_with_the_message_back);
fn after_close_sends_fail_with_the_message_back(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<String>("t").unwrap();
    let queue = bus.queue::<String>("q").unwrap();
    bus.close().unwrap();
    for producer in [topic.producer(), queue.producer()] {
        let err = producer.send("a".to_string()).unwrap_err();
        assert!(err.is_disconnected());
        assert_eq!(err.into_inner(), "a");
        match producer.try_send("b".to_string()) {
            Err(TrySendError::Disconnected(msg)) => assert_eq!(msg, "b"),
            other => panic!("expected Disconnected, got {other:?}"),
        }
        let err = producer.send_timeout("c".to_string(), WAIT).unwrap_err();
        assert!(err.is_disconnected());
        assert_eq!(err.into_inner(), "c");
        let err = producer
            .send_batch(vec!["d".to_string(), "e".to_string()])
            .unwrap_err();
        assert_eq!(err.into_inner(), ["d", "e"]);
        let err = producer
            .send_record(embus::Record::new("f".to_string()).key("k"))
            .unwrap_err();
        let record = err.into_inner();
        assert_eq!(record.payload(), "f");
        assert_eq!(record.key_bytes(), Some(&b"k"[..]));
    }
}

both_backends!(a_message_received_before_close_settles_in_memory_and_a_closed_store_says_it_cannot);
/// Settling after close: a memory broker's state takes it; a durable broker cannot store it,
/// and says so rather than dropping it silently (a reopen delivers the message again).
fn a_message_received_before_close_settles_in_memory_and_a_closed_store_says_it_cannot(
    backend: Backend,
) {
    let bus = backend.bus();
    let queue = bus.queue::<u64>("q").unwrap();
    let topic = bus.topic::<u64>("t").unwrap();
    let mut worker = queue.consumer();
    let mut member = topic.join_group("g").unwrap();
    queue.producer().send_batch(vec![1, 2]).unwrap();
    topic.producer().send(3).unwrap();
    let a = worker.recv_timeout(WAIT).unwrap();
    let b = worker.recv_timeout(WAIT).unwrap();
    let c = member.recv_timeout(WAIT).unwrap();
    bus.close().unwrap();
    backend.settled_after_close(a.ack());
    backend.settled_after_close(b.nack());
    backend.settled_after_close(c.ack());
}

both_backends!(declaring_after_close_is_error_closed);
fn declaring_after_close_is_error_closed(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<u64>("t").unwrap();
    let queue = bus.queue::<u64>("q").unwrap();
    bus.clone().close().unwrap();

    assert!(matches!(bus.topic::<u64>("t"), Err(Error::Closed)));
    assert!(matches!(bus.topic::<u64>("new"), Err(Error::Closed)));
    assert!(matches!(
        bus.topic_with::<u64>("new", TopicOptions::default().partitions(2)),
        Err(Error::Closed)
    ));
    assert!(matches!(bus.queue::<u64>("q"), Err(Error::Closed)));
    assert!(matches!(
        bus.queue_with::<u64>("new-q", QueueOptions::default().capacity(5)),
        Err(Error::Closed)
    ));
    assert!(matches!(
        topic.subscribe(Start::Earliest),
        Err(Error::Closed)
    ));
    assert!(matches!(topic.join_group("g"), Err(Error::Closed)));
    assert!(matches!(bus.wait_idle(WAIT), Err(Error::Closed)));
    assert_eq!(Error::Closed.to_string(), "broker is closed");

    // A queue consumer made after close is disconnected at once.
    let mut late = queue.consumer();
    assert_eq!(late.try_recv().unwrap_err(), TryRecvError::Disconnected);
}

both_backends!(close_twice_is_fine_and_is_closed_reports_it);
fn close_twice_is_fine_and_is_closed_reports_it(backend: Backend) {
    let bus = backend.bus();
    assert!(!bus.is_closed());
    let a = bus.clone();
    let b = bus.clone();
    assert!(!a.is_closed());
    a.close().unwrap();
    assert!(bus.is_closed());
    assert!(b.is_closed());
    b.close().unwrap();
    assert!(bus.is_closed());
    bus.close().unwrap();
}

// Memory only: it is about the builder without a path, which opens a memory broker.
#[test]
fn builder_opens_an_independent_memory_broker() {
    let clock = ManualClock::new();
    let a = Broker::builder().clock(clock.clone()).open().unwrap();
    let b = Broker::builder().open().unwrap();
    let c = Broker::memory();
    // Same name, different payload types: no conflict, as the brokers are separate buses.
    a.topic::<u64>("t").unwrap();
    b.topic::<String>("t").unwrap();
    c.queue::<u8>("t").unwrap();
    a.clone().close().unwrap();
    assert!(a.is_closed());
    assert!(!b.is_closed());
    assert!(!c.is_closed());
    b.topic::<String>("t")
        .unwrap()
        .producer()
        .send("still open".into())
        .unwrap();
}

both_backends!(disconnected_is_final_even_when_a_held_delivery_is_released_after_close);
fn disconnected_is_final_even_when_a_held_delivery_is_released_after_close(backend: Backend) {
    let bus = backend.bus();
    let queue = bus.queue::<u64>("q").unwrap();
    queue.producer().send(1).unwrap();
    let mut worker = queue.consumer();
    let held = worker.recv_timeout(WAIT).unwrap();
    bus.close().unwrap();
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Disconnected);
    backend.settled_after_close(held.nack());
    // RecvError::Disconnected: "The broker is closed and nothing more will arrive."
    assert_eq!(
        worker.try_recv().map(|m| *m.payload()).unwrap_err(),
        TryRecvError::Disconnected
    );
}

both_backends!(every_message_sent_before_the_last_handle_drops_is_received);
/// Regression: a subscriber that saw "nothing new" without the lock, was preempted, then saw
/// the broker closed, returned `Disconnected` and missed the last messages sent before the
/// close. Several subscribers per round oversubscribe the cores so preemption happens.
fn every_message_sent_before_the_last_handle_drops_is_received(backend: Backend) {
    // Fewer on a durable broker, where every send waits for an fsync.
    let sent = backend.scale(2_000u64);
    for round in 0..backend.scale(50) {
        let bus = backend.bus();
        let topic = bus.topic::<u64>("t").unwrap();
        let producer = topic.producer();
        let readers: Vec<_> = (0..6)
            .map(|_| {
                let mut sub = topic.subscribe(Start::Earliest).unwrap();
                thread::spawn(move || {
                    let mut got = 0u64;
                    while let Ok(m) = sub.recv() {
                        assert_eq!(*m.payload(), got, "in order, no gaps");
                        got += 1;
                    }
                    got
                })
            })
            .collect();
        drop((bus, topic));
        for i in 0..sent {
            producer.send(i).unwrap();
        }
        drop(producer); // the last handle: closes the broker
        for reader in readers {
            assert_eq!(reader.join().unwrap(), sent, "round {round}");
        }
    }
}

both_backends!(no_send_is_acknowledged_after_its_consumer_saw_the_end);
/// Regression: a send racing `close` could return `Ok` after a draining consumer had already
/// got `Disconnected`, so an acknowledged message was never delivered. Topic and queue.
fn no_send_is_acknowledged_after_its_consumer_saw_the_end(backend: Backend) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

    // Fewer rounds on a durable broker, where every send waits for an fsync.
    for round in 0..backend.scale(100) {
        let bus = backend.bus();
        let topic = bus.topic::<u64>("t").unwrap();
        let queue = bus
            .queue_with::<u64>("q", QueueOptions::default().capacity(1 << 30))
            .unwrap();
        let mut sub = topic.subscribe(Start::Earliest).unwrap();
        let mut worker = queue.consumer();
        let oks = Arc::new(AtomicU64::new(0));
        let producers: Vec<_> = [topic.producer(), queue.producer()]
            .into_iter()
            .map(|p| {
                let oks = Arc::clone(&oks);
                thread::spawn(move || {
                    let mut i = 0;
                    while p.send(i).is_ok() {
                        oks.fetch_add(1, SeqCst);
                        i += 1;
                    }
                })
            })
            .collect();
        let readers = [
            // Each message is received, or counted in a `Lagged` (the default overflow).
            thread::spawn(move || {
                sub.iter()
                    .map(|r| match r {
                        Ok(_) => 1,
                        Err(RecvError::Lagged { skipped }) => skipped,
                        Err(e) => panic!("{e:?}"),
                    })
                    .sum::<u64>()
            }),
            thread::spawn(move || {
                let mut n = 0;
                while let Ok(m) = worker.recv() {
                    let acked = m.ack();
                    assert!(matches!(acked, Ok(()) | Err(Error::Closed)), "{acked:?}");
                    n += 1;
                }
                n
            }),
        ];
        // Close while both producers are sending (a condition, not a sleep).
        let deadline = std::time::Instant::now() + WAIT;
        while oks.load(SeqCst) < 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "producers never got going"
            );
            thread::yield_now();
        }
        drop((topic, queue));
        bus.close().unwrap();
        for p in producers {
            p.join().unwrap();
        }
        let received: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert_eq!(
            received,
            oks.load(SeqCst),
            "round {round}: acknowledged but never received"
        );
    }
}

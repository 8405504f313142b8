//! The async API on a second executor, `futures::executor` (`block_on`, `LocalPool`,
//! `ThreadPool`, `block_on_stream`): no tokio, no timers.
//!
//! These executors have no timers, so each test body runs on a helper thread and the test waits
//! for its result with a deadline: a lost wake-up hangs the helper and fails the test.

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::thread;

use common::{Backend, WAIT, both_backends};
use embus::{QueueOptions, RecvError, Retention, SendError, Start, TopicOptions};
use futures::StreamExt;
use futures::executor::{LocalPool, ThreadPool, block_on, block_on_stream};
use futures::task::LocalSpawnExt;

/// Runs `f` on a helper thread and returns its result, failing if it takes longer than `WAIT`.
fn on_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(WAIT) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("timed out (a lost wake-up?)"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the helper thread panicked"),
    }
}

both_backends!(block_on_recv_async_waits_for_a_send_from_another_thread);
fn block_on_recv_async_waits_for_a_send_from_another_thread(backend: Backend) {
    let bus = backend.bus();
    let queue = bus.queue::<u32>("q").unwrap();
    let topic = bus.topic::<u32>("t").unwrap();
    let mut worker = queue.consumer();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let waiting = on_thread_spawned(move || {
        block_on(async {
            let a = worker.recv_async().await.unwrap();
            let b = sub.recv_async().await.unwrap();
            let got = (*a.payload(), *b.payload());
            a.ack().unwrap();
            got
        })
    });
    queue.producer().send(1).unwrap();
    topic.producer().send(2).unwrap();
    assert_eq!(waiting.wait(), (1, 2));
    assert_eq!((queue.len(), queue.in_flight()), (0, 0));
}

both_backends!(block_on_send_async_waits_for_room_made_by_another_thread);
fn block_on_send_async_waits_for_room_made_by_another_thread(backend: Backend) {
    let bus = backend.bus();
    let queue = bus
        .queue_with::<u32>("q", QueueOptions::default().capacity(1))
        .unwrap();
    let producer = queue.producer();
    let mut worker = queue.consumer();
    let receipts = on_thread_spawned(move || {
        block_on(async {
            let mut receipts = Vec::new();
            for i in 0..50 {
                receipts.push(producer.send_async(i).await.unwrap().offset);
            }
            receipts
        })
    });
    let got = common::take(&mut worker, 50);
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    assert_eq!(receipts.wait(), (0..50).collect::<Vec<u64>>());
}

both_backends!(block_on_recv_async_after_close_drains_then_disconnects);
fn block_on_recv_async_after_close_drains_then_disconnects(backend: Backend) {
    let bus = backend.bus();
    let queue = bus.queue::<u32>("q").unwrap();
    let mut worker = queue.consumer();
    queue.producer().send(1).unwrap();
    bus.close().unwrap();
    let (first, second) = on_thread(move || {
        block_on(async {
            let first = worker.recv_async().await.map(|m| {
                let payload = *m.payload();
                // Dropped unacked, it would be redelivered.
                backend.settled_after_close(m.ack());
                payload
            });
            let second = worker.recv_async().await.map(|m| *m.payload());
            (first, second)
        })
    });
    assert_eq!(first, Ok(1));
    assert_eq!(second, Err(RecvError::Disconnected));
    match block_on(queue.producer().send_async(2)) {
        Err(SendError::Disconnected(msg)) => assert_eq!(msg, 2),
        other => panic!("expected Disconnected with the message, got {other:?}"),
    }
}

both_backends!(block_on_a_waiting_recv_async_wakes_on_close);
fn block_on_a_waiting_recv_async_wakes_on_close(backend: Backend) {
    let bus = backend.bus();
    let queue = bus.queue::<u32>("q").unwrap();
    let mut worker = queue.consumer();
    let waiting = on_thread_spawned(move || block_on(worker.recv_async()).map(|m| *m.payload()));
    bus.close().unwrap();
    assert_eq!(waiting.wait(), Err(RecvError::Disconnected));
}

both_backends!(local_pool_producer_and_consumer_tasks_take_turns_through_a_full_queue);
/// A producer task and a consumer task on one thread, through a queue of capacity 1: each one
/// waits for the other at every message, so every hand-off goes through a waker.
fn local_pool_producer_and_consumer_tasks_take_turns_through_a_full_queue(backend: Backend) {
    const N: u32 = 200;
    let got = on_thread(move || {
        let bus = backend.bus();
        let queue = bus
            .queue_with::<u32>("q", QueueOptions::default().capacity(1))
            .unwrap();
        let producer = queue.producer();
        let mut worker = queue.consumer();
        let mut pool = LocalPool::new();
        let spawner = pool.spawner();
        spawner
            .spawn_local(async move {
                for i in 0..N {
                    producer.send_async(i).await.unwrap();
                }
            })
            .unwrap();
        let (tx, rx) = mpsc::channel();
        spawner
            .spawn_local(async move {
                for _ in 0..N {
                    let m = worker.recv_async().await.unwrap();
                    tx.send(*m.payload()).unwrap();
                    m.ack().unwrap();
                }
            })
            .unwrap();
        pool.run();
        assert_eq!((queue.len(), queue.in_flight()), (0, 0));
        rx.try_iter().collect::<Vec<_>>()
    });
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

both_backends!(local_pool_block_topic_producer_waits_for_a_stream_reader);
fn local_pool_block_topic_producer_waits_for_a_stream_reader(backend: Backend) {
    const N: u32 = 200;
    let got = on_thread(move || {
        let bus = backend.bus();
        let topic = bus
            .topic_with::<u32>(
                "t",
                TopicOptions::default()
                    .retention(Retention::messages(2))
                    .overflow(embus::Overflow::Block),
            )
            .unwrap();
        let producer = topic.producer();
        let stream = topic.subscribe(Start::Earliest).unwrap().into_stream();
        let mut pool = LocalPool::new();
        let spawner = pool.spawner();
        let closer = bus.clone();
        spawner
            .spawn_local(async move {
                for i in 0..N {
                    producer.send_async(i).await.unwrap();
                }
                closer.close().unwrap(); // ends the stream once drained
            })
            .unwrap();
        let reader = spawner
            .spawn_local_with_handle(stream.map(|m| *m.unwrap().payload()).collect::<Vec<_>>())
            .unwrap();
        pool.run_until(reader)
    });
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

both_backends!(local_pool_several_waiting_receivers_each_get_one);
fn local_pool_several_waiting_receivers_each_get_one(backend: Backend) {
    let got = on_thread(move || {
        let bus = backend.bus();
        let queue = bus.queue::<u32>("q").unwrap();
        let mut pool = LocalPool::new();
        let spawner = pool.spawner();
        let (tx, rx) = mpsc::channel();
        for _ in 0..4 {
            let mut worker = queue.consumer();
            let tx = tx.clone();
            spawner
                .spawn_local(async move {
                    let m = worker.recv_async().await.unwrap();
                    tx.send(*m.payload()).unwrap();
                    m.ack().unwrap();
                })
                .unwrap();
        }
        pool.run_until_stalled(); // all four are waiting now
        assert!(rx.try_recv().is_err(), "nothing was sent yet");
        let producer = queue.producer();
        for i in 0..4 {
            producer.send(i).unwrap();
        }
        pool.run();
        rx.try_iter().collect::<HashSet<_>>()
    });
    assert_eq!(got, (0..4).collect::<HashSet<_>>());
}

both_backends!(thread_pool_competing_consumers_get_every_message_exactly_once);
fn thread_pool_competing_consumers_get_every_message_exactly_once(backend: Backend) {
    // Fewer on a durable broker, where every send waits for an fsync.
    let n = backend.scale(2_000u32);
    let pool = ThreadPool::builder().pool_size(4).create().unwrap();
    let bus = backend.bus();
    let queue = bus
        .queue_with::<u32>("q", QueueOptions::default().capacity(8).no_ack_timeout())
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    for _ in 0..4 {
        let mut worker = queue.consumer();
        let (tx, done_tx) = (tx.clone(), done_tx.clone());
        pool.spawn_ok(async move {
            let mut stream = worker.stream();
            while let Some(m) = stream.next().await {
                let m = m.unwrap();
                assert_eq!(m.delivery_count(), 1);
                tx.send(*m.payload()).unwrap();
                m.ack().unwrap();
            }
            done_tx.send(()).unwrap();
        });
    }
    for p in 0..2 {
        let producer = queue.producer();
        pool.spawn_ok(async move {
            for i in 0..n / 2 {
                producer.send_async(p * (n / 2) + i).await.unwrap();
            }
        });
    }
    let mut seen = HashSet::new();
    for _ in 0..n {
        let v = rx.recv_timeout(WAIT).expect("a message never came");
        assert!(seen.insert(v), "{v} delivered twice");
    }
    bus.close().unwrap();
    for _ in 0..4 {
        done_rx
            .recv_timeout(WAIT)
            .expect("a consumer did not end on close");
    }
    assert!(rx.try_recv().is_err(), "nothing beyond N");
    assert_eq!(seen, (0..n).collect::<HashSet<_>>());
}

both_backends!(block_on_stream_yields_lagged_then_the_rest_then_ends);
fn block_on_stream_yields_lagged_then_the_rest_then_ends(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u32>(
            "lossy",
            TopicOptions::default().retention(Retention::messages(3)),
        )
        .unwrap();
    let sub = topic.subscribe(Start::Earliest).unwrap();
    topic.producer().send_batch((0..10).collect()).unwrap();
    bus.close().unwrap();
    let got = on_thread(move || {
        block_on_stream(sub.into_stream())
            .map(|m| m.map(|m| *m.payload()))
            .collect::<Vec<_>>()
    });
    assert_eq!(
        got,
        [Err(RecvError::Lagged { skipped: 7 }), Ok(7), Ok(8), Ok(9)]
    );
}

both_backends!(futures_select_on_block_on_over_consumers_of_two_types);
fn futures_select_on_block_on_over_consumers_of_two_types(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let news = bus.topic::<String>("news").unwrap();
    let mut worker = jobs.consumer();
    let mut reader = news.subscribe(Start::Earliest).unwrap();
    let waiting = on_thread_spawned(move || {
        block_on(async {
            futures::select! {
                m = worker.recv_async() => format!("job {}", m.unwrap().payload()),
                m = reader.recv_async() => format!("news {}", m.unwrap().payload()),
            }
        })
    });
    news.producer().send("flash".to_string()).unwrap();
    assert_eq!(waiting.wait(), "news flash");
}

/// A helper thread started now, whose result is awaited later (so the test can act meanwhile).
struct Pending<R>(mpsc::Receiver<R>);

impl<R> Pending<R> {
    fn wait(self) -> R {
        match self.0.recv_timeout(WAIT) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("timed out (a lost wake-up?)"),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the helper thread panicked"),
        }
    }
}

fn on_thread_spawned<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Pending<R> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    Pending(rx)
}

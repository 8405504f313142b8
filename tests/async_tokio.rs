//! The async API on tokio (multi-thread and current-thread runtimes): `recv_async`,
//! `send_async` and streams, close and lag, `tokio::select!` and `futures::select!`, and mixed
//! async/blocking producers and consumers.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Backend, Bus, WAIT, both_backends};
use embus::{
    Broker, Consumer, Error, ManualClock, Overflow, Producer, QueueOptions, RecvError, RecvFut,
    RecvStream, Retention, SendError, SendFut, Start, TopicOptions, TryRecvError,
};
use futures::future::FusedFuture;
use futures::stream::FusedStream;
use futures::{FutureExt, StreamExt};

fn assert_send<T: Send>() {}

// Checked at compile time: the futures can be spawned on a multi-thread runtime.
const _: () = {
    let _ = assert_send::<RecvFut<'static, u64>>;
    let _ = assert_send::<SendFut<'static, u64>>;
    let _ = assert_send::<RecvStream<'static, u64>>;
};

/// Awaits `fut`, failing the test if it takes longer than `WAIT`.
///
/// The deadline is checked before `fut` is polled (unlike `tokio::time::timeout`, which polls
/// the future first when its timer fires): a future that misses its wake-up and only completes
/// because the timer re-polled it fails instead of passing late.
async fn within<F: Future>(fut: F) -> F::Output {
    tokio::select! {
        biased;
        () = tokio::time::sleep(WAIT) => panic!("timed out waiting for the future"),
        out = fut => out,
    }
}

/// The three kinds of consumer with a producer each; topics have two partitions.
fn each_consumer(bus: &Broker) -> Vec<(&'static str, Producer<u32>, Consumer<u32>)> {
    let two = TopicOptions::default().partitions(2);
    let queue = bus.queue::<u32>("q").unwrap();
    let subscribed = bus.topic_with::<u32>("subscribed", two).unwrap();
    let grouped = bus.topic_with::<u32>("grouped", two).unwrap();
    vec![
        ("queue consumer", queue.producer(), queue.consumer()),
        (
            "subscriber",
            subscribed.producer(),
            subscribed.subscribe(Start::Earliest).unwrap(),
        ),
        (
            "group member",
            grouped.producer(),
            grouped.join_group("g").unwrap(),
        ),
    ]
}

/// Like [`each_consumer`], each on a broker of its own (for tests that close it).
fn each_consumer_on_its_own_broker(
    backend: Backend,
) -> Vec<(&'static str, Bus, Producer<u32>, Consumer<u32>)> {
    (0..3)
        .map(|i| {
            let bus = backend.bus();
            let (what, producer, consumer) = each_consumer(&bus).swap_remove(i);
            (what, bus, producer, consumer)
        })
        .collect()
}

/// Acks a job and describes it.
fn acked_job(m: embus::Message<u32>) -> String {
    let described = format!("job {}", m.payload());
    m.ack().unwrap();
    described
}

fn small_queue(bus: &Broker) -> embus::Queue<u32> {
    bus.queue_with::<u32>("small", QueueOptions::default().capacity(1))
        .unwrap()
}

fn block_topic(bus: &Broker) -> embus::Topic<u32> {
    bus.topic_with::<u32>(
        "blocking",
        TopicOptions::default()
            .retention(Retention::messages(1))
            .overflow(Overflow::Block),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// recv_async
// ---------------------------------------------------------------------------------------------

both_backends!(#[tokio::test(flavor = "current_thread")] async recv_async_returns_a_message_sent_before);
async fn recv_async_returns_a_message_sent_before(backend: Backend) {
    let bus = backend.bus();
    for (what, producer, mut consumer) in each_consumer(&bus) {
        producer.send(5).unwrap();
        let m = within(consumer.recv_async()).await.unwrap();
        assert_eq!((*m.payload(), m.delivery_count()), (5, 1), "{what}");
        m.ack().unwrap();
        assert_eq!(
            consumer.try_recv().unwrap_err(),
            TryRecvError::Empty,
            "{what}"
        );
    }
}

both_backends!(#[tokio::test(flavor = "current_thread")] async recv_async_waits_for_a_send_from_another_task_current_thread);
async fn recv_async_waits_for_a_send_from_another_task_current_thread(backend: Backend) {
    let bus = backend.bus();
    for (what, producer, mut consumer) in each_consumer(&bus) {
        let mut fut = consumer.recv_async();
        assert!(
            futures::poll!(&mut fut).is_pending(),
            "{what}: nothing sent yet"
        );
        let sender = tokio::spawn(async move { producer.send_async(9).await.unwrap() });
        let m = within(fut).await.unwrap();
        assert_eq!(*m.payload(), 9, "{what}");
        let receipt = within(sender).await.unwrap();
        assert_eq!(receipt.partition, m.partition(), "{what}");
        m.ack().unwrap();
    }
}

both_backends!(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async recv_async_waits_for_a_send_from_another_task_multi_thread);
async fn recv_async_waits_for_a_send_from_another_task_multi_thread(backend: Backend) {
    let bus = backend.bus();
    for (what, producer, mut consumer) in each_consumer(&bus) {
        let receiver = tokio::spawn(async move {
            let m = consumer.recv_async().await.unwrap();
            let payload = *m.payload();
            m.ack().unwrap();
            payload
        });
        producer.send_async(11).await.unwrap();
        assert_eq!(within(receiver).await.unwrap(), 11, "{what}");
    }
}

both_backends!(#[tokio::test(flavor = "current_thread")] async a_waiting_recv_async_ends_with_disconnected_when_the_broker_closes);
async fn a_waiting_recv_async_ends_with_disconnected_when_the_broker_closes(backend: Backend) {
    for (what, bus, _producer, mut consumer) in each_consumer_on_its_own_broker(backend) {
        let mut fut = consumer.recv_async();
        assert!(futures::poll!(&mut fut).is_pending(), "{what}");
        bus.close().unwrap();
        assert_eq!(
            within(fut).await.unwrap_err(),
            RecvError::Disconnected,
            "{what}"
        );
        assert_eq!(
            within(consumer.recv_async()).await.unwrap_err(),
            RecvError::Disconnected,
            "{what}: stays disconnected"
        );
    }
}

both_backends!(#[tokio::test(flavor = "current_thread")] async recv_async_drains_what_was_sent_before_close_then_disconnects);
async fn recv_async_drains_what_was_sent_before_close_then_disconnects(backend: Backend) {
    for (what, bus, producer, mut consumer) in each_consumer_on_its_own_broker(backend) {
        producer.send(1).unwrap();
        producer.send(2).unwrap();
        bus.close().unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            let m = within(consumer.recv_async()).await.unwrap();
            got.push(*m.payload());
            // A durable queue or group cannot store an ack after close, and says so (a
            // subscriber's ack stores nothing).
            let acked = m.ack();
            assert!(
                matches!(acked, Ok(()) | Err(Error::Closed)),
                "{what}: {acked:?}"
            );
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2], "{what}");
        assert_eq!(
            within(consumer.recv_async()).await.unwrap_err(),
            RecvError::Disconnected,
            "{what}"
        );
    }
}

both_backends!(#[tokio::test(flavor = "current_thread")] async recv_async_reports_lagged_once_and_continues);
async fn recv_async_reports_lagged_once_and_continues(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u32>(
            "lossy",
            TopicOptions::default().retention(Retention::messages(2)),
        )
        .unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    topic.producer().send_batch((0..5).collect()).unwrap();
    assert_eq!(
        within(sub.recv_async()).await.unwrap_err(),
        RecvError::Lagged { skipped: 3 }
    );
    assert_eq!(*within(sub.recv_async()).await.unwrap().payload(), 3);
    assert_eq!(*within(sub.recv_async()).await.unwrap().payload(), 4);
}

both_backends!(#[tokio::test(flavor = "current_thread")] async recv_async_with_prefetch_waits_for_an_ack);
async fn recv_async_with_prefetch_waits_for_an_ack(backend: Backend) {
    let bus = backend.bus();
    let queue = bus
        .queue_with::<u32>("q", QueueOptions::default().prefetch(1))
        .unwrap();
    queue.producer().send_batch(vec![1, 2]).unwrap();
    let mut consumer = queue.consumer();
    let first = within(consumer.recv_async()).await.unwrap();
    let mut fut = consumer.recv_async();
    assert!(
        futures::poll!(&mut fut).is_pending(),
        "the prefetch window is full"
    );
    first.ack().unwrap();
    assert_eq!(*within(fut).await.unwrap().payload(), 2);
}

both_backends!(#[tokio::test(flavor = "current_thread")] async an_idle_group_member_waiting_in_recv_async_takes_over_on_rebalance);
async fn an_idle_group_member_waiting_in_recv_async_takes_over_on_rebalance(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<u32>("t").unwrap(); // one partition: the second member is idle
    let mut first = topic.join_group("g").unwrap();
    let mut second = topic.join_group("g").unwrap();
    topic.producer().send(1).unwrap();
    let held = within(first.recv_async()).await.unwrap();
    let mut fut = second.recv_async();
    assert!(futures::poll!(&mut fut).is_pending(), "idle member");
    drop(held); // released
    drop(first); // leaves: the partition moves to `second`
    let m = within(fut).await.unwrap();
    assert_eq!((*m.payload(), m.delivery_count()), (1, 2));
    m.ack().unwrap();
    assert_eq!(topic.group_position("g"), Some(vec![1]));
}

both_backends!(#[tokio::test(flavor = "current_thread")] async a_manual_clock_advance_wakes_recv_async_for_a_redelivery);
async fn a_manual_clock_advance_wakes_recv_async_for_a_redelivery(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let queue = bus
        .queue_with::<u32>(
            "q",
            QueueOptions::default().ack_timeout(Duration::from_secs(30)),
        )
        .unwrap();
    queue.producer().send(1).unwrap();
    let mut slow = queue.consumer();
    let mut other = queue.consumer();
    let _held = within(slow.recv_async()).await.unwrap();
    let mut fut = other.recv_async();
    assert!(futures::poll!(&mut fut).is_pending());
    clock.advance(Duration::from_secs(31));
    let m = within(fut).await.unwrap();
    assert_eq!((*m.payload(), m.delivery_count()), (1, 2));
}

both_backends!(blocking_recv_gets_a_redelivery_after_a_real_ack_timeout);
/// The blocking control for the next test: `recv` wakes by itself when a real-time ack timeout
/// passes.
fn blocking_recv_gets_a_redelivery_after_a_real_ack_timeout(backend: Backend) {
    let bus = backend.bus();
    let queue = bus
        .queue_with::<u32>(
            "q",
            QueueOptions::default().ack_timeout(Duration::from_millis(100)),
        )
        .unwrap();
    queue.producer().send(1).unwrap();
    let mut slow = queue.consumer();
    let mut other = queue.consumer();
    let _held = slow.recv_timeout(WAIT).unwrap();
    let m = other.recv_timeout(WAIT).unwrap();
    assert_eq!((*m.payload(), m.delivery_count()), (1, 2));
}

both_backends!(#[tokio::test(flavor = "current_thread")] async recv_async_gets_a_redelivery_after_a_real_ack_timeout);
async fn recv_async_gets_a_redelivery_after_a_real_ack_timeout(backend: Backend) {
    let bus = backend.bus();
    let queue = bus
        .queue_with::<u32>(
            "q",
            QueueOptions::default().ack_timeout(Duration::from_millis(100)),
        )
        .unwrap();
    queue.producer().send(1).unwrap();
    let mut slow = queue.consumer();
    let mut other = queue.consumer();
    let _held = within(slow.recv_async()).await.unwrap();
    let m = within(other.recv_async()).await.unwrap();
    assert_eq!((*m.payload(), m.delivery_count()), (1, 2));
}

// ---------------------------------------------------------------------------------------------
// send_async
// ---------------------------------------------------------------------------------------------

both_backends!(#[tokio::test(flavor = "current_thread")] async send_async_returns_the_receipt_of_what_it_sent);
async fn send_async_returns_the_receipt_of_what_it_sent(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<u32>("t").unwrap();
    let producer = topic.producer();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    for i in 0..3 {
        let receipt = within(producer.send_async(i * 10)).await.unwrap();
        assert_eq!((receipt.partition, receipt.offset), (0, u64::from(i)));
    }
    for i in 0..3 {
        let m = sub.try_recv().unwrap();
        assert_eq!((*m.payload(), m.offset()), (i * 10, u64::from(i)));
    }
}

both_backends!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async send_async_waits_for_room_in_a_full_queue);
async fn send_async_waits_for_room_in_a_full_queue(backend: Backend) {
    let bus = backend.bus();
    let queue = small_queue(&bus);
    let producer = queue.producer();
    producer.send(1).unwrap();
    let mut fut = producer.send_async(2);
    assert!(futures::poll!(&mut fut).is_pending(), "the queue is full");
    let mut consumer = queue.consumer();
    let worker = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..2 {
            let m = consumer.recv_async().await.unwrap();
            got.push(*m.payload());
            m.ack().unwrap();
        }
        got
    });
    within(fut).await.unwrap();
    assert_eq!(within(worker).await.unwrap(), [1, 2]);
    assert_eq!((queue.len(), queue.in_flight()), (0, 0));
}

both_backends!(#[tokio::test(flavor = "current_thread")] async send_async_waits_for_room_in_a_full_block_topic);
async fn send_async_waits_for_room_in_a_full_block_topic(backend: Backend) {
    let bus = backend.bus();
    let topic = block_topic(&bus);
    let producer = topic.producer();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    producer.send(1).unwrap();
    let mut fut = producer.send_async(2);
    assert!(futures::poll!(&mut fut).is_pending(), "the topic is full");
    assert_eq!(*within(sub.recv_async()).await.unwrap().payload(), 1);
    let receipt = within(fut).await.unwrap();
    assert_eq!(receipt.offset, 1);
    assert_eq!(*within(sub.recv_async()).await.unwrap().payload(), 2);
}

both_backends!(#[tokio::test(flavor = "current_thread")] async send_async_on_a_closed_broker_hands_the_message_back);
async fn send_async_on_a_closed_broker_hands_the_message_back(backend: Backend) {
    let bus = backend.bus();
    let queue = bus.queue::<String>("q").unwrap();
    let topic = bus.topic::<String>("t").unwrap();
    bus.close().unwrap();
    for producer in [queue.producer(), topic.producer()] {
        match within(producer.send_async("kept".to_string())).await {
            Err(SendError::Disconnected(msg)) => assert_eq!(msg, "kept"),
            other => panic!("expected Disconnected with the message, got {other:?}"),
        }
        let err = within(producer.send_async("again".to_string()))
            .await
            .unwrap_err();
        assert!(err.is_disconnected());
        assert_eq!(err.into_inner(), "again");
    }
}

both_backends!(#[tokio::test(flavor = "current_thread")] async a_waiting_send_async_fails_with_its_message_when_the_broker_closes);
async fn a_waiting_send_async_fails_with_its_message_when_the_broker_closes(backend: Backend) {
    let bus = backend.bus();
    let queue = small_queue(&bus);
    let topic = block_topic(&bus);
    let _sub = topic.subscribe(Start::Earliest).unwrap();
    let producers = [queue.producer(), topic.producer()];
    let mut waiting = Vec::new();
    for producer in &producers {
        producer.send(1).unwrap();
        let mut fut = producer.send_async(2);
        assert!(
            futures::poll!(&mut fut).is_pending(),
            "{producer:?} is full"
        );
        waiting.push(fut);
    }
    bus.close().unwrap();
    for fut in waiting {
        match within(fut).await {
            Err(SendError::Disconnected(msg)) => assert_eq!(msg, 2),
            other => panic!("expected Disconnected with the message, got {other:?}"),
        }
    }
    assert_eq!(queue.len(), 1, "nothing was added");
    assert_eq!(topic.offsets(0), Some(0..1), "nothing was added");
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

both_backends!(#[tokio::test(flavor = "current_thread")] async a_stream_yields_lagged_and_continues_then_ends_on_close);
async fn a_stream_yields_lagged_and_continues_then_ends_on_close(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u32>(
            "lossy",
            TopicOptions::default().retention(Retention::messages(2)),
        )
        .unwrap();
    let producer = topic.producer();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    producer.send_batch((0..5).collect()).unwrap();
    let mut stream = sub.stream();
    assert_eq!(
        within(stream.next()).await.unwrap().unwrap_err(),
        RecvError::Lagged { skipped: 3 }
    );
    assert_eq!(*within(stream.next()).await.unwrap().unwrap().payload(), 3);
    assert_eq!(*within(stream.next()).await.unwrap().unwrap().payload(), 4);
    producer.send(5).unwrap();
    assert_eq!(
        *within(stream.next()).await.unwrap().unwrap().payload(),
        5,
        "no second Lagged"
    );
    bus.close().unwrap();
    assert!(
        within(stream.next()).await.is_none(),
        "ends once closed and drained"
    );
    assert!(stream.is_terminated());
    assert!(within(stream.next()).await.is_none(), "stays ended");
}

both_backends!(#[tokio::test(flavor = "current_thread")] async a_stream_drains_what_was_sent_before_close);
async fn a_stream_drains_what_was_sent_before_close(backend: Backend) {
    for (what, bus, producer, consumer) in each_consumer_on_its_own_broker(backend) {
        producer.send_batch(vec![1, 2, 3]).unwrap();
        let collect = tokio::spawn(async move {
            let mut got: Vec<u32> = Vec::new();
            let mut stream = consumer.into_stream();
            while let Some(m) = stream.next().await {
                let m = m.unwrap();
                got.push(*m.payload());
                // Racing `close`: a durable broker stores the ack, or says it cannot.
                let acked = m.ack();
                assert!(matches!(acked, Ok(()) | Err(Error::Closed)), "{acked:?}");
            }
            got
        });
        bus.close().unwrap();
        let mut got = within(collect).await.unwrap();
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3], "{what}");
    }
}

both_backends!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async an_owned_stream_in_a_spawned_task_gets_everything_in_order);
async fn an_owned_stream_in_a_spawned_task_gets_everything_in_order(backend: Backend) {
    const N: u32 = 500;
    let bus = backend.bus();
    let topic = bus.topic::<u32>("t").unwrap();
    let stream = topic.subscribe(Start::Earliest).unwrap().into_stream();
    let reader = tokio::spawn(stream.map(|m| *m.unwrap().payload()).collect::<Vec<_>>());
    let producer = topic.producer();
    for i in 0..N {
        producer.send_async(i).await.unwrap();
    }
    bus.close().unwrap();
    assert_eq!(within(reader).await.unwrap(), (0..N).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// Waiting on many: tokio::select! and futures::select!
// ---------------------------------------------------------------------------------------------

both_backends!(#[tokio::test(flavor = "current_thread")] async tokio_select_picks_the_consumer_that_received);
async fn tokio_select_picks_the_consumer_that_received(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let news = bus.topic::<String>("news").unwrap();
    let mut worker = jobs.consumer();
    let mut reader = news.subscribe(Start::Earliest).unwrap();

    news.producer().send("hello".to_string()).unwrap();
    let picked = within(async {
        tokio::select! {
            m = worker.recv_async() => acked_job(m.unwrap()),
            m = reader.recv_async() => format!("news {}", m.unwrap().payload()),
        }
    })
    .await;
    assert_eq!(picked, "news hello");

    jobs.producer().send(7).unwrap();
    let picked = within(async {
        tokio::select! {
            m = worker.recv_async() => acked_job(m.unwrap()),
            m = reader.recv_async() => format!("news {}", m.unwrap().payload()),
        }
    })
    .await;
    assert_eq!(picked, "job 7");
    assert_eq!(
        (jobs.len(), jobs.in_flight()),
        (0, 0),
        "one delivery, acked"
    );
    assert_eq!(reader.try_recv().unwrap_err(), TryRecvError::Empty);
}

both_backends!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async tokio_select_in_a_loop_loses_nothing_from_either_consumer);
async fn tokio_select_in_a_loop_loses_nothing_from_either_consumer(backend: Backend) {
    // Fewer on a durable broker, where every send waits for an fsync.
    let n = backend.scale(1_000u32);
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let news = bus.topic::<String>("news").unwrap();
    let mut worker = jobs.consumer();
    let mut reader = news.subscribe(Start::Earliest).unwrap();
    let (jp, np) = (jobs.producer(), news.producer());
    let senders = [
        thread::spawn(move || (0..n).for_each(|i| assert_eq!(jp.send(i).unwrap().partition, 0))),
        thread::spawn(move || {
            (0..n).for_each(|i| assert_eq!(np.send(i.to_string()).unwrap().partition, 0))
        }),
    ];
    let (mut got_jobs, mut got_news) = (Vec::new(), Vec::new());
    within(async {
        while got_jobs.len() < n as usize || got_news.len() < n as usize {
            // Every iteration drops the losing branch's future.
            tokio::select! {
                m = worker.recv_async() => {
                    let m = m.unwrap();
                    got_jobs.push(*m.payload());
                    m.ack().unwrap();
                }
                m = reader.recv_async() => got_news.push(m.unwrap().payload().parse::<u32>().unwrap()),
            }
        }
    })
    .await;
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(got_jobs, (0..n).collect::<Vec<_>>());
    assert_eq!(got_news, (0..n).collect::<Vec<_>>());
    assert_eq!((jobs.len(), jobs.in_flight()), (0, 0));
}

both_backends!(#[tokio::test(flavor = "current_thread")] async futures_select_takes_the_futures_without_fuse);
async fn futures_select_takes_the_futures_without_fuse(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let news = bus.topic::<String>("news").unwrap();
    let mut worker = jobs.consumer();
    let mut reader = news.subscribe(Start::Earliest).unwrap();
    jobs.producer().send(3).unwrap();

    // Futures given by value: no `.fuse()` needed, they are `FusedFuture`.
    let picked = within(async {
        futures::select! {
            m = worker.recv_async() => acked_job(m.unwrap()),
            m = reader.recv_async() => format!("news {}", m.unwrap().payload()),
        }
    })
    .await;
    assert_eq!(picked, "job 3");

    // Futures given by reference (they are `Unpin`), polled until both completed: a completed
    // one reports `is_terminated` and is skipped, so `complete` is reached.
    news.producer().send("a".to_string()).unwrap();
    jobs.producer().send(4).unwrap();
    let mut fj = worker.recv_async();
    let mut fn_ = reader.recv_async();
    let mut got = Vec::new();
    within(async {
        loop {
            futures::select! {
                m = fj => got.push(acked_job(m.unwrap())),
                m = fn_ => got.push(format!("news {}", m.unwrap().payload())),
                complete => break,
            }
        }
    })
    .await;
    assert!(fj.is_terminated() && fn_.is_terminated());
    got.sort();
    assert_eq!(got, ["job 4", "news a"]);

    // Send futures too.
    let producer = jobs.producer();
    let mut never = futures::future::pending::<()>().fuse();
    let receipt = within(async {
        futures::select! {
            r = producer.send_async(5) => r.unwrap(),
            () = never => unreachable!(),
        }
    })
    .await;
    assert_eq!(receipt.partition, 0);
}

both_backends!(#[tokio::test(flavor = "current_thread")] async futures_select_over_streams);
async fn futures_select_over_streams(backend: Backend) {
    let bus = backend.bus();
    let a = bus.topic::<u32>("a").unwrap();
    let b = bus.topic::<u32>("b").unwrap();
    let mut sa = a.subscribe(Start::Earliest).unwrap().into_stream();
    let mut sb = b.subscribe(Start::Earliest).unwrap().into_stream();
    a.producer().send_batch(vec![1, 2]).unwrap();
    b.producer().send_batch(vec![10, 20]).unwrap();
    bus.close().unwrap();
    let mut got = Vec::new();
    within(async {
        loop {
            futures::select! {
                m = sa.next() => if let Some(m) = m { got.push(*m.unwrap().payload()) },
                m = sb.next() => if let Some(m) = m { got.push(*m.unwrap().payload()) },
                complete => break,
            }
        }
    })
    .await;
    got.sort_unstable();
    assert_eq!(got, [1, 2, 10, 20]);
    assert!(sa.is_terminated() && sb.is_terminated());
}

// ---------------------------------------------------------------------------------------------
// Mixed: async and blocking on the same queue or topic
// ---------------------------------------------------------------------------------------------

both_backends!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async async_producers_with_a_blocking_consumer_thread);
async fn async_producers_with_a_blocking_consumer_thread(backend: Backend) {
    // Fewer on a durable broker, where every send waits for an fsync.
    let n = backend.scale(500u32);
    let bus = backend.bus();
    let queue = small_queue(&bus); // capacity 1: the async producers wait for the thread's acks
    let mut consumer = queue.consumer();
    let (tx, rx) = mpsc::channel();
    let blocking = thread::spawn(move || {
        for _ in 0..2 * n {
            let m = consumer.recv_timeout(WAIT).unwrap();
            tx.send(*m.payload()).unwrap();
            m.ack().unwrap();
        }
    });
    let tasks: Vec<_> = (0..2)
        .map(|t| {
            let producer = queue.producer();
            tokio::spawn(async move {
                for i in 0..n {
                    producer.send_async(t * n + i).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        within(task).await.unwrap();
    }
    tokio::task::spawn_blocking(move || blocking.join().unwrap())
        .await
        .unwrap();
    let got: Vec<u32> = rx.try_iter().collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..2 * n).collect::<Vec<_>>());
    for t in 0..2 {
        let mine: Vec<u32> = got.iter().copied().filter(|v| v / n == t).collect();
        assert_eq!(
            mine,
            (t * n..(t + 1) * n).collect::<Vec<_>>(),
            "per-producer order"
        );
    }
}

both_backends!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async a_blocking_producer_thread_with_async_consumers);
async fn a_blocking_producer_thread_with_async_consumers(backend: Backend) {
    // Fewer on a durable broker, where every send waits for an fsync.
    let n = backend.scale(500u32);
    let bus = backend.bus();
    let topic = block_topic(&bus); // keeps 1: the thread waits for the async subscriber
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let queue = small_queue(&bus);
    let mut worker = queue.consumer();
    let (tp, qp) = (topic.producer(), queue.producer());
    let producer = thread::spawn(move || {
        for i in 0..n {
            tp.send_timeout(i, WAIT).unwrap();
            qp.send_timeout(i, WAIT).unwrap();
        }
    });
    let from_topic = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..n {
            got.push(*sub.recv_async().await.unwrap().payload());
        }
        got
    });
    let from_queue = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..n {
            let m = worker.recv_async().await.unwrap();
            got.push(*m.payload());
            m.ack().unwrap();
        }
        got
    });
    assert_eq!(
        within(from_topic).await.unwrap(),
        (0..n).collect::<Vec<_>>()
    );
    assert_eq!(
        within(from_queue).await.unwrap(),
        (0..n).collect::<Vec<_>>()
    );
    tokio::task::spawn_blocking(move || producer.join().unwrap())
        .await
        .unwrap();
}

both_backends!(a_blocking_producer_thread_with_an_async_consumer_on_a_current_thread_runtime);
fn a_blocking_producer_thread_with_an_async_consumer_on_a_current_thread_runtime(backend: Backend) {
    const N: u32 = 300;
    let bus = backend.bus();
    let queue = small_queue(&bus);
    let producer = queue.producer();
    let mut worker = queue.consumer();
    let sender = thread::spawn(move || {
        for i in 0..N {
            producer.send_timeout(i, WAIT).unwrap();
        }
    });
    let got = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(within(async {
            let mut got = Vec::new();
            for _ in 0..N {
                let m = worker.recv_async().await.unwrap();
                got.push(*m.payload());
                m.ack().unwrap();
            }
            got
        }));
    sender.join().unwrap();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// Competing async consumers
// ---------------------------------------------------------------------------------------------

both_backends!(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async competing_async_consumers_get_every_message_exactly_once);
async fn competing_async_consumers_get_every_message_exactly_once(backend: Backend) {
    // Fewer on a durable broker, where every send waits for an fsync.
    let n = backend.scale(2_000u32);
    const CONSUMERS: usize = 6;
    let bus = backend.bus();
    let queue = bus
        .queue_with::<u32>(
            "jobs",
            QueueOptions::default().capacity(16).no_ack_timeout(),
        )
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            let mut consumer = queue.consumer();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut mine = 0usize;
                loop {
                    match consumer.recv_async().await {
                        Ok(m) => {
                            assert_eq!(m.delivery_count(), 1, "consumer {c}: a redelivery");
                            tx.send(*m.payload()).unwrap();
                            m.ack().unwrap();
                            mine += 1;
                        }
                        Err(RecvError::Disconnected) => return mine,
                        Err(e) => panic!("consumer {c}: {e}"),
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let producer = queue.producer();
            tokio::spawn(async move {
                for i in 0..n / 2 {
                    producer.send_async(p * (n / 2) + i).await.unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        within(p).await.unwrap();
    }
    let mut seen = HashSet::new();
    for _ in 0..n {
        let v = within(rx.recv()).await.expect("a consumer task failed");
        assert!(seen.insert(v), "{v} delivered twice");
    }
    bus.close().unwrap();
    let mut total = 0;
    for c in consumers {
        total += within(c).await.unwrap();
    }
    assert_eq!(total, n as usize);
    assert_eq!(seen, (0..n).collect::<HashSet<_>>());
    assert!(rx.try_recv().is_err(), "nothing beyond N");
    assert_eq!((queue.len(), queue.in_flight()), (0, 0));
}

both_backends!(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async async_group_members_split_a_topic_and_every_message_is_acked_once);
async fn async_group_members_split_a_topic_and_every_message_is_acked_once(backend: Backend) {
    // Fewer on a durable broker, where every send waits for an fsync.
    let n = backend.scale(1_000u32);
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u32>("t", TopicOptions::default().partitions(4))
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let members: Vec<_> = (0..4)
        .map(|_| {
            let stream = topic.join_group("g").unwrap().into_stream();
            let tx = tx.clone();
            tokio::spawn(stream.for_each(move |m| {
                let m = m.unwrap();
                tx.send(*m.payload()).unwrap();
                m.ack().unwrap();
                async {}
            }))
        })
        .collect();
    drop(tx);
    let producer = topic.producer();
    for i in 0..n {
        producer.send_async(i).await.unwrap();
    }
    let mut seen = HashSet::new();
    for _ in 0..n {
        let v = within(rx.recv()).await.expect("a member task failed");
        assert!(seen.insert(v), "{v} delivered twice");
    }
    // A member sends on the channel before it acks: wait for the acks.
    bus.wait_idle_async(WAIT).await.unwrap();
    assert_eq!(
        topic.group_position("g").unwrap().iter().sum::<u64>(),
        u64::from(n)
    );
    bus.close().unwrap();
    for m in members {
        within(m).await.unwrap();
    }
}

both_backends!(a_waiting_dead_letter_consumer_wakes_for_an_ack_timeout_dead_letter);
/// Regression: a dead-letter queue's consumer that started waiting before its feeder had any
/// delivery knew no deadline, so a dead letter made by an ack timeout never woke it (the
/// worker holding the message is stuck; nobody else looks at the feeder queue).
fn a_waiting_dead_letter_consumer_wakes_for_an_ack_timeout_dead_letter(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bus = backend.bus();
        let work = bus
            .queue_with::<u32>(
                "work",
                QueueOptions::default()
                    .ack_timeout(Duration::from_millis(50))
                    .max_deliveries(1)
                    .dead_letter("work.dead"),
            )
            .unwrap();
        let mut dead = bus.queue::<u32>("work.dead").unwrap().consumer();
        let waiting = tokio::spawn(async move { dead.recv_async().await.map(|m| *m.payload()) });
        tokio::task::yield_now().await; // the waiter registers (current-thread: it ran)
        work.producer().send(5).unwrap();
        let mut stuck = work.consumer();
        let _held = stuck.recv().unwrap(); // never acked: dead-lettered after 50 ms
        let got = tokio::time::timeout(WAIT, waiting).await;
        assert!(
            matches!(got, Ok(Ok(Ok(5)))),
            "the dead letter never woke its consumer: {got:?}"
        );
    });
}

both_backends!(send_record_async_carries_key_and_headers_and_hands_the_record_back_when_closed);
fn send_record_async_carries_key_and_headers_and_hands_the_record_back_when_closed(
    backend: Backend,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bus = backend.bus();
        let topic = bus.topic::<u32>("t").unwrap();
        let mut sub = topic.subscribe(Start::Earliest).unwrap();
        let producer = topic.producer();
        let record = embus::Record::new(7).key("k").header("trace", b"abc");
        let receipt = producer.send_record_async(record).await.unwrap();
        let m = sub.recv_async().await.unwrap();
        assert_eq!((m.offset(), *m.payload()), (receipt.offset, 7));
        assert_eq!(
            (m.key(), m.headers().get("trace")),
            (Some(&b"k"[..]), Some(&b"abc"[..]))
        );

        bus.close().unwrap();
        let back = producer
            .send_record_async(embus::Record::new(8).key("k2"))
            .await
            .unwrap_err()
            .into_inner();
        assert_eq!((*back.payload(), back.key_bytes()), (8, Some(&b"k2"[..])));
    });
}

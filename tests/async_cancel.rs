//! Cancel safety of the async API: a dropped `recv_async` (or stream `next()`) loses no message,
//! a dropped `send_async` has either sent or not, and no dropped future leaves a waker behind.
//!
//! Futures are polled by hand with a counting `Waker`, so "woken" and "not woken" are exact
//! counts read right after the call that would wake (wakes happen inside that call).

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;

use common::{Backend, WAIT, both_backends};
use embus::{
    Broker, Consumer, Overflow, Producer, QueueOptions, Retention, Start, TopicOptions,
    TryRecvError,
};
use futures::StreamExt;
use futures::future::FusedFuture;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A waker that counts its wakes.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Counter {
    fn wakes(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A counting waker and its counter. `Arc::strong_count(&counter)` tells how many clones of the
/// waker are still held somewhere (1 = only the test's own counter).
fn counting_waker() -> (Arc<Counter>, Waker) {
    let counter = Arc::new(Counter::default());
    let waker = Waker::from(Arc::clone(&counter));
    (counter, waker)
}

/// Polls `fut` once with `waker`.
fn poll_once<F: Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(waker))
}

/// Runs `fut` on a current-thread tokio runtime, failing if it takes longer than `WAIT`.
fn run<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(async {
            // The deadline first: a missed wake-up must not be hidden by the timer's re-poll.
            tokio::select! {
                biased;
                () = tokio::time::sleep(WAIT) => panic!("timed out"),
                out = fut => out,
            }
        })
}

/// Awaits `fut`, failing the test if it takes longer than `WAIT` (deadline checked first).
async fn within<F: Future>(fut: F) -> F::Output {
    tokio::select! {
        biased;
        () = tokio::time::sleep(WAIT) => panic!("timed out"),
        out = fut => out,
    }
}

/// `Broker::flush` returns once the consumers waiting for what it committed are woken, under
/// `Durability::Interval` too, where the send returned before its commit and shares the
/// flush's.
#[test]
fn a_flush_returns_after_waking_the_consumers_of_what_it_committed() {
    let path = common::fresh_dir("flush-wakes").join("bus.embus");
    let bus = Broker::builder()
        .path(&path)
        .durability(embus::Durability::Interval(std::time::Duration::from_secs(
            3600,
        )))
        .open()
        .unwrap();
    let topic = bus.topic::<u32>("t").unwrap();
    for round in 0..10 {
        let (counter, waker) = counting_waker();
        let mut subs: Vec<_> = (0..2000)
            .map(|_| topic.subscribe(Start::Latest).unwrap())
            .collect();
        let mut futs: Vec<_> = subs.iter_mut().map(|s| s.recv_async()).collect();
        for fut in &mut futs {
            assert!(poll_once(fut, &waker).is_pending());
        }
        topic.producer().send(round).unwrap();
        bus.flush().unwrap();
        assert_eq!(counter.wakes(), futs.len(), "round {round}");
    }
}

/// The three kinds of consumer, each with a producer for what it reads. Topics have two
/// partitions, so a waiting consumer is registered in more than one place.
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

fn assert_nothing_ready(consumer: &mut Consumer<u32>, what: &str) {
    match consumer.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("{what}: expected Empty, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// recv_async: a dropped future loses nothing
// ---------------------------------------------------------------------------------------------

both_backends!(a_recv_async_dropped_while_pending_loses_nothing);
fn a_recv_async_dropped_while_pending_loses_nothing(backend: Backend) {
    let bus = backend.bus();
    for (what, producer, mut consumer) in each_consumer(&bus) {
        let (_, waker) = counting_waker();
        let mut fut = consumer.recv_async();
        assert!(poll_once(&mut fut, &waker).is_pending(), "{what}");
        drop(fut);

        producer.send(7).unwrap();
        let m = consumer
            .try_recv()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!((*m.payload(), m.delivery_count()), (7, 1), "{what}");
        m.ack().unwrap();
        assert_nothing_ready(&mut consumer, what);
    }
}

both_backends!(a_recv_async_woken_then_dropped_before_its_next_poll_loses_nothing);
fn a_recv_async_woken_then_dropped_before_its_next_poll_loses_nothing(backend: Backend) {
    let bus = backend.bus();
    for (what, producer, mut consumer) in each_consumer(&bus) {
        let (counter, waker) = counting_waker();
        let mut fut = consumer.recv_async();
        assert!(poll_once(&mut fut, &waker).is_pending(), "{what}");
        producer.send(7).unwrap();
        assert_eq!(
            counter.wakes(),
            1,
            "{what}: the send wakes the pending receive"
        );
        drop(fut); // cancelled between its wake and its next poll

        let m = run(consumer.recv_async()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!((*m.payload(), m.delivery_count()), (7, 1), "{what}");
        m.ack().unwrap();
        assert_nothing_ready(&mut consumer, what);
    }
}

both_backends!(#[tokio::test] async recv_async_cancelled_by_select_then_the_next_recv_gets_the_message);
async fn recv_async_cancelled_by_select_then_the_next_recv_gets_the_message(backend: Backend) {
    let bus = backend.bus();
    for (what, producer, mut consumer) in each_consumer(&bus) {
        // A deterministic cancellation: the receive is polled first (pending), then the
        // other branch completes and the receive is dropped.
        tokio::select! {
            biased;
            m = consumer.recv_async() => panic!("{what}: nothing was sent, got {m:?}"),
            () = std::future::ready(()) => {}
        }
        // The usual form: a timer wins.
        tokio::select! {
            m = consumer.recv_async() => panic!("{what}: nothing was sent, got {m:?}"),
            () = tokio::time::sleep(common::BRIEF) => {}
        }
        producer.send(1).unwrap();
        producer.send(2).unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            let m = within(consumer.recv_async()).await.unwrap();
            got.push(*m.payload());
            m.ack().unwrap();
        }
        got.sort_unstable(); // two partitions: no order across them
        assert_eq!(got, [1, 2], "{what}");
        assert_nothing_ready(&mut consumer, what);
    }
}

both_backends!(#[tokio::test] async a_stream_next_cancelled_loses_nothing);
async fn a_stream_next_cancelled_loses_nothing(backend: Backend) {
    let bus = backend.bus();
    for (what, producer, mut consumer) in each_consumer(&bus) {
        let mut stream = consumer.stream();
        tokio::select! {
            biased;
            m = stream.next() => panic!("{what}: nothing was sent, got {m:?}"),
            () = std::future::ready(()) => {}
        }
        producer.send(3).unwrap();
        let m = within(stream.next())
            .await
            .expect("the stream ended")
            .unwrap();
        assert_eq!((*m.payload(), m.delivery_count()), (3, 1), "{what}");
        m.ack().unwrap();
        drop(stream);
        assert_nothing_ready(&mut consumer, what);
    }
}

both_backends!(many_cancelled_receives_lose_nothing_under_a_concurrent_producer);
fn many_cancelled_receives_lose_nothing_under_a_concurrent_producer(backend: Backend) {
    // Fewer on a durable broker, where every send waits for an fsync.
    let n = backend.scale(2_000u32);
    let bus = backend.bus();
    let queue = bus.queue::<u32>("q").unwrap();
    let mut consumer = queue.consumer();
    let producer = queue.producer();
    let sender = thread::spawn(move || {
        for i in 0..n {
            producer.send(i).unwrap();
        }
    });
    let (_, waker) = counting_waker();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while got.len() < n as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} received",
            got.len()
        );
        // Poll once, then drop the future whatever happened: completed or cancelled.
        let mut fut = consumer.recv_async();
        if let Poll::Ready(m) = poll_once(&mut fut, &waker) {
            let m = m.unwrap();
            got.push(*m.payload());
            m.ack().unwrap();
        }
    }
    sender.join().unwrap();
    assert_eq!(
        got,
        (0..n).collect::<Vec<_>>(),
        "in order, none lost or doubled"
    );
    assert_eq!((queue.len(), queue.in_flight()), (0, 0));
}

// ---------------------------------------------------------------------------------------------
// recv_async: wakers
// ---------------------------------------------------------------------------------------------

both_backends!(a_pending_recv_async_is_woken_exactly_once_by_a_send);
fn a_pending_recv_async_is_woken_exactly_once_by_a_send(backend: Backend) {
    let bus = backend.bus();
    for (what, producer, mut consumer) in each_consumer(&bus) {
        let (counter, waker) = counting_waker();
        let mut fut = consumer.recv_async();
        assert!(poll_once(&mut fut, &waker).is_pending(), "{what}");
        assert_eq!(counter.wakes(), 0, "{what}");
        producer.send(1).unwrap();
        assert_eq!(counter.wakes(), 1, "{what}: woken by the send");
        match poll_once(&mut fut, &waker) {
            Poll::Ready(Ok(m)) => {
                assert_eq!(*m.payload(), 1, "{what}");
                m.ack().unwrap();
            }
            other => panic!("{what}: expected the message, got {other:?}"),
        }
        assert!(fut.is_terminated(), "{what}: FusedFuture after completion");
    }
}

both_backends!(a_recv_async_dropped_while_pending_leaves_no_waker);
fn a_recv_async_dropped_while_pending_leaves_no_waker(backend: Backend) {
    let bus = backend.bus();
    for (what, producer, mut consumer) in each_consumer(&bus) {
        let (counter, waker) = counting_waker();
        let mut fut = consumer.recv_async();
        assert!(poll_once(&mut fut, &waker).is_pending(), "{what}");
        assert!(
            Arc::strong_count(&counter) > 2,
            "{what}: the pending future registered a clone of the waker"
        );
        drop(fut);
        drop(waker);
        assert_eq!(
            Arc::strong_count(&counter),
            1,
            "{what}: a clone of the dropped future's waker is still held"
        );
        // Sends to both partitions (round-robin) wake nobody.
        producer.send(1).unwrap();
        producer.send(2).unwrap();
        assert_eq!(counter.wakes(), 0, "{what}: a dropped future was woken");
        assert_eq!(consumer.lag(), 2, "{what}");
    }
}

both_backends!(a_completed_recv_async_leaves_no_waker_on_other_partitions);
fn a_completed_recv_async_leaves_no_waker_on_other_partitions(backend: Backend) {
    let bus = backend.bus();
    let mut stale = Vec::new();
    for (what, producer, mut consumer) in each_consumer(&bus).into_iter().skip(1) {
        let (counter, waker) = counting_waker();
        let mut fut = consumer.recv_async();
        assert!(poll_once(&mut fut, &waker).is_pending(), "{what}");
        let receipt = producer.send(1).unwrap();
        assert_eq!(receipt.partition, 0, "{what}: round-robin starts at 0");
        assert_eq!(counter.wakes(), 1, "{what}");
        match poll_once(&mut fut, &waker) {
            Poll::Ready(Ok(m)) => m.ack().unwrap(),
            other => panic!("{what}: expected the message, got {other:?}"),
        }
        drop(fut);
        drop(waker);
        let held = Arc::strong_count(&counter) - 1;
        assert_eq!(producer.send(2).unwrap().partition, 1, "{what}");
        let woken_again = counter.wakes() - 1;
        if held != 0 || woken_again != 0 {
            stale.push(format!(
                "{what}: {held} waker clone(s) still held, woken {woken_again} more time(s)"
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "completed, dropped futures left wakers: {stale:#?}"
    );
}

both_backends!(a_dropped_stream_leaves_no_waker_on_other_partitions);
fn a_dropped_stream_leaves_no_waker_on_other_partitions(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u32>("t", TopicOptions::default().partitions(2))
        .unwrap();
    let producer = topic.producer();
    let mut consumer = topic.subscribe(Start::Earliest).unwrap();
    let (counter, waker) = counting_waker();
    let mut stream = consumer.stream();
    let mut cx = Context::from_waker(&waker);
    assert!(stream.poll_next_unpin(&mut cx).is_pending());
    assert_eq!(producer.send(1).unwrap().partition, 0);
    assert_eq!(counter.wakes(), 1);
    assert!(matches!(
        stream.poll_next_unpin(&mut cx),
        Poll::Ready(Some(Ok(_)))
    ));
    drop(stream);
    drop(waker);
    assert_eq!(
        Arc::strong_count(&counter),
        1,
        "the dropped stream's waker is still held"
    );
    assert_eq!(producer.send(2).unwrap().partition, 1);
    assert_eq!(counter.wakes(), 1, "a dropped stream was woken");
}

both_backends!(a_dropped_pending_stream_leaves_no_waker);
fn a_dropped_pending_stream_leaves_no_waker(backend: Backend) {
    let bus = backend.bus();
    for (what, producer, consumer) in each_consumer(&bus) {
        let (counter, waker) = counting_waker();
        let mut stream = consumer.into_stream();
        let mut cx = Context::from_waker(&waker);
        assert!(stream.poll_next_unpin(&mut cx).is_pending(), "{what}");
        drop(stream);
        drop(waker);
        assert_eq!(Arc::strong_count(&counter), 1, "{what}: waker still held");
        producer.send(1).unwrap();
        assert_eq!(counter.wakes(), 0, "{what}: a dropped stream was woken");
    }
}

/// A waker that panics when woken: the application's bug.
struct Panicking;

impl Wake for Panicking {
    fn wake(self: Arc<Self>) {
        panic!("this waker panics when woken");
    }
}

both_backends!(a_panicking_waker_strands_no_other_waiter);
fn a_panicking_waker_strands_no_other_waiter(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u32>("t", TopicOptions::default().partitions(1))
        .unwrap();
    let mut first = topic.subscribe(Start::Latest).unwrap();
    let mut second = topic.subscribe(Start::Latest).unwrap();
    let panicking = Waker::from(Arc::new(Panicking));
    let (counter, waker) = counting_waker();
    let mut bad = first.recv_async();
    let mut good = second.recv_async();
    assert!(poll_once(&mut bad, &panicking).is_pending()); // registered first: woken first
    assert!(poll_once(&mut good, &waker).is_pending());
    // The panic reaches the send in memory (the message is in by then); durable, the writer
    // catches it.
    let producer = topic.producer();
    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| producer.send(1)));
    assert_eq!(sent.is_err(), !backend.is_durable(), "where the panic went");
    bus.flush().unwrap();
    assert_eq!(counter.wakes(), 1, "the other waiter was woken");
    match poll_once(&mut good, &waker) {
        Poll::Ready(Ok(m)) => assert_eq!(*m.payload(), 1),
        other => panic!("expected the message, got {other:?}"),
    }
}

both_backends!(a_later_poll_with_a_new_waker_replaces_the_old_one);
fn a_later_poll_with_a_new_waker_replaces_the_old_one(backend: Backend) {
    let bus = backend.bus();
    let queue = bus.queue::<u32>("q").unwrap();
    let mut consumer = queue.consumer();
    let (first, first_waker) = counting_waker();
    let (second, second_waker) = counting_waker();
    let mut fut = consumer.recv_async();
    assert!(poll_once(&mut fut, &first_waker).is_pending());
    assert!(poll_once(&mut fut, &second_waker).is_pending()); // e.g. moved to another task
    queue.producer().send(1).unwrap();
    assert_eq!(
        (first.wakes(), second.wakes()),
        (0, 1),
        "only the latest waker is woken"
    );
}

// ---------------------------------------------------------------------------------------------
// send_async: sent or not, never half
// ---------------------------------------------------------------------------------------------

both_backends!(a_send_async_dropped_while_waiting_on_a_full_queue_never_sends);
fn a_send_async_dropped_while_waiting_on_a_full_queue_never_sends(backend: Backend) {
    let bus = backend.bus();
    let queue = bus
        .queue_with::<u32>("q", QueueOptions::default().capacity(1))
        .unwrap();
    let producer = queue.producer();
    let mut consumer = queue.consumer();
    producer.send(1).unwrap();

    let (counter, waker) = counting_waker();
    let mut fut = producer.send_async(2);
    assert!(
        poll_once(&mut fut, &waker).is_pending(),
        "the queue is full"
    );
    assert_eq!(queue.len(), 1);
    drop(fut);
    drop(waker);
    assert_eq!(
        Arc::strong_count(&counter),
        1,
        "the dropped send's waker is still held"
    );

    let m = consumer.try_recv().unwrap();
    assert_eq!(*m.payload(), 1);
    m.ack().unwrap(); // makes room: would wake a waiting send
    assert_eq!(counter.wakes(), 0, "a dropped send was woken");
    assert_nothing_ready(&mut consumer, "after the dropped send");
    assert_eq!((queue.len(), queue.in_flight()), (0, 0), "2 never arrived");

    // The queue works as before.
    run(producer.send_async(3)).unwrap();
    let m = consumer.try_recv().unwrap();
    assert_eq!(*m.payload(), 3);
    m.ack().unwrap();
    assert_eq!(queue.len(), 0);
}

both_backends!(a_waiting_send_async_on_a_full_queue_is_woken_once_by_an_ack_and_then_sends);
fn a_waiting_send_async_on_a_full_queue_is_woken_once_by_an_ack_and_then_sends(backend: Backend) {
    let bus = backend.bus();
    let queue = bus
        .queue_with::<u32>("q", QueueOptions::default().capacity(1))
        .unwrap();
    let producer = queue.producer();
    let mut consumer = queue.consumer();
    producer.send(1).unwrap();

    let (counter, waker) = counting_waker();
    let mut fut = producer.send_async(2);
    assert!(poll_once(&mut fut, &waker).is_pending());
    let m = consumer.try_recv().unwrap();
    assert_eq!(counter.wakes(), 0, "a delivery makes no room");
    m.ack().unwrap();
    assert_eq!(counter.wakes(), 1, "the ack makes room");
    let receipt = poll_sent(backend, &mut fut, &waker, &counter);
    assert_eq!(receipt.partition, 0);
    assert!(fut.is_terminated());
    drop(fut);
    assert_eq!(*consumer.try_recv().unwrap().payload(), 2);
}

/// Polls a send that was just woken for room to its receipt: at once in memory; on a durable
/// broker it stages and is woken once more by its commit.
fn poll_sent<F>(backend: Backend, fut: &mut F, waker: &Waker, counter: &Counter) -> embus::Receipt
where
    F: Future<Output = Result<embus::Receipt, embus::SendError<u32>>> + Unpin,
{
    let woken = counter.wakes();
    match poll_once(fut, waker) {
        Poll::Ready(Ok(receipt)) => return receipt,
        Poll::Pending if backend.is_durable() => {}
        other => panic!("expected a receipt, got {other:?}"),
    }
    let deadline = std::time::Instant::now() + WAIT;
    while counter.wakes() == woken {
        assert!(
            std::time::Instant::now() < deadline,
            "the commit never woke the send"
        );
        thread::yield_now();
    }
    assert_eq!(counter.wakes(), woken + 1, "woken once by the commit");
    match poll_once(fut, waker) {
        Poll::Ready(Ok(receipt)) => receipt,
        other => panic!("expected a receipt after the commit, got {other:?}"),
    }
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

both_backends!(a_send_async_dropped_while_waiting_on_a_full_block_topic_never_sends);
fn a_send_async_dropped_while_waiting_on_a_full_block_topic_never_sends(backend: Backend) {
    let bus = backend.bus();
    let topic = block_topic(&bus);
    let producer = topic.producer();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    producer.send(1).unwrap();

    let (counter, waker) = counting_waker();
    let mut fut = producer.send_async(2);
    assert!(
        poll_once(&mut fut, &waker).is_pending(),
        "the topic is full"
    );
    drop(fut);
    drop(waker);
    assert_eq!(
        Arc::strong_count(&counter),
        1,
        "the dropped send's waker is still held"
    );

    assert_eq!(*sub.try_recv().unwrap().payload(), 1); // makes room
    assert_eq!(counter.wakes(), 0, "a dropped send was woken");
    assert_eq!(topic.offsets(0), Some(0..1), "2 was never appended");
    assert_nothing_ready(&mut sub, "after the dropped send");

    let receipt = run(producer.send_async(3)).unwrap();
    assert_eq!((receipt.partition, receipt.offset), (0, 1));
    assert_eq!(*sub.try_recv().unwrap().payload(), 3);
}

both_backends!(a_waiting_send_async_on_a_full_block_topic_is_woken_once_by_the_read);
fn a_waiting_send_async_on_a_full_block_topic_is_woken_once_by_the_read(backend: Backend) {
    let bus = backend.bus();
    let topic = block_topic(&bus);
    let producer = topic.producer();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    producer.send(1).unwrap();

    let (counter, waker) = counting_waker();
    let mut fut = producer.send_async(2);
    assert!(poll_once(&mut fut, &waker).is_pending());
    assert!(poll_once(&mut fut, &waker).is_pending(), "still full");
    assert_eq!(*sub.try_recv().unwrap().payload(), 1);
    assert_eq!(counter.wakes(), 1, "the read makes room");
    let receipt = poll_sent(backend, &mut fut, &waker, &counter);
    assert_eq!(receipt.offset, 1);
    assert_eq!(*sub.try_recv().unwrap().payload(), 2);
}

both_backends!(#[tokio::test] async send_async_cancelled_by_select_on_a_full_queue_never_sends);
async fn send_async_cancelled_by_select_on_a_full_queue_never_sends(backend: Backend) {
    let bus = backend.bus();
    let queue = bus
        .queue_with::<u32>("q", QueueOptions::default().capacity(1))
        .unwrap();
    let producer = queue.producer();
    let mut consumer = queue.consumer();
    producer.send(1).unwrap();
    tokio::select! {
        biased;
        r = producer.send_async(2) => panic!("the queue is full, got {r:?}"),
        () = std::future::ready(()) => {}
    }
    tokio::select! {
        r = producer.send_async(3) => panic!("the queue is full, got {r:?}"),
        () = tokio::time::sleep(common::BRIEF) => {}
    }
    let m = consumer.try_recv().unwrap();
    assert_eq!(*m.payload(), 1);
    m.ack().unwrap();
    assert_nothing_ready(&mut consumer, "after two cancelled sends");
    within(producer.send_async(4)).await.unwrap();
    assert_eq!(*consumer.try_recv().unwrap().payload(), 4);
}

#[test]
// Memory only: on a durable broker a send dropped while its commit is pending is still
// delivered (without its receipt), and two polls never cover an fsync; tests/durable.rs covers
// that contract.
fn cancelled_sends_either_sent_or_not_under_a_concurrent_consumer_memory() {
    cancelled_sends_either_sent_or_not_under_a_concurrent_consumer(Backend::Memory);
}
/// Races cancellation against a consumer thread making room: every send either returned its
/// receipt (and arrives exactly once) or was cancelled (and never arrives).
fn cancelled_sends_either_sent_or_not_under_a_concurrent_consumer(backend: Backend) {
    const ATTEMPTS: u32 = 2_000;
    const END: u32 = u32::MAX;
    let bus = backend.bus();
    let queue = bus
        .queue_with::<u32>("q", QueueOptions::default().capacity(1))
        .unwrap();
    let producer = queue.producer();
    let mut consumer = queue.consumer();
    let receiver = thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            let m = consumer
                .recv_timeout(WAIT)
                .expect("the end marker never came");
            let payload = *m.payload();
            m.ack().unwrap();
            if payload == END {
                return got;
            }
            got.push(payload);
        }
    });
    let sent = run(async {
        let mut sent = Vec::new();
        for i in 0..ATTEMPTS {
            // `yield_now` completes on its second poll: the send gets two polls to finish.
            tokio::select! {
                biased;
                r = producer.send_async(i) => {
                    assert_eq!(r.unwrap().partition, 0);
                    sent.push(i);
                }
                () = tokio::task::yield_now() => {}
            }
        }
        producer.send_async(END).await.unwrap();
        sent
    });
    let got = receiver.join().unwrap();
    assert!(!sent.is_empty(), "no send ever completed");
    assert_eq!(got, sent, "received exactly what was reported sent");
    assert_eq!((queue.len(), queue.in_flight()), (0, 0));
}

/// A task whose executor is gone: waking it does nothing, and dropping its last waker drops
/// the future it owns (as a simple executor does once its run queue is dropped).
struct OrphanTask {
    stream: std::sync::Mutex<Option<embus::RecvStream<'static, u32>>>,
}

impl Wake for OrphanTask {
    fn wake(self: Arc<Self>) {}
}

both_backends!(close_does_not_deadlock_when_a_dropped_waker_drops_a_timed_receive);
/// Regression: the timer dropped wakers under its own lock; a waker holding the last reference
/// to a task dropped that task's stream, whose drop re-entered the timer: `close` deadlocked.
fn close_does_not_deadlock_when_a_dropped_waker_drops_a_timed_receive(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<u32>(
            "jobs",
            QueueOptions::default().ack_timeout(std::time::Duration::from_secs(30)),
        )
        .unwrap();
    jobs.producer().send(1).unwrap();
    let mut holder = jobs.consumer();
    let _in_flight = holder.recv().unwrap(); // an ack deadline exists: the wait below is timed
    let task = Arc::new(OrphanTask {
        stream: std::sync::Mutex::new(Some(jobs.consumer().into_stream())),
    });
    {
        let waker = Waker::from(Arc::clone(&task));
        let mut guard = task.stream.lock().unwrap();
        let stream = guard.as_mut().unwrap();
        assert!(
            stream
                .poll_next_unpin(&mut Context::from_waker(&waker))
                .is_pending()
        );
    }
    drop(task); // now only the queue's waiter list and the timer hold the task
    let (done, finished) = std::sync::mpsc::channel();
    thread::spawn(move || {
        drop(jobs);
        bus.close().unwrap();
        done.send(()).unwrap();
    });
    assert!(
        finished.recv_timeout(WAIT).is_ok(),
        "Broker::close deadlocked"
    );
}

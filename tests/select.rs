//! `Select`: blocking code waiting on several consumers (of any payload types) at once.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{BRIEF, Backend, Bus, WAIT, both_backends};
use embus::{
    Consumer, ManualClock, QueueOptions, ReadyTimeoutError, RecvTimeoutError, Retention, Select,
    Start, TopicOptions, TryRecvError,
};

/// How long a `Select` on a helper thread waits; longer than the `WAIT` the test waits for the
/// helper, so a missed wake-up fails the test instead of being hidden by the re-check a wait
/// makes at its own deadline.
const THREAD_WAIT: Duration = Duration::from_secs(WAIT.as_secs() * 2);

/// Three consumers of three payload types, and the bus.
struct Three {
    bus: Bus,
    news: embus::Topic<String>,
    jobs: embus::Queue<u32>,
    metrics: embus::Topic<u64>,
    reader: Consumer<String>,
    worker: Consumer<u32>,
    member: Consumer<u64>,
}

fn three(backend: Backend) -> Three {
    let bus = backend.bus();
    let news = bus.topic::<String>("news").unwrap();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let metrics = bus
        .topic_with::<u64>("metrics", TopicOptions::default().partitions(2))
        .unwrap();
    Three {
        reader: news.subscribe(Start::Earliest).unwrap(),
        worker: jobs.consumer(),
        member: metrics.join_group("g").unwrap(),
        bus,
        news,
        jobs,
        metrics,
    }
}

fn assert_empty<T: embus::Payload>(c: &mut Consumer<T>, what: &str) {
    match c.try_recv() {
        Err(TryRecvError::Empty) => {}
        Err(e) => panic!("{what}: expected Empty, got {e}"),
        Ok(_) => panic!("{what}: expected Empty, got a message"),
    }
}

/// Runs `f` on a helper thread now; `Pending::wait` gets its result within `WAIT`.
struct Pending<R>(mpsc::Receiver<R>, thread::JoinHandle<()>);

fn spawn<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Pending<R> {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let _ = tx.send(f());
    });
    Pending(rx, handle)
}

impl<R> Pending<R> {
    fn wait(self) -> R {
        match self.0.recv_timeout(WAIT) {
            Ok(r) => {
                self.1.join().unwrap();
                r
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("timed out (a lost wake-up?)"),
            Err(mpsc::RecvTimeoutError::Disconnected) => match self.1.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => panic!("the helper thread ended without a result"),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Which consumer is ready
// ---------------------------------------------------------------------------------------------

both_backends!(ready_returns_the_index_of_the_consumer_that_has_a_message);
fn ready_returns_the_index_of_the_consumer_that_has_a_message(backend: Backend) {
    for target in 0..3 {
        let mut t = three(backend);
        match target {
            0 => drop(t.news.producer().send("hi".to_string()).unwrap()),
            1 => drop(t.jobs.producer().send(7).unwrap()),
            _ => drop(t.metrics.producer().send(42).unwrap()),
        }
        let index = Select::new()
            .recv(&mut t.reader)
            .recv(&mut t.worker)
            .recv(&mut t.member)
            .ready();
        assert_eq!(index, target);
        match index {
            0 => assert_eq!(t.reader.try_recv().unwrap().payload(), "hi"),
            1 => {
                let m = t.worker.try_recv().unwrap();
                assert_eq!(*m.payload(), 7);
                m.ack().unwrap(); // dropped unacked, it would be redelivered
            }
            _ => {
                let m = t.member.try_recv().unwrap();
                assert_eq!(*m.payload(), 42);
                m.ack().unwrap();
            }
        }
        assert_empty(&mut t.reader, "reader");
        assert_empty(&mut t.worker, "worker");
        assert_empty(&mut t.member, "member");
    }
}

both_backends!(ready_returns_the_first_ready_consumer_in_the_order_added);
fn ready_returns_the_first_ready_consumer_in_the_order_added(backend: Backend) {
    let mut t = three(backend);
    t.jobs.producer().send(1).unwrap();
    t.metrics.producer().send(2).unwrap();
    let index = Select::new()
        .recv(&mut t.reader)
        .recv(&mut t.member)
        .recv(&mut t.worker)
        .ready();
    assert_eq!(index, 1, "the member, added before the worker");
    assert_eq!(*t.member.try_recv().unwrap().payload(), 2);
    assert_eq!(*t.worker.try_recv().unwrap().payload(), 1);
}

both_backends!(try_ready_is_none_when_nothing_is_ready_and_takes_nothing);
fn try_ready_is_none_when_nothing_is_ready_and_takes_nothing(backend: Backend) {
    let mut t = three(backend);
    let none = Select::new()
        .recv(&mut t.reader)
        .recv(&mut t.worker)
        .recv(&mut t.member)
        .try_ready();
    assert_eq!(none, None);
    t.jobs.producer().send(3).unwrap();
    let some = Select::new()
        .recv(&mut t.reader)
        .recv(&mut t.worker)
        .try_ready();
    assert_eq!(some, Some(1));
    assert_eq!(*t.worker.try_recv().unwrap().payload(), 3);
}

#[test]
#[should_panic(expected = "no consumers")]
fn ready_with_no_consumers_panics() {
    let _ = Select::new().ready();
}

// ---------------------------------------------------------------------------------------------
// The held result
// ---------------------------------------------------------------------------------------------

both_backends!(the_held_queue_delivery_is_returned_by_the_next_try_recv);
fn the_held_queue_delivery_is_returned_by_the_next_try_recv(backend: Backend) {
    let mut t = three(backend);
    t.jobs.producer().send_batch(vec![1, 2]).unwrap();
    let index = Select::new()
        .recv(&mut t.reader)
        .recv(&mut t.worker)
        .ready();
    assert_eq!(index, 1);
    assert_eq!(
        (t.jobs.len(), t.jobs.in_flight()),
        (1, 1),
        "the first message is held by the selected consumer"
    );
    // A competing consumer gets the next one, not the held one.
    let mut other = t.jobs.consumer();
    let m = other.try_recv().unwrap();
    assert_eq!(*m.payload(), 2);
    m.ack().unwrap();
    let m = t.worker.try_recv().unwrap();
    assert_eq!((*m.payload(), m.delivery_count()), (1, 1));
    m.ack().unwrap();
    assert_eq!((t.jobs.len(), t.jobs.in_flight()), (0, 0));
    assert_empty(&mut t.worker, "worker");
}

both_backends!(the_held_message_comes_before_later_ones_and_survives_other_receives);
fn the_held_message_comes_before_later_ones_and_survives_other_receives(backend: Backend) {
    let mut t = three(backend);
    t.news.producer().send("first".to_string()).unwrap();
    assert_eq!(
        Select::new()
            .recv(&mut t.worker)
            .recv(&mut t.reader)
            .ready(),
        1
    );
    // Asking again does not take a second message: the held one keeps it ready.
    assert_eq!(
        Select::new()
            .recv(&mut t.worker)
            .recv(&mut t.reader)
            .try_ready(),
        Some(1)
    );
    t.news.producer().send("second".to_string()).unwrap();
    t.jobs.producer().send(9).unwrap();
    assert_eq!(*t.worker.try_recv().unwrap().payload(), 9); // another consumer first
    assert_eq!(t.reader.try_recv().unwrap().payload(), "first");
    assert_eq!(t.reader.try_recv().unwrap().payload(), "second");
    assert_empty(&mut t.reader, "reader");
}

both_backends!(the_held_message_is_returned_by_every_kind_of_receive);
fn the_held_message_is_returned_by_every_kind_of_receive(backend: Backend) {
    let mut t = three(backend);
    let producer = t.news.producer();
    type Receive = fn(&mut Consumer<String>) -> String;
    let receives: [(&str, Receive); 4] = [
        ("try_recv", |c| c.try_recv().unwrap().payload().clone()),
        ("recv", |c| c.recv().unwrap().payload().clone()),
        ("recv_timeout", |c| {
            c.recv_timeout(Duration::ZERO).unwrap().payload().clone()
        }),
        ("recv_async", |c| {
            futures::executor::block_on(c.recv_async())
                .unwrap()
                .payload()
                .clone()
        }),
    ];
    for (i, (what, receive)) in receives.into_iter().enumerate() {
        producer.send(format!("m{i}")).unwrap();
        assert_eq!(
            Select::new()
                .recv(&mut t.worker)
                .recv(&mut t.reader)
                .ready(),
            1,
            "{what}"
        );
        assert_eq!(receive(&mut t.reader), format!("m{i}"), "{what}");
        assert_empty(&mut t.reader, what);
    }
}

both_backends!(the_held_group_delivery_acks_like_any_other);
fn the_held_group_delivery_acks_like_any_other(backend: Backend) {
    let mut t = three(backend);
    t.metrics.producer().send_batch(vec![1, 2]).unwrap();
    for _ in 0..2 {
        assert_eq!(
            Select::new()
                .recv(&mut t.reader)
                .recv(&mut t.member)
                .ready(),
            1
        );
        t.member.try_recv().unwrap().ack().unwrap();
    }
    assert_eq!(t.metrics.group_position("g"), Some(vec![1, 1]));
    t.bus.wait_idle(WAIT).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Lagged and Disconnected are ready too
// ---------------------------------------------------------------------------------------------

both_backends!(lagged_makes_a_consumer_ready);
fn lagged_makes_a_consumer_ready(backend: Backend) {
    let mut t = three(backend);
    let lossy = t
        .bus
        .topic_with::<u32>(
            "lossy",
            TopicOptions::default().retention(Retention::messages(2)),
        )
        .unwrap();
    let mut sub = lossy.subscribe(Start::Earliest).unwrap();
    lossy.producer().send_batch((0..5).collect()).unwrap();
    let index = Select::new()
        .recv(&mut t.worker)
        .recv(&mut sub)
        .ready_timeout(WAIT);
    assert_eq!(index, Ok(1));
    assert_eq!(
        sub.try_recv().unwrap_err(),
        TryRecvError::Lagged { skipped: 3 }
    );
    assert_eq!(*sub.try_recv().unwrap().payload(), 3);
    assert_eq!(*sub.try_recv().unwrap().payload(), 4);
}

both_backends!(disconnected_makes_every_consumer_ready_after_what_is_left);
fn disconnected_makes_every_consumer_ready_after_what_is_left(backend: Backend) {
    let mut t = three(backend);
    t.jobs.producer().send(5).unwrap();
    t.bus.clone().close().unwrap();
    // The queue still has a message: first come the messages, then Disconnected.
    assert_eq!(
        Select::new()
            .recv(&mut t.reader)
            .recv(&mut t.worker)
            .ready(),
        0,
        "the closed, empty topic is ready (Disconnected)"
    );
    assert_eq!(t.reader.try_recv().unwrap_err(), TryRecvError::Disconnected);
    assert_eq!(Select::new().recv(&mut t.worker).ready(), 0);
    let m = t.worker.try_recv().unwrap();
    assert_eq!(*m.payload(), 5);
    backend.settled_after_close(m.ack());
    assert_eq!(Select::new().recv(&mut t.worker).ready_timeout(WAIT), Ok(0));
    assert_eq!(t.worker.try_recv().unwrap_err(), TryRecvError::Disconnected);
    assert_eq!(Select::new().recv(&mut t.member).ready_timeout(WAIT), Ok(0));
    assert_eq!(t.member.try_recv().unwrap_err(), TryRecvError::Disconnected);
    assert_eq!(
        Select::new()
            .recv(&mut t.member)
            .recv(&mut t.reader)
            .try_ready(),
        Some(0),
        "stays ready"
    );
}

// ---------------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------------

both_backends!(ready_timeout_returns_ready_timeout_error_when_nothing_comes);
fn ready_timeout_returns_ready_timeout_error_when_nothing_comes(backend: Backend) {
    let mut t = three(backend);
    let start = Instant::now();
    let result = Select::new()
        .recv(&mut t.reader)
        .recv(&mut t.worker)
        .recv(&mut t.member)
        .ready_timeout(BRIEF);
    assert_eq!(result, Err(ReadyTimeoutError));
    assert!(
        start.elapsed() >= BRIEF,
        "returned early: {:?}",
        start.elapsed()
    );
    assert_eq!(
        ReadyTimeoutError.to_string(),
        "timed out waiting for a consumer to be ready"
    );
    let _: &dyn std::error::Error = &ReadyTimeoutError;
    // Nothing was taken or broken.
    t.jobs.producer().send(1).unwrap();
    assert_eq!(
        Select::new()
            .recv(&mut t.reader)
            .recv(&mut t.worker)
            .ready_timeout(WAIT),
        Ok(1)
    );
    assert_eq!(*t.worker.try_recv().unwrap().payload(), 1);
}

both_backends!(ready_timeout_zero_is_like_try_ready);
fn ready_timeout_zero_is_like_try_ready(backend: Backend) {
    let mut t = three(backend);
    assert_eq!(
        Select::new()
            .recv(&mut t.worker)
            .ready_timeout(Duration::ZERO),
        Err(ReadyTimeoutError)
    );
    t.jobs.producer().send(1).unwrap();
    assert_eq!(
        Select::new()
            .recv(&mut t.worker)
            .ready_timeout(Duration::ZERO),
        Ok(0)
    );
}

// ---------------------------------------------------------------------------------------------
// Blocked on another thread
// ---------------------------------------------------------------------------------------------

both_backends!(a_select_blocked_on_another_thread_wakes_on_a_send_to_any_consumer);
fn a_select_blocked_on_another_thread_wakes_on_a_send_to_any_consumer(backend: Backend) {
    for target in 0..3 {
        let t = three(backend);
        let (mut reader, mut worker, mut member) = (t.reader, t.worker, t.member);
        let waiting = spawn(move || {
            let index = Select::new()
                .recv(&mut reader)
                .recv(&mut worker)
                .recv(&mut member)
                .ready_timeout(THREAD_WAIT)
                .expect("not woken");
            let payload = match index {
                0 => reader.try_recv().unwrap().payload().clone(),
                1 => worker.try_recv().unwrap().payload().to_string(),
                _ => member.try_recv().unwrap().payload().to_string(),
            };
            (index, payload)
        });
        match target {
            0 => drop(t.news.producer().send("n".to_string()).unwrap()),
            1 => drop(t.jobs.producer().send(1).unwrap()),
            // Both partitions in turn (round-robin): the first send wakes it.
            _ => drop(t.metrics.producer().send(2).unwrap()),
        }
        let expected = ["n", "1", "2"][target].to_string();
        assert_eq!(waiting.wait(), (target, expected));
    }
}

both_backends!(a_select_blocked_on_another_thread_wakes_on_close);
fn a_select_blocked_on_another_thread_wakes_on_close(backend: Backend) {
    let t = three(backend);
    let (mut reader, mut worker, mut member) = (t.reader, t.worker, t.member);
    let waiting = spawn(move || {
        let index = Select::new()
            .recv(&mut reader)
            .recv(&mut worker)
            .recv(&mut member)
            .ready_timeout(THREAD_WAIT)
            .expect("not woken by close");
        (index, reader.try_recv().map(|m| m.payload().clone()))
    });
    t.bus.close().unwrap();
    assert_eq!(waiting.wait(), (0, Err(TryRecvError::Disconnected)));
}

both_backends!(a_select_blocked_on_another_thread_wakes_for_a_redelivery_after_a_real_ack_timeout);
fn a_select_blocked_on_another_thread_wakes_for_a_redelivery_after_a_real_ack_timeout(
    backend: Backend,
) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<u32>(
            "jobs",
            QueueOptions::default().ack_timeout(Duration::from_millis(100)),
        )
        .unwrap();
    let news = bus.topic::<String>("news").unwrap();
    jobs.producer().send(1).unwrap();
    let mut slow = jobs.consumer();
    let m = slow.recv_timeout(WAIT).unwrap(); // held unacked until its timeout passes

    let mut worker = jobs.consumer();
    let mut reader = news.subscribe(Start::Earliest).unwrap();
    let waiting = spawn(move || {
        let index = Select::new()
            .recv(&mut reader)
            .recv(&mut worker)
            .ready_timeout(THREAD_WAIT)
            .expect("not woken by the ack timeout");
        (
            index,
            worker
                .try_recv()
                .map(|m| (*m.payload(), m.delivery_count())),
        )
    });
    assert_eq!(waiting.wait(), (1, Ok((1, 2))));
    drop(m);
}

both_backends!(a_select_blocked_on_another_thread_wakes_on_a_manual_clock_advance);
fn a_select_blocked_on_another_thread_wakes_on_a_manual_clock_advance(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let jobs = bus
        .queue_with::<u32>(
            "jobs",
            QueueOptions::default().ack_timeout(Duration::from_secs(30)),
        )
        .unwrap();
    jobs.producer().send(1).unwrap();
    let mut slow = jobs.consumer();
    let held = slow.recv_timeout(WAIT).unwrap();
    let mut worker = jobs.consumer();
    let (ready_tx, ready_rx) = mpsc::channel();
    let waiting = spawn(move || {
        ready_tx.send(()).unwrap();
        let index = Select::new()
            .recv(&mut worker)
            .ready_timeout(THREAD_WAIT)
            .expect("not woken by the clock");
        (index, worker.try_recv().map(|m| m.delivery_count()))
    });
    ready_rx.recv_timeout(WAIT).unwrap();
    clock.advance(Duration::from_secs(31));
    assert_eq!(waiting.wait(), (0, Ok(2)));
    drop(held);
}

both_backends!(a_select_loop_receives_everything_from_two_busy_producers);
fn a_select_loop_receives_everything_from_two_busy_producers(backend: Backend) {
    // Fewer on a durable broker, where every send waits for an fsync.
    let n = backend.scale(2_000u32);
    let mut t = three(backend);
    let (np, jp) = (t.news.producer(), t.jobs.producer());
    let senders = [
        thread::spawn(move || (0..n).for_each(|i| assert!(np.send(i.to_string()).is_ok()))),
        thread::spawn(move || (0..n).for_each(|i| assert!(jp.send(i).is_ok()))),
    ];
    let (mut news, mut jobs) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + WAIT;
    while news.len() < n as usize || jobs.len() < n as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        match Select::new()
            .recv(&mut t.reader)
            .recv(&mut t.worker)
            .ready_timeout(left)
        {
            Ok(0) => news.push(
                t.reader
                    .try_recv()
                    .unwrap()
                    .payload()
                    .parse::<u32>()
                    .unwrap(),
            ),
            Ok(1) => {
                let m = t.worker.try_recv().unwrap();
                jobs.push(*m.payload());
                m.ack().unwrap();
            }
            other => panic!(
                "{other:?} with {} news and {} jobs of {n}",
                news.len(),
                jobs.len()
            ),
        }
    }
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(news, (0..n).collect::<Vec<_>>());
    assert_eq!(jobs, (0..n).collect::<Vec<_>>());
    assert_eq!(
        t.worker.recv_timeout(Duration::ZERO).unwrap_err(),
        RecvTimeoutError::Timeout
    );
}

/// Only `ready` waits forever (and so panics) without consumers; the others just report nothing.
#[test]
fn try_ready_and_ready_timeout_without_consumers_report_nothing() {
    assert_eq!(Select::new().try_ready(), None);
    assert_eq!(
        Select::new().ready_timeout(Duration::from_millis(1)),
        Err(embus::ReadyTimeoutError)
    );
}

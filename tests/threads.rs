//! A memory broker starts no thread of its own and leaves none behind after close (one test, so nothing else runs in this process).

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::mpsc;
    use std::thread::{self, JoinHandle};
    use std::time::{Duration, Instant};

    use crate::common::{self, BRIEF, WAIT};
    use embus::{
        Broker, GroupOptions, ManualClock, QueueOptions, RecvError, Retention, Start, TopicOptions,
        TryRecvError,
    };

    /// The OS threads of this process.
    fn os_threads() -> usize {
        std::fs::read_dir("/proc/self/task").unwrap().count()
    }

    /// Waits (with a deadline) until the process has `expected` threads. A joined thread may stay
    /// listed for a moment after `join` returns, until the kernel reaps it.
    fn wait_for_threads(expected: usize, what: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = os_threads();
            if now == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {now} OS threads, expected {expected}"
            );
            thread::yield_now();
        }
    }

    /// Spawns a thread that tells the test it started, then runs `f`; returns its handle and
    /// a receiver for `f`'s result.
    fn spawn<R: Send + 'static>(
        f: impl FnOnce() -> R + Send + 'static,
    ) -> (JoinHandle<()>, mpsc::Receiver<R>) {
        let (started_tx, started_rx) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        let handle = thread::spawn(move || {
            started_tx.send(()).unwrap();
            let _ = tx.send(f());
        });
        started_rx.recv_timeout(WAIT).unwrap();
        (handle, rx)
    }

    // Memory only: a durable broker runs a writer thread by design.
    #[test]
    fn no_thread_is_started_or_left_running() {
        let baseline = os_threads();

        // Creating brokers starts nothing.
        let clock = ManualClock::new();
        let bus = Broker::builder().clock(clock.clone()).open().unwrap();
        let other = Broker::memory();
        assert_eq!(os_threads(), baseline, "creating a broker started a thread");

        // Topics (subscribers, groups, age retention), queues (ack timeouts, dead letters, capacity).
        let topic = bus
            .topic_with::<u64>("events", TopicOptions::default().partitions(3))
            .unwrap();
        let aged = bus
            .topic_with::<u64>(
                "aged",
                TopicOptions::default().retention(Retention::age(Duration::from_secs(5))),
            )
            .unwrap();
        let jobs = bus
            .queue_with::<u64>(
                "jobs",
                QueueOptions::default()
                    .ack_timeout(Duration::from_secs(30))
                    .max_deliveries(2)
                    .dead_letter("jobs.dead"),
            )
            .unwrap();
        let full = bus
            .queue_with::<u64>("full", QueueOptions::default().capacity(1))
            .unwrap();
        let other_queue = other.queue::<u64>("q").unwrap();

        let mut sub = topic.subscribe(Start::Earliest).unwrap();
        let mut member = topic.join_group("g").unwrap();
        let mut aged_sub = aged.subscribe(Start::Earliest).unwrap();
        let mut worker = jobs.consumer();
        topic.producer().send_batch((0..30).collect()).unwrap();
        aged.producer().send(1).unwrap();
        jobs.producer().send_batch(vec![1, 2]).unwrap();
        assert_eq!(common::take(&mut sub, 30).len(), 30);
        assert_eq!(common::take(&mut member, 30).len(), 30);
        // Ack timeouts and age retention fire on the manual clock, in the calling threads.
        let held = worker.recv_timeout(WAIT).unwrap();
        clock.advance(Duration::from_secs(31));
        let again = worker.recv_timeout(WAIT).unwrap();
        assert_eq!(
            (*again.payload(), again.delivery_count()),
            (*held.payload(), 2)
        );
        again.nack().unwrap(); // second failed delivery: dead-lettered
        drop(held); // a stale delivery: nothing happens
        assert_eq!(common::take(&mut worker, 1), [2]);
        assert_eq!(jobs.dead_lettered(), 1);
        // The 31 s advance also expired the 5 s-old message of "aged".
        assert_eq!(
            aged_sub.try_recv().unwrap_err(),
            TryRecvError::Lagged { skipped: 1 }
        );
        assert_eq!(aged_sub.try_recv().unwrap_err(), TryRecvError::Empty);
        bus.wait_idle(WAIT).unwrap();
        assert_eq!(os_threads(), baseline, "using the broker started a thread");

        let mut dead_worker = bus.queue::<u64>("jobs.dead").unwrap().consumer();
        assert_eq!(common::take(&mut dead_worker, 1), [1]);

        // Consumers and a producer blocked on other threads: exactly the threads we spawned.
        let recv_on = |mut c: embus::Consumer<u64>| {
            spawn(move || {
                c.recv().map(|m| {
                    let payload = *m.payload();
                    m.ack().unwrap();
                    payload
                })
            })
        };
        let mut blocked = vec![
            recv_on(topic.subscribe(Start::Latest).unwrap()),
            recv_on(
                topic
                    .join_group_with("g2", GroupOptions::default().start(Start::Latest))
                    .unwrap(),
            ),
            recv_on(
                topic
                    .join_group_with("g3", GroupOptions::default().start(Start::Latest))
                    .unwrap(),
            ),
            recv_on(jobs.consumer()),
            recv_on(dead_worker),
            recv_on(other_queue.consumer()),
        ];
        let producer = full.producer();
        producer.send(1).unwrap(); // `full` is now full: the next send blocks
        let (send_handle, send_result) =
            spawn(move || producer.send(2).map_err(|e| e.into_inner()));
        // A clock advance wakes waiters to re-check; they stay blocked.
        clock.advance(Duration::from_secs(60));
        for (_, done) in &blocked {
            assert!(
                done.recv_timeout(BRIEF).is_err(),
                "a consumer returned early"
            );
        }
        assert!(send_result.try_recv().is_err(), "the send returned early");
        assert_eq!(
            os_threads(),
            baseline + blocked.len() + 1,
            "the broker runs threads of its own"
        );

        // A job reaches the blocked queue consumer, whose thread then ends.
        let (handle, done) = blocked.remove(3);
        jobs.producer().send(99).unwrap();
        assert_eq!(done.recv_timeout(WAIT).unwrap(), Ok(99));
        handle.join().unwrap();
        wait_for_threads(baseline + blocked.len() + 1, "after one consumer returned");

        // close() wakes everything on `bus`; dropping the last handle of `other` wakes the rest.
        bus.close().unwrap();
        assert_eq!(send_result.recv_timeout(WAIT).unwrap(), Err(2));
        send_handle.join().unwrap();
        let (other_handle, other_done) = blocked.pop().unwrap();
        for (handle, done) in blocked {
            assert_eq!(
                done.recv_timeout(WAIT).unwrap(),
                Err(RecvError::Disconnected)
            );
            handle.join().unwrap();
        }
        assert!(
            other_done.recv_timeout(BRIEF).is_err(),
            "the other broker is still open"
        );
        drop((other, other_queue));
        assert_eq!(
            other_done.recv_timeout(WAIT).unwrap(),
            Err(RecvError::Disconnected)
        );
        other_handle.join().unwrap();

        drop((
            topic, aged, jobs, full, sub, member, aged_sub, worker, clock,
        ));
        wait_for_threads(baseline, "after close");
    }
}

//! The one thread a memory broker may start: the timer for async receives waiting on a
//! real-time ack deadline. It starts only then and is gone after close. (Its own test binary,
//! with one test, so no other test's threads disturb the count.)

#![cfg(target_os = "linux")]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use embus::{Broker, QueueOptions};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn the_timer_thread_starts_for_an_async_deadline_and_stops_on_close() {
    let baseline = threads();
    let bus = Broker::memory();
    let jobs = bus
        .queue_with::<u32>(
            "jobs",
            QueueOptions::default().ack_timeout(Duration::from_secs(3600)),
        )
        .unwrap();
    jobs.producer().send(1).unwrap();
    let mut holder = jobs.consumer();
    let held = holder.recv().unwrap();
    assert_eq!(threads(), baseline, "blocking use starts no thread");

    let mut waiter = jobs.consumer();
    let mut cx = Context::from_waker(Waker::noop());
    {
        let mut fut = pin!(waiter.recv_async());
        assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Pending));
        assert_eq!(
            threads(),
            baseline + 1,
            "a pending async receive with a deadline starts the timer"
        );
    }
    drop(held);
    bus.close().unwrap();
    // Joined by close; the kernel may list the ended thread a moment longer.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while threads() != baseline && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(threads(), baseline, "close stops the timer thread");
}

//! Waiting that a test can see: a future polled by hand registers its waker, so "blocked" is
//! a fact, not a sleep that makes it likely, and the wake-up itself is checked.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

/// A waker that remembers being woken (and unparks the thread that polls).
pub struct WakeFlag(AtomicBool, Thread);

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
        self.1.unpark();
    }
}

impl WakeFlag {
    /// Whether it was woken since the last poll.
    pub fn woken(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A future polled by hand with a [`WakeFlag`].
pub struct Polled<F> {
    fut: Pin<Box<F>>,
    flag: Arc<WakeFlag>,
}

impl<F: Future> Polled<F> {
    /// Polls `fut` once and asserts it is pending (registered to be woken): it now waits.
    #[track_caller]
    pub fn waiting(fut: F) -> Self {
        let mut polled = Self {
            fut: Box::pin(fut),
            flag: Arc::new(WakeFlag(AtomicBool::new(false), thread::current())),
        };
        assert!(polled.poll().is_pending(), "expected to wait");
        polled
    }

    fn poll(&mut self) -> Poll<F::Output> {
        self.flag.0.store(false, Ordering::SeqCst);
        let waker = Waker::from(Arc::clone(&self.flag));
        self.fut.as_mut().poll(&mut Context::from_waker(&waker))
    }

    /// Asserts it was woken, then runs it to the end (a durable send still waits for its
    /// commit, woken again by it), within [`WAIT`](super::WAIT); returns the output.
    #[track_caller]
    pub fn woken(mut self) -> F::Output {
        assert!(self.flag.woken(), "the waiter was not woken");
        let deadline = Instant::now() + super::WAIT;
        loop {
            if let Poll::Ready(out) = self.poll() {
                return out;
            }
            while !self.flag.woken() {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "woken, but not done within the deadline");
                thread::park_timeout(left);
            }
        }
    }
}

//! Waiting until the bus is idle: one exact check over every topic and queue, and the blocking
//! and async waits built on it.
//!
//! The check looks at one topic or queue at a time, so on its own it could miss work that
//! moves while it looks (a handler sends to a queue already checked, then acks the one it
//! consumed from, not yet checked). Sends and dead letters bump a counter while a wait is in
//! progress ([`IdleSignal::moved`](super::notify::IdleSignal::moved)); a check that finds
//! everything idle but the counter moved looks again.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use super::Context;
use crate::error::Error;
use crate::options::IdleOptions;

/// Why a check did not find the bus idle, and when to look again without being told.
type Busy = (String, Option<Instant>);

impl Context {
    /// One check: `Ok` when idle (or closed).
    fn check_idle(&self, options: IdleOptions) -> Result<(), Busy> {
        if self.is_closed() {
            return Ok(());
        }
        let before = self.idle.epoch();
        let controls = self.registry.controls();
        if let Some(busy) = controls.iter().find_map(|c| c.busy(options)) {
            let wake = controls
                .iter()
                .filter_map(|c| c.next_deadline())
                .min()
                .and_then(|d| self.clock.wake_at(d));
            return Err((busy, wake));
        }
        if self.idle.epoch() != before {
            return Err(("work moved while checking".to_owned(), Some(Instant::now())));
        }
        Ok(())
    }

    /// Waits until every queue is drained and every group caught up, or `timeout` passes.
    pub(crate) fn wait_idle(&self, timeout: Duration, options: IdleOptions) -> Result<(), Error> {
        let deadline = Instant::now().checked_add(timeout);
        self.idle
            .wait_until(deadline, || self.check_idle(options))
            .map_err(|busy| Error::NotIdle {
                waited: timeout,
                busy,
            })?;
        self.check_open()
    }
}

/// An async wait for idle: the engine side of the facade's future.
pub(crate) struct IdleWait {
    context: Arc<Context>,
    options: IdleOptions,
    timeout: Duration,
    deadline: Option<Instant>,
    id: u64,
    /// Whether this wait is counted in (from its first poll until it ends or is dropped).
    counted: bool,
}

impl IdleWait {
    pub(crate) fn new(context: Arc<Context>, timeout: Duration, options: IdleOptions) -> Self {
        let id = context.next_id();
        Self {
            deadline: Instant::now().checked_add(timeout),
            context,
            options,
            timeout,
            id,
            counted: false,
        }
    }

    pub(crate) fn poll(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        let idle = &self.context.idle;
        if !self.counted {
            idle.count_waiter(true);
            self.counted = true;
        }
        loop {
            let seen = idle.generation();
            let (busy, wake) = match self.context.check_idle(self.options) {
                Ok(()) => return Poll::Ready(self.finish().and(self.context.check_open())),
                Err(busy) => busy,
            };
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                let waited = self.timeout;
                return Poll::Ready(self.finish().and(Err(Error::NotIdle { waited, busy })));
            }
            idle.register_task(self.id, cx.waker());
            if idle.generation() != seen {
                continue; // notified between the check and the registration
            }
            if let Some(at) = wake.into_iter().chain(self.deadline).min() {
                self.context.timer.wake_at(at, self.id, cx.waker());
            }
            return Poll::Pending;
        }
    }

    /// Ends the wait: counted out, nothing registered.
    fn finish(&mut self) -> Result<(), Error> {
        if std::mem::take(&mut self.counted) {
            self.context.idle.count_waiter(false);
            self.context.idle.remove_task(self.id);
            self.context.timer.cancel(self.id);
        }
        Ok(())
    }
}

impl Drop for IdleWait {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

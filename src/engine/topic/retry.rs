//! Retrying a read from the store that failed (a cold read below a partition's in-memory
//! tail): with backoff, waking the waiting thread or task for each attempt, and telling the
//! reader once the failure has lasted.
//!
//! A failed read skips nothing: the reader stays where it was. Each partition keeps its own
//! count (so partitions failing in turn cannot reset each other's). The same partition is tried
//! again after 1 ms, 2 ms, 4 ms, ... (at most [`MAX_DELAY`] apart); a parked thread parks
//! only until then (`Source::wake_at`), a task is woken by the broker's timer. After
//! [`ATTEMPTS`] failures in a row (about half a second) the reader gets the error
//! (`RecvError::Failed`), and its next receive starts over. Reads that fail because the
//! broker is closing are not retried: close wakes every reader, which then ends.

use std::time::{Duration, Instant};

use crate::engine::Context;
use crate::engine::notify::Wait;
use crate::error::{Error, ReadFailure};

/// Failures in a row before the reader is told.
const ATTEMPTS: u32 = 10;
/// The longest pause between two attempts.
const MAX_DELAY: Duration = Duration::from_millis(200);

/// One consumer's failing reads, one per partition at most.
#[derive(Default)]
pub(crate) struct Retry {
    pending: Vec<Pending>,
    /// Whether the broker's timer holds an entry for this consumer.
    timed: bool,
}

#[derive(Clone, Copy)]
struct Pending {
    partition: u32,
    at: Instant,
    failures: u32,
}

impl Retry {
    fn find(&self, partition: u32) -> Option<usize> {
        self.pending.iter().position(|p| p.partition == partition)
    }

    /// Whether a read of `partition` must wait for its next attempt.
    pub(crate) fn waiting(&self, partition: u32) -> bool {
        self.find(partition)
            .is_some_and(|i| Instant::now() < self.pending[i].at)
    }

    /// A read of `partition` succeeded.
    pub(crate) fn succeeded(&mut self, partition: u32) {
        if let Some(i) = self.find(partition) {
            self.pending.swap_remove(i);
        }
    }

    /// A read of `partition` at `offset` failed with `error`: `Some` to tell the reader now,
    /// `None` to try again later (scheduled; or, while closing, when close wakes the reader).
    pub(crate) fn failed(
        &mut self,
        name: &str,
        partition: u32,
        offset: u64,
        error: Error,
    ) -> Option<ReadFailure> {
        if matches!(error, Error::Closed) {
            return None;
        }
        let index = self.find(partition);
        let failures = index.map_or(1, |i| self.pending[i].failures + 1);
        if failures >= ATTEMPTS {
            self.succeeded(partition); // told: the next receive starts over
            return Some(ReadFailure::new(name, partition, offset, error));
        }
        let delay = Duration::from_millis(1 << (failures - 1).min(16)).min(MAX_DELAY);
        let pending = Pending {
            partition,
            at: Instant::now() + delay,
            failures,
        };
        match index {
            Some(i) => self.pending[i] = pending,
            None => self.pending.push(pending),
        }
        None
    }

    /// When the waiting consumer must look again (its earliest retry still to come). A retry
    /// already due is for a partition the last poll did not read (a group member lost it, a
    /// subscriber moved past it): it must not make the consumer wake at once, again and again.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        let now = Instant::now();
        self.pending
            .iter()
            .map(|p| p.at)
            .filter(|&at| at > now)
            .min()
    }

    /// After a poll that found nothing: a task is woken by the timer for the next attempt,
    /// or at `also` if that is earlier (the consumer's own deadline: the timer keeps one
    /// entry per consumer).
    pub(crate) fn arm_with(
        &mut self,
        context: &Context,
        id: u64,
        wait: Wait<'_>,
        also: Option<Instant>,
    ) {
        let at = self.wake_at().into_iter().chain(also).min();
        if let (Wait::Task(waker), Some(at)) = (wait, at) {
            context.timer.wake_at(at, id, waker);
            self.timed = true;
        }
    }

    /// Drops the timer entry (the wait is over).
    pub(crate) fn disarm(&mut self, context: &Context, id: u64) {
        if std::mem::take(&mut self.timed) {
            context.timer.cancel(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a due retry of a partition the consumer no longer reads kept `wake_at` in
    /// the past, so a waiting consumer woke at once, for ever.
    #[test]
    fn a_due_retry_wakes_nobody() {
        let mut retry = Retry::default();
        let error = Error::Storage {
            path: "<test>".into(),
            message: "injected".to_owned(),
        };
        assert!(retry.failed("t", 1, 0, error).is_none());
        let at = retry.wake_at().expect("a retry to come");
        while Instant::now() <= at {
            std::thread::yield_now(); // a condition: the retry's own instant (about 1 ms)
        }
        assert_eq!(retry.wake_at(), None);
        assert!(!retry.waiting(1), "its partition may be read again at once");
    }
}

//! What a queue publishes for lock-free looks: whether anything is ready, and the earliest
//! deadline.

use std::sync::atomic::Ordering;

use super::QueueCore;
use super::state::QueueState;
use crate::record::Nanos;

/// How far behind the published earliest time may fall before it is raised (1 ms): a look
/// may then take the lock for nothing for at most that long before a deadline.
const RAISE_AFTER: Nanos = 1_000_000;

impl<T> QueueCore<T> {
    /// Publishes what lock-free looks need: whether anything is ready, and a time no later than
    /// the earliest ack deadline, due time or expiry; sets the broker's timer for the next due
    /// time or expiry.
    ///
    /// Stores are kept rare, since every other thread's look reads these lines: whether
    /// anything is ready is stored when it changes (not the count, which changes with every
    /// send and delivery), and the earliest time is lowered at once but raised only once it
    /// is [`RAISE_AFTER`] behind (not with every ack), or to "none". A time kept low only
    /// sends a look to the lock, which finds nothing. Every store is under the lock, so a
    /// plain load there sees the last one.
    pub(super) fn publish_hints(&self, state: &mut QueueState<T>) {
        let ready = state.ready_len() > 0;
        if self.ready.load(Ordering::Relaxed) != ready {
            self.ready.store(ready, Ordering::Release);
        }
        let earliest = state.next_deadline().unwrap_or(u64::MAX);
        let earliest = if state.has_timed() {
            self.arm(state);
            earliest.min(state.next_timed().unwrap_or(u64::MAX))
        } else {
            earliest
        };
        let published = self.earliest.load(Ordering::Relaxed);
        if earliest < published || earliest - published >= RAISE_AFTER {
            self.earliest.store(earliest, Ordering::Release);
        }
    }

    /// Whether a lock-free look may skip the lock: nothing is ready, and nothing timed has
    /// passed by the coarse clock ([`Clock::ticks_coarse`](crate::clock::Clock::ticks_coarse):
    /// a deadline may be seen late here, never early). A look that finds nothing does not
    /// park on it: the one that registers to wait takes the lock and reads the precise clock.
    pub(super) fn nothing_to_deliver(&self) -> bool {
        if self.ready.load(Ordering::Acquire) {
            return false;
        }
        let earliest = self.earliest.load(Ordering::Acquire);
        earliest == u64::MAX || self.context.clock.ticks_coarse() < earliest
    }
}

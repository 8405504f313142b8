//! What a queue publishes for lock-free looks (the ready count and the earliest deadline), and
//! [`Padded`], which keeps the atomics every thread writes off each other's cache lines.

use std::ops::Deref;
use std::sync::atomic::Ordering;

use super::QueueCore;
use super::state::QueueState;
use crate::record::Nanos;

/// A value on cache lines of its own (128 bytes: a pair of lines, as adjacent-line prefetch
/// fetches them), so that writing it does not evict the fields next to it from other cores.
#[repr(align(128))]
pub(super) struct Padded<T>(pub(super) T);

impl<T> Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> QueueCore<T> {
    /// Publishes what lock-free looks need: the ready count and the earliest ack deadline, due
    /// time or expiry; sets the broker's timer for the next due time or expiry. Only changed
    /// values are stored (every store is under the lock, so a plain load there sees the last),
    /// so that a look that changed nothing leaves the other threads' cached copies alone.
    pub(super) fn publish_hints(&self, state: &mut QueueState<T>) {
        let ready = state.ready_len();
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
        if self.earliest.load(Ordering::Relaxed) != earliest {
            self.earliest.store(earliest, Ordering::Release);
        }
    }

    /// Whether a lock-free look may skip the lock (nothing ready and nothing timed passed):
    /// `Err` if it may not, with the time if it read the clock, for the look to go on with.
    pub(super) fn nothing_to_deliver(&self) -> Result<(), Option<Nanos>> {
        if self.ready.load(Ordering::Acquire) > 0 {
            return Err(None);
        }
        let earliest = self.earliest.load(Ordering::Acquire);
        if earliest == u64::MAX {
            return Ok(());
        }
        let now = self.context.clock.ticks();
        if now < earliest {
            Ok(())
        } else {
            Err(Some(now))
        }
    }
}

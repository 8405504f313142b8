//! The queues and consumer groups that dead-letter into a queue: their ack timeouts are its
//! arrivals, so looking at it processes theirs.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::QueueCore;
use crate::record::Nanos;

impl<T> QueueCore<T> {
    /// Records that `source` dead-letters into this queue.
    pub(crate) fn add_feeder(&self, source: &Arc<Self>) {
        let mut feeders = self.feeders.lock();
        feeders.retain(|f| f.strong_count() > 0 && !std::ptr::eq(f.as_ptr(), Arc::as_ptr(source)));
        feeders.push(Arc::downgrade(source));
        self.has_feeders.store(true, Ordering::Release);
    }

    /// Records that a consumer group dead-letters into this queue: its messages are parked
    /// dead letters, not work (see `busy`).
    pub(crate) fn add_group_feeder(&self) {
        self.has_feeders.store(true, Ordering::Release);
    }

    fn feeders(&self) -> Vec<Arc<Self>> {
        self.feeders
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Processes the feeders' ack timeouts, so their dead letters arrive here without anyone
    /// looking at the feeders; returns their earliest next deadline.
    pub(super) fn expire_feeders(&self) -> Option<Nanos> {
        if !self.has_feeders.load(Ordering::Acquire) {
            return None;
        }
        let feeders = self.feeders();
        feeders
            .iter()
            .filter_map(|f| f.with_expired(|s| s.next_wake()))
            .min()
    }
}

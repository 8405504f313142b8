//! `Item`: one message in a queue, as the ready list, the waiting list and a delivery hold it.

use std::sync::Arc;

use crate::record::{Entry, Meta, Nanos, Timing};

/// A message waiting in the queue.
pub(crate) struct Item<T> {
    pub(crate) id: u64,
    pub(crate) ts: Nanos,
    pub(crate) entry: Arc<Entry<T>>,
    /// Key and headers that replace the entry's (a dead letter's added headers).
    pub(crate) meta: Option<Arc<Meta>>,
    /// Deliveries so far.
    pub(crate) count: u32,
}

impl<T> Item<T> {
    /// The timing it was sent with, if any (a dead letter's replaced meta has none).
    pub(crate) fn timing(&self) -> Option<Timing> {
        let meta = self.meta.as_deref().or(self.entry.meta.as_deref());
        meta.map(|m| m.timing)
    }
}

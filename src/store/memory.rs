//! `MemoryStore`: persistence that keeps nothing; the in-memory logs are the truth.

use super::{Progress, Store};

/// The store of [`Broker::memory`](crate::Broker::memory).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MemoryStore;

impl Store for MemoryStore {
    fn append(&self, publish: &mut dyn FnMut()) -> Result<(), crate::Error> {
        publish();
        Ok(())
    }

    fn progress(&self, _change: Progress<'_>) {}
}

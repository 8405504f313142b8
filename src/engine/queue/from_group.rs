//! Dead letters from a topic's consumer group: the group hands over a copy of the message
//! (its own log keeps the original), with the dead-letter headers already set.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::QueueCore;
use crate::record::{Entry, Nanos};
use crate::store::Progress;

impl<T> QueueCore<T> {
    /// Accepts a group's dead letter (beyond capacity if need be, like a queue's). `body` is
    /// its encoding for a store that keeps bytes; `position` the group's new position, stored
    /// in the same commit (`(topic, group, partition, offset)`).
    pub(crate) fn push_group_dead_letter(
        &self,
        ts: Nanos,
        entry: Entry<T>,
        body: &[u8],
        position: Option<(&str, &str, u32, u64)>,
    ) {
        let size = entry.size;
        self.occupied.fetch_add(1, Ordering::AcqRel);
        let mut state = self.state.lock();
        let to_id = state.push(ts, Arc::new(entry), None);
        self.context.store.progress(Progress::GroupDeadLetter {
            to: &self.sink,
            to_id,
            body,
            ts,
            size,
            position,
        });
        self.publish_hints(&mut state);
        let woken = state.readers.take();
        drop(state);
        woken.wake();
        self.context.idle.notify();
    }
}

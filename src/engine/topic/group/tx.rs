//! A consumer group's side of a transaction: fencing an ack, and settling it under the
//! commit's locks.

use parking_lot::MutexGuard;

use super::{Group, GroupState};
use crate::engine::notify::Woken;
use crate::engine::topic::{Log, TopicCore};
use crate::store::Progress;

impl<T> Group<T> {
    /// The group's lock, for a transaction's commit (taken before any partition lock).
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock()
    }

    /// Restores the acks transactions made ahead of the position of `partition` (stored):
    /// those offsets are not delivered again.
    pub(crate) fn restore_acked(&self, partition: u32, offsets: impl IntoIterator<Item = u64>) {
        if let Some(part) = self.state.lock().parts.get_mut(partition as usize) {
            part.done.extend(offsets);
        }
    }
}

impl GroupState {
    /// Whether `member` still owns `partition` and holds the `count`-th delivery of `offset`
    /// in it: if not, a transaction acking it is fenced.
    pub(crate) fn holds(&self, member: u64, partition: u32, offset: u64, count: u32) -> bool {
        if self.deleted {
            return false;
        }
        let Some(part) = self.parts.get(partition as usize) else {
            return false;
        };
        part.owner == Some(member)
            && part
                .pending
                .get(&offset)
                .is_some_and(|p| p.holder == Some(member) && p.count == count)
    }

    /// Acks a delivery [`holds`](Self::holds) vouched for, under the commit's locks (the
    /// group's and the partition's); `record` is told of the group's new position, or, if
    /// the position stays before `offset`, of the ack itself: kept, it is never delivered
    /// again, even after a reopen, so the transaction's outputs are not made twice.
    pub(crate) fn ack_held<T>(
        &mut self,
        log: &mut Log<T>,
        topic: &TopicCore<T>,
        group: &str,
        (partition, offset): (u32, u64),
        record: &mut dyn FnMut(Progress<'_>),
    ) -> Woken {
        let part = &mut self.parts[partition as usize];
        part.remove(offset);
        let woken = part.settle_with(log, topic, group, partition, record);
        if part.first_unacked() <= offset {
            part.done.insert(offset);
            record(Progress::GroupAcked {
                topic: &topic.name,
                group,
                partition,
                offset,
            });
        }
        woken
    }
}

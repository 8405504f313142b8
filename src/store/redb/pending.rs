//! Queue progress waiting for the next commit, coalesced outside the writer's line: the
//! delivery counts (the latest per message: a nack storm must not queue one request per
//! delivery) and the acks (a consumer acking each message must not send one request each).
//! The first entry after a commit wakes the writer ([`Request::Pending`]); the writer takes
//! them after it took its batch, so a commit holds every entry made before any request it
//! holds, but no ack made after a request it does not hold (a batch stops at its limit). It
//! writes the counts before the batch's own requests (an ack or a dead letter in
//! the batch removes a count) and the acks after them: an ack may be of a message that a
//! request of the same batch moved into the queue (a redriven dead letter is visible at once).
//!
//! [`Request::Pending`]: super::request::Request::Pending

use std::collections::HashMap;
use std::sync::Arc;

use redb::WriteTransaction;

use super::schema::{deliveries, records, seal_count};
use crate::store::Sink;

/// Where a message's entries are kept: its queue's sink (by address: the entry holds the sink,
/// so the address is not reused meanwhile) and its id.
type Key = (usize, u64);

fn key(queue: &Arc<dyn Sink>, id: u64) -> Key {
    (Arc::as_ptr(queue).cast::<()>() as usize, id)
}

/// Delivery counts and acks not yet written.
#[derive(Default)]
pub(super) struct Pending {
    counts: HashMap<Key, (Arc<dyn Sink>, u32)>,
    /// With the last request number handed out when each was made: every request its message
    /// depends on (the move that put it in this queue) is numbered at most that.
    acks: Vec<(Key, Arc<dyn Sink>, u64)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.acks.is_empty()
    }

    /// Keeps message `id`'s delivery count; returns whether the writer must be woken.
    pub(super) fn count(&mut self, queue: &Arc<dyn Sink>, id: u64, count: u32) -> bool {
        let first = self.is_empty();
        self.counts
            .insert(key(queue, id), (Arc::clone(queue), count));
        first
    }

    /// Keeps message `id`'s ack (which deletes its row and its count), made when `seq` was the
    /// last request number handed out; returns whether the writer must be woken.
    pub(super) fn ack(&mut self, queue: &Arc<dyn Sink>, id: u64, seq: u64) -> bool {
        let first = self.is_empty();
        self.forget(queue, id);
        self.acks.push((key(queue, id), Arc::clone(queue), seq));
        first
    }

    /// Takes everything for the commit of the requests numbered up to `seq`, but the acks made
    /// after a later request (the batch stopped at its limit): such an ack may be of a message
    /// that request moves into its queue, so it waits for the commit that holds the request.
    pub(super) fn take_upto(&mut self, seq: u64) -> Self {
        let (now, later) = std::mem::take(&mut self.acks)
            .into_iter()
            .partition(|(_, _, made)| *made <= seq);
        self.acks = later;
        Self {
            counts: std::mem::take(&mut self.counts),
            acks: now,
        }
    }

    /// Drops message `id`'s waiting count (it leaves the queue).
    pub(super) fn forget(&mut self, queue: &Arc<dyn Sink>, id: u64) {
        self.counts.remove(&key(queue, id));
    }

    /// Writes the counts in `txn`, skipping the queues `deleted` says are; returns the acks,
    /// to write after the batch.
    pub(super) fn write_counts(
        self,
        txn: &WriteTransaction,
        deleted: impl Fn(&Arc<dyn Sink>) -> bool,
    ) -> Result<Acks, redb::Error> {
        let mut counts: Vec<_> = self.counts.into_iter().collect();
        counts.sort_unstable_by_key(|(key, _)| *key);
        for run in counts.chunk_by(|a, b| a.0.0 == b.0.0) {
            let queue = &run[0].1.0;
            if deleted(queue) {
                continue; // a deleted queue's consumer still at work
            }
            let name = queue.log().counts_table();
            let mut table = txn.open_table(deliveries(name))?;
            for ((_, id), (_, count)) in run {
                table.insert(*id, seal_count(name, *id, *count).as_slice())?;
            }
        }
        Ok(Acks(self.acks))
    }
}

/// Acks taken with the counts, written after the batch ([`Pending::write_counts`]).
pub(super) struct Acks(Vec<(Key, Arc<dyn Sink>, u64)>);

impl Acks {
    /// Deletes each acked message's row and count in `txn`, skipping the queues `deleted` says
    /// are.
    pub(super) fn write(
        self,
        txn: &WriteTransaction,
        deleted: impl Fn(&Arc<dyn Sink>) -> bool,
    ) -> Result<(), redb::Error> {
        let mut acks = self.0;
        acks.sort_unstable_by_key(|(key, _, _)| *key);
        for run in acks.chunk_by(|a, b| a.0.0 == b.0.0) {
            let queue = &run[0].1;
            if deleted(queue) {
                continue;
            }
            let log = queue.log();
            let mut rows = txn.open_table(records(log.table()))?;
            let mut counts = txn.open_table(deliveries(log.counts_table()))?;
            for ((_, id), _, _) in run {
                rows.remove(*id)?;
                counts.remove(*id)?;
            }
        }
        Ok(())
    }
}

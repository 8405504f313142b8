//! Sends to a queue, with or without a dedupe window: the window's ids are locked before the
//! queue's state and held across the send ([`dedupe`](crate::engine::dedupe) has the order).

use parking_lot::{Mutex, MutexGuard};

use super::QueueCore;
use crate::engine::dedupe::{self, Ids};
use crate::engine::notify::{Deadline, Wait};
use crate::engine::{Context, Fail, Sent};
use crate::error::Error;
use crate::options::Dedupe;
use crate::record::{Payload, Receipt, Record};
use crate::store::LogId;

/// The dedupe window of the queue of `log`, with the ids a durable store kept (`None`
/// without one).
pub(super) fn restore(
    log: &LogId,
    window: Option<Dedupe>,
    context: &Context,
) -> Result<Option<Mutex<Ids>>, Error> {
    let Some(window) = window else {
        return Ok(None);
    };
    let mut ids = Ids::new(window, context.store.reads_back());
    ids.restore(context.store.message_ids(log)?, context.clock.now());
    Ok(Some(Mutex::new(ids)))
}

impl<T: Payload> QueueCore<T> {
    /// The record's message id, checked; `Some` only under a dedupe window (else it is only
    /// carried, and a record without one never takes the window's lock).
    fn send_id(&self, record: &Record<T>) -> Result<Option<Box<str>>, Error> {
        let id = dedupe::id_of(record, &self.name)?;
        Ok(id.filter(|_| self.dedupe.is_some()).map(Into::into))
    }

    /// Stores and enqueues one record, waiting for capacity until `deadline`; a duplicate
    /// within the dedupe window stores nothing and returns the original receipt.
    pub(crate) fn publish(
        &self,
        record: Record<T>,
        deadline: Deadline,
    ) -> Result<Receipt, (Record<T>, Fail)> {
        let id = match self.send_id(&record) {
            Ok(Some(id)) => id,
            Ok(None) => return self.publish_with(record, deadline, None),
            Err(e) => return Err((record, Fail::Failed(e))),
        };
        let Some(mut ids) = self.dedupe() else {
            return self.publish_with(record, deadline, None);
        };
        let now = self.context.clock.now();
        if self.is_shut() {
            return Err((record, self.closed())); // a duplicate is no way around a close
        }
        if let Some(receipt) = ids.seen(&id, now) {
            return Ok(receipt);
        }
        let receipt = self.publish_with(record, deadline, Some(&mut ids))?;
        ids.remember(id, receipt, now);
        Ok(receipt)
    }

    /// Stores and enqueues records in order, waiting for capacity for each; on failure hands
    /// back the records not sent. Under a dedupe window, duplicates (of earlier sends or
    /// within the batch) store nothing and get the original receipt.
    pub(crate) fn publish_batch(
        &self,
        records: Vec<Record<T>>,
    ) -> Result<Vec<Receipt>, (Vec<Record<T>>, Fail)> {
        if let Some(e) = records
            .iter()
            .find_map(|r| dedupe::id_of(r, &self.name).err())
        {
            return Err((records, Fail::Failed(e)));
        }
        let Some(mut ids) = self
            .dedupe
            .as_ref()
            .filter(|_| records.iter().any(|r| r.message_id().is_some()))
            .map(|ids| ids.lock())
        else {
            return self.publish_batch_with(records, None);
        };
        if self.is_shut() {
            return Err((records, self.closed()));
        }
        let now = self.context.clock.now();
        let mut split = match dedupe::split(&mut ids, records, now, &self.name) {
            Ok(split) => split,
            Err((records, e)) => return Err((records, Fail::Failed(e))),
        };
        let fresh = std::mem::take(&mut split.fresh);
        if fresh.is_empty() {
            return Ok(split.receipts(&[], &mut ids, now));
        }
        match self.publish_batch_with(fresh, Some(&mut ids)) {
            Ok(stored) => Ok(split.receipts(&stored, &mut ids, now)),
            Err((unsent, fail)) => Err((split.unsent(unsent), fail)),
        }
    }

    /// One attempt to enqueue (`send_async`); on [`Fail::Full`] registers waiter `id` as
    /// `wait` says. A durable store's commit is not waited for (poll the ticket): under a
    /// dedupe window the id is remembered at once, and forgotten again by
    /// [`take_back`](Self::take_back) if the commit fails.
    pub(crate) fn try_publish(
        &self,
        record: Record<T>,
        id: u64,
        wait: Wait<'_>,
    ) -> Result<Sent, (Record<T>, Fail)> {
        let message_id = match self.send_id(&record) {
            Ok(Some(message_id)) => message_id,
            Ok(None) => return self.try_publish_with(record, id, wait, None),
            Err(e) => return Err((record, Fail::Failed(e))),
        };
        let Some(mut ids) = self.dedupe() else {
            return self.try_publish_with(record, id, wait, None);
        };
        let now = self.context.clock.now();
        if self.is_shut() {
            return Err((record, self.closed()));
        }
        if let Some(receipt) = ids.seen(&message_id, now) {
            return Ok((receipt, None));
        }
        let sent = self.try_publish_with(record, id, wait, Some(&mut ids))?;
        ids.remember(message_id, sent.0, now);
        Ok(sent)
    }
}

impl<T> QueueCore<T> {
    /// The dedupe window's ids, locked; `None` if the queue has no window. Take it before the
    /// state lock and hold it across the send (see [`dedupe`](crate::engine::dedupe)).
    pub(crate) fn dedupe(&self) -> Option<MutexGuard<'_, Ids>> {
        self.dedupe.as_ref().map(|ids| ids.lock())
    }
}

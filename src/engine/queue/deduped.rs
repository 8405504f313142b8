//! Sends to a queue, with or without a dedupe window: the window's ids are locked before the
//! queue's state, while the record is checked and staged, and let go before any wait
//! ([`dedupe`](crate::engine::dedupe) has the order).

use std::sync::atomic::Ordering;

use parking_lot::{Mutex, MutexGuard};

use super::QueueCore;
use crate::engine::dedupe::{self, Deduped, Ids, Step};
use crate::engine::notify::{Deadline, Wait};
use crate::engine::{Context, Fail, Sent};
use crate::error::Error;
use crate::options::Dedupe;
use crate::record::{Payload, Receipt, Record};
use crate::store::{Commit, LogId};

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
        match self.send_id(&record) {
            Ok(Some(id)) => dedupe::send(self, Some(&id), record, deadline),
            Ok(None) => self.publish_with(record, deadline),
            Err(e) => Err((record, Fail::Failed(e))),
        }
    }

    /// Stores and enqueues records in order, waiting for capacity for each; on failure hands
    /// back the records not sent. Under a dedupe window, duplicates (of earlier sends or
    /// within the batch) store nothing and get the original receipt (and the records are
    /// staged one by one, sharing one commit).
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
        match &self.dedupe {
            Some(_) if records.iter().any(|r| r.message_id().is_some()) => {
                dedupe::send_batch(self, records, &self.name)
            }
            _ => self.publish_batch_with(records),
        }
    }

    /// One attempt to enqueue (`send_async`); on [`Fail::Full`] registers waiter `id` as
    /// `wait` says. A durable store's commit is not waited for (poll the ticket): under a
    /// dedupe window the id is remembered with the ticket at once (registering a waiter does
    /// not wait), and forgotten again by [`take_back`](Self::take_back) if the commit fails.
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
        if let Some(original) = ids.seen(&message_id, now) {
            return Ok((original.receipt, None));
        }
        let sent = self.try_publish_with(record, id, wait, Some(&mut ids))?;
        ids.remember(message_id, sent.0, now, sent.1);
        Ok(sent)
    }

    /// Gives back capacity reserved for a record that is not sent after all (`reserved`),
    /// waking a producer waiting for it.
    fn unreserve(&self, reserved: &mut bool) {
        if std::mem::take(reserved) {
            self.occupied.fetch_sub(1, Ordering::AcqRel);
            self.state.lock().writers.take().wake();
        }
    }
}

impl<T: Payload> Deduped<T> for QueueCore<T> {
    /// Whether the record's capacity is reserved.
    type Slot = bool;

    fn slot(&self, _record: &Record<T>) -> bool {
        false
    }

    fn step(
        &self,
        id: Option<&str>,
        record: Record<T>,
        reserved: &mut bool,
    ) -> Result<Step<T>, (Record<T>, Fail)> {
        let mut ids = id.and(self.dedupe());
        let now = self.context.clock.now();
        if self.is_shut() {
            self.unreserve(reserved);
            return Err((record, self.closed())); // a duplicate is no way around a close
        }
        if let (Some(ids), Some(id)) = (ids.as_mut(), id)
            && let Some(original) = ids.seen(id, now)
        {
            self.unreserve(reserved);
            return Ok(Step::Duplicate(original, record));
        }
        if !*reserved && !self.reserve() {
            return Ok(Step::Full(record));
        }
        // The append takes the reservation over (and gives it back if it fails).
        *reserved = false;
        let (receipt, commit) = self.append(record, Commit::Staged, ids.as_deref_mut())?;
        if let (Some(ids), Some(id)) = (ids.as_mut(), id) {
            ids.remember(id.into(), receipt, now, commit);
        }
        let wake = ids.is_some_and(|ids| ids.room_waiters > 0);
        if wake {
            self.wake_room_waiters();
        }
        Ok(Step::Staged(receipt, commit))
    }

    fn await_room(
        &self,
        reserved: &mut bool,
        deadline: Deadline,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), Fail> {
        if !*reserved {
            *reserved = self.wait_for_room_or(deadline, stop)?;
        }
        Ok(())
    }

    fn window(&self) -> Option<MutexGuard<'_, Ids>> {
        self.dedupe()
    }

    fn take_staged(&self, receipt: Receipt) -> Option<Record<T>> {
        self.take_back(receipt)
    }

    fn context(&self) -> &Context {
        &self.context
    }
}

impl<T> QueueCore<T> {
    /// The dedupe window's ids, locked; `None` if the queue has no window. Take it before the
    /// state lock, and never hold it across a wait (see [`dedupe`](crate::engine::dedupe)).
    pub(crate) fn dedupe(&self) -> Option<MutexGuard<'_, Ids>> {
        self.dedupe.as_ref().map(|ids| ids.lock())
    }

    /// Wakes the producers waiting for room in this queue, so that one whose message id was
    /// just stored looks again (see [`dedupe`](crate::engine::dedupe)).
    pub(crate) fn wake_room_waiters(&self) {
        let woken = self.state.lock().writers.take();
        woken.wake();
    }
}

//! Where a send to a topic starts: its message id is checked and, under a dedupe window, the
//! window's ids are locked before any partition, while the record is checked and staged, and
//! let go before any wait ([`dedupe`](crate::engine::dedupe) has the order); and the `send`
//! event of every send that stored a message.

use parking_lot::{Mutex, MutexGuard};

use super::TopicCore;
use crate::engine::dedupe::{self, Deduped, Ids, Step};
use crate::engine::notify::{Deadline, Wait};
use crate::engine::{Context, Fail, Sent};
use crate::error::Error;
use crate::options::Dedupe;
use crate::record::{Payload, Receipt, Record};
use crate::store::{Commit, LogId};

/// The dedupe window of topic `name`, with the ids a durable store kept (`None` without one).
pub(super) fn restore(
    name: &str,
    window: Option<Dedupe>,
    context: &Context,
) -> Result<Option<Mutex<Ids>>, Error> {
    let Some(window) = window else {
        return Ok(None);
    };
    let mut ids = Ids::new(window, context.store.reads_back());
    // The partitions share one table: any partition's log names it.
    let stored = context.store.message_ids(&LogId::partition(name, 0))?;
    ids.restore(stored, context.clock.now());
    Ok(Some(Mutex::new(ids)))
}

impl<T: Payload> TopicCore<T> {
    /// Stores and publishes one record, waiting for room (under `Block`) until `deadline`; a
    /// duplicate within the dedupe window stores nothing and returns the original receipt.
    pub(crate) fn publish(
        &self,
        record: Record<T>,
        deadline: Deadline,
    ) -> Result<Receipt, (Record<T>, Fail)> {
        match self.send_id(&record) {
            Ok(None) => self.publish_with(record, deadline),
            Ok(Some(id)) => dedupe::send(self, Some(&id), record, deadline),
            Err(e) => Err((record, Fail::Failed(e))),
        }
    }

    /// Stores and publishes a batch: per partition, one store call, one lock and one clock read
    /// for as many records as have room; waits for room (under `Block`) like `publish`. On
    /// failure, hands back the records not sent, in input order. Under a dedupe window,
    /// duplicates (of earlier sends or within the batch) store nothing and get the original
    /// receipt (and the records are staged one by one, sharing one commit).
    pub(crate) fn publish_batch(
        &self,
        records: Vec<Record<T>>,
    ) -> Result<Vec<Receipt>, (Vec<Record<T>>, Fail)> {
        match &self.dedupe {
            Some(_) if records.iter().any(|r| r.message_id().is_some()) => {
                dedupe::send_batch(self, records, &self.name)
            }
            _ => self.publish_batch_with(records),
        }
    }

    /// One attempt to publish to `partition`; on [`Fail::Full`] registers waiter `id` as `wait`
    /// says (re-checking under the lock, so no wakeup is lost). For `send_async`: a durable
    /// store's commit is not waited for (poll the ticket).
    pub(crate) fn try_publish(
        &self,
        partition: u32,
        record: Record<T>,
        id: u64,
        wait: Wait<'_>,
    ) -> Result<Sent, (Record<T>, Fail)> {
        match self.send_id(&record) {
            Ok(None) => self.try_publish_with(partition, record, id, wait, None),
            Ok(Some(message_id)) => {
                self.try_publish_deduped(message_id, partition, record, id, wait)
            }
            Err(e) => Err((record, Fail::Failed(e))),
        }
    }

    /// The record's message id, checked; `Some` only under a dedupe window (else it is only
    /// carried, and a record without one never takes the window's lock).
    pub(super) fn send_id(&self, record: &Record<T>) -> Result<Option<Box<str>>, Error> {
        let id = dedupe::id_of(record, &self.name)?;
        Ok(id.filter(|_| self.dedupe.is_some()).map(Into::into))
    }

    /// [`try_publish`](Self::try_publish) of a record with message id `message_id`, under the
    /// window's lock (registering a waiter does not wait). A durable store's commit is not
    /// waited for: the id is remembered with the ticket at once (and forgotten again by
    /// [`take_back`](Self::take_back) if the commit fails).
    pub(super) fn try_publish_deduped(
        &self,
        message_id: Box<str>,
        partition: u32,
        record: Record<T>,
        id: u64,
        wait: Wait<'_>,
    ) -> Result<Sent, (Record<T>, Fail)> {
        let Some(mut ids) = self.dedupe() else {
            return self.try_publish_with(partition, record, id, wait, None);
        };
        let now = self.context.clock.now();
        if self.ended_for_sends() {
            return Err((record, self.closed()));
        }
        if let Some(original) = ids.seen(&message_id, now) {
            return Ok((original.receipt, None));
        }
        let sent = self.try_publish_with(partition, record, id, wait, Some(&mut ids))?;
        ids.remember(message_id, sent.0, now, sent.1);
        let wake = ids.room_waiters > 0;
        drop(ids);
        if wake {
            self.wake_room_waiters();
        }
        Ok(sent)
    }

    /// Wakes every producer waiting for room in this topic, so that one whose message id was
    /// just stored looks again (see [`dedupe`](crate::engine::dedupe)).
    pub(crate) fn wake_room_waiters(&self) {
        for part in self.partitions.iter() {
            let woken = part.lock().take_writers();
            woken.wake();
        }
    }
}

impl<T: Payload> Deduped<T> for TopicCore<T> {
    /// The partition and the counted size.
    type Slot = (u32, u32);

    fn slot(&self, record: &Record<T>) -> (u32, u32) {
        (self.pick_partition(record.key_ref()), self.size_of(record))
    }

    fn step(
        &self,
        id: Option<&str>,
        record: Record<T>,
        &mut (partition, size): &mut (u32, u32),
    ) -> Result<Step<T>, (Record<T>, Fail)> {
        let staged = |sent: Result<Sent, (Record<T>, Fail)>| match sent {
            Ok((receipt, commit)) => Ok(Step::Staged(receipt, commit)),
            Err((record, Fail::Full)) => Ok(Step::Full(record)),
            Err(failed) => Err(failed),
        };
        let (Some(id), Some(window)) = (id, &self.dedupe) else {
            return staged(self.publish_once(partition, record, size, Commit::Staged, None));
        };
        let mut ids = window.lock();
        let now = self.context.clock.now();
        if self.ended_for_sends() {
            return Err((record, self.closed())); // a duplicate is no way around a close
        }
        if let Some(original) = ids.seen(id, now) {
            return Ok(Step::Duplicate(original, record));
        }
        let sent = self.publish_once(partition, record, size, Commit::Staged, Some(&mut ids));
        if let Ok((receipt, commit)) = sent {
            ids.remember(id.into(), receipt, now, commit);
        }
        let wake = ids.room_waiters > 0;
        drop(ids);
        if wake {
            self.wake_room_waiters();
        }
        staged(sent)
    }

    fn await_room(
        &self,
        &mut (partition, size): &mut (u32, u32),
        deadline: Deadline,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), Fail> {
        self.wait_for_room_or(partition, size, deadline, stop)
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

crate::observe::traced! {
    impl<T> TopicCore<T> {
        /// Emits the `send` event of a message stored at `partition`, `offset`.
        pub(super) fn trace_send(&self, partition: u32, offset: u64) {
            let topic = self.name.as_str();
            crate::observe::event!("embus::topic", TRACE, topic, partition, offset, "send");
        }
    }
}

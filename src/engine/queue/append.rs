//! A send to a queue: waiting for capacity, and the send as the store sees it (one record, or
//! a run of records for `send_batch`).

use std::sync::Arc;

use parking_lot::MutexGuard;

use super::state::QueueState;
use super::{QueueCore, Room};
use crate::engine::Fail;
use crate::engine::dedupe::Ids;
use crate::engine::notify::{Backoff, Deadline, Wait};
use crate::error::Error;
use crate::record::{Entry, Nanos, Payload};
use crate::store::{Append, IdRow, Stager};

/// One record to a queue, as the store sees it.
pub(super) struct QueueJob<'a, T> {
    pub(super) queue: &'a QueueCore<T>,
    /// The entry, until published or staged (and again if handed back).
    pub(super) entry: Option<Arc<Entry<T>>>,
    pub(super) id: Option<u64>,
    /// The dedupe window's ids, locked, if the record has an id.
    pub(super) dedupe: Option<&'a mut Ids>,
}

/// A run of records to a queue (`send_batch` without message ids), as the store sees it: all
/// or nothing.
pub(super) struct QueueRunJob<'a, T> {
    pub(super) queue: &'a QueueCore<T>,
    /// The entries, until published or staged (and again if handed back).
    pub(super) entries: Vec<Arc<Entry<T>>>,
    pub(super) ids: Vec<u64>,
}

impl<T: Payload> Append for QueueRunJob<'_, T> {
    fn publish(&mut self) {
        let queue = self.queue;
        let entries = &self.entries;
        let exact = || entries.iter().any(|e| e.counts_from_stamp());
        let Some((now, mut state)) = queue.lock_open(exact) else {
            return;
        };
        let ids = self.entries.drain(..).map(|e| state.push(now, e, None));
        let ids: Vec<u64> = ids.collect();
        queue.publish_hints(&mut state);
        let woken = state.readers.take();
        drop(state);
        woken.wake();
        self.ids = ids;
    }

    fn encode(&mut self) -> Result<Vec<Vec<u8>>, Error> {
        let coder = &self.queue.coder;
        self.entries.iter().map(|e| coder.encode_entry(e)).collect()
    }

    fn stage(&mut self, stager: &mut dyn Stager) {
        let queue = self.queue;
        let entries = &self.entries;
        let exact = || entries.iter().any(|e| e.counts_from_stamp());
        let Some((now, mut state)) = queue.lock_open(exact) else {
            return;
        };
        let mut ids = Vec::with_capacity(self.entries.len());
        for entry in std::mem::take(&mut self.entries) {
            let id = state.stage(now, entry);
            stager.record(&queue.sink, id, now, 0, None);
            ids.push(id);
        }
        stager.end();
        drop(state);
        self.ids = ids;
    }

    fn unstage(&mut self) {
        let mut state = self.queue.state.lock();
        for id in self.ids.drain(..) {
            if let Some(entry) = state.unstage(id) {
                self.entries.push(entry);
            }
        }
    }
}

impl<T> QueueCore<T> {
    /// Waits until a unit of capacity is reserved for a send, or `deadline` passes.
    pub(super) fn wait_for_room(&self, deadline: Deadline) -> Result<(), Fail> {
        self.wait_for_room_or(deadline, &|| false).map(|_| ())
    }

    /// As [`wait_for_room`](Self::wait_for_room) (`Ok(true)`: capacity reserved), but returns
    /// `Ok(false)` (nothing reserved, look again) as soon as `stop` says so, asked each time
    /// the waiter is registered, before it parks.
    pub(super) fn wait_for_room_or(
        &self,
        deadline: Deadline,
        stop: &dyn Fn() -> bool,
    ) -> Result<bool, Fail> {
        let mut id = None;
        let mut backoff = Backoff::new();
        let result = loop {
            if self.is_shut() {
                break Err(self.closed());
            }
            if self.reserve() {
                break Ok(true);
            }
            if deadline.passed() {
                break Err(Fail::Full);
            }
            if backoff.snooze() {
                continue; // consumers usually ack within a few yields
            }
            let waiter = *id.get_or_insert_with(|| self.context.next_id());
            match self.register_writer(waiter, Wait::Thread) {
                Room::Reserved => return Ok(true),
                Room::Closed => return Err(self.closed()),
                Room::Registered if stop() => break Ok(false),
                Room::Registered => deadline.park(None),
            }
        };
        if let Some(waiter) = id {
            self.forget_writer(waiter);
        }
        result
    }

    /// The stamp for new messages (precise if the queue has a time-to-live or `exact` says
    /// something of one of them counts from it; asked only of coarse stamps) and the queue's
    /// lock, unless the broker is closed: checked under the lock that close's wake-up takes, so a consumer's last look
    /// after close sees every message that returned a receipt.
    fn lock_open(
        &self,
        exact: impl FnOnce() -> bool,
    ) -> Option<(Nanos, MutexGuard<'_, QueueState<T>>)> {
        let ttl = self.options.message_ttl_duration().is_some();
        let now = self.context.clock.stamp(|| ttl || exact());
        let state = self.state.lock();
        (!self.is_shut()).then_some((now, state))
    }
}

impl<T: Payload> Append for QueueJob<'_, T> {
    fn publish(&mut self) {
        let queue = self.queue;
        let entry = &self.entry;
        let exact = || entry.as_ref().is_some_and(|e| e.counts_from_stamp());
        let Some((now, mut state)) = queue.lock_open(exact) else {
            return;
        };
        let Some(entry) = self.entry.take() else {
            return;
        };
        self.id = Some(state.push(now, entry, None));
        queue.publish_hints(&mut state);
        let woken = state.readers.take();
        drop(state);
        woken.wake();
    }

    fn encode(&mut self) -> Result<Vec<Vec<u8>>, Error> {
        let body = self
            .entry
            .as_ref()
            .map(|e| self.queue.coder.encode_entry(e));
        body.into_iter().collect()
    }

    fn stage(&mut self, stager: &mut dyn Stager) {
        let queue = self.queue;
        let entry = &self.entry;
        let exact = || entry.as_ref().is_some_and(|e| e.counts_from_stamp());
        let Some((now, mut state)) = queue.lock_open(exact) else {
            return;
        };
        let Some(entry) = self.entry.take() else {
            return;
        };
        let row = message_row(self.dedupe.as_deref_mut(), &entry);
        let id = state.stage(now, entry);
        stager.record(&queue.sink, id, now, 0, row);
        self.id = Some(id);
        stager.end();
    }

    fn unstage(&mut self) {
        if let Some(id) = self.id.take() {
            self.entry = self.queue.state.lock().unstage(id);
        }
    }
}

/// The message id row a durable store writes with `entry` (dedupe), if it has an id.
fn message_row<T>(dedupe: Option<&mut Ids>, entry: &Entry<T>) -> Option<IdRow> {
    dedupe?.row(entry.message_id()?, 0)
}

//! A queue's share of a transaction ([`QueuePart`]): records for it, and acks of its
//! messages.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::state::{Item, QueueState, Reason};
use super::{QueueCore, unshared};
use crate::engine::Delivery;
use crate::engine::Fail;
use crate::engine::dedupe::{self, Ids};
use crate::engine::notify::Woken;
use crate::engine::tx::{
    self, Guard, Held, LockKey, Lockable, Part, Pending, Rank, TxCore, WindowLock, address,
};
use crate::error::Error;
use crate::record::{Entry, Nanos, Payload, Receipt, Record};
use crate::store::{Progress, Ticket, TxLog, TxRecord};

/// A queue's share of a transaction.
pub(crate) struct QueuePart<T> {
    queue: Arc<QueueCore<T>>,
    records: Vec<Pending<Arc<Entry<T>>>>,
    /// Deliveries to ack.
    acks: Vec<Delivery<T>>,
    /// Capacity units taken for the staged records, until they are applied.
    reserved: usize,
    /// What the commit wakes and moves on (dead letters of timed-out deliveries), once
    /// unlocked.
    woken: Woken,
    dead: Vec<(Item<T>, Reason)>,
    /// When it was staged (the dedupe window's clock).
    now: Nanos,
    /// The latest commit, still pending when staged, of an original that a duplicate among
    /// the records stands for.
    originals: Option<Ticket>,
    /// Whether a send with an id waits for room in the target: the commit wakes it, in case
    /// the id is one the commit stores.
    wake_room: bool,
}

impl<T: Payload> QueueCore<T> {
    /// Adds `record` to transaction `tx` (not sent before the commit): refused as a send would
    /// be (deleted queue, a payload that does not encode), handing it back.
    pub(crate) fn tx_send(
        self: &Arc<Self>,
        tx: &mut TxCore,
        record: Record<T>,
    ) -> Result<(), (Record<T>, Fail)> {
        if self.is_shut() {
            return Err((record, self.closed()));
        }
        let id = match dedupe::id_of(&record, &self.name) {
            Ok(id) => self.dedupe.as_ref().and(id).map(Box::from),
            Err(e) => return Err((record, Fail::Failed(e))),
        };
        let entry = Arc::new(Entry::new(record, 0));
        let body = if self.context.store.reads_back() {
            match self.coder.encode_entry(&entry) {
                Ok(body) => Some(body),
                Err(e) => return Err((unshared(entry), Fail::Failed(e))),
            }
        } else {
            None
        };
        let index = tx.sends;
        tx.sends += 1;
        let part = tx.part(address(self), || QueuePart::new(self));
        part.records.push(Pending {
            index,
            partition: 0,
            entry: Some(entry),
            body,
            staged: None,
            size: 0,
            id,
            duplicate: None,
        });
        Ok(())
    }

    /// Adds the ack of queue delivery `delivery` to transaction `tx`.
    pub(crate) fn tx_ack(self: &Arc<Self>, tx: &mut TxCore, delivery: Delivery<T>) {
        let part = tx.part(address(self), || QueuePart::new(self));
        part.acks.push(delivery);
    }
}

impl<T: Payload> QueuePart<T> {
    fn new(queue: &Arc<QueueCore<T>>) -> Self {
        Self {
            queue: Arc::clone(queue),
            records: Vec::new(),
            acks: Vec::new(),
            reserved: 0,
            woken: Woken::none(),
            dead: Vec::new(),
            now: 0,
            originals: None,
            wake_room: false,
        }
    }

    fn key(&self) -> LockKey {
        (Rank::Queue, address(&self.queue), 0)
    }

    fn dedupe_key(&self) -> LockKey {
        (Rank::Dedupe, address(&self.queue), 0)
    }

    /// The records not committed, with their send numbers (the transaction hands them back).
    pub(crate) fn take_records(&mut self, out: &mut Vec<(usize, Record<T>)>) {
        tx::take_records(&mut self.records, out, unshared);
    }

    /// Why the queue refuses records: deleted, or the broker closed.
    fn shut(&self) -> Error {
        match self.queue.check_live() {
            Err(e) => e,
            Ok(()) => Error::Closed,
        }
    }
}

/// A queue's lock.
struct QueueLock<T> {
    queue: Arc<QueueCore<T>>,
}

impl<T: Payload> Lockable for QueueLock<T> {
    fn key(&self) -> LockKey {
        (Rank::Queue, address(&self.queue), 0)
    }

    fn lock(&self) -> Box<dyn Guard + '_> {
        Box::new(self.queue.state.lock())
    }
}

impl<T: Payload> Part for QueuePart<T> {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn target(&self) -> usize {
        address(&self.queue)
    }

    fn locks(&self, out: &mut Vec<Box<dyn Lockable>>) {
        if self.records.iter().any(|r| r.id.is_some()) {
            out.push(Box::new(WindowLock::new(&self.queue, QueueCore::dedupe)));
        }
        out.push(Box::new(QueueLock {
            queue: Arc::clone(&self.queue),
        }));
    }

    fn stage(&mut self, held: &mut Held<'_>, now: Nanos) -> Result<(), Error> {
        if self.records.is_empty() {
            return Ok(());
        }
        // Under the lock close's wake-up takes, as a send checks (see `lock_open`).
        if self.queue.is_shut() {
            return Err(self.shut());
        }
        self.now = now;
        self.originals = None;
        for at in 0..self.records.len() {
            let key = self.dedupe_key();
            let now = self.now;
            let window = |id: &str| held.get::<Ids>(key).seen(id, now);
            if let Some(original) = tx::duplicate_of(&self.records, at, window) {
                self.records[at].duplicate = Some(original.receipt);
                self.originals = self.originals.max(original.commit);
                continue;
            }
            if !self.queue.reserve() {
                self.retract(held);
                return Err(Error::Full {
                    name: self.queue.name.clone(),
                });
            }
            self.reserved += 1;
            let state: &mut QueueState<T> = held.get(self.key());
            let record = &mut self.records[at];
            if let Some(entry) = record.entry.take() {
                record.staged = Some((state.stage(now, entry), now));
            }
        }
        Ok(())
    }

    fn retract(&mut self, held: &mut Held<'_>) {
        let key = self.key();
        let state: &mut QueueState<T> = held.get(key);
        for record in self.records.iter_mut().rev() {
            record.duplicate = None;
            if let Some((id, _)) = record.staged.take() {
                record.entry = state.retract(id);
            }
        }
        if self.reserved > 0 {
            self.queue
                .occupied
                .fetch_sub(self.reserved, Ordering::AcqRel);
            self.reserved = 0;
            // A producer may have found no room meanwhile.
            self.woken.join(state.writers.take());
        }
    }

    fn check_acks(&mut self, held: &mut Held<'_>) -> Result<(), Error> {
        if self.acks.is_empty() {
            return Ok(());
        }
        let key = self.key();
        let state: &mut QueueState<T> = held.get(key);
        // A delivery whose timeout passed is no longer acked, even if nobody looked yet.
        let (dead, woken) = self.queue.expire(state, self.queue.timed_now());
        self.dead.extend(dead);
        self.woken.join(woken);
        for delivery in &self.acks {
            let Some(ack) = delivery.queue_ack() else {
                continue;
            };
            if let Err(why) = state.check(ack.delivery) {
                return Err(ack.ended(why, delivery.offset()));
            }
        }
        Ok(())
    }

    fn apply(&mut self, held: &mut Held<'_>, mut log: Option<&mut dyn TxLog>) {
        let mut upto = None;
        for at in 0..self.records.len() {
            let Some((key, ts)) = self.records[at].staged else {
                continue;
            };
            // Its id joins the window now, under the window's lock; a durable store writes it
            // with the record.
            let receipt = Receipt {
                partition: 0,
                offset: key,
            };
            let row = match self.records[at].id.clone() {
                Some(id) => {
                    let ids = held.get::<Ids>(self.dedupe_key());
                    let row = ids.row(&id, 0);
                    ids.remember(id, receipt, self.now, None);
                    self.wake_room |= ids.room_waiters > 0;
                    row
                }
                None => None,
            };
            match log.as_deref_mut() {
                Some(log) => log.record(TxRecord {
                    sink: &self.queue.sink,
                    key,
                    ts,
                    size: 0,
                    body: self.records[at].body.take().unwrap_or_default(),
                    id: row,
                }),
                None => upto = Some(key + 1),
            }
        }
        let state: &mut QueueState<T> = held.get(self.key());
        self.reserved = 0; // the records hold their capacity now
        if let Some(upto) = upto {
            state.publish_staged(upto);
        }
        for delivery in &mut self.acks {
            let Some(ack) = delivery.queue_ack() else {
                continue;
            };
            if state.ack(ack.delivery).is_ok() {
                self.woken.join(self.queue.left(state));
                if let Some(log) = log.as_deref_mut() {
                    log.progress(Progress::QueueAck {
                        queue: &self.queue.sink,
                        id: ack.id,
                    });
                }
            }
            delivery.disarm();
        }
        self.queue.publish_hints(state);
        self.woken.join(state.readers.take());
    }

    fn sealed(&mut self, held: &mut Held<'_>, commit: Option<Ticket>) {
        if commit.is_none() {
            return;
        }
        for record in &self.records {
            if let (Some(id), Some((offset, _))) = (record.id.as_deref(), record.staged) {
                let receipt = Receipt {
                    partition: 0,
                    offset,
                };
                let ids = held.get::<Ids>(self.dedupe_key());
                ids.committed_by(id, receipt, commit);
            }
        }
    }

    fn originals(&self) -> Option<Ticket> {
        self.originals
    }

    fn after(&mut self, committed: bool) {
        if std::mem::take(&mut self.wake_room) {
            self.queue.wake_room_waiters();
        }
        let dead = std::mem::take(&mut self.dead);
        let woken = std::mem::replace(&mut self.woken, Woken::none());
        self.queue.after_release(dead, woken);
        if committed {
            self.acks.clear(); // settled: dropping them does nothing
        }
    }

    fn unstage(&mut self) {
        if let Some(mut ids) = self.queue.dedupe() {
            for record in &self.records {
                if let (Some((key, _)), Some(id)) = (record.staged, record.id.as_deref()) {
                    let offset = key;
                    ids.forget(
                        id,
                        Receipt {
                            partition: 0,
                            offset,
                        },
                    );
                }
            }
        }
        let mut state = self.queue.state.lock();
        for record in &mut self.records {
            record.duplicate = None;
            if let Some((id, _)) = record.staged.take() {
                record.entry = state.unstage(id);
                if record.entry.is_some() {
                    self.queue.occupied.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        let woken = state.writers.take();
        drop(state);
        woken.wake();
    }

    fn receipts(&self, out: &mut Vec<(usize, Receipt)>) {
        tx::receipts(&self.records, out);
    }

    fn abort(&mut self) {
        for delivery in self.acks.drain(..) {
            let _ = delivery.nack(); // as a nack would; nobody is left to tell
        }
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.acks.is_empty()
    }

    fn records(&self) -> usize {
        self.records.len()
    }
}

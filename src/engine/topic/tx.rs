//! A topic's share of a transaction ([`TopicPart`]): records for its partitions, and acks of
//! its consumer groups' messages.

use std::any::Any;
use std::sync::Arc;

use super::group::GroupState;
use super::{Group, Log, TopicCore};
use crate::engine::Delivery;
use crate::engine::Fail;
use crate::engine::dedupe::Ids;
use crate::engine::notify::Woken;
use crate::engine::tx::{
    self, Guard, Held, LockKey, Lockable, Part, Pending, Rank, TxCore, WindowLock, address,
};
use crate::error::Error;
use crate::record::{Entry, Nanos, Payload, Receipt, Record};
use crate::store::{Progress, Ticket, TxLog, TxRecord};

/// A topic's share of a transaction.
pub(crate) struct TopicPart<T> {
    topic: Arc<TopicCore<T>>,
    records: Vec<Pending<Entry<T>>>,
    /// Group deliveries to ack.
    acks: Vec<Delivery<T>>,
    /// Whom the commit wakes, once unlocked.
    woken: Woken,
    /// When it was staged (the dedupe window's clock).
    now: Nanos,
    /// The latest commit, still pending when staged, of an original that a duplicate among
    /// the records stands for.
    originals: Option<Ticket>,
    /// Whether a send with an id waits for room in the target: the commit wakes it, in case
    /// the id is one the commit stores.
    wake_room: bool,
}

impl<T: Payload> TopicCore<T> {
    /// Adds `record` to transaction `tx` (not sent before the commit): refused as a send would
    /// be (deleted topic, compaction without a key, a payload that does not encode), handing
    /// it back.
    pub(crate) fn tx_send(
        self: &Arc<Self>,
        tx: &mut TxCore,
        record: Record<T>,
    ) -> Result<(), (Record<T>, Fail)> {
        if self.context.is_closed() {
            return Err((record, Fail::Disconnected));
        }
        if let Err(fail) = self.refuses(std::iter::once(&record)) {
            return Err((record, fail));
        }
        let partition = self.pick_partition(record.key_ref());
        let size = self.size_of(&record);
        let id = self.dedupe.as_ref().and(record.message_id()).map(Box::from);
        let entry = Entry::new(record, size);
        let body = if self.context.store.reads_back() {
            match self.coder.encode_entry(&entry) {
                Ok(body) => Some(body),
                Err(e) => return Err((entry.into_record(), Fail::Failed(e))),
            }
        } else {
            None
        };
        let index = tx.sends;
        tx.sends += 1;
        let part = tx.part(address(self), || TopicPart::new(self));
        part.records.push(Pending {
            index,
            partition,
            entry: Some(entry),
            body,
            staged: None,
            size,
            id,
            duplicate: None,
        });
        Ok(())
    }

    /// Adds the ack of group delivery `delivery` to transaction `tx`.
    pub(crate) fn tx_ack(self: &Arc<Self>, tx: &mut TxCore, delivery: Delivery<T>) {
        let part = tx.part(address(self), || TopicPart::new(self));
        part.acks.push(delivery);
    }
}

impl<T: Payload> TopicPart<T> {
    fn new(topic: &Arc<TopicCore<T>>) -> Self {
        Self {
            topic: Arc::clone(topic),
            records: Vec::new(),
            acks: Vec::new(),
            woken: Woken::none(),
            now: 0,
            originals: None,
            wake_room: false,
        }
    }

    fn partition_key(&self, partition: u32) -> LockKey {
        (Rank::Partition, address(&self.topic), partition)
    }

    fn dedupe_key(&self) -> LockKey {
        (Rank::Dedupe, address(&self.topic), 0)
    }

    /// The records not committed, with their send numbers (the transaction hands them back).
    pub(crate) fn take_records(&mut self, out: &mut Vec<(usize, Record<T>)>) {
        tx::take_records(&mut self.records, out, Entry::into_record);
    }

    /// Why the topic refuses records under its partition's lock: deleted, or the broker
    /// closed.
    fn shut(&self) -> Error {
        match self.topic.check_live() {
            Err(e) => e,
            Ok(()) => Error::Closed,
        }
    }
}

/// A partition's lock.
struct PartitionLock<T> {
    topic: Arc<TopicCore<T>>,
    partition: u32,
}

impl<T: Payload> Lockable for PartitionLock<T> {
    fn key(&self) -> LockKey {
        (Rank::Partition, address(&self.topic), self.partition)
    }

    fn lock(&self) -> Box<dyn Guard + '_> {
        Box::new(self.topic.partitions[self.partition as usize].lock())
    }
}

/// A consumer group's lock.
struct GroupLock<T> {
    group: Arc<Group<T>>,
}

impl<T: Payload> Lockable for GroupLock<T> {
    fn key(&self) -> LockKey {
        (Rank::Group, address(&self.group), 0)
    }

    fn lock(&self) -> Box<dyn Guard + '_> {
        Box::new(self.group.lock_state())
    }
}

impl<T: Payload> Part for TopicPart<T> {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn target(&self) -> usize {
        address(&self.topic)
    }

    fn locks(&self, out: &mut Vec<Box<dyn Lockable>>) {
        let mut partitions: Vec<u32> = self.records.iter().map(|r| r.partition).collect();
        for delivery in &self.acks {
            if let Some((ack, _)) = delivery.group_ack() {
                partitions.push(delivery.partition());
                out.push(Box::new(GroupLock {
                    group: Arc::clone(&ack.group),
                }));
            }
        }
        partitions.sort_unstable();
        partitions.dedup();
        if self.records.iter().any(|r| r.id.is_some()) {
            out.push(Box::new(WindowLock::new(&self.topic, TopicCore::dedupe)));
        }
        for partition in partitions {
            out.push(Box::new(PartitionLock {
                topic: Arc::clone(&self.topic),
                partition,
            }));
        }
    }

    fn stage(&mut self, held: &mut Held<'_>, now: Nanos) -> Result<(), Error> {
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
            let partition = self.records[at].partition;
            let key = self.partition_key(partition);
            let log: &mut Log<T> = held.get(key);
            let record = &mut self.records[at];
            match self.topic.room(log, now, record.size) {
                Ok(()) => {
                    if let Some(entry) = record.entry.take() {
                        record.staged = Some(log.stage(now, entry));
                    }
                }
                Err(closed) => {
                    let error = if closed {
                        self.shut()
                    } else {
                        Error::Full {
                            name: self.topic.name.clone(),
                        }
                    };
                    self.retract(held);
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    fn retract(&mut self, held: &mut Held<'_>) {
        for at in (0..self.records.len()).rev() {
            self.records[at].duplicate = None;
            let Some((offset, _)) = self.records[at].staged else {
                continue;
            };
            let key = self.partition_key(self.records[at].partition);
            let log: &mut Log<T> = held.get(key);
            let record = &mut self.records[at];
            record.entry = log.retract(offset);
            record.staged = None;
        }
    }

    fn check_acks(&mut self, held: &mut Held<'_>) -> Result<(), Error> {
        for delivery in &self.acks {
            let Some((ack, count)) = delivery.group_ack() else {
                continue;
            };
            if !Arc::ptr_eq(&ack.topic, &self.topic) {
                unreachable!("a group delivery is filed under its own topic");
            }
            let key = (Rank::Group, address(&ack.group), 0);
            let state: &mut GroupState = held.get(key);
            let (partition, offset) = (delivery.partition(), delivery.offset());
            if !state.holds(ack.member, partition, offset, count) {
                return Err(Error::Fenced {
                    topic: self.topic.name.clone(),
                    group: ack.group.name().to_owned(),
                    partition,
                    offset,
                });
            }
        }
        Ok(())
    }

    fn apply(&mut self, held: &mut Held<'_>, mut log: Option<&mut dyn TxLog>) {
        // Records: to the store, which publishes them after its commit; or published now,
        // each partition's run at once.
        let mut ends: Vec<(u32, u64)> = Vec::new();
        for at in 0..self.records.len() {
            let Some((offset, ts)) = self.records[at].staged else {
                continue;
            };
            let partition = self.records[at].partition;
            // Its id joins the window now, under the window's lock; a durable store writes it
            // with the record.
            let row = match self.records[at].id.clone() {
                Some(id) => {
                    let ids = held.get::<Ids>(self.dedupe_key());
                    let row = ids.row(&id, partition);
                    ids.remember(id, Receipt { partition, offset }, self.now, None);
                    self.wake_room |= ids.room_waiters > 0;
                    row
                }
                None => None,
            };
            let record = &mut self.records[at];
            match log.as_deref_mut() {
                Some(log) => log.record(TxRecord {
                    sink: &self.topic.sinks[partition as usize],
                    key: offset,
                    ts,
                    size: record.size,
                    body: record.body.take().unwrap_or_default(),
                    id: row,
                }),
                None => match ends.iter_mut().find(|(p, _)| *p == partition) {
                    Some((_, end)) => *end = (*end).max(offset + 1),
                    None => ends.push((partition, offset + 1)),
                },
            }
        }
        for (partition, upto) in ends {
            let log: &mut Log<T> = held.get(self.partition_key(partition));
            self.woken
                .join(log.publish_staged(&self.topic.limits, upto));
        }
        // Acks: each moves its group's position, stored with the records.
        let mut record = |change: Progress<'_>| {
            if let Some(log) = log.as_deref_mut() {
                log.progress(change);
            }
        };
        for delivery in &mut self.acks {
            let Some((ack, _)) = delivery.group_ack() else {
                continue;
            };
            let group_key = (Rank::Group, address(&ack.group), 0);
            let partition_key = (Rank::Partition, address(&self.topic), delivery.partition());
            let (state, log) = held.pair::<GroupState, Log<T>>(group_key, partition_key);
            let at = (delivery.partition(), delivery.offset());
            let name = ack.group.name();
            self.woken
                .join(state.ack_held(log, &self.topic, name, at, &mut record));
            delivery.disarm();
        }
    }

    fn sealed(&mut self, held: &mut Held<'_>, commit: Option<Ticket>) {
        if commit.is_none() {
            return;
        }
        for record in &self.records {
            if let (Some(id), Some((offset, _))) = (record.id.as_deref(), record.staged) {
                let receipt = Receipt {
                    partition: record.partition,
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
        std::mem::replace(&mut self.woken, Woken::none()).wake();
        if std::mem::take(&mut self.wake_room) {
            self.topic.wake_room_waiters();
        }
        if committed {
            self.acks.clear(); // settled: dropping them does nothing
        }
    }

    fn unstage(&mut self) {
        let mut ids = self.topic.dedupe();
        for record in &mut self.records {
            record.duplicate = None;
            if let Some((offset, _)) = record.staged.take() {
                if let (Some(ids), Some(id)) = (ids.as_mut(), record.id.as_deref()) {
                    let partition = record.partition;
                    ids.forget(id, Receipt { partition, offset });
                }
                let mut log = self.topic.partitions[record.partition as usize].lock();
                record.entry = log.unstage(offset);
            }
        }
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

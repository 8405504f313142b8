//! Deduplication by message id: the window of ids a topic or queue remembers
//! ([`Dedupe`](crate::options::Dedupe)), and how a send consults it.
//!
//! # Lock order
//!
//! A topic or queue with a window keeps one [`Ids`] behind a `Mutex` of its own
//! ([`TopicCore::dedupe`](super::topic::TopicCore::dedupe),
//! [`QueueCore::dedupe`](super::queue::QueueCore::dedupe)). It is always taken **before** any
//! partition lock of the topic, or the queue's state lock, and held for the whole send of a
//! record with an id: [`Ids::seen`] first (a hit returns the original receipt and stores
//! nothing), then the append (whose job calls [`Ids::row`] for each record it stages, so a
//! durable store writes the id in the record's commit), then, once the append returned a
//! receipt, [`Ids::remember`]. Ids are per topic, across its partitions, so one lock covers
//! them all. Records without an id never take it.
//!
//! Holding it across the append makes "check, store, remember" atomic: a duplicate sent
//! concurrently waits and then sees the original's receipt, and an id is remembered only for
//! a record that was stored (in a durable broker, after its commit). The cost is that sends
//! with ids to one topic or queue do not share a commit, and that one waiting for room
//! (`Overflow::Block`, a full queue) holds the lock while it waits.
//!
//! `send_async` cannot hold a lock across its wait for the commit: it remembers the id as
//! soon as the record is staged, and [`Ids::forget`]s it if the commit fails (the store is
//! then poisoned, and refuses every later send). So a duplicate sent while the original's
//! commit is pending gets the receipt before that commit is done.
//!
//! Messages that reach a queue other than by a send (dead letters, redrive) are not
//! deduplicated and not remembered.
//!
//! # Durable windows
//!
//! With `rows` (a store that keeps bytes), the ids that leave the window are collected and
//! handed to the store with the next id it writes ([`IdRow::forget`]), so the store's table
//! holds the window plus what left it since, and pruning is one delete per id in a commit
//! that happens anyway. On reopen, [`Ids::restore`] loads the table and applies the window
//! as of now.

use std::collections::{HashMap, VecDeque};

use crate::error::Error;
use crate::options::Dedupe;
use crate::record::{MAX_MESSAGE_ID_LEN, MESSAGE_ID, Nanos, Receipt, Record, duration_nanos};
use crate::store::{IdRow, StoredId};

/// The ids a topic or queue remembers, oldest first. Used under its own lock (see the module
/// docs for the order).
pub(crate) struct Ids {
    /// The time window, in nanoseconds.
    within: Option<Nanos>,
    /// The count window.
    last: Option<usize>,
    by_id: HashMap<Box<str>, Seen>,
    /// Ids in the order they were remembered (timestamps never go back on a clock that does
    /// not; an entry whose id was remembered again later is skipped when it leaves).
    order: VecDeque<(Box<str>, Nanos)>,
    /// Whether the store keeps rows of the ids (durable): then `forgotten` collects the ids
    /// that left the window, for the next [`Ids::row`].
    rows: bool,
    forgotten: Vec<Box<str>>,
}

/// A remembered id: its message's receipt and when it was sent.
#[derive(Clone, Copy)]
struct Seen {
    receipt: Receipt,
    ts: Nanos,
}

impl Ids {
    /// An empty window; `rows`: the store keeps the ids (durable mode).
    pub(crate) fn new(window: Dedupe, rows: bool) -> Self {
        Self {
            within: window.max_age().map(duration_nanos),
            last: window
                .max_ids()
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            by_id: HashMap::new(),
            order: VecDeque::new(),
            rows,
            forgotten: Vec::new(),
        }
    }

    /// Loads the ids a durable store kept ([`Store::message_ids`](crate::store::Store)), and
    /// drops those outside the window as of `now` (their rows go with the next send).
    pub(crate) fn restore(&mut self, mut stored: Vec<StoredId>, now: Nanos) {
        stored.sort_by_key(|s| (s.ts, s.partition, s.key));
        for s in stored {
            let receipt = Receipt {
                partition: s.partition,
                offset: s.key,
            };
            self.insert(s.id, receipt, s.ts);
        }
        self.prune(now);
    }

    /// The receipt of the message sent with `id` within the window as of `now`, if any (after
    /// dropping the ids that left it).
    pub(crate) fn seen(&mut self, id: &str, now: Nanos) -> Option<Receipt> {
        self.prune(now);
        self.by_id.get(id).map(|s| s.receipt)
    }

    /// Remembers that the message with `id` was stored as `receipt` at `now` (after a
    /// [`seen`](Self::seen) that found nothing, under the same lock).
    pub(crate) fn remember(&mut self, id: Box<str>, receipt: Receipt, now: Nanos) {
        self.insert(id, receipt, now);
        self.prune(now);
    }

    /// What a durable store writes with the staged record of `id` in `partition`: its row,
    /// and the rows of the ids that left the window since the last one. `None` for a store
    /// that keeps nothing.
    pub(crate) fn row(&mut self, id: &str, partition: u32) -> Option<IdRow> {
        self.rows.then(|| IdRow {
            id: id.into(),
            partition,
            forget: std::mem::take(&mut self.forgotten),
        })
    }

    /// Forgets `id` if it names `receipt`: its send failed after all (`send_async` whose
    /// commit failed).
    pub(crate) fn forget(&mut self, id: &str, receipt: Receipt) {
        if self.by_id.get(id).is_some_and(|s| s.receipt == receipt) {
            self.by_id.remove(id);
        }
    }

    fn insert(&mut self, id: Box<str>, receipt: Receipt, ts: Nanos) {
        self.order.push_back((id.clone(), ts));
        self.by_id.insert(id, Seen { receipt, ts });
    }

    /// Drops the ids outside the window as of `now`, oldest first.
    fn prune(&mut self, now: Nanos) {
        let oldest = self.within.map(|w| now.saturating_sub(w));
        while let Some((id, ts)) = self.order.front() {
            let too_many = self.last.is_some_and(|n| self.by_id.len() > n);
            let too_old = oldest.is_some_and(|oldest| *ts < oldest);
            let stale = self.by_id.get(id).is_none_or(|s| s.ts != *ts);
            if !(too_many || too_old || stale) {
                break;
            }
            let Some((id, ts)) = self.order.pop_front() else {
                break;
            };
            if self.by_id.get(&id).is_some_and(|s| s.ts == ts) {
                self.by_id.remove(&id);
                if self.rows {
                    self.forgotten.push(id);
                }
            }
        }
    }
}

/// The message id of `record`, checked: `Err` ([`Error::InvalidMessageId`] naming `name`) if
/// its [`MESSAGE_ID`] header is empty, too long or not UTF-8. Costs nothing for a record
/// without key or headers.
pub(crate) fn id_of<'a, T>(record: &'a Record<T>, name: &str) -> Result<Option<&'a str>, Error> {
    if record.meta.is_none() {
        return Ok(None);
    }
    let Some(bytes) = record.headers().get(MESSAGE_ID) else {
        return Ok(None);
    };
    let bad = |reason| Error::InvalidMessageId {
        name: name.to_owned(),
        reason,
    };
    if bytes.is_empty() {
        return Err(bad("it is empty"));
    }
    if bytes.len() > MAX_MESSAGE_ID_LEN {
        return Err(bad("it is longer than 256 bytes"));
    }
    std::str::from_utf8(bytes)
        .map(Some)
        .map_err(|_| bad("it is not UTF-8"))
}

/// Where each record of a batch gets its receipt from, once duplicates are taken out.
enum From {
    /// The `n`th record that is stored.
    Stored(usize),
    /// A duplicate of a message sent before the batch.
    Seen(Receipt),
    /// A duplicate of the `n`th record stored by this batch.
    Twin(usize),
}

/// A batch split into the records to store and the duplicates ([`split`]).
pub(crate) struct Split<T> {
    /// The records to store, in input order.
    pub(crate) fresh: Vec<Record<T>>,
    /// The id of each fresh record, if it has one.
    ids: Vec<Option<Box<str>>>,
    plan: Vec<From>,
    /// Duplicates of fresh records (handed back with their twin if it is not stored).
    twins: Vec<Record<T>>,
}

/// Takes the duplicates out of `records` (of `name`): those of an id in `ids` (sent before),
/// and those of an id earlier in the batch. `Err` with every record if an id is invalid.
pub(crate) fn split<T>(
    ids: &mut Ids,
    records: Vec<Record<T>>,
    now: Nanos,
    name: &str,
) -> Result<Split<T>, (Vec<Record<T>>, Error)> {
    if let Some(e) = records.iter().find_map(|r| id_of(r, name).err()) {
        return Err((records, e));
    }
    let mut split = Split {
        fresh: Vec::with_capacity(records.len()),
        ids: Vec::with_capacity(records.len()),
        plan: Vec::with_capacity(records.len()),
        twins: Vec::new(),
    };
    let mut first: HashMap<Box<str>, usize> = HashMap::new();
    for record in records {
        let id: Option<Box<str>> = record.message_id().map(Into::into);
        let Some(id) = id else {
            split.plan.push(From::Stored(split.fresh.len()));
            split.fresh.push(record);
            split.ids.push(None);
            continue;
        };
        if let Some(receipt) = ids.seen(&id, now) {
            split.plan.push(From::Seen(receipt));
        } else if let Some(&twin) = first.get(&id) {
            split.plan.push(From::Twin(twin));
            split.twins.push(record);
        } else {
            first.insert(id.clone(), split.fresh.len());
            split.plan.push(From::Stored(split.fresh.len()));
            split.fresh.push(record);
            split.ids.push(Some(id));
        }
    }
    Ok(split)
}

impl<T> Split<T> {
    /// The batch's receipts, in input order, from those of the fresh records; remembers their
    /// ids in `ids`.
    pub(crate) fn receipts(self, stored: &[Receipt], ids: &mut Ids, now: Nanos) -> Vec<Receipt> {
        for (id, receipt) in self.ids.into_iter().zip(stored) {
            if let Some(id) = id {
                ids.remember(id, *receipt, now);
            }
        }
        let receipt = |from: &From| match *from {
            From::Stored(n) | From::Twin(n) => stored[n],
            From::Seen(receipt) => receipt,
        };
        self.plan.iter().map(receipt).collect()
    }

    /// What a failed batch hands back: the records not stored (`unsent`, a suffix or subset
    /// of the fresh ones, in order), each followed by the duplicates of it in the batch.
    /// Duplicates of messages sent before the batch are not handed back: they were sent.
    pub(crate) fn unsent(self, unsent: Vec<Record<T>>) -> Vec<Record<T>> {
        if self.twins.is_empty() {
            return unsent;
        }
        let mut twins = self.twins;
        let mut out = Vec::with_capacity(unsent.len() + twins.len());
        for record in unsent {
            let id = record.message_id().map(str::to_owned);
            out.push(record);
            let Some(id) = id else { continue };
            let mut i = 0;
            while i < twins.len() {
                if twins[i].message_id() == Some(id.as_str()) {
                    out.push(twins.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Receipt {
        Receipt {
            partition: 0,
            offset,
        }
    }

    #[test]
    fn ids_that_leave_a_count_window_are_written_off_with_the_next_row() {
        let mut ids = Ids::new(Dedupe::last(2), true);
        for (n, id) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(ids.seen(id, 0), None);
            assert!(ids.row(id, 0).unwrap().forget.is_empty());
            ids.remember(id.into(), at(n as u64), 0);
        }
        // Remembering c dropped a: the next row deletes it, once.
        let row = ids.row("d", 0).unwrap();
        assert_eq!(row.forget, vec![Box::<str>::from("a")]);
        assert!(ids.row("e", 0).unwrap().forget.is_empty());
        assert_eq!(ids.seen("a", 0), None);
        assert_eq!(ids.seen("b", 0), Some(at(1)));
    }

    #[test]
    fn ids_that_leave_a_time_window_are_dropped_at_the_next_look() {
        let mut ids = Ids::new(Dedupe::within(std::time::Duration::from_nanos(10)), true);
        ids.remember("a".into(), at(0), 100);
        ids.remember("b".into(), at(1), 105);
        assert_eq!(ids.seen("a", 110), Some(at(0)));
        assert_eq!(ids.seen("a", 111), None);
        assert_eq!(ids.seen("b", 111), Some(at(1)));
        assert_eq!(ids.row("c", 0).unwrap().forget, vec![Box::<str>::from("a")]);
    }

    #[test]
    fn a_store_that_keeps_nothing_gets_no_rows() {
        let mut ids = Ids::new(Dedupe::last(1), false);
        ids.remember("a".into(), at(0), 0);
        ids.remember("b".into(), at(1), 0);
        assert_eq!(ids.row("c", 0), None);
        assert!(ids.forgotten.is_empty());
    }

    #[test]
    fn a_failed_send_is_forgotten_only_for_its_own_receipt() {
        let mut ids = Ids::new(Dedupe::last(10), false);
        ids.remember("a".into(), at(0), 0);
        ids.forget("a", at(1));
        assert_eq!(ids.seen("a", 0), Some(at(0)));
        ids.forget("a", at(0));
        assert_eq!(ids.seen("a", 0), None);
        // Its stale place in the order does not drop a later remember of the same id.
        ids.remember("a".into(), at(2), 0);
        assert_eq!(ids.seen("a", 0), Some(at(2)));
    }
}

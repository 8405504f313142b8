//! Deduplication by message id: the window of ids a topic or queue remembers
//! ([`Dedupe`](crate::options::Dedupe)), and how a send consults it.
//!
//! # Lock order
//!
//! A topic or queue with a window keeps one [`Ids`] behind a `Mutex` of its own
//! ([`TopicCore::dedupe`](super::topic::TopicCore::dedupe),
//! [`QueueCore::dedupe`](super::queue::QueueCore::dedupe)). It is always taken **before** any
//! partition lock of the topic, or the queue's state lock (a transaction ranks it after its
//! consumer groups' locks), and it is **never held across a wait**: not for room
//! (`Overflow::Block`, a full queue), not for a commit. Ids are per topic, across its
//! partitions, so one lock covers them all. Records without an id never take it.
//!
//! A send of a record with an id ([`send`], [`send_batch`]) holds it for one [`Deduped::step`]:
//! [`Ids::seen`] first (a hit stores nothing), then, if there is room now, the append, staged
//! without waiting for its commit ([`Commit::Staged`](crate::store::Commit::Staged)); its job
//! calls [`Ids::row`] for the record it stages, so a durable store writes the id in the
//! record's commit; then [`Ids::remember`] with the commit's [`Ticket`]. The lock is let go,
//! and the send waits for its commit without it ([`Context::settle`]): sends with ids to one
//! target share commits, and a transaction holding the lent write transaction can take the
//! lock while a send waits for the commit that waits for it. Without room, the send lets go
//! of the lock, waits for room, and looks again. Another send may store the same id
//! meanwhile, and this one should then return its receipt, not wait on for room: so a send
//! with an id counts itself in the window's `room_waiters` while it waits, and a send that
//! remembers an id while any are counted wakes the target's producers waiting for room (a
//! waiter looks at the window after registering, so no wake-up is lost).
//!
//! So an id is remembered from the moment its record is staged, and:
//!
//! - a duplicate sent while the original's commit is pending ([`Original::commit`]) returns
//!   the original receipt only once that commit is done, and fails (with its own record) if
//!   it fails;
//! - a commit that fails [`Ids::forget`]s the ids it would have stored
//!   ([`take_back`](super::topic::TopicCore::take_back)); the store is then poisoned, and
//!   refuses every later send.
//!
//! A transaction stages its records and remembers their ids under the lock, then learns its
//! ticket when the store seals it, still under the lock ([`Ids::committed_by`]). One whose
//! records are all duplicates stores nothing, and waits for the originals' commits instead
//! ([`TxJob::originals`](crate::store::TxJob::originals)).
//!
//! `send_async` registers as a waiter for room instead of waiting, and does not wait for the
//! commit either (it polls the ticket): it remembers the id with the ticket as a send does. A
//! duplicate it sends gets the receipt at once, even while the original's commit is pending.
//!
//! Messages that reach a queue other than by a send (dead letters, redrive) are not
//! deduplicated and not remembered.
//!
//! # Durable windows
//!
//! With `rows` (a store that keeps bytes), the ids that leave the window are collected and
//! handed to the store with the next id it writes ([`IdRow::forget`]), so the store's table
//! holds the window plus what left it since, and pruning is one delete per id in a commit
//! that happens anyway. Each row carries the id's sequence number in the window
//! ([`IdRow::seq`], taken under the window's lock), the order it was remembered in: the
//! timestamps do not give it (a transaction, a batch, or sends at one reading of a manual
//! clock remember ids of one time, in any partitions). On reopen, [`Ids::restore`] loads the
//! table in that order, applies the window as of now (dropping the oldest first, as a send
//! would have), and numbers new ids on from the largest stored.

use std::collections::{HashMap, VecDeque};

use parking_lot::MutexGuard;

use super::notify::Deadline;
use super::{Context, Fail};
use crate::error::Error;
use crate::options::Dedupe;
use crate::record::{
    Headers, MAX_MESSAGE_ID_LEN, MESSAGE_ID, Nanos, Receipt, Record, duration_nanos,
};
use crate::store::{IdRow, StoredId, Ticket};

/// The ids a topic or queue remembers, oldest first. Used under its own lock (see the module
/// docs for the order).
pub(crate) struct Ids {
    /// The time window, in nanoseconds.
    within: Option<Nanos>,
    /// The count window.
    last: Option<usize>,
    by_id: HashMap<Box<str>, Seen>,
    /// Ids in the order they were remembered, with their sequence numbers (timestamps never
    /// go back on a clock that does not; an entry whose id was forgotten, or remembered again
    /// later, is skipped when it leaves).
    order: VecDeque<(Box<str>, u64)>,
    /// The sequence number of the next id remembered: [`Ids::row`] writes it in the id's row,
    /// so that a reopen restores the order.
    next: u64,
    /// Whether the store keeps rows of the ids (durable): then `forgotten` collects the ids
    /// that left the window, for the next [`Ids::row`].
    rows: bool,
    forgotten: Vec<Box<str>>,
    /// Sends with ids waiting for room in this target: a newly remembered id wakes them, so
    /// that one whose id another send stored meanwhile returns at once.
    pub(crate) room_waiters: usize,
}

/// A remembered id: its message's receipt, when it was sent, its sequence number in the
/// window, and the commit that stores it (durable mode; it may still be pending).
#[derive(Clone, Copy)]
struct Seen {
    receipt: Receipt,
    ts: Nanos,
    seq: u64,
    commit: Option<Ticket>,
}

/// The message a duplicate stands for ([`Ids::seen`]): its receipt, and the commit to wait
/// for before the duplicate may return (`None`: stored already, or memory mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Original {
    pub(crate) receipt: Receipt,
    pub(crate) commit: Option<Ticket>,
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
            next: 0,
            rows,
            forgotten: Vec::new(),
            room_waiters: 0,
        }
    }

    /// Loads the ids a durable store kept ([`Store::message_ids`](crate::store::Store)) in the
    /// order they were remembered, and drops those outside the window as of `now`, oldest
    /// first (their rows go with the next send). Rows of format version 5 or older have no
    /// sequence number: they come first (all were written before any that has one), ordered
    /// by time, partition and key as before. Later ids are numbered on from the largest
    /// stored, so that their rows come after these at the next reopen.
    pub(crate) fn restore(&mut self, mut stored: Vec<StoredId>, now: Nanos) {
        // `None` sorts before every `Some`.
        stored.sort_by_key(|s| (s.seq, s.ts, s.partition, s.key));
        let after = stored.iter().filter_map(|s| s.seq).max().map(|seq| seq + 1);
        for s in stored {
            let receipt = Receipt {
                partition: s.partition,
                offset: s.key,
            };
            self.insert(s.id, receipt, s.ts, None);
        }
        self.next = self.next.max(after.unwrap_or(0));
        self.prune(now);
    }

    /// The message sent with `id` within the window as of `now`, if any (after dropping the
    /// ids that left it).
    pub(crate) fn seen(&mut self, id: &str, now: Nanos) -> Option<Original> {
        self.prune(now);
        // Pruning stops at the oldest id still in the window; after a clock that went back
        // across a reopen, an expired id may sit behind it (ids restore in send order).
        let oldest = self.within.map(|w| now.saturating_sub(w));
        let live = |s: &&Seen| oldest.is_none_or(|oldest| s.ts >= oldest);
        self.by_id.get(id).filter(live).map(|s| Original {
            receipt: s.receipt,
            commit: s.commit,
        })
    }

    /// Remembers that the message with `id` was staged as `receipt` at `now`, to be stored by
    /// `commit` (after a [`seen`](Self::seen) that found nothing, under the same lock).
    pub(crate) fn remember(
        &mut self,
        id: Box<str>,
        receipt: Receipt,
        now: Nanos,
        commit: Option<Ticket>,
    ) {
        self.insert(id, receipt, now, commit);
        self.prune(now);
    }

    /// Tells the window which commit stores the message of `id` staged as `receipt` (a
    /// transaction learns it only once sealed, still under the window's lock).
    pub(crate) fn committed_by(&mut self, id: &str, receipt: Receipt, commit: Option<Ticket>) {
        if let Some(seen) = self.by_id.get_mut(id).filter(|s| s.receipt == receipt) {
            seen.commit = commit;
        }
    }

    /// What a durable store writes with the staged record of `id` in `partition`: its row
    /// (with the sequence number the id gets as it is [remembered](Self::remember) next,
    /// under the same lock), and the rows of the ids that left the window since the last
    /// one. `None` for a store that keeps nothing.
    pub(crate) fn row(&mut self, id: &str, partition: u32) -> Option<IdRow> {
        self.rows.then(|| IdRow {
            id: id.into(),
            partition,
            seq: self.next,
            forget: std::mem::take(&mut self.forgotten),
        })
    }

    /// Forgets `id` if it names `receipt`: its send failed after all (its commit failed).
    pub(crate) fn forget(&mut self, id: &str, receipt: Receipt) {
        if self.by_id.get(id).is_some_and(|s| s.receipt == receipt) {
            self.by_id.remove(id);
        }
    }

    /// Remembers `id` last in the order, with the next sequence number.
    fn insert(&mut self, id: Box<str>, receipt: Receipt, ts: Nanos, commit: Option<Ticket>) {
        let seq = self.next;
        self.next += 1;
        self.order.push_back((id.clone(), seq));
        let seen = Seen {
            receipt,
            ts,
            seq,
            commit,
        };
        self.by_id.insert(id, seen);
    }

    /// Drops the ids outside the window as of `now`, oldest first.
    fn prune(&mut self, now: Nanos) {
        let oldest = self.within.map(|w| now.saturating_sub(w));
        while let Some((id, seq)) = self.order.front() {
            // `None`: a stale entry (its id was forgotten, or remembered again later).
            let live = self.by_id.get(id).filter(|s| s.seq == *seq);
            if let Some(seen) = live {
                let too_many = self.last.is_some_and(|n| self.by_id.len() > n);
                let too_old = oldest.is_some_and(|oldest| seen.ts < oldest);
                if !(too_many || too_old) {
                    break;
                }
            }
            let live = live.is_some();
            let Some((id, _)) = self.order.pop_front() else {
                break;
            };
            if live {
                self.by_id.remove(&id);
                if self.rows {
                    self.forgotten.push(id);
                }
            }
        }
    }
}

/// The message id of `record`, checked: `Err` ([`Error::InvalidMessageId`] naming `name`) if
/// its [`MESSAGE_ID`] header is empty, too long or not UTF-8. Costs one inlined branch for a
/// record without key, headers or timing (a topic send asks twice).
#[inline]
pub(crate) fn id_of<'a, T>(record: &'a Record<T>, name: &str) -> Result<Option<&'a str>, Error> {
    match record.meta.as_deref() {
        None => Ok(None),
        Some(meta) => id_in(&meta.headers, name),
    }
}

/// [`id_of`] for a record with headers.
fn id_in<'a>(headers: &'a Headers, name: &str) -> Result<Option<&'a str>, Error> {
    let Some(bytes) = headers.get(MESSAGE_ID) else {
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

/// What one attempt to send a record came to ([`Deduped::step`]).
pub(crate) enum Step<T> {
    /// A duplicate of `Original`: nothing stored. The record is kept, to hand back if the
    /// original's commit fails.
    Duplicate(Original, Record<T>),
    /// Staged with this receipt (its id remembered), to be stored by this commit.
    Staged(Receipt, Option<Ticket>),
    /// No room now: the record, to try again after waiting for room (without the lock).
    Full(Record<T>),
}

/// A topic or queue with a dedupe window, as [`send`] and [`send_batch`] drive it.
pub(crate) trait Deduped<T> {
    /// Where a record goes and the room it holds, fixed for all its attempts (a topic's
    /// partition and counted size; whether a queue's capacity is reserved).
    type Slot;

    /// The slot of `record`.
    fn slot(&self, record: &Record<T>) -> Self::Slot;

    /// One attempt, never waiting: with the window locked if `id` is `Some`, checks that the
    /// target is open and whether `id` was seen; else stages the record if there is room now
    /// ([`Commit::Staged`](crate::store::Commit::Staged)) and remembers its id with the
    /// commit's ticket. The lock is let go before it returns. A duplicate or a failure gives
    /// back the room `slot` held.
    fn step(
        &self,
        id: Option<&str>,
        record: Record<T>,
        slot: &mut Self::Slot,
    ) -> Result<Step<T>, (Record<T>, Fail)>;

    /// Waits, holding no lock, until there is room for the record of `slot` (a queue
    /// reserves it), `deadline` passes ([`Fail::Full`]), or, once registered as a waiter (so
    /// that no wake-up is lost), `stop` says to look again (its id was stored meanwhile).
    fn await_room(
        &self,
        slot: &mut Self::Slot,
        deadline: Deadline,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), Fail>;

    /// The window, locked (`None` without one).
    fn window(&self) -> Option<MutexGuard<'_, Ids>>;

    /// Takes back a record staged as `receipt` whose commit failed, forgetting its id; `None`
    /// if it was published after all.
    fn take_staged(&self, receipt: Receipt) -> Option<Record<T>>;

    /// The broker's context (its store).
    fn context(&self) -> &Context;
}

/// Sends one record (with message id `id`, if any) to `target`, waiting for room until
/// `deadline`. The window is locked only while the record is checked and staged: the wait
/// for room, and for the commit, happen without it, so the sends of many threads share one
/// commit. A duplicate returns the original's receipt once the original is stored.
pub(crate) fn send<T, D: Deduped<T>>(
    target: &D,
    id: Option<&str>,
    record: Record<T>,
    deadline: Deadline,
) -> Result<Receipt, (Record<T>, Fail)> {
    match stage(target, id, record, deadline)? {
        Step::Duplicate(original, record) => match target.context().settle(original.commit) {
            Ok(()) => Ok(original.receipt),
            Err(e) => Err((record, Fail::Failed(e))), // the original was not stored either
        },
        Step::Staged(receipt, commit) => match target.context().settle(commit) {
            Ok(()) => Ok(receipt),
            Err(e) => match target.take_staged(receipt) {
                Some(record) => Err((record, Fail::Failed(e))),
                None => Ok(receipt), // published after all
            },
        },
        Step::Full(record) => Err((record, Fail::Full)),
    }
}

/// Stages one record, waiting for room (without the window's lock) until `deadline`: never
/// [`Step::Full`] (a deadline that passed is `Err` with [`Fail::Full`]). A send with an id
/// counts itself among the window's room waiters while it waits, so that a send storing the
/// same id meanwhile wakes it (it then returns that receipt instead of waiting on).
fn stage<T, D: Deduped<T>>(
    target: &D,
    id: Option<&str>,
    mut record: Record<T>,
    deadline: Deadline,
) -> Result<Step<T>, (Record<T>, Fail)> {
    let mut slot = target.slot(&record);
    let mut counted = false;
    let stored_meanwhile = || {
        let now = target.context().clock.now();
        let seen = |id| target.window().and_then(|mut ids| ids.seen(id, now));
        id.and_then(seen).is_some()
    };
    let result = loop {
        match target.step(id, record, &mut slot) {
            Ok(Step::Full(declined)) => record = declined,
            done => break done,
        }
        if deadline.passed() {
            break Err((record, Fail::Full));
        }
        if id.is_some()
            && !counted
            && let Some(mut ids) = target.window()
        {
            ids.room_waiters += 1;
            counted = true;
        }
        match target.await_room(&mut slot, deadline, &stored_meanwhile) {
            Ok(()) | Err(Fail::Full) => {}
            Err(fail) => break Err((record, fail)),
        }
    };
    if counted && let Some(mut ids) = target.window() {
        ids.room_waiters -= 1;
    }
    result
}

/// How one record of a batch went.
enum Batched<T> {
    Staged(Receipt),
    Duplicate(Original, Record<T>),
}

/// Sends a batch with ids to `target` (`name`), waiting for room for each record: each is
/// checked and staged as [`send`] does, then the batch waits once for the last commit it
/// needs (its own records', or a pending original's). Duplicates, of earlier sends or within
/// the batch, store nothing and get the original receipt. On failure, hands back the records
/// not sent, in input order (a duplicate with them if its original was not stored); `Err`
/// with every record if an id is invalid.
pub(crate) fn send_batch<T, D: Deduped<T>>(
    target: &D,
    records: Vec<Record<T>>,
    name: &str,
) -> Result<Vec<Receipt>, (Vec<Record<T>>, Fail)> {
    if let Some(e) = records.iter().find_map(|r| id_of(r, name).err()) {
        return Err((records, Fail::Failed(e)));
    }
    let mut sent = Vec::with_capacity(records.len());
    let mut last: Option<Ticket> = None;
    let mut failed = None;
    let mut records = records.into_iter();
    for record in records.by_ref() {
        let id: Option<Box<str>> = record.message_id().map(Into::into);
        match stage(target, id.as_deref(), record, Deadline::Never) {
            Ok(Step::Staged(receipt, commit)) => {
                last = last.max(commit);
                sent.push(Batched::Staged(receipt));
            }
            Ok(Step::Duplicate(original, record)) => {
                last = last.max(original.commit);
                sent.push(Batched::Duplicate(original, record));
            }
            Ok(Step::Full(record)) => {
                failed = Some((record, Fail::Full)); // not with `Deadline::Never`
                break;
            }
            Err(unsent) => {
                failed = Some(unsent);
                break;
            }
        }
    }
    // Tickets commit in order: the last one stored means every earlier one is.
    let settled = target.context().settle(last);
    let e = match settled {
        Ok(()) => {
            return match failed {
                None => {
                    let receipt = |b: Batched<T>| match b {
                        Batched::Staged(receipt) => receipt,
                        Batched::Duplicate(original, _) => original.receipt,
                    };
                    Ok(sent.into_iter().map(receipt).collect())
                }
                // What was staged before it is stored.
                Some((record, fail)) => {
                    Err((std::iter::once(record).chain(records).collect(), fail))
                }
            };
        }
        Err(e) => e,
    };
    // The commit failed (the store is poisoned): nothing staged since it is stored.
    let mut back = Vec::new();
    for batched in sent {
        match batched {
            Batched::Staged(receipt) => back.extend(target.take_staged(receipt)),
            Batched::Duplicate(original, record) => {
                if target.context().settle(original.commit).is_err() {
                    back.push(record);
                }
            }
        }
    }
    let fail = match failed {
        Some((record, fail)) => {
            back.push(record);
            fail
        }
        None => Fail::Failed(e),
    };
    back.extend(records);
    Err((back, fail))
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
            assert_eq!(ids.seen(id, 0).map(|o| o.receipt), None);
            assert!(ids.row(id, 0).unwrap().forget.is_empty());
            ids.remember(id.into(), at(n as u64), 0, None);
        }
        // Remembering c dropped a: the next row deletes it, once.
        let row = ids.row("d", 0).unwrap();
        assert_eq!(row.forget, vec![Box::<str>::from("a")]);
        assert!(ids.row("e", 0).unwrap().forget.is_empty());
        assert_eq!(ids.seen("a", 0).map(|o| o.receipt), None);
        assert_eq!(ids.seen("b", 0).map(|o| o.receipt), Some(at(1)));
    }

    #[test]
    fn ids_that_leave_a_time_window_are_dropped_at_the_next_look() {
        let mut ids = Ids::new(Dedupe::within(std::time::Duration::from_nanos(10)), true);
        ids.remember("a".into(), at(0), 100, None);
        ids.remember("b".into(), at(1), 105, None);
        assert_eq!(ids.seen("a", 110).map(|o| o.receipt), Some(at(0)));
        assert_eq!(ids.seen("a", 111).map(|o| o.receipt), None);
        assert_eq!(ids.seen("b", 111).map(|o| o.receipt), Some(at(1)));
        assert_eq!(ids.row("c", 0).unwrap().forget, vec![Box::<str>::from("a")]);
    }

    #[test]
    fn a_store_that_keeps_nothing_gets_no_rows() {
        let mut ids = Ids::new(Dedupe::last(1), false);
        ids.remember("a".into(), at(0), 0, None);
        ids.remember("b".into(), at(1), 0, None);
        assert_eq!(ids.row("c", 0), None);
        assert!(ids.forgotten.is_empty());
    }

    #[test]
    fn a_transaction_tells_the_window_its_commit_for_its_own_receipt_only() {
        let mut ids = Ids::new(Dedupe::last(10), true);
        ids.remember("a".into(), at(0), 0, None);
        ids.committed_by("a", at(1), Some(Ticket(7)));
        assert_eq!(ids.seen("a", 0).and_then(|o| o.commit), None);
        ids.committed_by("a", at(0), Some(Ticket(7)));
        let original = ids.seen("a", 0).unwrap();
        assert_eq!(
            (original.receipt, original.commit),
            (at(0), Some(Ticket(7)))
        );
    }

    fn stored(id: &str, partition: u32, key: u64, ts: Nanos, seq: Option<u64>) -> StoredId {
        StoredId {
            id: id.into(),
            partition,
            key,
            ts,
            seq,
        }
    }

    fn window(ids: &mut Ids, names: &[&str]) -> Vec<Option<u64>> {
        names
            .iter()
            .map(|id| ids.seen(id, 0).map(|o| o.receipt.offset))
            .collect()
    }

    #[test]
    fn a_restore_follows_the_order_remembered_not_time_and_partition() {
        // `a` went to partition 1, then `b` to partition 0, at one time.
        let mut ids = Ids::new(Dedupe::last(1), true);
        let rows = vec![stored("b", 0, 7, 5, Some(4)), stored("a", 1, 3, 5, Some(3))];
        ids.restore(rows, 5);
        assert_eq!(window(&mut ids, &["a", "b"]), [None, Some(7)]);
        // `a` left the window: its row goes with the next one, numbered after `b`'s.
        let row = ids.row("c", 1).unwrap();
        assert_eq!((row.seq, row.forget), (5, vec![Box::<str>::from("a")]));
    }

    #[test]
    fn an_expired_id_behind_a_fresh_one_is_not_a_duplicate() {
        // The clock went back across a reopen: `late` was sent after `early`, stamped earlier.
        let mut ids = Ids::new(Dedupe::within(std::time::Duration::from_nanos(10)), true);
        let rows = vec![
            stored("early", 0, 1, 15, Some(0)),
            stored("late", 0, 2, 3, Some(1)),
        ];
        ids.restore(rows, 20);
        let seen = |ids: &mut Ids, id| ids.seen(id, 20).map(|o| o.receipt.offset);
        assert_eq!(
            (seen(&mut ids, "early"), seen(&mut ids, "late")),
            (Some(1), None)
        );
    }

    #[test]
    fn rows_without_an_order_come_first_by_time_partition_and_key() {
        let mut ids = Ids::new(Dedupe::last(3), true);
        let rows = vec![
            stored("new", 0, 9, 1, Some(100)),
            stored("old-2", 0, 2, 8, None),
            stored("old-1", 1, 1, 8, None),
            stored("old-0", 1, 0, 7, None),
        ];
        ids.restore(rows, 9);
        let names = ["old-0", "old-1", "old-2", "new"];
        assert_eq!(window(&mut ids, &names), [None, Some(1), Some(2), Some(9)]);
        // Numbered after the largest stored number.
        assert_eq!(ids.row("next", 0).unwrap().seq, 101);
    }

    #[test]
    fn a_stale_entry_of_one_time_does_not_drop_its_id_remembered_again() {
        let mut ids = Ids::new(Dedupe::last(2), false);
        ids.remember("a".into(), at(0), 0, None);
        ids.remember("x".into(), at(1), 0, None);
        ids.forget("a", at(0));
        ids.remember("a".into(), at(2), 0, None);
        ids.remember("y".into(), at(3), 0, None);
        // `x` is the oldest id remembered: it leaves, not `a` (stale entry and all).
        assert_eq!(window(&mut ids, &["x", "a", "y"]), [None, Some(2), Some(3)]);
    }

    #[test]
    fn a_failed_send_is_forgotten_only_for_its_own_receipt() {
        let mut ids = Ids::new(Dedupe::last(10), false);
        ids.remember("a".into(), at(0), 0, None);
        ids.forget("a", at(1));
        assert_eq!(ids.seen("a", 0).map(|o| o.receipt), Some(at(0)));
        ids.forget("a", at(0));
        assert_eq!(ids.seen("a", 0).map(|o| o.receipt), None);
        // Its stale place in the order does not drop a later remember of the same id.
        ids.remember("a".into(), at(2), 0, None);
        assert_eq!(ids.seen("a", 0).map(|o| o.receipt), Some(at(2)));
    }
}

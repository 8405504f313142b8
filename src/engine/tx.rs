//! Transactions: sends to any number of topics and queues, and acks, that take effect together
//! or not at all.
//!
//! A transaction is a list of [`Part`]s, one per topic or queue it touches; each part holds its
//! records (with their partitions, and in durable mode their encoded bodies) and the messages
//! it acks. Committing ([`TxCore::commit`]) takes every lock the parts need at once, in one
//! global order, so no other send or settle can come between its checks and its effects:
//!
//! 1. consumer groups' locks (to fence their acks), by topic and group address;
//! 2. partition locks, by topic address and partition;
//! 3. queue locks, by queue address.
//!
//! This is the order the rest of the engine nests them in (a group settles in a partition and
//! dead-letters into a queue; nothing holds a partition or a queue lock and then takes a group
//! lock), so a commit cannot deadlock with a send, an ack or another commit.
//!
//! Under the locks, the parts stage their records, checking room as `try_send` does (a
//! queue's capacity is taken then; a transaction never waits for room while it holds the
//! locks), then check their acks (fencing).
//! Any failure takes back what was staged, which nothing else can have followed, since the
//! locks were held throughout: the transaction is left as it was. Only then are the acks
//! settled and the records handed to the store in one request (durable mode, published after
//! the commit by the store's writer) or published (memory mode), still under the locks: so a
//! consumer sees all of a transaction or none of it, and never before its commit.

use std::any::Any;
use std::sync::Arc;

use parking_lot::MutexGuard;

use super::Context;
use super::dedupe::{Ids, Original};
use crate::error::Error;
use crate::record::{Nanos, Receipt};
use crate::store::{Lent, Ticket, TxJob, TxLog};

/// Where a lock ranks in the global order: its kind, then the address of what owns it, then
/// an index within that (a partition).
pub(crate) type LockKey = (Rank, usize, u32);

/// The kinds of lock, in the order they are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rank {
    Group,
    Dedupe,
    Partition,
    Queue,
}

/// Something a commit locks: a group, a partition or a queue.
pub(crate) trait Lockable {
    fn key(&self) -> LockKey;
    fn lock(&self) -> Box<dyn Guard + '_>;
}

/// A held lock: what it guards, for the part that asked for it to downcast.
pub(crate) trait Guard {
    fn data(&mut self) -> &mut dyn Any;
}

impl<D: 'static> Guard for parking_lot::MutexGuard<'_, D> {
    fn data(&mut self) -> &mut dyn Any {
        &mut **self
    }
}

/// The partition lock is loom's in the loom models (`crate::engine::sync`).
#[cfg(embus_loom)]
impl<D: 'static> Guard for crate::engine::sync::MutexGuard<'_, D> {
    fn data(&mut self) -> &mut dyn Any {
        &mut **self
    }
}

/// Every lock a commit holds, by key.
pub(crate) struct Held<'a> {
    guards: Vec<(LockKey, Box<dyn Guard + 'a>)>,
}

impl Held<'_> {
    /// What the lock `key` guards, as a `D`. Panics if the part did not ask for that lock
    /// (a bug in the part, not a state any input can reach).
    pub(crate) fn get<D: 'static>(&mut self, key: LockKey) -> &mut D {
        self.guards
            .iter_mut()
            .find(|(k, _)| *k == key)
            .and_then(|(_, g)| g.data().downcast_mut::<D>())
            .unwrap_or_else(|| unreachable!("a part asks only for the locks it listed"))
    }

    /// What two distinct locks guard, at once.
    pub(crate) fn pair<A: 'static, B: 'static>(
        &mut self,
        a: LockKey,
        b: LockKey,
    ) -> (&mut A, &mut B) {
        let (mut first, mut second) = (None, None);
        for (key, guard) in &mut self.guards {
            if *key == a {
                first = guard.data().downcast_mut::<A>();
            } else if *key == b {
                second = guard.data().downcast_mut::<B>();
            }
        }
        match (first, second) {
            (Some(a), Some(b)) => (a, b),
            _ => unreachable!("a part asks only for the locks it listed"),
        }
    }
}

/// A dedupe window's lock, `C`'s (a topic's or a queue's).
pub(crate) struct WindowLock<C> {
    core: Arc<C>,
    lock: for<'a> fn(&'a C) -> Option<MutexGuard<'a, Ids>>,
}

impl<C> WindowLock<C> {
    /// The window `lock` takes in `core`, which has one.
    pub(crate) fn new(
        core: &Arc<C>,
        lock: for<'a> fn(&'a C) -> Option<MutexGuard<'a, Ids>>,
    ) -> Self {
        Self {
            core: Arc::clone(core),
            lock,
        }
    }
}

impl<C: Send + Sync + 'static> Lockable for WindowLock<C> {
    fn key(&self) -> LockKey {
        (Rank::Dedupe, address(&self.core), 0)
    }

    fn lock(&self) -> Box<dyn Guard + '_> {
        match (self.lock)(&self.core) {
            Some(ids) => Box::new(ids),
            None => unreachable!("locked only where there is a window"),
        }
    }
}

/// Where a topic, queue or group ranks among its kind: its address.
pub(crate) fn address<D>(of: &Arc<D>) -> usize {
    Arc::as_ptr(of).cast::<()>() as usize
}

/// One record of a transaction, for a topic's partition or a queue (`E`: the entry as the
/// target holds it).
pub(crate) struct Pending<E> {
    /// The send's number in its transaction.
    pub(crate) index: usize,
    /// Its partition (0 for a queue).
    pub(crate) partition: u32,
    /// The entry, until staged (and again if taken back).
    pub(crate) entry: Option<E>,
    /// The encoded body (a store that keeps bytes).
    pub(crate) body: Option<Vec<u8>>,
    /// Where it was staged: offset (or queue id) and timestamp.
    pub(crate) staged: Option<(u64, Nanos)>,
    /// Its counted size.
    pub(crate) size: u32,
    /// Its message id, under a dedupe window.
    pub(crate) id: Option<Box<str>>,
    /// The original's receipt, if it is a duplicate (it stores nothing).
    pub(crate) duplicate: Option<Receipt>,
}

impl<E> Pending<E> {
    /// Its receipt once staged: the original's for a duplicate.
    pub(crate) fn receipt(&self) -> Option<Receipt> {
        let staged = self.staged.map(|(offset, _)| Receipt {
            partition: self.partition,
            offset,
        });
        self.duplicate.or(staged)
    }
}

/// The message record `at` of `records` stands for without being stored: an earlier record of
/// the same id in this transaction (stored by the same commit), or else what `window` says of
/// the id (the original, with its commit if that may still be pending).
pub(crate) fn duplicate_of<E>(
    records: &[Pending<E>],
    at: usize,
    window: impl FnOnce(&str) -> Option<Original>,
) -> Option<Original> {
    let id = records[at].id.as_deref()?;
    let earlier = records[..at].iter().filter(|r| r.id.as_deref() == Some(id));
    let same_commit = |receipt| Original {
        receipt,
        commit: None,
    };
    earlier
        .filter_map(Pending::receipt)
        .next()
        .map(same_commit)
        .or_else(|| window(id))
}

/// The records not committed, with their send numbers (a transaction hands them back).
pub(crate) fn take_records<E, R>(
    records: &mut Vec<Pending<E>>,
    out: &mut Vec<(usize, R)>,
    into_record: impl Fn(E) -> R,
) {
    for record in records.drain(..) {
        if let Some(entry) = record.entry {
            out.push((record.index, into_record(entry)));
        }
    }
}

/// The receipts of committed records: (send number, receipt).
pub(crate) fn receipts<E>(records: &[Pending<E>], out: &mut Vec<(usize, Receipt)>) {
    out.extend(records.iter().filter_map(|r| Some((r.index, r.receipt()?))));
}

/// One topic's or queue's share of a transaction.
pub(crate) trait Part: Send + Sync {
    /// For the facade, to find a part by its payload type.
    fn as_any(&mut self) -> &mut dyn Any;
    /// The address of the topic or queue, which identifies the part.
    fn target(&self) -> usize;
    /// The locks the part needs.
    fn locks(&self, out: &mut Vec<Box<dyn Lockable>>);
    /// Under the locks: stages the records where there is room (a queue's capacity taken for
    /// each). `Err`: none is staged.
    fn stage(&mut self, held: &mut Held<'_>, now: Nanos) -> Result<(), Error>;
    /// Under the locks, after [`stage`](Self::stage): takes the staged records back, and their
    /// capacity (another part failed); nothing was staged after them.
    fn retract(&mut self, held: &mut Held<'_>);
    /// Under the locks: whether every ack may still be committed (fencing).
    fn check_acks(&mut self, held: &mut Held<'_>) -> Result<(), Error>;
    /// Under the locks, once every part staged and checked: settles the acks and hands the
    /// records to `log` (durable mode) or publishes them (memory mode).
    fn apply(&mut self, held: &mut Held<'_>, log: Option<&mut dyn TxLog>);
    /// Under the locks, once the store sealed the commit as `commit` (durable mode): tells
    /// the dedupe window which commit stores the records' ids, so that a duplicate sent
    /// meanwhile waits for it.
    fn sealed(&mut self, held: &mut Held<'_>, commit: Option<Ticket>);
    /// The latest commit, pending when the records were staged, of an original that a
    /// duplicate among them stands for: the transaction returns once it is done, as a send
    /// would.
    fn originals(&self) -> Option<Ticket>;
    /// After the locks are let go, committed or not: wakes whoever the commit concerned, and
    /// moves on what it found expired; once `committed`, forgets the settled acks.
    fn after(&mut self, committed: bool);
    /// After a failed durable commit: takes the staged records back.
    fn unstage(&mut self);
    /// The receipts of the committed records: (send number, receipt).
    fn receipts(&self, out: &mut Vec<(usize, Receipt)>);
    /// The transaction is dropped uncommitted: releases its acked messages as a nack would.
    fn abort(&mut self);
    /// Whether the part holds nothing (every record and ack was taken out).
    fn is_empty(&self) -> bool;
    /// How many records it holds.
    fn records(&self) -> usize;
}

/// A transaction's engine side: its broker and parts.
pub(crate) struct TxCore {
    pub(crate) context: Arc<Context>,
    pub(crate) parts: Vec<Box<dyn Part>>,
    /// How many records were added so far (their send numbers).
    pub(crate) sends: usize,
    /// The store's write transaction, once the application asked for it (the outbox).
    lent: Option<Lent>,
}

impl TxCore {
    pub(crate) fn new(context: Arc<Context>) -> Self {
        Self {
            context,
            parts: Vec::new(),
            sends: 0,
            lent: None,
        }
    }

    /// The store's redb write transaction, lent for the application's own tables: the
    /// records commit in it. Borrowed from the store on first use.
    pub(crate) fn redb(&mut self) -> Result<&::redb::WriteTransaction, Error> {
        if self.lent.is_none() {
            self.context.check_open()?;
            self.lent = Some(self.context.store.lend()?);
        }
        match &self.lent {
            Some(Lent(txn)) => Ok(txn),
            None => unreachable!("lent just above"),
        }
    }

    /// The part of target `address`, created by `make` if the transaction has none yet.
    pub(crate) fn part<P: Part + 'static>(
        &mut self,
        address: usize,
        make: impl FnOnce() -> P,
    ) -> &mut P {
        let at = match self.parts.iter().position(|p| p.target() == address) {
            Some(at) => at,
            None => {
                self.parts.push(Box::new(make()));
                self.parts.len() - 1
            }
        };
        match self.parts[at].as_any().downcast_mut::<P>() {
            Some(part) => part,
            None => unreachable!("a target's part has the target's payload type"),
        }
    }

    /// How many records the transaction holds.
    pub(crate) fn len(&self) -> usize {
        self.parts.iter().map(|p| p.records()).sum()
    }

    /// Commits: everything takes effect, or nothing does and the transaction is as it was.
    pub(crate) fn commit(&mut self) -> Result<Vec<Receipt>, Error> {
        self.context.check_open()?;
        let store = Arc::clone(&self.context.store);
        let mut job = Job {
            parts: &mut self.parts,
            clock: &self.context.clock,
        };
        let result = store.transact(&mut job, &mut self.lent);
        for part in &mut self.parts {
            part.after(result.is_ok());
        }
        result?;
        self.context.idle.moved();
        let mut receipts = Vec::with_capacity(self.sends);
        for part in &self.parts {
            part.receipts(&mut receipts);
        }
        receipts.sort_unstable_by_key(|(at, _)| *at);
        self.parts.clear();
        self.context.idle.notify();
        Ok(receipts.into_iter().map(|(_, r)| r).collect())
    }

    /// Drops the transaction: acked messages are released as a nack would, and a lent write
    /// transaction is aborted.
    pub(crate) fn abort(&mut self) {
        if let Some(lent) = self.lent.take() {
            self.context.store.give_back(lent);
        }
        for part in &mut self.parts {
            part.abort();
        }
        self.parts.clear();
    }
}

/// A commit as the store sees it.
struct Job<'a> {
    parts: &'a mut Vec<Box<dyn Part>>,
    clock: &'a crate::clock::Clock,
}

impl TxJob for Job<'_> {
    fn run(&mut self, log: Option<&mut dyn TxLog>) -> Result<(), Error> {
        let parts = &mut *self.parts;
        let mut locks: Vec<Box<dyn Lockable>> = Vec::new();
        for part in parts.iter() {
            part.locks(&mut locks);
        }
        locks.sort_unstable_by_key(|l| l.key());
        locks.dedup_by_key(|l| l.key());
        let now = self.clock.now();
        let mut held = Held {
            guards: locks.iter().map(|l| (l.key(), l.lock())).collect(),
        };
        check(parts, &mut held, now)?;
        match log {
            Some(log) => {
                for part in parts.iter_mut() {
                    part.apply(&mut held, Some(&mut *log));
                }
                let commit = log.seal();
                for part in parts.iter_mut() {
                    part.sealed(&mut held, commit);
                }
            }
            None => {
                for part in parts.iter_mut() {
                    part.apply(&mut held, None);
                }
            }
        }
        Ok(())
    }

    fn unstage(&mut self) {
        for part in self.parts.iter_mut() {
            part.unstage();
        }
    }

    fn originals(&self) -> Option<Ticket> {
        self.parts.iter().filter_map(|p| p.originals()).max()
    }
}

/// Stages every part's records and checks every ack; on failure takes back what was staged.
fn check(parts: &mut [Box<dyn Part>], held: &mut Held<'_>, now: Nanos) -> Result<(), Error> {
    let mut staged = 0;
    let result = parts.iter_mut().try_for_each(|part| {
        part.stage(held, now)?;
        staged += 1;
        Ok(())
    });
    let result = result.and_then(|()| parts.iter_mut().try_for_each(|p| p.check_acks(held)));
    if result.is_err() {
        for part in parts[..staged].iter_mut().rev() {
            part.retract(held);
        }
    }
    result
}

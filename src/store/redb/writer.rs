//! The writer thread: owns every write transaction, commits whatever has queued in one
//! (group commit), then publishes the staged records and releases their senders.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use redb::{Database, ReadableTable, WriteTransaction};

use super::pending::Pending;
use super::schema::{
    ACKED, CLEAN, DECLARATIONS, GROUPS, META, deliveries, end_of, records, save_ends, seal_acked,
    seal_named, seal_position, trim,
};
use super::trims::{Floors, Trims};
use super::{Inner, quiet};
use crate::observe;
use crate::options::Durability;
use crate::record::{Headers, Nanos};
use crate::store::format;
use crate::store::{IdRow, Sink};

/// At most this many requests go into one commit.
const MAX_BATCH: usize = 1 << 14;

/// What the writer does with one queued item.
pub(super) enum Request {
    /// A run of records staged under one lock (a send, or one partition's share of a batch).
    Append {
        sink: Arc<dyn Sink>,
        records: Vec<Staged>,
    },
    Ack {
        queue: Arc<dyn Sink>,
        id: u64,
    },
    /// Delivery counts or acks are waiting in `Inner::pending` (sent when it stops being
    /// empty).
    Pending,
    DeadLetter {
        queue: Arc<dyn Sink>,
        id: u64,
        to: Arc<dyn Sink>,
        to_id: u64,
        /// The dead letter as the engine holds it (unsealed); `None`: copy the source row,
        /// with `headers`.
        record: Option<Staged>,
        headers: Headers,
    },
    /// A group's dead letter, and the group's new position if it moved (one commit).
    GroupDeadLetter {
        to: Arc<dyn Sink>,
        record: Staged,
        /// `(topic, group, partition, offset)`.
        position: Option<(String, String, u32, u64)>,
    },
    /// Forgets a group's positions: `(topic, group)`.
    ForgetGroup(String, String),
    /// Forgets a declaration.
    Undeclare(String),
    Position {
        topic: String,
        group: String,
        partition: u32,
        offset: u64,
    },
    /// Keeps a transaction's ack ahead of a group's position.
    Acked {
        topic: String,
        group: String,
        partition: u32,
        offset: u64,
    },
    /// Drops a group's kept acks below `below` in a partition.
    AckedBelow {
        topic: String,
        group: String,
        partition: u32,
        below: u64,
    },
    Declare(String, Vec<u8>),
    /// Deletes a topic or queue: its declaration, tables, ends and (a topic's) group positions,
    /// after everything else in the commit; from then on the writer drops whatever its `sinks`
    /// still send.
    Delete {
        name: String,
        tables: Vec<String>,
        sinks: Vec<Arc<dyn Sink>>,
        topic: bool,
    },
    /// A transaction: requests that must ride one commit (the writer flattens them into its
    /// batch; a batch is always one commit).
    Many(Vec<Request>),
    /// Lends the next write transaction to a transaction's `redb()` (the outbox): the writer
    /// commits what came before, begins a write transaction, hands it over, and waits for
    /// its [`Request::Return`], holding back what arrives meanwhile for the same commit.
    Lend(Sender<Result<WriteTransaction, String>>),
    /// A lent write transaction comes back: with the transaction's requests to write into it
    /// and commit (with what was held back), or `None` to abort it.
    Return {
        txn: Box<WriteTransaction>,
        requests: Option<Vec<Request>>,
    },
    /// Nothing to write: makes `flush` wait for a commit.
    Sync,
    /// A flush that marks the store closed cleanly (the last commit of `close`).
    Close,
}

impl Request {
    /// The partitions in which this moves a group's position: `(topic, partition)`, every
    /// partition for `None` (a group deleted).
    fn positions<'r>(&'r self, moved: &mut Vec<(&'r str, Option<u32>)>) {
        match self {
            Self::Position {
                topic, partition, ..
            }
            | Self::GroupDeadLetter {
                position: Some((topic, _, partition, _)),
                ..
            } => moved.push((topic, Some(*partition))),
            Self::ForgetGroup(topic, _) => moved.push((topic, None)),
            Self::Many(requests) => {
                for request in requests {
                    request.positions(moved);
                }
            }
            _ => {}
        }
    }
}

/// One staged record: key, timestamp, counted size and bytes (sealed by the writer), and the
/// message id to store with it (dedupe, [`ids`](super::ids)).
pub(super) struct Staged {
    pub(super) key: u64,
    pub(super) ts: Nanos,
    pub(super) size: u32,
    pub(super) value: Vec<u8>,
    pub(super) id: Option<IdRow>,
}

/// The writer thread: owns every write transaction.
pub(super) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) inner: Arc<Inner>,
    pub(super) rx: Receiver<(u64, Request)>,
    /// Per table: next key and retained bytes, as stored.
    pub(super) ends: HashMap<String, (u64, u64)>,
    /// The logs whose retention the next commit applies to the file.
    pub(super) trims: Trims,
    /// Sinks of deleted topics and queues: what they still send is dropped (kept for the
    /// writer's life, so their addresses are not reused).
    pub(super) deleted: Vec<Arc<dyn Sink>>,
    /// Whether the file says it is in use (`"clean"` is 0): the first commit says so, a
    /// [`Request::Close`] undoes it.
    pub(super) in_use: bool,
}

/// Per sink touched by a commit: publish up to this key.
struct Touched {
    sink: Arc<dyn Sink>,
    upto: u64,
    /// Counted bytes appended.
    bytes: u64,
}

impl Writer {
    pub(super) fn run(mut self) {
        let inner = Arc::clone(&self.inner);
        let _fuse = Fuse(&inner);
        let mut last_commit = Instant::now();
        // The most requests a recent commit carried (decaying by one per commit), and how
        // long the last commit took, for the linger below.
        let (mut peak, mut last_took) = (0usize, Duration::ZERO);
        while let Ok(first) = self.rx.recv() {
            let mut floors = self.floors();
            let mut batch = vec![first];
            batch.extend(self.rx.try_iter().take(MAX_BATCH - 1));
            // How long to wait for more before committing. Interval mode: until the interval
            // since the last commit has passed. Immediate mode: when fewer requests came than
            // recent commits carried, a little (half a commit, at most 2 ms), because the
            // senders the last commit released are about to send again; otherwise concurrent
            // senders split into groups that alternate, each paying a whole commit. A single
            // sender never waits (its commits carry one request).
            let (until, enough) = match self.inner.durability {
                Durability::Interval(every) => (Some(last_commit + every), MAX_BATCH),
                Durability::Immediate if batch.len() < peak => {
                    let linger = (last_took / 2).min(Duration::from_millis(2));
                    (Some(Instant::now() + linger), peak.min(MAX_BATCH))
                }
                Durability::Immediate => (None, 0),
            };
            // A flush (close, tests) or a borrower waiting for the writer commits now.
            let flushing = batch
                .iter()
                .any(|(_, r)| matches!(r, Request::Sync | Request::Close | Request::Lend(_)));
            if let Some(until) = until.filter(|_| !flushing) {
                while batch.len() < enough {
                    match self.rx.recv_deadline(until) {
                        // A flush (close, tests) commits now, whatever the interval; so does
                        // one a borrower waits behind.
                        Ok(request)
                            if matches!(
                                request.1,
                                Request::Sync | Request::Close | Request::Lend(_)
                            ) =>
                        {
                            batch.push(request);
                            break;
                        }
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
            }
            peak = batch.len().max(peak.saturating_sub(1));
            self.nominate_acked(&batch);
            if batch.iter().any(|(_, r)| matches!(r, Request::Close)) {
                // Close's commit trims every log it knows to where it is. A floor read now may
                // count on requests sent after the batch (a send racing close): then the seq
                // rule below keeps the floors from this commit, and the next one trims.
                self.trims.nominate_all();
                floors = self.floors();
            }
            // The floors hold only if every request numbered before they were read is in this
            // batch (or an earlier one): not when the batch stopped at its limit before them.
            let trims = (batch[batch.len() - 1].0 >= floors.seq).then_some(floors);
            let lends = take_lends(&mut batch);
            if !batch.is_empty() {
                last_took = self.commit_reported(batch, None, trims);
                last_commit = Instant::now();
            }
            if !lends.is_empty() {
                self.lend(lends);
                last_commit = Instant::now();
            }
        }
    }

    /// Nominates the partitions in which `batch` moves a group's position, for the commit
    /// after it ([`Trims::nominate_acked`]).
    fn nominate_acked(&mut self, batch: &[(u64, Request)]) {
        let mut moved = Vec::new();
        for (_, request) in batch {
            request.positions(&mut moved);
        }
        // A consumer acking each message sends a position per message: one nomination each.
        moved.sort_unstable();
        moved.dedup();
        self.trims.nominate_acked(moved.into_iter());
    }

    /// The floors of the logs to trim next ([`Trims::floors`]).
    fn floors(&self) -> Floors {
        self.trims.floors(|| self.inner.order.lock().seq)
    }

    /// Commits `batch` (into the lent write transaction `lent` if one came back) with the
    /// retention `trims` it may apply, then tells its senders; returns how long the commit took.
    fn commit_reported(
        &mut self,
        batch: Vec<(u64, Request)>,
        lent: Option<Box<WriteTransaction>>,
        trims: Option<Floors>,
    ) -> Duration {
        let first_seq = batch[0].0;
        let last_seq = batch[batch.len() - 1].0;
        // Taken after the batch: an ack or dead letter in it dropped its message's count, and
        // it holds every ack made before any request in the batch.
        let pending = std::mem::take(&mut *self.inner.pending.lock());
        if self.inner.done.lock().failed.is_some() {
            return Duration::ZERO; // poisoned: nothing more is written
        }
        let records = records_in(batch.iter().map(|(_, r)| r));
        let started = Instant::now();
        observe::traced! { let requests = batch.len(); }
        // The stored values, dropped once the senders are told (freeing a commit's worth of
        // them is no reason to keep a sender waiting).
        let mut spent = Vec::with_capacity(usize::try_from(records).unwrap_or(0));
        // redb asserts on some damaged pages: a panic fails this commit like an error.
        let result = quiet::catch(|| self.commit(pending, batch, lent, trims, &mut spent));
        let took = started.elapsed();
        if matches!(result, Ok(Ok(()))) {
            self.inner.figures.lock().committed(records, took);
        }
        let mut done = self.inner.done.lock();
        match result {
            Ok(Ok(())) => done.committed = last_seq,
            Ok(Err(e)) => done.failed = Some((first_seq, e.to_string())),
            Err(panic) => {
                done.failed = Some((first_seq, format!("redb panicked in a commit ({panic})")))
            }
        }
        let failed = done.failed.is_some();
        // Reported after the lock is let go (a failure is copied, once: the store is done).
        observe::traced! { let failure = done.failed.as_ref().map(|(_, e)| e.clone()); }
        let (woken, waiting) = std::mem::take(&mut done.wakers)
            .into_iter()
            .partition(|(seq, _)| failed || *seq <= last_seq);
        done.wakers = waiting;
        drop(done);
        // Before the senders learn of it: what a send that returned did is already reported.
        observe::traced! {
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            match failure {
                Some(error) => observe::event!(
                    "embus::store", ERROR,
                    requests, micros, error = error.as_str(), "poisoned"
                ),
                None => observe::event!("embus::store", DEBUG, requests, micros, "commit"),
            }
        }
        self.inner.changed.notify_all();
        for (_, waker) in woken {
            wake_guarded(|| waker.wake());
        }
        drop(spent);
        took
    }

    /// Lends a write transaction to each borrower behind `replies` in turn, and waits for it
    /// back each time; what other senders send meanwhile rides the same commit (it waits
    /// anyway: redb has one writer). Borrowers that ask meanwhile join the end of the line, so
    /// each is served in the order it asked: by this loop, not by recursion, which borrowers
    /// that keep asking would drive until the stack overflows.
    fn lend(&mut self, replies: Vec<Sender<Result<WriteTransaction, String>>>) {
        let mut borrowers = VecDeque::from(replies);
        while let Some(reply) = borrowers.pop_front() {
            self.lend_once(reply, &mut borrowers);
        }
    }

    /// Lends one write transaction (see [`lend`](Self::lend)); borrowers that ask meanwhile
    /// join `borrowers`.
    fn lend_once(
        &mut self,
        reply: Sender<Result<WriteTransaction, String>>,
        borrowers: &mut VecDeque<Sender<Result<WriteTransaction, String>>>,
    ) {
        if let Some((_, cause)) = &self.inner.done.lock().failed {
            let _ = reply.send(Err(cause.clone()));
            return;
        }
        let txn = match quiet::catch(|| self.db.begin_write()) {
            Ok(Ok(mut txn)) => {
                txn.set_quick_repair(true);
                txn
            }
            Ok(Err(e)) => {
                let _ = reply.send(Err(e.to_string()));
                return;
            }
            Err(panic) => {
                let _ = reply.send(Err(format!("redb panicked beginning a write ({panic})")));
                return;
            }
        };
        // Everything sent before these were read is committed or comes before the loan's
        // return (the requests of a batch commit before its loans).
        let floors = self.floors();
        if reply.send(Ok(txn)).is_err() {
            return; // the borrower is gone: its write transaction was dropped (aborted)
        }
        let mut held = Vec::new();
        while let Ok((seq, request)) = self.rx.recv() {
            match request {
                Request::Return { txn, requests } => {
                    let lent = match requests {
                        Some(requests) => {
                            held.push((seq, Request::Many(requests)));
                            Some(txn)
                        }
                        None => {
                            drop(txn); // aborted: the borrower's writes are gone
                            held.push((seq, Request::Sync));
                            None
                        }
                    };
                    self.nominate_acked(&held);
                    self.commit_reported(std::mem::take(&mut held), lent, Some(floors));
                    break;
                }
                Request::Lend(reply) => borrowers.push_back(reply),
                request => held.push((seq, request)),
            }
        }
        if !held.is_empty() {
            // Every sender is gone without the transaction coming back: store what came.
            self.commit_reported(held, None, None);
        }
    }

    /// Writes and commits one batch with the retention `trims` it may apply, then publishes
    /// what it stored; the appended values are left in `spent`. Without trims, the sinks to
    /// trim wait for the next commit.
    fn commit(
        &mut self,
        pending: Pending,
        batch: Vec<(u64, Request)>,
        lent: Option<Box<WriteTransaction>>,
        trims: Option<Floors>,
        spent: &mut Vec<Vec<u8>>,
    ) -> Result<(), redb::Error> {
        let mut txn = match lent {
            Some(txn) => *txn, // the application's writes are in it already
            None => self.db.begin_write()?,
        };
        txn.set_quick_repair(true);
        // Before the batch: an ack in it removes what a count written here would leave.
        pending.write(&txn, |queue| is_deleted(&self.deleted, queue))?;
        let mut touched: Vec<Touched> = Vec::new();
        let closing = batch.iter().any(|(_, r)| matches!(r, Request::Close));
        let marker = match (closing, self.in_use) {
            (true, _) => Some(1),
            (false, false) => Some(0),
            (false, true) => None,
        };
        if let Some(clean) = marker {
            txn.open_table(META)?.insert(CLEAN, clean)?;
        }
        let mut ends = std::mem::take(&mut self.ends);
        let mut dirty = Vec::new();
        let mut deletes = Vec::new();
        let written = write_batch(
            &txn,
            batch,
            &self.deleted,
            &mut touched,
            &mut ends,
            &mut dirty,
            &mut deletes,
            spent,
        );
        let floors = trims.as_ref().map_or(&[][..], |t| &t.floors[..]);
        let result = written.and_then(|()| {
            let mut saved: Vec<&str> = dirty.iter().map(String::as_str).collect();
            for (sink, floor) in floors {
                trim(&txn, sink.log().table(), *floor, &mut ends)?;
            }
            let sinks = touched.iter().map(|t| &t.sink);
            for sink in sinks.chain(floors.iter().map(|(sink, _)| sink)) {
                if !saved.contains(&sink.log().table()) {
                    saved.push(sink.log().table());
                }
            }
            for delete in &deletes {
                super::delete::apply(&txn, delete, &mut ends)?;
                saved.retain(|t| !delete.tables.iter().any(|d| d == t));
            }
            save_ends(&txn, &saved, &ends)?;
            txn.commit()?;
            Ok(())
        });
        match result {
            Ok(()) => {
                self.ends = ends;
                self.in_use = !closing;
                for delete in deletes {
                    self.deleted.extend(delete.sinks);
                }
                let deleted = &self.deleted;
                touched.retain(|t| !is_deleted(deleted, &t.sink));
                for t in &touched {
                    // The records are stored whatever a consumer's waker does when woken.
                    wake_guarded(|| t.sink.publish(t.upto));
                }
                let published = touched.iter().map(|t| &t.sink);
                self.trims
                    .committed(trims.as_ref(), published, |s| is_deleted(deleted, s));
                Ok(())
            }
            Err(e) => Err(e), // `ends` is stale now, but nothing is written after a failure
        }
    }
}

/// Records sent in a batch (transactions' included).
fn records_in<'a>(batch: impl IntoIterator<Item = &'a Request>) -> u64 {
    batch
        .into_iter()
        .map(|request| match request {
            Request::Append { records, .. } => records.len() as u64,
            Request::Many(requests) => records_in(requests),
            Request::Return {
                requests: Some(requests),
                ..
            } => records_in(requests),
            _ => 0,
        })
        .sum()
}

/// Runs `wake`, which calls wakers of tasks (user code): a panic there must not stop the
/// writer thread, on which every durable send depends.
pub(super) fn wake_guarded(wake: impl FnOnce()) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| quiet::loud(wake)));
}

/// Fails every waiting and later send if the writer thread ever ends by a panic (it should
/// not: commits and wakers are guarded), instead of leaving them waiting forever.
struct Fuse<'a>(&'a Inner);

impl Drop for Fuse<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut done = self.0.done.lock();
        if done.failed.is_none() {
            done.failed = Some((done.committed + 1, "the writer thread panicked".to_owned()));
        }
        let wakers = std::mem::take(&mut done.wakers);
        drop(done);
        self.0.changed.notify_all();
        for (_, waker) in wakers {
            wake_guarded(|| waker.wake());
        }
    }
}

/// Whether `sink` belongs to a deleted topic or queue.
fn is_deleted(deleted: &[Arc<dyn Sink>], sink: &Arc<dyn Sink>) -> bool {
    !deleted.is_empty() && deleted.iter().any(|d| Arc::ptr_eq(d, sink))
}

/// Takes the borrowers' requests out of `batch`, in order.
fn take_lends(batch: &mut Vec<(u64, Request)>) -> Vec<Sender<Result<WriteTransaction, String>>> {
    if !batch.iter().any(|(_, r)| matches!(r, Request::Lend(_))) {
        return Vec::new();
    }
    let mut lends = Vec::new();
    let mut rest = Vec::with_capacity(batch.len());
    for (seq, request) in batch.drain(..) {
        match request {
            Request::Lend(reply) => lends.push(reply),
            request => rest.push((seq, request)),
        }
    }
    *batch = rest;
    lends
}

/// The batch with each transaction's requests in its place (numbered as the transaction).
fn flatten(batch: Vec<(u64, Request)>) -> Vec<(u64, Request)> {
    if !batch.iter().any(|(_, r)| matches!(r, Request::Many(_))) {
        return batch;
    }
    let mut out = Vec::with_capacity(batch.len());
    for (seq, request) in batch {
        match request {
            Request::Many(requests) => out.extend(requests.into_iter().map(|r| (seq, r))),
            request => out.push((seq, request)),
        }
    }
    out
}

/// Writes a batch's requests. Appends are grouped per table (one table open each); the rest
/// apply in order (an ack or a move only ever follows the commit of what it refers to).
/// Deletes are handed back, to apply last; requests of deleted sinks are dropped. The appended
/// values end in `spent`.
#[allow(clippy::too_many_arguments)]
fn write_batch(
    txn: &WriteTransaction,
    batch: Vec<(u64, Request)>,
    deleted: &[Arc<dyn Sink>],
    touched: &mut Vec<Touched>,
    ends: &mut HashMap<String, (u64, u64)>,
    dirty: &mut Vec<String>,
    deletes: &mut Vec<super::delete::Delete>,
    spent: &mut Vec<Vec<u8>>,
) -> Result<(), redb::Error> {
    let mut appends: Vec<(usize, Vec<u8>, u64)> = Vec::with_capacity(spent.capacity());
    // Group positions, the last of each (topic, group, partition) since the last request
    // that writes or removes positions otherwise: only the last one's row would remain.
    let mut positions: Vec<(String, String, u32, u64)> = Vec::new();
    // Message ids of the appended records (dedupe): `(sink, row, key, ts)`.
    let mut ids: Vec<(Arc<dyn Sink>, IdRow, u64, Nanos)> = Vec::new();
    for (_, request) in flatten(batch) {
        match request {
            Request::Append { sink, .. } | Request::Ack { queue: sink, .. }
                if is_deleted(deleted, &sink) => {}
            Request::DeadLetter { queue, to, .. }
                if is_deleted(deleted, &queue) || is_deleted(deleted, &to) => {}
            Request::Delete {
                name,
                tables,
                sinks,
                topic,
            } => deletes.push(super::delete::Delete {
                name,
                tables,
                sinks,
                topic,
            }),
            Request::Append { sink, records } => {
                let at = match touched.iter().position(|t| Arc::ptr_eq(&t.sink, &sink)) {
                    Some(at) => at,
                    None => {
                        touched.push(Touched {
                            sink,
                            upto: 0,
                            bytes: 0,
                        });
                        touched.len() - 1
                    }
                };
                let t = &mut touched[at];
                for mut record in records {
                    let seed = t.sink.log().seed();
                    format::seal(&mut record.value, seed, record.key, record.ts, record.size);
                    t.upto = t.upto.max(record.key + 1);
                    t.bytes += u64::from(record.size);
                    if let Some(id) = record.id {
                        ids.push((Arc::clone(&t.sink), id, record.key, record.ts));
                    }
                    appends.push((at, record.value, record.key));
                }
            }
            Request::Ack { queue, id } => {
                txn.open_table(records(queue.log().table()))?.remove(id)?;
                txn.open_table(deliveries(queue.log().counts_table()))?
                    .remove(id)?;
            }
            Request::DeadLetter {
                queue,
                id,
                to,
                to_id,
                record,
                headers,
            } => {
                let moved = {
                    let mut from = txn.open_table(records(queue.log().table()))?;
                    let removed = from.remove(id)?;
                    match record {
                        Some(mut record) => {
                            let seed = to.log().seed();
                            format::seal(&mut record.value, seed, to_id, record.ts, record.size);
                            Some(record.value)
                        }
                        None => removed.and_then(|v| {
                            let row = format::open(queue.log().seed(), id, v.value()).ok()?;
                            let seed = to.log().seed();
                            Some(format::with_headers(&row, seed, to_id, &headers))
                        }),
                    }
                };
                txn.open_table(deliveries(queue.log().counts_table()))?
                    .remove(id)?;
                if let Some(value) = moved {
                    let to = to.log().table();
                    txn.open_table(records(to))?
                        .insert(to_id, value.as_slice())?;
                    let end = end_of(txn, ends, to)?;
                    end.0 = end.0.max(to_id + 1);
                    if !dirty.iter().any(|d| d == to) {
                        dirty.push(to.to_owned());
                    }
                }
            }
            Request::GroupDeadLetter {
                to,
                mut record,
                position,
            } => {
                if position.is_some() {
                    write_positions(txn, &mut positions)?;
                }
                let seed = to.log().seed();
                format::seal(&mut record.value, seed, record.key, record.ts, record.size);
                let to = to.log().table();
                txn.open_table(records(to))?
                    .insert(record.key, record.value.as_slice())?;
                let end = end_of(txn, ends, to)?;
                end.0 = end.0.max(record.key + 1);
                if !dirty.iter().any(|d| d == to) {
                    dirty.push(to.to_owned());
                }
                if let Some((topic, group, partition, offset)) = position {
                    let sealed = seal_position(&topic, &group, partition, offset);
                    txn.open_table(GROUPS)?.insert(
                        (topic.as_str(), group.as_str(), partition),
                        sealed.as_slice(),
                    )?;
                }
            }
            Request::Acked {
                topic,
                group,
                partition,
                offset,
            } => {
                let sealed = seal_acked(&topic, &group, partition, offset);
                let key = (topic.as_str(), group.as_str(), partition, offset);
                txn.open_table(ACKED)?.insert(key, sealed.as_slice())?;
            }
            Request::AckedBelow {
                topic,
                group,
                partition,
                below,
            } => {
                let (t, g) = (topic.as_str(), group.as_str());
                txn.open_table(ACKED)?
                    .retain_in((t, g, partition, 0)..(t, g, partition, below), |_, _| false)?;
            }
            Request::ForgetGroup(topic, group) => {
                write_positions(txn, &mut positions)?;
                let (t, g) = (topic.as_str(), group.as_str());
                txn.open_table(ACKED)?
                    .retain_in((t, g, 0, 0)..=(t, g, u32::MAX, u64::MAX), |_, _| false)?;
                let mut table = txn.open_table(GROUPS)?;
                let range = (topic.as_str(), group.as_str(), 0)
                    ..=(topic.as_str(), group.as_str(), u32::MAX);
                let keys: Vec<u32> = table
                    .range(range)?
                    .map(|row| row.map(|(k, _)| k.value().2))
                    .collect::<Result<_, _>>()?;
                for partition in keys {
                    table.remove((topic.as_str(), group.as_str(), partition))?;
                }
            }
            Request::Undeclare(name) => {
                txn.open_table(DECLARATIONS)?.remove(name.as_str())?;
            }
            Request::Position {
                topic,
                group,
                partition,
                offset,
            } => {
                let same = |p: &&mut (String, String, u32, u64)| {
                    p.0 == topic && p.1 == group && p.2 == partition
                };
                match positions.iter_mut().find(same) {
                    Some(p) => p.3 = offset,
                    None => positions.push((topic, group, partition, offset)),
                }
            }
            Request::Declare(name, bytes) => {
                let sealed = seal_named(DECLARATIONS, &name, &bytes);
                txn.open_table(DECLARATIONS)?
                    .insert(name.as_str(), sealed.as_slice())?;
            }
            Request::Sync
            | Request::Close
            | Request::Pending
            | Request::Many(_)
            | Request::Lend(_)
            | Request::Return { .. } => {}
        }
    }
    write_positions(txn, &mut positions)?;
    appends.sort_by_key(|(at, _, _)| *at); // stable: keys stay ascending per table
    let mut appends = appends.into_iter().peekable();
    for (at, t) in touched.iter().enumerate() {
        let log = t.sink.log();
        let mut table = txn.open_table(records(log.table()))?;
        let mut compaction = super::compact::Compaction::open(txn, log)?;
        // A plain partition's records go in batch rows; a compacted one's, replaced one by
        // one, and a queue's, acked one by one, in rows of their own.
        let mut run = super::rows::Run::default();
        let batches = compaction.is_none() && log.counts_table().is_empty();
        while let Some((_, value, key)) = appends.next_if(|(of, _, _)| *of == at) {
            if batches {
                if !run.takes(key, &value) {
                    run.store(&mut table, log.seed(), spent)?;
                }
                run.push(key, value);
                continue;
            }
            table.insert(key, value.as_slice())?;
            if let Some(compaction) = compaction.as_mut() {
                compaction.stored(&mut table, key, &value)?;
            }
            spent.push(value);
        }
        run.store(&mut table, log.seed(), spent)?;
        drop(table);
        let freed = compaction.map_or(0, |c| c.freed);
        let end = end_of(txn, ends, log.table())?;
        end.0 = end.0.max(t.upto);
        end.1 = (end.1 + t.bytes).saturating_sub(freed);
    }
    let ids = ids
        .iter()
        .map(|(sink, row, key, ts)| (sink.log().ids_table(), row, *key, *ts));
    super::ids::write(txn, ids.collect())
}

/// Writes the group positions kept so far (see `write_batch`), and forgets them.
fn write_positions(
    txn: &WriteTransaction,
    positions: &mut Vec<(String, String, u32, u64)>,
) -> Result<(), redb::Error> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(GROUPS)?;
    for (topic, group, partition, offset) in positions.drain(..) {
        let sealed = seal_position(&topic, &group, partition, offset);
        table.insert(
            (topic.as_str(), group.as_str(), partition),
            sealed.as_slice(),
        )?;
    }
    Ok(())
}

//! The writer: owns every write transaction, commits whatever has queued in one (group
//! commit), then publishes the staged records and releases their senders. Its state is the
//! [`line`](super::line)'s baton: the writer thread runs it ([`run`]), and so does a lone
//! sender about to wait for its own commit ([`lead`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::Waker;
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use redb::{Database, WriteTransaction};

use super::line::Alone;
use super::pending::Pending;
use super::request::Request;
use super::schema::{CLEAN, META, save_ends, trim};
use super::trims::{Floors, Trims};
use super::write::{Touched, is_deleted, write_batch};
use super::{Inner, quiet};
use crate::observe;
use crate::options::Durability;
use crate::store::Sink;

/// At most this many requests go into one commit.
pub(super) const MAX_BATCH: usize = 1 << 14;

/// The writer's state: owns every write transaction.
pub(super) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) inner: Arc<Inner>,
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
    /// Whether commits are two-phase and save redb's allocator state (redb's quick repair):
    /// a second fsync per commit, so that a commit whose pages were damaged on disk is
    /// refused as corrupt rather than taken for one a power cut interrupted (and rolled
    /// back), and redb need not rebuild its allocator after a crash
    /// ([`Options::two_phase`](super::Options)).
    pub(super) two_phase: bool,
    /// The most requests a recent commit carried (decaying by one per commit), how long the
    /// last commit took, and when it ended: the writer thread's linger ([`Writer::round`]).
    pub(super) peak: usize,
    /// The requests the next commit may expect: one from each sender that waited for a
    /// commit as the last one ended, those it released (about to send again) and those queued
    /// behind it. Async senders and acks are not counted: nobody waits for them. More than
    /// [`peak`](Self::peak) when concurrent senders split into groups that alternate, each
    /// commit carrying one while the other queues ([`linger`]).
    pub(super) expect: usize,
    pub(super) last_took: Duration,
    pub(super) last_commit: Instant,
}

/// Runs the writer thread: it takes the baton whenever there is something to commit that no
/// sender is committing ([`Line`]), until the store closes.
pub(super) fn run(inner: &Inner) {
    let _abandon = Abandon(inner);
    while let Some(writer) = inner.line.wait_for_work() {
        let mut baton = Baton::new(inner, writer);
        baton.round(true);
    }
}

/// Ends the line if the writer thread dies (by a panic: it should not, commits and wakers are
/// guarded): nobody else would serve a loan queued on it, nor drop the writer's state, which
/// holds the file open.
struct Abandon<'a>(&'a Inner);

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            end(self.0);
        }
    }
}

/// Commits one round as a sender about to wait for its commit, if nobody holds the baton: no
/// wake of the writer thread, nor one back. A panic in it poisons the store, as it would on
/// the writer thread, and the sender's wait then fails.
pub(super) fn lead(inner: &Inner) {
    let Some(writer) = inner.line.lead() else {
        return;
    };
    let mut baton = Baton::new(inner, writer);
    let round = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| baton.round(false)));
    if round.is_err() {
        poison(inner);
    }
}

/// The writer's state in hand: given back to the line when dropped; dropped by a panic (it
/// should not be: commits and wakers are guarded), it fails every waiting and later send
/// instead of leaving them waiting forever, and ends the line.
struct Baton<'a> {
    inner: &'a Inner,
    writer: Option<Box<Writer>>,
}

impl<'a> Baton<'a> {
    fn new(inner: &'a Inner, writer: Box<Writer>) -> Self {
        Self {
            inner,
            writer: Some(writer),
        }
    }

    fn round(&mut self, by_writer: bool) {
        if let Some(writer) = self.writer.as_mut() {
            writer.round(by_writer);
        }
    }
}

/// Fails every waiting and later send: the writer panicked, so its state may be half
/// changed.
fn poison(inner: &Inner) {
    let mut done = inner.done.lock();
    if done.failed.is_none() {
        done.failed = Some((done.committed + 1, "the writer panicked".to_owned()));
    }
    let sleepers = std::mem::take(&mut done.sleepers);
    let wakers = std::mem::take(&mut done.wakers);
    drop(done);
    tell(sleepers, wakers);
}

/// Ends the line of a writer thread that dies: poisons first, so that the requests the line
/// drops fail their senders rather than leave them waiting.
fn end(inner: &Inner) {
    poison(inner);
    inner.line.abandon();
}

/// Tells the senders waiting for a commit that it ended (or failed): unparks the threads, then
/// wakes the tasks (user code, guarded).
fn tell(sleepers: Vec<(u64, Thread)>, wakers: Vec<(u64, Waker)>) {
    for (_, thread) in sleepers {
        thread.unpark();
    }
    for (_, waker) in wakers {
        wake_guarded(|| waker.wake());
    }
}

impl Drop for Baton<'_> {
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        if std::thread::panicking() {
            // Only the writer thread unwinds with the baton (a sender's round is caught in
            // `lead`): it is dying, so the line ends here, before a sender could take the
            // baton back and leave it in a line nobody drains.
            end(self.inner);
            drop(writer);
        } else {
            self.inner.line.give_back(writer);
        }
    }
}

impl Alone for Writer {
    fn alone(&self) -> bool {
        self.peak <= 1
    }
}

impl Writer {
    /// Takes what is queued (at most [`MAX_BATCH`] requests) and commits it. The writer thread
    /// (`by_writer`) may linger for more first and serves loans; a sender commits at once and
    /// stops before a loan.
    fn round(&mut self, by_writer: bool) {
        let line = &self.inner.line;
        let mut floors = self.floors();
        let mut batch = line.take(MAX_BATCH, by_writer);
        if batch.is_empty() {
            return;
        }
        // How long to wait for more before committing. Interval mode: until the interval
        // since the last commit has passed. Immediate mode: see `linger`. A sender committing
        // its own send never waits.
        let (until, enough) = match self.inner.durability {
            _ if !by_writer => (None, 0),
            Durability::Interval(every) => (Some(self.last_commit + every), MAX_BATCH),
            Durability::Immediate => {
                match linger(batch.len(), self.peak.max(self.expect), self.last_took) {
                    Some((wait, enough)) => (Some(Instant::now() + wait), enough),
                    None => (None, 0),
                }
            }
        };
        let flushing = batch.iter().any(|(_, r)| commits_now(r));
        if let Some(until) = until.filter(|_| !flushing) {
            while batch.len() < enough {
                match line.next(Some(until)) {
                    Some(request) if commits_now(&request.1) => {
                        batch.push(request);
                        break;
                    }
                    Some(request) => batch.push(request),
                    None => break,
                }
            }
        }
        self.peak = batch.len().max(self.peak.saturating_sub(1));
        self.nominate_acked(&batch);
        if batch.iter().any(|(_, r)| matches!(r, Request::Close)) {
            // Close's commit trims every log it knows to where it is. A floor read now may
            // count on requests sent after the batch (a send racing close): then the seq rule
            // below keeps the floors from this commit, and the next one trims.
            self.trims.nominate_all();
            floors = self.floors();
        }
        // The floors hold only if every request numbered before they were read is in this
        // batch (or an earlier one): not when the batch stopped at its limit before them.
        let trims = (batch[batch.len() - 1].0 >= floors.seq).then_some(floors);
        let lends = take_lends(&mut batch);
        if !batch.is_empty() {
            self.last_took = self.commit_reported(batch, None, trims);
            self.last_commit = Instant::now();
        }
        if !lends.is_empty() {
            self.lend(lends);
            self.last_commit = Instant::now();
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
        self.trims.floors(|| self.inner.line.sent())
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
        // it holds every ack made before any request in the batch (and none made after a
        // request beyond it: those wait for its commit).
        let pending = self.inner.pending.lock().take_upto(last_seq);
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
        // The senders waiting as the commit ends: those it released and those queued behind.
        self.expect = done.sleepers.len();
        let woken = released(&mut done.wakers, failed, last_seq);
        let sleepers = released(&mut done.sleepers, failed, last_seq);
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
        tell(sleepers, woken);
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
            Ok(Ok(txn)) => txn, // set up for its commit when it comes back
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
        while let Some((seq, request)) = self.inner.line.next(None) {
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
        txn.set_quick_repair(self.two_phase);
        // Counts before the batch (an ack in it removes what a count written here would
        // leave), acks after it (it may have moved an acked message into its queue).
        let acks = pending.write_counts(&txn, |queue| is_deleted(&self.deleted, queue))?;
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
        )
        .and_then(|()| acks.write(&txn, |queue| is_deleted(&self.deleted, queue)));
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

/// Takes from `list` the entries whose request number a commit up to `last_seq` covers (every
/// one if the store `failed`).
fn released<T>(list: &mut Vec<(u64, T)>, failed: bool, last_seq: u64) -> Vec<(u64, T)> {
    list.extract_if(.., |(seq, _)| failed || *seq <= last_seq)
        .collect()
}

/// In `Immediate` mode, how long the writer thread waits for more requests before it commits
/// the `batch` it took, and how many are enough: none while it has as many as recent commits
/// carried or as were `expected` ([`Writer::expect`]), else until that many came or half the
/// last commit's time (`took`, at most 2 ms) passed. The senders the last commit released are
/// about to send again; without the wait, concurrent senders split into groups that
/// alternate, each paying a whole commit. A single sender never waits: its commits carry one
/// request, and one sender waits as each ends.
pub(super) fn linger(batch: usize, expected: usize, took: Duration) -> Option<(Duration, usize)> {
    let enough = expected.min(MAX_BATCH);
    (batch < enough).then(|| ((took / 2).min(Duration::from_millis(2)), enough))
}

/// Whether `request` ends a linger: a flush (close, tests) commits now, whatever the
/// interval; so does one a borrower waits behind.
fn commits_now(request: &Request) -> bool {
    matches!(request, Request::Sync | Request::Close | Request::Lend(_))
}

/// Runs `wake`, which calls wakers of tasks (user code): a panic there must not stop the
/// writer thread, on which every durable send depends.
pub(super) fn wake_guarded(wake: impl FnOnce()) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| quiet::loud(wake)));
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

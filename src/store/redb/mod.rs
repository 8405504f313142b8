//! `DurableStore`: the redb file behind a durable broker, and the writer that owns its write
//! transactions (group commit).
//!
//! # Write path
//!
//! A producer encodes its records on its own thread, then stages them under the target's lock
//! (a partition or a queue): the engine gives each its key (offset or id) and keeps the record
//! aside, and the store hands the bytes to the writer, numbered in order, still under that
//! lock. The writer takes everything queued, writes it in one transaction (acks, dead-letter
//! moves, group positions and trims ride along, and the delivery counts and acks waiting,
//! coalesced in `Inner::pending`), commits, then publishes
//! the staged records to the in-memory logs in key order, and only then marks them committed.
//! So nothing is visible before it is stored, and concurrent sends share one fsync.
//!
//! The writer is its state, held by one thread at a time ([`line`]): the writer thread, or,
//! when nobody else is committing and senders come one at a time, a sender about to wait for
//! its commit (`Immediate`), which commits on its own thread and so saves two thread wake-ups.
//! Whichever thread commits also publishes, runs the wakers of the consumers waiting, and
//! unparks the senders it released.
//!
//! With [`Durability::Immediate`](crate::Durability::Immediate) a send returns once its commit
//! is durable. With [`Durability::Interval`](crate::Durability::Interval) it returns once the
//! writer has it; the writer commits at most once per interval (every commit is a durable redb
//! commit; redb's non-durable commits would not survive a process crash), so a crash loses at
//! most the sends of the last interval plus one commit.
//!
//! # Failure
//!
//! A failed commit poisons the store: the senders waiting for it, and every later send, get
//! [`Error::Poisoned`] with their messages back; nothing is retried (a failed fsync may have
//! dropped pages). redb then refuses every file access until the file is reopened: a read
//! that misses its cache is [`Error::Poisoned`] too. Reopening the file recovers the last
//! durable commit.
//!
//! Damage: records carry a checksum bound to their table ([`format`](mod@super::format)),
//! metadata rows a checksum of their own ([`meta`]); a store not closed cleanly gets redb's
//! integrity check when opened ([`open`]); panics redb raises on damaged pages are caught
//! silently ([`quiet`]) and become [`Error::Corrupt`].
//!
//! The broker may share an application's own redb database
//! ([`BrokerBuilder::database`](crate::BrokerBuilder::database)): embus keeps to the tables
//! named with its reserved prefix (`embus.`), creates them on first open, and releases only
//! its own handle on close.
//!
//! The file's layout is in [`schema`] (older versions are upgraded by [`upgrade`]); opening it
//! in [`open`], on the backend of [`file`] (zeros ahead of redb's writes into space it grew the
//! file by); the writer in [`writer`], and the line of requests it takes from in [`line`].
//! The `embus` tool reads a file read-only through [`inspect`] and redrives a queue of a
//! closed file with [`redrive`].

/// An empty directory for unit test `test` of this module (emptied if an earlier run left it).
#[cfg(test)]
fn scratch_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("embus-unit-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

mod compact;
mod delete;
mod figures;
mod file;
mod handoff;
mod ids;
mod inspect;
mod line;
#[cfg(embus_loom)]
mod line_loom;
#[cfg(all(test, embus_loom))]
mod loom_models;
mod meta;
mod open;
mod pending;
mod quiet;
mod redrive;
mod request;
mod rows;
mod schema;
mod trims;
mod upgrade;
mod write;
mod writer;
#[cfg(test)]
mod writer_tests;

pub(crate) use self::inspect::{HELD, Reader, StoredRecord, open as open_read_only};
pub(crate) use self::redrive::redrive;
pub(crate) use self::schema::{
    counts_table, ids_table, keys_table, logical, partition_table, queue_table,
};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::thread::{JoinHandle, Thread, current};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use redb::{Database, ReadableDatabase, ReadableTable};

use self::handoff::Collect;
use self::line::{Line, Then};
use self::open::storage;
use self::pending::Pending;
use self::request::Request;
use self::schema::existing;
use self::schema::{
    ACKED, DECLARATIONS, ENDS, GROUPS, deliveries, open_acked, open_count, open_end, open_named,
    open_position, records,
};
use self::trims::Trims;
use self::writer::Writer;
use super::format;
use super::{
    Append, Commit, Lent, Loaded, LogId, Progress, Restored, Sink, Store, StoredId, Ticket, TxJob,
};
use crate::error::Error;
use crate::options::Durability;

/// At most this many sends may wait for a commit in `Interval` mode before senders wait too.
const MAX_QUEUED: u64 = 1 << 16;

/// How to open the file.
pub(crate) struct Options {
    pub(crate) durability: Durability,
    /// Opens the database on a custom storage backend instead of the file.
    pub(crate) backend: Option<OpenWith>,
    pub(crate) cache_bytes: Option<usize>,
    /// The application's own database, shared instead of opening a file (`backend` and
    /// `cache_bytes` are then `None`: the application opened it).
    pub(crate) database: Option<Arc<Database>>,
    /// The payload codec's name, kept in the file: another codec cannot read its payloads.
    pub(crate) codec: &'static str,
    /// Run redb's integrity check at open even if the store was closed cleanly.
    pub(crate) check_integrity: bool,
    /// Commit in two phases, two fsyncs (see
    /// [`BrokerBuilder::two_phase_commit`](crate::BrokerBuilder::two_phase_commit)).
    pub(crate) two_phase: bool,
}

/// Opens a redb database on a backend the caller chose.
pub(crate) type OpenWith =
    Box<dyn FnOnce(&redb::Builder) -> Result<Database, redb::DatabaseError> + Send>;

/// What the writer has done.
struct Done {
    /// Every request up to this number is committed and published.
    committed: u64,
    /// The first failed commit: requests from this number on are not stored.
    failed: Option<(u64, String)>,
    /// Tasks waiting for a request number (`send_async`).
    wakers: Vec<(u64, Waker)>,
    /// Threads waiting for a request number ([`DurableStore::wait`]), each unparked by name:
    /// a commit that releases 16 senders wakes them all at once, where with a condition
    /// variable they shared each woke only after the one before took and let go of its lock.
    /// How many wait when a commit ends is what the next one may expect (`Writer::expect`).
    sleepers: Vec<(u64, Thread)>,
    /// The thread a write transaction is lent to ([`Store::lend`]): it must not wait for a
    /// commit, which waits for it.
    lent_to: Option<std::thread::ThreadId>,
}

struct Inner {
    path: PathBuf,
    /// [`Store::instance`], kept in the file (read by bridges only).
    #[cfg_attr(not(any(feature = "nats", feature = "amqp")), allow(dead_code))]
    instance: u64,
    /// Queue delivery counts and acks for the next commit, coalesced ([`pending`]).
    pending: Mutex<Pending>,
    /// `None` once closed: the file is released even while consumers still hold the broker's
    /// parts.
    db: Mutex<Option<Arc<Database>>>,
    durability: Durability,
    /// The requests for the writer, and the writer's state ([`line`]).
    line: Line<Writer>,
    done: Mutex<Done>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Commit figures, for stats.
    figures: Mutex<figures::Figures>,
}

/// The redb-backed store of [`Broker::open`](crate::Broker::open).
#[derive(Clone)]
pub(crate) struct DurableStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DurableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableStore")
            .field("path", &self.inner.path)
            .field("durability", &self.inner.durability)
            .finish_non_exhaustive()
    }
}

impl DurableStore {
    /// Opens (or creates) the store at `path`, checks its format version and codec, and starts
    /// the writer.
    pub(crate) fn open(path: &Path, options: Options) -> Result<Self, Error> {
        let (db, instance) = match options.database {
            Some(db) => {
                let instance = open::shared(path, &db, options.codec)?;
                (db, instance)
            }
            None => {
                let (db, instance) = open::database(
                    path,
                    options.backend,
                    options.cache_bytes,
                    options.codec,
                    options.check_integrity,
                )?;
                (Arc::new(db), instance)
            }
        };
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            instance,
            pending: Mutex::new(Pending::default()),
            db: Mutex::new(Some(db)),
            durability: options.durability,
            line: Line::new(),
            done: Mutex::new(Done {
                committed: 0,
                failed: None,
                wakers: Vec::new(),
                sleepers: Vec::new(),
                lent_to: None,
            }),
            writer: Mutex::new(None),
            figures: Mutex::default(),
        });
        inner.line.install(Writer {
            db: inner.db.lock().clone().ok_or(Error::Closed)?,
            inner: Arc::clone(&inner),
            ends: HashMap::new(),
            trims: Trims::default(),
            deleted: Vec::new(),
            in_use: false,
            two_phase: options.two_phase,
            peak: 0,
            expect: 0,
            last_took: Duration::ZERO,
            last_commit: Instant::now(),
        });
        let thread = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name("embus-writer".to_owned())
            .spawn(move || writer::run(&thread))
            .map_err(|e| {
                inner.line.abandon(); // the writer's state holds the store: release the file
                Error::Storage {
                    path: path.to_owned(),
                    message: format!("cannot start the writer thread: {e}"),
                }
            })?;
        *inner.writer.lock() = Some(handle);
        Ok(Self { inner })
    }

    /// Queues `request` for the writer thread; its number, or `None` once closed.
    fn send(&self, request: Request) -> Option<u64> {
        self.inner.line.push(request, Then::Ring)
    }

    /// Queues `request` for a commit the caller waits for next ([`wait`](Self::wait)): with
    /// `Immediate` durability, the caller commits it if nobody else is committing ([`line`]).
    fn send_to_wait(&self, request: Request) -> Option<u64> {
        let then = if self.commits_here() {
            Then::Lead
        } else {
            Then::Ring
        };
        self.inner.line.push(request, then)
    }

    /// Whether a sender waiting for its commit may commit it itself: with `Immediate`
    /// durability (an `Interval` commit waits for its interval, on the writer thread).
    fn commits_here(&self) -> bool {
        matches!(self.inner.durability, Durability::Immediate)
    }

    /// Waits until request `seq` is committed (`Ok`) or failed; with `Immediate` durability,
    /// commits on this thread what is queued if nobody else is committing.
    fn wait(&self, seq: u64) -> Result<(), Error> {
        if self.commits_here() {
            writer::lead(&self.inner);
        }
        let mut done = self.inner.done.lock();
        let mut listed = false;
        loop {
            if let Poll::Ready(result) = self.outcome(&done, seq) {
                return result; // no longer listed: taken with the commit or the failure
            }
            if done.lent_to == Some(std::thread::current().id()) {
                return Err(Error::TransactionOpen); // the commit waits for this very thread
            }
            if !listed {
                done.sleepers.push((seq, current()));
                listed = true;
            }
            MutexGuard::unlocked(&mut done, std::thread::park);
        }
    }

    /// Whether request `seq` is committed or failed.
    fn outcome(&self, done: &Done, seq: u64) -> Poll<Result<(), Error>> {
        match &done.failed {
            Some((from, cause)) if *from <= seq => Poll::Ready(Err(self.poisoned(cause))),
            _ if done.committed >= seq => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }

    /// Whether this thread is committing (running a waker of a task or thread it woke): the
    /// writer thread, or a sender committing its own send.
    fn on_writer_thread(&self) -> bool {
        self.inner.line.held_here()
    }

    fn poisoned(&self, cause: &str) -> Error {
        Error::Poisoned {
            path: self.inner.path.clone(),
            cause: cause.to_owned(),
        }
    }

    /// A read refused after a failed commit or read: redb refuses every file access after an
    /// I/O failure (only pages in its cache stay readable) until the file is reopened.
    fn unreadable(&self) -> Error {
        let cause = match &self.inner.done.lock().failed {
            Some((_, cause)) => cause.clone(),
            None => "a read from the file failed".to_owned(),
        };
        self.poisoned(&format!(
            "{cause}; committed records not in the cache are unreadable until it is reopened"
        ))
    }

    fn check_healthy(&self) -> Result<(), Error> {
        match &self.inner.done.lock().failed {
            Some((_, cause)) => Err(self.poisoned(cause)),
            None => Ok(()),
        }
    }

    fn read<R>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<R, redb::Error>,
    ) -> Result<R, Error> {
        let db = self.inner.db.lock().clone().ok_or(Error::Closed)?;
        // redb's debug builds assert on some damaged pages: an error here, not a panic in a
        // consumer's `recv`.
        let read = quiet::catch(|| {
            let txn = db.begin_read()?;
            f(&txn)
        });
        match read {
            Ok(Err(redb::Error::PreviousIo)) => Err(self.unreadable()),
            Ok(result) => result.map_err(|e| storage(&self.inner.path, e)),
            Err(panic) => Err(Error::Corrupt {
                path: self.inner.path.clone(),
                detail: format!("redb failed while reading a damaged page ({panic})"),
            }),
        }
    }
}

impl Store for DurableStore {
    fn instance(&self) -> u64 {
        self.inner.instance
    }

    fn append(&self, job: &mut dyn Append, commit: Commit) -> Result<Option<Ticket>, Error> {
        // Checked before staging: a send refused here has handed nothing to the writer. Every
        // send waits for its commit somewhere (here, in `settle`, or polling as an async send
        // does): on the thread holding the loan, that wait would be for itself.
        let immediate = matches!(self.inner.durability, Durability::Immediate);
        self.check_can_wait(immediate)?;
        let mut collect = Collect {
            store: self,
            waits: matches!(commit, Commit::Wait),
            bodies: job.encode()?.into_iter(),
            sink: None,
            run: Vec::new(),
            last: None,
            refused: false,
        };
        job.stage(&mut collect);
        let (last, refused) = (collect.last, collect.refused);
        if refused {
            // The writer stopped (the broker closed meanwhile): nothing of ours is stored.
            job.unstage();
            return Err(Error::Closed);
        }
        let Some(last) = last else {
            return Ok(None); // nothing staged: the job says why (no room, or closed)
        };
        match commit {
            Commit::Staged => return Ok(Some(Ticket(last))),
            Commit::Poll if immediate => return Ok(Some(Ticket(last))),
            Commit::Poll | Commit::Wait => {}
        }
        let result = self.settle(Ticket(last));
        if result.is_err() && self.inner.done.lock().committed < last {
            job.unstage();
        }
        result.map(|()| None)
    }

    fn settle(&self, Ticket(seq): Ticket) -> Result<(), Error> {
        match self.inner.durability {
            Durability::Immediate => self.wait(seq),
            Durability::Interval(_) => {
                let done = self.inner.done.lock();
                if let Poll::Ready(Err(e)) = self.outcome(&done, seq) {
                    return Err(e);
                }
                let committed = done.committed;
                drop(done);
                if seq.saturating_sub(committed) > MAX_QUEUED {
                    self.wait(seq - MAX_QUEUED)
                } else {
                    Ok(())
                }
            }
        }
    }

    fn poll_stored(&self, ticket: Ticket, waker: &Waker) -> Poll<Result<(), Error>> {
        let mut done = self.inner.done.lock();
        let outcome = self.outcome(&done, ticket.0);
        if outcome.is_pending() {
            done.wakers.retain(|(_, w)| !w.will_wake(waker));
            done.wakers.push((ticket.0, waker.clone()));
        }
        outcome
    }

    fn progress(&self, change: Progress<'_>) {
        // Coalesced: a redelivery storm costs one entry per message, not per delivery, and a
        // consumer acking each message one entry per ack, not a request.
        let first = match change {
            Progress::QueueDelivery { queue, id, count } => {
                Some(self.inner.pending.lock().count(queue, id, count))
            }
            Progress::QueueAck { queue, id } => {
                let seq = self.inner.line.sent();
                Some(self.inner.pending.lock().ack(queue, id, seq))
            }
            _ => None,
        };
        if let Some(first) = first {
            if first {
                let _ = self.send(Request::Pending); // wakes the writer
            }
            return;
        }
        // After close there is nothing to record progress in; reopening redelivers.
        let _ = self.send(self.request(change));
    }

    fn transact(&self, job: &mut dyn TxJob, lent: &mut Option<Lent>) -> Result<(), Error> {
        self.run_transaction(job, lent)
    }

    fn lend(&self) -> Result<Lent, Error> {
        self.lend_writer()
    }

    fn give_back(&self, lent: Lent) {
        self.give_back_writer(lent);
    }

    fn can_record(&self) -> Result<(), Error> {
        self.check_healthy()?; // a poisoned store says why, even once its line has ended
        if !self.inner.line.is_open() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn declared(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.read(|txn| {
            let Some(table) = existing(txn, DECLARATIONS)? else {
                return Ok(None);
            };
            match table.get(name)? {
                Some(v) => Ok(Some(open_named(DECLARATIONS, name, v.value())?.to_vec())),
                None => Ok(None),
            }
        })
    }

    fn declare(&self, name: &str, declaration: Vec<u8>) {
        let _ = self.send(Request::Declare(name.to_owned(), declaration));
    }

    fn declarations(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.read(schema::declarations)
    }

    fn delete(
        &self,
        name: &str,
        tables: Vec<String>,
        sinks: Vec<Arc<dyn Sink>>,
        topic: bool,
    ) -> Result<(), Error> {
        self.check_can_wait(true)?;
        let request = Request::Delete {
            name: name.to_owned(),
            tables,
            sinks,
            topic,
        };
        match self.send_to_wait(request) {
            // From a waker the writer runs: it commits once that returns.
            Some(_) if self.on_writer_thread() => self.check_healthy(),
            Some(seq) => self.wait(seq),
            None => Err(Error::Closed),
        }
    }

    fn forget_group(&self, topic: &str, group: &str) {
        let _ = self.send(Request::ForgetGroup(topic.to_owned(), group.to_owned()));
    }

    fn undeclare(&self, name: &str) {
        let _ = self.send(Request::Undeclare(name.to_owned()));
    }

    fn message_ids(&self, log: &LogId) -> Result<Vec<StoredId>, Error> {
        self.read(|txn| ids::load(txn, log.ids_table()))
    }

    fn restore(&self, log: &LogId) -> Result<Restored, Error> {
        let table = log.table();
        let (end, bytes, first, last, last_ts) = self.read(|txn| {
            let (end, bytes) = match txn.open_table(ENDS) {
                Ok(t) => match t.get(table)? {
                    Some(v) => open_end(table, v.value())?,
                    None => (0, 0),
                },
                Err(redb::TableError::TableDoesNotExist(_)) => (0, 0),
                Err(e) => return Err(e.into()),
            };
            let (first, last, last_ts) = match txn.open_table(records(table)) {
                Ok(t) => {
                    let last = rows::last(&t, log.seed(), end)?;
                    let last_ts = last.as_ref().map_or(0, |(offset, value)| {
                        format::open(log.seed(), *offset, value).map_or(0, |row| row.ts)
                    });
                    let last = last.map(|(offset, _)| offset);
                    (t.first()?.map(|(k, _)| k.value()), last, last_ts)
                }
                Err(redb::TableError::TableDoesNotExist(_)) => (None, None, 0),
                Err(e) => return Err(e.into()),
            };
            Ok((end, bytes, first, last, last_ts))
        })?;
        // Every commit that adds a row records the table's end with it: a key at or past the
        // recorded end, or keys out of order, mean damage, not data. A partition's rows go
        // only from the bottom (retention), so its last row is always the one before its end
        // (an end from a file older than format 3 was sealed unverified on upgrade: this
        // bounds it too).
        let partition = log.counts_table().is_empty();
        match (first, last) {
            (Some(first), Some(last))
                if first <= last && last < end && (!partition || last + 1 == end) =>
            {
                Ok(Restored {
                    base: first,
                    end,
                    bytes,
                    last_ts,
                })
            }
            (None, None) => Ok(Restored {
                base: end,
                end,
                bytes,
                last_ts,
            }),
            _ => Err(Error::Corrupt {
                path: self.inner.path.clone(),
                detail: format!(
                    "table `{table}`: keys {first:?}..={last:?} do not fit its recorded end {end}"
                ),
            }),
        }
    }

    fn acked(&self, topic: &str) -> Result<Vec<(String, u32, u64)>, Error> {
        self.read(|txn| {
            let Some(table) = existing(txn, ACKED)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for row in table.range((topic, "", 0, 0)..)? {
                let (k, v) = row?;
                let key = k.value();
                if key.0 != topic {
                    break;
                }
                open_acked(key, v.value())?;
                out.push((key.1.to_owned(), key.2, key.3));
            }
            Ok(out)
        })
    }

    fn groups(&self, topic: &str) -> Result<Vec<(String, u32, u64)>, Error> {
        self.read(|txn| {
            let Some(table) = existing(txn, GROUPS)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for row in table.range((topic, "", 0)..)? {
                let (k, v) = row?;
                let (t, group, partition) = k.value();
                if t != topic {
                    break;
                }
                let offset = open_position((t, group, partition), v.value())?;
                out.push((group.to_owned(), partition, offset));
            }
            Ok(out)
        })
    }

    fn reads_back(&self) -> bool {
        true
    }

    fn load(&self, log: &LogId, from: u64, to: u64) -> Result<Vec<Loaded>, Error> {
        let (table, counts_table) = (log.table(), log.counts_table());
        self.read(|txn| {
            let Some(rows) = existing(txn, records(table))? else {
                return Ok(Vec::new());
            };
            let counts =
                (!counts_table.is_empty()).then(|| txn.open_table(deliveries(counts_table)));
            let deliveries = match counts {
                None => None,
                Some(Ok(t)) => Some(t),
                Some(Err(redb::TableError::TableDoesNotExist(_))) => None,
                Some(Err(e)) => return Err(e.into()),
            };
            let mut out: Vec<Loaded> = Vec::new();
            rows::visit(&rows, log.seed(), (from, to), |key, value| {
                in_order(table, out.last().map(|l| l.key), key, from..to)?;
                let deliveries = match &deliveries {
                    Some(c) => match c.get(key)? {
                        Some(stored) => open_count(counts_table, key, stored.value())?,
                        None => 0,
                    },
                    None => 0,
                };
                out.push(Loaded {
                    key,
                    value: value.to_vec(),
                    deliveries,
                    seed: log.seed(),
                });
                Ok(true)
            })?;
            Ok(out)
        })
    }

    fn flush(&self) -> Result<(), Error> {
        self.check_can_wait(true)?;
        match self.send_to_wait(Request::Sync) {
            // The writer cannot wait for itself (a waker it ran flushes): the commit follows
            // once the waker returns.
            Some(_) if self.on_writer_thread() => self.check_healthy(),
            Some(seq) => self.wait(seq),
            None => self.check_healthy(),
        }
    }

    fn close(&self) -> Result<(), Error> {
        // The thread holding a loan closes (dropping the last handle with a transaction open):
        // it cannot wait for the writer either. Its loan aborts as the writer's line closes.
        if self.on_writer_thread() || self.is_borrower() {
            // A waker run by the thread committing dropped the last handle: it cannot wait
            // for, or join, itself. Once this returns, what is queued is committed (the close
            // mark last) and the writer thread sees the line closed and ends, releasing the
            // file.
            let _ = self.send(Request::Close);
            self.inner.line.close();
            drop(self.inner.writer.lock().take()); // detached: it ends on its own
            let db = self.inner.db.lock().take();
            let _ = quiet::catch(move || drop(db));
            return self.check_healthy();
        }
        // The last commit marks the store closed cleanly (a commit after it, from a send
        // racing with close, marks it in use again).
        let result = match self.send_to_wait(Request::Close) {
            Some(seq) => self.wait(seq),
            None => self.check_healthy(),
        };
        self.inner.line.close(); // the writer drains what is queued, then stops
        let handle = self.inner.writer.lock().take();
        let died = handle.is_some_and(|h| h.join().is_err());
        // Releases the file (readers mid-chunk finish first), even after the writer thread
        // died. redb's close may meet a page it panicked on earlier: that must not reach the
        // caller of `close` or of a drop.
        let db = self.inner.db.lock().take();
        let _ = quiet::catch(move || drop(db));
        if died {
            return Err(self.poisoned("the writer thread panicked"));
        }
        result.and_then(|()| self.check_healthy())
    }

    fn path(&self) -> PathBuf {
        self.inner.path.clone()
    }

    fn stats(&self) -> Option<crate::stats::StoreStats> {
        let failed = self
            .inner
            .done
            .lock()
            .failed
            .as_ref()
            .map(|(_, c)| c.clone());
        // A copy, so the writer (which takes the lock after every commit) never waits for
        // the file's metadata or the sort.
        let figures = self.inner.figures.lock().clone();
        Some(figures.stats(&self.inner.path, failed))
    }
}

/// Checks that `key`, read after `previous` from `range` of `table`, ascends within it: a
/// damaged page can make a B-tree walk yield keys out of order or out of range.
fn in_order(
    table: &str,
    previous: Option<u64>,
    key: u64,
    range: std::ops::Range<u64>,
) -> Result<(), redb::Error> {
    if range.contains(&key) && previous.is_none_or(|p| key > p) {
        return Ok(());
    }
    let what = format!("key out of order (after {previous:?}, reading {range:?})");
    Err(meta::damaged(table, key, &what))
}

#[cfg(test)]
mod tests {
    use super::in_order;

    #[test]
    fn keys_must_ascend_within_the_range() {
        assert!(in_order("q.jobs", None, 5, 5..10).is_ok());
        assert!(in_order("q.jobs", Some(5), 9, 5..10).is_ok());
        for (previous, key) in [(Some(7), 7), (Some(7), 6), (None, 4), (None, 10)] {
            let err = in_order("q.jobs", previous, key, 5..10).unwrap_err();
            assert!(err.to_string().contains("`q.jobs`, row `"), "{err}");
        }
    }
}

//! `DurableStore`: the redb file behind a durable broker, and the writer thread that owns its
//! write transactions (group commit).
//!
//! # Write path
//!
//! A producer encodes its records on its own thread, then stages them under the target's lock
//! (a partition or a queue): the engine gives each its key (offset or id) and keeps the record
//! aside, and the store hands the bytes to the writer, numbered in order, still under that
//! lock. The writer takes everything queued, writes it in one transaction (acks, delivery
//! counts, dead-letter moves, group positions and trims ride along), commits, then publishes
//! the staged records to the in-memory logs in key order, and only then marks them committed.
//! So nothing is visible before it is stored, and concurrent sends share one fsync.
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
//! dropped pages). Reopening the file recovers the last durable commit.
//!
//! # Layout (format version 1)
//!
//! - `embus.meta`: `"format" -> 1`.
//! - `embus.declarations`: name -> kind, payload type name and options.
//! - `t.<topic>.<partition>`: offset -> record ([`format`](super::format)).
//! - `q.<queue>`: id -> record; `c.<queue>`: id -> deliveries so far (delivered messages only).
//! - `embus.ends`: table -> next key and retained bytes (what a trimmed-empty table cannot say).
//! - `embus.groups`: (topic, group, partition) -> first unacked offset.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::format;
use super::{Append, Declaration, Loaded, Progress, Restored, Sink, Stager, Store, Ticket};
use crate::codec::{Bincode, Codec};
use crate::error::Error;
use crate::options::Durability;
use crate::record::{Headers, Nanos};

/// The format version this build writes (and the only one it opens).
pub(crate) const FORMAT_VERSION: u64 = 1;

const META: TableDefinition<'static, &str, u64> = TableDefinition::new("embus.meta");
const DECLARATIONS: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("embus.declarations");
const ENDS: TableDefinition<'static, &str, (u64, u64)> = TableDefinition::new("embus.ends");
const GROUPS: TableDefinition<'static, (&str, &str, u32), u64> =
    TableDefinition::new("embus.groups");

fn records(table: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(table)
}

fn deliveries(table: &str) -> TableDefinition<'_, u64, u32> {
    TableDefinition::new(table)
}

/// The delivery-count table beside a queue's records table.
fn counts(table: &str) -> String {
    super::counts_table(table.strip_prefix("q.").unwrap_or(table))
}

/// At most this many sends may wait for a commit in `Interval` mode before senders wait too.
const MAX_QUEUED: u64 = 1 << 16;
/// At most this many requests go into one commit.
const MAX_BATCH: usize = 1 << 14;

/// How to open the file.
pub(crate) struct Options {
    pub(crate) durability: Durability,
    /// Opens the database on a custom storage backend instead of the file.
    pub(crate) backend: Option<OpenWith>,
    pub(crate) cache_bytes: Option<usize>,
}

/// Opens a redb database on a backend the caller chose.
pub(crate) type OpenWith =
    Box<dyn FnOnce(&redb::Builder) -> Result<Database, redb::DatabaseError> + Send>;

/// What the writer does with one queued item.
enum Request {
    /// A run of records staged under one lock (a send, or one partition's share of a batch).
    Append {
        sink: Arc<dyn Sink>,
        records: Vec<Staged>,
    },
    Ack {
        queue: Arc<dyn Sink>,
        id: u64,
    },
    Delivery {
        queue: Arc<dyn Sink>,
        id: u64,
        count: u32,
    },
    DeadLetter {
        queue: Arc<dyn Sink>,
        id: u64,
        to: Arc<dyn Sink>,
        to_id: u64,
        headers: Headers,
    },
    Position {
        topic: String,
        group: String,
        partition: u32,
        offset: u64,
    },
    Declare(String, Vec<u8>),
    /// Nothing to write: makes `flush` wait for a commit.
    Sync,
}

/// One staged record: key, timestamp, counted size and bytes (sealed by the writer).
struct Staged {
    key: u64,
    ts: Nanos,
    size: u32,
    value: Vec<u8>,
}

/// Collects what a job stages and hands it to the writer as one request.
struct Collect<'a> {
    store: &'a DurableStore,
    bodies: std::vec::IntoIter<Vec<u8>>,
    sink: Option<Arc<dyn Sink>>,
    run: Vec<Staged>,
    /// The number of the last request sent.
    last: Option<u64>,
    /// The writer had stopped.
    refused: bool,
}

impl Stager for Collect<'_> {
    fn record(&mut self, sink: &Arc<dyn Sink>, key: u64, ts: Nanos, size: u32) {
        if self.sink.is_none() {
            self.sink = Some(Arc::clone(sink));
        }
        let value = self.bodies.next().unwrap_or_default();
        self.run.push(Staged {
            key,
            ts,
            size,
            value,
        });
    }

    fn end(&mut self) {
        let Some(sink) = self.sink.take() else {
            return;
        };
        let records = std::mem::take(&mut self.run);
        match self.store.send(Request::Append { sink, records }) {
            Some(seq) => self.last = Some(seq),
            None => self.refused = true,
        }
    }
}

/// The sender side, numbered: requests reach the writer in `seq` order.
struct Order {
    seq: u64,
    tx: Option<Sender<(u64, Request)>>,
}

/// What the writer has done.
struct Done {
    /// Every request up to this number is committed and published.
    committed: u64,
    /// The first failed commit: requests from this number on are not stored.
    failed: Option<(u64, String)>,
    /// Tasks waiting for a request number (`send_async`).
    wakers: Vec<(u64, Waker)>,
}

struct Inner {
    path: PathBuf,
    /// `None` once closed: the file is released even while consumers still hold the broker's
    /// parts.
    db: Mutex<Option<Arc<Database>>>,
    durability: Durability,
    order: Mutex<Order>,
    done: Mutex<Done>,
    changed: Condvar,
    writer: Mutex<Option<JoinHandle<()>>>,
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

/// A storage error naming the file.
fn storage(path: &Path, e: impl Into<redb::Error>) -> Error {
    let e: redb::Error = e.into();
    match e {
        redb::Error::DatabaseAlreadyOpen => Error::Storage {
            path: path.to_owned(),
            message: "the file is open in another broker or process".to_owned(),
        },
        redb::Error::Corrupted(detail) => Error::Corrupt {
            path: path.to_owned(),
            detail,
        },
        e => Error::Storage {
            path: path.to_owned(),
            message: e.to_string(),
        },
    }
}

impl DurableStore {
    /// Opens (or creates) the store at `path`, checks its format version and starts the writer.
    pub(crate) fn open(path: &Path, options: Options) -> Result<Self, Error> {
        let mut builder = Database::builder();
        if let Some(bytes) = options.cache_bytes {
            builder.set_cache_size(bytes);
        }
        // Checking the format reads the file, and dropping a database that failed the check
        // runs redb's close: either may meet a damaged page, where redb may panic.
        let opened =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match options.backend {
                Some(open) => {
                    let db = guarded(path, || open(&builder))?;
                    check_format(path, &db)?;
                    Ok(db)
                }
                None if path.exists() => {
                    let db = guarded(path, || builder.create(path))?;
                    check_format(path, &db)?;
                    Ok(db)
                }
                None => create(path, &builder),
            }));
        let db = opened.unwrap_or_else(|_| {
            Err(Error::Corrupt {
                path: path.to_owned(),
                detail: "redb failed while checking the file".to_owned(),
            })
        })?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            db: Mutex::new(Some(Arc::new(db))),
            durability: options.durability,
            order: Mutex::new(Order {
                seq: 0,
                tx: Some(tx),
            }),
            done: Mutex::new(Done {
                committed: 0,
                failed: None,
                wakers: Vec::new(),
            }),
            changed: Condvar::new(),
            writer: Mutex::new(None),
        });
        let writer = Writer {
            db: inner.db.lock().clone().ok_or(Error::Closed)?,
            inner: Arc::clone(&inner),
            rx,
            ends: HashMap::new(),
            trim_next: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("embus-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| Error::Storage {
                path: path.to_owned(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        *inner.writer.lock() = Some(handle);
        Ok(Self { inner })
    }

    fn send(&self, request: Request) -> Option<u64> {
        let mut order = self.inner.order.lock();
        let tx = order.tx.as_ref()?;
        let seq = order.seq + 1;
        tx.send((seq, request)).ok()?;
        order.seq = seq;
        Some(seq)
    }

    /// Waits until request `seq` is committed (`Ok`) or failed.
    fn wait(&self, seq: u64) -> Result<(), Error> {
        let mut done = self.inner.done.lock();
        loop {
            if let Poll::Ready(result) = self.outcome(&done, seq) {
                return result;
            }
            self.inner.changed.wait(&mut done);
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

    fn poisoned(&self, cause: &str) -> Error {
        Error::Poisoned {
            path: self.inner.path.clone(),
            cause: cause.to_owned(),
        }
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
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let txn = db.begin_read()?;
            f(&txn)
        }));
        match read {
            Ok(result) => result.map_err(|e| storage(&self.inner.path, e)),
            Err(_) => Err(Error::Corrupt {
                path: self.inner.path.clone(),
                detail: "redb failed while reading a damaged page".to_owned(),
            }),
        }
    }
}

/// Opens a database, turning redb's failures (and its debug-build panics on some damaged
/// files) into errors naming the path.
fn guarded(
    path: &Path,
    open: impl FnOnce() -> Result<Database, redb::DatabaseError>,
) -> Result<Database, Error> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            Err(Error::Corrupt {
                path: path.to_owned(),
                detail: format!("not a redb file: {e}"),
            })
        }
        Ok(Err(e)) => Err(storage(path, e)),
        Err(_) => Err(Error::Corrupt {
            path: path.to_owned(),
            detail: "redb failed while opening the file".to_owned(),
        }),
    }
}

/// Creates a new store under a temporary name and renames it into place once its format
/// version is committed, so a failure or crash while creating never leaves a half-written
/// file at `path` that would not open again.
fn create(path: &Path, builder: &redb::Builder) -> Result<Database, Error> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".creating");
    let temporary = path.with_file_name(name);
    let _ = std::fs::remove_file(&temporary); // left by a crash while creating
    let created = guarded(path, || builder.create(&temporary)).and_then(|db| {
        check_format(path, &db)?;
        std::fs::rename(&temporary, path).map_err(|e| Error::Storage {
            path: path.to_owned(),
            message: format!("cannot move the new store into place: {e}"),
        })?;
        sync_parent(path);
        Ok(db)
    });
    if created.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    created
}

/// Fsyncs the directory holding a new file, so the file's name survives a power loss.
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all(); // best effort: not every platform can sync a directory
    }
}

/// Checks (or, in a new file, writes) the format version.
fn check_format(path: &Path, db: &Database) -> Result<(), Error> {
    let stored = {
        let txn = db.begin_read().map_err(|e| storage(path, e))?;
        let table = match txn.open_table(META) {
            Ok(table) => Some(table),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(storage(path, e)),
        };
        match table {
            Some(t) => t
                .get("format")
                .map_err(|e| storage(path, e))?
                .map(|v| v.value()),
            None => {
                let tables = txn.list_tables().map_err(|e| storage(path, e))?.count();
                if tables > 0 {
                    return Err(Error::Corrupt {
                        path: path.to_owned(),
                        detail: "a redb file, but not an embus store (no format version)".into(),
                    });
                }
                None
            }
        }
    };
    match stored {
        Some(FORMAT_VERSION) => Ok(()),
        Some(found) => Err(Error::Incompatible {
            path: path.to_owned(),
            found,
            expected: FORMAT_VERSION,
        }),
        None => {
            let txn = db.begin_write().map_err(|e| storage(path, e))?;
            {
                let mut meta = txn.open_table(META).map_err(|e| storage(path, e))?;
                meta.insert("format", FORMAT_VERSION)
                    .map_err(|e| storage(path, e))?;
            }
            txn.commit().map_err(|e| storage(path, e))
        }
    }
}

impl Store for DurableStore {
    fn append(&self, job: &mut dyn Append, defer: bool) -> Result<Option<Ticket>, Error> {
        self.check_healthy()?;
        let mut collect = Collect {
            store: self,
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
        let result = match self.inner.durability {
            Durability::Immediate if defer => return Ok(Some(Ticket(last))),
            Durability::Immediate => self.wait(last),
            Durability::Interval(_) => {
                let committed = self.inner.done.lock().committed;
                if last.saturating_sub(committed) > MAX_QUEUED {
                    self.wait(last - MAX_QUEUED)
                } else {
                    Ok(())
                }
            }
        };
        if result.is_err() && self.inner.done.lock().committed < last {
            job.unstage();
        }
        result.map(|()| None)
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
        let request = match change {
            Progress::QueueAck { queue, id } => Request::Ack {
                queue: Arc::clone(queue),
                id,
            },
            Progress::QueueDelivery { queue, id, count } => Request::Delivery {
                queue: Arc::clone(queue),
                id,
                count,
            },
            Progress::DeadLetter {
                queue,
                id,
                to,
                to_id,
                headers,
            } => Request::DeadLetter {
                queue: Arc::clone(queue),
                id,
                to: Arc::clone(to),
                to_id,
                headers: headers.clone(),
            },
            Progress::GroupPosition {
                topic,
                group,
                partition,
                offset,
            } => Request::Position {
                topic: topic.to_owned(),
                group: group.to_owned(),
                partition,
                offset,
            },
        };
        // After close there is nothing to record progress in; reopening redelivers.
        let _ = self.send(request);
    }

    fn declared(&self, name: &str) -> Result<Option<Declaration>, Error> {
        let bytes = self.read(|txn| {
            let table = match txn.open_table(DECLARATIONS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(table.get(name)?.map(|v| v.value().to_vec()))
        })?;
        let Some(bytes) = bytes else { return Ok(None) };
        Bincode::decode(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                path: self.inner.path.clone(),
                detail: format!("declaration of `{name}`: {e}"),
            })
    }

    fn declare(&self, name: &str, declaration: Declaration) {
        let mut bytes = Vec::new();
        if Bincode::encode(&declaration, &mut bytes).is_ok() {
            let _ = self.send(Request::Declare(name.to_owned(), bytes));
        }
    }

    fn restore(&self, table: &str) -> Result<Restored, Error> {
        let (end, bytes, first, last, last_ts) = self.read(|txn| {
            let (end, bytes) = match txn.open_table(ENDS) {
                Ok(t) => t.get(table)?.map_or((0, 0), |v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => (0, 0),
                Err(e) => return Err(e.into()),
            };
            let (first, last, last_ts) = match txn.open_table(records(table)) {
                Ok(t) => {
                    let last = t.last()?;
                    let last_ts = last.as_ref().map_or(0, |(k, v)| {
                        format::open(k.value(), v.value()).map_or(0, |row| row.ts)
                    });
                    let last = last.map(|(k, _)| k.value());
                    (t.first()?.map(|(k, _)| k.value()), last, last_ts)
                }
                Err(redb::TableError::TableDoesNotExist(_)) => (None, None, 0),
                Err(e) => return Err(e.into()),
            };
            Ok((end, bytes, first, last, last_ts))
        })?;
        // Every commit that adds a row records the table's end with it: a key at or past the
        // recorded end, or keys out of order, mean damage, not data.
        match (first, last) {
            (Some(first), Some(last)) if first <= last && last < end => Ok(Restored {
                base: first,
                end,
                bytes,
                last_ts,
            }),
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

    fn groups(&self, topic: &str) -> Result<Vec<(String, u32, u64)>, Error> {
        self.read(|txn| {
            let table = match txn.open_table(GROUPS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for row in table.range((topic, "", 0)..)? {
                let (k, v) = row?;
                let (t, group, partition) = k.value();
                if t != topic {
                    break;
                }
                out.push((group.to_owned(), partition, v.value()));
            }
            Ok(out)
        })
    }

    fn reads_back(&self) -> bool {
        true
    }

    fn load(&self, table: &str, from: u64, to: u64) -> Result<Vec<Loaded>, Error> {
        let counts_table = counts(table);
        self.read(|txn| {
            let rows = match txn.open_table(records(table)) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let deliveries = match txn.open_table(TableDefinition::<u64, u32>::new(&counts_table)) {
                Ok(t) => Some(t),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for row in rows.range(from..to)? {
                let (k, v) = row?;
                let key = k.value();
                let deliveries = match &deliveries {
                    Some(c) => c.get(key)?.map_or(0, |c| c.value()),
                    None => 0,
                };
                out.push(Loaded {
                    key,
                    value: v.value().to_vec(),
                    deliveries,
                });
            }
            Ok(out)
        })
    }

    fn flush(&self) -> Result<(), Error> {
        match self.send(Request::Sync) {
            Some(seq) => self.wait(seq),
            None => self.check_healthy(),
        }
    }

    fn close(&self) -> Result<(), Error> {
        let result = self.flush();
        self.inner.order.lock().tx = None; // the writer drains what is queued, then stops
        if let Some(handle) = self.inner.writer.lock().take()
            && handle.join().is_err()
        {
            return Err(self.poisoned("the writer thread panicked"));
        }
        // Releases the file (readers mid-chunk finish first). redb's close may meet a page it
        // panicked on earlier: that must not reach the caller of `close` or of a drop.
        let db = self.inner.db.lock().take();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db)));
        result.and_then(|()| self.check_healthy())
    }
}

/// The writer thread: owns every write transaction.
struct Writer {
    db: Arc<Database>,
    inner: Arc<Inner>,
    rx: Receiver<(u64, Request)>,
    /// Per table: next key and retained bytes, as stored.
    ends: HashMap<String, (u64, u64)>,
    /// Sinks published by the last commit: their retention is applied to the file in the next
    /// one (whatever it holds: `close` always makes one).
    trim_next: Vec<Arc<dyn Sink>>,
}

/// Per sink touched by a commit: publish up to this key.
struct Touched {
    sink: Arc<dyn Sink>,
    upto: u64,
    /// Counted bytes appended.
    bytes: u64,
}

impl Writer {
    fn run(mut self) {
        let inner = Arc::clone(&self.inner);
        let _fuse = Fuse(&inner);
        let mut last_commit = Instant::now();
        // The most requests a recent commit carried (decaying by one per commit), and how
        // long the last commit took, for the linger below.
        let (mut peak, mut last_took) = (0usize, Duration::ZERO);
        while let Ok(first) = self.rx.recv() {
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
            let flushing = batch.iter().any(|(_, r)| matches!(r, Request::Sync));
            if let Some(until) = until.filter(|_| !flushing) {
                while batch.len() < enough {
                    match self.rx.recv_deadline(until) {
                        // A flush (close, tests) commits now, whatever the interval.
                        Ok(request) if matches!(request.1, Request::Sync) => {
                            batch.push(request);
                            break;
                        }
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
            }
            peak = batch.len().max(peak.saturating_sub(1));
            let first_seq = batch[0].0;
            let last_seq = batch[batch.len() - 1].0;
            if self.inner.done.lock().failed.is_some() {
                continue; // poisoned: nothing more is written
            }
            let started = Instant::now();
            // redb asserts on some damaged pages: a panic fails this commit like an error.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.commit(batch)));
            last_commit = Instant::now();
            last_took = last_commit - started;
            let mut done = self.inner.done.lock();
            match result {
                Ok(Ok(())) => done.committed = last_seq,
                Ok(Err(e)) => done.failed = Some((first_seq, e.to_string())),
                Err(_) => done.failed = Some((first_seq, "redb panicked in a commit".to_owned())),
            }
            let failed = done.failed.is_some();
            let (woken, waiting) = std::mem::take(&mut done.wakers)
                .into_iter()
                .partition(|(seq, _)| failed || *seq <= last_seq);
            done.wakers = waiting;
            drop(done);
            self.inner.changed.notify_all();
            for (_, waker) in woken {
                wake_guarded(|| waker.wake());
            }
        }
    }

    /// Writes and commits one batch, then publishes what it stored.
    fn commit(&mut self, batch: Vec<(u64, Request)>) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_quick_repair(true);
        let mut touched: Vec<Touched> = Vec::new();
        let mut ends = std::mem::take(&mut self.ends);
        let mut dirty = Vec::new();
        let written = write_batch(&txn, batch, &mut touched, &mut ends, &mut dirty);
        let trimmed = &self.trim_next;
        let result = written.and_then(|()| {
            let mut saved: Vec<&str> = dirty.iter().map(String::as_str).collect();
            let sinks = touched.iter().map(|t| &t.sink).chain(trimmed);
            for sink in sinks {
                if let Some(floor) = sink.floor() {
                    trim(&txn, sink.table(), floor, &mut ends)?;
                }
                if !saved.contains(&sink.table()) {
                    saved.push(sink.table());
                }
            }
            save_ends(&txn, &saved, &ends)?;
            txn.commit()?;
            Ok(())
        });
        match result {
            Ok(()) => {
                self.ends = ends;
                self.trim_next.clear();
                for t in touched {
                    // The records are stored whatever a consumer's waker does when woken.
                    wake_guarded(|| t.sink.publish(t.upto));
                    if t.sink.floor().is_some() {
                        self.trim_next.push(t.sink);
                    }
                }
                Ok(())
            }
            Err(e) => Err(e), // `ends` is stale now, but nothing is written after a failure
        }
    }
}

/// Runs `wake`, which calls wakers of tasks (user code): a panic there must not stop the
/// writer thread, on which every durable send depends.
fn wake_guarded(wake: impl FnOnce()) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(wake));
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

/// Writes a batch's requests. Appends are grouped per table (one table open each); the rest
/// apply in order (an ack or a move only ever follows the commit of what it refers to).
fn write_batch(
    txn: &WriteTransaction,
    batch: Vec<(u64, Request)>,
    touched: &mut Vec<Touched>,
    ends: &mut HashMap<String, (u64, u64)>,
    dirty: &mut Vec<String>,
) -> Result<(), redb::Error> {
    let mut appends: Vec<(usize, Vec<u8>, u64)> = Vec::new();
    for (_, request) in batch {
        match request {
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
                    format::seal(&mut record.value, record.key, record.ts, record.size);
                    t.upto = t.upto.max(record.key + 1);
                    t.bytes += u64::from(record.size);
                    appends.push((at, record.value, record.key));
                }
            }
            Request::Ack { queue, id } => {
                txn.open_table(records(queue.table()))?.remove(id)?;
                txn.open_table(deliveries(queue.counts_table()))?
                    .remove(id)?;
            }
            Request::Delivery { queue, id, count } => {
                txn.open_table(deliveries(queue.counts_table()))?
                    .insert(id, count)?;
            }
            Request::DeadLetter {
                queue,
                id,
                to,
                to_id,
                headers,
            } => {
                let moved = {
                    let mut from = txn.open_table(records(queue.table()))?;
                    let removed = from.remove(id)?;
                    removed.and_then(|v| {
                        let row = format::open(id, v.value()).ok()?;
                        Some(format::with_headers(&row, to_id, &headers))
                    })
                };
                txn.open_table(deliveries(queue.counts_table()))?
                    .remove(id)?;
                if let Some(value) = moved {
                    let to = to.table();
                    txn.open_table(records(to))?
                        .insert(to_id, value.as_slice())?;
                    let end = end_of(txn, ends, to)?;
                    end.0 = end.0.max(to_id + 1);
                    if !dirty.iter().any(|d| d == to) {
                        dirty.push(to.to_owned());
                    }
                }
            }
            Request::Position {
                topic,
                group,
                partition,
                offset,
            } => {
                txn.open_table(GROUPS)?
                    .insert((topic.as_str(), group.as_str(), partition), offset)?;
            }
            Request::Declare(name, bytes) => {
                txn.open_table(DECLARATIONS)?
                    .insert(name.as_str(), bytes.as_slice())?;
            }
            Request::Sync => {}
        }
    }
    appends.sort_by_key(|(at, _, _)| *at); // stable: keys stay ascending per table
    let mut appends = appends.into_iter().peekable();
    for (at, t) in touched.iter().enumerate() {
        let mut table = txn.open_table(records(t.sink.table()))?;
        while let Some((_, value, key)) = appends.next_if(|(of, _, _)| *of == at) {
            table.insert(key, value.as_slice())?;
        }
        drop(table);
        let end = end_of(txn, ends, t.sink.table())?;
        end.0 = end.0.max(t.upto);
        end.1 += t.bytes;
    }
    Ok(())
}

/// The stored end of `table`, loaded on first use.
fn end_of<'a>(
    txn: &WriteTransaction,
    ends: &'a mut HashMap<String, (u64, u64)>,
    table: &str,
) -> Result<&'a mut (u64, u64), redb::Error> {
    if !ends.contains_key(table) {
        let stored = txn
            .open_table(ENDS)?
            .get(table)?
            .map_or((0, 0), |v| v.value());
        ends.insert(table.to_owned(), stored);
    }
    Ok(ends.entry(table.to_owned()).or_default())
}

/// Deletes the rows of `table` below `floor`.
fn trim(
    txn: &WriteTransaction,
    table: &str,
    floor: u64,
    ends: &mut HashMap<String, (u64, u64)>,
) -> Result<(), redb::Error> {
    let mut rows = txn.open_table(records(table))?;
    if rows.first()?.is_none_or(|(k, _)| k.value() >= floor) {
        return Ok(());
    }
    let mut freed = 0u64;
    rows.retain_in(..floor, |key, value| {
        freed += u64::from(format::open(key, value).map_or(0, |r| r.size));
        false
    })?;
    drop(rows);
    let end = end_of(txn, ends, table)?;
    end.1 = end.1.saturating_sub(freed);
    Ok(())
}

fn save_ends(
    txn: &WriteTransaction,
    tables: &[&str],
    ends: &HashMap<String, (u64, u64)>,
) -> Result<(), redb::Error> {
    let mut table = txn.open_table(ENDS)?;
    for name in tables {
        if let Some(end) = ends.get(*name) {
            table.insert(*name, *end)?;
        }
    }
    Ok(())
}

//! Looking inside a store file without a broker: what the `embus` command-line tool uses.
//!
//! [`StoreFile::open`] opens a durable broker's file read-only; [`summary`](StoreFile::summary)
//! lists its topics (options, partitions, offsets, sizes, groups with position and lag) and
//! queues (depth, delivered, dead letters); [`read`](StoreFile::read) yields its stored
//! messages. Nothing here changes the file except [`redrive`](StoreFile::redrive).
//!
//! # A file in use
//!
//! A running broker holds its file exclusively (redb's default mode), so the file cannot be
//! read while it runs: [`open`](StoreFile::open) fails with a clear [`Error::Storage`], and
//! [`try_open`](StoreFile::try_open) says `None`. To watch a live store, poll: open, read past
//! the last [`Cursor`], drop, wait, repeat (`embus tail --follow` does so every 500 ms and
//! shows nothing while a process holds the file).
//!
//! # Errors
//!
//! A missing file, a directory, an empty or foreign file, one that was not closed cleanly and
//! needs redb's recovery (open it once with [`Broker::open`](crate::Broker::open), which
//! repairs it), or a store of an older format version (the broker upgrades it) is
//! [`Error::Storage`]; a damaged file or a record whose checksum fails is [`Error::Corrupt`];
//! a newer format version is [`Error::Incompatible`]. redb's panics on damaged pages are
//! caught and reported as [`Error::Corrupt`].
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("embus-inspect-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let path = dir.join("app.embus");
//! # let _ = std::fs::remove_file(&path);
//! let bus = embus::Broker::open(&path)?;
//! bus.queue::<String>("jobs")?.producer().send("resize".to_owned())?;
//! bus.close()?;
//!
//! let file = embus::inspect::StoreFile::open(&path)?;
//! let summary = file.summary()?;
//! assert_eq!(summary.queues[0].depth, 1);
//! let entries: Vec<_> = file.read("jobs", &embus::inspect::ReadFrom::Earliest)?
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(entries[0].position(), 0);
//! # drop(file); std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```

mod entry;
mod summary;
mod time;

pub use self::entry::{Entry, Place};
pub use self::summary::{
    GroupPartition, GroupSummary, PartitionSummary, QueueSummary, Summary, TopicSummary,
};

use std::path::Path;
use std::time::SystemTime;

use crate::error::Error;
use crate::store::{Reader, StoredRecord, counts_table, partition_table, queue_table};

/// Records read per read transaction.
const CHUNK: usize = 512;

/// A store file opened read-only.
#[derive(Debug)]
pub struct StoreFile {
    reader: Reader,
}

/// Where [`StoreFile::read`] starts; parses from `earliest`, `latest`, an offset or an RFC 3339
/// time, as `embus tail --from` takes it.
///
/// ```
/// use embus::inspect::ReadFrom;
/// use std::time::{Duration, UNIX_EPOCH};
///
/// assert_eq!("latest".parse(), Ok(ReadFrom::Latest));
/// assert_eq!("42".parse(), Ok(ReadFrom::Offset(42)));
/// let at = UNIX_EPOCH + Duration::from_secs(1_796_551_200);
/// assert_eq!("2026-12-06T10:00:00Z".parse(), Ok(ReadFrom::Time(at)));
/// assert!("yesterday".parse::<ReadFrom>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// The oldest stored message.
    Earliest,
    /// Past the newest: nothing now, what comes next (with [`StoreFile::resume`]).
    Latest,
    /// This offset (topic, in every partition) or id (queue) on.
    Offset(u64),
    /// The messages stored at or after this time.
    Time(SystemTime),
}

/// A [`ReadFrom`] that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseReadFromError(String);

impl std::fmt::Display for ParseReadFromError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} is not a start: expected `earliest`, `latest`, an offset (a number) or an \
             RFC 3339 time such as 2026-12-06T10:00:00Z",
            self.0
        )
    }
}

impl std::error::Error for ParseReadFromError {}

impl std::str::FromStr for ReadFrom {
    type Err = ParseReadFromError;

    /// `earliest`, `latest`, an offset, or an RFC 3339 time (`2026-12-06T10:00:00Z`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            _ if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text
                .parse()
                .map(Self::Offset)
                .map_err(|_| ParseReadFromError(text.to_owned())),
            _ => time::parse(text)
                .map(Self::Time)
                .ok_or_else(|| ParseReadFromError(text.to_owned())),
        }
    }
}

/// Where a read stopped, per partition (or for the queue): the next key to read.
/// [`StoreFile::resume`] reads on from it, in this file or a later opening of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    name: String,
    /// (partition or `None` for a queue, next key).
    next: Vec<(Option<u32>, u64)>,
}

impl StoreFile {
    /// Opens the store at `path` read-only.
    ///
    /// # Errors
    /// See the [module docs](self#errors); a file a running process holds is
    /// [`Error::Storage`] saying so.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        Self::try_open(path)?.ok_or_else(|| Error::Storage {
            path: path.to_owned(),
            message: crate::store::HELD.to_owned(),
        })
    }

    /// As [`open`](Self::open), but `Ok(None)` while another process holds the file.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn try_open(path: impl AsRef<Path>) -> Result<Option<Self>, Error> {
        let reader = crate::store::open_read_only(path.as_ref())?;
        Ok(reader.map(|reader| Self { reader }))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.reader.path()
    }

    /// The payload codec (`bincode` or `json`).
    pub fn codec(&self) -> &str {
        self.reader.codec()
    }

    /// The topics and queues, with their figures. Reads no record.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if a bookkeeping row (declaration, end, position) fails its
    /// checksum; [`Error::Storage`] if the file cannot be read.
    pub fn summary(&self) -> Result<Summary, Error> {
        summary::summarize(&self.reader)
    }

    /// The stored messages of topic or queue `name` from `from` on: a topic's partition by
    /// partition, each in offset order; a queue's in id order. Each is read and checked as
    /// the iterator reaches it (a damaged record is an `Err` item, and the iterator ends).
    ///
    /// # Errors
    /// [`Error::NotFound`] if no topic or queue is named `name`; the file's errors as
    /// [`summary`](Self::summary).
    pub fn read(&self, name: &str, from: &ReadFrom) -> Result<Entries<'_>, Error> {
        let logs = self.logs(name)?;
        let mut next = Vec::with_capacity(logs.len());
        let mut total = 0;
        for (partition, table) in &logs {
            let e = self.reader.extent(table)?;
            let end = e.next.max(e.last.map_or(0, |l| l + 1));
            let start = match from {
                ReadFrom::Earliest | ReadFrom::Time(_) => 0,
                ReadFrom::Latest => end,
                ReadFrom::Offset(n) => *n,
            };
            if start < end {
                total += e.records;
            }
            next.push((*partition, start));
        }
        let after = match from {
            ReadFrom::Time(t) => crate::record::to_nanos(*t),
            _ => 0,
        };
        Ok(self.entries(name, logs, next, after, total))
    }

    /// The messages of the topic or queue `cursor` names past where `cursor` stopped: how to
    /// follow a store, opening it again while no broker holds it.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("embus-resume-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// use embus::inspect::{ReadFrom, StoreFile};
    ///
    /// let path = dir.join("app.embus");
    /// # let _ = std::fs::remove_file(&path);
    /// let bus = embus::Broker::open(&path)?;
    /// let orders = bus.topic::<u32>("orders")?;
    /// orders.producer().send(1)?;
    /// bus.close()?;
    ///
    /// let file = StoreFile::open(&path)?;
    /// let mut seen = file.read("orders", &ReadFrom::Earliest)?;
    /// assert_eq!(seen.by_ref().count(), 1);
    /// let cursor = seen.cursor();
    /// drop(file); // a broker cannot open the file while it is open here
    ///
    /// let bus = embus::Broker::open(&path)?;
    /// bus.topic::<u32>("orders")?.producer().send(2)?;
    /// bus.close()?;
    ///
    /// let file = StoreFile::open(&path)?;
    /// let new: Vec<_> = file.resume(&cursor)?.collect::<Result<_, _>>()?;
    /// assert_eq!(new.len(), 1);
    /// assert_eq!(new[0].position(), 1);
    /// # drop(file); std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub fn resume(&self, cursor: &Cursor) -> Result<Entries<'_>, Error> {
        let logs = self.logs(&cursor.name)?;
        let next = logs
            .iter()
            .map(|(partition, _)| {
                let at = cursor.next.iter().find(|(p, _)| p == partition);
                (*partition, at.map_or(0, |(_, n)| *n))
            })
            .collect();
        Ok(self.entries(&cursor.name, logs, next, 0, 0))
    }

    /// Moves up to `limit` (`None`: all) messages of queue `from` (typically a dead-letter
    /// queue) to the end of queue `to`, as [`Queue::redrive`](crate::Queue::redrive) does:
    /// each keeps its payload, key, headers and timestamp, with delivery count 0 and no delay,
    /// time-to-live or priority; only messages a broker would find ready move (not delayed,
    /// not expired), highest priority first then in send order, within `to`'s capacity.
    /// Returns how many moved. Closes the read-only file and opens it for writing: the only
    /// call here that changes the file (one commit).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] if `from` is `to`; [`Error::NotFound`] if either is not
    /// declared; [`Error::Mismatch`] if either is not a queue or their payload types differ;
    /// the file's errors as [`open`](Self::open) (another process may have opened it since).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("embus-redrive-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// use embus::QueueOptions;
    ///
    /// let path = dir.join("app.embus");
    /// # let _ = std::fs::remove_file(&path);
    /// let bus = embus::Broker::open(&path)?;
    /// let options = QueueOptions::default().max_deliveries(1).dead_letter("jobs.dead");
    /// let jobs = bus.queue_with::<String>("jobs", options)?;
    /// jobs.producer().send("resize".to_owned())?;
    /// let mut worker = jobs.consumer();
    /// worker.recv()?.nack()?; // its last delivery: dead-lettered
    /// bus.close()?;
    ///
    /// let file = embus::inspect::StoreFile::open(&path)?;
    /// assert_eq!(file.redrive("jobs.dead", "jobs", None)?, 1);
    ///
    /// let bus = embus::Broker::open(&path)?;
    /// let mut worker = bus.queue::<String>("jobs")?.consumer();
    /// let again = worker.recv()?;
    /// assert_eq!((again.payload().as_str(), again.delivery_count()), ("resize", 1));
    /// again.ack()?;
    /// # bus.close()?; std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub fn redrive(self, from: &str, to: &str, limit: Option<usize>) -> Result<usize, Error> {
        // What can be told read-only is, so that a mistyped name or nothing to move leaves the
        // file as it is (opening it for writing rewrites redb's header).
        let summary = self.summary()?;
        let known = |name: &str| {
            let topic = summary.topics.iter().any(|t| t.name == name);
            let queue = summary.queues.iter().find(|q| q.name == name);
            match queue {
                None if !topic => Err(Error::NotFound {
                    name: name.to_owned(),
                }),
                queue => Ok(queue),
            }
        };
        let (source, target) = (known(from)?, known(to)?);
        if let (Some(source), Some(target)) = (source, target)
            && from != to
            && source.payload == target.payload
            && (source.depth == 0 || limit == Some(0))
        {
            return Ok(0);
        }
        let path = self.path().to_owned();
        drop(self);
        let now = crate::record::to_nanos(SystemTime::now());
        crate::store::redrive(&path, from, to, limit.unwrap_or(usize::MAX), now)
    }

    /// The log tables of `name`: (partition, table) per partition of a topic, or the queue's.
    fn logs(&self, name: &str) -> Result<Vec<(Option<u32>, String)>, Error> {
        let summary = self.summary()?;
        if let Some(topic) = summary.topics.iter().find(|t| t.name == name) {
            let logs = topic.partitions.iter().map(|p| p.partition);
            return Ok(logs.map(|p| (Some(p), partition_table(name, p))).collect());
        }
        if summary.queues.iter().any(|q| q.name == name) {
            return Ok(vec![(None, queue_table(name))]);
        }
        Err(Error::NotFound {
            name: name.to_owned(),
        })
    }

    fn entries(
        &self,
        name: &str,
        logs: Vec<(Option<u32>, String)>,
        next: Vec<(Option<u32>, u64)>,
        after: u64,
        total: u64,
    ) -> Entries<'_> {
        Entries {
            file: self,
            name: name.to_owned(),
            logs,
            next,
            at: 0,
            buffer: std::collections::VecDeque::new(),
            after,
            total,
            failed: false,
        }
    }
}

/// The messages [`StoreFile::read`] yields, read in chunks.
#[derive(Debug)]
pub struct Entries<'a> {
    file: &'a StoreFile,
    name: String,
    logs: Vec<(Option<u32>, String)>,
    next: Vec<(Option<u32>, u64)>,
    /// The log being read.
    at: usize,
    buffer: std::collections::VecDeque<Entry>,
    /// Skip messages stored before this (nanoseconds).
    after: u64,
    total: u64,
    failed: bool,
}

impl Entries<'_> {
    /// About how many messages the read covers (the stored count of each partition it reads,
    /// or the queue's), for a progress display; 0 when resuming.
    pub fn estimate(&self) -> u64 {
        self.total
    }

    /// Where the read stands: what it yielded so far is behind it.
    pub fn cursor(&self) -> Cursor {
        let mut next = self.next.clone();
        if let Some(first) = self.buffer.front() {
            // Buffered but not yet yielded: the cursor points at it.
            let partition = match first.place {
                Place::Topic { partition, .. } => Some(partition),
                Place::Queue { .. } => None,
            };
            if let Some(slot) = next.iter_mut().find(|(p, _)| *p == partition) {
                slot.1 = first.position();
            }
        }
        Cursor {
            name: self.name.clone(),
            next,
        }
    }

    fn entry(&self, partition: Option<u32>, r: StoredRecord) -> Entry {
        let place = match partition {
            Some(partition) => Place::Topic {
                partition,
                offset: r.key,
            },
            None => Place::Queue {
                id: r.key,
                delivery_count: r.deliveries,
            },
        };
        let payload_json = (self.file.codec() == "json")
            .then(|| serde_json::from_slice(&r.payload).ok())
            .flatten();
        Entry {
            name: self.name.clone(),
            place,
            timestamp_ns: r.ts,
            key: r.record_key,
            headers: r.headers,
            payload: r.payload,
            payload_json,
        }
    }

    /// Fills the buffer from the current log; `false` at the end of every log.
    fn fill(&mut self) -> Result<bool, Error> {
        while self.at < self.logs.len() {
            let (partition, table) = &self.logs[self.at];
            let partition = *partition;
            let counts = partition.is_none().then(|| counts_table(&self.name));
            let from = self.next[self.at].1;
            let read = self
                .file
                .reader
                .records(table, counts.as_deref(), from, CHUNK)?;
            let Some(last) = read.last() else {
                self.at += 1;
                continue;
            };
            self.next[self.at].1 = last.key + 1;
            let after = self.after;
            for r in read.into_iter().filter(|r| r.ts >= after) {
                let entry = self.entry(partition, r);
                self.buffer.push_back(entry);
            }
            if !self.buffer.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Iterator for Entries<'_> {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(entry) = self.buffer.pop_front() {
            return Some(Ok(entry));
        }
        if self.failed {
            return None;
        }
        match self.fill() {
            Ok(true) => self.buffer.pop_front().map(Ok),
            Ok(false) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

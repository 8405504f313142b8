//! The persistence seam: what the engine asks of storage, and when a message counts as stored.
//!
//! The store moves bytes and ids ([`LogId`], offsets), never a payload type: the engine
//! encodes and decodes payloads on its side of the seam. The topic and queue engines are the
//! one delivery path for every mode. They call the store at a few points and nowhere else:
//!
//! 1. [`Store::append`] to send: the engine describes the send as an [`Append`] job, which can
//!    either publish at once (memory mode) or stage its records under the target's lock and let
//!    the store's writer publish them after the commit (durable mode). The store picks; the
//!    engine never asks which mode it is in.
//! 2. [`Store::progress`] after acks, deliveries, dead-lettering and group positions change.
//! 3. Declarations and restores when a topic or queue is declared, and cold reads below a
//!    partition's in-memory tail ([`Store::load`]).
//!
//! [`MemoryStore`] keeps nothing: the in-memory logs are the truth, `append` just publishes, and
//! payloads are never encoded. [`DurableStore`] (redb) commits first, then publishes.

pub(crate) mod batch;
pub(crate) mod format;
mod memory;
mod redb;

pub(crate) use self::memory::MemoryStore;
pub(crate) use self::redb::{DurableStore, OpenWith, Options as DurableOptions};
pub(crate) use self::redb::{
    HELD, Reader, StoredRecord, counts_table, open_read_only, partition_table, queue_table, redrive,
};

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Poll, Waker};

use crate::error::Error;
use crate::record::Nanos;

/// Which log a stored record belongs to: a topic's partition or a queue. The store derives
/// its own names (tables) from it, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogId {
    /// Where a durable store keeps the records.
    table: String,
    /// Where a durable store keeps delivery counts (queues only; empty for partitions).
    counts: String,
    /// The records' checksum seed ([`format::seed`] of `table`'s logical name, without the
    /// reserved prefix, so it survives the tables' move under the prefix).
    seed: u32,
    /// Compacted partitions: where a durable store keeps each key's latest offset (empty
    /// otherwise).
    keys: String,
    /// Where a durable store keeps the message ids of the topic's or queue's dedupe window
    /// (one table per topic, shared by its partitions).
    ids: String,
}

impl LogId {
    /// Partition `partition` of topic `topic`.
    pub(crate) fn partition(topic: &str, partition: u32) -> Self {
        let table = redb::partition_table(topic, partition);
        Self {
            seed: format::seed(redb::logical(&table)),
            table,
            counts: String::new(),
            keys: String::new(),
            ids: redb::ids_table(topic),
        }
    }

    /// This partition is compacted (with `on`): a durable store deletes a row once a later
    /// one of the same key is stored.
    pub(crate) fn compacted(mut self, on: bool) -> Self {
        if on {
            self.keys = redb::keys_table(&self.table);
        }
        self
    }

    /// The queue `queue`.
    pub(crate) fn queue(queue: &str) -> Self {
        let table = redb::queue_table(queue);
        Self {
            seed: format::seed(redb::logical(&table)),
            table,
            counts: redb::counts_table(queue),
            keys: String::new(),
            ids: redb::ids_table(queue),
        }
    }

    /// The records table.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// The delivery-count table (queues only).
    pub(crate) fn counts_table(&self) -> &str {
        &self.counts
    }

    /// The key index table (compacted partitions only; empty otherwise).
    pub(crate) fn keys_table(&self) -> &str {
        &self.keys
    }

    /// The message id table of its topic or queue (dedupe).
    pub(crate) fn ids_table(&self) -> &str {
        &self.ids
    }

    /// Every table a durable store may keep for this log (to delete it). A topic's
    /// partitions share its message id table: each names it.
    pub(crate) fn tables(&self) -> Vec<String> {
        let mut tables = vec![self.table.clone(), self.ids.clone()];
        // A partition's key table exists only if it was compacted: name it anyway.
        let keys = redb::keys_table(&self.table);
        tables.extend(
            [self.counts.clone(), keys]
                .into_iter()
                .filter(|t| !t.is_empty()),
        );
        tables
    }

    /// The records' checksum seed.
    pub(crate) fn seed(&self) -> u32 {
        self.seed
    }
}

/// What changed in consumer progress, for the store to record. Queues are named by their
/// sink, so recording an ack copies no name.
#[derive(Clone, Copy)]
pub(crate) enum Progress<'a> {
    /// A queue message was acked (deleted).
    QueueAck { queue: &'a Arc<dyn Sink>, id: u64 },
    /// A queue message was handed out again (delivery count now `count`).
    QueueDelivery {
        queue: &'a Arc<dyn Sink>,
        id: u64,
        count: u32,
    },
    /// A queue message moved to its dead-letter queue as `to_id`, with these headers.
    ///
    /// The engine still holds the message, so it hands the store the dead letter itself:
    /// `body` encodes it (key, the new headers and payload, see [`format::body`]; called only
    /// by a store that keeps bytes), stored with `ts` and `size`. The source row is only
    /// deleted: a missing or damaged one cannot lose the dead letter.
    DeadLetter {
        queue: &'a Arc<dyn Sink>,
        id: u64,
        to: &'a Arc<dyn Sink>,
        to_id: u64,
        headers: &'a crate::record::Headers,
        body: &'a dyn Fn() -> Result<Vec<u8>, Error>,
        ts: Nanos,
        size: u32,
    },
    /// A consumer group moved a message to its dead-letter queue as `to_id`: `body` is the
    /// dead letter (key, headers and payload, see [`format::body`]; empty for a store that
    /// keeps no bytes), and `position` the group's new first unacked offset in that partition
    /// if it moved. Both ride one commit: a crash leaves either the message still the group's
    /// or the dead letter stored, never neither.
    GroupDeadLetter {
        to: &'a Arc<dyn Sink>,
        to_id: u64,
        body: &'a [u8],
        ts: Nanos,
        size: u32,
        /// `(topic, group, partition, offset)`.
        position: Option<(&'a str, &'a str, u32, u64)>,
    },
    /// A group's first unacked offset in a partition moved.
    GroupPosition {
        topic: &'a str,
        group: &'a str,
        partition: u32,
        offset: u64,
    },
    /// A transaction acked `offset` of a group's partition ahead of the group's position: kept
    /// until the position passes it, so that a reopen does not deliver it again (a
    /// consume-transform-produce transaction's outputs are in the same commit).
    GroupAcked {
        topic: &'a str,
        group: &'a str,
        partition: u32,
        offset: u64,
    },
    /// The group's kept acks below `below` in a partition are moot: its position passed them
    /// (recorded after that position), or it was reset (`u64::MAX`: all of them, recorded
    /// before the position moves back).
    GroupAckedBelow {
        topic: &'a str,
        group: &'a str,
        partition: u32,
        below: u64,
    },
}

/// A message id stored with its record in the same commit (dedupe): a durable store adds the
/// row `id -> (partition, key, timestamp, seq)` to the log's [ids table](LogId::ids_table),
/// after deleting the rows of `forget`, ids that left the window since the last send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdRow {
    pub(crate) id: Box<str>,
    pub(crate) partition: u32,
    /// The window's sequence number of the id: the order it was remembered in, across the
    /// window's partitions (timestamps cannot tell ids of one clock reading apart).
    pub(crate) seq: u64,
    pub(crate) forget: Vec<Box<str>>,
}

/// A stored message id read back ([`Store::message_ids`]): where its message was stored,
/// when, and its place in the window's order (`None` for a row of format version 5 or
/// older, which kept none: such rows come before every row that has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredId {
    pub(crate) id: Box<str>,
    pub(crate) partition: u32,
    pub(crate) key: u64,
    pub(crate) ts: Nanos,
    pub(crate) seq: Option<u64>,
}

/// One send, as the engine describes it to the store.
pub(crate) trait Append {
    /// Memory mode: checks for room and publishes, under one lock.
    fn publish(&mut self);

    /// Durable mode, before any lock: encodes the records not yet staged, in order (key,
    /// headers and payload, see [`format`]).
    fn encode(&mut self) -> Result<Vec<Vec<u8>>, Error>;

    /// Durable mode, under the target's lock: reserves room for as many records as fit, in
    /// order, gives each its key (offset or id) and timestamp, keeps it aside for
    /// [`Sink::publish`], and tells `stager` of it; then, still under the lock, calls
    /// [`Stager::end`] (which hands the run to the writer, so keys reach it in order).
    fn stage(&mut self, stager: &mut dyn Stager);

    /// Durable mode, after a failed commit: takes the staged records back, for the error.
    fn unstage(&mut self);
}

/// What a durable store collects from [`Append::stage`].
pub(crate) trait Stager {
    /// One staged record of `sink`: its key, timestamp and counted size (its bytes are the
    /// next of those [`Append::encode`] returned), and the message id to store with it in the
    /// same commit, if it has one under a dedupe window.
    fn record(&mut self, sink: &Arc<dyn Sink>, key: u64, ts: Nanos, size: u32, id: Option<IdRow>);
    /// The run is complete (called under the target's lock, even if nothing was staged).
    fn end(&mut self);
}

/// A redb write transaction lent by a durable store ([`Store::lend`]).
pub(crate) struct Lent(pub(crate) Box<::redb::WriteTransaction>);

/// A transaction, as the engine describes it to the store ([`Store::transact`]).
pub(crate) trait TxJob {
    /// Takes the targets' locks, checks everything and, if all is well, stages the records
    /// and settles the acks, telling `log` of each (durable mode) or publishing at once
    /// (`log` is `None`: memory mode); then, still under the locks, calls [`TxLog::seal`].
    /// On `Err` nothing was done.
    fn run(&mut self, log: Option<&mut dyn TxLog>) -> Result<(), Error>;

    /// Durable mode, after a failed commit: takes the staged records back, for the error.
    fn unstage(&mut self);

    /// After [`run`](Self::run): the latest commit, pending when it ran, of an original that
    /// a duplicate among its records stands for (dedupe). A transaction that stores nothing
    /// itself still waits for it, as a send would.
    fn originals(&self) -> Option<Ticket>;
}

/// One staged record of a transaction ([`TxLog::record`]).
pub(crate) struct TxRecord<'a> {
    pub(crate) sink: &'a Arc<dyn Sink>,
    pub(crate) key: u64,
    pub(crate) ts: Nanos,
    pub(crate) size: u32,
    pub(crate) body: Vec<u8>,
    pub(crate) id: Option<IdRow>,
}

/// What a durable store collects from [`TxJob::run`]: everything commits together.
pub(crate) trait TxLog {
    /// One staged record of `sink`: its key, timestamp, counted size, encoded body and, under
    /// a dedupe window, its message id's row.
    fn record(&mut self, staged: TxRecord<'_>);
    /// Consumer progress that commits with the records (an ack, a group position).
    fn progress(&mut self, change: Progress<'_>);
    /// The transaction is complete: hands it to the writer as one request (called under the
    /// targets' locks, so that its keys reach the writer in order). Returns the ticket of its
    /// commit, for [`Store::settle`] (`None` if nothing was handed over).
    fn seal(&mut self) -> Option<Ticket>;
}

/// A log the writer publishes into after a commit: a topic partition or a queue.
pub(crate) trait Sink: Send + Sync {
    /// Which log it is.
    fn log(&self) -> &LogId;
    /// Makes the staged records with keys below `upto` visible, in key order, and wakes the
    /// consumers waiting for them (on the thread committing), before the commit's senders are
    /// told: a send that returned finds its records visible.
    fn publish(&self, upto: u64);
    /// Rows below this key are no longer retained (topics); `None` for queues, whose rows go
    /// one by one when acked. It never moves for a record still staged (see
    /// `engine::topic::log::retention`): a commit may delete the rows below it.
    fn floor(&self) -> Option<u64>;
}

/// What a restored partition or queue starts from.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    /// The first retained key and the next key.
    pub(crate) base: u64,
    pub(crate) end: u64,
    /// Sum of the retained records' counted sizes.
    pub(crate) bytes: u64,
    /// The newest record's timestamp (timestamps never go back, even if the clock does).
    pub(crate) last_ts: Nanos,
}

/// A stored row read back: key, value bytes (see [`format`]), and for queues its deliveries.
pub(crate) struct Loaded {
    pub(crate) key: u64,
    pub(crate) value: Vec<u8>,
    pub(crate) deliveries: u32,
    /// The checksum seed of the table it was read from.
    pub(crate) seed: u32,
}

impl Loaded {
    /// Checks the row (for its key, in its table) and splits it into fields.
    pub(crate) fn open(&self) -> Result<format::Row<'_>, format::Bad> {
        format::open(self.seed, self.key, &self.value)
    }
}

/// A send staged in the store whose commit is still pending (durable mode): poll it with
/// [`Store::poll_stored`] (`send_async`), or wait for it with [`Store::settle`]. Tickets are
/// numbered in the order sends reach the writer: a later ticket commits with or after an
/// earlier one, never before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ticket(pub(crate) u64);

/// What [`Store::append`] waits for once the job's records are staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// A plain send: until they are stored as the broker's durability says (the commit's
    /// fsync under `Immediate`, the writer having them under `Interval`).
    Wait,
    /// `send_async`: under `Immediate` a durable store returns the ticket to poll instead of
    /// waiting for the commit.
    Poll,
    /// A send that holds a lock which must not be held across a wait (a dedupe window): a
    /// durable store returns the ticket at once, whatever the durability, and the caller
    /// waits with [`Store::settle`] once it let go of its locks (taking its records back if
    /// that fails).
    Staged,
}

/// Persistence behind the in-memory logs. Object-safe. `append` is never called while an
/// engine lock is held; `progress` may be (it only queues the change for the next commit,
/// never waits for I/O: an ack does not wait for its own fsync).
pub(crate) trait Store: fmt::Debug + Send + Sync + 'static {
    /// A random number that tells this store apart from any other: drawn when it is created,
    /// and kept in the file by a durable store, so it is the same after a restart or a crash.
    /// Outbound bridges put it in the ids of messages sent without one.
    #[cfg_attr(not(any(feature = "nats", feature = "amqp")), allow(dead_code))]
    fn instance(&self) -> u64;

    /// Stores the job's records (durably, for a durable store) and publishes them; `commit`
    /// says whether a durable store waits for the commit or returns a ticket.
    fn append(&self, job: &mut dyn Append, commit: Commit) -> Result<Option<Ticket>, Error>;

    /// Waits as [`append`](Self::append) with [`Commit::Wait`] would have once the send behind
    /// `ticket` was staged (from [`Commit::Staged`]): for its commit under `Immediate`; under
    /// `Interval` only while the writer is too far behind. `Err` if its commit failed (the
    /// caller takes its records back), or if this thread holds the lent write transaction
    /// that commit waits for. A store that gives no tickets (the default) never waits.
    fn settle(&self, ticket: Ticket) -> Result<(), Error> {
        let _ = ticket;
        Ok(())
    }

    /// Commits a transaction: its records, acks and group positions in one commit (durable
    /// mode), or publishes it at once under its targets' locks (memory mode). Returns once it
    /// is stored, as [`append`](Self::append) does.
    /// With `lent`, the records commit in that write transaction, with what the application
    /// wrote in it; it is taken only once the job has run (a failed check leaves it there).
    fn transact(&self, job: &mut dyn TxJob, lent: &mut Option<Lent>) -> Result<(), Error>;

    /// Lends the writer: the redb write transaction the store's next commit will be, for the
    /// application to write its own tables in ([`Error::NoDatabase`] for a store without
    /// one). The writer waits for it, and so does every send, until it comes back through
    /// [`transact`](Self::transact) or [`give_back`](Self::give_back).
    fn lend(&self) -> Result<Lent, Error> {
        Err(Error::NoDatabase)
    }

    /// Aborts a lent write transaction and lets the writer go on.
    fn give_back(&self, lent: Lent) {
        drop(lent);
    }

    /// Whether the staged send behind `ticket` is stored: `Pending` registers `waker`.
    fn poll_stored(&self, ticket: Ticket, waker: &Waker) -> Poll<Result<(), Error>>;

    /// Records consumer progress.
    fn progress(&self, change: Progress<'_>);

    /// Whether progress recorded now can still be stored: [`Error::Closed`] once closed,
    /// [`Error::Poisoned`] after a failed commit. Asked after an ack or nack, so that one
    /// that cannot last says so.
    fn can_record(&self) -> Result<(), Error>;

    /// The stored declaration of `name` (the engine's bytes), if any.
    fn declared(&self, name: &str) -> Result<Option<Vec<u8>>, Error>;

    /// Stores a new declaration (rides the next commit).
    fn declare(&self, name: &str, declaration: Vec<u8>);

    /// Every stored declaration: name and the engine's bytes (none for a store that keeps
    /// nothing, the default).
    fn declarations(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        Ok(Vec::new())
    }

    /// Deletes a topic's or queue's declaration, its `tables`, their bookkeeping and, for a
    /// topic, its group positions, in one commit; returns once it is committed. Records of
    /// these tables staged earlier are written first (and deleted with the rest).
    /// `sinks` are the deleted object's: later progress or records of theirs (a consumer
    /// still acking) are dropped, never written into a namesake declared afterwards.
    /// A store that keeps nothing (the default) has nothing to delete.
    fn delete(
        &self,
        name: &str,
        tables: Vec<String>,
        sinks: Vec<Arc<dyn Sink>>,
        topic: bool,
    ) -> Result<(), Error> {
        let _ = (name, tables, sinks, topic);
        Ok(())
    }

    /// Where `log` stands.
    fn restore(&self, log: &LogId) -> Result<Restored, Error>;

    /// The message ids stored in `log`'s [ids table](LogId::ids_table) (dedupe), in no
    /// particular order; none for a store that keeps nothing (the default). The table holds
    /// only the ids of the window as the last commit left it (and those it dropped since),
    /// so this never reads the log.
    fn message_ids(&self, log: &LogId) -> Result<Vec<StoredId>, Error> {
        let _ = log;
        Ok(Vec::new())
    }

    /// Stored acks of `topic`'s groups ahead of their positions ([`Progress::GroupAcked`]):
    /// (group, partition, offset). None for a store that keeps nothing (the default).
    fn acked(&self, topic: &str) -> Result<Vec<(String, u32, u64)>, Error> {
        let _ = topic;
        Ok(Vec::new())
    }

    /// Stored group positions of `topic`: (group, partition, first unacked offset).
    fn groups(&self, topic: &str) -> Result<Vec<(String, u32, u64)>, Error>;

    /// Forgets every stored position of group `group` of `topic` (rides the next commit).
    fn forget_group(&self, topic: &str, group: &str);

    /// Forgets the stored declaration of `name` (rides the next commit).
    fn undeclare(&self, name: &str);

    /// Whether stored messages can be read back ([`load`](Self::load)), so the engine may keep
    /// only a tail of each partition in memory.
    fn reads_back(&self) -> bool;

    /// Rows of `log` with keys in `from..to` (all rows with `to == u64::MAX`).
    fn load(&self, log: &LogId, from: u64, to: u64) -> Result<Vec<Loaded>, Error>;

    /// Waits until everything sent so far is committed (close, tests); reports the first
    /// storage failure.
    fn flush(&self) -> Result<(), Error>;

    /// Flushes and stops the writer; the file is released once the last handle is gone.
    fn close(&self) -> Result<(), Error>;

    /// The file, for errors the engine reports about what it read (`<memory>` in memory mode).
    fn path(&self) -> PathBuf;

    /// Its figures for a snapshot; `None` for a store that keeps nothing (the default).
    fn stats(&self) -> Option<crate::stats::StoreStats> {
        None
    }
}

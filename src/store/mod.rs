//! The persistence seam: what the engine asks of storage, and when a message counts as stored.
//!
//! The topic and queue engines (`topic/`, `queue/`) are the one delivery path for every mode.
//! They call the store at a few points and nowhere else:
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

mod durable;
pub(crate) mod format;
mod memory;

pub(crate) use durable::{DurableStore, OpenWith, Options as DurableOptions};
pub(crate) use memory::MemoryStore;

use std::fmt;
use std::sync::Arc;
use std::task::{Poll, Waker};

use crate::error::Error;
use crate::record::Nanos;

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
    DeadLetter {
        queue: &'a Arc<dyn Sink>,
        id: u64,
        to: &'a Arc<dyn Sink>,
        to_id: u64,
        headers: &'a crate::record::Headers,
    },
    /// A group's first unacked offset in a partition moved.
    GroupPosition {
        topic: &'a str,
        group: &'a str,
        partition: u32,
        offset: u64,
    },
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
    /// next of those [`Append::encode`] returned).
    fn record(&mut self, sink: &Arc<dyn Sink>, key: u64, ts: Nanos, size: u32);
    /// The run is complete (called under the target's lock, even if nothing was staged).
    fn end(&mut self);
}

/// A log the writer publishes into after a commit: a topic partition or a queue.
pub(crate) trait Sink: Send + Sync {
    /// The redb table its records live in.
    fn table(&self) -> &str;
    /// Makes the staged records with keys below `upto` visible, in key order.
    fn publish(&self, upto: u64);
    /// Rows below this key are no longer retained (topics); `None` for queues, whose rows go
    /// one by one when acked.
    fn floor(&self) -> Option<u64>;
    /// The redb table of delivery counts (queues only).
    fn counts_table(&self) -> &str {
        ""
    }
}

/// A declaration as stored: kind, payload type and options (bincode of the options).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Declaration {
    pub(crate) queue: bool,
    pub(crate) type_name: String,
    pub(crate) options: Vec<u8>,
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
}

/// A send staged in the store whose commit is still pending (`send_async` in durable mode):
/// poll it with [`Store::poll_stored`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(pub(crate) u64);

/// Persistence behind the in-memory logs. Object-safe. `append` is never called while an
/// engine lock is held; `progress` may be (it only queues the change for the next commit,
/// never waits for I/O: an ack does not wait for its own fsync).
pub(crate) trait Store: fmt::Debug + Send + Sync + 'static {
    /// Stores the job's records (durably, for a durable store) and publishes them. With
    /// `defer`, a durable store returns once the records are staged, with a ticket to poll
    /// instead of waiting for the commit.
    fn append(&self, job: &mut dyn Append, defer: bool) -> Result<Option<Ticket>, Error>;

    /// Whether the staged send behind `ticket` is stored: `Pending` registers `waker`.
    fn poll_stored(&self, ticket: Ticket, waker: &Waker) -> Poll<Result<(), Error>>;

    /// Records consumer progress.
    fn progress(&self, change: Progress<'_>);

    /// The stored declaration of `name`, if any.
    fn declared(&self, name: &str) -> Result<Option<Declaration>, Error>;

    /// Stores a new declaration (rides the next commit).
    fn declare(&self, name: &str, declaration: Declaration);

    /// Where the log in `table` stands.
    fn restore(&self, table: &str) -> Result<Restored, Error>;

    /// Stored group positions of `topic`: (group, partition, first unacked offset).
    fn groups(&self, topic: &str) -> Result<Vec<(String, u32, u64)>, Error>;

    /// Whether stored messages can be read back ([`load`](Self::load)), so the engine may keep
    /// only a tail of each partition in memory.
    fn reads_back(&self) -> bool;

    /// Rows of `table` with keys in `from..to` (all rows with `to == u64::MAX`).
    fn load(&self, table: &str, from: u64, to: u64) -> Result<Vec<Loaded>, Error>;

    /// Waits until everything sent so far is committed (close, tests); reports the first
    /// storage failure.
    fn flush(&self) -> Result<(), Error>;

    /// Flushes and stops the writer; the file is released once the last handle is gone.
    fn close(&self) -> Result<(), Error>;
}

/// The redb table of a topic partition.
pub(crate) fn partition_table(topic: &str, partition: u32) -> String {
    format!("t.{topic}.{partition}")
}

/// The redb table of a queue.
pub(crate) fn queue_table(queue: &str) -> String {
    format!("q.{queue}")
}

/// The redb table of a queue's delivery counts.
pub(crate) fn counts_table(queue: &str) -> String {
    format!("c.{queue}")
}

/// Decodes one stored row, with a typed error naming where it was.
pub(crate) fn decode_row<T: serde::de::DeserializeOwned>(
    name: &str,
    partition: u32,
    row: &Loaded,
) -> Result<(Nanos, crate::record::Entry<T>), Error> {
    use crate::codec::Codec;
    let fail = |message: String, bytes: &[u8]| {
        Error::Decode(Box::new(crate::error::Undecodable {
            name: name.to_owned(),
            partition,
            offset: row.key,
            message,
            bytes: bytes.to_vec(),
        }))
    };
    let opened =
        format::open(row.key, &row.value).map_err(|bad| fail(bad.to_string(), &row.value))?;
    let payload = crate::codec::Bincode::decode(opened.payload)
        .map_err(|e| fail(e.to_string(), opened.payload))?;
    let entry = crate::record::Entry {
        payload,
        meta: opened.meta(),
        size: opened.size,
    };
    Ok((opened.ts, entry))
}

/// Encodes a record's body for the durable store.
pub(crate) fn encode<T: serde::Serialize>(
    name: &str,
    payload: &T,
    key: Option<&[u8]>,
    headers: &crate::record::Headers,
) -> Result<Vec<u8>, Error> {
    format::encode_body::<crate::codec::Bincode, T>(payload, key, headers).map_err(|e| {
        Error::Encode {
            name: name.to_owned(),
            message: e.0,
        }
    })
}

/// Encodes an entry's body for the durable store.
pub(crate) fn encode_entry<T: serde::Serialize>(
    name: &str,
    entry: &crate::record::Entry<T>,
) -> Result<Vec<u8>, Error> {
    let meta = entry.meta.as_deref();
    let headers = meta.map_or(&crate::record::NO_HEADERS, |m| &m.headers);
    encode(
        name,
        &entry.payload,
        meta.and_then(|m| m.key.as_deref()),
        headers,
    )
}

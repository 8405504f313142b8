//! The requests the writer takes from its line ([`line`](super::line)), in order: records to store,
//! consumer progress, declarations, deletes, loans and their returns.

use std::sync::Arc;

use crossbeam_channel::Sender;
use redb::WriteTransaction;

use crate::record::{Headers, Nanos};
use crate::store::{IdRow, Sink};

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
    pub(super) fn positions<'r>(&'r self, moved: &mut Vec<(&'r str, Option<u32>)>) {
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

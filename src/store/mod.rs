//! The persistence seam: what the engine asks of storage, and when a message counts as stored.
//!
//! The topic and queue engines (`topic/`, `queue/`) are the one delivery path for every mode.
//! They call the store at two points and nowhere else:
//!
//! 1. [`Store::append`] before a message becomes visible: the store makes the records durable
//!    (write-ahead) and then runs `publish`, which appends them to the in-memory logs. A durable
//!    store runs `publish` for concurrent callers in commit order, so in-memory offsets match the
//!    stored ones. `publish` may decline when a `Block` topic has no room (the engine then waits
//!    and calls `append` again); in memory mode that costs nothing, and a durable store must
//!    reserve room before it commits instead.
//! 2. [`Store::progress`] after acks, nacks, delivery counts and group positions change.
//!
//! [`MemoryStore`] keeps nothing: the in-memory logs are the truth, `append` just publishes, and
//! payloads are never encoded. The redb store (its own issue) implements the same trait, adding
//! what it needs to see of the batch (the target log and the encoded records, produced through
//! the codec only when the store asks for bytes); no `if durable` lives outside this folder.

mod memory;

pub(crate) use memory::MemoryStore;

use std::fmt;

/// What changed in consumer progress, for the store to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress<'a> {
    /// A queue message was acked (deleted).
    QueueAck { queue: &'a str, id: u64 },
    /// A queue message was handed out again (delivery count now `count`).
    QueueDelivery { queue: &'a str, id: u64, count: u32 },
    /// A group's first unacked offset in a partition moved.
    GroupPosition {
        topic: &'a str,
        group: &'a str,
        partition: u32,
        offset: u64,
    },
}

/// Persistence behind the in-memory logs. Object-safe. `append` is never called while an
/// engine lock is held; `progress` may be (it must only queue the change for the next commit,
/// never wait for I/O: an ack does not wait for its own fsync).
pub(crate) trait Store: fmt::Debug + Send + Sync + 'static {
    /// Stores the records about to be published (durably, for a durable store), then runs
    /// `publish`. Memory mode: runs `publish` at once.
    fn append(&self, publish: &mut dyn FnMut()) -> Result<(), crate::Error>;

    /// Records consumer progress. Memory mode: nothing to do.
    fn progress(&self, change: Progress<'_>);
}

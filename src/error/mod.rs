//! Every public error type: the broker-level [`Error`] and the per-operation send and receive errors.

mod recv;

pub use self::recv::{Deleted, RecvError, RecvTimeoutError, TryRecvError};

use std::fmt;
use std::time::Duration;

/// A broker-level failure: declaring topics and queues, acking, closing, waiting for idle.
///
/// Messages name the topic, queue or group concerned. Send and receive operations have their own
/// error types ([`SendError`], [`RecvError`], ...) so a failed send can hand its message back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The name is already declared with another payload type, kind or options.
    #[error("`{name}` is already declared as {existing}, not as {requested}")]
    Mismatch {
        /// The topic or queue name.
        name: String,
        /// What the existing declaration is (kind, payload type, options).
        existing: String,
        /// What this declaration asked for.
        requested: String,
    },
    /// The topic, queue or group name is not acceptable.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An option value is out of range or contradicts another option.
    #[error("invalid option `{option}` for `{name}`: {reason}")]
    InvalidOption {
        /// The topic or queue being declared; for a [`BrokerBuilder`](crate::BrokerBuilder)
        /// option, the store (`<application database>` for
        /// [`database`](crate::BrokerBuilder::database)).
        name: String,
        /// The option at fault, named as its setter.
        option: &'static str,
        /// Why the value was rejected.
        reason: &'static str,
    },
    /// The broker was closed (by [`Broker::close`](crate::Broker::close) or by dropping its last
    /// handle).
    #[error("broker is closed")]
    Closed,
    /// The store's file could not be opened, read or written (I/O, the file is open
    /// elsewhere, ...).
    #[error("storage error on {path:?}: {message}")]
    Storage {
        /// The store's file.
        path: std::path::PathBuf,
        /// What failed.
        message: String,
    },
    /// The file is not a readable embus store: garbage, a damaged page, or a record whose
    /// checksum does not match.
    #[error("{path:?} is corrupt: {detail}")]
    Corrupt {
        /// The store's file.
        path: std::path::PathBuf,
        /// What is wrong, and where.
        detail: String,
    },
    /// The file is an embus store of another format version.
    #[error("{path:?} has embus format version {found}; this build reads version {expected}")]
    Incompatible {
        /// The store's file.
        path: std::path::PathBuf,
        /// The version in the file.
        found: u64,
        /// The version this build reads and writes.
        expected: u64,
    },
    /// A commit failed, so the store refuses writes until the broker is reopened (a failed
    /// fsync is never retried: the pages it covered may be lost). A send that returned this
    /// handed its message back and it was not delivered; but if the failure struck the very
    /// commit it was in, after its bytes reached the disk (a failed final fsync), a reopen may
    /// find it stored: like a timed-out send to Kafka, treat it as "maybe sent".
    #[error("store {path:?} refuses writes after a failed commit: {cause}")]
    Poisoned {
        /// The store's file.
        path: std::path::PathBuf,
        /// The failure that poisoned it.
        cause: String,
    },
    /// A payload could not be encoded for the durable store (nothing was written).
    #[error("cannot encode a payload for `{name}`: {message}")]
    Encode {
        /// The topic or queue.
        name: String,
        /// The codec's message.
        message: String,
    },
    /// The store's payloads are in another codec than the one this broker was built with
    /// ([`BrokerBuilder::codec`](crate::BrokerBuilder::codec)).
    #[error(
        "{path:?} stores payloads with the {stored} codec; open it with \
         BrokerBuilder::codec(CodecKind::{}), not {requested}",
        codec_variant(stored)
    )]
    CodecMismatch {
        /// The store's file.
        path: std::path::PathBuf,
        /// The codec the file was created with.
        stored: String,
        /// The codec this broker was built with.
        requested: String,
    },
    /// A payload type that the broker's codec cannot read back: its encoding does not decode
    /// (or decodes to something else). Refused at `send`, so it is never found out after a
    /// restart. The binary codec cannot carry `#[serde(tag = "..")]`, `#[serde(untagged)]`,
    /// `#[serde(flatten)]`, `skip_serializing_if` or other self-describing shapes: use
    /// [`CodecKind::Json`](crate::codec::CodecKind::Json).
    #[error("`{name}`: payloads of type `{type_name}` cannot be stored: {message}")]
    Unsupported {
        /// The topic or queue.
        name: String,
        /// The payload type.
        type_name: String,
        /// What went wrong when the payload was read back, and what to do about it.
        message: String,
    },
    /// A stored payload could not be decoded as the declared type (or failed its checksum);
    /// the raw bytes are in [`Undecodable::bytes`].
    #[error("{0}")]
    Decode(Box<Undecodable>),
    /// An ack, nack or [`in_progress`](crate::Message::in_progress) of a queue message whose
    /// delivery had already ended, so it did nothing: the message is being delivered again (or
    /// was dead-lettered), and whoever gets it next will settle it.
    #[error(
        "message {offset} of queue `{queue}` is no longer delivered to this consumer: {reason}"
    )]
    DeliveryEnded {
        /// The queue.
        queue: String,
        /// The message's sequence number ([`Message::offset`](crate::Message::offset)).
        offset: u64,
        /// What ended the delivery.
        reason: Ended,
    },
    /// [`Queue::dead_letter_undecodable`](crate::Queue::dead_letter_undecodable) on a queue
    /// declared without a dead-letter queue.
    #[error("queue `{queue}` has no dead-letter queue (QueueOptions::dead_letter)")]
    NoDeadLetterQueue {
        /// The queue.
        queue: String,
    },
    /// A record without a key sent to a compacted topic
    /// ([`TopicOptions::compaction`](crate::TopicOptions::compaction)): compaction keeps the last
    /// message per key, so every record needs one. The record is handed back in the send error.
    #[error("topic `{topic}` is compacted: every record needs a key (Record::key)")]
    KeyRequired {
        /// The topic.
        topic: String,
    },
    /// A record whose message id ([`Record::id`](crate::Record::id)) is empty, longer than
    /// [`MAX_MESSAGE_ID_LEN`](crate::MAX_MESSAGE_ID_LEN) bytes, or not UTF-8 (set as a raw
    /// header). The record is handed back in the send error.
    #[error("invalid message id for `{name}`: {reason}")]
    InvalidMessageId {
        /// The topic or queue.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No topic or queue of this name is declared in this run or stored in the file
    /// ([`Broker::delete_topic`](crate::Broker::delete_topic),
    /// [`Broker::delete_queue`](crate::Broker::delete_queue)).
    #[error("no topic or queue named `{name}`")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// The topic or queue was deleted ([`Broker::delete_topic`](crate::Broker::delete_topic),
    /// [`Broker::delete_queue`](crate::Broker::delete_queue)): a handle, producer or message
    /// of it can no longer be used. Declaring the name again creates a fresh one.
    #[error("`{name}` was deleted")]
    Deleted {
        /// The topic or queue.
        name: String,
    },
    /// [`Broker::delete_queue`](crate::Broker::delete_queue) of a queue that another queue, or
    /// a consumer group, still uses as its dead-letter queue: delete that one first.
    #[error("queue `{name}` is the dead-letter queue of `{user}`; delete that first")]
    InUse {
        /// The queue that was to be deleted.
        name: String,
        /// A queue, or a consumer group as `topic/group`, that dead-letters into it.
        user: String,
    },
    /// [`Topic::reset_group`](crate::Topic::reset_group) while a member of the group is
    /// connected: drop every member first (Kafka refuses to reset an active group too).
    #[error("group `{group}` of topic `{topic}` has live members; drop them before resetting it")]
    GroupBusy {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// An admin call named a consumer group the topic does not have.
    #[error("topic `{topic}` has no consumer group `{group}`")]
    NoSuchGroup {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// A partition number beyond the topic's partition count.
    #[error("topic `{topic}` has no partition {partition} (it has {partitions})")]
    NoSuchPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },
    /// A [`Transaction`](crate::Transaction) found a topic (under
    /// [`Overflow::Block`](crate::Overflow::Block)) or a queue without room for its records. A
    /// commit never waits for room: nothing was done, and the error hands the transaction
    /// back to retry or take the records out of.
    #[error("`{name}` has no room for the transaction's records now (a commit does not wait)")]
    Full {
        /// The topic or queue.
        name: String,
    },
    /// A [`Transaction`](crate::Transaction) acked a consumer group's message that its member
    /// no longer holds: the partition went to another member in a rebalance, or the delivery
    /// timed out and the message was delivered again. Nothing was committed: the message's
    /// current holder settles it, so the transaction's outputs are not sent twice.
    #[error(
        "message {offset} of partition {partition} of topic `{topic}` is no longer held by \
         this member of group `{group}`: the transaction was fenced"
    )]
    Fenced {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// The partition.
        partition: u32,
        /// The message's offset.
        offset: u64,
    },
    /// A [`Transaction`](crate::Transaction) was handed a producer or a message of another
    /// broker: a transaction commits in its own broker only.
    #[error("`{name}` belongs to another broker than the transaction's")]
    ForeignBroker {
        /// The topic or queue.
        name: String,
    },
    /// [`Transaction::redb`](crate::Transaction::redb) on a memory broker, which keeps no redb
    /// database.
    #[error("a memory broker has no redb database to write in (build a durable broker)")]
    NoDatabase,
    /// A send, flush or close waited for a durable commit on the thread that holds a
    /// transaction's redb write transaction ([`Transaction::redb`](crate::Transaction::redb)):
    /// that commit waits for the write transaction, so the wait would never end. Commit or
    /// drop the transaction first, or send in it. A send that failed so was not stored.
    #[error(
        "this thread holds a transaction's redb write transaction, which the store's commits \
         wait for: commit or drop the transaction first"
    )]
    TransactionOpen,
    /// [`Broker::wait_idle`](crate::Broker::wait_idle) ran out of time.
    #[error("broker still busy after {waited:?}: {busy}")]
    NotIdle {
        /// How long the call waited.
        waited: Duration,
        /// The first topic or queue found busy, and why (e.g. "queue `jobs`: 2 ready, 1 in flight").
        busy: String,
    },
}

/// What ended a queue delivery before its ack ([`Error::DeliveryEnded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ended {
    /// Its ack timeout passed first (see
    /// [`QueueOptions::ack_timeout`](crate::QueueOptions::ack_timeout); long work can call
    /// [`Message::in_progress`](crate::Message::in_progress)).
    AckTimeout,
    /// The consumer that received it was dropped, which released everything it held. Keep the
    /// [`Consumer`](crate::Consumer) alive until its messages are settled. (A delivery that
    /// timed out and whose consumer was dropped since may report either reason.)
    ConsumerDropped,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AckTimeout => "its ack timeout passed, so it was released for redelivery",
            Self::ConsumerDropped => {
                "the consumer that received it was dropped, which released it for redelivery"
            }
        })
    }
}

/// The `CodecKind` variant named `name`, for messages.
fn codec_variant(name: &str) -> &'static str {
    match name {
        "json" => "Json",
        "bincode" => "Bincode",
        _ => "..",
    }
}

/// A stored record that could not be read back as its declared payload type (or failed its
/// checksum, or could not be read at all from a damaged page).
///
/// From a durable topic it comes as [`RecvError::Undecodable`] and is not the end of the
/// stream. A group member holds it like a delivery: the group's position does not move past
/// it until [`ack`](Self::ack) skips it; dropped unsettled (or its member gone), it comes
/// again. From a plain subscriber `ack` is a no-op, and the subscriber has moved past it
/// already. A clone carries the data, not the right to settle.
#[derive(thiserror::Error)]
#[error("cannot decode the stored payload at {partition}/{offset} of `{name}`: {message}")]
#[non_exhaustive]
pub struct Undecodable {
    /// The topic or queue.
    pub name: String,
    /// The partition (0 for a queue).
    pub partition: u32,
    /// The offset (for a queue, the message id).
    pub offset: u64,
    /// What the codec (or the checksum) said.
    pub message: String,
    /// The payload as stored (the whole record if its checksum failed; empty if the store
    /// could not read the record at all).
    pub bytes: Vec<u8>,
    /// How a group settles it; `None` for a subscriber, a queue's list, or a clone.
    settle: Settlement,
}

impl Undecodable {
    pub(crate) fn new(
        name: &str,
        partition: u32,
        offset: u64,
        message: String,
        bytes: Vec<u8>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            partition,
            offset,
            message,
            bytes,
            settle: Settlement(None),
        }
    }

    /// Attaches how a group settles this record.
    pub(crate) fn settled_by(mut self, settle: Box<dyn Settle>) -> Self {
        self.settle = Settlement(Some(settle));
        self
    }

    /// Skips the record: a group's position moves past it (it is not delivered again). A no-op
    /// for a plain subscriber, for a clone, and for a queue's
    /// [`undecodable`](crate::Queue::undecodable) list.
    ///
    /// Dead-lettering an undecodable group record needs group dead-letter queues, which do not
    /// exist yet; keep [`bytes`](Self::bytes) before acking if you need them.
    ///
    /// # Errors
    /// As [`Message::ack`](crate::Message::ack) for a group: [`Error::Closed`] or
    /// [`Error::Poisoned`] when a durable store can no longer record the skip (a reopened
    /// broker delivers the record again).
    pub fn ack(mut self) -> Result<(), Error> {
        match self.settle.0.take() {
            Some(settle) => settle.ack(),
            None => Ok(()),
        }
    }
}

/// How the engine settles an [`Undecodable`] group record (type-erased: this leaf names no
/// engine type).
pub(crate) trait Settle: Send + Sync {
    /// Skips the record: the group's position moves past it.
    fn ack(self: Box<Self>) -> Result<(), Error>;
    /// Makes the record deliverable again (dropped unsettled).
    fn release(self: Box<Self>);
}

/// The right to settle; dropping it unsettled releases the record.
struct Settlement(Option<Box<dyn Settle>>);

impl Drop for Settlement {
    fn drop(&mut self) {
        if let Some(settle) = self.0.take() {
            settle.release();
        }
    }
}

impl Clone for Undecodable {
    /// Clones the data; the clone cannot settle the record.
    fn clone(&self) -> Self {
        Self::new(
            &self.name,
            self.partition,
            self.offset,
            self.message.clone(),
            self.bytes.clone(),
        )
    }
}

impl PartialEq for Undecodable {
    /// Compares the data, not whether it can be settled.
    fn eq(&self, other: &Self) -> bool {
        (
            &self.name,
            self.partition,
            self.offset,
            &self.message,
            &self.bytes,
        ) == (
            &other.name,
            other.partition,
            other.offset,
            &other.message,
            &other.bytes,
        )
    }
}

impl Eq for Undecodable {}

impl fmt::Debug for Undecodable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Undecodable")
            .field("name", &self.name)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("message", &self.message)
            .field("bytes", &format_args!("[{} bytes]", self.bytes.len()))
            .field("settles", &self.settle.0.is_some())
            .finish()
    }
}

/// A retained message that the store could not read back (I/O, or a store that refuses reads
/// after a failed commit), after retrying with backoff. Nothing was skipped: the next receive
/// tries again from the same message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot read {partition}/{offset} of `{name}` back from the store: {error}")]
#[non_exhaustive]
pub struct ReadFailure {
    /// The topic.
    pub name: String,
    /// The partition.
    pub partition: u32,
    /// The offset the reader is at.
    pub offset: u64,
    /// What the store said.
    pub error: std::sync::Arc<Error>,
}

impl ReadFailure {
    pub(crate) fn new(name: &str, partition: u32, offset: u64, error: Error) -> Self {
        Self {
            name: name.to_owned(),
            partition,
            offset,
            error: std::sync::Arc::new(error),
        }
    }
}

impl PartialEq for ReadFailure {
    /// Compares where, and the store's error by its message.
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.partition, self.offset) == (&other.name, other.partition, other.offset)
            && self.error.to_string() == other.error.to_string()
    }
}

impl Eq for ReadFailure {}

/// A convenience alias with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Debug` without `T: Debug` (crossbeam, tokio): the message shows as `..`, an error in full.
macro_rules! opaque_debug {
    ($ty:ident { $($variant:ident($($field:tt),*)),* }) => {
        impl<T> fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Self::$variant($($field),*) => {
                        let mut t = f.debug_tuple(stringify!($variant));
                        $(opaque_debug!(@field t, $field);)*
                        t.finish()
                    })*
                }
            }
        }
    };
    (@field $t:ident, _) => { $t.field(&format_args!("..")); };
    (@field $t:ident, $e:ident) => { $t.field($e); };
}

/// Returned by [`Producer::send`](crate::Producer::send): the message was not sent and is handed
/// back.
pub enum SendError<T> {
    /// The broker is closed; the message was not stored.
    Disconnected(T),
    /// The store could not take the message (the durable store's I/O or encoding); nothing was
    /// written. A memory broker never returns this.
    Failed(T, Error),
}

/// Returned by [`Producer::try_send`](crate::Producer::try_send): the message was not sent and is
/// handed back.
pub enum TrySendError<T> {
    /// The topic (under [`Overflow::Block`](crate::Overflow::Block)) or the queue is at capacity.
    Full(T),
    /// The broker is closed; the message was not stored.
    Disconnected(T),
    /// See [`SendError::Failed`].
    Failed(T, Error),
}

/// Returned by [`Producer::send_timeout`](crate::Producer::send_timeout) and
/// [`send_deadline`](crate::Producer::send_deadline): the message was not sent and is handed back.
pub enum SendTimeoutError<T> {
    /// There was no room before the deadline.
    Timeout(T),
    /// The broker is closed; the message was not stored.
    Disconnected(T),
    /// See [`SendError::Failed`].
    Failed(T, Error),
}

opaque_debug!(SendError { Disconnected(_), Failed(_, e) });
opaque_debug!(TrySendError { Full(_), Disconnected(_), Failed(_, e) });
opaque_debug!(SendTimeoutError { Timeout(_), Disconnected(_), Failed(_, e) });

impl<T> SendError<T> {
    /// Returns the message that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            Self::Disconnected(msg) | Self::Failed(msg, _) => msg,
        }
    }

    /// Whether the send failed because the broker is closed.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected(_))
    }

    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> SendError<U> {
        match self {
            Self::Disconnected(msg) => SendError::Disconnected(f(msg)),
            Self::Failed(msg, e) => SendError::Failed(f(msg), e),
        }
    }
}

impl<T> TrySendError<T> {
    /// Returns the message that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(msg) | Self::Disconnected(msg) | Self::Failed(msg, _) => msg,
        }
    }

    /// Whether the send failed because there was no room.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_))
    }

    /// Whether the send failed because the broker is closed.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected(_))
    }

    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> TrySendError<U> {
        match self {
            Self::Full(msg) => TrySendError::Full(f(msg)),
            Self::Disconnected(msg) => TrySendError::Disconnected(f(msg)),
            Self::Failed(msg, e) => TrySendError::Failed(f(msg), e),
        }
    }
}

impl<T> SendTimeoutError<T> {
    /// Returns the message that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            Self::Timeout(msg) | Self::Disconnected(msg) | Self::Failed(msg, _) => msg,
        }
    }

    /// Whether the deadline passed before there was room.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    /// Whether the send failed because the broker is closed.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected(_))
    }

    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> SendTimeoutError<U> {
        match self {
            Self::Timeout(msg) => SendTimeoutError::Timeout(f(msg)),
            Self::Disconnected(msg) => SendTimeoutError::Disconnected(f(msg)),
            Self::Failed(msg, e) => SendTimeoutError::Failed(f(msg), e),
        }
    }
}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(err: SendError<T>) -> Self {
        match err {
            SendError::Disconnected(msg) => Self::Disconnected(msg),
            SendError::Failed(msg, e) => Self::Failed(msg, e),
        }
    }
}

impl<T> From<SendError<T>> for SendTimeoutError<T> {
    fn from(err: SendError<T>) -> Self {
        match err {
            SendError::Disconnected(msg) => Self::Disconnected(msg),
            SendError::Failed(msg, e) => Self::Failed(msg, e),
        }
    }
}

const CLOSED: &str = "sending on a closed broker";
const FAILED: &str = "message could not be stored";

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Disconnected(_) => CLOSED,
            Self::Failed(..) => FAILED,
        })
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "sending on a full topic or queue",
            Self::Disconnected(_) => CLOSED,
            Self::Failed(..) => FAILED,
        })
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Timeout(_) => "timed out waiting for room to send",
            Self::Disconnected(_) => CLOSED,
            Self::Failed(..) => FAILED,
        })
    }
}

macro_rules! failed_source {
    ($($ty:ident),*) => {$(
        impl<T> std::error::Error for $ty<T> {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    Self::Failed(_, e) => Some(e),
                    _ => None,
                }
            }
        }
    )*};
}
failed_source!(SendError, TrySendError, SendTimeoutError);

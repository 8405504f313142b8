//! The receive errors: [`RecvError`], [`TryRecvError`], [`RecvTimeoutError`], and what a
//! deleted topic, queue or group reports ([`Deleted`]).

use std::fmt;

use super::{ReadFailure, Undecodable};

/// Returned by [`Consumer::recv`](crate::Consumer::recv) and yielded by
/// [`Consumer::iter`](crate::Consumer::iter).
///
/// Only `Disconnected` and `Deleted` end a stream: after the others the consumer keeps going.
#[derive(Debug, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum RecvError {
    /// The broker is closed and nothing more will arrive.
    Disconnected,
    /// This consumer fell behind the topic's retention ([`Overflow::Lag`](crate::Overflow::Lag)):
    /// `skipped` messages of one partition were trimmed before it read them. It stays subscribed
    /// and continues from that partition's oldest retained message. Reported once per partition
    /// that fell behind.
    Lagged {
        /// How many messages this consumer will never see.
        skipped: u64,
    },
    /// A stored record of a durable topic is damaged or does not decode as the payload type:
    /// its raw bytes and where it is. A subscriber continues past it; a group member holds it
    /// until it [`ack`](Undecodable::ack)s it (dropped, it comes again).
    Undecodable(Box<Undecodable>),
    /// The durable store could not read a retained message back, even after retrying (I/O, or
    /// a store poisoned by a failed commit). Nothing was skipped: the next receive tries again.
    Failed(Box<ReadFailure>),
    /// The topic or queue was deleted ([`Broker::delete_topic`](crate::Broker::delete_topic),
    /// [`Broker::delete_queue`](crate::Broker::delete_queue)), or this member's consumer group
    /// ([`Topic::delete_group`](crate::Topic::delete_group); [`Deleted::group_name`] says
    /// which): like `Disconnected`, the end of this consumer's stream (a blocked receive wakes
    /// with it; iterators end). A deleted group's unacked messages settle as no-ops.
    Deleted(Box<Deleted>),
}

/// Returned by [`Consumer::try_recv`](crate::Consumer::try_recv).
#[derive(Debug, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing is ready now.
    Empty,
    /// The broker is closed and nothing more will arrive.
    Disconnected,
    /// See [`RecvError::Lagged`].
    Lagged {
        /// How many messages this consumer will never see.
        skipped: u64,
    },
    /// See [`RecvError::Undecodable`].
    Undecodable(Box<Undecodable>),
    /// See [`RecvError::Failed`]. While a read is retried, `try_recv` returns `Empty`.
    Failed(Box<ReadFailure>),
    /// See [`RecvError::Deleted`].
    Deleted(Box<Deleted>),
}

/// Returned by [`Consumer::recv_timeout`](crate::Consumer::recv_timeout) and
/// [`recv_deadline`](crate::Consumer::recv_deadline).
#[derive(Debug, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// Nothing arrived before the deadline.
    Timeout,
    /// The broker is closed and nothing more will arrive.
    Disconnected,
    /// See [`RecvError::Lagged`].
    Lagged {
        /// How many messages this consumer will never see.
        skipped: u64,
    },
    /// See [`RecvError::Undecodable`].
    Undecodable(Box<Undecodable>),
    /// See [`RecvError::Failed`].
    Failed(Box<ReadFailure>),
    /// See [`RecvError::Deleted`].
    Deleted(Box<Deleted>),
}

impl TryRecvError {
    /// Whether nothing was ready.
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }

    /// Whether the broker is closed.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected)
    }
}

impl RecvTimeoutError {
    /// Whether the deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// Whether the broker is closed.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected)
    }
}

impl RecvError {
    /// Whether the broker is closed (the end of the stream).
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected)
    }
}

impl From<RecvError> for TryRecvError {
    fn from(err: RecvError) -> Self {
        match err {
            RecvError::Disconnected => Self::Disconnected,
            RecvError::Lagged { skipped } => Self::Lagged { skipped },
            RecvError::Undecodable(u) => Self::Undecodable(u),
            RecvError::Failed(f) => Self::Failed(f),
            RecvError::Deleted(d) => Self::Deleted(d),
        }
    }
}

impl From<RecvError> for RecvTimeoutError {
    fn from(err: RecvError) -> Self {
        match err {
            RecvError::Disconnected => Self::Disconnected,
            RecvError::Lagged { skipped } => Self::Lagged { skipped },
            RecvError::Undecodable(u) => Self::Undecodable(u),
            RecvError::Failed(f) => Self::Failed(f),
            RecvError::Deleted(d) => Self::Deleted(d),
        }
    }
}

const RECV_CLOSED: &str = "receiving on a closed broker";

/// What [`RecvError::Deleted`] (and its `try` and `timeout` kin) carries: the topic, queue or
/// consumer group that was deleted. Boxed, so that receive errors stay as small as they were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    name: String,
    group: Option<String>,
}

impl Deleted {
    /// The topic or queue `name`.
    pub(crate) fn new(name: String) -> Box<Self> {
        Box::new(Self { name, group: None })
    }

    /// The consumer group `group` of topic `topic`.
    pub(crate) fn group(topic: String, group: String) -> Box<Self> {
        Box::new(Self {
            name: topic,
            group: Some(group),
        })
    }

    /// The topic or queue (for a deleted group, its topic).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The consumer group, if it was a group (and not its topic) that was deleted.
    pub fn group_name(&self) -> Option<&str> {
        self.group.as_deref()
    }
}

impl fmt::Display for Deleted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            Some(group) => write!(
                f,
                "receiving from group `{group}` of topic `{}`, which was deleted",
                self.name
            ),
            None => write!(f, "receiving from `{}`, which was deleted", self.name),
        }
    }
}

fn lagged(f: &mut fmt::Formatter<'_>, skipped: u64) -> fmt::Result {
    write!(f, "consumer lagged: {skipped} messages skipped")
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disconnected => f.write_str(RECV_CLOSED),
            Self::Lagged { skipped } => lagged(f, *skipped),
            Self::Undecodable(u) => u.fmt(f),
            Self::Failed(e) => e.fmt(f),
            Self::Deleted(d) => d.fmt(f),
        }
    }
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("receiving on an empty topic or queue"),
            Self::Disconnected => f.write_str(RECV_CLOSED),
            Self::Lagged { skipped } => lagged(f, *skipped),
            Self::Undecodable(u) => u.fmt(f),
            Self::Failed(e) => e.fmt(f),
            Self::Deleted(d) => d.fmt(f),
        }
    }
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out waiting to receive"),
            Self::Disconnected => f.write_str(RECV_CLOSED),
            Self::Lagged { skipped } => lagged(f, *skipped),
            Self::Undecodable(u) => u.fmt(f),
            Self::Failed(e) => e.fmt(f),
            Self::Deleted(d) => d.fmt(f),
        }
    }
}

impl std::error::Error for RecvError {}
impl std::error::Error for TryRecvError {}
impl std::error::Error for RecvTimeoutError {}

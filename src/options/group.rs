//! [`GroupOptions`]: how a consumer group starts, redelivers and dead-letters.

use std::time::Duration;

use super::{Backoff, Overflow, Start, validate_redelivery};
use crate::error::Error;

/// Options of a consumer group, given to
/// [`Topic::join_group_with`](crate::Topic::join_group_with) by the first member to join. A
/// later join with other options is [`Error::Mismatch`], as for
/// [`Broker::queue_with`](crate::Broker::queue_with).
///
/// A group's delivery control matches a queue's: an ack timeout redelivers a message held too
/// long, every redelivery waits out the [`Backoff`], and past `max_deliveries` the message
/// moves to the dead-letter queue and the group moves past it.
///
/// The options are declared by the first join ([`Topic::join_group`](crate::Topic::join_group)
/// declares the defaults) and, in a durable broker, stored with the group: after a reopen the
/// group has them again, whoever joins first. [`Topic::delete_group`](crate::Topic::delete_group)
/// forgets them.
///
/// # Retention: groups are not skipped by default
///
/// A group is at-least-once: by default ([`overflow`](Self::overflow) is
/// [`Overflow::Block`]) retention never trims a message the group has not acked, whatever
/// the topic's own [`Overflow`] says (that one is for plain subscribers). A producer that
/// would push a message the group still needs out of retention waits instead, so memory stays
/// bounded by the topic's retention and nothing is skipped silently. The price: a group that
/// nobody consumes holds producers once it is a whole retention behind. Delete it
/// ([`Topic::delete_group`](crate::Topic::delete_group)) to release them, or opt out with
/// `.overflow(Overflow::Lag)` (the group's members then get
/// [`RecvError::Lagged`](crate::RecvError::Lagged), as Kafka consumers lose what retention
/// deleted).
///
/// ```
/// use std::time::Duration;
/// use embus::{GroupOptions, Start};
///
/// let opts = GroupOptions::default()
///     .start(Start::Latest)
///     .ack_timeout(Duration::from_secs(30))
///     .max_deliveries(5)
///     .dead_letter("billing.dead");
/// assert_eq!(opts.max_delivery_count(), Some(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GroupOptions {
    start: Start,
    ack_timeout: Option<Duration>,
    max_deliveries: Option<u32>,
    dead_letter: Option<String>,
    backoff: Backoff,
    overflow: Overflow,
}

impl GroupOptions {
    /// The default ack timeout: 30 seconds, as for queues (NATS JetStream's `AckWait`).
    pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

    /// Where a new group starts in every partition. Default [`Start::Earliest`]. Only the
    /// first join uses it: an existing group keeps its position.
    #[must_use]
    pub fn start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// How long a member may hold a delivery before it is redelivered (to the partition's
    /// owner, after the backoff). Default 30 s, on the broker's clock (so
    /// [`ManualClock`](crate::ManualClock) drives it).
    ///
    /// A late ack, of a delivery that timed out, is still taken: the message is done,
    /// whoever holds it now (Kafka commits work the same way), and its redelivery's ack is then
    /// a no-op. If the message was dead-lettered meanwhile, the late ack does nothing. (A queue
    /// answers a late ack with [`Error::DeliveryEnded`](crate::Error::DeliveryEnded) instead:
    /// a queue message, once redelivered, belongs to its new consumer.)
    #[must_use]
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = Some(timeout);
        self
    }

    /// Never redeliver because of time: a delivery stays in flight until acked, nacked,
    /// dropped, or its partition moves to another member.
    #[must_use]
    pub fn no_ack_timeout(mut self) -> Self {
        self.ack_timeout = None;
        self
    }

    /// After `n` deliveries that end without an ack (nacked, dropped, or past the ack
    /// timeout), the message moves to the dead-letter queue and the group moves past it.
    /// Requires [`dead_letter`](Self::dead_letter), so nothing is ever dropped. Default: no
    /// limit. A partition that moves to another member (a rebalance) redelivers its unacked
    /// messages after their backoff but never dead-letters them: that was not their fault.
    ///
    /// The dead letter is a copy of the topic's message (the topic keeps its own; the copy
    /// is made through the broker's codec, so `T` need not be `Clone`), with the key, the
    /// headers, and the headers queue dead letters carry:
    /// [`DEAD_LETTER_QUEUE`](crate::DEAD_LETTER_QUEUE) is `<topic>/<group>`,
    /// [`DEAD_LETTER_REASON`](crate::DEAD_LETTER_REASON) is `nack`, `dropped` or
    /// `ack-timeout`, [`DEAD_LETTER_DELIVERIES`](crate::DEAD_LETTER_DELIVERIES) the count. In
    /// a durable broker the dead letter and the group's new position are stored in one
    /// commit. A record that cannot be read back as `T` (an
    /// [`Undecodable`](crate::Undecodable)) is not dead-lettered: it comes again after the
    /// backoff until a member acks it.
    #[must_use]
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = Some(n);
        self
    }

    /// The name of the dead-letter queue: an ordinary `Queue<T>` of the topic's payload type,
    /// created (with default options) when the group is declared unless it exists already.
    #[must_use]
    pub fn dead_letter(mut self, queue: impl Into<String>) -> Self {
        self.dead_letter = Some(queue.into());
        self
    }

    /// How long a released message waits before it is delivered again (after a nack, a drop,
    /// an ack timeout or a rebalance); [`Message::nack_after`](crate::Message::nack_after)
    /// chooses its own wait. While one message waits, the partition's other messages keep
    /// being delivered (so a partition's order holds only for first deliveries, as with
    /// queues). Default [`Backoff::default`].
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// What happens when the group falls a whole retention behind. Default
    /// [`Overflow::Block`]: producers wait, nothing is skipped (see the type's docs).
    /// [`Overflow::Lag`]: retention trims anyway and members get
    /// [`RecvError::Lagged`](crate::RecvError::Lagged).
    #[must_use]
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// The overflow policy.
    pub fn overflow_policy(&self) -> Overflow {
        self.overflow
    }

    /// Where a new group starts.
    pub fn start_position(&self) -> Start {
        self.start
    }

    /// The ack timeout, if any.
    pub fn ack_timeout_duration(&self) -> Option<Duration> {
        self.ack_timeout
    }

    /// The delivery limit, if any.
    pub fn max_delivery_count(&self) -> Option<u32> {
        self.max_deliveries
    }

    /// The dead-letter queue's name, if any.
    pub fn dead_letter_queue(&self) -> Option<&str> {
        self.dead_letter.as_deref()
    }

    /// The redelivery backoff.
    pub fn redelivery_backoff(&self) -> &Backoff {
        &self.backoff
    }

    pub(crate) fn validate(&self, name: &str) -> Result<(), Error> {
        validate_redelivery(
            name,
            self.ack_timeout,
            self.max_deliveries,
            self.dead_letter.as_deref(),
            &self.backoff,
        )
    }
}

impl Default for GroupOptions {
    fn default() -> Self {
        Self {
            start: Start::Earliest,
            ack_timeout: Some(Self::DEFAULT_ACK_TIMEOUT),
            max_deliveries: None,
            dead_letter: None,
            backoff: Backoff::default(),
            overflow: Overflow::Block,
        }
    }
}

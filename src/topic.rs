//! Publish/subscribe: [`Topic`], a partitioned, retained log.
//!
//! # Partitions and offsets
//!
//! A topic has a fixed number of partitions. A record with a key goes to the partition its key
//! hashes to (Kafka's murmur2, so the mapping is stable); a record without a key goes round-robin.
//! Each partition numbers its messages 0, 1, 2, ... with no gaps, and stamps them with the
//! broker's clock, never going backwards. (A compacted topic,
//! [`TopicOptions::compaction`](crate::TopicOptions::compaction), removes superseded messages
//! and so leaves gaps; offsets still rise.)
//!
//! # Retention and overflow
//!
//! Messages stay until [`Retention`](crate::Retention) trims them (per partition: count, bytes,
//! age); reading does not remove them. When a slow reader would need a trimmed message, the
//! [`Overflow`](crate::Overflow) policy decides: `Lag` trims anyway and the reader gets
//! [`RecvError::Lagged`](crate::RecvError::Lagged) once, then continues from the oldest retained
//! message; `Block` makes producers wait until every subscriber and group has moved on, so memory
//! stays bounded and nothing is skipped. Under `Block`, concurrent producers that found room at
//! the same moment may each add one message beyond the limit.
//!
//! # Subscribers
//!
//! [`Topic::subscribe`] gives an independent reader that sees every retained message from its
//! [`Start`](crate::Start), in offset order per partition.
//!
//! # Consumer groups
//!
//! [`Topic::join_group`] makes the consumer a member of a named group: the group's members share
//! the partitions (each partition has one owner; members beyond the partition count stay idle),
//! and rebalance when one joins or is dropped. Delivery is at-least-once: the group's position in
//! each partition is its first unacked offset; a nacked or dropped message is redelivered, and a
//! partition's unacked messages go to its next owner.

use std::fmt;
use std::sync::Arc;

use crate::consumer::Consumer;
use crate::engine::Life;
use crate::engine::topic::{Member, Subscriber, TopicCore};
use crate::error::Error;
use crate::options::{Start, TopicOptions, validate_name};
use crate::producer::Producer;
use crate::record::Payload;

/// A handle to a topic. Cheap to clone; keeps the broker open.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use embus::{Broker, Start, TopicOptions};
///
/// let bus = Broker::memory();
/// let orders = bus.topic_with::<u32>("orders", TopicOptions::default().partitions(2))?;
/// let mut audit = orders.subscribe(Start::Earliest)?;
/// let mut billing = orders.join_group("billing")?;
/// orders.producer().send(7)?;
/// assert_eq!(audit.recv()?.payload(), &7);
/// let m = billing.recv()?;
/// assert_eq!(m.payload(), &7);
/// m.ack()?;
/// # Ok(()) }
/// ```
pub struct Topic<T> {
    core: Arc<TopicCore<T>>,
    life: Arc<Life>,
}

impl<T> Clone for Topic<T> {
    fn clone(&self) -> Self {
        Self {
            core: Arc::clone(&self.core),
            life: Arc::clone(&self.life),
        }
    }
}

impl<T> fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.core.name)
            .field("options", &self.core.options)
            .finish()
    }
}

impl<T: Payload> Topic<T> {
    pub(crate) fn new(core: Arc<TopicCore<T>>, life: Arc<Life>) -> Self {
        Self { core, life }
    }

    /// A producer for this topic.
    pub fn producer(&self) -> Producer<T> {
        Producer::topic(Arc::clone(&self.core), Arc::clone(&self.life))
    }

    /// An independent subscriber that reads every partition from `start`.
    ///
    /// # Errors
    /// [`Error::Closed`].
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use embus::{Broker, Start};
    /// let bus = Broker::memory();
    /// let t = bus.topic::<u8>("t")?;
    /// let p = t.producer();
    /// p.send(1)?;
    /// let mut late = t.subscribe(Start::Latest)?;
    /// let mut replay = t.subscribe(Start::Offset(0))?;
    /// p.send(2)?;
    /// assert_eq!(late.recv()?.payload(), &2);
    /// assert_eq!(replay.recv()?.payload(), &1);
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, start: Start) -> Result<Consumer<T>, Error> {
        self.core.check_live()?;
        Ok(Consumer::subscriber(Subscriber::new(
            Arc::clone(&self.core),
            start,
        )))
    }

    /// Joins the consumer group `name`, creating it at [`Start::Earliest`] if new.
    ///
    /// # Errors
    /// [`Error::InvalidName`]; [`Error::Closed`].
    pub fn join_group(&self, name: &str) -> Result<Consumer<T>, Error> {
        self.join_group_with(name, Start::Earliest)
    }

    /// Joins the consumer group `name`; if the group is new it starts at `start` (an existing
    /// group keeps its position).
    ///
    /// # Errors
    /// [`Error::InvalidName`]; [`Error::Closed`].
    pub fn join_group_with(&self, name: &str, start: Start) -> Result<Consumer<T>, Error> {
        validate_name(name)?;
        self.core.check_live()?;
        let group = self.core.group(name, start);
        Ok(Consumer::member(Member::join(
            Arc::clone(&self.core),
            group,
        )))
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// The partition count.
    pub fn partitions(&self) -> u32 {
        self.core.options.partition_count()
    }

    /// The options the topic was created with.
    pub fn options(&self) -> TopicOptions {
        self.core.options
    }

    /// The retained offsets of `partition`: `earliest..next`, or `None` if there is no such
    /// partition.
    pub fn offsets(&self, partition: u32) -> Option<std::ops::Range<u64>> {
        self.core.offsets(partition)
    }

    /// How many messages are retained, over all partitions.
    pub fn retained(&self) -> u64 {
        self.core.retained()
    }

    /// A group's position per partition (its first unacked offset), or `None` if no consumer
    /// has joined a group of that name.
    pub fn group_position(&self, name: &str) -> Option<Vec<u64>> {
        self.core.group_positions(name)
    }
}

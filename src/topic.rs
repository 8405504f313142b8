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
//! each partition is its first unacked offset; a nacked, dropped or timed-out message is
//! redelivered after the group's [`Backoff`](crate::Backoff) (the partition's other messages
//! keep coming meanwhile), a partition's unacked messages go to its next owner, and past
//! `max_deliveries` a message moves to the group's dead-letter queue
//! ([`GroupOptions`](crate::GroupOptions)). A group is never skipped by retention unless its
//! options say so ([`GroupOptions::overflow`](crate::GroupOptions::overflow)).
//!
//! # Delayed records
//!
//! A record sent with [`Record::delay`](crate::Record::delay) or
//! [`deliver_at`](crate::Record::deliver_at) keeps its place in its partition: subscribers and
//! group members reach it in offset order and wait there until it is due, so the partition's
//! later messages wait too and per-partition order holds (like a Kafka consumer pausing a
//! partition, unlike JetStream's per-message delays). Other partitions are not held up. Use a
//! [`Queue`](crate::Queue) for independent delays. The wait ends with the broker's clock (a
//! [`ManualClock`](crate::ManualClock) advance, or the real time), without polling.

use std::fmt;
use std::sync::Arc;

use crate::consumer::Consumer;
use crate::engine::Delivery;
use crate::engine::Life;
use crate::engine::topic::{Member, Subscriber, TopicCore};
use crate::error::Error;
use crate::message::Peeked;
use crate::options::{GroupOptions, Start, SubscribeOptions, TopicOptions};
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
        self.subscribe_with(start, SubscribeOptions::default())
    }

    /// An independent subscriber that reads every partition from `start`, with its own
    /// options: [`SubscribeOptions::overflow`] overrides the topic's overflow policy for this
    /// subscriber alone.
    ///
    /// # Errors
    /// [`Error::Deleted`] if the topic was deleted; [`Error::Closed`].
    pub fn subscribe_with(
        &self,
        start: Start,
        options: SubscribeOptions,
    ) -> Result<Consumer<T>, Error> {
        self.core.check_live()?;
        Ok(Consumer::subscriber(Subscriber::new(
            Arc::clone(&self.core),
            start,
            options.overflow_policy(),
        )))
    }

    /// Joins the consumer group `name`: an existing group whatever its options (as
    /// [`Broker::queue`](crate::Broker::queue) does), or a new one with
    /// [`GroupOptions::default`] (from [`Start::Earliest`]).
    ///
    /// # Errors
    /// [`Error::InvalidName`]; [`Error::Closed`].
    pub fn join_group(&self, name: &str) -> Result<Consumer<T>, Error> {
        self.join(name, None)
    }

    /// Joins the consumer group `name`, declaring it with `options` if it is new (they are
    /// stored with it in a durable broker). Joining an existing group with other options is
    /// [`Error::Mismatch`], as for [`Broker::queue_with`](crate::Broker::queue_with); an
    /// existing group keeps its position. A dead-letter queue named in the options is declared
    /// with the group (a `Queue<T>` with default options unless it exists).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use embus::{Broker, GroupOptions, Start};
    /// let bus = Broker::memory();
    /// let t = bus.topic::<u32>("orders")?;
    /// let opts = GroupOptions::default()
    ///     .start(Start::Latest)
    ///     .ack_timeout(Duration::from_secs(60))
    ///     .max_deliveries(5)
    ///     .dead_letter("orders.billing.dead");
    /// let _billing = t.join_group_with("billing", opts.clone())?;
    /// let _again = t.join_group_with("billing", opts)?; // same options: fine
    /// assert!(t.join_group_with("billing", GroupOptions::default()).is_err()); // Mismatch
    /// let _any = t.join_group("billing")?; // whatever its options
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidName`]; [`Error::InvalidOption`] (e.g. `max_deliveries` without a
    /// `dead_letter`); [`Error::Mismatch`]; [`Error::Deleted`] if the topic was deleted;
    /// [`Error::Closed`].
    pub fn join_group_with(&self, name: &str, options: GroupOptions) -> Result<Consumer<T>, Error> {
        self.join(name, Some(options))
    }

    fn join(&self, name: &str, options: Option<GroupOptions>) -> Result<Consumer<T>, Error> {
        self.core.check_live()?;
        let group = self.core.declare_group(name, options)?;
        Ok(Consumer::member(Member::join(
            Arc::clone(&self.core),
            group,
        )))
    }

    /// The names of the topic's consumer groups, sorted: every group joined in this run or
    /// restored from a durable store, until deleted.
    pub fn groups(&self) -> Vec<String> {
        self.core.group_names()
    }

    /// Deletes the consumer group `name`: its positions and stored options are forgotten
    /// (durably), its live members get [`RecvError::Deleted`](crate::RecvError::Deleted)
    /// on their next receive (a blocked one wakes), their unacked messages settle as no-ops,
    /// and producers the group held under [`Overflow::Block`](crate::Overflow::Block) go on.
    /// Joining the name again creates a new group.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use embus::Broker;
    /// let bus = Broker::memory();
    /// let t = bus.topic::<u32>("t")?;
    /// drop(t.join_group("old")?);
    /// assert_eq!(t.groups(), ["old"]);
    /// t.delete_group("old")?;
    /// assert!(t.groups().is_empty());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NoSuchGroup`]; [`Error::Closed`].
    pub fn delete_group(&self, name: &str) -> Result<(), Error> {
        self.core.delete_group(name)
    }

    /// Moves the consumer group `name` to `start` in every partition (stored in a durable
    /// broker), forgetting its unacked deliveries: to replay from the start, or to skip a
    /// backlog. Works only while no member is connected (like Kafka's offset reset).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use embus::{Broker, Start};
    /// let bus = Broker::memory();
    /// let t = bus.topic::<u32>("t")?;
    /// t.producer().send_batch(vec![1, 2, 3])?;
    /// drop(t.join_group("g")?);
    /// t.reset_group("g", Start::Latest)?;
    /// assert_eq!(t.group_position("g"), Some(vec![3]));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::GroupBusy`] while a member is connected; [`Error::NoSuchGroup`];
    /// [`Error::Closed`].
    pub fn reset_group(&self, name: &str, start: Start) -> Result<(), Error> {
        self.core.reset_group(name, start)
    }

    /// A copy of the retained message at `offset` of `partition`, changing nothing (no
    /// delivery, no position moves). `Ok(None)` if that offset was trimmed by retention or
    /// is not written yet (see [`offsets`](Self::offsets) for what is retained). In a durable
    /// broker, offsets no longer held in memory are read back from the store.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use embus::Broker;
    /// let bus = Broker::memory();
    /// let t = bus.topic::<String>("t")?;
    /// t.producer().send("hello".to_owned())?;
    /// assert_eq!(t.get(0, 0)?.map(|m| m.payload().clone()), Some("hello".to_owned()));
    /// assert!(t.get(0, 1)?.is_none()); // not written yet
    /// assert!(t.get(9, 0).is_err()); // no such partition
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NoSuchPartition`]; [`Error::Decode`] if the stored record is damaged or is
    /// not a `T`; [`Error::Deleted`] if the topic was deleted; a storage error if it cannot be
    /// read back now.
    pub fn get(&self, partition: u32, offset: u64) -> Result<Option<Peeked<T>>, Error> {
        let stored = self.core.peek(partition, offset)?;
        Ok(stored.map(|stored| Peeked::new(Delivery::look(stored, partition))))
    }

    /// How many messages the consumer group `name` moved to its dead-letter queue since the
    /// broker opened, or `None` if there is no such group.
    pub fn group_dead_lettered(&self, name: &str) -> Option<u64> {
        self.core.group_dead_lettered(name)
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

//! Topic, queue and group options, and where a subscription starts: plain data, validated in
//! one place.

mod backoff;
mod dedupe;
mod group;
mod subscribe;

pub use self::backoff::Backoff;
pub use self::dedupe::Dedupe;
pub use self::group::GroupOptions;
pub use self::subscribe::SubscribeOptions;

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::error::Error;

/// How many messages a topic keeps per partition, by count, bytes and age.
///
/// Limits combine: a message is trimmed as soon as any limit is exceeded (and, under
/// [`Overflow::Block`], no consumer still needs it). Limits apply per partition, like Kafka's
/// `retention.bytes`.
///
/// Bytes are a message's encoded size (in the broker's codec) plus its key and headers. In
/// memory mode the size is counted without producing any bytes, and only when a byte limit is
/// set.
///
/// ```
/// use std::time::Duration;
/// use embus::Retention;
///
/// let r = Retention::messages(10_000).and_bytes(64 << 20).and_age(Duration::from_secs(3600));
/// assert_eq!(r.max_messages(), Some(10_000));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Retention {
    messages: Option<u64>,
    bytes: Option<u64>,
    age: Option<Duration>,
}

impl Retention {
    /// The default: 65,536 messages per partition, no byte or age limit.
    pub const DEFAULT_MESSAGES: u64 = 1 << 16;

    /// Keep at most `n` messages per partition.
    pub fn messages(n: u64) -> Self {
        Self::unlimited().and_messages(n)
    }

    /// Keep at most `n` bytes per partition.
    pub fn bytes(n: u64) -> Self {
        Self::unlimited().and_bytes(n)
    }

    /// Keep messages for at most `age`, measured on the broker's clock.
    pub fn age(age: Duration) -> Self {
        Self::unlimited().and_age(age)
    }

    /// Keep everything: memory grows without bound, and [`Overflow::Block`] never blocks.
    pub fn unlimited() -> Self {
        Self {
            messages: None,
            bytes: None,
            age: None,
        }
    }

    /// Adds (or replaces) the count limit.
    #[must_use]
    pub fn and_messages(mut self, n: u64) -> Self {
        self.messages = Some(n);
        self
    }

    /// Adds (or replaces) the byte limit.
    #[must_use]
    pub fn and_bytes(mut self, n: u64) -> Self {
        self.bytes = Some(n);
        self
    }

    /// Adds (or replaces) the age limit.
    #[must_use]
    pub fn and_age(mut self, age: Duration) -> Self {
        self.age = Some(age);
        self
    }

    /// The count limit, if any.
    pub fn max_messages(&self) -> Option<u64> {
        self.messages
    }

    /// The byte limit, if any.
    pub fn max_bytes(&self) -> Option<u64> {
        self.bytes
    }

    /// The age limit, if any.
    pub fn max_age(&self) -> Option<Duration> {
        self.age
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::messages(Self::DEFAULT_MESSAGES)
    }
}

impl fmt::Debug for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Retention");
        if let Some(n) = self.messages {
            s.field("messages", &n);
        }
        if let Some(n) = self.bytes {
            s.field("bytes", &n);
        }
        if let Some(d) = self.age {
            s.field("age", &d);
        }
        s.finish()
    }
}

/// What a topic does when a slow reader would need more than retention allows.
///
/// The topic's policy ([`TopicOptions::overflow`]) is the default for its plain subscribers;
/// one subscriber can choose its own ([`SubscribeOptions::overflow`]), so a slow audit reader
/// under `Lag` never stalls producers while others use `Block`. Consumer groups do not follow
/// the topic's policy: a group is at-least-once, so it defaults to `Block`
/// ([`GroupOptions::overflow`]); a group must opt in to being skipped.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Overflow {
    /// Trim anyway; the slow reader gets [`RecvError::Lagged`](crate::RecvError::Lagged) once and
    /// continues from the oldest retained message (tokio `broadcast`, Kafka). The default: a
    /// forgotten subscriber never stalls producers.
    #[default]
    Lag,
    /// Producers wait until every subscriber and consumer group under `Block` has read
    /// (groups: acked) the oldest message. Memory stays bounded and nothing is skipped.
    Block,
}

/// Options of a topic, given to [`Broker::topic_with`](crate::Broker::topic_with).
///
/// ```
/// use embus::{Overflow, Retention, TopicOptions};
///
/// let opts = TopicOptions::default()
///     .partitions(4)
///     .retention(Retention::messages(1_000))
///     .overflow(Overflow::Block);
/// assert_eq!(opts.partition_count(), 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TopicOptions {
    partitions: u32,
    retention: Retention,
    overflow: Overflow,
    /// Absent from declarations stored before compaction existed: off.
    compaction: bool,
    interest: bool,
    /// Absent from declarations stored before dedupe existed: none.
    dedupe: Option<Dedupe>,
}

impl TopicOptions {
    /// The most partitions a topic may have.
    pub const MAX_PARTITIONS: u32 = 4096;

    /// Number of partitions, the topic's parallelism for consumer groups. Default 1; must be in
    /// `1..=4096`.
    #[must_use]
    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = n;
        self
    }

    /// Retention limits per partition. Default [`Retention::default`] (65,536 messages).
    #[must_use]
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// What happens when a slow plain subscriber would exceed retention. Default
    /// [`Overflow::Lag`]: a forgotten subscriber never stalls producers. Consumer groups have
    /// their own policy ([`GroupOptions::overflow`], `Block` by default), and a subscriber may
    /// choose its own ([`SubscribeOptions::overflow`]).
    #[must_use]
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Keeps at least the last message of every key in each partition, like a Kafka compacted
    /// topic; older messages of a key are removed. Default off.
    ///
    /// - **What a reader sees.** A subscriber from [`Start::Earliest`](crate::Start::Earliest)
    ///   (and a new group) sees the latest value of every key, and may also see older values
    ///   not compacted yet. Order per partition is kept.
    /// - **Offsets stay as assigned.** Compaction leaves gaps: offsets still rise, and readers
    ///   skip removed ones. A group whose unacked message was compacted away moves past it
    ///   (it was superseded), as a Kafka consumer does.
    /// - **Every record needs a key.** A record without one is refused at send with
    ///   [`Error::KeyRequired`](crate::Error::KeyRequired), the record handed back (Kafka
    ///   refuses them too: there is nothing to compact it by).
    /// - **Retention.** `compaction(true)` sets [`Retention::unlimited`]: a compacted topic
    ///   holds one message per distinct key (plus what is not compacted yet), so its size is
    ///   bounded by its key set, not by count, byte or age limits. A later
    ///   [`retention`](Self::retention) with a limit is refused with
    ///   [`Error::InvalidOption`](crate::Error::InvalidOption).
    /// - **Counts.** [`Topic::offsets`](crate::Topic::offsets) still spans the gaps, and
    ///   [`Topic::retained`](crate::Topic::retained) and
    ///   [`Consumer::lag`](crate::Consumer::lag) count offsets, so they include removed ones.
    /// - **Where it runs.** In memory, superseded messages are dropped in amortized passes
    ///   over sealed segments (a segment a reader or a held message still uses is compacted in a
    ///   later pass). In a durable store, the writer thread deletes the superseded row in the
    ///   commit that stores its successor, through a small per-partition table of each key's
    ///   latest offset; the producer's thread does no compaction work, and a reopen reads
    ///   nothing more than before.
    ///
    /// ```
    /// use embus::{Broker, Record, Start, TopicOptions};
    ///
    /// let bus = Broker::memory();
    /// let prices = bus.topic_with::<u32>("prices", TopicOptions::default().compaction(true))?;
    /// let producer = prices.producer();
    /// for round in 0..3 {
    ///     producer.send_record(Record::new(round).key("apple"))?;
    /// }
    /// let mut reader = prices.subscribe(Start::Earliest)?;
    /// let mut last = None;
    /// while let Ok(message) = reader.try_recv() {
    ///     last = Some(*message.payload());
    /// }
    /// assert_eq!(last, Some(2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn compaction(mut self, on: bool) -> Self {
        self.compaction = on;
        if on {
            self.retention = Retention::unlimited();
        }
        self
    }

    /// Whether the topic is compacted ([`compaction`](Self::compaction)).
    pub fn is_compacted(&self) -> bool {
        self.compaction
    }

    /// Retention by interest (NATS JetStream's `Interest` retention, Redis 8.2's "delete once
    /// every group acked"): a message is trimmed as soon as every consumer group of the topic
    /// has acked it, on top of the [`Retention`] limits, which still apply (whichever trims
    /// first; a group under [`Overflow::Block`], the default, is never trimmed past). Plain
    /// subscribers express no interest: one that reads slower than the groups ack gets
    /// [`RecvError::Lagged`](crate::RecvError::Lagged) under `Lag`, and under `Block` holds
    /// the message as usual. A topic with no group keeps its messages under the retention
    /// limits (a group created later from [`Start::Earliest`] reads them): interest trims
    /// only what some group acked. Default `false`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use embus::{Broker, TopicOptions};
    /// let bus = Broker::memory();
    /// let t = bus.topic_with::<u32>("jobs", TopicOptions::default().retention_by_interest(true))?;
    /// let mut g = t.join_group("workers")?;
    /// t.producer().send(1)?;
    /// assert_eq!(t.retained(), 1);
    /// g.recv()?.ack()?;
    /// assert_eq!(t.retained(), 0); // every group acked it
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn retention_by_interest(mut self, on: bool) -> Self {
        self.interest = on;
        self
    }

    /// Whether messages are trimmed once every group acked them.
    pub fn is_retention_by_interest(&self) -> bool {
        self.interest
    }

    /// Deduplicates sends by message id ([`Record::id`](crate::Record::id)) within `window`:
    /// a send whose id was already sent to this topic (to any partition) within the window
    /// stores nothing and returns the original [`Receipt`](crate::Receipt). Default none.
    /// See [`Dedupe`] for the window, and [`Record::id`](crate::Record::id) for what is
    /// deduplicated and what it costs. A durable topic keeps its window across a reopen.
    ///
    /// ```
    /// use std::time::Duration;
    /// use embus::{Broker, Dedupe, Record, TopicOptions};
    ///
    /// let bus = Broker::memory();
    /// let options = TopicOptions::default().dedupe(Dedupe::within(Duration::from_secs(120)));
    /// let orders = bus.topic_with::<u32>("orders", options)?;
    /// let producer = orders.producer();
    /// let first = producer.send_record(Record::new(7).id("order-7"))?;
    /// let again = producer.send_record(Record::new(7).id("order-7"))?;
    /// assert_eq!(first, again);
    /// assert_eq!(orders.retained(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn dedupe(mut self, window: Dedupe) -> Self {
        self.dedupe = Some(window);
        self
    }

    /// The dedupe window, if any ([`dedupe`](Self::dedupe)).
    pub fn dedupe_window(&self) -> Option<Dedupe> {
        self.dedupe
    }

    /// The partition count.
    pub fn partition_count(&self) -> u32 {
        self.partitions
    }

    /// The retention limits.
    pub fn retention_limits(&self) -> Retention {
        self.retention
    }

    /// The overflow policy.
    pub fn overflow_policy(&self) -> Overflow {
        self.overflow
    }

    pub(crate) fn validate(&self, name: &str) -> Result<(), Error> {
        let bad = |option, reason| Err(invalid(name, option, reason));
        if self.partitions == 0 {
            return bad("partitions", "a topic needs at least one partition");
        }
        if self.partitions > Self::MAX_PARTITIONS {
            return bad("partitions", "at most 4096 partitions");
        }
        if self.retention.messages == Some(0) {
            return bad("retention", "Retention::messages must be at least 1");
        }
        if self.retention.bytes == Some(0) {
            return bad("retention", "Retention::bytes must be at least 1");
        }
        if self.retention.age == Some(Duration::ZERO) {
            return bad("retention", "Retention::age must be longer than zero");
        }
        if self.compaction && self.retention != Retention::unlimited() {
            return bad(
                "retention",
                "a compacted topic keeps the last value of every key: its retention must be \
                 Retention::unlimited()",
            );
        }
        if let Some(reason) = self.dedupe.and_then(|d| d.invalid()) {
            return bad("dedupe", reason);
        }
        if self.compaction && self.interest {
            return bad(
                "retention_by_interest",
                "a compacted topic keeps the last value of every key, acked or not",
            );
        }
        Ok(())
    }
}

impl Default for TopicOptions {
    fn default() -> Self {
        Self {
            partitions: 1,
            retention: Retention::default(),
            overflow: Overflow::default(),
            compaction: false,
            interest: false,
            dedupe: None,
        }
    }
}

/// Options of a queue, given to [`Broker::queue_with`](crate::Broker::queue_with).
///
/// ```
/// use std::time::Duration;
/// use embus::QueueOptions;
///
/// let opts = QueueOptions::default()
///     .capacity(10_000)
///     .ack_timeout(Duration::from_secs(30))
///     .max_deliveries(5)
///     .dead_letter("jobs.dead")
///     .prefetch(16);
/// assert_eq!(opts.max_delivery_count(), Some(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct QueueOptions {
    capacity: usize,
    ack_timeout: Option<Duration>,
    max_deliveries: Option<u32>,
    dead_letter: Option<String>,
    prefetch: Option<u32>,
    backoff: Backoff,
    message_ttl: Option<Duration>,
    priorities: Option<u8>,
    /// Absent from declarations stored before dedupe existed: none.
    dedupe: Option<Dedupe>,
}

impl QueueOptions {
    /// The most priority levels a queue may have (RabbitMQ recommends at most 10, too).
    pub const MAX_PRIORITIES: u8 = 10;

    /// The default capacity: 65,536 messages.
    pub const DEFAULT_CAPACITY: usize = 1 << 16;
    /// The default ack timeout: 30 seconds (NATS JetStream's `AckWait`).
    pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

    /// Most messages the queue holds, ready and in flight together; then `send` blocks and
    /// `try_send` returns [`TrySendError::Full`](crate::TrySendError::Full). Default 65,536; at
    /// least 1. Dead-lettered messages are accepted by their dead-letter queue even beyond its
    /// capacity, so that nothing is dropped.
    #[must_use]
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }

    /// How long a consumer may hold a delivery before it is redelivered. Default 30 s, on the
    /// broker's clock (so [`ManualClock`](crate::ManualClock) drives it), measured from just
    /// before the delivery. On the system clock, [`ack`](crate::Message::ack) and the looks
    /// that do not wait (`try_recv`) check it against the coarse monotonic clock, which may
    /// lag by a kernel tick or, under load, tens of milliseconds: they may see a timeout that
    /// late (an ack then still counts), never early. A receive that waits sees it on time.
    #[must_use]
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = Some(timeout);
        self
    }

    /// Never redeliver because of time: a delivery stays in flight until acked, nacked or
    /// dropped.
    #[must_use]
    pub fn no_ack_timeout(mut self) -> Self {
        self.ack_timeout = None;
        self
    }

    /// After `n` deliveries that end without an ack, the message moves to the dead-letter queue.
    /// Requires [`dead_letter`](Self::dead_letter), so nothing is ever dropped. Default: no limit.
    #[must_use]
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = Some(n);
        self
    }

    /// The name of the dead-letter queue, an ordinary `Queue<T>` of the same payload type, created
    /// (with default options) when this queue is declared unless it exists already.
    #[must_use]
    pub fn dead_letter(mut self, queue: impl Into<String>) -> Self {
        self.dead_letter = Some(queue.into());
        self
    }

    /// Most unacked deliveries one consumer may hold; its `recv` waits until it acks one.
    /// Default: no limit (RabbitMQ's `basic.qos` 0).
    #[must_use]
    pub fn prefetch(mut self, n: u32) -> Self {
        self.prefetch = Some(n);
        self
    }

    /// How long a released message waits before it is delivered again. Default
    /// [`Backoff::default`].
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long a message may wait in the queue: one not delivered by then is never
    /// delivered; it moves to the dead-letter queue with the reason `expired` if there is one,
    /// else it is dropped and counted. A record's own [`Record::ttl`](crate::Record::ttl), if
    /// shorter, wins. Default: no limit.
    #[must_use]
    pub fn message_ttl(mut self, ttl: Duration) -> Self {
        self.message_ttl = Some(ttl);
        self
    }

    /// Delivers by priority: `n` levels (`0..n`, at most [`MAX_PRIORITIES`](Self::MAX_PRIORITIES)),
    /// higher first, first-in first-out within a level. A record's
    /// [`Record::priority`](crate::Record::priority) above `n - 1` counts as `n - 1`. Default:
    /// one level.
    #[must_use]
    pub fn priorities(mut self, n: u8) -> Self {
        self.priorities = Some(n);
        self
    }

    /// Deduplicates sends by message id ([`Record::id`](crate::Record::id)) within `window`,
    /// as [`TopicOptions::dedupe`]: a send whose id was already sent to this queue within the
    /// window stores nothing and returns the original [`Receipt`](crate::Receipt), even if
    /// that message was consumed and acked since. Default none.
    ///
    /// ```
    /// use embus::{Broker, Dedupe, QueueOptions, Record};
    ///
    /// let bus = Broker::memory();
    /// let options = QueueOptions::default().dedupe(Dedupe::last(1_000));
    /// let jobs = bus.queue_with::<u32>("jobs", options)?;
    /// let producer = jobs.producer();
    /// let first = producer.send_record(Record::new(1).id("job-1"))?;
    /// assert_eq!(producer.send_record(Record::new(1).id("job-1"))?, first);
    /// assert_eq!(jobs.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn dedupe(mut self, window: Dedupe) -> Self {
        self.dedupe = Some(window);
        self
    }

    /// The dedupe window, if any ([`dedupe`](Self::dedupe)).
    pub fn dedupe_window(&self) -> Option<Dedupe> {
        self.dedupe
    }

    /// The capacity.
    pub fn capacity_limit(&self) -> usize {
        self.capacity
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

    /// The per-consumer prefetch limit, if any.
    pub fn prefetch_limit(&self) -> Option<u32> {
        self.prefetch
    }

    /// The redelivery backoff.
    pub fn redelivery_backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The message time-to-live, if any.
    pub fn message_ttl_duration(&self) -> Option<Duration> {
        self.message_ttl
    }

    /// The number of priority levels (1 unless set).
    pub fn priority_levels(&self) -> u8 {
        self.priorities.unwrap_or(1)
    }

    pub(crate) fn validate(&self, name: &str) -> Result<(), Error> {
        let bad = |option, reason| Err(invalid(name, option, reason));
        if self.capacity == 0 {
            return bad("capacity", "a queue needs room for at least one message");
        }
        if self.dead_letter.as_deref() == Some(name) {
            return bad("dead_letter", "a queue cannot be its own dead-letter queue");
        }
        validate_redelivery(
            name,
            self.ack_timeout,
            self.max_deliveries,
            self.dead_letter.as_deref(),
            &self.backoff,
        )?;
        if let Some(reason) = self.dedupe.and_then(|d| d.invalid()) {
            return bad("dedupe", reason);
        }
        if self.prefetch == Some(0) {
            return bad("prefetch", "must be at least 1");
        }
        if self.message_ttl == Some(Duration::ZERO) {
            return bad("message_ttl", "must be longer than zero");
        }
        if self
            .priorities
            .is_some_and(|n| n == 0 || n > Self::MAX_PRIORITIES)
        {
            return bad("priorities", "must be in 1..=10");
        }
        Ok(())
    }
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            capacity: Self::DEFAULT_CAPACITY,
            ack_timeout: Some(Self::DEFAULT_ACK_TIMEOUT),
            max_deliveries: None,
            dead_letter: None,
            prefetch: None,
            backoff: Backoff::default(),
            message_ttl: None,
            priorities: None,
            dedupe: None,
        }
    }
}

/// Where a subscriber starts reading, in every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Start {
    /// The oldest retained message.
    Earliest,
    /// Only messages sent after subscribing.
    Latest,
    /// This offset in every partition. Below the oldest retained message, the first receive
    /// reports [`RecvError::Lagged`](crate::RecvError::Lagged) with how many are gone; beyond the
    /// end of a partition, reading starts at its end.
    Offset(u64),
    /// The first message whose timestamp is at or after this time. With
    /// [`coarse_timestamps`](crate::BrokerBuilder::coarse_timestamps), whose stamps may lag,
    /// a second earlier: no message sent at or after this time is missed, and ones sent up to
    /// a second before it may come too.
    Time(#[serde(with = "signed_time")] SystemTime),
}

/// A `SystemTime` stored as `(before the epoch, distance from it)`: serde's own form refuses
/// times before the epoch, which a `Start` may hold.
mod signed_time {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub(super) fn serialize<S: serde::Serializer>(
        time: &SystemTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let signed = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => (false, after),
            Err(before) => (true, before.duration()),
        };
        serde::Serialize::serialize(&signed, serializer)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SystemTime, D::Error> {
        let (before, distance): (bool, Duration) = serde::Deserialize::deserialize(deserializer)?;
        let time = if before {
            UNIX_EPOCH.checked_sub(distance)
        } else {
            UNIX_EPOCH.checked_add(distance)
        };
        time.ok_or_else(|| serde::de::Error::custom("a time out of this platform's range"))
    }
}

/// Checks the redelivery settings queues and groups share (`name`: the queue or group).
pub(crate) fn validate_redelivery(
    name: &str,
    ack_timeout: Option<Duration>,
    max_deliveries: Option<u32>,
    dead_letter: Option<&str>,
    backoff: &Backoff,
) -> Result<(), Error> {
    let bad = |option, reason| Err(invalid(name, option, reason));
    if ack_timeout == Some(Duration::ZERO) {
        return bad(
            "ack_timeout",
            "must be longer than zero (or use no_ack_timeout)",
        );
    }
    if max_deliveries == Some(0) {
        return bad("max_deliveries", "must be at least 1");
    }
    if max_deliveries.is_some() && dead_letter.is_none() {
        return bad(
            "max_deliveries",
            "needs a dead_letter queue to move messages to",
        );
    }
    if let Err(reason) = backoff.validate() {
        return bad("backoff", reason);
    }
    dead_letter.map_or(Ok(()), validate_name)
}

/// Names are 1 to 249 characters of `[A-Za-z0-9._-]` (Kafka's rule), so they are safe as file
/// and table names.
pub(crate) fn validate_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        "names cannot be empty"
    } else if name.len() > 249 {
        "names are at most 249 characters"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "names use only ASCII letters, digits, '.', '_' and '-'"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

pub(crate) fn invalid(name: &str, option: &'static str, reason: &'static str) -> Error {
    Error::InvalidOption {
        name: name.to_owned(),
        option,
        reason,
    }
}

/// When a durable broker's `send` returns, and what a crash can take back.
///
/// Every commit embus makes is a durable (fsynced) redb commit; the modes differ in whether a
/// send waits for it.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use embus::{Broker, Durability};
/// let bus = Broker::builder()
///     .path("app.embus")
///     .durability(Durability::Interval(Duration::from_millis(10)))
///     .open()?;
/// # drop(bus); Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// `send` returns `Ok` only after the commit holding the message is fsynced: an acknowledged
    /// send survives a process crash and a power loss. Concurrent sends share one commit.
    #[default]
    Immediate,
    /// `send` returns `Ok` as soon as the writer thread has the message; the writer commits (and
    /// fsyncs) at most once per interval. A crash loses at most the acknowledged sends of the
    /// last interval and the commit in progress, and never corrupts the file. Consumers still
    /// see a message only after it is stored.
    Interval(Duration),
}

/// What [`Broker::wait_idle_with`](crate::Broker::wait_idle_with) waits for, beyond the
/// default: every queue empty with nothing in flight, every consumer group caught up.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use embus::{Broker, IdleOptions};
/// let bus = Broker::memory();
/// bus.wait_idle_with(Duration::from_secs(5), IdleOptions::default().dead_letters(true))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct IdleOptions {
    dead_letters: bool,
}

impl IdleOptions {
    /// Also waits until every dead-letter queue that has a consumer is empty (by default,
    /// dead letters parked in a dead-letter queue are not work: only their deliveries in
    /// flight are). For tests whose dead-letter handlers are part of the flow.
    pub fn dead_letters(mut self, wait: bool) -> Self {
        self.dead_letters = wait;
        self
    }

    /// Whether dead-letter queues with consumers must be empty.
    pub fn waits_for_dead_letters(&self) -> bool {
        self.dead_letters
    }
}

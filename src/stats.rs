//! What [`Broker::stats`](crate::Broker::stats) reports: plain, `Serialize` snapshots of every
//! topic (partitions, groups, subscribers), queue, the durable store and the bridges, and the
//! `Meter` that turns counters into rates.
//!
//! Every figure is read from the object it describes, under that object's own lock, briefly;
//! no lock is held across the whole walk, so a snapshot never stalls producers. Each object's
//! figures are consistent with each other; two objects are read one after the other, so a
//! message moving between them while the snapshot runs (a dead letter, a redrive) may show in
//! both or neither.
//!
//! Rates are messages per second of the broker's clock (a [`ManualClock`](crate::ManualClock)
//! moves them only when advanced), averaged over the last minute: each snapshot keeps a sample
//! at most once a second and reads the change since the oldest sample of the last minute (or
//! since the object was declared, for the first minute).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::record::Nanos;

/// A snapshot of a broker: [`Broker::stats`](crate::Broker::stats).
///
/// Topics and queues are sorted by name. Printed as JSON with `serde_json::to_string(&stats)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// When the snapshot was taken: nanoseconds since the Unix epoch, by the broker's clock.
    pub at: u64,
    /// Every topic declared in this run.
    pub topics: Vec<TopicStats>,
    /// Every queue declared in this run (dead-letter queues included).
    pub queues: Vec<QueueStats>,
    /// The durable store; `None` in memory mode.
    pub store: Option<StoreStats>,
    /// The running bridges that relay to or from this broker (features `nats`, `amqp`).
    pub bridges: Vec<BridgeStats>,
}

impl Stats {
    /// The topic `name`, if the snapshot has it.
    pub fn topic(&self, name: &str) -> Option<&TopicStats> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// The queue `name`, if the snapshot has it.
    pub fn queue(&self, name: &str) -> Option<&QueueStats> {
        self.queues.iter().find(|q| q.name == name)
    }
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TopicStats {
    /// Its name.
    pub name: String,
    /// One per partition, in partition order.
    pub partitions: Vec<PartitionStats>,
    /// Its consumer groups, sorted by name (a group everyone left is still here: it keeps
    /// its position).
    pub groups: Vec<GroupStats>,
    /// Its live plain subscribers, oldest first.
    pub subscribers: Vec<SubscriberStats>,
}

impl TopicStats {
    /// The group `name`, if the topic has it.
    pub fn group(&self, name: &str) -> Option<&GroupStats> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Retained messages over all partitions.
    pub fn messages(&self) -> u64 {
        self.partitions.iter().map(|p| p.messages).sum()
    }
}

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PartitionStats {
    /// Its number.
    pub partition: u32,
    /// The oldest retained offset.
    pub earliest: u64,
    /// The offset the next message will get (the end of the log).
    pub next: u64,
    /// Retained messages: `next - earliest` (on a compacted topic, the offsets compaction
    /// emptied count too, as they do in every lag here).
    pub messages: u64,
    /// Retained bytes as byte retention counts them (payload encoded, key and headers); only
    /// counted when the topic has a byte limit ([`Retention::bytes`](crate::Retention::bytes)),
    /// `None` otherwise (counting costs an encode per send).
    pub bytes: Option<u64>,
    /// Messages appended since the topic was declared in this run.
    pub appended: u64,
    /// Messages appended per second (see the [module](self) docs for the window).
    pub append_rate: f64,
}

/// One consumer group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct GroupStats {
    /// Its name.
    pub name: String,
    /// Live members, by member id in join order.
    pub members: Vec<u64>,
    /// Per partition: owner, position and lag, in partition order.
    pub partitions: Vec<GroupPartitionStats>,
    /// Messages retained at or after the group's position, over all partitions (in flight
    /// included), as Kafka counts consumer lag.
    pub lag: u64,
    /// Messages delivered to a member and not yet acked or released.
    pub in_flight: u64,
    /// Deliveries that were not a message's first (nack, timeout, a member leaving), in this
    /// run.
    pub redelivered: u64,
    /// Messages moved to its dead-letter queue in this run.
    pub dead_lettered: u64,
}

/// A consumer group in one partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct GroupPartitionStats {
    /// The partition.
    pub partition: u32,
    /// The member it is assigned to; `None` while no member owns it.
    pub owner: Option<u64>,
    /// The group's position: the first offset not yet acked.
    pub position: u64,
    /// Messages retained at or after the position.
    pub lag: u64,
    /// Messages of this partition delivered and not yet settled.
    pub in_flight: u64,
}

/// One plain subscriber ([`Topic::subscribe`](crate::Topic::subscribe)).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SubscriberStats {
    /// An id unique in this broker's run (subscribers have no name).
    pub id: u64,
    /// Messages retained and not yet received, over all partitions.
    pub lag: u64,
    /// Whether retention waits for it ([`Overflow::Block`](crate::Overflow::Block)).
    pub blocks: bool,
}

/// One queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// Its name.
    pub name: String,
    /// Messages ready for delivery.
    pub ready: u64,
    /// Messages delivered and not yet settled.
    pub in_flight: u64,
    /// Messages waiting out a delay or a redelivery backoff.
    pub delayed: u64,
    /// Messages moved to its dead-letter queue in this run.
    pub dead_lettered: u64,
    /// Messages dropped because they expired and the queue has no dead-letter queue.
    pub expired: u64,
    /// How long ago the message at the head of the ready list was sent (the oldest first
    /// delivery waiting, or a redelivery put in front); `None` when nothing is ready. In JSON:
    /// seconds.
    #[serde(serialize_with = "seconds")]
    pub oldest_ready_age: Option<Duration>,
    /// Acks in this run.
    pub acked: u64,
    /// Nacks in this run (explicit [`Message::nack`](crate::Message::nack) and
    /// `nack_after`; timeouts and dropped deliveries are not nacks).
    pub nacked: u64,
    /// Acks per second.
    pub ack_rate: f64,
    /// Nacks per second.
    pub nack_rate: f64,
    /// Live consumers.
    pub consumers: u64,
    /// Its capacity: ready, delayed and in flight together never exceed it.
    pub capacity: u64,
}

/// The durable store (a redb file).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StoreStats {
    /// The file.
    pub path: PathBuf,
    /// Its size on disk; `None` if it cannot be read (a custom storage backend).
    pub file_bytes: Option<u64>,
    /// Commits in this run.
    pub commits: u64,
    /// Records sent (plain sends, batches and transactions) stored by those commits; dead
    /// letters and redriven messages are not counted.
    pub records: u64,
    /// Records sent per commit over the recent commits (up to the last 1,024). Commits that
    /// carry only acks or delivery counts count too, so a consumer-heavy load can read below 1.
    pub records_per_commit: f64,
    /// Commit latency (writing and fsync) over the recent commits: the median. In JSON:
    /// seconds.
    #[serde(serialize_with = "seconds")]
    pub commit_p50: Option<Duration>,
    /// The 99th percentile of the same.
    #[serde(serialize_with = "seconds")]
    pub commit_p99: Option<Duration>,
    /// Why the store is poisoned (a commit failed: every later send fails), if it is.
    pub poisoned: Option<String>,
}

/// A running bridge's counters (`embus::bridge`, features `nats` and `amqp`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BridgeStats {
    /// What it relays, e.g. ``outbound `jobs` -> nats://127.0.0.1:4222 subject `jobs` ``.
    pub name: String,
    /// Messages relayed: confirmed by the server (outbound), or stored locally, in the target
    /// or its dead-letter queue (inbound).
    pub forwarded: u64,
    /// Messages taken from the source and not yet settled on it.
    pub in_flight: u64,
    /// Messages waiting at the source: the local consumer's [`lag`](crate::Consumer::lag)
    /// (outbound), or what the server reports as pending for the remote consumer (inbound).
    pub lag: u64,
    /// Messages sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// Errors met so far (connection losses, failed publishes and acks); the bridge kept going.
    pub errors: u64,
    /// Successful reconnections after a loss.
    pub reconnects: u64,
    /// Whether the bridge is connected now.
    pub connected: bool,
    /// The last error, as text (it names the server and the subject, exchange or queue).
    pub last_error: Option<String>,
}

/// Durations as seconds (JSON readers want numbers).
#[allow(clippy::ref_option)] // serde's `serialize_with` hands a reference
fn seconds<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    value.map(|d| d.as_secs_f64()).serialize(s)
}

/// How far back a rate looks.
const WINDOW: Nanos = 60_000_000_000;
/// Samples are kept at most this often.
const SPACING: Nanos = 1_000_000_000;

/// Turns a counter that only grows into a rate: samples taken by snapshots, at most one a
/// second, and the change since the oldest one of the last minute.
#[derive(Debug)]
pub(crate) struct Meter {
    /// The counter's value when the meter was made (`appended` counts from it).
    origin: u64,
    /// (clock ticks, value), oldest first.
    samples: VecDeque<(Nanos, u64)>,
}

impl Meter {
    /// A meter whose counter reads `value` at tick `now`.
    pub(crate) fn new(now: Nanos, value: u64) -> Self {
        Self {
            origin: value,
            samples: VecDeque::from([(now, value)]),
        }
    }

    /// How much the counter grew since the meter was made.
    pub(crate) fn since_origin(&self, value: u64) -> u64 {
        value.saturating_sub(self.origin)
    }

    /// The rate (per second) of a counter that reads `value` at tick `now`, keeping a sample.
    pub(crate) fn rate(&mut self, now: Nanos, value: u64) -> f64 {
        while self.samples.len() > 1
            && self
                .samples
                .get(1)
                .is_some_and(|&(t, _)| now.saturating_sub(t) >= WINDOW)
        {
            self.samples.pop_front();
        }
        let rate = match self.samples.front() {
            Some(&(t, v)) if now > t => value.saturating_sub(v) as f64 * 1e9 / (now - t) as f64,
            _ => 0.0,
        };
        if self
            .samples
            .back()
            .is_none_or(|&(t, _)| now.saturating_sub(t) >= SPACING)
        {
            self.samples.push_back((now, value));
        }
        rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    #[test]
    fn a_rate_is_the_change_over_the_last_minute() {
        let mut meter = Meter::new(0, 100);
        assert_eq!(meter.rate(0, 100), 0.0);
        assert_eq!(meter.rate(10 * SEC, 200), 10.0); // since declared
        assert_eq!(meter.since_origin(200), 100);
        // Two minutes later, only the last minute's samples count.
        for s in 11..=130 {
            meter.rate(s * SEC, 200 + (s - 10) * 5);
        }
        let rate = meter.rate(131 * SEC, 200 + 121 * 5);
        assert!((rate - 5.0).abs() < 1e-9, "{rate}");
        assert!(meter.samples.len() <= 62, "{}", meter.samples.len());
    }

    #[test]
    fn snapshots_faster_than_a_second_keep_one_sample() {
        let mut meter = Meter::new(0, 0);
        for ms in 1..1000 {
            meter.rate(ms * 1_000_000, ms);
        }
        assert_eq!(meter.samples.len(), 1);
        assert_eq!(meter.rate(2 * SEC, 2000), 1000.0);
    }

    #[test]
    fn durations_serialize_as_seconds() {
        let store = StoreStats {
            path: PathBuf::from("a.embus"),
            file_bytes: None,
            commits: 1,
            records: 2,
            records_per_commit: 2.0,
            commit_p50: Some(Duration::from_millis(1500)),
            commit_p99: None,
            poisoned: None,
        };
        let json = serde_json::to_value(&store).unwrap();
        assert_eq!(json["commit_p50"], 1.5);
        assert!(json["commit_p99"].is_null());
    }
}

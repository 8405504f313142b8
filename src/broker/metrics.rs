//! The broker's figures ([`Broker::stats`]) as gauges and counters of the
//! [`metrics`](https://docs.rs/metrics) facade (feature `metrics`): [`Broker::record_metrics`],
//! [`record`], the `embus-metrics` thread of
//! [`BrokerBuilder::metrics_every`](crate::BrokerBuilder::metrics_every), and the metric names.
//!
//! The metrics are exported from a snapshot, so they are exactly the figures of
//! [`Broker::stats`] and sending, receiving and acking pay nothing for them: each
//! [`record_metrics`](Broker::record_metrics) takes a snapshot and sets every gauge and counter
//! in the recorder the application installed (for example the Prometheus exporter,
//! `metrics-exporter-prometheus`). Call it before each scrape, or let
//! [`metrics_every`](crate::BrokerBuilder::metrics_every) call it on an interval. With no
//! recorder installed, recording does nothing.
//!
//! # Metrics
//!
//! Names follow Prometheus' conventions: counters end in `_total`, units are in the name. Each
//! name is a constant of this module.
//!
//! | Name | Kind | Labels | Value |
//! |---|---|---|---|
//! | `embus_partition_messages` | gauge | `topic`, `partition` | retained messages |
//! | `embus_partition_earliest_offset` | gauge | `topic`, `partition` | the oldest retained offset |
//! | `embus_partition_next_offset` | gauge | `topic`, `partition` | the offset the next message gets |
//! | `embus_partition_appended_total` | counter | `topic`, `partition` | messages appended |
//! | `embus_partition_bytes` | gauge (bytes) | `topic`, `partition` | retained bytes; only for topics with a byte limit |
//! | `embus_group_members` | gauge | `topic`, `group` | live members |
//! | `embus_group_position` | gauge | `topic`, `group`, `partition` | the first offset not yet acked |
//! | `embus_group_lag` | gauge | `topic`, `group`, `partition` | messages at or after the position |
//! | `embus_group_in_flight` | gauge | `topic`, `group`, `partition` | delivered, not yet settled |
//! | `embus_group_redelivered_total` | counter | `topic`, `group` | deliveries that were not a message's first |
//! | `embus_group_dead_lettered_total` | counter | `topic`, `group` | messages moved to its dead-letter queue |
//! | `embus_subscriber_lag` | gauge | `topic`, `subscriber` (its id) | messages not yet received |
//! | `embus_queue_ready` | gauge | `queue` | ready for delivery |
//! | `embus_queue_in_flight` | gauge | `queue` | delivered, not yet settled |
//! | `embus_queue_delayed` | gauge | `queue` | waiting out a delay or a backoff |
//! | `embus_queue_consumers` | gauge | `queue` | live consumers |
//! | `embus_queue_capacity` | gauge | `queue` | its capacity |
//! | `embus_queue_oldest_ready_age_seconds` | gauge (seconds) | `queue` | age of the head of the ready list; 0 when nothing is ready |
//! | `embus_queue_acked_total` | counter | `queue` | acks |
//! | `embus_queue_nacked_total` | counter | `queue` | nacks |
//! | `embus_queue_dead_lettered_total` | counter | `queue` | messages moved to its dead-letter queue |
//! | `embus_queue_expired_total` | counter | `queue` | expired messages dropped |
//! | `embus_store_commits_total` | counter | | commits (durable broker only, as every `embus_store_*`) |
//! | `embus_store_records_total` | counter | | records stored by those commits |
//! | `embus_store_records_per_commit` | gauge | | records per commit, recent commits |
//! | `embus_store_file_bytes` | gauge (bytes) | | the file's size, when it can be read |
//! | `embus_store_commit_p50_seconds` | gauge (seconds) | | median commit latency, recent commits (after the first) |
//! | `embus_store_commit_p99_seconds` | gauge (seconds) | | 99th percentile of the same |
//! | `embus_store_poisoned` | gauge | | 1 once a commit failed (every later send fails), else 0 |
//! | `embus_bridge_forwarded_total` | counter | `bridge` (its name) | messages relayed |
//! | `embus_bridge_in_flight` | gauge | `bridge` | taken from the source, not yet settled |
//! | `embus_bridge_lag` | gauge | `bridge` | waiting at the source |
//! | `embus_bridge_dead_lettered_total` | counter | `bridge` | messages dead-lettered |
//! | `embus_bridge_errors_total` | counter | `bridge` | errors met (the bridge kept going) |
//! | `embus_bridge_reconnects_total` | counter | `bridge` | reconnections after a loss |
//! | `embus_bridge_connected` | gauge | `bridge` | 1 while connected, else 0 |
//!
//! [`Stats`] documents each figure in full. Each metric is described once per recording
//! (`describe_counter!`/`describe_gauge!`, with its unit), so a recorder installed late still
//! gets the descriptions.
//!
//! # Rates and totals
//!
//! The rates of [`Stats`] (append, ack and nack rates) are not exported: a metrics backend
//! derives rates from the `_total` counters (`rate(embus_queue_acked_total[1m])`), over the
//! window it chooses. The totals count from when the topic or queue was declared in this run of
//! the broker (they start again from 0 after a restart, which backends read as a counter
//! reset); they are set with `Counter::absolute`, which recorders apply as "at least", so a
//! topic deleted and declared again shows its old total until the new one passes it.
//!
//! # Series that go away
//!
//! The facade has no way to remove a series: a dropped subscriber, a member-less group or a
//! deleted topic keeps its last values in the recorder (the Prometheus exporter drops series
//! not updated for its `idle_timeout`, if one is set). Subscribers are labelled by id, unique
//! per run, so an application that subscribes and drops subscribers all day makes new series
//! all day: set an idle timeout then.
//!
//! # Several brokers
//!
//! Labels name topics and queues, not brokers: two brokers in one process that record into the
//! same recorder write to the same series when they share a topic or queue name (and always for
//! the store's). Record one broker per recorder, or give each broker distinct names.
//!
//! [`Stats`]: crate::Stats

use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use ::metrics::Unit;
use parking_lot::{Condvar, Mutex};

use super::Broker;
use crate::engine::Context;
use crate::error::Error;
use crate::stats::Stats;

/// Retained messages of a partition (gauge; labels `topic`, `partition`).
pub const PARTITION_MESSAGES: &str = "embus_partition_messages";
/// The oldest retained offset of a partition (gauge; labels `topic`, `partition`).
pub const PARTITION_EARLIEST_OFFSET: &str = "embus_partition_earliest_offset";
/// The offset the next message of a partition gets (gauge; labels `topic`, `partition`).
pub const PARTITION_NEXT_OFFSET: &str = "embus_partition_next_offset";
/// Messages appended to a partition in this run (counter; labels `topic`, `partition`).
pub const PARTITION_APPENDED_TOTAL: &str = "embus_partition_appended_total";
/// Retained bytes of a partition, for topics with a byte limit (gauge; labels `topic`,
/// `partition`).
pub const PARTITION_BYTES: &str = "embus_partition_bytes";
/// Live members of a consumer group (gauge; labels `topic`, `group`).
pub const GROUP_MEMBERS: &str = "embus_group_members";
/// A group's position in a partition (gauge; labels `topic`, `group`, `partition`).
pub const GROUP_POSITION: &str = "embus_group_position";
/// A group's lag in a partition (gauge; labels `topic`, `group`, `partition`).
pub const GROUP_LAG: &str = "embus_group_lag";
/// A group's messages in flight in a partition (gauge; labels `topic`, `group`, `partition`).
pub const GROUP_IN_FLIGHT: &str = "embus_group_in_flight";
/// A group's redeliveries in this run (counter; labels `topic`, `group`).
pub const GROUP_REDELIVERED_TOTAL: &str = "embus_group_redelivered_total";
/// A group's dead letters in this run (counter; labels `topic`, `group`).
pub const GROUP_DEAD_LETTERED_TOTAL: &str = "embus_group_dead_lettered_total";
/// A plain subscriber's lag (gauge; labels `topic`, `subscriber`).
pub const SUBSCRIBER_LAG: &str = "embus_subscriber_lag";
/// A queue's ready messages (gauge; label `queue`).
pub const QUEUE_READY: &str = "embus_queue_ready";
/// A queue's messages in flight (gauge; label `queue`).
pub const QUEUE_IN_FLIGHT: &str = "embus_queue_in_flight";
/// A queue's delayed messages (gauge; label `queue`).
pub const QUEUE_DELAYED: &str = "embus_queue_delayed";
/// A queue's live consumers (gauge; label `queue`).
pub const QUEUE_CONSUMERS: &str = "embus_queue_consumers";
/// A queue's capacity (gauge; label `queue`).
pub const QUEUE_CAPACITY: &str = "embus_queue_capacity";
/// Age in seconds of the head of a queue's ready list, 0 when nothing is ready (gauge; label
/// `queue`).
pub const QUEUE_OLDEST_READY_AGE_SECONDS: &str = "embus_queue_oldest_ready_age_seconds";
/// A queue's acks in this run (counter; label `queue`).
pub const QUEUE_ACKED_TOTAL: &str = "embus_queue_acked_total";
/// A queue's nacks in this run (counter; label `queue`).
pub const QUEUE_NACKED_TOTAL: &str = "embus_queue_nacked_total";
/// A queue's dead letters in this run (counter; label `queue`).
pub const QUEUE_DEAD_LETTERED_TOTAL: &str = "embus_queue_dead_lettered_total";
/// A queue's expired messages dropped in this run (counter; label `queue`).
pub const QUEUE_EXPIRED_TOTAL: &str = "embus_queue_expired_total";
/// The durable store's commits in this run (counter).
pub const STORE_COMMITS_TOTAL: &str = "embus_store_commits_total";
/// Records stored by those commits (counter).
pub const STORE_RECORDS_TOTAL: &str = "embus_store_records_total";
/// Records per commit over the recent commits (gauge).
pub const STORE_RECORDS_PER_COMMIT: &str = "embus_store_records_per_commit";
/// The store file's size (gauge, bytes).
pub const STORE_FILE_BYTES: &str = "embus_store_file_bytes";
/// Median commit latency over the recent commits (gauge, seconds).
pub const STORE_COMMIT_P50_SECONDS: &str = "embus_store_commit_p50_seconds";
/// 99th percentile commit latency over the recent commits (gauge, seconds).
pub const STORE_COMMIT_P99_SECONDS: &str = "embus_store_commit_p99_seconds";
/// 1 once the store is poisoned (a commit failed), else 0 (gauge).
pub const STORE_POISONED: &str = "embus_store_poisoned";
/// Messages a bridge relayed (counter; label `bridge`).
pub const BRIDGE_FORWARDED_TOTAL: &str = "embus_bridge_forwarded_total";
/// A bridge's messages in flight (gauge; label `bridge`).
pub const BRIDGE_IN_FLIGHT: &str = "embus_bridge_in_flight";
/// Messages waiting at a bridge's source (gauge; label `bridge`).
pub const BRIDGE_LAG: &str = "embus_bridge_lag";
/// A bridge's dead letters (counter; label `bridge`).
pub const BRIDGE_DEAD_LETTERED_TOTAL: &str = "embus_bridge_dead_lettered_total";
/// Errors a bridge met (counter; label `bridge`).
pub const BRIDGE_ERRORS_TOTAL: &str = "embus_bridge_errors_total";
/// A bridge's reconnections (counter; label `bridge`).
pub const BRIDGE_RECONNECTS_TOTAL: &str = "embus_bridge_reconnects_total";
/// 1 while a bridge is connected, else 0 (gauge; label `bridge`).
pub const BRIDGE_CONNECTED: &str = "embus_bridge_connected";

/// Whether a metric is a counter or a gauge.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Every metric: name, kind, unit and description, for `describe_*`.
const DESCRIPTIONS: &[(&str, Kind, Unit, &str)] = &[
    (
        PARTITION_MESSAGES,
        Kind::Gauge,
        Unit::Count,
        "Retained messages of a topic partition.",
    ),
    (
        PARTITION_EARLIEST_OFFSET,
        Kind::Gauge,
        Unit::Count,
        "The oldest retained offset of a topic partition.",
    ),
    (
        PARTITION_NEXT_OFFSET,
        Kind::Gauge,
        Unit::Count,
        "The offset the next message of a topic partition gets.",
    ),
    (
        PARTITION_APPENDED_TOTAL,
        Kind::Counter,
        Unit::Count,
        "Messages appended to a topic partition since it was declared.",
    ),
    (
        PARTITION_BYTES,
        Kind::Gauge,
        Unit::Bytes,
        "Retained bytes of a topic partition (topics with a byte limit).",
    ),
    (
        GROUP_MEMBERS,
        Kind::Gauge,
        Unit::Count,
        "Live members of a consumer group.",
    ),
    (
        GROUP_POSITION,
        Kind::Gauge,
        Unit::Count,
        "A consumer group's position in a partition: the first offset not yet acked.",
    ),
    (
        GROUP_LAG,
        Kind::Gauge,
        Unit::Count,
        "Messages of a partition at or after a consumer group's position.",
    ),
    (
        GROUP_IN_FLIGHT,
        Kind::Gauge,
        Unit::Count,
        "Messages of a partition delivered to a consumer group and not yet settled.",
    ),
    (
        GROUP_REDELIVERED_TOTAL,
        Kind::Counter,
        Unit::Count,
        "Deliveries to a consumer group that were not a message's first.",
    ),
    (
        GROUP_DEAD_LETTERED_TOTAL,
        Kind::Counter,
        Unit::Count,
        "Messages a consumer group moved to its dead-letter queue.",
    ),
    (
        SUBSCRIBER_LAG,
        Kind::Gauge,
        Unit::Count,
        "Messages retained and not yet received by a subscriber.",
    ),
    (
        QUEUE_READY,
        Kind::Gauge,
        Unit::Count,
        "Messages of a queue ready for delivery.",
    ),
    (
        QUEUE_IN_FLIGHT,
        Kind::Gauge,
        Unit::Count,
        "Messages of a queue delivered and not yet settled.",
    ),
    (
        QUEUE_DELAYED,
        Kind::Gauge,
        Unit::Count,
        "Messages of a queue waiting out a delay or a redelivery backoff.",
    ),
    (
        QUEUE_CONSUMERS,
        Kind::Gauge,
        Unit::Count,
        "Live consumers of a queue.",
    ),
    (
        QUEUE_CAPACITY,
        Kind::Gauge,
        Unit::Count,
        "A queue's capacity: ready, delayed and in flight together.",
    ),
    (
        QUEUE_OLDEST_READY_AGE_SECONDS,
        Kind::Gauge,
        Unit::Seconds,
        "Age of the message at the head of a queue's ready list; 0 when none is ready.",
    ),
    (
        QUEUE_ACKED_TOTAL,
        Kind::Counter,
        Unit::Count,
        "Acks of a queue's messages.",
    ),
    (
        QUEUE_NACKED_TOTAL,
        Kind::Counter,
        Unit::Count,
        "Nacks of a queue's messages.",
    ),
    (
        QUEUE_DEAD_LETTERED_TOTAL,
        Kind::Counter,
        Unit::Count,
        "Messages a queue moved to its dead-letter queue.",
    ),
    (
        QUEUE_EXPIRED_TOTAL,
        Kind::Counter,
        Unit::Count,
        "Messages of a queue that expired and were dropped.",
    ),
    (
        STORE_COMMITS_TOTAL,
        Kind::Counter,
        Unit::Count,
        "Commits of the durable store.",
    ),
    (
        STORE_RECORDS_TOTAL,
        Kind::Counter,
        Unit::Count,
        "Records stored by the durable store's commits.",
    ),
    (
        STORE_RECORDS_PER_COMMIT,
        Kind::Gauge,
        Unit::Count,
        "Records per commit over the recent commits.",
    ),
    (
        STORE_FILE_BYTES,
        Kind::Gauge,
        Unit::Bytes,
        "Size of the durable store's file.",
    ),
    (
        STORE_COMMIT_P50_SECONDS,
        Kind::Gauge,
        Unit::Seconds,
        "Median commit latency (write and fsync) over the recent commits.",
    ),
    (
        STORE_COMMIT_P99_SECONDS,
        Kind::Gauge,
        Unit::Seconds,
        "99th percentile commit latency over the recent commits.",
    ),
    (
        STORE_POISONED,
        Kind::Gauge,
        Unit::Count,
        "1 once a commit failed and the store refuses writes, else 0.",
    ),
    (
        BRIDGE_FORWARDED_TOTAL,
        Kind::Counter,
        Unit::Count,
        "Messages a bridge relayed.",
    ),
    (
        BRIDGE_IN_FLIGHT,
        Kind::Gauge,
        Unit::Count,
        "Messages a bridge took from its source and has not yet settled.",
    ),
    (
        BRIDGE_LAG,
        Kind::Gauge,
        Unit::Count,
        "Messages waiting at a bridge's source.",
    ),
    (
        BRIDGE_DEAD_LETTERED_TOTAL,
        Kind::Counter,
        Unit::Count,
        "Messages a bridge sent to its dead-letter queue.",
    ),
    (
        BRIDGE_ERRORS_TOTAL,
        Kind::Counter,
        Unit::Count,
        "Errors a bridge met and recovered from.",
    ),
    (
        BRIDGE_RECONNECTS_TOTAL,
        Kind::Counter,
        Unit::Count,
        "Reconnections of a bridge after a loss.",
    ),
    (
        BRIDGE_CONNECTED,
        Kind::Gauge,
        Unit::Count,
        "1 while a bridge is connected, else 0.",
    ),
];

impl Broker {
    /// Records the broker's figures into the installed `metrics` recorder: takes a
    /// [`stats`](Self::stats) snapshot and sets every gauge and counter of the
    /// [`metrics`](crate::metrics) table from it ([`record`]). Call it before each scrape, or
    /// start [`BrokerBuilder::metrics_every`](crate::BrokerBuilder::metrics_every) once.
    ///
    /// It costs a snapshot (no message is read) and one recorder call per figure; the
    /// recorder in use is the calling thread's (`metrics::with_local_recorder`) or the
    /// global one. A closed broker records only its store's figures.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = embus::Broker::memory();
    /// bus.queue::<u32>("jobs")?.producer().send(7)?;
    /// // With a recorder installed (e.g. metrics-exporter-prometheus), this sets
    /// // embus_queue_ready{queue="jobs"} to 1; without one it does nothing.
    /// bus.record_metrics();
    /// # Ok(()) }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn record_metrics(&self) {
        record(&self.stats());
    }

    /// Starts the `embus-metrics` thread: [`record_metrics`](Self::record_metrics) every
    /// `every`, until the broker closes. It holds no handle that keeps the broker open, and
    /// close wakes it (without waiting for it).
    pub(super) fn start_metrics(&self, every: Duration, store: &str) -> Result<(), Error> {
        let stop = Arc::new(Stop::default());
        let context = Arc::downgrade(&self.context);
        let signal = Arc::clone(&stop);
        thread::Builder::new()
            .name("embus-metrics".into())
            .spawn(move || run(&context, &signal, every))
            .map_err(|e| Error::Storage {
                path: store.into(),
                message: format!("cannot start the metrics thread: {e}"),
            })?;
        self.context.on_close(Box::new(move || {
            *stop.stopped.lock() = true;
            stop.changed.notify_all();
        }));
        Ok(())
    }
}

/// Set by close; the metrics thread waits on it between recordings.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    changed: Condvar,
}

/// The `embus-metrics` thread: records, then waits `every` or until close.
fn run(context: &Weak<Context>, stop: &Stop, every: Duration) {
    loop {
        match context.upgrade() {
            Some(context) if !context.is_closed() => record(&context.stats()),
            _ => return,
        }
        // An interval too long to add to `now` waits for close alone.
        let deadline = Instant::now().checked_add(every);
        let mut stopped = stop.stopped.lock();
        while !*stopped {
            let timed_out = match deadline {
                Some(deadline) => stop.changed.wait_until(&mut stopped, deadline).timed_out(),
                None => {
                    stop.changed.wait(&mut stopped);
                    false
                }
            };
            if timed_out {
                break;
            }
        }
        if *stopped {
            return;
        }
    }
}

/// Records `stats` into the installed `metrics` recorder, as
/// [`Broker::record_metrics`] does with a fresh snapshot: for when the application takes the
/// snapshot itself (to print it too, say).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = embus::Broker::memory();
/// let stats = bus.stats();
/// embus::metrics::record(&stats);
/// println!("{}", serde_json::to_string(&stats)?);
/// # Ok(()) }
/// ```
pub fn record(stats: &Stats) {
    describe();
    for topic in &stats.topics {
        for p in &topic.partitions {
            let labels = [
                ("topic", topic.name.clone()),
                ("partition", p.partition.to_string()),
            ];
            gauge(PARTITION_MESSAGES, &labels, p.messages);
            gauge(PARTITION_EARLIEST_OFFSET, &labels, p.earliest);
            gauge(PARTITION_NEXT_OFFSET, &labels, p.next);
            counter(PARTITION_APPENDED_TOTAL, &labels, p.appended);
            if let Some(bytes) = p.bytes {
                gauge(PARTITION_BYTES, &labels, bytes);
            }
        }
        for g in &topic.groups {
            let labels = [("topic", topic.name.clone()), ("group", g.name.clone())];
            gauge(GROUP_MEMBERS, &labels, g.members.len() as u64);
            counter(GROUP_REDELIVERED_TOTAL, &labels, g.redelivered);
            counter(GROUP_DEAD_LETTERED_TOTAL, &labels, g.dead_lettered);
            for p in &g.partitions {
                let labels = [
                    ("topic", topic.name.clone()),
                    ("group", g.name.clone()),
                    ("partition", p.partition.to_string()),
                ];
                gauge(GROUP_POSITION, &labels, p.position);
                gauge(GROUP_LAG, &labels, p.lag);
                gauge(GROUP_IN_FLIGHT, &labels, p.in_flight);
            }
        }
        for s in &topic.subscribers {
            let labels = [
                ("topic", topic.name.clone()),
                ("subscriber", s.id.to_string()),
            ];
            gauge(SUBSCRIBER_LAG, &labels, s.lag);
        }
    }
    for q in &stats.queues {
        let labels = [("queue", q.name.clone())];
        gauge(QUEUE_READY, &labels, q.ready);
        gauge(QUEUE_IN_FLIGHT, &labels, q.in_flight);
        gauge(QUEUE_DELAYED, &labels, q.delayed);
        gauge(QUEUE_CONSUMERS, &labels, q.consumers);
        gauge(QUEUE_CAPACITY, &labels, q.capacity);
        let age = q.oldest_ready_age.unwrap_or_default().as_secs_f64();
        ::metrics::gauge!(QUEUE_OLDEST_READY_AGE_SECONDS, &labels).set(age);
        counter(QUEUE_ACKED_TOTAL, &labels, q.acked);
        counter(QUEUE_NACKED_TOTAL, &labels, q.nacked);
        counter(QUEUE_DEAD_LETTERED_TOTAL, &labels, q.dead_lettered);
        counter(QUEUE_EXPIRED_TOTAL, &labels, q.expired);
    }
    if let Some(store) = &stats.store {
        let none: [(&str, String); 0] = [];
        counter(STORE_COMMITS_TOTAL, &none, store.commits);
        counter(STORE_RECORDS_TOTAL, &none, store.records);
        ::metrics::gauge!(STORE_RECORDS_PER_COMMIT).set(store.records_per_commit);
        if let Some(bytes) = store.file_bytes {
            gauge(STORE_FILE_BYTES, &none, bytes);
        }
        if let Some(p50) = store.commit_p50 {
            ::metrics::gauge!(STORE_COMMIT_P50_SECONDS).set(p50.as_secs_f64());
        }
        if let Some(p99) = store.commit_p99 {
            ::metrics::gauge!(STORE_COMMIT_P99_SECONDS).set(p99.as_secs_f64());
        }
        gauge(STORE_POISONED, &none, u64::from(store.poisoned.is_some()));
    }
    for b in &stats.bridges {
        let labels = [("bridge", b.name.clone())];
        counter(BRIDGE_FORWARDED_TOTAL, &labels, b.forwarded);
        gauge(BRIDGE_IN_FLIGHT, &labels, b.in_flight);
        gauge(BRIDGE_LAG, &labels, b.lag);
        counter(BRIDGE_DEAD_LETTERED_TOTAL, &labels, b.dead_lettered);
        counter(BRIDGE_ERRORS_TOTAL, &labels, b.errors);
        counter(BRIDGE_RECONNECTS_TOTAL, &labels, b.reconnects);
        gauge(BRIDGE_CONNECTED, &labels, u64::from(b.connected));
    }
}

/// Describes every metric (unit and text) to the recorder in use.
fn describe() {
    for &(name, kind, unit, text) in DESCRIPTIONS {
        match kind {
            Kind::Counter => ::metrics::describe_counter!(name, unit, text),
            Kind::Gauge => ::metrics::describe_gauge!(name, unit, text),
        }
    }
}

/// Sets gauge `name{labels}` to a count.
fn gauge(name: &'static str, labels: &[(&'static str, String)], value: u64) {
    // Counts past 2^53 lose precision as f64, as every f64 gauge does.
    ::metrics::gauge!(name, labels).set(value as f64);
}

/// Sets counter `name{labels}` to a total.
fn counter(name: &'static str, labels: &[(&'static str, String)], value: u64) {
    ::metrics::counter!(name, labels).absolute(value);
}

//! Feature `metrics`: `Broker::record_metrics` sets every gauge and counter of
//! `embus::metrics` to its `Broker::stats` figure (checked by walking the snapshot, so the two
//! cannot drift), and the `embus-metrics` thread of `BrokerBuilder::metrics_every` records on
//! its interval and is gone once the broker closes or its last handle is dropped.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::WAIT;
use common::services::wait_until;
use embus::metrics as m;
use embus::{
    Broker, Error, ManualClock, QueueOptions, Record, RecvTimeoutError, Retention, Start,
    TopicOptions,
};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};

/// A series: a name and its labels, sorted.
type Series = (String, BTreeMap<String, String>);

/// Per metric name: its unit and description.
type Descriptions = HashMap<String, (Option<Unit>, String)>;

/// A recorder that keeps every counter and gauge (gauges as f64 bits) and every description.
#[derive(Clone, Default)]
struct TestRecorder {
    counters: Arc<Mutex<HashMap<Series, Arc<AtomicU64>>>>,
    gauges: Arc<Mutex<HashMap<Series, Arc<AtomicU64>>>>,
    descriptions: Arc<Mutex<Descriptions>>,
}

fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (name.to_owned(), labels)
}

fn key_series(key: &Key) -> Series {
    let labels = key
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    (key.name().to_owned(), labels)
}

impl TestRecorder {
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let counters = self.counters.lock().unwrap();
        counters
            .get(&series(name, labels))
            .map(|c| c.load(Ordering::SeqCst))
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let gauges = self.gauges.lock().unwrap();
        gauges
            .get(&series(name, labels))
            .map(|g| f64::from_bits(g.load(Ordering::SeqCst)))
    }

    /// Every series recorded, counters and gauges.
    fn names(&self) -> Vec<String> {
        let counters = self.counters.lock().unwrap();
        let gauges = self.gauges.lock().unwrap();
        counters
            .keys()
            .chain(gauges.keys())
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        let text = description.into_owned();
        let mut descriptions = self.descriptions.lock().unwrap();
        descriptions.insert(key.as_str().to_owned(), (unit, text));
    }
}

impl metrics::Recorder for TestRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {
        panic!("embus records no histogram");
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.counters.lock().unwrap();
        Counter::from_arc(Arc::clone(counters.entry(key_series(key)).or_default()))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = self.gauges.lock().unwrap();
        Gauge::from_arc(Arc::clone(gauges.entry(key_series(key)).or_default()))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        panic!("embus records no histogram");
    }
}

/// Asserts that counter `name{labels}` is `value`.
#[track_caller]
fn counter_is(rec: &TestRecorder, name: &str, labels: &[(&str, &str)], value: u64) {
    assert_eq!(rec.counter(name, labels), Some(value), "{name}{labels:?}");
}

/// Asserts that gauge `name{labels}` is `value`.
#[track_caller]
fn gauge_is(rec: &TestRecorder, name: &str, labels: &[(&str, &str)], value: f64) {
    assert_eq!(rec.gauge(name, labels), Some(value), "{name}{labels:?}");
}

#[test]
fn record_metrics_sets_every_figure_of_the_snapshot() {
    let clock = ManualClock::new();
    let dir = common::fresh_dir("metrics-record");
    let bus = Broker::builder()
        .path(dir.join("bus.embus"))
        .clock(clock.clone())
        .open()
        .unwrap();

    // A topic of two partitions with a byte limit (bytes counted), one without.
    let orders = bus
        .topic_with::<u32>(
            "orders",
            TopicOptions::default()
                .partitions(2)
                .retention(Retention::bytes(1 << 20)),
        )
        .unwrap();
    let audit = bus.topic::<u32>("audit").unwrap();
    for i in 0..6 {
        let key = if i < 4 { "a" } else { "b" };
        orders
            .producer()
            .send_record(Record::new(i).key(key))
            .unwrap();
    }
    audit.producer().send(1).unwrap();
    // A group: one acked, one in flight. A subscriber that read one.
    let mut member = orders.join_group("billing").unwrap();
    member.recv_timeout(WAIT).unwrap().ack().unwrap();
    let held = member.recv_timeout(WAIT).unwrap();
    let mut sub = orders.subscribe(Start::Earliest).unwrap();
    sub.recv_timeout(WAIT).unwrap();
    // A queue: five sent, one in flight, one dead-lettered (one delivery allowed), three ready.
    let jobs = bus
        .queue_with::<u32>(
            "jobs",
            QueueOptions::default()
                .max_deliveries(1)
                .dead_letter("jobs.dead"),
        )
        .unwrap();
    jobs.producer().send_batch(vec![1, 2, 3, 4, 5]).unwrap();
    let mut worker = jobs.consumer();
    let in_flight = worker.recv_timeout(WAIT).unwrap();
    worker.recv_timeout(WAIT).unwrap().nack().unwrap();
    clock.advance(Duration::from_secs(2));
    bus.flush().unwrap(); // acks and positions committed: the store's figures stay put

    let rec = TestRecorder::default();
    metrics::with_local_recorder(&rec, || bus.record_metrics());
    let stats = bus.stats();

    // What the test knows.
    gauge_is(&rec, m::QUEUE_READY, &[("queue", "jobs")], 3.0);
    gauge_is(&rec, m::QUEUE_IN_FLIGHT, &[("queue", "jobs")], 1.0);
    counter_is(&rec, m::QUEUE_DEAD_LETTERED_TOTAL, &[("queue", "jobs")], 1);
    counter_is(&rec, m::QUEUE_NACKED_TOTAL, &[("queue", "jobs")], 1);
    gauge_is(&rec, m::QUEUE_READY, &[("queue", "jobs.dead")], 1.0);
    gauge_is(
        &rec,
        m::QUEUE_OLDEST_READY_AGE_SECONDS,
        &[("queue", "jobs")],
        2.0,
    );
    gauge_is(
        &rec,
        m::QUEUE_OLDEST_READY_AGE_SECONDS,
        &[("queue", "jobs.dead")],
        2.0,
    );
    let group_in_flight: f64 = ["0", "1"]
        .iter()
        .map(|p| {
            let labels = [("topic", "orders"), ("group", "billing"), ("partition", *p)];
            rec.gauge(m::GROUP_IN_FLIGHT, &labels).unwrap()
        })
        .sum();
    assert_eq!(group_in_flight, 1.0);
    gauge_is(
        &rec,
        m::GROUP_MEMBERS,
        &[("topic", "orders"), ("group", "billing")],
        1.0,
    );
    let appended: u64 = ["0", "1"]
        .iter()
        .map(|p| {
            let labels = [("topic", "orders"), ("partition", *p)];
            rec.counter(m::PARTITION_APPENDED_TOTAL, &labels).unwrap()
        })
        .sum();
    assert_eq!(appended, 6);
    assert!(rec.counter(m::STORE_COMMITS_TOTAL, &[]).unwrap() > 0);
    gauge_is(&rec, m::STORE_POISONED, &[], 0.0);
    assert_eq!(
        rec.gauge(
            m::PARTITION_BYTES,
            &[("topic", "audit"), ("partition", "0")]
        ),
        None,
        "no byte limit: no bytes series"
    );

    // Every figure of the snapshot, walked.
    assert!(!stats.topics.is_empty() && !stats.queues.is_empty());
    for topic in &stats.topics {
        let t = topic.name.as_str();
        for p in &topic.partitions {
            let n = p.partition.to_string();
            let labels = [("topic", t), ("partition", n.as_str())];
            gauge_is(&rec, m::PARTITION_MESSAGES, &labels, p.messages as f64);
            gauge_is(
                &rec,
                m::PARTITION_EARLIEST_OFFSET,
                &labels,
                p.earliest as f64,
            );
            gauge_is(&rec, m::PARTITION_NEXT_OFFSET, &labels, p.next as f64);
            counter_is(&rec, m::PARTITION_APPENDED_TOTAL, &labels, p.appended);
            let bytes = rec.gauge(m::PARTITION_BYTES, &labels);
            assert_eq!(bytes, p.bytes.map(|b| b as f64), "{t}/{n} bytes");
        }
        assert_eq!(topic.name == "orders", !topic.groups.is_empty());
        for g in &topic.groups {
            let labels = [("topic", t), ("group", g.name.as_str())];
            gauge_is(&rec, m::GROUP_MEMBERS, &labels, g.members.len() as f64);
            counter_is(&rec, m::GROUP_REDELIVERED_TOTAL, &labels, g.redelivered);
            counter_is(&rec, m::GROUP_DEAD_LETTERED_TOTAL, &labels, g.dead_lettered);
            let (mut lag, mut in_flight) = (0.0, 0.0);
            for p in &g.partitions {
                let n = p.partition.to_string();
                let labels = [("topic", t), ("group", g.name.as_str()), ("partition", &n)];
                gauge_is(&rec, m::GROUP_POSITION, &labels, p.position as f64);
                gauge_is(&rec, m::GROUP_LAG, &labels, p.lag as f64);
                gauge_is(&rec, m::GROUP_IN_FLIGHT, &labels, p.in_flight as f64);
                lag += rec.gauge(m::GROUP_LAG, &labels).unwrap();
                in_flight += rec.gauge(m::GROUP_IN_FLIGHT, &labels).unwrap();
            }
            // The group's totals are the sums a backend computes.
            assert_eq!((lag, in_flight), (g.lag as f64, g.in_flight as f64));
        }
        assert_eq!(topic.name == "orders", topic.subscribers.len() == 1);
        for s in &topic.subscribers {
            let id = s.id.to_string();
            let labels = [("topic", t), ("subscriber", id.as_str())];
            gauge_is(&rec, m::SUBSCRIBER_LAG, &labels, s.lag as f64);
        }
    }
    assert_eq!(stats.queues.len(), 2);
    for q in &stats.queues {
        let labels = [("queue", q.name.as_str())];
        gauge_is(&rec, m::QUEUE_READY, &labels, q.ready as f64);
        gauge_is(&rec, m::QUEUE_IN_FLIGHT, &labels, q.in_flight as f64);
        gauge_is(&rec, m::QUEUE_DELAYED, &labels, q.delayed as f64);
        gauge_is(&rec, m::QUEUE_CONSUMERS, &labels, q.consumers as f64);
        gauge_is(&rec, m::QUEUE_CAPACITY, &labels, q.capacity as f64);
        let age = q.oldest_ready_age.unwrap_or_default().as_secs_f64();
        gauge_is(&rec, m::QUEUE_OLDEST_READY_AGE_SECONDS, &labels, age);
        counter_is(&rec, m::QUEUE_ACKED_TOTAL, &labels, q.acked);
        counter_is(&rec, m::QUEUE_NACKED_TOTAL, &labels, q.nacked);
        counter_is(&rec, m::QUEUE_DEAD_LETTERED_TOTAL, &labels, q.dead_lettered);
        counter_is(&rec, m::QUEUE_EXPIRED_TOTAL, &labels, q.expired);
    }
    let store = stats.store.as_ref().unwrap();
    counter_is(&rec, m::STORE_COMMITS_TOTAL, &[], store.commits);
    counter_is(&rec, m::STORE_RECORDS_TOTAL, &[], store.records);
    gauge_is(
        &rec,
        m::STORE_RECORDS_PER_COMMIT,
        &[],
        store.records_per_commit,
    );
    let file_bytes = rec.gauge(m::STORE_FILE_BYTES, &[]);
    assert_eq!(file_bytes, Some(store.file_bytes.unwrap() as f64));
    let p50 = rec.gauge(m::STORE_COMMIT_P50_SECONDS, &[]);
    assert_eq!(p50, Some(store.commit_p50.unwrap().as_secs_f64()));
    let p99 = rec.gauge(m::STORE_COMMIT_P99_SECONDS, &[]);
    assert_eq!(p99, Some(store.commit_p99.unwrap().as_secs_f64()));
    let poisoned = u64::from(store.poisoned.is_some()) as f64;
    gauge_is(&rec, m::STORE_POISONED, &[], poisoned);
    assert!(stats.bridges.is_empty(), "no bridge here");

    // Every series is described, with a unit; counters and only counters end in `_total`.
    let descriptions = rec.descriptions.lock().unwrap().clone();
    for name in rec.names() {
        let (unit, text) = descriptions.get(&name).unwrap_or_else(|| panic!("{name}"));
        assert!(unit.is_some() && !text.is_empty(), "{name}");
        assert!(name.starts_with("embus_"), "{name}");
    }
    for (name, _) in rec.counters.lock().unwrap().keys() {
        assert!(name.ends_with("_total"), "counter {name}");
    }
    for (name, _) in rec.gauges.lock().unwrap().keys() {
        assert!(!name.ends_with("_total"), "gauge {name}");
    }
    assert_eq!(descriptions[m::STORE_FILE_BYTES].0, Some(Unit::Bytes));
    assert_eq!(
        descriptions[m::QUEUE_OLDEST_READY_AGE_SECONDS].0,
        Some(Unit::Seconds)
    );
    // The bridge metrics are described too, though no bridge ran.
    assert!(descriptions.contains_key(m::BRIDGE_CONNECTED));
    assert_eq!(descriptions.len(), 36, "one description per metric");

    drop((held, in_flight));
    bus.close().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_closed_broker_records_nothing_but_its_store() {
    let bus = Broker::memory();
    bus.queue::<u32>("jobs")
        .unwrap()
        .producer()
        .send(1)
        .unwrap();
    bus.clone().close().unwrap();
    let rec = TestRecorder::default();
    metrics::with_local_recorder(&rec, || bus.record_metrics());
    assert_eq!(rec.gauge(m::QUEUE_READY, &[("queue", "jobs")]), None);
    assert!(rec.names().is_empty(), "{:?}", rec.names());
}

#[test]
fn a_zero_interval_is_refused() {
    let err = Broker::builder()
        .metrics_every(Duration::ZERO)
        .open()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                option: "metrics_every",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("metrics_every"), "{err}");
}

/// The threads of this process named `embus-metrics`.
#[cfg(target_os = "linux")]
fn metrics_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == "embus-metrics")
        .count()
}

// The only test here that starts `embus-metrics` threads or uses the global recorder.
#[cfg(target_os = "linux")]
#[test]
fn the_metrics_thread_records_on_its_interval_and_stops_with_the_broker() {
    let rec = TestRecorder::default();
    metrics::set_global_recorder(rec.clone()).unwrap();
    assert_eq!(metrics_threads(), 0);

    // A short interval: the figures follow the broker.
    let bus = Broker::builder()
        .metrics_every(Duration::from_millis(10))
        .open()
        .unwrap();
    let ticks = bus.queue::<u32>("ticks").unwrap();
    ticks.producer().send(1).unwrap();
    let ready = || rec.gauge(m::QUEUE_READY, &[("queue", "ticks")]);
    wait_until("ready = 1 recorded", WAIT, || ready() == Some(1.0));
    ticks.producer().send(2).unwrap();
    wait_until("ready = 2 recorded", WAIT, || ready() == Some(2.0));
    assert_eq!(metrics_threads(), 1);

    // An hour's interval: it records once at open (the store's figures: the other broker has
    // no store), then only close can end its wait.
    let dir = common::fresh_dir("metrics-thread");
    let hourly = Broker::builder()
        .path(dir.join("bus.embus"))
        .metrics_every(Duration::from_secs(3600))
        .open()
        .unwrap();
    wait_until("the hourly broker's first recording", WAIT, || {
        rec.gauge(m::STORE_POISONED, &[]).is_some()
    });
    let slow = hourly.queue::<u32>("slow").unwrap();
    assert_eq!(metrics_threads(), 2);

    // Close stops the first one at once.
    bus.close().unwrap();
    assert!(ticks.producer().send(3).is_err());
    wait_until("the first thread gone", WAIT, || metrics_threads() == 1);

    // The thread does not keep a broker open: dropping its last handle closes it, and the
    // thread goes (long before its hour is up).
    let mut reader = slow.consumer();
    drop((hourly, slow));
    assert_eq!(
        reader.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Disconnected
    );
    wait_until("the hourly thread gone", WAIT, || metrics_threads() == 0);
    assert_eq!(
        rec.gauge(m::QUEUE_READY, &[("queue", "slow")]),
        None,
        "declared after its one recording"
    );
    drop(ticks);
    std::fs::remove_dir_all(&dir).unwrap();
}

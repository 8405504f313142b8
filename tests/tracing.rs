//! The `tracing` feature: each lifecycle event is emitted with its target, level and fields
//! (`embus::observe` lists them), and a `traceparent` header reaches the `deliver` event.
//!
//! A hand-written subscriber, installed once as the global default (the durable store's
//! events come from the thread committing: its writer thread, or a lone sender), records every
//! `embus` event; each test uses topic and queue names of its own and looks only at the events
//! that name them.
#![cfg(feature = "tracing")]

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use embus::{
    Broker, Error, GroupOptions, ManualClock, QueueOptions, Record, Retention, SendError, Start,
    TRACEPARENT, TopicOptions, TraceContext,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Level, Metadata, Subscriber};

use common::WAIT;
use common::faulty::{Faults, Mode, faulty_builder};

/// One recorded event.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    level: Level,
    /// Field name -> value as text (`message`: the event's name).
    fields: BTreeMap<String, String>,
}

impl Seen {
    fn name(&self) -> &str {
        self.field("message").unwrap_or_default()
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// Asserts that the event has these fields with these values.
    #[track_caller]
    fn has(&self, expected: &[(&str, &str)]) {
        for (name, value) in expected {
            assert_eq!(self.field(name), Some(*value), "field `{name}` of {self:?}");
        }
    }
}

#[derive(Default)]
struct Collector {
    seen: Mutex<Vec<Seen>>,
    /// Notified at each event.
    more: Condvar,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

struct Global(Arc<Collector>);

impl Subscriber for Global {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("embus")
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &SpanRecord<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let metadata = event.metadata();
        self.0.seen.lock().unwrap().push(Seen {
            target: metadata.target().to_owned(),
            level: *metadata.level(),
            fields,
        });
        self.0.more.notify_all();
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// The global collector, installed by the first test that asks.
fn collector() -> &'static Collector {
    static COLLECTOR: OnceLock<Arc<Collector>> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let collector = Arc::new(Collector::default());
        tracing::subscriber::set_global_default(Global(Arc::clone(&collector)))
            .expect("no other global subscriber in this test binary");
        collector
    })
}

/// The events named `name` whose field `key` is `value` (a topic or queue of one test).
fn events(name: &str, key: &str, value: &str) -> Vec<Seen> {
    let seen = collector().seen.lock().unwrap();
    seen.iter()
        .filter(|e| e.name() == name && e.field(key) == Some(value))
        .cloned()
        .collect()
}

/// Waits (up to `WAIT`) for an event that `wanted` picks: the store's events may come from its
/// writer thread.
#[track_caller]
fn wait_for(what: &str, wanted: impl Fn(&Seen) -> bool) -> Seen {
    let collector = collector();
    let seen = collector.seen.lock().unwrap();
    let (seen, _) = collector
        .more
        .wait_timeout_while(seen, WAIT, |seen| !seen.iter().any(&wanted))
        .unwrap();
    let found = seen.iter().find(|e| wanted(e)).cloned();
    found.unwrap_or_else(|| panic!("no {what} event within {WAIT:?}"))
}

/// The one event named `name` with field `key` = `value`.
#[track_caller]
fn one(name: &str, key: &str, value: &str) -> Seen {
    let found = events(name, key, value);
    assert_eq!(
        found.len(),
        1,
        "one `{name}` event for {key} = {value}: {found:?}"
    );
    found.into_iter().next().unwrap()
}

#[test]
fn topic_send_deliver_and_group_ack() {
    collector();
    let bus = Broker::memory();
    let topic = bus
        .topic_with::<u64>("t-send", TopicOptions::default().partitions(1))
        .unwrap();
    let mut member = topic.join_group("billing").unwrap();
    let mut reader = topic.subscribe(Start::Earliest).unwrap();
    let receipt = topic.producer().send(7).unwrap();
    assert_eq!((receipt.partition, receipt.offset), (0, 0));

    let send = one("send", "topic", "t-send");
    assert_eq!(
        (send.target.as_str(), send.level),
        ("embus::topic", Level::TRACE)
    );
    send.has(&[("partition", "0"), ("offset", "0")]);

    reader.recv_timeout(WAIT).unwrap();
    let message = member.recv_timeout(WAIT).unwrap();
    message.ack().unwrap();
    let delivered = events("deliver", "topic", "t-send");
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    let to_member = delivered
        .iter()
        .find(|e| e.field("group").is_some())
        .unwrap();
    to_member.has(&[
        ("group", "billing"),
        ("partition", "0"),
        ("offset", "0"),
        ("delivery_count", "1"),
    ]);
    assert_eq!(to_member.level, Level::TRACE);
    assert_eq!(to_member.field("traceparent"), None, "no header, no field");
    let ack = one("ack", "topic", "t-send");
    assert_eq!(
        (ack.target.as_str(), ack.level),
        ("embus::topic", Level::TRACE)
    );
    ack.has(&[
        ("group", "billing"),
        ("offset", "0"),
        ("delivery_count", "1"),
    ]);
}

#[test]
fn group_nack_then_redeliver() {
    collector();
    let bus = Broker::memory();
    let topic = bus.topic::<u64>("t-nack").unwrap();
    let mut member = topic.join_group("workers").unwrap();
    topic.producer().send(1).unwrap();
    member.recv_timeout(WAIT).unwrap().nack().unwrap();
    let again = member.recv_timeout(WAIT).unwrap();
    assert_eq!(again.delivery_count(), 2);
    again.ack().unwrap();

    let nack = one("nack", "topic", "t-nack");
    assert_eq!(nack.level, Level::DEBUG);
    nack.has(&[
        ("group", "workers"),
        ("reason", "nack"),
        ("delivery_count", "1"),
    ]);
    let redeliver = one("redeliver", "topic", "t-nack");
    assert_eq!(
        (redeliver.target.as_str(), redeliver.level),
        ("embus::topic", Level::DEBUG)
    );
    redeliver.has(&[
        ("group", "workers"),
        ("offset", "0"),
        ("delivery_count", "2"),
    ]);
    assert_eq!(events("deliver", "topic", "t-nack").len(), 1);
}

#[test]
fn queue_dead_letter_after_max_deliveries() {
    collector();
    let clock = ManualClock::new();
    let bus = Broker::builder().clock(clock.clone()).open().unwrap();
    let options = QueueOptions::default()
        .ack_timeout(Duration::from_secs(30))
        .max_deliveries(2)
        .dead_letter("q-dead.dlq");
    let jobs = bus.queue_with::<String>("q-dead", options).unwrap();
    let mut worker = jobs.consumer();
    let receipt = jobs.producer().send("job".to_owned()).unwrap();

    let send = one("send", "queue", "q-dead");
    assert_eq!(
        (send.target.as_str(), send.level),
        ("embus::queue", Level::TRACE)
    );
    send.has(&[("offset", &receipt.offset.to_string())]);

    let first = worker.recv_timeout(WAIT).unwrap();
    drop(first); // released unsettled: a `nack` event with reason `dropped`
    let second = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(second.delivery_count(), 2);
    clock.advance(Duration::from_secs(31)); // its ack timeout: the second delivery was the last
    bus.wait_idle(WAIT).unwrap();
    assert!(second.ack().is_err());

    let dropped = one("nack", "queue", "q-dead");
    assert_eq!(
        (dropped.target.as_str(), dropped.level),
        ("embus::queue", Level::DEBUG)
    );
    dropped.has(&[("reason", "dropped"), ("delivery_count", "1")]);
    one("deliver", "queue", "q-dead").has(&[("delivery_count", "1")]);
    one("redeliver", "queue", "q-dead").has(&[("delivery_count", "2")]);
    let dead = one("dead_letter", "queue", "q-dead");
    assert_eq!(
        (dead.target.as_str(), dead.level),
        ("embus::queue", Level::INFO)
    );
    dead.has(&[
        ("offset", &receipt.offset.to_string()),
        ("delivery_count", "2"),
        ("reason", "ack-timeout"),
        ("dead_letter", "q-dead.dlq"),
    ]);
    assert!(
        events("ack", "queue", "q-dead").is_empty(),
        "a late ack did nothing"
    );
}

#[test]
fn queue_message_ttl_expires() {
    collector();
    let clock = ManualClock::new();
    let bus = Broker::builder().clock(clock.clone()).open().unwrap();
    // Without a dead-letter queue: dropped; with one: moved there with reason `expired`.
    let plain = bus.queue::<u32>("q-ttl").unwrap();
    let options = QueueOptions::default().dead_letter("q-ttl2.dlq");
    let kept = bus.queue_with::<u32>("q-ttl2", options).unwrap();
    for queue in [&plain, &kept] {
        let record = Record::new(1).ttl(Duration::from_secs(5));
        queue.producer().send_record(record).unwrap();
    }
    clock.advance(Duration::from_secs(6));
    bus.wait_idle(WAIT).unwrap();
    assert!(plain.is_empty() && kept.is_empty());

    let expired = one("expire", "queue", "q-ttl");
    assert_eq!(
        (expired.target.as_str(), expired.level),
        ("embus::queue", Level::DEBUG)
    );
    expired.has(&[("offset", "0"), ("delivery_count", "0")]);
    one("expire", "queue", "q-ttl2");
    one("dead_letter", "queue", "q-ttl2")
        .has(&[("reason", "expired"), ("dead_letter", "q-ttl2.dlq")]);
    assert!(events("dead_letter", "queue", "q-ttl").is_empty());
}

#[test]
fn group_dead_letter_and_rebalance() {
    collector();
    let bus = Broker::memory();
    let topic = bus
        .topic_with::<u64>("t-group", TopicOptions::default().partitions(2))
        .unwrap();
    let options = GroupOptions::default()
        .max_deliveries(1)
        .dead_letter("t-group.dlq");
    let mut first = topic.join_group_with("g", options.clone()).unwrap();
    let joined = one("rebalance", "topic", "t-group");
    assert_eq!(
        (joined.target.as_str(), joined.level),
        ("embus::topic", Level::INFO)
    );
    joined.has(&[("group", "g"), ("change", "join"), ("members", "1")]);

    let second = topic.join_group_with("g", options).unwrap();
    drop(second);
    let changes: Vec<(String, String)> = events("rebalance", "topic", "t-group")
        .iter()
        .map(|e| {
            (
                e.field("change").unwrap().to_owned(),
                e.field("members").unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [("join", "1"), ("join", "2"), ("leave", "1")];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(c, m)| ((*c).to_owned(), (*m).to_owned()))
        .collect();
    assert_eq!(changes, expected);

    let receipt = topic.producer().send(5).unwrap();
    first.recv_timeout(WAIT).unwrap().nack().unwrap();
    bus.wait_idle(WAIT).unwrap();
    let dead = one("dead_letter", "topic", "t-group");
    assert_eq!(dead.level, Level::INFO);
    dead.has(&[
        ("group", "g"),
        ("partition", &receipt.partition.to_string()),
        ("offset", &receipt.offset.to_string()),
        ("delivery_count", "1"),
        ("reason", "nack"),
        ("dead_letter", "t-group.dlq"),
    ]);
}

#[test]
fn a_lagging_subscriber_warns() {
    collector();
    let bus = Broker::memory();
    let options = TopicOptions::default().retention(Retention::messages(3));
    let topic = bus.topic_with::<u64>("t-lag", options).unwrap();
    topic.producer().send_batch((0..5).collect()).unwrap();
    assert_eq!(
        events("send", "topic", "t-lag").len(),
        5,
        "one per record of a batch"
    );
    let mut reader = topic.subscribe(Start::Offset(0)).unwrap();
    assert!(reader.recv_timeout(WAIT).is_err()); // Lagged { skipped: 2 }
    let lagged = one("lagged", "topic", "t-lag");
    assert_eq!(
        (lagged.target.as_str(), lagged.level),
        ("embus::topic", Level::WARN)
    );
    lagged.has(&[("partition", "0"), ("skipped", "2")]);
}

#[test]
fn traceparent_reaches_the_deliver_event() {
    collector();
    let bus = Broker::memory();
    let queue = bus.queue::<u64>("q-trace").unwrap();
    let context = TraceContext::new_root().child();
    let record = Record::new(1).trace_context(context);
    queue.producer().send_record(record).unwrap();
    let mut worker = queue.consumer();
    let message = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(message.trace_context(), Some(Ok(context)));
    assert_eq!(
        message.headers().get(TRACEPARENT),
        Some(context.to_string().as_bytes())
    );
    message.ack().unwrap();

    let text = context.to_string();
    one("deliver", "queue", "q-trace").has(&[("traceparent", &text), ("delivery_count", "1")]);
    one("ack", "queue", "q-trace");
}

#[test]
fn durable_commits_are_reported() {
    collector();
    let dir = common::fresh_dir("tracing-commit");
    let bus = Broker::open(dir.join("bus.embus")).unwrap();
    let queue = bus.queue::<u64>("q-durable").unwrap();
    queue.producer().send(1).unwrap();
    one("send", "queue", "q-durable");
    let commit = wait_for("commit", |e| {
        e.name() == "commit" && e.target == "embus::store"
    });
    assert_eq!(commit.level, Level::DEBUG);
    let requests: u64 = commit.field("requests").unwrap().parse().unwrap();
    assert!(requests >= 1);
    commit.field("micros").unwrap().parse::<u64>().unwrap();
    drop(bus);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failed_commit_is_reported_as_poisoned() {
    collector();
    let dir = common::fresh_dir("tracing-poison");
    let path = dir.join("bus.embus");
    let faults = Faults::new(Mode::Sticky);
    let bus = faulty_builder(&path, &faults).open().unwrap();
    let queue = bus.queue::<u64>("q-poison").unwrap();
    faults.arm(1);
    match queue.producer().send(1) {
        Err(SendError::Failed(1, _)) => {}
        other => panic!("expected the send to fail and hand its message back: {other:?}"),
    }
    // The store is poisoned now: later sends fail without a commit.
    assert!(matches!(
        queue.producer().send(2),
        Err(SendError::Failed(2, Error::Poisoned { .. }))
    ));
    let poisoned = wait_for("poisoned", |e| e.name() == "poisoned");
    assert_eq!(
        (poisoned.target.as_str(), poisoned.level),
        ("embus::store", Level::ERROR)
    );
    assert!(
        poisoned.field("error").unwrap().contains("injected fault"),
        "{poisoned:?}"
    );
    drop(bus);
    let _ = std::fs::remove_dir_all(dir);
}

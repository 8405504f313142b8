//! Tracing events are emitted once the engine let go of its locks, so a subscriber may call
//! back into the broker; and only for settles that did something.
#![cfg(feature = "tracing")]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use embus::{Broker, GroupOptions, ManualClock, QueueOptions};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Metadata, Subscriber};

const WAIT: Duration = Duration::from_secs(10);

struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// Records every event; on the event named `reenter_on`, calls `Broker::stats` (what a layer
/// that exports figures, or logs into the bus, would do).
struct Sub {
    seen: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    bus: Option<Broker>,
    reenter_on: &'static str,
}

impl Subscriber for Sub {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.target().starts_with("embus")
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &SpanRecord<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        let name = fields.0.get("message").cloned().unwrap_or_default();
        self.seen.lock().unwrap().push(fields.0);
        if name == self.reenter_on
            && let Some(bus) = &self.bus
        {
            let _ = bus.stats();
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// The queue's `expire` event: a subscriber that calls back into the broker (here
/// `Broker::stats`, which takes the queue's lock) does not deadlock the calling thread.
#[test]
fn a_subscriber_calling_stats_on_expire_does_not_deadlock() {
    let clock = ManualClock::new();
    let bus = Broker::builder().clock(clock.clone()).open().unwrap();
    let jobs = bus
        .queue_with::<u32>(
            "review-expire",
            QueueOptions::default().message_ttl(Duration::from_secs(1)),
        )
        .unwrap();
    jobs.producer().send(1).unwrap();
    let (done, finished) = mpsc::channel();
    let seen: Arc<Mutex<Vec<BTreeMap<String, String>>>> = Arc::default();
    let sub = Sub {
        seen: Arc::clone(&seen),
        bus: Some(bus.clone()),
        reenter_on: "expire",
    };
    std::thread::spawn(move || {
        tracing::subscriber::with_default(sub, || {
            clock.advance(Duration::from_secs(2));
            let _ = jobs.consumer().try_recv(); // looks at the queue: the message expires
        });
        let _ = done.send(());
    });
    let finished = finished.recv_timeout(WAIT);
    let expired = seen
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.get("message").map(String::as_str) == Some("expire"));
    assert!(expired, "an expire event was seen");
    assert!(
        finished.is_ok(),
        "deadlock: the `expire` event ran the subscriber under the queue's lock"
    );
}

/// The same for the group's `dead_letter` event (the group's lock).
#[test]
fn a_subscriber_calling_stats_on_group_dead_letter_does_not_deadlock() {
    let bus = Broker::memory();
    let orders = bus.topic::<u32>("review-gdl").unwrap();
    orders.producer().send(1).unwrap();
    let options = GroupOptions::default()
        .max_deliveries(1)
        .dead_letter("review-gdl.dead");
    let mut member = orders.join_group_with("g", options).unwrap();
    let (done, finished) = mpsc::channel();
    let sub = Sub {
        seen: Arc::default(),
        bus: Some(bus.clone()),
        reenter_on: "dead_letter",
    };
    std::thread::spawn(move || {
        tracing::subscriber::with_default(sub, || {
            let m = member.recv_timeout(WAIT).unwrap();
            let _ = m.nack(); // its last delivery: dead-lettered
        });
        let _ = done.send(());
    });
    assert!(
        finished.recv_timeout(WAIT).is_ok(),
        "deadlock: the group's `dead_letter` event ran the subscriber under the group's lock"
    );
}

/// A nack of a group delivery that already ended (its ack timeout passed and the message was
/// delivered again) releases nothing, and emits no `nack` event.
#[test]
fn a_stale_group_nack_emits_no_nack_event() {
    let clock = ManualClock::new();
    let bus = Broker::builder().clock(clock.clone()).open().unwrap();
    let orders = bus.topic::<u32>("review-stale").unwrap();
    orders.producer().send(1).unwrap();
    let options = GroupOptions::default().ack_timeout(Duration::from_secs(5));
    let mut member = orders.join_group_with("g", options).unwrap();
    let seen: Arc<Mutex<Vec<BTreeMap<String, String>>>> = Arc::default();
    let sub = Sub {
        seen: Arc::clone(&seen),
        bus: None,
        reenter_on: "",
    };
    tracing::subscriber::with_default(sub, || {
        let first = member.recv_timeout(WAIT).unwrap();
        clock.advance(Duration::from_secs(6)); // `first` timed out
        let again = member.recv_timeout(WAIT).unwrap();
        assert_eq!(again.delivery_count(), 2);
        let _ = first.nack(); // stale: releases nothing
        again.ack().unwrap();
    });
    let nacks: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.get("message").map(String::as_str) == Some("nack"))
        .cloned()
        .collect();
    assert!(
        nacks.is_empty(),
        "a nack event for a nack that did nothing: {nacks:?}"
    );
}

//! The RabbitMQ bridge against the real server on loopback: relaying out through an exchange
//! and in from a queue, bad input, a cut connection, and draining on stop. Each test declares
//! its own exchange and queue with `lapin` and deletes them at the end; each skips (or fails,
//! under `EMBUS_REQUIRE_SERVICES=1`) when RabbitMQ is unreachable.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::amqp_admin::{AmqpAdmin, Got};
use common::services::{Proxy, amqp, unique};
use common::{WAIT, fresh_dir};
use embus::bridge::amqp::{Inbound, Outbound};
use embus::bridge::{BridgeError, DeadLetter, KEY_HEADER};
use embus::{Broker, Dedupe, Record, Start, TopicOptions};

/// Polls `condition` until it holds, failing with `what` after 30 s.
fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    common::services::wait_until(what, Duration::from_secs(30), condition);
}

/// Messages a group has acked: the sum of its positions.
fn group_acked(topic: &embus::Topic<u64>, group: &str) -> u64 {
    topic.group_position(group).unwrap_or_default().iter().sum()
}

/// Checks what arrived: each id once, in order per key, with its headers and key.
fn check_arrived(got: &[Got], n: u64) {
    let mut ids = BTreeSet::new();
    let mut last: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for message in got {
        let value: u64 = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(message.id.as_deref(), Some(format!("m{value}").as_str()));
        assert_eq!(message.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            message.headers.get("bin"),
            Some(&vec![0u8, 255, value as u8])
        );
        let key = message.key.clone().unwrap();
        assert_eq!(key, format!("k{}", value % 4).into_bytes());
        if let Some(previous) = last.insert(key, value) {
            assert!(previous < value, "{value} after {previous} for its key");
        }
        assert!(ids.insert(value), "{value} arrived twice");
    }
    assert_eq!(ids.len() as u64, n);
}

fn record(i: u64) -> Record<u64> {
    Record::new(i)
        .key(format!("k{}", i % 4))
        .id(format!("m{i}"))
        .header("bin", [0u8, 255, i as u8])
}

#[test]
fn outbound_relays_a_group_member_and_acks_after_confirms() {
    let Some(url) = amqp() else { return };
    let mut rabbit = AmqpAdmin::connect(&url);
    let exchange = rabbit.exchange("embus-out");
    let queue = rabbit.queue("embus-out", Some((&exchange, "orders")));
    let dir = fresh_dir("amqp-out-group");
    let broker = Broker::open(dir.join("bus.embus")).unwrap();
    let topic = broker
        .topic_with::<u64>("orders", TopicOptions::default().partitions(2))
        .unwrap();
    let dead = broker.queue::<DeadLetter>("orders.dead").unwrap();
    const N: u64 = 500;
    for i in 0..N {
        topic.producer().send_record(record(i)).unwrap();
    }
    let member = topic.join_group("out").unwrap();
    let bridge = Outbound::new(url.as_str(), exchange.as_str())
        .window(64)
        .start(member, &dead)
        .unwrap();
    // The test reads nothing from the queue until the end: a local ack before the server's
    // confirm would show up as more acked locally than there are in the queue.
    wait_until("every message acked locally", || {
        let acked = group_acked(&topic, "out");
        let remote = u64::from(rabbit.count(&queue));
        assert!(
            acked <= remote,
            "{acked} acked locally, {remote} on the server"
        );
        acked == N
    });
    assert_eq!(bridge.stats().forwarded, N);
    bridge.stop().unwrap();
    let got = rabbit.drain(&queue);
    check_arrived(&got, N);
    assert!(dead.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn outbound_relays_a_queue_consumer_with_a_routing_function() {
    let Some(url) = amqp() else { return };
    let mut rabbit = AmqpAdmin::connect(&url);
    let exchange = rabbit.exchange("embus-outq");
    let queue = rabbit.queue("embus-outq", Some((&exchange, "jobs.k1")));
    let other = rabbit.queue("embus-outq", Some((&exchange, "jobs.other")));
    let broker = Broker::memory();
    let jobs = broker.queue::<u64>("jobs").unwrap();
    let dead = broker.queue::<DeadLetter>("jobs.dead").unwrap();
    const N: u64 = 500;
    for i in 0..N {
        jobs.producer().send_record(record(i)).unwrap();
    }
    let route = |e: &embus::bridge::Envelope<'_>| match e.key {
        Some(b"k1") => format!("{}.k1", e.source),
        _ => format!("{}.other", e.source),
    };
    let bridge = Outbound::new(url.as_str(), exchange.as_str())
        .routing_key_with(route)
        .start(jobs.consumer(), &dead)
        .unwrap();
    wait_until("the local queue to empty", || {
        // `len` and `in_flight` are two reads: a message delivered between them counts in
        // both, so the sum can pass N for an instant (acked is then low, which is safe here).
        let acked = N.saturating_sub((jobs.len() + jobs.in_flight()) as u64);
        let remote = u64::from(rabbit.count(&queue) + rabbit.count(&other));
        assert!(
            acked <= remote,
            "{acked} acked locally, {remote} on the server"
        );
        acked == N
    });
    assert_eq!(bridge.stats().forwarded, N);
    drop(bridge); // dropping stops it: the next message stays here for another consumer
    jobs.producer().send(999).unwrap();
    assert_eq!(*jobs.consumer().recv_timeout(WAIT).unwrap().payload(), 999);
    let k1 = rabbit.drain(&queue);
    assert!(k1.iter().all(|m| m.key.as_deref() == Some(b"k1")));
    let mut all = k1;
    all.extend(rabbit.drain(&other));
    check_arrived(&all, N);
}

#[test]
fn inbound_stores_each_message_id_once_and_acks_after() {
    let Some(url) = amqp() else { return };
    let mut rabbit = AmqpAdmin::connect(&url);
    let queue = rabbit.queue("embus-in", None);
    let dir = fresh_dir("amqp-in");
    let broker = Broker::open(dir.join("bus.embus")).unwrap();
    let options = TopicOptions::default().dedupe(Dedupe::within(Duration::from_secs(600)));
    let topic = broker.topic_with::<u64>("readings", options).unwrap();
    let dead = broker.queue::<DeadLetter>("readings.dead").unwrap();
    const N: u64 = 100;
    for i in 0..N {
        let key = format!("k{}", i % 3);
        rabbit.publish(
            &queue,
            Some(&format!("r{i}")),
            Some(&key),
            i.to_string().as_bytes(),
        );
    }
    rabbit.publish(&queue, Some("r7"), Some("k1"), b"7"); // the same message again
    rabbit.publish(&queue, None, None, b"1000"); // no id: stored as it comes
    let bridge = Inbound::new(url.as_str(), queue.as_str())
        .window(16)
        .start(topic.producer(), &dead)
        .unwrap();
    let mut reader = topic.subscribe(Start::Earliest).unwrap();
    let mut seen = Vec::new();
    wait_until("the remote queue acked empty", || {
        let remote = u64::from(rabbit.count(&queue));
        let stats = bridge.stats();
        remote == 0 && stats.forwarded == N + 2 && stats.in_flight == 0
    });
    while let Ok(message) = reader.recv_timeout(Duration::from_millis(200)) {
        seen.push((message.id().map(str::to_string), *message.payload()));
        if let Some(id) = message.id() {
            let i: u64 = id[1..].parse().unwrap();
            assert_eq!(message.key(), Some(format!("k{}", i % 3).as_bytes()));
            assert_eq!(message.headers().get("origin"), Some(&b"test"[..]));
            assert_eq!(message.headers().get("attempt"), Some(&b"3"[..]));
            assert_eq!(message.headers().get(KEY_HEADER), None);
        }
    }
    let ids: Vec<_> = seen.iter().filter_map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len() as u64, N, "r7 stored once: {ids:?}");
    assert!(seen.contains(&(None, 1000)));
    assert_eq!(seen.len() as u64, N + 1);
    bridge.stop().unwrap();
    assert_eq!(rabbit.count(&queue), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_refused_with_a_typed_error_and_loses_nothing() {
    let Some(url) = amqp() else { return };
    let mut rabbit = AmqpAdmin::connect(&url);
    let exchange = rabbit.exchange("embus-bad");
    let queue = rabbit.queue("embus-bad", Some((&exchange, "k")));
    let broker = Broker::memory();
    let topic = broker.topic::<u64>("t").unwrap();
    let dead = broker.queue::<DeadLetter>("t.dead").unwrap();
    topic.producer().send(42).unwrap();

    // A closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("amqp://guest:secret@{}/%2f", closed.local_addr().unwrap());
    drop(closed);
    let error = Outbound::new(closed_url.as_str(), exchange.as_str())
        .start(topic.join_group("g").unwrap(), &dead)
        .unwrap_err();
    assert!(
        matches!(&error, BridgeError::Connect { server, .. } if server.contains("127.0.0.1")),
        "{error}"
    );
    assert!(!error.to_string().contains("secret"), "{error}");

    // Bad credentials.
    let error = Outbound::new(url.as_str(), exchange.as_str())
        .credentials("guest", "wrong-password")
        .start(topic.join_group("g").unwrap(), &dead)
        .unwrap_err();
    assert!(matches!(error, BridgeError::Auth { .. }), "{error}");
    assert!(!error.to_string().contains("wrong-password"), "{error}");
    let error = Inbound::new(url.as_str(), queue.as_str())
        .credentials("nobody", "nothing")
        .start(topic.producer(), &dead)
        .unwrap_err();
    assert!(matches!(error, BridgeError::Auth { .. }), "{error}");

    // A missing exchange, a missing queue.
    let missing = unique("embus-missing");
    let error = Outbound::new(url.as_str(), missing.as_str())
        .start(topic.join_group("g").unwrap(), &dead)
        .unwrap_err();
    assert!(
        matches!(&error, BridgeError::NoExchange { exchange, .. } if *exchange == missing),
        "{error}"
    );
    assert!(error.to_string().contains(&missing));
    let error = Inbound::new(url.as_str(), missing.as_str())
        .start(topic.producer(), &dead)
        .unwrap_err();
    assert!(
        matches!(&error, BridgeError::NoSource { what: "queue", name, .. } if *name == missing),
        "{error}"
    );

    // The local message is still there for the group.
    let mut member = topic.join_group("g").unwrap();
    let message = member.recv_timeout(WAIT).unwrap();
    assert_eq!(*message.payload(), 42);
    drop(message); // not acked: released
    drop(member);
    assert!(dead.is_empty());
}

#[test]
fn undecodable_inbound_payload_is_dead_lettered_and_acked() {
    let Some(url) = amqp() else { return };
    let mut rabbit = AmqpAdmin::connect(&url);
    let queue = rabbit.queue("embus-undecodable", None);
    let broker = Broker::memory();
    let topic = broker.topic::<u64>("numbers").unwrap();
    let dead = broker.queue::<DeadLetter>("numbers.dead").unwrap();
    rabbit.publish(&queue, Some("a"), None, b"1");
    rabbit.publish(&queue, Some("b"), None, br#""not a number""#);
    rabbit.publish(&queue, Some("c"), None, b"3");
    let bridge = Inbound::new(url.as_str(), queue.as_str())
        .start(topic.producer(), &dead)
        .unwrap();
    let mut letters = dead.consumer();
    let letter = letters.recv_timeout(WAIT).unwrap();
    assert_eq!(letter.payload().payload, br#""not a number""#.to_vec());
    assert_eq!(letter.payload().id.as_deref(), Some("b"));
    assert!(
        letter.payload().reason.contains("u64"),
        "{}",
        letter.payload().reason
    );
    letter.ack().unwrap();
    wait_until("the queue acked empty", || {
        rabbit.count(&queue) == 0 && bridge.stats().in_flight == 0 && topic.retained() == 2
    });
    assert_eq!(bridge.stats().dead_lettered, 1);
    let mut reader = topic.subscribe(Start::Earliest).unwrap();
    let got: Vec<u64> = (0..2)
        .map(|_| *reader.recv_timeout(WAIT).unwrap().payload())
        .collect();
    assert_eq!(got, vec![1, 3]);
    bridge.stop().unwrap();
}

#[test]
fn unroutable_outbound_message_is_dead_lettered_once() {
    let Some(url) = amqp() else { return };
    let mut rabbit = AmqpAdmin::connect(&url);
    let exchange = rabbit.exchange("embus-unroutable");
    let queue = rabbit.queue("embus-unroutable", Some((&exchange, "bound")));
    let broker = Broker::memory();
    let jobs = broker.queue::<u64>("jobs").unwrap();
    let dead = broker.queue::<DeadLetter>("jobs.dead").unwrap();
    jobs.producer()
        .send_record(Record::new(1).key("bound"))
        .unwrap();
    jobs.producer()
        .send_record(Record::new(2).key("nowhere"))
        .unwrap();
    jobs.producer()
        .send_record(Record::new(3).key("bound"))
        .unwrap();
    let route = |e: &embus::bridge::Envelope<'_>| {
        String::from_utf8_lossy(e.key.unwrap_or_default()).into_owned()
    };
    let bridge = Outbound::new(url.as_str(), exchange.as_str())
        .routing_key_with(route)
        .start(jobs.consumer(), &dead)
        .unwrap();
    let mut letters = dead.consumer();
    let letter = letters.recv_timeout(WAIT).unwrap();
    assert!(
        letter.payload().reason.contains("NO_ROUTE"),
        "{}",
        letter.payload().reason
    );
    assert!(
        letter.payload().target.contains("nowhere"),
        "{}",
        letter.payload().target
    );
    assert_eq!(letter.payload().payload, b"2".to_vec());
    letter.ack().unwrap();
    wait_until("the local queue to empty", || {
        jobs.len() + jobs.in_flight() == 0 && bridge.stats().forwarded == 2
    });
    let stats = bridge.stats();
    assert_eq!((stats.dead_lettered, stats.forwarded), (1, 2));
    bridge.stop().unwrap();
    let got: Vec<u64> = rabbit
        .drain(&queue)
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(got, vec![1, 3]);
    assert!(dead.is_empty());
}

#[test]
fn a_cut_connection_is_reconnected_in_both_directions() {
    let Some(url) = amqp() else { return };
    let mut rabbit = AmqpAdmin::connect(&url);
    let exchange = rabbit.exchange("embus-cut");
    let out_queue = rabbit.queue("embus-cut-out", Some((&exchange, "events")));
    let in_queue = rabbit.queue("embus-cut-in", None);
    let proxy = Proxy::start(&url);
    let dir = fresh_dir("amqp-cut");
    let broker = Broker::open(dir.join("bus.embus")).unwrap();
    let events = broker.topic::<u64>("events").unwrap();
    let options = TopicOptions::default().dedupe(Dedupe::within(Duration::from_secs(600)));
    let incoming = broker.topic_with::<u64>("incoming", options).unwrap();
    let dead = broker.queue::<DeadLetter>("dead").unwrap();
    let fast = embus::Backoff::exponential(Duration::from_millis(20), Duration::from_millis(200));
    let out = Outbound::new(proxy.url(&url), exchange.as_str())
        .reconnect(fast.clone())
        .window(32)
        .start(events.join_group("out").unwrap(), &dead)
        .unwrap();
    let inb = Inbound::new(proxy.url(&url), in_queue.as_str())
        .reconnect(fast)
        .window(8)
        .start(incoming.producer(), &dead)
        .unwrap();
    const N: u64 = 400;
    for i in 0..N {
        events
            .producer()
            .send_record(Record::new(i).id(format!("e{i}")))
            .unwrap();
        rabbit.publish(
            &in_queue,
            Some(&format!("i{i}")),
            None,
            i.to_string().as_bytes(),
        );
        if i == N / 4 {
            proxy.cut();
        }
        if i == N / 2 {
            proxy.restore();
        }
    }
    wait_until("both directions caught up", || {
        group_acked(&events, "out") == N && rabbit.count(&in_queue) == 0
    });
    wait_until("inbound settled", || inb.stats().in_flight == 0);
    assert!(out.stats().reconnects >= 1, "{:?}", out.stats());
    assert!(inb.stats().reconnects >= 1, "{:?}", inb.stats());
    out.stop().unwrap();
    inb.stop().unwrap();
    let ids: BTreeSet<Option<String>> =
        rabbit.drain(&out_queue).into_iter().map(|m| m.id).collect();
    assert_eq!(ids.len() as u64, N, "every id arrives at least once");
    let mut reader = incoming.subscribe(Start::Earliest).unwrap();
    let mut stored = Vec::new();
    while let Ok(message) = reader.recv_timeout(Duration::from_millis(200)) {
        stored.push(message.id().unwrap().to_string());
    }
    let unique_ids: BTreeSet<_> = stored.iter().collect();
    assert_eq!(unique_ids.len() as u64, N);
    assert_eq!(stored.len() as u64, N, "stored exactly once");
    assert!(dead.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stop_drains_what_is_in_flight() {
    let Some(url) = amqp() else { return };
    let mut rabbit = AmqpAdmin::connect(&url);
    let exchange = rabbit.exchange("embus-stop");
    let queue = rabbit.queue("embus-stop", Some((&exchange, "t")));
    let broker = Broker::memory();
    let topic = broker.topic::<u64>("t").unwrap();
    let dead = broker.queue::<DeadLetter>("t.dead").unwrap();
    const N: u64 = 2000;
    let bridge = Outbound::new(url.as_str(), exchange.as_str())
        .window(256)
        .start(topic.join_group("out").unwrap(), &dead)
        .unwrap();
    for i in 0..N {
        topic.producer().send(i).unwrap();
    }
    wait_until("the bridge to be busy", || bridge.stats().forwarded > 0);
    let handle = bridge.stats();
    assert!(handle.connected);
    // Stop mid-stream: whatever was published is confirmed and acked before stop returns.
    let stats_before = bridge.stats();
    bridge.stop().unwrap();
    let acked = group_acked(&topic, "out");
    let remote = u64::from(rabbit.count(&queue));
    assert!(acked >= stats_before.forwarded);
    assert_eq!(
        acked, remote,
        "every confirmed message acked locally, nothing in flight"
    );
    // The rest is still there for the next bridge.
    let mut member = topic.join_group("out").unwrap();
    if acked < N {
        assert_eq!(*member.recv_timeout(WAIT).unwrap().payload(), acked);
    }
}

#[test]
fn inbound_stop_mid_stream_loses_nothing_and_a_restart_stores_the_rest_once() {
    let Some(url) = amqp() else { return };
    let mut rabbit = AmqpAdmin::connect(&url);
    let queue = rabbit.queue("embus-in-stop", None);
    let dir = fresh_dir("amqp-in-stop");
    let broker = Broker::open(dir.join("bus.embus")).unwrap();
    let options = TopicOptions::default().dedupe(Dedupe::within(Duration::from_secs(600)));
    let topic = broker.topic_with::<u64>("in", options).unwrap();
    let dead = broker.queue::<DeadLetter>("in.dead").unwrap();
    const N: u64 = 1000;
    for i in 0..N {
        rabbit.publish(
            &queue,
            Some(&format!("s{i}")),
            None,
            i.to_string().as_bytes(),
        );
    }
    let start = || {
        Inbound::new(url.as_str(), queue.as_str())
            .window(8)
            .start(topic.producer(), &dead)
            .unwrap()
    };
    let bridge = start();
    wait_until("the bridge to be busy", || bridge.stats().forwarded > 0);
    bridge.stop().unwrap();
    // Acked remotely only once stored here: whatever left the server is stored (what was
    // prefetched and not stored goes back to the queue when the connection closes).
    wait_until("the server to requeue what was not acked", || {
        topic.retained() + u64::from(rabbit.count(&queue)) >= N
    });
    let stored_first = topic.retained();
    assert!(stored_first < N, "the stop came too late to test anything");
    let bridge = start();
    wait_until("the rest stored", || {
        rabbit.count(&queue) == 0 && topic.retained() >= N && bridge.stats().in_flight == 0
    });
    bridge.stop().unwrap();
    let mut reader = topic.subscribe(Start::Earliest).unwrap();
    let mut ids = BTreeSet::new();
    while let Ok(message) = reader.recv_timeout(Duration::from_millis(200)) {
        assert!(
            ids.insert(message.id().unwrap().to_string()),
            "stored twice"
        );
    }
    assert_eq!(ids.len() as u64, N);
    let _ = std::fs::remove_dir_all(&dir);
}

//! Topics: producing and partitioning, offsets and timestamps, subscriber starts, retention, `Lag` and `Block`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{BRIEF, Backend, Bus, WAIT, both_backends};
use embus::{
    Broker, Consumer, Error, ManualClock, Overflow, Payload, Receipt, Record, RecvError,
    RecvTimeoutError, Retention, SendTimeoutError, Start, Topic, TopicOptions, TryRecvError,
    TrySendError,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn topic<T: Payload>(bus: &Broker, options: TopicOptions) -> Topic<T> {
    bus.topic_with("t", options).unwrap()
}

fn partitions(n: u32) -> TopicOptions {
    TopicOptions::default().partitions(n)
}

/// A broker on `backend` on a manual clock, and the clock.
fn manual_bus(backend: Backend) -> (Bus, ManualClock) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    (bus, clock)
}

/// The next message's partition, offset and payload, received within `WAIT`.
fn next<T: Payload + Clone>(consumer: &mut Consumer<T>) -> (u32, u64, T) {
    let m = consumer.recv_timeout(WAIT).unwrap();
    (m.partition(), m.offset(), m.payload().clone())
}

/// Asserts that nothing arrives within `BRIEF`.
fn assert_nothing_arrives<T: Payload>(consumer: &mut Consumer<T>) {
    let got = consumer.recv_timeout(BRIEF);
    assert!(
        matches!(got, Err(RecvTimeoutError::Timeout)),
        "expected nothing, got {got:?}"
    );
}

/// Asserts that nothing is ready now (no message, no `Lagged`).
fn assert_empty<T: Payload>(consumer: &mut Consumer<T>) {
    let got = consumer.try_recv();
    assert!(
        matches!(got, Err(TryRecvError::Empty)),
        "expected Empty, got {got:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Declaring topics
// ---------------------------------------------------------------------------------------------

both_backends!(topic_creates_a_topic_with_default_options);
fn topic_creates_a_topic_with_default_options(backend: Backend) {
    let bus = backend.bus();
    let t = bus.topic::<u64>("t").unwrap();
    assert_eq!(t.name(), "t");
    assert_eq!(t.options(), TopicOptions::default());
    assert_eq!(t.partitions(), 1);
    assert_eq!(t.offsets(0), Some(0..0));
    assert_eq!(t.offsets(1), None);
}

both_backends!(topic_with_applies_its_options);
fn topic_with_applies_its_options(backend: Backend) {
    let bus = backend.bus();
    let options = partitions(4)
        .retention(Retention::messages(10).and_age(Duration::from_secs(60)))
        .overflow(Overflow::Block);
    let t = topic::<u64>(&bus, options);
    assert_eq!(t.options(), options);
    assert_eq!(t.partitions(), 4);
    for p in 0..4 {
        assert_eq!(t.offsets(p), Some(0..0), "partition {p}");
    }
    assert_eq!(t.offsets(4), None);
}

both_backends!(topic_returns_the_existing_topic_whatever_its_options);
fn topic_returns_the_existing_topic_whatever_its_options(backend: Backend) {
    let bus = backend.bus();
    let created = topic::<u64>(&bus, partitions(3));
    created.producer().send(1).unwrap();
    let found = bus.topic::<u64>("t").unwrap();
    assert_eq!(found.partitions(), 3);
    assert_eq!(found.retained(), 1, "the same log, not a second topic");
    let mut sub = found.subscribe(Start::Earliest).unwrap();
    assert_eq!(next(&mut sub).2, 1);
}

both_backends!(topic_with_other_options_is_a_mismatch);
fn topic_with_other_options_is_a_mismatch(backend: Backend) {
    let bus = backend.bus();
    let _t = topic::<u64>(&bus, partitions(2));
    let err = bus.topic_with::<u64>("t", partitions(3)).unwrap_err();
    assert!(
        matches!(err, Error::Mismatch { ref name, .. } if name == "t"),
        "{err:?}"
    );
}

both_backends!(topic_with_invalid_options_is_rejected);
fn topic_with_invalid_options_is_rejected(backend: Backend) {
    let bus = backend.bus();
    for options in [
        partitions(0),
        partitions(TopicOptions::MAX_PARTITIONS + 1),
        TopicOptions::default().retention(Retention::messages(0)),
        TopicOptions::default().retention(Retention::bytes(0)),
        TopicOptions::default().retention(Retention::age(Duration::ZERO)),
    ] {
        let err = bus.topic_with::<u64>("t", options).unwrap_err();
        assert!(
            matches!(err, Error::InvalidOption { .. }),
            "{options:?}: {err:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Producing: receipts, offsets, partitioning
// ---------------------------------------------------------------------------------------------

both_backends!(offsets_run_from_zero_without_gaps_in_each_partition);
fn offsets_run_from_zero_without_gaps_in_each_partition(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, partitions(3));
    let p = t.producer();
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for i in 0..60u64 {
        // A mix of keyed and unkeyed records.
        let receipt = if i % 3 == 0 {
            p.send_record(Record::new(i).key(format!("k{}", i % 7)))
                .unwrap()
        } else {
            p.send(i).unwrap()
        };
        by_partition
            .entry(receipt.partition)
            .or_default()
            .push(receipt.offset);
    }
    let mut total = 0;
    for (partition, offsets) in &by_partition {
        let n = offsets.len() as u64;
        assert_eq!(
            *offsets,
            (0..n).collect::<Vec<_>>(),
            "partition {partition}"
        );
        assert_eq!(t.offsets(*partition), Some(0..n));
        total += n;
    }
    assert_eq!(total, 60);
    assert_eq!(t.retained(), 60);
}

both_backends!(subscriber_sees_each_partition_in_offset_order_matching_receipts);
fn subscriber_sees_each_partition_in_offset_order_matching_receipts(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, partitions(3));
    let p = t.producer();
    let receipts: BTreeMap<u64, Receipt> = (0..30u64).map(|i| (i, p.send(i).unwrap())).collect();

    let mut sub = t.subscribe(Start::Earliest).unwrap();
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for _ in 0..30 {
        let (partition, offset, payload) = next(&mut sub);
        let expected = receipts[&payload];
        assert_eq!(Receipt { partition, offset }, expected, "payload {payload}");
        let want = last.get(&partition).map_or(0, |o| o + 1);
        assert_eq!(offset, want, "partition {partition} out of order");
        last.insert(partition, offset);
    }
    assert_nothing_arrives(&mut sub);
}

both_backends!(unkeyed_records_go_round_robin);
fn unkeyed_records_go_round_robin(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, partitions(4));
    let p = t.producer();
    let parts: Vec<u32> = (0..12).map(|i| p.send(i).unwrap().partition).collect();
    let first: BTreeSet<u32> = parts[..4].iter().copied().collect();
    assert_eq!(
        first,
        (0..4).collect(),
        "four sends cover four partitions: {parts:?}"
    );
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(*part, parts[i % 4], "not a cycle: {parts:?}");
    }
    for partition in 0..4 {
        assert_eq!(t.offsets(partition), Some(0..3));
    }
}

both_backends!(records_with_one_key_stay_in_one_partition_in_order);
fn records_with_one_key_stay_in_one_partition_in_order(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<(String, u32)>(&bus, partitions(4));
    let p = t.producer();
    let keys = ["alice", "bob", "carol", "dave", "erin"];
    let mut partition_of: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for seq in 0..20u32 {
        for key in keys {
            let r = p
                .send_record(Record::new((key.to_owned(), seq)).key(key))
                .unwrap();
            partition_of.entry(key).or_default().insert(r.partition);
        }
    }
    for (key, parts) in &partition_of {
        assert_eq!(parts.len(), 1, "key {key} used partitions {parts:?}");
    }

    let mut sub = t.subscribe(Start::Earliest).unwrap();
    let mut seen: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for _ in 0..keys.len() * 20 {
        let m = sub.recv_timeout(WAIT).unwrap();
        let (key, seq) = m.payload().clone();
        assert_eq!(m.key(), Some(key.as_bytes()));
        assert!(partition_of[key.as_str()].contains(&m.partition()));
        seen.entry(key).or_default().push(seq);
    }
    for key in keys {
        assert_eq!(
            seen[key],
            (0..20).collect::<Vec<_>>(),
            "key {key} out of order"
        );
    }
}

both_backends!(keys_pick_partitions_by_a_stable_hash);
fn keys_pick_partitions_by_a_stable_hash(backend: Backend) {
    // Kafka's default partitioner (murmur2), per the docs: the mapping never changes.
    let bus = backend.bus();
    let t = topic::<u64>(&bus, partitions(8));
    let p = t.producer();
    for (key, partition) in [
        ("21", 4),
        ("foobar", 6),
        ("abc", 3),
        ("a-little-bit-long-string", 0),
    ] {
        let r = p.send_record(Record::new(0).key(key)).unwrap();
        assert_eq!(r.partition, partition, "key {key}");
    }
    // Another topic (and another broker) with the same partition count agrees.
    let other = backend.bus().topic_with::<u64>("u", partitions(8)).unwrap();
    let r = other
        .producer()
        .send_record(Record::new(0).key("abc"))
        .unwrap();
    assert_eq!(r.partition, 3);
}

both_backends!(many_keys_spread_over_every_partition);
fn many_keys_spread_over_every_partition(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, partitions(4));
    let p = t.producer();
    let used: BTreeSet<u32> = (0..100u64)
        .map(|i| {
            p.send_record(Record::new(i).key(format!("user-{i}")))
                .unwrap()
                .partition
        })
        .collect();
    assert_eq!(used, (0..4).collect());
}

both_backends!(key_and_headers_round_trip);
fn key_and_headers_round_trip(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<String>(&bus, partitions(2));
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    t.producer()
        .send_record(
            Record::new("order".to_owned())
                .key("customer-42")
                .header("trace-id", b"abc")
                .header("retry", [0u8, 255])
                .header("trace-id", b"second"),
        )
        .unwrap();

    let m = sub.recv_timeout(WAIT).unwrap();
    assert_eq!(m.payload(), "order");
    assert_eq!(m.key(), Some(&b"customer-42"[..]));
    let headers = m.headers();
    assert_eq!(headers.len(), 3);
    assert_eq!(
        headers.get("trace-id"),
        Some(&b"abc"[..]),
        "get returns the first"
    );
    assert_eq!(headers.get("retry"), Some(&[0u8, 255][..]));
    assert_eq!(headers.get("missing"), None);
    let all: Vec<(&str, &[u8])> = headers.iter().collect();
    assert_eq!(
        all,
        [
            ("trace-id", &b"abc"[..]),
            ("retry", &[0u8, 255][..]),
            ("trace-id", &b"second"[..]),
        ]
    );
}

both_backends!(plain_send_has_no_key_and_no_headers);
fn plain_send_has_no_key_and_no_headers(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, TopicOptions::default());
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    t.producer().send(5).unwrap();
    let m = sub.recv_timeout(WAIT).unwrap();
    assert_eq!(m.key(), None);
    assert!(m.headers().is_empty());
    assert_eq!(m.delivery_count(), 1);
}

both_backends!(send_batch_returns_one_receipt_per_message_in_order);
fn send_batch_returns_one_receipt_per_message_in_order(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, TopicOptions::default());
    let p = t.producer();
    p.send(100).unwrap();
    let receipts = p.send_batch(vec![1, 2, 3, 4]).unwrap();
    let offsets: Vec<u64> = receipts.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [1, 2, 3, 4]);
    assert!(receipts.iter().all(|r| r.partition == 0));

    let mut sub = t.subscribe(Start::Offset(1)).unwrap();
    assert_eq!(common::take(&mut sub, 4), [1, 2, 3, 4]);
}

both_backends!(send_batch_spreads_unkeyed_messages_round_robin);
fn send_batch_spreads_unkeyed_messages_round_robin(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, partitions(2));
    let receipts = t.producer().send_batch((0..6).collect()).unwrap();
    assert_eq!(receipts.len(), 6);
    let per_partition = |p| receipts.iter().filter(|r| r.partition == p).count();
    assert_eq!((per_partition(0), per_partition(1)), (3, 3));
    assert_eq!(t.offsets(0), Some(0..3));
    assert_eq!(t.offsets(1), Some(0..3));
}

both_backends!(try_send_and_send_timeout_succeed_when_there_is_room);
fn try_send_and_send_timeout_succeed_when_there_is_room(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, TopicOptions::default().overflow(Overflow::Block));
    let p = t.producer();
    assert_eq!(
        p.try_send(1).unwrap(),
        Receipt {
            partition: 0,
            offset: 0
        }
    );
    assert_eq!(
        p.send_timeout(2, BRIEF).unwrap(),
        Receipt {
            partition: 0,
            offset: 1
        }
    );
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    assert_eq!(common::take(&mut sub, 2), [1, 2]);
}

// ---------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------

both_backends!(timestamps_come_from_the_broker_clock);
fn timestamps_come_from_the_broker_clock(backend: Backend) {
    let (bus, clock) = manual_bus(backend);
    let t = topic::<u64>(&bus, partitions(2));
    let p = t.producer();
    let t0 = clock.now();
    p.send(1).unwrap();
    clock.advance(Duration::from_secs(5));
    p.send(2).unwrap();
    clock.advance(Duration::from_millis(250));
    p.send(3).unwrap();

    let mut sub = t.subscribe(Start::Earliest).unwrap();
    let mut stamps = BTreeMap::new();
    for _ in 0..3 {
        let m = sub.recv_timeout(WAIT).unwrap();
        stamps.insert(*m.payload(), m.timestamp());
    }
    assert_eq!(stamps[&1], t0);
    assert_eq!(stamps[&2], t0 + Duration::from_secs(5));
    assert_eq!(stamps[&3], t0 + Duration::from_millis(5250));
}

both_backends!(messages_sent_at_one_instant_share_its_timestamp);
fn messages_sent_at_one_instant_share_its_timestamp(backend: Backend) {
    let (bus, clock) = manual_bus(backend);
    let t = topic::<u64>(&bus, TopicOptions::default());
    t.producer().send_batch(vec![1, 2, 3]).unwrap();
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    for _ in 0..3 {
        assert_eq!(sub.recv_timeout(WAIT).unwrap().timestamp(), clock.now());
    }
}

// ---------------------------------------------------------------------------------------------
// Subscribers and start positions
// ---------------------------------------------------------------------------------------------

both_backends!(start_earliest_reads_every_retained_message);
fn start_earliest_reads_every_retained_message(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, TopicOptions::default());
    t.producer().send_batch(vec![1, 2, 3]).unwrap();
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    assert_eq!(common::take(&mut sub, 3), [1, 2, 3]);
    assert_nothing_arrives(&mut sub);
}

both_backends!(start_latest_reads_only_messages_sent_after_subscribing);
fn start_latest_reads_only_messages_sent_after_subscribing(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, partitions(2));
    let p = t.producer();
    p.send_batch(vec![1, 2, 3, 4]).unwrap();
    let mut sub = t.subscribe(Start::Latest).unwrap();
    assert_nothing_arrives(&mut sub);
    p.send_batch(vec![5, 6]).unwrap();
    let mut got = vec![next(&mut sub), next(&mut sub)];
    got.sort();
    assert_eq!(got, [(0, 2, 5), (1, 2, 6)]);
    assert_nothing_arrives(&mut sub);
}

both_backends!(start_offset_reads_from_that_offset_in_every_partition);
fn start_offset_reads_from_that_offset_in_every_partition(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, partitions(2));
    t.producer().send_batch((0..6).collect()).unwrap(); // offsets 0..3 in each partition
    let mut sub = t.subscribe(Start::Offset(1)).unwrap();
    let mut got: Vec<(u32, u64)> = (0..4)
        .map(|_| {
            let (p, o, _) = next(&mut sub);
            (p, o)
        })
        .collect();
    got.sort();
    assert_eq!(got, [(0, 1), (0, 2), (1, 1), (1, 2)]);
    assert_nothing_arrives(&mut sub);
}

both_backends!(start_offset_beyond_the_end_starts_at_the_end);
fn start_offset_beyond_the_end_starts_at_the_end(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, TopicOptions::default());
    let p = t.producer();
    p.send_batch(vec![1, 2]).unwrap();
    let mut sub = t.subscribe(Start::Offset(100)).unwrap();
    assert_nothing_arrives(&mut sub);
    p.send(3).unwrap();
    assert_eq!(next(&mut sub), (0, 2, 3));
}

both_backends!(start_offset_below_retention_reports_lagged_first);
fn start_offset_below_retention_reports_lagged_first(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(
        &bus,
        TopicOptions::default().retention(Retention::messages(3)),
    );
    t.producer().send_batch((0..5).collect()).unwrap(); // retains offsets 2..5
    let mut sub = t.subscribe(Start::Offset(0)).unwrap();
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Lagged { skipped: 2 }
    );
    assert_eq!(common::take(&mut sub, 3), [2, 3, 4]);
    assert_empty(&mut sub);
}

both_backends!(start_time_reads_from_the_first_message_at_or_after_that_time);
fn start_time_reads_from_the_first_message_at_or_after_that_time(backend: Backend) {
    let (bus, clock) = manual_bus(backend);
    let t = topic::<u64>(&bus, TopicOptions::default());
    let p = t.producer();
    let t0 = clock.now();
    p.send(1).unwrap(); // t0
    clock.advance(Duration::from_secs(10));
    p.send_batch(vec![2, 3]).unwrap(); // t0 + 10s
    clock.advance(Duration::from_secs(10));
    p.send(4).unwrap(); // t0 + 20s

    let from = |time| {
        let mut sub = t.subscribe(Start::Time(time)).unwrap();
        let mut got = Vec::new();
        while let Ok(m) = sub.try_recv() {
            got.push(*m.payload());
        }
        got
    };
    assert_eq!(from(t0), [1, 2, 3, 4]);
    assert_eq!(from(t0 + Duration::from_secs(5)), [2, 3, 4]);
    assert_eq!(from(t0 + Duration::from_secs(10)), [2, 3, 4], "at counts");
    assert_eq!(from(t0 + Duration::from_nanos(10_000_000_001)), [4]);
    assert_eq!(from(t0 + Duration::from_secs(30)), Vec::<u64>::new());
}

both_backends!(start_time_after_every_message_reads_new_messages);
fn start_time_after_every_message_reads_new_messages(backend: Backend) {
    let (bus, clock) = manual_bus(backend);
    let t = topic::<u64>(&bus, TopicOptions::default());
    let p = t.producer();
    p.send(1).unwrap();
    let mut sub = t
        .subscribe(Start::Time(clock.now() + Duration::from_secs(60)))
        .unwrap();
    assert_nothing_arrives(&mut sub);
    p.send(2).unwrap();
    assert_eq!(next(&mut sub), (0, 1, 2));
}

both_backends!(every_subscriber_sees_every_message);
fn every_subscriber_sees_every_message(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, partitions(3));
    let mut subs = vec![t.subscribe(Start::Earliest).unwrap()];
    subs.extend((0..3).map(|_| t.subscribe(Start::Latest).unwrap()));
    t.producer().send_batch((0..30).collect()).unwrap();
    subs.push(t.subscribe(Start::Earliest).unwrap()); // subscribes after the sends
    for (i, sub) in subs.iter_mut().enumerate() {
        let mut got = common::take(sub, 30);
        got.sort_unstable();
        assert_eq!(got, (0..30).collect::<Vec<_>>(), "subscriber {i}");
        assert_nothing_arrives(sub);
    }
}

both_backends!(subscriber_wakes_for_messages_sent_from_another_thread);
fn subscriber_wakes_for_messages_sent_from_another_thread(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, partitions(2));
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    let producer = thread::spawn(move || {
        for i in 0..200 {
            p.send(i).unwrap();
        }
    });
    let mut got = common::take(&mut sub, 200);
    producer.join().unwrap();
    // Round-robin: evens in partition 0, odds in partition 1, each in send order.
    let evens: Vec<u64> = got.iter().copied().filter(|i| i % 2 == 0).collect();
    let odds: Vec<u64> = got.iter().copied().filter(|i| i % 2 == 1).collect();
    assert_eq!(evens, (0..200).step_by(2).collect::<Vec<_>>());
    assert_eq!(odds, (1..200).step_by(2).collect::<Vec<_>>());
    got.sort_unstable();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

both_backends!(nack_and_drop_do_not_redeliver_to_a_subscriber);
fn nack_and_drop_do_not_redeliver_to_a_subscriber(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, TopicOptions::default());
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    t.producer().send_batch(vec![1, 2, 3]).unwrap();
    sub.recv_timeout(WAIT).unwrap().nack().unwrap();
    drop(sub.recv_timeout(WAIT).unwrap());
    let third = sub.recv_timeout(WAIT).unwrap();
    assert_eq!((*third.payload(), third.delivery_count()), (3, 1));
    assert_nothing_arrives(&mut sub);
}

both_backends!(subscriber_lag_counts_messages_not_yet_received);
fn subscriber_lag_counts_messages_not_yet_received(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, partitions(2));
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    assert_eq!(sub.lag(), 0);
    t.producer().send_batch((0..5).collect()).unwrap();
    assert_eq!(sub.lag(), 5);
    common::take(&mut sub, 2);
    assert_eq!(sub.lag(), 3);
    common::take(&mut sub, 3);
    assert_eq!(sub.lag(), 0);
}

both_backends!(subscriber_lag_counts_only_retained_messages);
fn subscriber_lag_counts_only_retained_messages(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(
        &bus,
        TopicOptions::default().retention(Retention::messages(3)),
    );
    let sub = t.subscribe(Start::Earliest).unwrap();
    t.producer().send_batch((0..10).collect()).unwrap();
    // "Retained messages past its position": seven were trimmed, three are left to read.
    assert_eq!(sub.lag(), 3);
}

both_backends!(subscriber_reads_every_partition);
fn subscriber_reads_every_partition(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, partitions(3));
    let sub = t.subscribe(Start::Latest).unwrap();
    assert_eq!(sub.partitions(), [0, 1, 2]);
}

// ---------------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------------

both_backends!(count_retention_keeps_the_newest_messages);
fn count_retention_keeps_the_newest_messages(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(
        &bus,
        TopicOptions::default().retention(Retention::messages(3)),
    );
    let receipts = t.producer().send_batch((0..5).collect()).unwrap();
    assert_eq!(
        receipts.last().unwrap().offset,
        4,
        "trimming never reuses offsets"
    );
    assert_eq!(t.offsets(0), Some(2..5));
    assert_eq!(t.retained(), 3);
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    assert_eq!(common::take(&mut sub, 3), [2, 3, 4]);
    assert_empty(&mut sub);
}

both_backends!(count_retention_applies_per_partition);
fn count_retention_applies_per_partition(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(&bus, partitions(2).retention(Retention::messages(2)));
    t.producer().send_batch((0..10).collect()).unwrap(); // five per partition
    assert_eq!(t.offsets(0), Some(3..5));
    assert_eq!(t.offsets(1), Some(3..5));
    assert_eq!(t.retained(), 4);
}

both_backends!(byte_retention_trims_the_oldest_beyond_the_limit);
fn byte_retention_trims_the_oldest_beyond_the_limit(backend: Backend) {
    let bus = backend.bus();
    // A 9-character string encodes to 10 bytes (bincode: length prefix + bytes).
    let t = topic::<String>(
        &bus,
        TopicOptions::default().retention(Retention::bytes(30)),
    );
    let p = t.producer();
    for i in 0..3 {
        p.send(format!("message-{i}")).unwrap();
    }
    assert_eq!(t.offsets(0), Some(0..3), "30 bytes fit exactly");
    p.send("message-3".to_owned()).unwrap();
    p.send("message-4".to_owned()).unwrap();
    assert_eq!(t.offsets(0), Some(2..5));
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    assert_eq!(
        common::take(&mut sub, 3),
        ["message-2", "message-3", "message-4"]
    );
    assert_empty(&mut sub);
}

both_backends!(byte_retention_counts_keys);
fn byte_retention_counts_keys(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u8>(
        &bus,
        TopicOptions::default().retention(Retention::bytes(20)),
    );
    let p = t.producer();
    // 1 payload byte + a 9-byte key: 10 bytes each, so two fit.
    for i in 0..4u8 {
        p.send_record(Record::new(i).key(format!("key-{i:05}")))
            .unwrap();
    }
    assert_eq!(t.offsets(0), Some(2..4));
}

both_backends!(byte_retention_counts_headers);
fn byte_retention_counts_headers(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u8>(
        &bus,
        TopicOptions::default().retention(Retention::bytes(20)),
    );
    let p = t.producer();
    // 1 payload byte + a 4-byte header name + a 5-byte value: 10 bytes each, so two fit.
    for i in 0..4u8 {
        p.send_record(Record::new(i).header("name", b"value"))
            .unwrap();
    }
    assert_eq!(t.offsets(0), Some(2..4));
}

both_backends!(byte_retention_without_keys_or_headers_keeps_more);
fn byte_retention_without_keys_or_headers_keeps_more(backend: Backend) {
    // The control for the two tests above: 1-byte payloads alone, twenty fit in 20 bytes.
    let bus = backend.bus();
    let t = topic::<u8>(
        &bus,
        TopicOptions::default().retention(Retention::bytes(20)),
    );
    t.producer().send_batch((0..25).collect()).unwrap();
    assert_eq!(t.offsets(0), Some(5..25));
}

both_backends!(age_retention_trims_messages_older_than_max_age);
fn age_retention_trims_messages_older_than_max_age(backend: Backend) {
    let (bus, clock) = manual_bus(backend);
    let t = topic::<u64>(
        &bus,
        TopicOptions::default().retention(Retention::age(Duration::from_secs(10))),
    );
    let p = t.producer();
    p.send(1).unwrap(); // t0
    clock.advance(Duration::from_secs(6));
    p.send(2).unwrap(); // t0 + 6s
    clock.advance(Duration::from_secs(5)); // message 1 is 11s old, message 2 is 5s old
    p.send(3).unwrap();
    assert_eq!(t.offsets(0), Some(1..3));
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    assert_eq!(common::take(&mut sub, 2), [2, 3]);
    assert_empty(&mut sub);
}

both_backends!(age_retention_keeps_messages_younger_than_max_age);
fn age_retention_keeps_messages_younger_than_max_age(backend: Backend) {
    let (bus, clock) = manual_bus(backend);
    let t = topic::<u64>(
        &bus,
        TopicOptions::default().retention(Retention::age(Duration::from_secs(10))),
    );
    let p = t.producer();
    p.send(1).unwrap();
    clock.advance(Duration::from_secs(9));
    p.send(2).unwrap();
    assert_eq!(t.offsets(0), Some(0..2), "9s old is within 10s");
    clock.advance(Duration::from_secs(2));
    p.send(3).unwrap();
    assert_eq!(t.offsets(0), Some(1..3), "11s old is past 10s");
}

both_backends!(expired_messages_are_not_delivered_to_a_new_subscriber);
fn expired_messages_are_not_delivered_to_a_new_subscriber(backend: Backend) {
    let (bus, clock) = manual_bus(backend);
    let t = topic::<u64>(
        &bus,
        TopicOptions::default().retention(Retention::age(Duration::from_secs(10))),
    );
    t.producer().send_batch(vec![1, 2]).unwrap();
    clock.advance(Duration::from_secs(11));
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    // Start::Earliest is "the oldest retained message": nothing is retained, nothing was missed.
    assert_empty(&mut sub);
    t.producer().send(3).unwrap();
    assert_eq!(next(&mut sub), (0, 2, 3));
}

both_backends!(start_time_before_expired_messages_starts_at_the_oldest_retained);
fn start_time_before_expired_messages_starts_at_the_oldest_retained(backend: Backend) {
    let (bus, clock) = manual_bus(backend);
    let t = topic::<u64>(
        &bus,
        TopicOptions::default().retention(Retention::age(Duration::from_secs(10))),
    );
    let t0 = clock.now();
    let p = t.producer();
    p.send(1).unwrap();
    clock.advance(Duration::from_secs(6));
    p.send(2).unwrap();
    clock.advance(Duration::from_secs(5)); // 1 expires, 2 does not
    let mut sub = t.subscribe(Start::Time(t0)).unwrap();
    assert_eq!(next(&mut sub), (0, 1, 2));
    assert_empty(&mut sub);
}

both_backends!(expired_messages_leave_the_retained_offsets_once_the_clock_passes_them);
fn expired_messages_leave_the_retained_offsets_once_the_clock_passes_them(backend: Backend) {
    let (bus, clock) = manual_bus(backend);
    let t = topic::<u64>(
        &bus,
        TopicOptions::default().retention(Retention::age(Duration::from_secs(10))),
    );
    t.producer().send_batch(vec![1, 2]).unwrap();
    clock.advance(Duration::from_secs(11));
    assert_eq!(t.retained(), 0);
    assert_eq!(t.offsets(0), Some(2..2));
}

both_backends!(subscriber_that_did_not_read_before_expiry_lags_past_expired_messages);
fn subscriber_that_did_not_read_before_expiry_lags_past_expired_messages(backend: Backend) {
    let (bus, clock) = manual_bus(backend);
    let t = topic::<u64>(
        &bus,
        TopicOptions::default().retention(Retention::age(Duration::from_secs(10))),
    );
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    p.send_batch(vec![1, 2]).unwrap();
    clock.advance(Duration::from_secs(6));
    p.send(3).unwrap();
    clock.advance(Duration::from_secs(5)); // 1 and 2 expire; 3 does not
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Lagged { skipped: 2 }
    );
    assert_eq!(next(&mut sub), (0, 2, 3));
    assert_empty(&mut sub);
}

// ---------------------------------------------------------------------------------------------
// Overflow::Lag
// ---------------------------------------------------------------------------------------------

fn lag_topic(bus: &Broker, keep: u64) -> Topic<u64> {
    topic(
        bus,
        TopicOptions::default()
            .retention(Retention::messages(keep))
            .overflow(Overflow::Lag),
    )
}

#[test]
fn lag_is_the_default_overflow() {
    assert_eq!(TopicOptions::default().overflow_policy(), Overflow::Lag);
}

both_backends!(lag_reports_lagged_once_then_continues_from_the_oldest_retained);
fn lag_reports_lagged_once_then_continues_from_the_oldest_retained(backend: Backend) {
    let bus = backend.bus();
    let t = lag_topic(&bus, 3);
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    p.send_batch((0..10).collect()).unwrap(); // retains 7, 8, 9
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Lagged { skipped: 7 }
    );
    assert_eq!(
        next(&mut sub),
        (0, 7, 7),
        "continues from the oldest retained"
    );
    assert_eq!(next(&mut sub), (0, 8, 8));
    assert_eq!(next(&mut sub), (0, 9, 9));
    assert_empty(&mut sub);
    p.send(10).unwrap();
    assert_eq!(next(&mut sub), (0, 10, 10), "no second Lagged");
}

both_backends!(lag_is_reported_by_blocking_recv_too);
fn lag_is_reported_by_blocking_recv_too(backend: Backend) {
    let bus = backend.bus();
    let t = lag_topic(&bus, 2);
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    t.producer().send_batch((0..5).collect()).unwrap();
    assert_eq!(sub.recv().unwrap_err(), RecvError::Lagged { skipped: 3 });
    assert_eq!(*sub.recv().unwrap().payload(), 3);
}

both_backends!(lag_never_blocks_the_producer);
fn lag_never_blocks_the_producer(backend: Backend) {
    let bus = backend.bus();
    let t = lag_topic(&bus, 2);
    let _idle = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    for i in 0..10 {
        p.try_send(i).unwrap();
    }
    assert_eq!(t.offsets(0), Some(8..10));
}

both_backends!(lagging_subscriber_does_not_affect_a_subscriber_that_keeps_up);
fn lagging_subscriber_does_not_affect_a_subscriber_that_keeps_up(backend: Backend) {
    let bus = backend.bus();
    let t = lag_topic(&bus, 2);
    let mut slow = t.subscribe(Start::Earliest).unwrap();
    let mut fast = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    for i in 0..6 {
        p.send(i).unwrap();
        assert_eq!(next(&mut fast), (0, i, i));
    }
    assert_eq!(
        slow.recv_timeout(WAIT).unwrap_err(),
        RecvTimeoutError::Lagged { skipped: 4 }
    );
    assert_eq!(common::take(&mut slow, 2), [4, 5]);
}

both_backends!(lag_across_partitions_reports_every_skipped_message);
fn lag_across_partitions_reports_every_skipped_message(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(
        &bus,
        partitions(2)
            .retention(Retention::messages(2))
            .overflow(Overflow::Lag),
    );
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    t.producer().send_batch((0..10).collect()).unwrap(); // retains 6, 8 and 7, 9
    let mut skipped = 0;
    let mut got = Vec::new();
    for item in sub.try_iter() {
        match item {
            Ok(m) => got.push(*m.payload()),
            Err(RecvError::Lagged { skipped: n }) => skipped += n,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(skipped, 6);
    got.sort_unstable();
    assert_eq!(got, [6, 7, 8, 9]);
}

both_backends!(try_iter_yields_lagged_and_keeps_going);
fn try_iter_yields_lagged_and_keeps_going(backend: Backend) {
    let bus = backend.bus();
    let t = lag_topic(&bus, 3);
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    t.producer().send_batch((0..10).collect()).unwrap();
    let got: Vec<Result<u64, RecvError>> =
        sub.try_iter().map(|m| m.map(|m| *m.payload())).collect();
    assert_eq!(
        got,
        [Err(RecvError::Lagged { skipped: 7 }), Ok(7), Ok(8), Ok(9)]
    );
}

// ---------------------------------------------------------------------------------------------
// Overflow::Block
// ---------------------------------------------------------------------------------------------

fn block_topic(bus: &Broker, keep: u64) -> Topic<u64> {
    topic(
        bus,
        TopicOptions::default()
            .retention(Retention::messages(keep))
            .overflow(Overflow::Block),
    )
}

both_backends!(block_try_send_returns_full_with_the_message);
fn block_try_send_returns_full_with_the_message(backend: Backend) {
    let bus = backend.bus();
    let t = block_topic(&bus, 2);
    let _slow = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    p.send_batch(vec![0, 1]).unwrap();
    match p.try_send(2) {
        Err(TrySendError::Full(msg)) => assert_eq!(msg, 2),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(t.offsets(0), Some(0..2), "nothing trimmed, nothing added");
}

both_backends!(block_send_timeout_times_out_with_the_message);
fn block_send_timeout_times_out_with_the_message(backend: Backend) {
    let bus = backend.bus();
    let t = block_topic(&bus, 2);
    let _slow = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    p.send_batch(vec![0, 1]).unwrap();
    match p.send_timeout(2, BRIEF) {
        Err(SendTimeoutError::Timeout(msg)) => assert_eq!(msg, 2),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(t.offsets(0), Some(0..2));
}

both_backends!(block_send_completes_once_the_subscriber_reads);
fn block_send_completes_once_the_subscriber_reads(backend: Backend) {
    let bus = backend.bus();
    let t = block_topic(&bus, 2);
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    p.send_batch(vec![0, 1]).unwrap();

    let (done, sent) = mpsc::channel();
    let producer = thread::spawn(move || done.send(p.send(2).map_err(|e| e.into_inner())).unwrap());
    assert!(
        matches!(
            sent.recv_timeout(BRIEF),
            Err(mpsc::RecvTimeoutError::Timeout)
        ),
        "send should wait while the subscriber holds the topic full"
    );

    assert_eq!(next(&mut sub), (0, 0, 0));
    let receipt = sent.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(
        receipt,
        Receipt {
            partition: 0,
            offset: 2
        }
    );
    producer.join().unwrap();
    // Nothing was skipped.
    assert_eq!(next(&mut sub), (0, 1, 1));
    assert_eq!(next(&mut sub), (0, 2, 2));
}

both_backends!(block_keeps_memory_bounded_and_loses_nothing);
fn block_keeps_memory_bounded_and_loses_nothing(backend: Backend) {
    let bus = backend.bus();
    let t = block_topic(&bus, 4);
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    let producer = thread::spawn(move || {
        for i in 0..500 {
            p.send(i).unwrap();
        }
    });
    for i in 0..500 {
        let m = sub.recv_timeout(WAIT).unwrap();
        assert_eq!((m.offset(), *m.payload()), (i, i));
        assert!(t.retained() <= 4, "retained {} > 4", t.retained());
    }
    producer.join().unwrap();
    assert_empty(&mut sub);
}

both_backends!(block_waits_for_every_subscriber);
fn block_waits_for_every_subscriber(backend: Backend) {
    let bus = backend.bus();
    let t = block_topic(&bus, 2);
    let mut a = t.subscribe(Start::Earliest).unwrap();
    let mut b = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    p.send_batch(vec![0, 1]).unwrap();
    assert_eq!(common::take(&mut a, 2), [0, 1]);
    assert!(p.try_send(2).unwrap_err().is_full(), "b has not read yet");
    assert_eq!(next(&mut b).2, 0);
    assert_eq!(p.try_send(2).unwrap().offset, 2);
}

both_backends!(block_stops_waiting_for_a_dropped_subscriber);
fn block_stops_waiting_for_a_dropped_subscriber(backend: Backend) {
    let bus = backend.bus();
    let t = block_topic(&bus, 2);
    let slow = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    p.send_batch(vec![0, 1]).unwrap();
    assert!(p.try_send(2).unwrap_err().is_full());
    drop(slow);
    assert_eq!(p.try_send(2).unwrap().offset, 2);
    assert_eq!(t.offsets(0), Some(1..3));
}

both_backends!(block_without_readers_trims_like_retention);
fn block_without_readers_trims_like_retention(backend: Backend) {
    let bus = backend.bus();
    let t = block_topic(&bus, 3);
    let p = t.producer();
    for i in 0..10 {
        p.try_send(i).unwrap();
    }
    assert_eq!(t.offsets(0), Some(7..10));
}

both_backends!(block_keeps_expired_messages_a_subscriber_still_needs);
fn block_keeps_expired_messages_a_subscriber_still_needs(backend: Backend) {
    let (bus, clock) = manual_bus(backend);
    let t = topic::<u64>(
        &bus,
        TopicOptions::default()
            .retention(Retention::age(Duration::from_secs(10)))
            .overflow(Overflow::Block),
    );
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    t.producer().send_batch(vec![1, 2]).unwrap();
    clock.advance(Duration::from_secs(60));
    // Under Block nothing is skipped: age alone does not take what a reader has not read.
    assert_eq!(next(&mut sub), (0, 0, 1));
    assert_eq!(next(&mut sub), (0, 1, 2));
}

both_backends!(block_applies_per_partition);
fn block_applies_per_partition(backend: Backend) {
    let bus = backend.bus();
    let t = topic::<u64>(
        &bus,
        partitions(2)
            .retention(Retention::messages(1))
            .overflow(Overflow::Block),
    );
    let _slow = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    let first = p.try_send(0).unwrap();
    // Round-robin sends the next one to the other partition, which still has room.
    let second = p.try_send(1).unwrap();
    assert_ne!(first.partition, second.partition);
    assert!(p.try_send(2).unwrap_err().is_full());
    assert_eq!(t.retained(), 2);
}

both_backends!(send_batch_waits_for_room_under_block_and_keeps_order_per_partition);
fn send_batch_waits_for_room_under_block_and_keeps_order_per_partition(backend: Backend) {
    let bus = backend.bus();
    let options = TopicOptions::default()
        .partitions(2)
        .retention(Retention::messages(2))
        .overflow(Overflow::Block);
    let t = bus.topic_with::<u64>("t", options).unwrap();
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    let sender = std::thread::spawn(move || p.send_batch((0..20).collect()).unwrap());
    let mut got: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for _ in 0..20 {
        let m = sub.recv_timeout(WAIT).unwrap();
        got.entry(m.partition())
            .or_default()
            .push((m.offset(), *m.payload()));
    }
    let receipts = sender.join().unwrap();
    assert_eq!(receipts.len(), 20);
    for (partition, messages) in &got {
        let offsets: Vec<u64> = messages.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as u64).collect::<Vec<_>>(),
            "partition {partition}"
        );
        assert!(
            messages.windows(2).all(|w| w[0].1 < w[1].1),
            "payloads in send order"
        );
    }
    for (i, r) in receipts.iter().enumerate() {
        let (offset, payload) = got[&r.partition][r.offset as usize];
        assert_eq!(
            (offset, payload),
            (r.offset, i as u64),
            "receipt {i} points at its message"
        );
    }
}

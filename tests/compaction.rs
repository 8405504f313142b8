//! Compacted topics (`TopicOptions::compaction`): readers from `Earliest` see every key's
//! latest value, offsets keep their gaps, records need a key, memory and the file stay bounded
//! under churn on a fixed key set, in both modes and across a reopen.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Backend, WAIT, both_backends};
use embus::{
    Broker, Consumer, Error, Record, Retention, SendError, Start, Topic, TopicOptions, TryRecvError,
};

const KEYS: u32 = 100;

fn compacted(partitions: u32) -> TopicOptions {
    TopicOptions::default()
        .partitions(partitions)
        .compaction(true)
}

fn key(k: u32) -> String {
    format!("key-{k:03}")
}

/// `rounds` rounds of one message per key (`round * 1000 + key`), one batch per round.
fn churn(topic: &Topic<u64>, from_round: u32, rounds: u32) {
    let producer = topic.producer();
    for round in from_round..from_round + rounds {
        let batch = (0..KEYS)
            .map(|k| Record::new(u64::from(round) * 1000 + u64::from(k)).key(key(k)))
            .collect();
        producer.send_record_batch(batch).unwrap();
    }
}

/// Everything a reader gets now: key -> payloads in order, and how many messages it read.
fn drain(reader: &mut Consumer<u64>) -> (BTreeMap<String, Vec<u64>>, usize) {
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut read = 0;
    let mut last_offsets = BTreeMap::new();
    loop {
        match reader.try_recv() {
            Ok(m) => {
                read += 1;
                // Offsets rise per partition, with gaps where compaction removed messages.
                if let Some(last) = last_offsets.insert(m.partition(), m.offset()) {
                    assert!(
                        m.offset() > last,
                        "offsets go back: {last} then {}",
                        m.offset()
                    );
                }
                let k = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                seen.entry(k).or_default().push(*m.payload());
                m.ack().unwrap();
            }
            Err(TryRecvError::Empty) => return (seen, read),
            Err(e) => panic!("{e}"),
        }
    }
}

/// Checks that every key's last value seen is the one of round `last_round`.
#[track_caller]
fn assert_latest(seen: &BTreeMap<String, Vec<u64>>, last_round: u32) {
    assert_eq!(seen.len(), KEYS as usize, "every key is there");
    for k in 0..KEYS {
        let values = &seen[&key(k)];
        assert_eq!(
            values.last(),
            Some(&(u64::from(last_round) * 1000 + u64::from(k))),
            "key {k}: {values:?}"
        );
        assert!(
            values.is_sorted(),
            "key {k} values out of order: {values:?}"
        );
    }
}

both_backends!(a_reader_from_earliest_sees_the_latest_value_of_every_key);
fn a_reader_from_earliest_sees_the_latest_value_of_every_key(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic_with::<u64>("prices", compacted(2)).unwrap();
    let rounds = 100;
    churn(&topic, 0, rounds);
    let mut reader = topic.subscribe(Start::Earliest).unwrap();
    let (seen, read) = drain(&mut reader);
    assert_latest(&seen, rounds - 1);
    let sent = (KEYS * rounds) as usize;
    // What is left of 10,000 messages on 100 keys: the latest values, and what the last
    // passes (each due once a segment's worth was superseded) did not reach yet.
    assert!(read < 1_000, "{read} of {sent} messages were still there");
    // A reader that was there before the churn sees it all, in order, as values pass.
    let mut early = topic.subscribe(Start::Latest).unwrap();
    churn(&topic, rounds, 3);
    let (seen, read) = drain(&mut early);
    assert_eq!(read, 3 * KEYS as usize);
    assert_latest(&seen, rounds + 2);
}

both_backends!(a_group_skips_compacted_messages_and_acks_the_rest);
fn a_group_skips_compacted_messages_and_acks_the_rest(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic_with::<u64>("prices", compacted(2)).unwrap();
    // A group that exists before the churn, and has not read yet: its position is behind
    // messages that compaction removes.
    drop(topic.join_group("billing").unwrap());
    churn(&topic, 0, 50);
    let mut member = topic.join_group("billing").unwrap();
    let (seen, read) = drain(&mut member);
    assert_latest(&seen, 49);
    assert!(read < (KEYS * 50) as usize, "nothing was compacted: {read}");
    bus.wait_idle(WAIT).unwrap(); // the group is caught up: acks moved its position
    drop(member);
    // A group that joins later starts at `Earliest` and sees the latest values too.
    let mut late = topic.join_group("late").unwrap();
    let (seen, _) = drain(&mut late);
    assert_latest(&seen, 49);
    bus.wait_idle(WAIT).unwrap();
}

both_backends!(a_record_without_a_key_is_refused_and_handed_back);
fn a_record_without_a_key_is_refused_and_handed_back(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic_with::<u64>("prices", compacted(1)).unwrap();
    let producer = topic.producer();
    match producer.send(7) {
        Err(SendError::Failed(7, Error::KeyRequired { topic })) => assert_eq!(topic, "prices"),
        other => panic!("{other:?}"),
    }
    let batch = vec![Record::new(1).key("a"), Record::new(2)];
    match producer.send_record_batch(batch) {
        Err(SendError::Failed(back, Error::KeyRequired { .. })) => assert_eq!(back.len(), 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        topic.offsets(0),
        Some(0..0),
        "nothing of the batch was stored"
    );
    producer.send_record(Record::new(3).key("a")).unwrap();
}

#[test]
fn retention_limits_contradict_compaction() {
    let bus = Broker::memory();
    let options = compacted(1).retention(Retention::messages(10));
    common::expect_invalid_option(
        bus.topic_with::<u64>("prices", options),
        "prices",
        "retention",
    );
    // `compaction(true)` sets unlimited retention; the default topic is not compacted.
    assert_eq!(compacted(1).retention_limits(), Retention::unlimited());
    assert!(!TopicOptions::default().is_compacted());
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// The file stops growing under churn on a fixed key set, and stays so across a reopen (the
/// key index is on disk: rows written before the reopen are compacted after it).
#[test]
fn the_file_stops_growing_under_churn_and_across_a_reopen() {
    let dir = common::fresh_dir("compaction-file");
    let path = dir.join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    let topic = bus.topic_with::<u64>("prices", compacted(2)).unwrap();
    let mut sizes = Vec::new();
    for step in 0..8 {
        churn(&topic, step * 25, 25);
        bus.flush().unwrap();
        sizes.push(file_size(&path));
    }
    eprintln!("file size every 25 rounds of {KEYS} keys: {sizes:?}");
    let settled = sizes[2];
    let slack = 256 * 1024;
    assert!(
        sizes[2..].iter().all(|s| *s <= settled + slack),
        "the file kept growing: {sizes:?}"
    );
    drop(topic);
    bus.close().unwrap();

    let bus = Broker::open(&path).unwrap();
    let topic = bus.topic_with::<u64>("prices", compacted(2)).unwrap();
    let mut reader = topic.subscribe(Start::Earliest).unwrap();
    let (seen, read) = drain(&mut reader);
    assert_latest(&seen, 199);
    assert_eq!(read, KEYS as usize, "only the latest values are stored");
    for step in 8..12 {
        churn(&topic, step * 25, 25);
        bus.flush().unwrap();
        sizes.push(file_size(&path));
    }
    eprintln!("after the reopen: {:?}", &sizes[8..]);
    assert!(
        sizes[8..].iter().all(|s| *s <= settled + slack),
        "the file kept growing after a reopen: {sizes:?}"
    );
    drop((reader, topic));
    bus.close().unwrap();

    let bus = Broker::open(&path).unwrap();
    let topic = bus.topic_with::<u64>("prices", compacted(2)).unwrap();
    let mut reader = topic.subscribe(Start::Earliest).unwrap();
    let (seen, read) = drain(&mut reader);
    assert_latest(&seen, 299);
    assert_eq!(
        read, KEYS as usize,
        "rows from before the reopen were compacted too"
    );
    drop((reader, topic));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A durable reader below the in-memory tail reads the gaps back from the store: a group whose
/// position is old, after a reopen, sees every key's latest value once.
#[test]
fn a_group_reads_a_compacted_store_back_after_a_reopen() {
    let dir = common::fresh_dir("compaction-group-reopen");
    let path = dir.join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    let topic = bus.topic_with::<u64>("prices", compacted(1)).unwrap();
    let mut member = topic.join_group("billing").unwrap();
    churn(&topic, 0, 5);
    let (seen, _) = drain(&mut member);
    assert_latest(&seen, 4);
    drop(member);
    // Enough to leave memory (the hot tail holds about 8,192 messages per partition).
    churn(&topic, 5, 120);
    drop(topic);
    bus.close().unwrap();

    let bus = Broker::open(&path).unwrap();
    let topic = bus.topic_with::<u64>("prices", compacted(1)).unwrap();
    let mut member = topic.join_group("billing").unwrap();
    let (seen, read) = drain(&mut member);
    assert_latest(&seen, 124);
    assert_eq!(read, KEYS as usize);
    bus.wait_idle(WAIT).unwrap();
    drop((member, topic));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

// A reader holding a message pins its segment: compaction leaves that segment for a later
// pass, and the reader still sees what it holds.
both_backends!(a_held_message_is_not_compacted_under_it);
fn a_held_message_is_not_compacted_under_it(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic_with::<u64>("prices", compacted(1)).unwrap();
    churn(&topic, 0, 1);
    let mut reader = topic.subscribe(Start::Earliest).unwrap();
    let held = reader.recv_timeout(WAIT).unwrap();
    churn(&topic, 1, 30);
    assert_eq!(*held.payload(), 0);
    let (seen, _) = drain(&mut reader);
    assert_eq!(seen.len(), KEYS as usize);
    assert_eq!(seen[&key(1)].last(), Some(&(30 * 1000 + 1)));
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

/// Figures, not a check: memory of a memory-mode compacted topic under churn on 100 keys
/// (`cargo test --release --test compaction -- --ignored --nocapture`).
#[test]
#[ignore = "prints figures"]
fn memory_figures_under_churn() {
    let bus = Broker::memory();
    let topic = bus.topic_with::<Vec<u8>>("prices", compacted(1)).unwrap();
    let producer = topic.producer();
    let mut figures = Vec::new();
    for round in 0..30_000u32 {
        let batch = (0..KEYS)
            .map(|k| Record::new(vec![round as u8; 200]).key(key(k)))
            .collect();
        producer.send_record_batch(batch).unwrap();
        if round % 3_000 == 2_999 {
            figures.push((u64::from(round + 1) * u64::from(KEYS), rss_kib()));
        }
    }
    eprintln!("(messages sent, RSS KiB) with 100 keys, 200-byte payloads: {figures:?}");
}

/// Figures, not a check: keyed sends one by one to a compacted topic and to a plain one with
/// unlimited retention, memory mode.
#[test]
#[ignore = "prints figures"]
fn send_rate_figures() {
    let n = 1_000_000u64;
    for options in [
        TopicOptions::default().retention(Retention::unlimited()),
        compacted(1),
    ] {
        let bus = Broker::memory();
        let producer = bus.topic_with::<u64>("t", options).unwrap().producer();
        let keys: Vec<String> = (0..KEYS).map(key).collect();
        let started = std::time::Instant::now();
        for i in 0..n {
            let k = &keys[(i % u64::from(KEYS)) as usize];
            producer.send_record(Record::new(i).key(k)).unwrap();
        }
        let rate = n as f64 / started.elapsed().as_secs_f64() / 1e6;
        eprintln!("compacted {}: {rate:.2} M sends/s", options.is_compacted());
    }
}

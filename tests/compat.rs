//! Stores written by earlier builds open and read back in full; a declaration that cannot be
//! read is `Error::Corrupt` naming the file, never a misleading `Mismatch`.
//!
//! `fixtures/v1.embus` was written by format version 1 (the build before the codec became
//! selectable, commit 696a77d) with a small program: a topic `orders` of `Order` (2 partitions,
//! retention 100) holding six keyed records with a header each, group `billing` acked one
//! message per partition; a queue `jobs` of `String` (capacity 50, `max_deliveries(2)`,
//! dead-letter queue `jobs.dead`) holding `job-3` delivered once, with `job-1` (dropped) and
//! `job-2` (nacked) dead-lettered.
//!
//! `fixtures/v4.embus` was written by format version 4 (commit e0eefc8, the last build before
//! embus's tables took the `embus.` prefix) with a small program: topic `orders` as above
//! (six keyed records `c0`/`c1` with a `trace` header, group `billing` acked offset 0 of both
//! partitions); a compacted topic `prices` of `u64` holding `apple` 1, `pear` 2, `apple` 3,
//! `plum` 4, `pear` 5 (so `apple` 3, `plum` 4 and `pear` 5 are left); a queue `jobs` of
//! `String` (capacity 50, `max_deliveries(5)`, dead-letter queue `jobs.dead`) where `job-1`
//! was acked, `job-2` was in flight (delivered once) when the broker closed, and `job-3` was
//! never delivered.
//!
//! `fixtures/v5.embus` was written by format version 5 (commit c7a2827, the last build whose
//! dedupe id rows kept no order) with a small program on a `ManualClock` (from its start,
//! 2026-01-01): a topic `events` of `u32` (2 partitions, `Dedupe::last(3)`) where ids `a` to
//! `e` were sent one second apart, with payloads 0 to 4 and keys `k0` to `k4` (`a`, `b`, `c`
//! went to partition 1 at offsets 0 to 2, `d`, `e` to partition 0 at offsets 0 and 1; the
//! file keeps the rows of `b`, which had left the window, to `e`); then a queue `jobs` of
//! `String` (`Dedupe::within(60 s)`) where `job-x` (id `x`) was sent at +5 s and `job-y` (id
//! `y`) at +35 s.
//!
//! `fixtures/v6.embus` was written by format version 6 (commit 80e27a7, the last build that
//! stored every record of a topic in a row of its own) with a small program on a
//! `ManualClock`: a topic `orders` of `u64` (2 partitions, `Retention::unlimited()`) holding
//! 300 records sent with one `send_batch`, payload `n` at offset `n / 2` of partition `n % 2`
//! (round robin), each in a lone row; group `billing` acked offsets 0 to 9 of partition 0 (the
//! messages of partition 1 it received were released unacked); a queue `jobs` of `String`
//! where `job-1` was acked, `job-2` was delivered once and dropped without an ack, and `job-3`
//! was never delivered.

mod common;

use std::path::PathBuf;

use embus::{
    Broker, DEAD_LETTER_REASON, Error, ManualClock, QueueOptions, Record, Retention, Start,
    TopicOptions,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
    item: String,
}

/// A copy of the version 1 fixture in a fresh directory (opening upgrades it in place).
fn fixture(test: &str) -> PathBuf {
    copy_of("v1.embus", test)
}

/// A copy of fixture `name` in a fresh directory.
fn copy_of(name: &str, test: &str) -> PathBuf {
    let path = common::fresh_dir(&format!("compat-{test}")).join(name);
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::copy(fixture, &path).unwrap();
    path
}

fn check_everything(bus: &Broker) {
    let orders = bus.topic::<Order>("orders").unwrap();
    assert_eq!(
        orders.options(),
        TopicOptions::default()
            .partitions(2)
            .retention(Retention::messages(100))
    );
    let mut all = orders.subscribe(Start::Earliest).unwrap();
    let mut seen: Vec<(u32, u64, u32, String, String)> = (0..6)
        .map(|_| {
            let m = all.recv_timeout(common::WAIT).unwrap();
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let trace = String::from_utf8(m.headers().get("trace").unwrap().to_vec()).unwrap();
            (m.partition(), m.offset(), m.payload().id, key, trace)
        })
        .collect();
    seen.sort();
    let mut expected: Vec<(u32, u64, u32, String, String)> = (0..6u32)
        .map(|i| {
            (
                i % 2,
                u64::from(i / 2),
                i,
                format!("c{}", i % 2),
                format!("t{i}"),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(orders.group_position("billing"), Some(vec![1, 1]));

    let jobs = bus.queue::<String>("jobs").unwrap();
    assert_eq!(
        jobs.options(),
        &QueueOptions::default()
            .capacity(50)
            .max_deliveries(2)
            .dead_letter("jobs.dead")
    );
    let mut worker = jobs.consumer();
    let job = worker.recv_timeout(common::WAIT).unwrap();
    assert_eq!((job.payload().as_str(), job.delivery_count()), ("job-3", 2));
    assert!(worker.try_recv().is_err(), "one job left");
    drop(job); // released again: the test's reads change nothing that matters across reopens

    let dead = bus.queue::<String>("jobs.dead").unwrap();
    let mut dlq = dead.consumer();
    // Both held at once, so neither comes back before the other is seen.
    let held: Vec<_> = (0..2)
        .map(|_| dlq.recv_timeout(common::WAIT).unwrap())
        .collect();
    let got: Vec<(String, String)> = held
        .iter()
        .map(|m| {
            let reason = m.headers().get(DEAD_LETTER_REASON).unwrap().to_vec();
            (m.payload().clone(), String::from_utf8(reason).unwrap())
        })
        .collect();
    assert_eq!(
        got,
        [
            ("job-1".to_owned(), "dropped".to_owned()),
            ("job-2".to_owned(), "nack".to_owned())
        ]
    );
    assert!(jobs.undecodable().is_empty() && dead.undecodable().is_empty());
}

#[test]
fn a_format_1_store_reads_back_in_full_and_stays_readable() {
    let path = fixture("read");
    let bus = Broker::open(&path).unwrap();
    check_everything(&bus);
    // New sends continue where the old file left off.
    let orders = bus.topic::<Order>("orders").unwrap();
    let receipt = orders
        .producer()
        .send_record(
            embus::Record::new(Order {
                id: 6,
                item: "item-6".into(),
            })
            .key("c0"),
        )
        .unwrap();
    assert_eq!((receipt.partition, receipt.offset), (0, 3));
    drop(orders);
    bus.close().unwrap();
    // Upgraded in place (its tables under the prefix): it opens again, with the new record.
    assert_tables_prefixed(
        &path,
        &[
            "embus.t.orders.0",
            "embus.t.orders.1",
            "embus.q.jobs",
            "embus.c.jobs",
        ],
    );
    let bus = Broker::open(&path).unwrap();
    assert_eq!(bus.topic::<Order>("orders").unwrap().retained(), 7);
    bus.close().unwrap();
}

#[test]
fn a_damaged_declaration_is_corrupt_naming_the_file() {
    let path = fixture("damaged");
    Broker::open(&path).unwrap().close().unwrap(); // upgrade first, like any user's first open
    {
        let db = embus::redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let definition: embus::redb::TableDefinition<&str, &[u8]> =
                embus::redb::TableDefinition::new("embus.declarations");
            let mut table = txn.open_table(definition).unwrap();
            table
                .insert("orders", &b"{\"version\": garbage"[..])
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    match bus.topic::<Order>("orders") {
        Err(e @ Error::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("v1.embus") && text.contains("orders"),
                "{text}"
            );
        }
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
    // The rest of the store still works.
    assert_eq!(bus.queue::<String>("jobs").unwrap().len(), 1);
    bus.close().unwrap();
}

/// The fixture as format version 2 wrote it: version 1 plus `embus.settings` naming the codec
/// (the metadata unsealed, the records with their version 1 checksum).
fn as_version_2(path: &std::path::Path) {
    use embus::redb::TableDefinition;
    let db = embus::redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let meta: TableDefinition<&str, u64> = TableDefinition::new("embus.meta");
        txn.open_table(meta).unwrap().insert("format", 2).unwrap();
        let settings: TableDefinition<&str, &str> = TableDefinition::new("embus.settings");
        txn.open_table(settings)
            .unwrap()
            .insert("codec", "bincode")
            .unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn a_format_2_store_is_upgraded_in_place_and_reads_back_in_full() {
    let path = fixture("v2");
    as_version_2(&path);
    let bus = Broker::open(&path).unwrap();
    check_everything(&bus);
    bus.close().unwrap();
    // Upgraded: it opens again as version 3 (job-3, dropped past `max_deliveries` by the
    // check, is a dead letter now).
    let bus = Broker::open(&path).unwrap();
    let orders = bus.topic::<Order>("orders").unwrap();
    assert_eq!(orders.retained(), 6);
    assert_eq!(orders.group_position("billing"), Some(vec![1, 1]));
    assert!(bus.queue::<String>("jobs").unwrap().is_empty());
    assert_eq!(bus.queue::<String>("jobs.dead").unwrap().len(), 3);
    drop(orders);
    bus.close().unwrap();
}

#[test]
fn a_damaged_end_in_a_format_2_store_is_corrupt_after_the_upgrade() {
    // Version 2 did not checksum a log's end; the upgrade seals what it finds, so a damaged
    // end must still be caught (it used to make `topic()` trim ~2^40 offsets one by one).
    let path = fixture("v2-end");
    as_version_2(&path);
    {
        use embus::redb::{ReadableTable, TableDefinition};
        let db = embus::redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let ends: TableDefinition<&str, (u64, u64)> = TableDefinition::new("embus.ends");
            let mut table = txn.open_table(ends).unwrap();
            let (next, bytes) = table.get("t.orders.0").unwrap().unwrap().value();
            table
                .insert("t.orders.0", (next ^ (1 << 40), bytes))
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let opened = path.clone();
    std::thread::spawn(move || {
        let bus = Broker::open(&opened).unwrap();
        let _ = tx.send(bus.topic::<Order>("orders").map(|_| ()));
        let _ = bus.close();
    });
    match rx.recv_timeout(common::WAIT).expect("topic() hung") {
        Err(e @ Error::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("v1.embus") && text.contains("t.orders.0"),
                "{text}"
            );
        }
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}

/// What the version 4 fixture holds (see the module docs), read back from `bus`, after
/// `reopens` earlier reads that each delivered (and released) both jobs once more.
fn check_version_4(bus: &Broker, reopens: u32) {
    let orders = bus.topic::<Order>("orders").unwrap();
    let mut all = orders.subscribe(Start::Earliest).unwrap();
    let mut seen: Vec<(u32, u64, u32, String)> = (0..6)
        .map(|_| {
            let m = all.recv_timeout(common::WAIT).unwrap();
            let trace = String::from_utf8(m.headers().get("trace").unwrap().to_vec()).unwrap();
            (m.partition(), m.offset(), m.payload().id, trace)
        })
        .collect();
    seen.sort();
    let mut expected: Vec<(u32, u64, u32, String)> = (0..6u32)
        .map(|i| (i % 2, u64::from(i / 2), i, format!("t{i}")))
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(orders.group_position("billing"), Some(vec![1, 1]));

    check_jobs(bus, reopens);
    assert!(bus.queue::<String>("jobs.dead").unwrap().is_empty());
}

/// The latest value of every key of compacted topic `prices`, read from the start, and how
/// many messages that took.
fn latest_prices(bus: &Broker) -> (std::collections::BTreeMap<String, u64>, usize) {
    let prices = bus.topic::<u64>("prices").unwrap();
    let mut reader = prices.subscribe(Start::Earliest).unwrap();
    let mut latest = std::collections::BTreeMap::new();
    let mut read = 0;
    while let Ok(m) = reader.try_recv() {
        read += 1;
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        latest.insert(key, *m.payload());
    }
    (latest, read)
}

#[test]
fn a_format_4_store_is_upgraded_in_place_and_reads_back_in_full() {
    let path = copy_of("v4.embus", "v4");
    let bus = Broker::open(&path).unwrap();
    check_version_4(&bus, 0);
    let expected: std::collections::BTreeMap<String, u64> =
        [("apple", 3), ("pear", 5), ("plum", 4)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
    assert_eq!(latest_prices(&bus), (expected.clone(), 3));
    // The key index came along: a new `apple` deletes the stored one.
    let prices = bus.topic::<u64>("prices").unwrap();
    prices
        .producer()
        .send_record(embus::Record::new(6).key("apple"))
        .unwrap();
    drop(prices);
    bus.close().unwrap();

    // Upgraded in place, every table under the prefix; it opens again with the new record.
    assert_tables_prefixed(
        &path,
        &[
            "embus.t.orders.0",
            "embus.t.orders.1",
            "embus.t.prices.0",
            "embus.k.t.prices.0",
            "embus.q.jobs",
            "embus.c.jobs",
        ],
    );
    let bus = Broker::open(&path).unwrap();
    check_version_4(&bus, 1);
    let mut expected = expected;
    expected.insert("apple".to_owned(), 6);
    assert_eq!(latest_prices(&bus), (expected, 3));
    bus.close().unwrap();
}

/// Every table in the file at `path` is named with embus's reserved prefix, and `expected`
/// are among them.
fn assert_tables_prefixed(path: &std::path::Path, expected: &[&str]) {
    let names = table_names(path);
    for name in &names {
        assert!(name.starts_with("embus."), "{name} in {names:?}");
    }
    for table in expected {
        assert!(names.iter().any(|n| n == table), "{table} in {names:?}");
    }
}

/// The names of the tables in the file at `path`.
fn table_names(path: &std::path::Path) -> Vec<String> {
    use embus::redb::{ReadableDatabase, TableHandle};
    let db = embus::redb::Database::create(path).unwrap();
    let txn = db.begin_read().unwrap();
    txn.list_tables()
        .unwrap()
        .map(|t| t.name().to_owned())
        .collect()
}

#[test]
fn a_damaged_end_in_a_format_4_store_fails_the_upgrade_and_changes_nothing() {
    use embus::redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let path = copy_of("v4.embus", "v4-end");
    let ends: TableDefinition<&str, &[u8]> = TableDefinition::new("embus.ends");
    {
        let db = embus::redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(ends).unwrap();
            let mut value = table.get("q.jobs").unwrap().unwrap().value().to_vec();
            value[4] ^= 1;
            table.insert("q.jobs", value.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let before = table_names(&path);
    match Broker::open(&path) {
        Err(e @ Error::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("v4.embus") && text.contains("q.jobs"),
                "{text}"
            );
        }
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
    // The upgrade is one commit: nothing of it was kept.
    assert_eq!(table_names(&path), before);
    assert!(before.iter().any(|n| n == "q.jobs"), "{before:?}");
    let db = embus::redb::Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta: TableDefinition<&str, u64> = TableDefinition::new("embus.meta");
    let format = txn
        .open_table(meta)
        .unwrap()
        .get("format")
        .unwrap()
        .unwrap()
        .value();
    assert_eq!(format, 4);
}

/// The format version the file at `path` records.
fn format_version(path: &std::path::Path) -> u64 {
    use embus::redb::{ReadableDatabase, TableDefinition};
    let db = embus::redb::Database::create(path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta: TableDefinition<&str, u64> = TableDefinition::new("embus.meta");
    let table = txn.open_table(meta).unwrap();
    table.get("format").unwrap().unwrap().value()
}

#[test]
fn a_format_5_store_is_upgraded_and_its_dedupe_windows_keep_working() {
    let path = copy_of("v5.embus", "v5");
    // From the fixture's start: an id sent now is older than the rows of the fixture.
    let clock = ManualClock::new();
    let open = || {
        let bus = Broker::builder()
            .path(&path)
            .clock(clock.clone())
            .open()
            .unwrap();
        let events = bus.topic::<u32>("events").unwrap();
        let jobs = bus.queue::<String>("jobs").unwrap();
        (bus, events, jobs)
    };
    let event = |id: &str, key: &str| Record::new(9).key(key).id(id);
    let job = |id: &str| Record::new("again".to_owned()).id(id);
    let at = |r: embus::Receipt| (r.partition, r.offset);

    let (bus, events, jobs) = open();
    let send = |r| at(events.producer().send_record(r).unwrap());
    // The last three ids are duplicates, `b` (which had left the window) is not.
    assert_eq!(send(event("c", "k2")), (1, 2));
    assert_eq!(send(event("d", "k3")), (0, 0));
    assert_eq!(send(event("e", "k4")), (0, 1));
    assert_eq!(send(event("b", "k1")), (1, 3));
    let send_job = |id| jobs.producer().send_record(job(id)).unwrap().offset;
    assert_eq!((send_job("x"), send_job("y")), (0, 1));
    clock.advance(std::time::Duration::from_secs(66)); // `x` (at +5 s) leaves the window
    assert_eq!((send_job("y"), send_job("x")), (1, 2));
    drop((events, jobs));
    bus.close().unwrap();
    assert_eq!(format_version(&path), 7);

    // Reopened: `b`'s row (of the new layout, at an earlier time than the old rows) comes
    // after the old rows of `c`, `d` and `e`: `c` left the window, `b` is kept.
    let (bus, events, jobs) = open();
    let send = |r| at(events.producer().send_record(r).unwrap());
    assert_eq!(send(event("d", "k3")), (0, 0));
    assert_eq!(send(event("e", "k4")), (0, 1));
    assert_eq!(send(event("b", "k1")), (1, 3));
    assert_eq!(send(event("c", "k2")), (1, 4));
    let send_job = |id| jobs.producer().send_record(job(id)).unwrap().offset;
    assert_eq!((send_job("y"), send_job("x")), (1, 2));
    assert_eq!(events.retained(), 7);
    drop((events, jobs));
    bus.close().unwrap();
}

/// Every record of topic `orders` read from the start by one subscriber, as (partition,
/// offset, payload), sorted; `count` are expected (and no more).
fn all_orders(bus: &Broker, count: usize) -> Vec<(u32, u64, u64)> {
    let orders = bus.topic::<u64>("orders").unwrap();
    let mut all = orders.subscribe(Start::Earliest).unwrap();
    let mut seen: Vec<(u32, u64, u64)> = (0..count)
        .map(|_| {
            let m = all.recv_timeout(common::WAIT).unwrap();
            (m.partition(), m.offset(), *m.payload())
        })
        .collect();
    assert!(all.try_recv().is_err(), "{count} records, no more");
    seen.sort_unstable();
    seen
}

/// Payloads `range` as the version 6 fixture's round robin placed them: payload `n` at offset
/// `n / 2` of partition `n % 2`.
fn round_robin(range: std::ops::Range<u64>) -> Vec<(u32, u64, u64)> {
    let mut placed: Vec<(u32, u64, u64)> = range
        .map(|n| (u32::try_from(n % 2).unwrap(), n / 2, n))
        .collect();
    placed.sort_unstable();
    placed
}

/// Queue `jobs` of the version 4 and 6 fixtures holds `job-2` (delivered once when written)
/// and `job-3`, after `reopens` earlier reads that each delivered (and released) both once
/// more.
fn check_jobs(bus: &Broker, reopens: u32) {
    let mut held = common::hold::<String>(bus, "jobs", 2);
    let want = [
        ("job-2".to_owned(), 2 + reopens),
        ("job-3".to_owned(), 1 + reopens),
    ];
    assert_eq!(held.seen, want);
    assert!(held.consumer.try_recv().is_err(), "two jobs left");
    drop(held); // released again
}

/// What the inspector counts in each partition of topic `orders` of the file at `path`:
/// (first offset, next offset, messages).
fn inspected_orders(path: &std::path::Path) -> Vec<(Option<u64>, u64, u64)> {
    let summary = embus::inspect::StoreFile::open(path)
        .unwrap()
        .summary()
        .unwrap();
    let orders = summary.topics.iter().find(|t| t.name == "orders").unwrap();
    orders
        .partitions
        .iter()
        .map(|p| (p.first_offset, p.next_offset, p.messages))
        .collect()
}

/// The keys of the rows of partition `partition` of topic `orders` in the file at `path`:
/// (lone records, batch rows), told apart by a batch row's first byte (16).
fn orders_rows(path: &std::path::Path, partition: u32) -> (Vec<u64>, Vec<u64>) {
    use embus::redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let db = embus::redb::Database::create(path).unwrap();
    let txn = db.begin_read().unwrap();
    let name = format!("embus.t.orders.{partition}");
    let rows: TableDefinition<'_, u64, &[u8]> = TableDefinition::new(&name);
    let table = txn.open_table(rows).unwrap();
    let (mut lone, mut batch) = (Vec::new(), Vec::new());
    for row in table.iter().unwrap() {
        let (key, value) = row.unwrap();
        if value.value().first() == Some(&16) {
            batch.push(key.value());
        } else {
            lone.push(key.value());
        }
    }
    (lone, batch)
}

#[test]
fn a_format_6_store_opens_and_mixes_lone_and_batch_rows() {
    let path = copy_of("v6.embus", "v6");
    assert_eq!(format_version(&path), 6);
    assert_eq!(inspected_orders(&path), [(Some(0), 150, 150); 2]);
    for partition in 0..2 {
        assert_eq!(orders_rows(&path, partition), ((0..150).collect(), vec![]));
    }
    let clock = ManualClock::new();
    let open = || {
        Broker::builder()
            .path(&path)
            .clock(clock.clone())
            .open()
            .unwrap()
    };

    let bus = open();
    let orders = bus.topic::<u64>("orders").unwrap();
    assert_eq!(
        orders.options(),
        TopicOptions::default()
            .partitions(2)
            .retention(Retention::unlimited())
    );
    // Every record in its own (lone) row, each at its offset.
    assert_eq!(all_orders(&bus, 300), round_robin(0..300));
    // Group `billing` acked offsets 0 to 9 of partition 0 and nothing of partition 1.
    assert_eq!(orders.group_position("billing"), Some(vec![10, 0]));
    {
        let mut billing = orders.join_group("billing").unwrap();
        let mut held = Vec::new();
        let first_of_0 = loop {
            let m = billing.recv_timeout(common::WAIT).unwrap();
            if m.partition() == 0 {
                break (m.offset(), *m.payload());
            }
            held.push((m.offset(), *m.payload()));
        };
        assert_eq!(first_of_0, (10, 20));
        if let Some(&first_of_1) = held.first() {
            assert_eq!(first_of_1, (0, 1));
        }
    } // nothing acked: the group's position stays where the fixture left it
    assert_eq!(orders.group_position("billing"), Some(vec![10, 0]));
    check_jobs(&bus, 0);

    // One more batch: its records go into batch rows after the lone rows.
    let receipts = orders.producer().send_batch((300..600).collect()).unwrap();
    let placed: Vec<(u32, u64)> = receipts.iter().map(|r| (r.partition, r.offset)).collect();
    let expected: Vec<(u32, u64)> = (300..600u64)
        .map(|n| (u32::try_from(n % 2).unwrap(), n / 2))
        .collect();
    assert_eq!(placed, expected);
    drop(orders);
    bus.close().unwrap();
    assert_eq!(format_version(&path), 7);
    assert_eq!(inspected_orders(&path), [(Some(0), 300, 300); 2]);
    // The old rows are kept as they are; the new records are in batch rows after them.
    for partition in 0..2 {
        let (lone, batch) = orders_rows(&path, partition);
        assert_eq!(lone, (0..150).collect::<Vec<u64>>());
        assert_eq!(batch.first(), Some(&150), "{batch:?}");
        assert!(batch.len() < 150, "{batch:?}");
    }

    // Reopened: lone rows then batch rows, every record at its offset with its payload.
    let bus = open();
    assert_eq!(all_orders(&bus, 600), round_robin(0..600));
    let orders = bus.topic::<u64>("orders").unwrap();
    assert_eq!(orders.retained(), 600);
    assert_eq!(orders.group_position("billing"), Some(vec![10, 0]));
    // From the middle of the lone rows, across into the batch rows.
    let mut from = orders.subscribe(Start::Offset(140)).unwrap();
    let mut tail: Vec<(u32, u64, u64)> = (0..2 * 160)
        .map(|_| {
            let m = from.recv_timeout(common::WAIT).unwrap();
            (m.partition(), m.offset(), *m.payload())
        })
        .collect();
    tail.sort_unstable();
    let mut expected_tail = round_robin(280..600);
    expected_tail.sort_unstable();
    assert_eq!(tail, expected_tail);
    check_jobs(&bus, 1);
    drop((orders, from));
    bus.close().unwrap();
    assert_eq!(format_version(&path), 7);
}

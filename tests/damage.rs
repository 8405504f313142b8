//! Crafted damage that used to pass: a record of another partition at the same key was
//! delivered as this partition's, and a flipped bit in a log's stored end hung `topic()` (it
//! trimmed ~2^40 offsets one by one) or made the next send delete good records. Every record
//! is now bound to its table, and every metadata row has a checksum: such damage is
//! `Error::Corrupt` naming the file and the row, or a skipped record, never a wrong payload.

mod common;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOCATOR: counting_alloc::Counting = counting_alloc::Counting;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::Duration;

use common::WAIT;
use counting_alloc::LARGEST;
use embus::redb::{Database, ReadableTable, TableDefinition, TableError};
use embus::{Broker, Error, Record, RecvTimeoutError, Retention, Start, TopicOptions};

const PER_PARTITION: usize = 20;

fn options() -> TopicOptions {
    TopicOptions::default()
        .partitions(2)
        .retention(Retention::messages(1_000))
}

/// What was sent where: (partition, offset) -> payload.
type Sent = HashMap<(u32, u64), String>;
/// What was read back: partition, offset, payload.
type Read = (u32, u64, String);

/// A store with topic `orders` (2 partitions, at least `PER_PARTITION` records each, every
/// payload unique), a group position and a queue with a delivered message.
fn write_store(test: &str) -> (PathBuf, Sent) {
    let path = common::fresh_dir(&format!("damage-{test}")).join("store.embus");
    let bus = Broker::open(&path).unwrap();
    let orders = bus.topic_with::<String>("orders", options()).unwrap();
    let mut member = orders.join_group("billing").unwrap();
    let producer = orders.producer();
    let mut sent = Sent::new();
    let mut n = 0;
    while (0..2).any(|p| sent.keys().filter(|(q, _)| *q == p).count() < PER_PARTITION) {
        let payload = format!("payload-{n}");
        let receipt = producer
            .send_record(Record::new(payload.clone()).key(format!("k{n}")))
            .unwrap();
        sent.insert((receipt.partition, receipt.offset), payload);
        n += 1;
    }
    member.recv_timeout(WAIT).unwrap().ack().unwrap();
    let jobs = bus.queue::<String>("jobs").unwrap();
    jobs.producer().send("job".to_owned()).unwrap();
    drop(jobs.consumer().recv_timeout(WAIT).unwrap()); // delivered once, released
    drop((member, producer, orders, jobs));
    bus.close().unwrap();
    (path, sent)
}

/// Runs `f` on its own thread; fails if it takes longer than `limit` (a hang).
fn within<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still running after {limit:?} (hung)"))
}

/// Reads `orders` from the start until the last offset of each partition; returns what was
/// delivered and how many records were reported lost (lagged, or undecodable).
fn read_all(bus: &Broker, sent: &Sent) -> Result<(Vec<Read>, u64), Error> {
    let last = |p: u32| sent.keys().filter(|(q, _)| *q == p).map(|(_, o)| *o).max();
    let ends = [last(0).unwrap(), last(1).unwrap()];
    let orders = bus.topic::<String>("orders")?;
    let mut sub = orders.subscribe(Start::Earliest).unwrap();
    let (mut out, mut lost) = (Vec::new(), 0);
    let mut done = [false; 2];
    while !done.iter().all(|d| *d) {
        match sub.recv_timeout(WAIT) {
            Ok(m) => {
                let p = m.partition();
                done[p as usize] |= m.offset() >= ends[p as usize];
                out.push((p, m.offset(), m.payload().clone()));
            }
            Err(RecvTimeoutError::Lagged { skipped }) => lost += skipped,
            // Reported with its bytes, and passed (a subscriber moves on).
            Err(RecvTimeoutError::Undecodable(_)) => lost += 1,
            Err(e) => panic!("reading back: {e} after {out:?}"),
        }
    }
    Ok((out, lost))
}

/// Opens the closed store with redb itself, for `f` to damage it.
fn with_db(path: &Path, f: impl FnOnce(&embus::redb::WriteTransaction)) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

fn records(table: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(table)
}

#[test]
fn a_record_of_another_partition_at_the_same_key_is_not_delivered() {
    let (path, sent) = write_store("swap");
    // What a page swapped in from partition 1 does: partition 1's row at partition 0's key.
    with_db(&path, |txn| {
        let row = txn
            .open_table(records("embus.t.orders.1"))
            .unwrap()
            .get(3)
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        txn.open_table(records("embus.t.orders.0"))
            .unwrap()
            .insert(3, row.as_slice())
            .unwrap();
    });
    let bus = Broker::open(&path).unwrap();
    let (read, lost) = read_all(&bus, &sent).unwrap();
    for (p, offset, payload) in &read {
        assert_eq!(
            Some(payload),
            sent.get(&(*p, *offset)),
            "partition {p} offset {offset} delivered another record's payload"
        );
    }
    assert!(!read.iter().any(|(p, o, _)| (*p, *o) == (0, 3)));
    assert_eq!(lost, 1, "the damaged record is reported lost");
    bus.close().unwrap();
}

/// Flips `bit` of the stored next key of `table` in `embus.ends`, whatever its layout: typed
/// `(u64, u64)` (format version 2) or sealed bytes (CRC, then the two u64).
fn flip_end_bit(path: &Path, table: &str, bit: u32) {
    with_db(path, |txn| {
        let typed: TableDefinition<&str, (u64, u64)> = TableDefinition::new("embus.ends");
        match txn.open_table(typed) {
            Ok(mut ends) => {
                let (next, bytes) = ends.get(table).unwrap().unwrap().value();
                ends.insert(table, (next ^ (1 << bit), bytes)).unwrap();
            }
            Err(TableError::TableTypeMismatch { .. }) => {
                let sealed: TableDefinition<&str, &[u8]> = TableDefinition::new("embus.ends");
                let mut ends = txn.open_table(sealed).unwrap();
                let mut value = ends.get(table).unwrap().unwrap().value().to_vec();
                value[4 + (bit / 8) as usize] ^= 1 << (bit % 8);
                ends.insert(table, value.as_slice()).unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    });
}

#[track_caller]
fn assert_corrupt_naming(result: Result<impl std::fmt::Debug, Error>, row: &str) {
    match result {
        Err(e @ Error::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(text.contains("store.embus") && text.contains(row), "{text}");
        }
        other => panic!("expected Error::Corrupt naming `{row}`, got {other:?}"),
    }
}

#[test]
fn a_flipped_high_bit_in_a_stored_end_is_corrupt_not_a_hang() {
    let (path, _) = write_store("end-bit-40");
    flip_end_bit(&path, "embus.t.orders.0", 40);
    let opened = path.clone();
    let result = within(WAIT, move || {
        let bus = Broker::open(&opened).unwrap();
        let result = bus.topic::<String>("orders").map(|_| ());
        let _ = bus.close();
        result
    });
    assert_corrupt_naming(result, "embus.t.orders.0");
}

#[test]
fn a_flipped_bit_in_a_stored_end_never_deletes_good_records() {
    let (path, sent) = write_store("end-bit-24");
    flip_end_bit(&path, "embus.t.orders.0", 24);
    let bus = Broker::open(&path).unwrap();
    match bus.topic::<String>("orders") {
        Err(e) => assert_corrupt_naming(Err::<(), _>(e), "embus.t.orders.0"),
        Ok(orders) => {
            // An ordinary send, then every good record must still be there.
            orders.producer().send("one more".to_owned()).unwrap();
            drop(orders);
            bus.close().unwrap();
            let bus = Broker::open(&path).unwrap();
            let (read, lost) = read_all(&bus, &sent).unwrap();
            assert_eq!(
                (read.len(), lost),
                (sent.len(), 0),
                "good records were deleted"
            );
            bus.close().unwrap();
            return;
        }
    }
    bus.close().unwrap();
}

/// Flips the low bit of the last byte of the first row of `table` (sealed bytes) whose key
/// `pick` accepts.
fn flip_first<K: embus::redb::Key + 'static>(
    path: &Path,
    table: &str,
    pick: impl Fn(&K::SelfType<'_>) -> bool,
) {
    with_db(path, |txn| {
        let definition: TableDefinition<K, &[u8]> = TableDefinition::new(table);
        let mut t = txn.open_table(definition).unwrap();
        let mut found = None;
        for row in t.iter().unwrap() {
            let (k, v) = row.unwrap();
            if pick(&k.value()) {
                let mut value = v.value().to_vec();
                *value.last_mut().unwrap() ^= 1;
                found = Some((K::as_bytes(&k.value()).as_ref().to_vec(), value));
                break;
            }
        }
        let (key, value) = found.unwrap_or_else(|| panic!("no row to damage in {table}"));
        t.insert(K::from_bytes(&key), value.as_slice()).unwrap();
    });
}

#[test]
fn a_flipped_bit_in_any_metadata_row_is_corrupt_naming_it() {
    let (original, _) = write_store("metadata");
    let copy = |case: &str| {
        let path = original.with_file_name(format!("{case}.store.embus"));
        std::fs::copy(&original, &path).unwrap();
        path
    };

    let path = copy("settings");
    flip_first::<&str>(&path, "embus.settings", |k| *k == "codec");
    assert_corrupt_naming(Broker::open(&path).map(|_| ()), "codec");

    let path = copy("declaration");
    flip_first::<&str>(&path, "embus.declarations", |k| *k == "orders");
    let bus = Broker::open(&path).unwrap();
    assert_corrupt_naming(bus.topic::<String>("orders").map(|_| ()), "`orders`");
    bus.close().unwrap();

    let path = copy("group");
    flip_first::<(&str, &str, u32)>(&path, "embus.groups", |k| k.1 == "billing");
    let bus = Broker::open(&path).unwrap();
    assert_corrupt_naming(bus.topic::<String>("orders").map(|_| ()), "orders/billing/");
    bus.close().unwrap();

    let path = copy("queue-end");
    flip_end_bit(&path, "embus.q.jobs", 40);
    let bus = Broker::open(&path).unwrap();
    assert_corrupt_naming(bus.queue::<String>("jobs").map(|_| ()), "embus.q.jobs");
    bus.close().unwrap();

    let path = copy("count");
    flip_first::<u64>(&path, "embus.c.jobs", |_| true);
    let bus = Broker::open(&path).unwrap();
    assert_corrupt_naming(bus.queue::<String>("jobs").map(|_| ()), "embus.c.jobs");
    bus.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Pages swapped between tables
// ---------------------------------------------------------------------------------------------

const PAGE: usize = 4096; // redb's default page size

/// The leaf pages (type 1) of `bytes` that hold any of `payloads`, as bincode writes a short
/// string (its length byte, then the bytes). Freed copies from earlier commits count too:
/// redb writes a page anew each commit, so the live one is among them.
fn leaf_pages<'a>(bytes: &[u8], payloads: impl Iterator<Item = &'a String>) -> Vec<usize> {
    let mut pages = Vec::new();
    for payload in payloads {
        let mut needle = vec![u8::try_from(payload.len()).unwrap()];
        needle.extend_from_slice(payload.as_bytes());
        for (at, _) in bytes
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle.as_slice())
        {
            let page = at / PAGE * PAGE;
            if bytes[page] == 1 && !pages.contains(&page) {
                pages.push(page);
            }
        }
    }
    pages
}

/// Where a read of a damaged store ended: what it delivered, how many records it reported
/// lost, and the queue's undecodable and ready messages; or the error that refused it.
#[derive(Debug)]
struct Outcome {
    read: Vec<Read>,
    lost: u64,
    queue_undecodable: usize,
    queue_ready: Vec<String>,
}

/// Opens `path` and reads everything back within `WAIT`, checking every payload delivered
/// against `sent`; a clear error (naming the file) is the other acceptable outcome.
fn read_checked(path: &Path, sent: &Sent) -> Result<Outcome, Error> {
    let (path, sent) = (path.to_owned(), sent.clone());
    within(WAIT, move || {
        let bus = Broker::open(&path)?;
        let result = read_everything(&bus, &sent);
        let _ = bus.close(); // may report the damage; must not panic
        result
    })
}

fn read_everything(bus: &Broker, sent: &Sent) -> Result<Outcome, Error> {
    let orders = bus.topic::<String>("orders")?;
    let mut sub = orders.subscribe(Start::Earliest).unwrap();
    let retained: u64 = (0..2)
        .map(|p| orders.offsets(p).map_or(0, |r| r.end - r.start))
        .sum();
    let (mut read, mut lost, mut accounted) = (Vec::new(), 0, 0);
    while accounted < retained {
        match sub.recv_timeout(WAIT) {
            Ok(m) => {
                let at = (m.partition(), m.offset());
                assert_eq!(
                    Some(m.payload()),
                    sent.get(&at),
                    "{at:?} delivered a payload not written there"
                );
                read.push((at.0, at.1, m.payload().clone()));
                accounted += 1;
            }
            Err(RecvTimeoutError::Lagged { skipped }) => {
                (lost, accounted) = (lost + skipped, accounted + skipped);
            }
            Err(RecvTimeoutError::Undecodable(u)) => {
                assert_eq!(u.name, "orders");
                (lost, accounted) = (lost + 1, accounted + 1);
            }
            Err(RecvTimeoutError::Failed(f)) => {
                assert!(f.to_string().contains(".embus"), "{f}");
                break;
            }
            Err(e) => panic!("reading back: {e} after {accounted} of {retained} (a stall)"),
        }
    }
    let jobs = bus.queue::<String>("jobs")?;
    let mut worker = jobs.consumer();
    let mut queue_ready = Vec::new();
    while let Ok(m) = worker.try_recv() {
        assert_eq!(
            m.payload(),
            "job",
            "the queue delivered a payload never sent to it"
        );
        queue_ready.push(m.payload().clone());
    }
    Ok(Outcome {
        read,
        lost,
        queue_undecodable: jobs.undecodable().len(),
        queue_ready,
    })
}

/// Copies the page at `from` over every page in `to`.
fn swap_pages(path: &Path, from: usize, to: &[usize]) {
    let mut bytes = std::fs::read(path).unwrap();
    let page = bytes[from..from + PAGE].to_vec();
    for &at in to {
        bytes[at..at + PAGE].copy_from_slice(&page);
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_leaf_page_of_another_table_copied_over_is_reported_not_delivered() {
    let (original, sent) = write_store("page-swap");
    let bytes = std::fs::read(&original).unwrap();
    let of = |p: u32| {
        sent.iter()
            .filter(move |((q, _), _)| *q == p)
            .map(|(_, v)| v)
    };
    let job = "job".to_owned();
    let (zero, one) = (leaf_pages(&bytes, of(0)), leaf_pages(&bytes, of(1)));
    let queue = leaf_pages(&bytes, std::iter::once(&job));
    assert!(!zero.is_empty() && !one.is_empty() && !queue.is_empty());
    // Partition 1's page over partition 0's, the queue's over partition 0's, and partition
    // 0's over the queue's.
    let cases = [
        ("p1-over-p0", one[0], &zero, "embus.t.orders.0"),
        ("queue-over-p0", queue[0], &zero, "embus.t.orders.0"),
        ("p0-over-queue", zero[0], &queue, "embus.q.jobs"),
    ];
    for (case, from, to, damaged) in cases {
        let path = original.with_file_name(format!("{case}.store.embus"));
        std::fs::copy(&original, &path).unwrap();
        let to: Vec<usize> = to.iter().copied().filter(|&p| p != from).collect();
        swap_pages(&path, from, &to);
        match read_checked(&path, &sent) {
            // What happens with this layout: the rows do not fit the table's recorded end.
            Err(e) => assert_corrupt_naming(Err::<(), _>(e), damaged),
            Ok(outcome) => {
                // Noticed: a partition 0 record reported lost, or the queue's message
                // reported undecodable, never delivered from the wrong table.
                let noticed = if case == "p0-over-queue" {
                    outcome.queue_undecodable > 0 && outcome.queue_ready.is_empty()
                } else {
                    outcome.lost > 0 && !outcome.read.iter().any(|(p, ..)| *p == 0)
                };
                assert!(noticed, "{case}: the swap went unnoticed: {outcome:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Huge length claims
// ---------------------------------------------------------------------------------------------

/// A record sealed as the store seals it (version 2, checksum bound to `table` and `key`), with
/// `body` (key, headers, payload) as given: what damage that a checksum cannot catch (or a
/// writer gone wrong) would store.
fn sealed(table: &str, key: u64, body: &[u8]) -> Vec<u8> {
    let mut value = vec![2, 0, 0, 0, 0];
    value.extend_from_slice(&1_u64.to_le_bytes()); // timestamp
    value.extend_from_slice(&8_u32.to_le_bytes()); // size
    value.extend_from_slice(body);
    let mut seed = crc32fast::Hasher::new();
    seed.update(&u32::try_from(table.len()).unwrap().to_le_bytes());
    seed.update(table.as_bytes());
    let mut crc = crc32fast::Hasher::new_with_initial(seed.finalize());
    crc.update(&key.to_le_bytes());
    crc.update(&value[5..]);
    value[1..5].copy_from_slice(&crc.finalize().to_le_bytes());
    value
}

/// Little-endian u32s, then `rest`.
fn fields(values: &[u32], rest: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    out.extend_from_slice(rest);
    out
}

#[test]
fn a_record_claiming_4_gb_is_reported_without_allocating_it() {
    const HUGE: u32 = u32::MAX;
    let (original, sent) = write_store("huge");
    let payload = [3, b'a', b'b', b'c']; // bincode "abc"
    // A string of 4 GB: bincode's u32 length marker (252), then the length.
    let mut huge_string = vec![252];
    huge_string.extend_from_slice(&HUGE.to_le_bytes());
    let mut huge_value = vec![b'n'];
    huge_value.extend_from_slice(&HUGE.to_le_bytes());
    huge_value.extend_from_slice(&payload);
    let cases: [(&str, Vec<u8>); 5] = [
        ("key length", fields(&[HUGE], &payload)),
        ("header count", fields(&[0, HUGE], &payload)),
        ("header name length", fields(&[0, 1, HUGE], &payload)),
        ("header value length", fields(&[0, 1, 1], &huge_value)),
        ("payload string length", fields(&[0, 0], &huge_string)),
    ];
    for (case, body) in cases {
        let path = original.with_file_name(format!("huge {case}.store.embus"));
        std::fs::copy(&original, &path).unwrap();
        with_db(&path, |txn| {
            let table = "embus.t.orders.0";
            let row = sealed(table, 3, &body);
            txn.open_table(records(table))
                .unwrap()
                .insert(3, row.as_slice())
                .unwrap();
            let mut jobs = txn.open_table(records("embus.q.jobs")).unwrap();
            let id = jobs.first().unwrap().unwrap().0.value();
            let row = sealed("embus.q.jobs", id, &body);
            jobs.insert(id, row.as_slice()).unwrap();
        });
        LARGEST.store(0, Relaxed);
        let outcome = read_checked(&path, &sent).unwrap();
        assert_eq!(outcome.lost, 1, "{case}: {outcome:?}");
        assert!(!outcome.read.iter().any(|(p, o, _)| (*p, *o) == (0, 3)));
        assert_eq!(
            (outcome.queue_undecodable, outcome.queue_ready.len()),
            (1, 0),
            "{case}"
        );
        // Nothing near the claimed size was allocated (the largest allocation of the test
        // binary meanwhile: the store's own buffers are far below this).
        let largest = LARGEST.load(Relaxed);
        assert!(
            largest < 64 << 20,
            "{case}: an allocation of {largest} bytes"
        );
    }
}

/// The branch pages (type 2) of `bytes`, live or freed, with their child counts.
fn branch_pages(bytes: &[u8]) -> Vec<(usize, usize)> {
    (0..bytes.len() / PAGE)
        .map(|i| i * PAGE)
        .filter(|&at| bytes[at] == 2)
        .map(|at| {
            (
                at,
                usize::from(u16::from_le_bytes([bytes[at + 2], bytes[at + 3]])) + 1,
            )
        })
        .filter(|&(_, children)| (2..200).contains(&children))
        .collect()
}

/// A store whose topic `orders` spans ~100 leaf pages, closed cleanly, then damaged as the
/// two overwrite positions of `tests/damaged_files.rs` that took seconds: the first child
/// pointer of the topic's branch page claims a page of order 20 (4 GiB; redb's largest). The
/// topic is compacted (each record's key its own, so all kept) for one row per record: a
/// plain topic would store the batch in a few rows.
fn store_with_a_4_gib_child(test: &str) -> PathBuf {
    let path = common::fresh_dir(test).join("store.embus");
    let bus = Broker::open(&path).unwrap();
    let options = TopicOptions::default().partitions(1).compaction(true);
    let topic = bus.topic_with::<String>("orders", options).unwrap();
    let records = (0..3000)
        .map(|i| Record::new(format!("{i:0100}")).key(format!("k{i}")))
        .collect();
    topic.producer().send_record_batch(records).unwrap();
    drop(topic);
    bus.close().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    // The topic's branch page has ~100 children; redb's own trees' have 2.
    let branches: Vec<_> = branch_pages(&bytes)
        .into_iter()
        .filter(|&(_, children)| children > 50)
        .collect();
    assert!(!branches.is_empty(), "the topic has a branch page");
    for (at, children) in branches {
        // Page numbers follow the children's 16-byte checksums; the order is the top 5 bits.
        let top = at + 8 + 16 * children + 7;
        bytes[top] = (bytes[top] & 0x07) | (20 << 3);
    }
    std::fs::write(&path, &bytes).unwrap();
    path
}

/// Opens `path` and reads `orders` through: the records read, or the error.
fn open_and_read(path: &Path, check_integrity: bool) -> Result<usize, Error> {
    let bus = Broker::builder()
        .path(path)
        .check_integrity(check_integrity)
        .open()?;
    let mut sub = bus.topic::<String>("orders")?.subscribe(Start::Earliest)?;
    let mut read = 0;
    while sub.recv_timeout(common::BRIEF).is_ok() {
        read += 1;
    }
    Ok(read)
}

#[test]
fn a_child_page_claiming_4_gib_is_corrupt_at_open_with_check_integrity() {
    let path = store_with_a_4_gib_child("branch-4gib-checked");
    LARGEST.store(0, Relaxed);
    let result = within(WAIT, move || open_and_read(&path, true));
    assert!(matches!(result, Err(Error::Corrupt { .. })), "{result:?}");
    let largest = LARGEST.load(Relaxed);
    assert!(largest < 64 << 20, "an allocation of {largest} bytes");
}

/// Known limit (RELIABILITY.md): without `check_integrity(true)`, redb 4.6.0 (and 5.0.0)
/// allocates and zeroes the claimed page before reading it: in a release build, 4 GiB and
/// 12.5 s on the 2-core VM, then `Error::Storage` ("failed to fill whole buffer"), or an
/// abort where the allocation fails. A debug build of redb stops at an assertion first.
#[test]
#[ignore = "known, unfixed in redb: a damaged child pointer makes it allocate up to 4 GiB \
            (RELIABILITY.md); run alone: --release -- --ignored --exact <name>"]
fn a_child_page_claiming_4_gib_is_not_allocated_without_the_check() {
    let path = store_with_a_4_gib_child("branch-4gib");
    LARGEST.store(0, Relaxed);
    let result = within(WAIT, move || open_and_read(&path, false));
    assert!(result.is_err(), "{result:?}");
    let largest = LARGEST.load(Relaxed);
    assert!(largest < 64 << 20, "an allocation of {largest} bytes");
}

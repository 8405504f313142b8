//! Batch rows (format version 7): a commit's records of one partition share one row of the
//! file. What a user sees must not change: every record reads back at its own offset after a
//! reopen, from any offset (the middle of a row included), retention trims in the middle of a
//! row, the inspector lists records one by one, and damage to a row's header loses its records
//! (reported) without delivering a wrong payload.

mod common;

use std::path::Path;
use std::time::Duration;

use embus::inspect::{Place, ReadFrom, StoreFile};
use embus::redb::{Database, ReadableTable, TableDefinition};
use embus::{Broker, RecvTimeoutError, Retention, Start, TopicOptions};

const WAIT: Duration = Duration::from_secs(10);

fn one_partition(retention: Retention) -> TopicOptions {
    TopicOptions::default().partitions(1).retention(retention)
}

/// Reads `count` messages of `orders` from `start`: (offset, payload) each.
fn read(bus: &Broker, start: Start, count: usize) -> Vec<(u64, u64)> {
    let orders = bus.topic::<u64>("orders").unwrap();
    let mut sub = orders.subscribe(start).unwrap();
    (0..count)
        .map(|_| {
            let m = sub.recv_timeout(WAIT).unwrap();
            (m.offset(), *m.payload())
        })
        .collect()
}

/// Every offset of `range`, carrying its own number as the payload.
fn expected(range: std::ops::Range<u64>) -> Vec<(u64, u64)> {
    range.map(|n| (n, n)).collect()
}

#[test]
fn records_of_one_batch_read_back_one_by_one_from_any_offset_after_a_reopen() {
    let path = common::fresh_dir("batch-rows-read").join("store.embus");
    {
        let bus = Broker::open(&path).unwrap();
        let topic = bus
            .topic_with::<u64>("orders", one_partition(Retention::unlimited()))
            .unwrap();
        let producer = topic.producer();
        // Many rows (128 records each), then a lone record.
        producer.send_batch((0..2_500).collect()).unwrap();
        producer.send(2_500).unwrap();
        drop((producer, topic));
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    assert_eq!(read(&bus, Start::Earliest, 2_501), expected(0..2_501));
    // From the middle of the second row, and from the lone record.
    assert_eq!(
        read(&bus, Start::Offset(1_500), 1_001),
        expected(1_500..2_501)
    );
    assert_eq!(read(&bus, Start::Offset(2_500), 1), expected(2_500..2_501));
    bus.close().unwrap();

    let file = StoreFile::open(&path).unwrap();
    let summary = file.summary().unwrap();
    let partition = &summary.topics[0].partitions[0];
    assert_eq!(
        (
            partition.first_offset,
            partition.next_offset,
            partition.messages
        ),
        (Some(0), 2_501, 2_501)
    );
    let offsets: Vec<u64> = file
        .read("orders", &ReadFrom::Offset(1_000))
        .unwrap()
        .map(|entry| match entry.unwrap().place {
            Place::Topic { offset, .. } => offset,
            Place::Queue { .. } => panic!("a topic's entry"),
        })
        .collect();
    assert_eq!(offsets, (1_000..2_501).collect::<Vec<_>>());
}

#[test]
fn retention_trims_in_the_middle_of_a_batch_and_a_reopen_starts_there() {
    let path = common::fresh_dir("batch-rows-trim").join("store.embus");
    {
        let bus = Broker::open(&path).unwrap();
        let topic = bus
            .topic_with::<u64>("orders", one_partition(Retention::messages(700)))
            .unwrap();
        let producer = topic.producer();
        producer.send_batch((0..1_000).collect()).unwrap();
        // The next commit trims the file to the log's oldest retained offset, 300: in the
        // middle of the first batch's row.
        producer.send_batch((1_000..1_200).collect()).unwrap();
        drop((producer, topic));
        bus.close().unwrap();
    }
    let file = StoreFile::open(&path).unwrap();
    let partition = file.summary().unwrap().topics[0].partitions[0];
    assert_eq!(
        (partition.first_offset, partition.messages),
        (Some(500), 700),
        "the file keeps exactly what retention keeps"
    );
    drop(file);
    let bus = Broker::open(&path).unwrap();
    assert_eq!(read(&bus, Start::Earliest, 700), expected(500..1_200));
    bus.close().unwrap();
}

/// Three batches of ten, closed cleanly: rows at 0, 10 and 20.
fn three_batches(test: &str) -> std::path::PathBuf {
    let path = common::fresh_dir(test).join("store.embus");
    let bus = Broker::open(&path).unwrap();
    let topic = bus
        .topic_with::<u64>("orders", one_partition(Retention::unlimited()))
        .unwrap();
    let producer = topic.producer();
    for start in [0, 10, 20] {
        producer.send_batch((start..start + 10).collect()).unwrap();
    }
    drop((producer, topic));
    bus.close().unwrap();
    path
}

/// Reads `orders` from the start to offset 29: the records read and how many were reported
/// lost.
fn read_reporting_losses(bus: &Broker) -> (Vec<(u64, u64)>, u64) {
    let orders = bus.topic::<u64>("orders").unwrap();
    let mut sub = orders.subscribe(Start::Earliest).unwrap();
    let (mut read, mut lost) = (Vec::new(), 0);
    while read.last().is_none_or(|(offset, _)| *offset < 29) && read.len() as u64 + lost < 30 {
        match sub.recv_timeout(WAIT) {
            Ok(m) => read.push((m.offset(), *m.payload())),
            Err(RecvTimeoutError::Undecodable(_)) => lost += 1,
            Err(RecvTimeoutError::Lagged { skipped }) => lost += skipped,
            Err(e) => panic!("after {read:?}: {e}"),
        }
    }
    (read, lost)
}

/// A damaged row header, in the first, a middle or the last row: the topic opens, each record
/// of that row is reported lost, the other rows read as they were, and no payload is wrong.
#[test]
fn a_damaged_batch_header_loses_its_records_and_delivers_no_wrong_payload() {
    for damaged in [0, 10, 20] {
        let path = three_batches(&format!("batch-rows-damage-{damaged}"));
        damage_header(&path, "embus.t.orders.0", damaged);
        let bus = Broker::open(&path).unwrap();
        let (read, lost) = read_reporting_losses(&bus);
        let want: Vec<_> = expected(0..30)
            .into_iter()
            .filter(|(offset, _)| !(damaged..damaged + 10).contains(offset))
            .collect();
        assert_eq!(read, want, "row {damaged} damaged");
        assert_eq!(lost, 10, "row {damaged} damaged: each record reported lost");
        bus.close().unwrap();
    }
}

/// The inspector counts the records a damaged row held: its header's count cannot be
/// trusted, but its span is known from the next row's key (or the partition's end).
#[test]
fn inspect_counts_the_offsets_of_a_damaged_row() {
    for damaged in [10, 20] {
        let path = three_batches(&format!("batch-rows-damage-inspect-{damaged}"));
        damage_header(&path, "embus.t.orders.0", damaged);
        let file = StoreFile::open(&path).unwrap();
        let partition = file.summary().unwrap().topics[0].partitions[0];
        let figures = (
            partition.first_offset,
            partition.next_offset,
            partition.messages,
        );
        assert_eq!(figures, (Some(0), 30, 30), "row {damaged} damaged");
    }
}

/// Flips a bit of the count in the header of the batch row at `key` of `table`.
fn damage_header(path: &Path, table: &str, key: u64) {
    let definition: TableDefinition<'_, u64, &[u8]> = TableDefinition::new(table);
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut rows = txn.open_table(definition).unwrap();
        let mut row = rows
            .get(key)
            .unwrap()
            .expect("a row at the key")
            .value()
            .to_vec();
        assert_eq!(row[0], 16, "a batch row");
        row[5] ^= 1; // the count's lowest bit
        rows.insert(key, row.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

//! The outbox: the application's redb rows and the broker's messages in one redb commit.

mod common;

use std::sync::mpsc;

use common::{WAIT, fresh_dir};
use embus::redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use embus::{Broker, Error, SendError, Start, TryRecvError};

const ORDERS: TableDefinition<u64, &str> = TableDefinition::new("orders");

/// Writes order row `id` in the transaction's redb write transaction.
fn insert_order(tx: &mut embus::Transaction, id: u64, item: &str) {
    let txn = tx.redb().unwrap();
    txn.open_table(ORDERS).unwrap().insert(id, item).unwrap();
}

/// The order rows the application stored, read through a transaction's write transaction.
fn stored_orders(bus: &Broker) -> Vec<(u64, String)> {
    let mut tx = bus.transaction().unwrap();
    let txn = tx.redb().unwrap();
    let table = txn.open_table(ORDERS).unwrap();
    let rows = table.iter().unwrap().map(|row| {
        let (k, v) = row.unwrap();
        (k.value(), v.value().to_owned())
    });
    rows.collect()
}

#[test]
fn rows_and_messages_commit_together_and_survive_a_reopen() {
    let dir = fresh_dir("outbox-reopen");
    let path = dir.join("bus.embus");
    {
        let bus = Broker::open(&path).unwrap();
        let placed = bus.topic::<u64>("order-placed").unwrap();
        for id in 1..=3 {
            let mut tx = bus.transaction().unwrap();
            insert_order(&mut tx, id, "espresso");
            tx.send(&placed.producer(), id).unwrap();
            tx.commit().unwrap();
        }
        // Dropped: neither its row nor its message.
        let mut tx = bus.transaction().unwrap();
        insert_order(&mut tx, 4, "never");
        tx.send(&placed.producer(), 4).unwrap();
        drop(tx);
        // The broker goes on after an aborted loan.
        placed.producer().send(5).unwrap();
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let rows = stored_orders(&bus);
    assert_eq!(rows.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [1, 2, 3]);
    let mut events = bus
        .topic::<u64>("order-placed")
        .unwrap()
        .subscribe(Start::Earliest)
        .unwrap();
    let ids: Vec<u64> = (0..4)
        .map(|_| *events.recv_timeout(WAIT).unwrap().payload())
        .collect();
    assert_eq!(ids, [1, 2, 3, 5]);
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
    drop(bus);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sends_on_other_threads_wait_for_the_loan_and_share_its_commit() {
    let dir = fresh_dir("outbox-wait");
    let bus = Broker::open(dir.join("bus.embus")).unwrap();
    let events = bus.topic::<u64>("events").unwrap();
    let mut tx = bus.transaction().unwrap();
    insert_order(&mut tx, 1, "a");
    let (done, finished) = mpsc::channel();
    let producer = events.producer();
    let sender = std::thread::spawn(move || {
        let receipt = producer.send(2).unwrap();
        done.send(receipt).unwrap();
    });
    // The other send cannot commit while the write transaction is lent.
    assert!(finished.recv_timeout(common::BRIEF).is_err());
    tx.send(&events.producer(), 1).unwrap();
    tx.commit().unwrap();
    let receipt = finished.recv_timeout(WAIT).unwrap();
    sender.join().unwrap();
    assert_eq!(
        receipt.offset, 0,
        "it staged first, before the transaction's record"
    );
    assert_eq!(events.retained(), 2);
    assert_eq!(stored_orders(&bus).len(), 1);
    drop(bus);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn waiting_for_a_commit_on_the_borrowing_thread_fails_instead_of_hanging() {
    let dir = fresh_dir("outbox-same-thread");
    let bus = Broker::open(dir.join("bus.embus")).unwrap();
    let events = bus.topic::<u64>("events").unwrap();
    let mut tx = bus.transaction().unwrap();
    tx.redb().unwrap();
    match events.producer().send(1) {
        Err(SendError::Failed(1, Error::TransactionOpen)) => {}
        other => panic!("expected TransactionOpen, got {other:?}"),
    }
    assert!(matches!(bus.flush(), Err(Error::TransactionOpen)));
    // An async send polled on the borrowing thread would wait for the loan just the same.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    match runtime.block_on(events.producer().send_async(3)) {
        Err(SendError::Failed(3, Error::TransactionOpen)) => {}
        other => panic!("expected TransactionOpen, got {other:?}"),
    }
    tx.commit().unwrap();
    bus.flush().unwrap();
    assert_eq!(events.retained(), 0, "the failed send was not stored");
    events.producer().send(2).unwrap();
    assert_eq!(events.retained(), 1);
    drop(bus);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_table_error_in_the_application_rolls_everything_back() {
    let dir = fresh_dir("outbox-table-error");
    let bus = Broker::open(dir.join("bus.embus")).unwrap();
    let events = bus.topic::<u64>("events").unwrap();
    let mut tx = bus.transaction().unwrap();
    insert_order(&mut tx, 1, "a");
    tx.send(&events.producer(), 1).unwrap();
    // The application opens its table with the wrong types: redb says so, typed.
    let wrong: TableDefinition<&str, u64> = TableDefinition::new("orders");
    let err = tx.redb().unwrap().open_table(wrong).unwrap_err();
    assert!(
        matches!(err, embus::redb::TableError::TableTypeMismatch { .. }),
        "{err}"
    );
    drop(tx); // the application gives up: nothing of it stays
    bus.flush().unwrap();
    assert_eq!(events.retained(), 0);
    let mut tx = bus.transaction().unwrap();
    let txn = tx.redb().unwrap();
    assert!(
        txn.open_table(ORDERS)
            .unwrap()
            .iter()
            .unwrap()
            .next()
            .is_none()
    );
    drop(tx);
    drop(bus);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Retention trims the file when every commit is an outbox transaction's (the writer lends
/// its write transaction and commits what comes back): the partition's rows stay near the
/// limit instead of growing with every send.
#[test]
fn retention_trims_the_file_under_outbox_sends_alone() {
    use embus::{Retention, TopicOptions};
    let dir = fresh_dir("outbox-retention");
    let bus = Broker::open(dir.join("bus.embus")).unwrap();
    let options = TopicOptions::default().retention(Retention::messages(5));
    let events = bus.topic_with::<u64>("events", options).unwrap();
    for id in 0..30 {
        let mut tx = bus.transaction().unwrap();
        insert_order(&mut tx, id, "a");
        tx.send(&events.producer(), id).unwrap();
        tx.commit().unwrap();
    }
    assert_eq!(events.retained(), 5);
    // The file holds the retained rows and at most one commit's more (trims ride the next
    // commit), read through the next loan.
    let rows: TableDefinition<u64, &[u8]> = TableDefinition::new("embus.t.events.0");
    let mut tx = bus.transaction().unwrap();
    let stored = tx.redb().unwrap().open_table(rows).unwrap().len().unwrap();
    drop(tx);
    assert!(
        (5..=6).contains(&stored),
        "{stored} rows stored for 5 retained"
    );
    drop(bus);
    let _ = std::fs::remove_dir_all(&dir);
}

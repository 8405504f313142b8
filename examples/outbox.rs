//! The outbox: an order service writes an order row and the `OrderPlaced` event it causes in
//! one redb commit, so there is never an order without its event, nor an event without its
//! order. Then an e-mail worker turns each event into a mail, acking the event and queueing
//! the mail in one transaction (exactly once).
//!
//! Run it with `cargo run --example outbox`.

use std::sync::Arc;
use std::time::Duration;

use embus::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use embus::{Broker, Start};
use serde::{Deserialize, Serialize};

/// The application's own table: order id -> what was ordered.
const ORDERS: TableDefinition<u64, &str> = TableDefinition::new("orders");

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order: u64,
    item: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("embus-outbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // The application's database: embus keeps its tables in it too (all named `embus.…`).
    let db = Arc::new(Database::create(dir.join("shop.redb"))?);
    let bus = Broker::builder().database(Arc::clone(&db)).open()?;
    let placed = bus.topic::<OrderPlaced>("order-placed")?;
    let mails = bus.queue::<String>("mails")?;

    // Placing an order: the row and the event commit together.
    for (order, item) in [(1, "espresso"), (2, "flat white")] {
        let mut tx = bus.transaction()?;
        tx.redb()?.open_table(ORDERS)?.insert(order, item)?;
        let event = OrderPlaced {
            order,
            item: item.to_owned(),
        };
        tx.send(&placed.producer(), event)?;
        tx.commit()?;
        println!("order {order} placed: row and event stored in one commit");
    }

    // An order that fails validation after its row was written: dropping the transaction
    // leaves neither the row nor the event.
    let mut tx = bus.transaction()?;
    tx.redb()?.open_table(ORDERS)?.insert(3, "")?;
    let event = OrderPlaced {
        order: 3,
        item: String::new(),
    };
    tx.send(&placed.producer(), event)?;
    drop(tx);
    println!("order 3 rejected: nothing stored");

    // The e-mail worker: consume an event, produce a mail, ack the event, in one commit.
    let mut worker = placed.join_group("emails")?;
    while let Ok(event) = worker.recv_timeout(Duration::from_millis(200)) {
        let mail = format!(
            "Thanks for order {}: one {}",
            event.payload().order,
            event.payload().item
        );
        let mut tx = bus.transaction()?;
        tx.send(&mails.producer(), mail)?;
        tx.ack(event)?;
        tx.commit()?;
    }
    println!("{} mails queued", mails.len());

    // What is stored: every order row has its event, and the other way round.
    let read = db.begin_read()?;
    let rows: Vec<u64> = read
        .open_table(ORDERS)?
        .iter()?
        .map(|row| row.map(|(order, _)| order.value()))
        .collect::<Result<_, _>>()?;
    let mut audit = placed.subscribe(Start::Earliest)?;
    let mut events = Vec::new();
    while let Ok(event) = audit.try_recv() {
        events.push(event.payload().order);
    }
    println!("order rows {rows:?}, events {events:?}");
    assert_eq!(rows, events);

    bus.close()?;
    drop((read, db));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

//! A durable broker on the application's own redb database (`BrokerBuilder::database`): the
//! application's tables are left alone, embus's all carry the `embus.` prefix, the broker
//! reopens on the same database (shared again, or as a plain file), closing it leaves the
//! database open, and conflicting options or a file of another format version are refused.

mod common;

use std::path::Path;
use std::sync::Arc;

use embus::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use embus::{Broker, Error, QueueOptions, Start, TopicOptions};

/// The application's own table.
const ORDERS: TableDefinition<'static, u64, &str> = TableDefinition::new("orders");

/// A new database at `path` holding the application's two orders.
fn app_database(path: &Path) -> Arc<Database> {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut orders = txn.open_table(ORDERS).unwrap();
        orders.insert(1, "socks").unwrap();
        orders.insert(2, "shoes").unwrap();
    }
    txn.commit().unwrap();
    Arc::new(db)
}

/// The application's orders, read from `db`.
fn orders(db: &Database) -> Vec<(u64, String)> {
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(ORDERS).unwrap();
    table
        .iter()
        .unwrap()
        .map(|row| {
            let (k, v) = row.unwrap();
            (k.value(), v.value().to_owned())
        })
        .collect()
}

fn table_names(db: &Database) -> Vec<String> {
    let txn = db.begin_read().unwrap();
    txn.list_tables()
        .unwrap()
        .map(|t| t.name().to_owned())
        .collect()
}

/// Sends two events on topic `placed` (2 partitions) and two jobs on queue `jobs`, and
/// takes (without acking) the first job.
fn use_broker(bus: &Broker) {
    let placed = bus
        .topic_with::<String>("placed", TopicOptions::default().partitions(2))
        .unwrap();
    let producer = placed.producer();
    for order in ["order 1", "order 2"] {
        producer.send(order.to_owned()).unwrap();
    }
    let jobs = bus
        .queue_with::<String>("jobs", QueueOptions::default().capacity(10))
        .unwrap();
    jobs.producer().send("pack 1".to_owned()).unwrap();
    jobs.producer().send("pack 2".to_owned()).unwrap();
    let first = jobs.consumer().recv_timeout(common::WAIT).unwrap();
    assert_eq!(first.payload(), "pack 1");
    drop(first); // released: delivered once
}

/// What `use_broker` stored comes back from `bus`, after `reopens` earlier reopens that each
/// delivered (and released) both jobs once more.
fn check_restored(bus: &Broker, reopens: u32) {
    let placed = bus.topic::<String>("placed").unwrap();
    let mut reader = placed.subscribe(Start::Earliest).unwrap();
    let mut events: Vec<String> = (0..2)
        .map(|_| reader.recv_timeout(common::WAIT).unwrap().payload().clone())
        .collect();
    events.sort();
    assert_eq!(events, ["order 1", "order 2"]);
    let held = common::hold::<String>(bus, "jobs", 2);
    let want = [
        ("pack 1".to_owned(), 2 + reopens),
        ("pack 2".to_owned(), 1 + reopens),
    ];
    assert_eq!(held.seen, want); // released again as `held` drops
}

fn expected_orders() -> Vec<(u64, String)> {
    vec![(1, "socks".to_owned()), (2, "shoes".to_owned())]
}

#[test]
fn the_broker_shares_the_database_and_leaves_the_application_tables_alone() {
    let dir = common::fresh_dir("app-db-shared");
    let path = dir.join("app.redb");
    let db = app_database(&path);

    let bus = Broker::builder().database(Arc::clone(&db)).open().unwrap();
    use_broker(&bus);
    bus.close().unwrap();

    // The database is still open for the application: its rows are there, and it writes.
    assert_eq!(orders(&db), expected_orders());
    let txn = db.begin_write().unwrap();
    txn.open_table(ORDERS).unwrap().insert(3, "hats").unwrap();
    txn.commit().unwrap();
    let names = table_names(&db);
    assert!(names.iter().any(|n| n == "orders"), "{names:?}");
    assert!(names.iter().any(|n| n == "embus.meta"), "{names:?}");
    for name in names.iter().filter(|n| *n != "orders") {
        assert!(name.starts_with("embus."), "{name} in {names:?}");
    }

    // Shared again: everything comes back.
    let bus = Broker::builder().database(Arc::clone(&db)).open().unwrap();
    check_restored(&bus, 0);
    drop(bus); // dropping releases embus's handle too
    assert_eq!(orders(&db).len(), 3);

    // Once the application closed it, the same file opens as a plain store.
    drop(db);
    let bus = Broker::open(&path).unwrap();
    check_restored(&bus, 1);
    bus.close().unwrap();
    let db = Database::open(&path).unwrap();
    assert_eq!(orders(&db).len(), 3);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_store_file_opened_by_the_application_is_shared_as_it_is() {
    let dir = common::fresh_dir("app-db-store-file");
    let path = dir.join("store.embus");
    let bus = Broker::open(&path).unwrap();
    use_broker(&bus);
    bus.close().unwrap();

    let db = Arc::new(Database::open(&path).unwrap());
    let bus = Broker::builder().database(Arc::clone(&db)).open().unwrap();
    check_restored(&bus, 0);
    bus.close().unwrap();
    assert!(table_names(&db).iter().all(|n| n.starts_with("embus.")));
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn database_conflicts_with_a_path_a_backend_or_a_cache_size() {
    let dir = common::fresh_dir("app-db-conflicts");
    let db = app_database(&dir.join("app.redb"));
    let cases = [
        (
            Broker::builder()
                .database(Arc::clone(&db))
                .path(dir.join("other.embus")),
            "`path`",
        ),
        (
            Broker::builder()
                .storage_backend(embus::redb::backends::InMemoryBackend::new())
                .database(Arc::clone(&db)),
            "`storage_backend`",
        ),
        (
            Broker::builder()
                .database(Arc::clone(&db))
                .cache_size(1 << 20),
            "`cache_size`",
        ),
    ];
    for (builder, conflict) in cases {
        match builder.open() {
            Err(
                e @ Error::InvalidOption {
                    option: "database", ..
                },
            ) => {
                let text = e.to_string();
                assert!(
                    text.contains(conflict) && text.contains("<application database>"),
                    "{text}"
                );
            }
            other => panic!("expected Error::InvalidOption naming {conflict}, got {other:?}"),
        }
    }
    assert!(!dir.join("other.embus").exists());
    // Nothing was written to the database.
    assert_eq!(table_names(&db), ["orders"]);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_database_of_another_format_version_is_incompatible() {
    let dir = common::fresh_dir("app-db-format");
    let db = app_database(&dir.join("app.redb"));
    let txn = db.begin_write().unwrap();
    txn.open_table(TableDefinition::<&str, u64>::new("embus.meta"))
        .unwrap()
        .insert("format", 99)
        .unwrap();
    txn.commit().unwrap();
    match Broker::builder().database(Arc::clone(&db)).open() {
        Err(Error::Incompatible {
            path,
            found: 99,
            expected,
        }) => {
            assert_eq!(path, Path::new("<application database>"));
            assert!(expected < 99);
        }
        other => panic!("expected Error::Incompatible, got {other:?}"),
    }
    // Refused without a change.
    assert_eq!(table_names(&db), ["embus.meta", "orders"]);
    assert_eq!(orders(&db), expected_orders());
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_format_4_store_shared_by_the_application_is_upgraded_in_place() {
    let dir = common::fresh_dir("app-db-v4");
    let path = dir.join("v4.embus");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v4.embus");
    std::fs::copy(fixture, &path).unwrap();
    let db = Arc::new(Database::open(&path).unwrap());
    assert!(table_names(&db).iter().any(|n| n == "t.orders.0"));

    /// The fixture's payload type (see `tests/compat.rs`).
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Order {
        id: u32,
        item: String,
    }
    let bus = Broker::builder().database(Arc::clone(&db)).open().unwrap();
    let orders = bus.topic::<Order>("orders").unwrap();
    let mut reader = orders.subscribe(Start::Earliest).unwrap();
    let mut ids: Vec<u32> = (0..6)
        .map(|_| reader.recv_timeout(common::WAIT).unwrap().payload().id)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
    assert_eq!(bus.queue::<String>("jobs").unwrap().len(), 2);
    drop((reader, orders));
    bus.close().unwrap();
    let names = table_names(&db);
    assert!(names.iter().all(|n| n.starts_with("embus.")), "{names:?}");
    assert!(names.iter().any(|n| n == "embus.t.orders.0"), "{names:?}");
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_format_5_database_is_upgraded_without_touching_tables_named_like_old_log_tables() {
    let dir = common::fresh_dir("app-db-v5");
    let db = app_database(&dir.join("app.redb"));
    // The application's, named like a log table of format version 4 (which version 5 and on
    // leave alone, the database being shared).
    let mine: TableDefinition<'static, u64, &str> = TableDefinition::new("t.mine.0");
    let meta: TableDefinition<'static, &str, u64> = TableDefinition::new("embus.meta");
    let txn = db.begin_write().unwrap();
    txn.open_table(mine).unwrap().insert(1, "mine").unwrap();
    txn.commit().unwrap();
    let bus = Broker::builder().database(Arc::clone(&db)).open().unwrap();
    use_broker(&bus);
    bus.close().unwrap();
    // As a version 5 build left it (the layout is the same but for dedupe id rows).
    let txn = db.begin_write().unwrap();
    txn.open_table(meta).unwrap().insert("format", 5).unwrap();
    txn.commit().unwrap();
    let before = table_names(&db);

    let bus = Broker::builder().database(Arc::clone(&db)).open().unwrap();
    check_restored(&bus, 0);
    bus.close().unwrap();
    assert_eq!(table_names(&db), before);
    let txn = db.begin_read().unwrap();
    let format = txn.open_table(meta).unwrap().get("format").unwrap();
    assert_eq!(format.map(|v| v.value()), Some(7));
    let table = txn.open_table(mine).unwrap();
    assert_eq!(
        table.get(1).unwrap().map(|v| v.value().to_owned()),
        Some("mine".to_owned())
    );
    assert_eq!(orders(&db), expected_orders());
    drop((table, txn, db));
    let _ = std::fs::remove_dir_all(&dir);
}

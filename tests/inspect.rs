//! `embus::inspect` against the broker: a closed file's group lag is what `Broker::stats` said
//! before the close, and a redrive that cannot move anything leaves the file as it was.

mod common;

use embus::inspect::StoreFile;
use embus::{Broker, Error, QueueOptions, Record, Retention, TopicOptions};

/// The lag of group `billing` on `orders`: live from the broker, then from the closed file.
fn lags(bus: Broker, path: &std::path::Path) -> (u64, u64) {
    let live = bus
        .stats()
        .topic("orders")
        .unwrap()
        .group("billing")
        .unwrap()
        .lag;
    bus.close().unwrap();
    let summary = StoreFile::open(path).unwrap().summary().unwrap();
    let topic = summary.topics.iter().find(|t| t.name == "orders").unwrap();
    let group = topic.groups.iter().find(|g| g.name == "billing").unwrap();
    (live, group.lag)
}

#[test]
fn a_group_that_never_acked_has_the_same_lag_in_the_file() {
    let path = common::fresh_dir("inspect-never-acked").join("s.embus");
    let bus = Broker::open(&path).unwrap();
    let orders = bus.topic::<u32>("orders").unwrap();
    orders.producer().send_batch(vec![1, 2, 3]).unwrap();
    let mut billing = orders.join_group("billing").unwrap();
    let held = billing.recv().unwrap();
    drop((held, billing, orders));
    assert_eq!(lags(bus, &path), (3, 3));
}

#[test]
fn every_partition_counts_in_the_file() {
    let path = common::fresh_dir("inspect-partitions").join("s.embus");
    let bus = Broker::open(&path).unwrap();
    let orders = bus
        .topic_with::<u32>("orders", TopicOptions::default().partitions(2))
        .unwrap();
    let producer = orders.producer();
    for k in 0..6u32 {
        producer
            .send_record(Record::new(k).key(format!("k{k}")))
            .unwrap();
    }
    let mut billing = orders.join_group("billing").unwrap();
    billing.recv().unwrap().ack().unwrap();
    drop((billing, orders, producer));
    let (live, file) = lags(bus, &path);
    assert_eq!((live, file), (5, 5));
}

#[test]
fn lag_counts_only_what_retention_kept() {
    let path = common::fresh_dir("inspect-trimmed").join("s.embus");
    let bus = Broker::open(&path).unwrap();
    let options = TopicOptions::default().retention(Retention::messages(2));
    let orders = bus.topic_with::<u32>("orders", options).unwrap();
    // The group lags under `Lag`: retention trims past its position.
    let group = embus::GroupOptions::default().overflow(embus::Overflow::Lag);
    let billing = orders.join_group_with("billing", group).unwrap();
    orders.producer().send_batch((0..5).collect()).unwrap();
    drop((billing, orders));
    assert_eq!(lags(bus, &path), (2, 2), "two retained, the rest trimmed");
}

#[test]
fn a_redrive_that_moves_nothing_leaves_the_file_untouched() {
    let path = common::fresh_dir("inspect-redrive-noop").join("s.embus");
    let bus = Broker::open(&path).unwrap();
    let options = QueueOptions::default().dead_letter("jobs.dead");
    bus.queue_with::<u32>("jobs", options).unwrap();
    bus.queue::<u32>("jobs.dead").unwrap();
    bus.close().unwrap();
    let before = std::fs::read(&path).unwrap();

    let mistyped = StoreFile::open(&path)
        .unwrap()
        .redrive("jobs.dead", "jbos", None);
    assert!(matches!(mistyped, Err(Error::NotFound { ref name }) if name == "jbos"));
    let empty = StoreFile::open(&path)
        .unwrap()
        .redrive("jobs.dead", "jobs", None);
    assert_eq!(empty.unwrap(), 0);
    assert!(std::fs::read(&path).unwrap() == before, "the file changed");
}

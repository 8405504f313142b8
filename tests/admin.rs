//! Listing and deleting topics and queues (`Broker::topics`, `queues`, `delete_topic`,
//! `delete_queue`): both backends, and across a reopen for the durable one.

mod common;

use common::waiting::Polled;
use common::{Backend, WAIT, both_backends};
use embus::{
    Broker, Error, QueueOptions, RecvError, SendError, Start, TopicOptions, TryRecvError,
    TrySendError,
};

both_backends!(listing_names_topics_and_queues_sorted);
fn listing_names_topics_and_queues_sorted(backend: Backend) {
    let bus = backend.bus();
    assert!(bus.topics().unwrap().is_empty());
    assert!(bus.queues().unwrap().is_empty());
    bus.topic::<u32>("orders").unwrap();
    bus.topic::<u32>("audit").unwrap();
    bus.queue_with::<u32>(
        "jobs",
        QueueOptions::default()
            .max_deliveries(2)
            .dead_letter("jobs.dead"),
    )
    .unwrap();
    bus.queue::<String>("emails").unwrap();
    assert_eq!(bus.topics().unwrap(), ["audit", "orders"]);
    assert_eq!(bus.queues().unwrap(), ["emails", "jobs", "jobs.dead"]);
}

#[test]
fn listing_includes_what_the_file_stores_and_this_run_has_not_declared() {
    let dir = common::fresh_dir("admin-listing");
    let path = dir.join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    bus.topic::<u32>("orders").unwrap();
    bus.queue_with::<u32>(
        "jobs",
        QueueOptions::default()
            .max_deliveries(2)
            .dead_letter("jobs.dead"),
    )
    .unwrap();
    bus.close().unwrap();

    let bus = Broker::open(&path).unwrap();
    bus.topic::<u32>("audit").unwrap(); // declared in this run only
    assert_eq!(bus.topics().unwrap(), ["audit", "orders"]);
    assert_eq!(bus.queues().unwrap(), ["jobs", "jobs.dead"]);
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

both_backends!(deleting_a_topic_fails_its_live_handles_clearly);
fn deleting_a_topic_fails_its_live_handles_clearly(backend: Backend) {
    let bus = backend.bus();
    let orders = bus
        .topic_with::<u32>("orders", TopicOptions::default().partitions(2))
        .unwrap();
    let producer = orders.producer();
    producer.send_batch(vec![1, 2, 3]).unwrap();
    let mut member = orders.join_group("billing").unwrap();
    let mut waiting = orders.subscribe(Start::Latest).unwrap();
    // A subscriber waiting to receive wakes up with the error.
    let blocked = Polled::waiting(waiting.recv_async());
    bus.delete_topic("orders").unwrap();
    match blocked.woken() {
        Err(RecvError::Deleted(d)) => assert_eq!(d.name(), "orders"),
        other => panic!("{other:?}"),
    }
    let err = member.recv().unwrap_err();
    assert!(
        matches!(&err, RecvError::Deleted(d) if d.name() == "orders"),
        "{err}"
    );
    assert!(err.to_string().contains("`orders`"), "{err}");
    assert!(matches!(member.try_recv(), Err(TryRecvError::Deleted(_))));
    assert_eq!(member.iter().count(), 0, "iterators end");
    // Sends hand the message back, with why.
    match producer.send(4) {
        Err(SendError::Failed(4, Error::Deleted { name })) => assert_eq!(name, "orders"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        producer.try_send(5),
        Err(TrySendError::Failed(5, Error::Deleted { .. }))
    ));
    match producer.send_batch(vec![6, 7]) {
        Err(SendError::Failed(back, Error::Deleted { .. })) => assert_eq!(back, [6, 7]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        orders.subscribe(Start::Earliest),
        Err(Error::Deleted { .. })
    ));
    assert!(matches!(
        orders.join_group("billing"),
        Err(Error::Deleted { .. })
    ));
    assert!(bus.topics().unwrap().is_empty());
    // Deleting again, or what never was, is `NotFound`.
    let err = bus.delete_topic("orders").unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { name } if name == "orders"),
        "{err}"
    );
    assert!(err.to_string().contains("`orders`"));
    // Declaring the name again creates a fresh, empty topic.
    let fresh = bus
        .topic_with::<String>("orders", TopicOptions::default())
        .unwrap();
    assert_eq!(fresh.offsets(0), Some(0..0));
    let receipt = fresh.producer().send("new".into()).unwrap();
    assert_eq!(receipt.offset, 0);
    let mut member = fresh.join_group("billing").unwrap();
    assert_eq!(member.recv_timeout(WAIT).unwrap().payload(), "new");
    // The old handle stays deleted.
    assert!(matches!(producer.send(8), Err(SendError::Failed(8, _))));
}

both_backends!(deleting_a_queue_fails_its_live_handles_clearly);
fn deleting_a_queue_fails_its_live_handles_clearly(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let producer = jobs.producer();
    producer.send_batch(vec![1, 2]).unwrap();
    let mut worker = jobs.consumer();
    let held = worker.recv_timeout(WAIT).unwrap();
    let mut idle = jobs.consumer();
    let _second = idle.recv_timeout(WAIT).unwrap(); // held: the next receive waits
    let blocked = Polled::waiting(idle.recv_async());
    bus.delete_queue("jobs").unwrap();
    assert!(matches!(blocked.woken(), Err(RecvError::Deleted(_))));
    assert!(matches!(worker.recv(), Err(RecvError::Deleted(_))));
    let _ = held.ack(); // does nothing to a namesake declared later
    match producer.send(3) {
        Err(SendError::Failed(3, Error::Deleted { name })) => assert_eq!(name, "jobs"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        jobs.dead_letter_undecodable(),
        Err(Error::Deleted { .. })
    ));
    assert!(matches!(
        bus.delete_topic("jobs"),
        Err(Error::NotFound { .. })
    ));
    let fresh = bus.queue::<u32>("jobs").unwrap();
    assert!(fresh.is_empty(), "a fresh queue");
    fresh.producer().send(9).unwrap();
    assert_eq!(*fresh.consumer().recv_timeout(WAIT).unwrap().payload(), 9);
}

// A message in flight when its queue is deleted goes with the queue: settling it later moves
// nothing to the dead-letter queue (which a durable store would not keep either).
both_backends!(an_in_flight_message_of_a_deleted_queue_is_not_dead_lettered);
fn an_in_flight_message_of_a_deleted_queue_is_not_dead_lettered(backend: Backend) {
    let bus = backend.bus();
    let options = QueueOptions::default()
        .max_deliveries(1)
        .dead_letter("jobs.dead");
    let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
    let dead = bus.queue::<u32>("jobs.dead").unwrap();
    jobs.producer().send(1).unwrap();
    let mut worker = jobs.consumer();
    let held = worker.recv_timeout(WAIT).unwrap();
    bus.delete_queue("jobs").unwrap();
    let _ = held.nack();
    assert_eq!(dead.len(), 0, "the deleted queue's message went with it");
}

both_backends!(deleting_a_dead_letter_queue_in_use_is_refused);
fn deleting_a_dead_letter_queue_in_use_is_refused(backend: Backend) {
    let bus = backend.bus();
    let options = QueueOptions::default()
        .max_deliveries(2)
        .dead_letter("jobs.dead");
    bus.queue_with::<u32>("jobs", options).unwrap();
    match bus.delete_queue("jobs.dead") {
        Err(err @ Error::InUse { .. }) => {
            let message = err.to_string();
            assert!(
                message.contains("`jobs.dead`") && message.contains("`jobs`"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    common::expect_mismatch(bus.delete_topic("jobs"), "jobs");
    bus.delete_queue("jobs").unwrap();
    bus.delete_queue("jobs.dead").unwrap();
    assert!(bus.queues().unwrap().is_empty());
}

#[test]
fn a_delete_is_durable_and_reaches_what_this_run_has_not_declared() {
    let dir = common::fresh_dir("admin-delete");
    let path = dir.join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    let orders = bus
        .topic_with::<u32>("orders", TopicOptions::default().partitions(2))
        .unwrap();
    orders.producer().send_batch((0..10).collect()).unwrap();
    let mut member = orders.join_group("billing").unwrap();
    common::take(&mut member, 3);
    drop((member, orders));
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send_batch(vec![1, 2, 3]).unwrap();
    drop(jobs);
    bus.queue::<u32>("kept")
        .unwrap()
        .producer()
        .send(7)
        .unwrap();
    bus.close().unwrap();

    // Deleted without being declared first in this run.
    let bus = Broker::open(&path).unwrap();
    bus.delete_topic("orders").unwrap();
    bus.delete_queue("jobs").unwrap();
    assert!(bus.topics().unwrap().is_empty());
    assert_eq!(bus.queues().unwrap(), ["kept"]);
    bus.close().unwrap();

    let bus = Broker::open(&path).unwrap();
    assert!(bus.topics().unwrap().is_empty());
    assert_eq!(bus.queues().unwrap(), ["kept"]);
    // Fresh namesakes: no messages, no group positions, offsets from 0, other options.
    let orders = bus.topic::<String>("orders").unwrap();
    assert_eq!(orders.partitions(), 1);
    assert_eq!(orders.offsets(0), Some(0..0));
    assert_eq!(orders.group_position("billing"), None);
    orders.producer().send("fresh".into()).unwrap();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    assert!(jobs.is_empty());
    assert_eq!(bus.queue::<u32>("kept").unwrap().len(), 1);
    drop((orders, jobs));
    bus.close().unwrap();

    let bus = Broker::open(&path).unwrap();
    let orders = bus.topic::<String>("orders").unwrap();
    let mut reader = orders.subscribe(Start::Earliest).unwrap();
    assert_eq!(reader.recv_timeout(WAIT).unwrap().payload(), "fresh");
    assert!(reader.try_recv().is_err());
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An ack of a deleted queue's message, arriving after a namesake was declared, must not
/// delete the namesake's message of the same id from the file.
#[test]
fn a_late_ack_of_a_deleted_queue_does_not_touch_its_namesake() {
    let dir = common::fresh_dir("admin-late-ack");
    let path = dir.join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send(1).unwrap();
    let mut worker = jobs.consumer();
    let held = worker.recv_timeout(WAIT).unwrap();
    bus.delete_queue("jobs").unwrap();
    let fresh = bus.queue::<u32>("jobs").unwrap();
    fresh.producer().send(2).unwrap(); // id 0, as the held one
    let _ = held.ack();
    bus.flush().unwrap();
    drop((worker, jobs, fresh));
    bus.close().unwrap();

    let bus = Broker::open(&path).unwrap();
    let fresh = bus.queue::<u32>("jobs").unwrap();
    assert_eq!(fresh.len(), 1, "the namesake's message survived");
    assert_eq!(*fresh.consumer().recv_timeout(WAIT).unwrap().payload(), 2);
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

both_backends!(a_producer_waiting_for_room_wakes_when_its_topic_is_deleted);
fn a_producer_waiting_for_room_wakes_when_its_topic_is_deleted(backend: Backend) {
    let bus = backend.bus();
    let options = TopicOptions::default()
        .retention(embus::Retention::messages(1))
        .overflow(embus::Overflow::Block);
    let topic = bus.topic_with::<u32>("ticks", options).unwrap();
    let _slow = topic.subscribe(Start::Earliest).unwrap(); // never reads: holds room
    let producer = topic.producer();
    producer.send(1).unwrap();
    let blocked = Polled::waiting(producer.send_async(2));
    bus.delete_topic("ticks").unwrap();
    match blocked.woken() {
        Err(SendError::Failed(2, Error::Deleted { name })) => assert_eq!(name, "ticks"),
        other => panic!("{other:?}"),
    }
}

/// A compacted topic (whose key index is a table of another key type) deletes cleanly, and a
/// namesake starts afresh.
#[test]
fn deleting_a_compacted_topic_drops_its_key_index() {
    let dir = common::fresh_dir("admin-compacted");
    let path = dir.join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    let options = TopicOptions::default().compaction(true);
    let prices = bus.topic_with::<u32>("prices", options).unwrap();
    let producer = prices.producer();
    for v in 0..5 {
        producer
            .send_record(embus::Record::new(v).key("apple"))
            .unwrap();
    }
    bus.delete_topic("prices").unwrap();
    let prices = bus.topic_with::<u32>("prices", options).unwrap();
    let producer = prices.producer();
    // Offset 0 again, for a fresh topic.
    producer
        .send_record(embus::Record::new(10).key("apple"))
        .unwrap();
    drop((producer, prices));
    bus.close().unwrap();

    let bus = Broker::open(&path).unwrap();
    let prices = bus.topic_with::<u32>("prices", options).unwrap();
    let mut reader = prices.subscribe(Start::Earliest).unwrap();
    assert_eq!(*reader.recv_timeout(WAIT).unwrap().payload(), 10);
    assert!(reader.try_recv().is_err());
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

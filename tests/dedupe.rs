//! Deduplication by message id (`Record::id`, `TopicOptions::dedupe`, `QueueOptions::dedupe`):
//! a duplicate within the window stores nothing and returns the original receipt, on every
//! send path, in both modes; a durable window survives a reopen.

mod common;

use std::time::Duration;

use common::{Backend, WAIT, both_backends, expect_invalid_option, expect_mismatch};
use embus::{
    Broker, Dedupe, Error, MESSAGE_ID, ManualClock, QueueOptions, Record, SendError, Start,
    TopicOptions,
};

const MINUTE: Duration = Duration::from_secs(60);

fn topic_options(window: Dedupe) -> TopicOptions {
    TopicOptions::default().dedupe(window)
}

both_backends!(a_duplicate_returns_the_original_receipt_and_stores_nothing);
fn a_duplicate_returns_the_original_receipt_and_stores_nothing(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u32>("orders", topic_options(Dedupe::within(MINUTE)))
        .unwrap();
    let mut reader = topic.subscribe(Start::Earliest).unwrap();
    let producer = topic.producer();
    let first = producer.send_record(Record::new(1).id("order-1")).unwrap();
    let offsets = topic.offsets(0).unwrap();
    let again = producer.send_record(Record::new(2).id("order-1")).unwrap();
    assert_eq!(again, first);
    assert_eq!(topic.offsets(0).unwrap(), offsets, "nothing stored");
    let again = producer
        .try_send_record(Record::new(3).id("order-1"))
        .unwrap();
    assert_eq!(again, first);
    let again = producer
        .send_record_timeout(Record::new(4).id("order-1"), WAIT)
        .unwrap();
    assert_eq!(again, first);
    // Without an id, never deduplicated.
    let plain = producer.send(5).unwrap();
    assert_ne!(plain, first);
    let message = reader.recv_timeout(WAIT).unwrap();
    assert_eq!(*message.payload(), 1);
    assert_eq!(message.id(), Some("order-1"));
    assert_eq!(message.headers().get(MESSAGE_ID), Some(&b"order-1"[..]));
    assert_eq!(*reader.recv_timeout(WAIT).unwrap().payload(), 5);
    assert!(reader.try_recv().is_err(), "one message per id");
    assert_eq!(topic.retained(), 2);
}

both_backends!(ids_are_per_topic_across_partitions);
fn ids_are_per_topic_across_partitions(backend: Backend) {
    let bus = backend.bus();
    let options = topic_options(Dedupe::last(100)).partitions(4);
    let topic = bus.topic_with::<u32>("events", options).unwrap();
    let producer = topic.producer();
    let first = producer
        .send_record(Record::new(1).key("a").id("e-1"))
        .unwrap();
    // Another key (most likely another partition): still the same id.
    for key in ["b", "c", "d", "e", "f"] {
        let again = producer
            .send_record(Record::new(2).key(key).id("e-1"))
            .unwrap();
        assert_eq!(again, first);
    }
    assert_eq!(topic.retained(), 1);
    // The same id on another topic is another message.
    let other = bus
        .topic_with::<u32>("other", topic_options(Dedupe::last(100)))
        .unwrap();
    other
        .producer()
        .send_record(Record::new(3).id("e-1"))
        .unwrap();
    assert_eq!(other.retained(), 1);
}

both_backends!(a_queue_deduplicates_even_after_the_ack);
fn a_queue_deduplicates_even_after_the_ack(backend: Backend) {
    let bus = backend.bus();
    let options = QueueOptions::default().dedupe(Dedupe::within(MINUTE));
    let queue = bus.queue_with::<u32>("jobs", options).unwrap();
    let producer = queue.producer();
    let mut consumer = queue.consumer();
    let first = producer.send_record(Record::new(1).id("job-1")).unwrap();
    assert_eq!(
        producer.send_record(Record::new(1).id("job-1")).unwrap(),
        first
    );
    assert_eq!(queue.len(), 1);
    let message = consumer.recv_timeout(WAIT).unwrap();
    assert_eq!(message.id(), Some("job-1"));
    message.ack().unwrap();
    assert_eq!(
        producer
            .try_send_record(Record::new(1).id("job-1"))
            .unwrap(),
        first
    );
    assert_eq!(queue.len(), 0, "an acked message is not sent again");
    let second = producer.send_record(Record::new(2).id("job-2")).unwrap();
    assert_ne!(second, first);
    assert_eq!(queue.len(), 1);
}

both_backends!(a_batch_with_duplicates_inside_stores_each_id_once);
fn a_batch_with_duplicates_inside_stores_each_id_once(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u32>("t", topic_options(Dedupe::last(1_000)).partitions(3))
        .unwrap();
    let queue = bus
        .queue_with::<u32>("q", QueueOptions::default().dedupe(Dedupe::last(1_000)))
        .unwrap();
    let before = topic
        .producer()
        .send_record(Record::new(0).id("x"))
        .unwrap();
    let batch = || {
        vec![
            Record::new(1).id("a"),
            Record::new(2).id("b"),
            Record::new(3).id("a"),
            Record::new(4),
            Record::new(5).id("x"),
            Record::new(6).id("b"),
        ]
    };
    let receipts = topic.producer().send_record_batch(batch()).unwrap();
    assert_eq!(receipts.len(), 6);
    assert_eq!(receipts[0], receipts[2]);
    assert_eq!(receipts[1], receipts[5]);
    assert_eq!(receipts[4], before);
    assert_ne!(receipts[0], receipts[1]);
    assert_eq!(topic.retained(), 4, "x, a, b and the one without an id");
    let again = topic.producer().send_record_batch(batch()).unwrap();
    assert_eq!(again[..3], receipts[..3]);
    assert_ne!(again[3], receipts[3], "no id: stored again");
    assert_eq!(topic.retained(), 5);

    let receipts = queue.producer().send_record_batch(batch()).unwrap();
    assert_eq!(receipts[0], receipts[2]);
    assert_eq!(receipts[1], receipts[5]);
    assert_eq!(queue.len(), 4, "a, b, x and the one without an id");
    let mut consumer = queue.consumer();
    let ids: Vec<Option<String>> = (0..4)
        .map(|_| {
            let m = consumer.recv_timeout(WAIT).unwrap();
            let id = m.id().map(str::to_owned);
            m.ack().unwrap();
            id
        })
        .collect();
    let expected = [Some("a"), Some("b"), None, Some("x")].map(|s| s.map(str::to_owned));
    assert_eq!(ids, expected);
}

both_backends!(the_time_window_runs_on_the_broker_clock);
fn the_time_window_runs_on_the_broker_clock(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let topic = bus
        .topic_with::<u32>("t", topic_options(Dedupe::within(MINUTE)))
        .unwrap();
    let queue = bus
        .queue_with::<u32>("q", QueueOptions::default().dedupe(Dedupe::within(MINUTE)))
        .unwrap();
    let (tp, qp) = (topic.producer(), queue.producer());
    let first = (
        tp.send_record(Record::new(1).id("a")).unwrap(),
        qp.send_record(Record::new(1).id("a")).unwrap(),
    );
    clock.advance(MINUTE);
    // Exactly the window later: still a duplicate.
    assert_eq!(tp.send_record(Record::new(2).id("a")).unwrap(), first.0);
    assert_eq!(qp.send_record(Record::new(2).id("a")).unwrap(), first.1);
    clock.advance(Duration::from_millis(1));
    // Past the window: stored again, and remembered anew.
    let second = tp.send_record(Record::new(3).id("a")).unwrap();
    assert_ne!(second, first.0);
    assert_eq!(tp.send_record(Record::new(4).id("a")).unwrap(), second);
    let second_q = qp.send_record(Record::new(3).id("a")).unwrap();
    assert_ne!(second_q, first.1);
    assert_eq!(topic.retained(), 2);
    assert_eq!(queue.len(), 2);
}

both_backends!(the_count_window_keeps_the_last_ids);
fn the_count_window_keeps_the_last_ids(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u32>("t", topic_options(Dedupe::last(3)))
        .unwrap();
    let producer = topic.producer();
    let receipts: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|id| producer.send_record(Record::new(0).id(*id)).unwrap())
        .collect();
    // b, c and d are the last three: duplicates.
    for (i, id) in ["b", "c", "d"].iter().enumerate() {
        let again = producer.send_record(Record::new(1).id(*id)).unwrap();
        assert_eq!(again, receipts[i + 1]);
    }
    assert_eq!(topic.retained(), 4);
    // a left the window: stored again.
    let a = producer.send_record(Record::new(2).id("a")).unwrap();
    assert_ne!(a, receipts[0]);
    assert_eq!(topic.retained(), 5);
}

both_backends!(a_combined_window_forgets_by_either_limit);
fn a_combined_window_forgets_by_either_limit(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let window = Dedupe::within(MINUTE).and_last(2);
    let queue = bus
        .queue_with::<u32>("q", QueueOptions::default().dedupe(window))
        .unwrap();
    let producer = queue.producer();
    let a = producer.send_record(Record::new(0).id("a")).unwrap();
    assert_eq!(producer.send_record(Record::new(0).id("a")).unwrap(), a);
    clock.advance(MINUTE * 2);
    assert_ne!(
        producer.send_record(Record::new(0).id("a")).unwrap(),
        a,
        "by time"
    );
    producer.send_record(Record::new(0).id("b")).unwrap();
    producer.send_record(Record::new(0).id("c")).unwrap();
    let before = queue.len();
    producer.send_record(Record::new(0).id("a")).unwrap();
    assert_eq!(queue.len(), before + 1, "by count");
}

both_backends!(#[tokio::test] async async_sends_are_deduplicated);
async fn async_sends_are_deduplicated(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u32>("t", topic_options(Dedupe::within(MINUTE)))
        .unwrap();
    let queue = bus
        .queue_with::<u32>("q", QueueOptions::default().dedupe(Dedupe::within(MINUTE)))
        .unwrap();
    let (tp, qp) = (topic.producer(), queue.producer());
    let first = tp.send_record_async(Record::new(1).id("a")).await.unwrap();
    let again = tp.send_record_async(Record::new(2).id("a")).await.unwrap();
    assert_eq!(again, first);
    // A blocking send sees what an async one sent, and the other way round.
    assert_eq!(tp.send_record(Record::new(3).id("a")).unwrap(), first);
    let b = tp.send_record(Record::new(4).id("b")).unwrap();
    assert_eq!(
        tp.send_record_async(Record::new(5).id("b")).await.unwrap(),
        b
    );
    assert_eq!(topic.retained(), 2);
    let q = qp.send_record_async(Record::new(1).id("a")).await.unwrap();
    assert_eq!(
        qp.send_record_async(Record::new(1).id("a")).await.unwrap(),
        q
    );
    assert_eq!(queue.len(), 1);
}

both_backends!(invalid_ids_are_refused_with_the_record_handed_back);
fn invalid_ids_are_refused_with_the_record_handed_back(backend: Backend) {
    let bus = backend.bus();
    // Checked on every topic and queue, with or without a window.
    let plain = bus.topic::<u32>("plain").unwrap();
    let deduped = bus
        .queue_with::<u32>("q", QueueOptions::default().dedupe(Dedupe::last(10)))
        .unwrap();
    let too_long = "x".repeat(257);
    for id in ["", too_long.as_str()] {
        for producer in [plain.producer(), deduped.producer()] {
            match producer.send_record(Record::new(7).id(id)) {
                Err(SendError::Failed(record, Error::InvalidMessageId { name, .. })) => {
                    assert_eq!(*record.payload(), 7);
                    assert!(name == "plain" || name == "q");
                }
                other => panic!("expected InvalidMessageId, got {other:?}"),
            }
            match producer.send_record_batch(vec![Record::new(1), Record::new(2).id(id)]) {
                Err(SendError::Failed(records, Error::InvalidMessageId { .. })) => {
                    assert_eq!(records.len(), 2);
                }
                other => panic!("expected InvalidMessageId, got {other:?}"),
            }
        }
    }
    // 256 bytes is fine; an id that is not UTF-8 (a raw header) is refused.
    let longest = "y".repeat(256);
    plain
        .producer()
        .send_record(Record::new(1).id(longest))
        .unwrap();
    let raw = Record::new(1).header(MESSAGE_ID, [0xff, 0xfe]);
    assert!(matches!(
        deduped.producer().send_record(raw),
        Err(SendError::Failed(_, Error::InvalidMessageId { .. }))
    ));
    assert_eq!(plain.retained(), 1);
    assert_eq!(deduped.len(), 0);
}

both_backends!(the_window_is_part_of_the_declaration);
fn the_window_is_part_of_the_declaration(backend: Backend) {
    let bus = backend.bus();
    bus.topic_with::<u32>("t", topic_options(Dedupe::within(MINUTE)))
        .unwrap();
    bus.topic_with::<u32>("t", topic_options(Dedupe::within(MINUTE)))
        .unwrap();
    expect_mismatch(
        bus.topic_with::<u32>("t", topic_options(Dedupe::last(5))),
        "t",
    );
    expect_mismatch(bus.topic_with::<u32>("t", TopicOptions::default()), "t");
    bus.queue_with::<u32>("q", QueueOptions::default().dedupe(Dedupe::last(5)))
        .unwrap();
    expect_mismatch(
        bus.queue_with::<u32>("q", QueueOptions::default().dedupe(Dedupe::last(6))),
        "q",
    );
    expect_invalid_option(
        bus.topic_with::<u32>("z", topic_options(Dedupe::within(Duration::ZERO))),
        "z",
        "dedupe",
    );
    expect_invalid_option(
        bus.queue_with::<u32>("z", QueueOptions::default().dedupe(Dedupe::last(0))),
        "z",
        "dedupe",
    );
}

#[test]
fn a_durable_window_survives_a_reopen() {
    let clock = ManualClock::new();
    let (dir, open) = common::reopenable("dedupe-reopen", &clock);
    let topic_window = topic_options(Dedupe::within(MINUTE)).partitions(2);
    let queue_window = QueueOptions::default().dedupe(Dedupe::last(2));
    let bus = open();
    let topic = bus.topic_with::<u32>("t", topic_window).unwrap();
    let queue = bus.queue_with::<u32>("q", queue_window.clone()).unwrap();
    let t1 = topic
        .producer()
        .send_record(Record::new(1).id("a"))
        .unwrap();
    let receipts = topic
        .producer()
        .send_record_batch(vec![Record::new(2).id("b"), Record::new(3).id("b")])
        .unwrap();
    let q: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            queue
                .producer()
                .send_record(Record::new(0).id(*id))
                .unwrap()
        })
        .collect();
    drop((topic, queue));
    bus.close().unwrap();

    let bus = open();
    let topic = bus.topic_with::<u32>("t", topic_window).unwrap();
    let queue = bus.queue_with::<u32>("q", queue_window.clone()).unwrap();
    assert_eq!(
        topic
            .producer()
            .send_record(Record::new(9).id("a"))
            .unwrap(),
        t1
    );
    assert_eq!(
        topic
            .producer()
            .send_record(Record::new(9).id("b"))
            .unwrap(),
        receipts[0]
    );
    assert_eq!(topic.retained(), 2);
    // The count window kept b and c; a left it before the reopen.
    assert_eq!(
        queue
            .producer()
            .send_record(Record::new(9).id("b"))
            .unwrap(),
        q[1]
    );
    assert_eq!(
        queue
            .producer()
            .send_record(Record::new(9).id("c"))
            .unwrap(),
        q[2]
    );
    assert_eq!(queue.len(), 3);
    let a = queue
        .producer()
        .send_record(Record::new(9).id("a"))
        .unwrap();
    assert_ne!(a, q[0]);
    assert_eq!(queue.len(), 4);
    drop((topic, queue));
    bus.close().unwrap();

    // Past the time window, across a reopen: stored again.
    clock.advance(MINUTE * 2);
    let bus = open();
    let topic = bus.topic_with::<u32>("t", topic_window).unwrap();
    let again = topic
        .producer()
        .send_record(Record::new(9).id("a"))
        .unwrap();
    assert_ne!(again, t1);
    assert_eq!(topic.retained(), 3);
    drop(topic);
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deleting_a_topic_deletes_its_window() {
    let dir = common::fresh_dir("dedupe-delete");
    let path = dir.join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    let options = topic_options(Dedupe::within(MINUTE));
    let topic = bus.topic_with::<u32>("t", options).unwrap();
    let first = topic
        .producer()
        .send_record(Record::new(1).id("a"))
        .unwrap();
    drop(topic);
    bus.delete_topic("t").unwrap();
    let topic = bus.topic_with::<u32>("t", options).unwrap();
    topic
        .producer()
        .send_record(Record::new(2).id("a"))
        .unwrap();
    assert_eq!(
        topic.retained(),
        1,
        "the new topic does not know the old ids"
    );
    drop(topic);
    bus.close().unwrap();
    let bus = Broker::open(&path).unwrap();
    let topic = bus.topic_with::<u32>("t", options).unwrap();
    let again = topic
        .producer()
        .send_record(Record::new(3).id("a"))
        .unwrap();
    assert_eq!(
        topic.retained(),
        1,
        "its id survived the reopen, the old one did not"
    );
    let _ = first;
    let _ = again;
    drop(topic);
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

both_backends!(a_duplicate_after_close_or_delete_is_refused);
fn a_duplicate_after_close_or_delete_is_refused(backend: Backend) {
    let bus = backend.bus();
    let topic = bus
        .topic_with::<u32>("t", topic_options(Dedupe::last(10)))
        .unwrap();
    let queue = bus
        .queue_with::<u32>("q", QueueOptions::default().dedupe(Dedupe::last(10)))
        .unwrap();
    let (tp, qp) = (topic.producer(), queue.producer());
    tp.send_record(Record::new(1).id("a")).unwrap();
    qp.send_record(Record::new(1).id("a")).unwrap();
    bus.delete_topic("t").unwrap();
    assert!(matches!(
        tp.send_record(Record::new(1).id("a")),
        Err(SendError::Failed(_, Error::Deleted { .. }))
    ));
    bus.close().unwrap();
    assert!(matches!(
        qp.send_record(Record::new(1).id("a")),
        Err(SendError::Disconnected(_))
    ));
    assert!(matches!(
        qp.send_record_batch(vec![Record::new(1).id("a")]),
        Err(SendError::Disconnected(_))
    ));
}

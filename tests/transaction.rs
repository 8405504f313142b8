//! Transactions: all-or-nothing sends and acks, visibility, abort, room, fencing and errors,
//! on both backends.

mod common;

use std::time::Duration;

use common::{Backend, WAIT, both_backends};
use embus::{
    Broker, Error, GroupOptions, ManualClock, Overflow, QueueOptions, Record, Retention, SendError,
    Start, TopicOptions, TryRecvError,
};

both_backends!(nothing_is_visible_before_the_commit_and_everything_after);
fn nothing_is_visible_before_the_commit_and_everything_after(backend: Backend) {
    let bus = backend.bus();
    let orders = bus
        .topic_with::<String>("orders", TopicOptions::default().partitions(3))
        .unwrap();
    let emails = bus.queue::<String>("emails").unwrap();
    let mut audit = orders.subscribe(Start::Earliest).unwrap();
    let mut mailer = emails.consumer();

    let mut tx = bus.transaction().unwrap();
    tx.send(&orders.producer(), "o1".into()).unwrap();
    tx.send(&emails.producer(), "e1".into()).unwrap();
    tx.send_record(&orders.producer(), Record::new("o2".into()).key("k"))
        .unwrap();
    assert_eq!(tx.len(), 3);
    assert!(matches!(audit.try_recv(), Err(TryRecvError::Empty)));
    assert!(matches!(mailer.try_recv(), Err(TryRecvError::Empty)));
    assert_eq!(emails.len(), 0);

    let receipts = tx.commit().unwrap();
    assert_eq!(receipts.len(), 3);
    assert_eq!(receipts[1].partition, 0, "the queue's receipt");
    let mut seen: Vec<String> = (0..2)
        .map(|_| audit.recv_timeout(WAIT).unwrap().payload().clone())
        .collect();
    seen.sort();
    assert_eq!(seen, ["o1", "o2"]);
    assert_eq!(mailer.recv_timeout(WAIT).unwrap().payload(), "e1");
    // Receipts name where each record went, in send order.
    let o2 = orders
        .get(receipts[2].partition, receipts[2].offset)
        .unwrap();
    assert_eq!(o2.unwrap().payload(), "o2");
}

both_backends!(dropping_or_aborting_sends_nothing);
fn dropping_or_aborting_sends_nothing(backend: Backend) {
    let bus = backend.bus();
    let orders = bus.topic::<u32>("orders").unwrap();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let mut tx = bus.transaction().unwrap();
    tx.send(&orders.producer(), 1).unwrap();
    tx.send(&jobs.producer(), 2).unwrap();
    tx.abort();
    let mut tx = bus.transaction().unwrap();
    tx.send(&orders.producer(), 3).unwrap();
    drop(tx);
    bus.flush().unwrap();
    assert_eq!(orders.retained(), 0);
    assert_eq!(jobs.len(), 0);
    // A later transaction gets the offsets the dropped ones never used.
    let mut tx = bus.transaction().unwrap();
    tx.send(&orders.producer(), 4).unwrap();
    assert_eq!(tx.commit().unwrap()[0].offset, 0);
}

both_backends!(an_ack_takes_effect_only_with_the_commit);
fn an_ack_takes_effect_only_with_the_commit(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let done = bus.queue::<u32>("done").unwrap();
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    let job = worker.recv_timeout(WAIT).unwrap();

    let mut tx = bus.transaction().unwrap();
    let out = job.payload() * 10;
    tx.ack(job).unwrap();
    tx.send(&done.producer(), out).unwrap();
    assert_eq!(jobs.in_flight(), 1, "not acked before the commit");
    tx.commit().unwrap();
    assert_eq!((jobs.in_flight(), jobs.len()), (0, 0));
    assert_eq!(done.len(), 1);
}

both_backends!(an_aborted_transaction_releases_its_acks_for_redelivery);
fn an_aborted_transaction_releases_its_acks_for_redelivery(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let orders = bus.topic::<u32>("orders").unwrap();
    jobs.producer().send(1).unwrap();
    orders.producer().send(2).unwrap();
    let mut worker = jobs.consumer();
    let mut member = orders.join_group("billing").unwrap();

    let mut tx = bus.transaction().unwrap();
    tx.ack(worker.recv_timeout(WAIT).unwrap()).unwrap();
    tx.ack(member.recv_timeout(WAIT).unwrap()).unwrap();
    tx.send(&jobs.producer(), 3).unwrap();
    drop(tx);

    // Released as a nack: delivered again (the default backoff retries the first at once).
    let again = worker.recv_timeout(WAIT).unwrap();
    assert_eq!((*again.payload(), again.delivery_count()), (1, 2));
    again.ack().unwrap();
    let again = member.recv_timeout(WAIT).unwrap();
    assert_eq!((*again.payload(), again.delivery_count()), (2, 2));
    again.ack().unwrap();
    assert!(
        matches!(worker.try_recv(), Err(TryRecvError::Empty)),
        "3 was not sent"
    );
}

both_backends!(a_full_queue_fails_the_commit_at_once_and_changes_nothing);
fn a_full_queue_fails_the_commit_at_once_and_changes_nothing(backend: Backend) {
    let bus = backend.bus();
    let orders = bus.topic::<u32>("orders").unwrap();
    let jobs = bus
        .queue_with::<u32>("jobs", QueueOptions::default().capacity(2))
        .unwrap();
    let inbox = bus.queue::<u32>("inbox").unwrap();
    jobs.producer().send(0).unwrap();
    inbox.producer().send(100).unwrap();
    let mut reader = inbox.consumer();
    let input = reader.recv_timeout(WAIT).unwrap();

    let mut tx = bus.transaction().unwrap();
    tx.ack(input).unwrap();
    tx.send(&orders.producer(), 1).unwrap();
    tx.send(&jobs.producer(), 2).unwrap();
    tx.send(&jobs.producer(), 3).unwrap(); // one more than there is room for
    let err = tx.commit().unwrap_err();
    assert!(
        matches!(err.error(), Error::Full { name } if name == "jobs"),
        "{err}"
    );
    assert_eq!(orders.retained(), 0, "nothing sent");
    assert_eq!(jobs.len(), 1);
    assert_eq!(inbox.in_flight(), 1, "nothing acked");

    // Once there is room, the same transaction commits.
    let tx = err.into_transaction();
    let mut worker = jobs.consumer();
    worker.recv_timeout(WAIT).unwrap().ack().unwrap();
    let receipts = tx.commit().unwrap();
    assert_eq!(receipts.len(), 3);
    assert_eq!(
        (jobs.len(), orders.retained(), inbox.in_flight()),
        (2, 1, 0)
    );
    drop(tx_records_handed_back(&bus));
}

/// A failed commit hands the records back through the transaction.
fn tx_records_handed_back(bus: &Broker) -> Vec<Record<u32>> {
    let jobs = bus
        .queue_with::<u32>("tiny", QueueOptions::default().capacity(1))
        .unwrap();
    let names = bus.queue::<String>("names").unwrap();
    let mut tx = bus.transaction().unwrap();
    tx.send(&jobs.producer(), 1).unwrap();
    tx.send(&names.producer(), "n".into()).unwrap();
    tx.send(&jobs.producer(), 2).unwrap();
    let err = tx.commit().unwrap_err();
    assert!(matches!(err.error(), Error::Full { .. }));
    let mut tx = err.into_transaction();
    assert_eq!(tx.len(), 3);
    let records = tx.take_records::<u32>();
    assert_eq!(tx.len(), 1, "the `String` one is left");
    let payloads: Vec<u32> = records.iter().map(|r| *r.payload()).collect();
    assert_eq!(payloads, [1, 2]);
    let names: Vec<String> = tx
        .take_records::<String>()
        .into_iter()
        .map(Record::into_payload)
        .collect();
    assert_eq!(names, ["n"]);
    assert!(tx.commit().unwrap().is_empty(), "nothing left to send");
    records
}

both_backends!(a_topic_under_block_without_room_fails_the_commit);
fn a_topic_under_block_without_room_fails_the_commit(backend: Backend) {
    let bus = backend.bus();
    let options = TopicOptions::default()
        .retention(Retention::messages(2))
        .overflow(Overflow::Block);
    let orders = bus.topic_with::<u32>("orders", options).unwrap();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let mut slow = orders.subscribe(Start::Earliest).unwrap();
    orders.producer().send(0).unwrap();
    let mut tx = bus.transaction().unwrap();
    tx.send(&jobs.producer(), 9).unwrap();
    tx.send(&orders.producer(), 1).unwrap();
    tx.send(&orders.producer(), 2).unwrap();
    let err = tx.commit().unwrap_err();
    assert!(matches!(err.error(), Error::Full { name } if name == "orders"));
    assert_eq!((orders.retained(), jobs.len()), (1, 0));
    // The offsets taken back are handed out again.
    assert_eq!(slow.recv_timeout(WAIT).unwrap().payload(), &0);
    let receipts = err.into_transaction().commit().unwrap();
    assert_eq!((receipts[1].offset, receipts[2].offset), (1, 2));
}

both_backends!(a_member_that_lost_its_partition_is_fenced);
fn a_member_that_lost_its_partition_is_fenced(backend: Backend) {
    let bus = backend.bus();
    let input = bus
        .topic_with::<u32>("input", TopicOptions::default().partitions(2))
        .unwrap();
    let output = bus.topic::<u32>("output").unwrap();
    let producer = input.producer();
    let sent = [producer.send(1).unwrap(), producer.send(2).unwrap()];
    assert_ne!(sent[0].partition, sent[1].partition, "spread round robin");
    let mut first = input.join_group("etl").unwrap();
    let (a, b) = (
        first.recv_timeout(WAIT).unwrap(),
        first.recv_timeout(WAIT).unwrap(),
    );
    assert_ne!(
        a.partition(),
        b.partition(),
        "both partitions are the first member's"
    );

    // A second member joins: one partition moves to it, with its unacked message.
    let mut second = input.join_group("etl").unwrap();
    let mut tx = bus.transaction().unwrap();
    tx.send(&output.producer(), a.payload() * 10).unwrap();
    tx.send(&output.producer(), b.payload() * 10).unwrap();
    tx.ack(a).unwrap();
    tx.ack(b).unwrap();
    let err = tx.commit().unwrap_err();
    let Error::Fenced {
        topic,
        group,
        partition,
        ..
    } = err.error()
    else {
        panic!("expected Fenced, got {err}");
    };
    assert_eq!((topic.as_str(), group.as_str()), ("input", "etl"));
    assert_eq!(output.retained(), 0, "nothing was sent");
    let moved = *partition;
    drop(err); // releases the acks of the partition the first member kept

    // The new owner gets the message of the partition that moved; nothing was lost.
    let taken = second.recv_timeout(WAIT).unwrap();
    assert_eq!(taken.partition(), moved);
    let mut tx = bus.transaction().unwrap();
    tx.send(&output.producer(), taken.payload() * 10).unwrap();
    tx.ack(taken).unwrap();
    tx.commit().unwrap();
    assert_eq!(output.retained(), 1);
}

both_backends!(a_timed_out_group_delivery_is_fenced);
fn a_timed_out_group_delivery_is_fenced(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let input = bus.topic::<u32>("input").unwrap();
    let output = bus.queue::<u32>("output").unwrap();
    input.producer().send(5).unwrap();
    let options = GroupOptions::default().ack_timeout(Duration::from_secs(1));
    let mut member = input.join_group_with("etl", options).unwrap();
    let stale = member.recv_timeout(WAIT).unwrap();
    clock.advance(Duration::from_secs(2)); // the delivery times out
    let mut tx = bus.transaction().unwrap();
    tx.send(&output.producer(), 50).unwrap();
    tx.ack(stale).unwrap();
    let err = tx.commit().unwrap_err();
    assert!(
        matches!(err.error(), Error::Fenced { offset: 0, .. }),
        "{err}"
    );
    assert_eq!(output.len(), 0);
    drop(err);
    // Its redelivery commits.
    let again = member.recv_timeout(WAIT).unwrap();
    assert_eq!(again.delivery_count(), 2);
    let mut tx = bus.transaction().unwrap();
    tx.send(&output.producer(), 50).unwrap();
    tx.ack(again).unwrap();
    tx.commit().unwrap();
    assert_eq!(output.len(), 1);
    assert_eq!(input.group_position("etl"), Some(vec![1]));
}

both_backends!(a_timed_out_queue_delivery_fails_the_commit);
fn a_timed_out_queue_delivery_fails_the_commit(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let options = QueueOptions::default().ack_timeout(Duration::from_secs(1));
    let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
    let out = bus.topic::<u32>("out").unwrap();
    jobs.producer().send(1).unwrap();
    let mut worker = jobs.consumer();
    let job = worker.recv_timeout(WAIT).unwrap();
    clock.advance(Duration::from_secs(2));
    let mut tx = bus.transaction().unwrap();
    tx.send(&out.producer(), 1).unwrap();
    tx.ack(job).unwrap();
    let err = tx.commit().unwrap_err();
    assert!(
        matches!(err.error(), Error::DeliveryEnded { queue, offset: 0, .. } if queue == "jobs"),
        "{err}"
    );
    assert_eq!(out.retained(), 0);
}

both_backends!(a_group_consumes_transforms_and_produces_in_one_commit);
fn a_group_consumes_transforms_and_produces_in_one_commit(backend: Backend) {
    let bus = backend.bus();
    let input = bus.topic::<u32>("input").unwrap();
    let doubled = bus.topic::<u32>("doubled").unwrap();
    let audit = bus.queue::<String>("audit").unwrap();
    for i in 0..20 {
        input.producer().send(i).unwrap();
    }
    let mut member = input.join_group("etl").unwrap();
    for _ in 0..20 {
        let msg = member.recv_timeout(WAIT).unwrap();
        let mut tx = bus.transaction().unwrap();
        tx.send(&doubled.producer(), msg.payload() * 2).unwrap();
        tx.send(&audit.producer(), format!("did {}", msg.payload()))
            .unwrap();
        tx.ack(msg).unwrap();
        tx.commit().unwrap();
    }
    assert_eq!(input.group_position("etl"), Some(vec![20]));
    assert_eq!((doubled.retained(), audit.len()), (20, 20));
    bus.flush().unwrap();
}

both_backends!(errors_are_typed_and_hand_the_message_back);
fn errors_are_typed_and_hand_the_message_back(backend: Backend) {
    let bus = backend.bus();
    let other = Broker::memory();
    let foreign = other.queue::<u32>("jobs").unwrap();
    let mut tx = bus.transaction().unwrap();
    match tx.send(&foreign.producer(), 7) {
        Err(SendError::Failed(7, Error::ForeignBroker { name })) => assert_eq!(name, "jobs"),
        other => panic!("expected ForeignBroker, got {other:?}"),
    }
    foreign.producer().send(8).unwrap();
    let msg = foreign.consumer().recv_timeout(WAIT).unwrap();
    let err = tx.ack(msg).unwrap_err();
    assert!(matches!(err.error(), Error::ForeignBroker { .. }));
    assert_eq!(*err.into_inner().payload(), 8, "the message is handed back");

    let compacted = bus
        .topic_with::<u32>("latest", TopicOptions::default().compaction(true))
        .unwrap();
    match tx.send(&compacted.producer(), 1) {
        Err(SendError::Failed(1, Error::KeyRequired { topic })) => assert_eq!(topic, "latest"),
        other => panic!("expected KeyRequired, got {other:?}"),
    }
    let doomed = bus.queue::<u32>("doomed").unwrap();
    let producer = doomed.producer();
    bus.delete_queue("doomed").unwrap();
    assert!(matches!(
        tx.send(&producer, 2),
        Err(SendError::Failed(2, Error::Deleted { .. }))
    ));
    assert!(tx.is_empty());
    drop(tx);

    let jobs = bus.queue::<u32>("jobs").unwrap();
    let mut tx = bus.transaction().unwrap();
    tx.send(&jobs.producer(), 3).unwrap();
    bus.clone().close().unwrap();
    let err = tx.commit().unwrap_err();
    assert!(matches!(err.error(), Error::Closed), "{err}");
    assert_eq!(err.into_transaction().take_records::<u32>().len(), 1);
    assert!(matches!(bus.transaction(), Err(Error::Closed)));
}

#[test]
fn concurrent_transactions_over_the_same_targets_do_not_deadlock() {
    let bus = Broker::memory();
    let a = bus.queue::<u32>("a").unwrap();
    let b = bus.topic::<u32>("b").unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (bus, a, b) = (bus.clone(), a.clone(), b.clone());
            std::thread::spawn(move || {
                for i in 0..500 {
                    let mut tx = bus.transaction().unwrap();
                    // Alternate the order the targets are added in.
                    if (t + i) % 2 == 0 {
                        tx.send(&a.producer(), i).unwrap();
                        tx.send(&b.producer(), i).unwrap();
                    } else {
                        tx.send(&b.producer(), i).unwrap();
                        tx.send(&a.producer(), i).unwrap();
                    }
                    tx.commit().unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!((a.len(), b.retained()), (2000, 2000));
}

#[test]
fn a_durable_commit_stores_outputs_acks_and_positions_together() {
    let dir = common::fresh_dir("tx-reopen");
    let path = dir.join("bus.embus");
    {
        let bus = Broker::open(&path).unwrap();
        let input = bus.topic::<u32>("input").unwrap();
        let jobs = bus.queue::<u32>("jobs").unwrap();
        let out = bus.topic::<u32>("out").unwrap();
        for i in 0..3 {
            input.producer().send(i).unwrap();
            jobs.producer().send(100 + i).unwrap();
        }
        let mut member = input.join_group("etl").unwrap();
        let mut worker = jobs.consumer();
        for _ in 0..2 {
            let (m, j) = (
                member.recv_timeout(WAIT).unwrap(),
                worker.recv_timeout(WAIT).unwrap(),
            );
            let mut tx = bus.transaction().unwrap();
            tx.send(&out.producer(), m.payload() + j.payload()).unwrap();
            tx.ack(m).unwrap();
            tx.ack(j).unwrap();
            tx.commit().unwrap();
        }
        // An uncommitted one: its input comes back after the reopen, its output never.
        let mut tx = bus.transaction().unwrap();
        tx.send(&out.producer(), 999).unwrap();
        tx.ack(member.recv_timeout(WAIT).unwrap()).unwrap();
        std::mem::forget(tx); // as if the process died here
        drop(member);
        drop(worker);
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let input = bus.topic::<u32>("input").unwrap();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let out = bus.topic::<u32>("out").unwrap();
    assert_eq!(input.group_position("etl"), Some(vec![2]));
    assert_eq!(jobs.len(), 1);
    let mut reader = out.subscribe(Start::Earliest).unwrap();
    let outputs: Vec<u32> = (0..2)
        .map(|_| *reader.recv_timeout(WAIT).unwrap().payload())
        .collect();
    assert_eq!(outputs, [100, 102]);
    assert!(matches!(reader.try_recv(), Err(TryRecvError::Empty)));
    drop(bus);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_memory_broker_has_no_redb_transaction() {
    let bus = Broker::memory();
    let mut tx = bus.transaction().unwrap();
    assert!(matches!(tx.redb(), Err(Error::NoDatabase)));
}

both_backends!(a_transaction_deduplicates_by_message_id);
fn a_transaction_deduplicates_by_message_id(backend: Backend) {
    let bus = backend.bus();
    let window = embus::Dedupe::within(Duration::from_secs(60));
    let orders = bus
        .topic_with::<u32>(
            "orders",
            TopicOptions::default().partitions(2).dedupe(window),
        )
        .unwrap();
    let jobs = bus
        .queue_with::<u32>("jobs", QueueOptions::default().dedupe(window))
        .unwrap();
    let first = orders
        .producer()
        .send_record(Record::new(1).id("order-1"))
        .unwrap();

    let mut tx = bus.transaction().unwrap();
    tx.send_record(&orders.producer(), Record::new(1).id("order-1"))
        .unwrap(); // sent before
    tx.send_record(&orders.producer(), Record::new(2).id("order-2"))
        .unwrap();
    tx.send_record(&orders.producer(), Record::new(2).id("order-2"))
        .unwrap(); // twice in this one
    tx.send_record(&jobs.producer(), Record::new(3).id("job-3"))
        .unwrap();
    tx.send_record(&jobs.producer(), Record::new(3).id("job-3"))
        .unwrap();
    let receipts = tx.commit().unwrap();
    assert_eq!(receipts[0], first, "the original receipt");
    assert_eq!(receipts[1], receipts[2]);
    assert_eq!(receipts[3], receipts[4]);
    assert_eq!(
        (orders.retained(), jobs.len()),
        (2, 1),
        "each id stored once"
    );

    // A later send, in or out of a transaction, sees the transaction's ids.
    let again = jobs
        .producer()
        .send_record(Record::new(3).id("job-3"))
        .unwrap();
    assert_eq!(again, receipts[3]);
    let mut tx = bus.transaction().unwrap();
    tx.send_record(&orders.producer(), Record::new(2).id("order-2"))
        .unwrap();
    assert_eq!(tx.commit().unwrap()[0], receipts[1]);
    assert_eq!((orders.retained(), jobs.len()), (2, 1));

    // An aborted transaction's ids are not remembered.
    let mut tx = bus.transaction().unwrap();
    tx.send_record(&jobs.producer(), Record::new(4).id("job-4"))
        .unwrap();
    drop(tx);
    jobs.producer()
        .send_record(Record::new(4).id("job-4"))
        .unwrap();
    assert_eq!(jobs.len(), 2);
}

#[test]
fn acks_committed_ahead_of_the_group_position_are_not_delivered_again_after_a_reopen() {
    let dir = common::fresh_dir("tx-acked-ahead");
    let path = dir.join("bus.embus");
    {
        let bus = Broker::open(&path).unwrap();
        let input = bus.topic::<u32>("input").unwrap();
        let out = bus.queue::<u32>("out").unwrap();
        for i in 0..4 {
            input.producer().send(i).unwrap();
        }
        let mut member = input.join_group("etl").unwrap();
        let held: Vec<_> = (0..3).map(|_| member.recv_timeout(WAIT).unwrap()).collect();
        let mut held = held.into_iter();
        let first = held.next().unwrap(); // offset 0 stays unacked
        for msg in held {
            // 1 and 2 are processed ahead of 0: the position stays at 0.
            let mut tx = bus.transaction().unwrap();
            tx.send(&out.producer(), msg.payload() * 10).unwrap();
            tx.ack(msg).unwrap();
            tx.commit().unwrap();
        }
        assert_eq!(input.group_position("etl"), Some(vec![0]));
        drop(first);
        drop(member);
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let input = bus.topic::<u32>("input").unwrap();
    let out = bus.queue::<u32>("out").unwrap();
    assert_eq!(input.group_position("etl"), Some(vec![0]));
    let mut member = input.join_group("etl").unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let msg = member.recv_timeout(WAIT).unwrap();
        seen.push(*msg.payload());
        let mut tx = bus.transaction().unwrap();
        tx.send(&out.producer(), msg.payload() * 10).unwrap();
        tx.ack(msg).unwrap();
        tx.commit().unwrap();
    }
    assert_eq!(seen, [0, 3], "1 and 2 were done before the reopen");
    assert!(matches!(member.try_recv(), Err(TryRecvError::Empty)));
    assert_eq!(input.group_position("etl"), Some(vec![4]));
    let mut outputs: Vec<u32> = Vec::new();
    let mut reader = out.consumer();
    while let Ok(msg) = reader.try_recv() {
        outputs.push(*msg.payload());
        msg.ack().unwrap();
    }
    outputs.sort_unstable();
    assert_eq!(outputs, [0, 10, 20, 30], "each input's output exactly once");
    bus.close().unwrap();
    // The kept acks went once the position passed them.
    let db = embus::redb::Database::open(&path).unwrap();
    let txn = embus::redb::ReadableDatabase::begin_read(&db).unwrap();
    let acked: embus::redb::TableDefinition<(&str, &str, u32, u64), &[u8]> =
        embus::redb::TableDefinition::new("embus.acked");
    let table = txn.open_table(acked).unwrap();
    assert!(
        embus::redb::ReadableTable::iter(&table)
            .unwrap()
            .next()
            .is_none()
    );
    drop(table);
    drop(txn);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_durable_commit_poisons_the_broker_and_hands_the_records_back() {
    use common::faulty::{Faults, Mode, faulty_builder};
    let dir = common::fresh_dir("tx-poisoned");
    let faults = Faults::new(Mode::Sticky);
    let bus = faulty_builder(&dir.join("bus.embus"), &faults)
        .open()
        .unwrap();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let out = bus.topic::<u32>("out").unwrap();
    jobs.producer().send(1).unwrap();
    let mut worker = jobs.consumer();
    let job = worker.recv_timeout(WAIT).unwrap();
    let mut tx = bus.transaction().unwrap();
    tx.send(&out.producer(), 10).unwrap();
    tx.send(&jobs.producer(), 2).unwrap();
    tx.ack(job).unwrap();
    faults.full.store(true, std::sync::atomic::Ordering::SeqCst); // the disk is full
    let err = tx.commit().unwrap_err();
    assert!(matches!(err.error(), Error::Poisoned { .. }), "{err}");
    let mut tx = err.into_transaction();
    let back: Vec<u32> = tx
        .take_records::<u32>()
        .into_iter()
        .map(Record::into_payload)
        .collect();
    assert_eq!(back, [10, 2], "every unsent message is handed back");
    assert_eq!(
        (out.retained(), jobs.len()),
        (0, 0),
        "nothing was published"
    );
    assert!(matches!(bus.transaction(), Err(Error::Poisoned { .. })));
    drop((tx, worker, bus, jobs, out));
    let _ = std::fs::remove_dir_all(&dir);
}

//! Deduplication and the durable commit: a send with a message id holds its target's window
//! only while it checks and stages, never while it waits for the commit or for room. So
//! concurrent sends with ids share commits, and a transaction holding the lent write
//! transaction can commit ids to a target that a plain send, waiting for that very commit,
//! has used.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::faulty::{Faults, Mode, faulty_builder, within};
use common::{WAIT, fresh_dir};
use embus::{Broker, Dedupe, Error, QueueOptions, Record, SendError, TopicOptions};

/// How long a scenario that used to deadlock may take.
const LIMIT: Duration = Duration::from_secs(10);

/// A durable broker (`Durability::Immediate`) at `path` whose fsyncs `faults.syncs` counts
/// (nothing is made to fail).
fn counting_broker(path: &Path) -> (Broker, Arc<Faults>) {
    let faults = Faults::new(Mode::Sticky);
    (faulty_builder(path, &faults).open().unwrap(), faults)
}

/// Waits (up to `WAIT`) until a send on another thread has staged its record and waits for
/// its commit: `wait_idle` names a topic or queue with sends not yet stored.
fn wait_until_staged(bus: &Broker) {
    let deadline = Instant::now() + WAIT;
    loop {
        match bus.wait_idle(Duration::ZERO) {
            Err(Error::NotIdle { busy, .. }) if busy.contains("not yet stored") => return,
            _ if Instant::now() > deadline => panic!("the other send never staged"),
            _ => thread::yield_now(),
        }
    }
}

/// Which kind of target a scenario sends to.
#[derive(Clone, Copy, Debug)]
enum Target {
    Topic,
    Queue,
}

/// A producer of `u32` with a dedupe window on `bus`: a topic's (with a group, so that
/// `wait_idle` reports its staged sends) or a queue's.
fn deduped_producer(bus: &Broker, target: Target) -> embus::Producer<u32> {
    let window = Dedupe::last(1000);
    match target {
        Target::Topic => {
            let options = TopicOptions::default().dedupe(window);
            let topic = bus.topic_with::<u32>("orders", options).unwrap();
            // Dropped at once: the group stays and counts staged sends as work.
            drop(topic.join_group("billing").unwrap());
            topic.producer()
        }
        Target::Queue => {
            let options = QueueOptions::default().dedupe(window);
            bus.queue_with::<u32>("orders", options).unwrap().producer()
        }
    }
}

/// A plain send with an id waits for the writer, which waits for a lent write transaction;
/// that transaction then commits a record with an id to the same target. Before, the send
/// held the target's window across its wait, and the commit needed it: a deadlock.
fn a_loan_commits_ids_while_a_send_with_an_id_waits_for_it(target: Target) {
    within(LIMIT, "the loan's commit", move || {
        let dir = fresh_dir(&format!("dedupe-commit-loan-{target:?}"));
        let bus = Broker::open(dir.join("bus.embus")).unwrap();
        let producer = deduped_producer(&bus, target);
        let mut tx = bus.transaction().unwrap();
        tx.redb().unwrap();
        let sender = {
            let producer = producer.clone();
            thread::spawn(move || producer.send_record(Record::new(1).id("a")))
        };
        wait_until_staged(&bus);
        tx.send_record(&producer, Record::new(2).id("b")).unwrap();
        // A duplicate of the pending send: stores nothing, gets the original's receipt.
        tx.send_record(&producer, Record::new(3).id("a")).unwrap();
        let receipts = tx.commit().unwrap();
        let first = sender.join().unwrap().unwrap();
        assert_eq!(
            receipts[1], first,
            "the duplicate has the original's receipt"
        );
        assert_ne!(receipts[0], first);
        // Both are remembered.
        for (id, receipt) in [("a", first), ("b", receipts[0])] {
            let again = producer.send_record(Record::new(9).id(id)).unwrap();
            assert_eq!(again, receipt);
        }
        drop(bus);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn a_loan_commits_ids_to_a_topic_while_a_send_with_an_id_waits_for_it() {
    a_loan_commits_ids_while_a_send_with_an_id_waits_for_it(Target::Topic);
}

#[test]
fn a_loan_commits_ids_to_a_queue_while_a_send_with_an_id_waits_for_it() {
    a_loan_commits_ids_while_a_send_with_an_id_waits_for_it(Target::Queue);
}

/// Threads and sends per thread of the group commit check.
const THREADS: u64 = 8;
const SENDS: u64 = 25;

/// `THREADS` threads send `SENDS` records with distinct ids each to one deduped target
/// (`Durability::Immediate`: each send waits for its fsync). Returns the fsyncs the sends
/// took: redb fsyncs twice per commit, so a commit per send takes two per send (it did,
/// while a send held the window across its commit); sharing commits, fewer than one
/// (commits carry four sends on average here; the bound leaves room for a loaded machine).
fn sends_with_ids_share_commits(target: Target) -> u64 {
    let dir = fresh_dir(&format!("dedupe-commit-share-{target:?}"));
    let (bus, faults) = counting_broker(&dir.join("bus.embus"));
    let syncs = &faults.syncs;
    let producer = deduped_producer(&bus, target);
    bus.flush().unwrap();
    let before = syncs.load(Ordering::SeqCst);
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let producer = producer.clone();
            thread::spawn(move || {
                for n in 0..SENDS {
                    let id = format!("{t}-{n}");
                    producer.send_record(Record::new(1).id(id)).unwrap();
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let took = syncs.load(Ordering::SeqCst) - before;
    drop(bus);
    let _ = std::fs::remove_dir_all(&dir);
    took
}

#[test]
fn concurrent_sends_with_ids_to_a_topic_share_commits() {
    let took = sends_with_ids_share_commits(Target::Topic);
    let sends = THREADS * SENDS;
    println!("{took} fsyncs for {sends} sends");
    assert!(took < sends, "{took} fsyncs for {sends} sends");
}

#[test]
fn concurrent_sends_with_ids_to_a_queue_share_commits() {
    let took = sends_with_ids_share_commits(Target::Queue);
    let sends = THREADS * SENDS;
    println!("{took} fsyncs for {sends} sends");
    assert!(took < sends, "{took} fsyncs for {sends} sends");
}

/// How a scenario sends a record: a plain send, a transaction of it alone, or a batch after a
/// record without an id.
type Send = fn(&Broker, &embus::Producer<u32>, Record<u32>) -> embus::Receipt;

fn plain(_bus: &Broker, producer: &embus::Producer<u32>, record: Record<u32>) -> embus::Receipt {
    producer.send_record(record).unwrap()
}

fn in_a_transaction(
    bus: &Broker,
    producer: &embus::Producer<u32>,
    record: Record<u32>,
) -> embus::Receipt {
    let mut tx = bus.transaction().unwrap();
    tx.send_record(producer, record).unwrap();
    tx.commit().unwrap()[0]
}

fn in_a_batch(
    _bus: &Broker,
    producer: &embus::Producer<u32>,
    record: Record<u32>,
) -> embus::Receipt {
    let receipts = producer
        .send_record_batch(vec![Record::new(0), record])
        .unwrap();
    receipts[1]
}

/// A duplicate sent (by `duplicate`) while the original's commit (sent by `original`) is
/// pending returns only once that commit is done: never `Ok` for a message not stored yet.
fn a_duplicate_waits_for_the_original_commit(target: Target, original: Send, duplicate: Send) {
    let dir = fresh_dir(&format!("dedupe-commit-pending-{target:?}"));
    let path = dir.join("bus.embus");
    let faults = Faults::new(Mode::Sticky);
    let bus = faulty_builder(&path, &faults).open().unwrap();
    let producer = deduped_producer(&bus, target);
    bus.flush().unwrap();
    faults.hold_syncs(true);
    let first = {
        let (bus, producer) = (bus.clone(), producer.clone());
        thread::spawn(move || original(&bus, &producer, Record::new(1).id("a")))
    };
    wait_until_staged(&bus);
    let (done, finished) = std::sync::mpsc::channel();
    let again = {
        let (bus, producer) = (bus.clone(), producer.clone());
        thread::spawn(move || {
            let receipt = duplicate(&bus, &producer, Record::new(2).id("a"));
            done.send(()).unwrap();
            receipt
        })
    };
    // The duplicate is not done while the original's fsync is held.
    assert!(finished.recv_timeout(common::BRIEF).is_err());
    faults.hold_syncs(false);
    let first = first.join().unwrap();
    assert_eq!(again.join().unwrap(), first);
    drop(bus);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_duplicate_to_a_topic_waits_for_the_original_commit() {
    a_duplicate_waits_for_the_original_commit(Target::Topic, plain, plain);
}

#[test]
fn a_duplicate_to_a_queue_waits_for_the_original_commit() {
    a_duplicate_waits_for_the_original_commit(Target::Queue, plain, plain);
}

#[test]
fn a_duplicate_waits_for_the_commit_of_a_transaction() {
    a_duplicate_waits_for_the_original_commit(Target::Topic, in_a_transaction, plain);
    a_duplicate_waits_for_the_original_commit(Target::Queue, in_a_transaction, plain);
}

#[test]
fn a_batch_duplicate_waits_for_the_original_commit() {
    a_duplicate_waits_for_the_original_commit(Target::Topic, plain, in_a_batch);
    a_duplicate_waits_for_the_original_commit(Target::Queue, plain, in_a_batch);
    a_duplicate_waits_for_the_original_commit(Target::Topic, in_a_batch, plain);
    a_duplicate_waits_for_the_original_commit(Target::Queue, in_a_batch, plain);
}

#[test]
fn a_transaction_of_duplicates_only_waits_for_the_original_commit() {
    a_duplicate_waits_for_the_original_commit(Target::Topic, plain, in_a_transaction);
    a_duplicate_waits_for_the_original_commit(Target::Queue, plain, in_a_transaction);
}

/// A failed commit: the original and the duplicate that waited for it both fail (the store
/// is poisoned), and the id is not remembered.
#[test]
fn a_duplicate_of_a_send_whose_commit_fails_fails_too() {
    let dir = fresh_dir("dedupe-commit-failed");
    let path = dir.join("bus.embus");
    let faults = Faults::new(Mode::Sticky);
    let bus = faulty_builder(&path, &faults).open().unwrap();
    let producer = deduped_producer(&bus, Target::Topic);
    bus.flush().unwrap();
    faults.hold_syncs(true);
    let original = {
        let producer = producer.clone();
        thread::spawn(move || producer.send_record(Record::new(1).id("a")))
    };
    wait_until_staged(&bus);
    let duplicate = {
        let producer = producer.clone();
        thread::spawn(move || producer.send_record(Record::new(2).id("a")))
    };
    faults.arm(1);
    faults.hold_syncs(false);
    match original.join().unwrap() {
        Err(SendError::Failed(record, Error::Poisoned { .. })) => {
            assert_eq!(*record.payload(), 1);
        }
        other => panic!("expected Poisoned, got {other:?}"),
    }
    match duplicate.join().unwrap() {
        Err(SendError::Failed(record, Error::Poisoned { .. })) => {
            assert_eq!(
                *record.payload(),
                2,
                "the duplicate gets its own record back"
            );
        }
        other => panic!("expected Poisoned, got {other:?}"),
    }
    drop(bus);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A batch whose commit fails hands back, in input order, every record it staged and each
/// duplicate of one of them; a duplicate of a message stored before is not handed back.
#[test]
fn a_batch_whose_commit_fails_hands_back_its_records_and_their_duplicates() {
    for target in [Target::Topic, Target::Queue] {
        let dir = fresh_dir(&format!("dedupe-commit-batch-failed-{target:?}"));
        let path = dir.join("bus.embus");
        let faults = Faults::new(Mode::Sticky);
        let bus = faulty_builder(&path, &faults).open().unwrap();
        let producer = deduped_producer(&bus, target);
        producer.send_record(Record::new(0).id("x")).unwrap();
        bus.flush().unwrap();
        faults.arm(1);
        // Whenever the failure stops the batch, the same records come back.
        let batch = vec![
            Record::new(5).id("x"),
            Record::new(1).id("a"),
            Record::new(2).id("b"),
            Record::new(3).id("a"),
            Record::new(4),
        ];
        match producer.send_record_batch(batch) {
            Err(SendError::Failed(records, Error::Poisoned { .. })) => {
                let payloads: Vec<u32> = records.iter().map(|r| *r.payload()).collect();
                assert_eq!(payloads, [1, 2, 3, 4], "{target:?}");
            }
            other => panic!("{target:?}: expected Poisoned, got {other:?}"),
        }
        drop(bus);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Two sends of one id wait for room in a full queue, without the window's lock: once there
/// is room, one stores the message and the other, looking again after its wait, finds it and
/// returns its receipt. In both modes.
#[test]
fn sends_of_one_id_waiting_for_room_store_it_once() {
    within(LIMIT, "sends waiting for room", || {
        for backend in [common::Backend::Memory, common::Backend::Durable] {
            let bus = backend.bus();
            let options = QueueOptions::default()
                .capacity(1)
                .dedupe(Dedupe::last(100));
            let queue = bus.queue_with::<u32>("jobs", options).unwrap();
            queue.producer().send(0).unwrap();
            let senders: Vec<_> = (1..=2)
                .map(|n| {
                    let producer = queue.producer();
                    thread::spawn(move || producer.send_record(Record::new(n).id("a")))
                })
                .collect();
            let mut worker = queue.consumer();
            let first = worker.recv_timeout(WAIT).unwrap();
            assert_eq!(*first.payload(), 0);
            first.ack().unwrap();
            let receipts: Vec<_> = senders
                .into_iter()
                .map(|s| s.join().unwrap().unwrap())
                .collect();
            assert_eq!(receipts[0], receipts[1], "{backend:?}");
            let stored = worker.recv_timeout(WAIT).unwrap();
            assert_eq!(stored.id(), Some("a"));
            stored.ack().unwrap();
            assert_eq!(queue.len(), 0, "{backend:?}: stored once");
        }
    });
}

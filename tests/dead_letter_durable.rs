//! Durable dead letters: one is stored from the message the broker holds, not copied from its
//! source row (a source row that is damaged, or gone, when the message is dead-lettered must
//! not make the dead letter vanish on the next open); a queue's undecodable messages can be
//! moved to its dead-letter queue; a group message that retention trimmed is reported skipped,
//! not dead-lettered, when it was read from the store.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::WAIT;
use common::faulty::{Faults, faulty_builder};
use embus::{
    Backoff, Broker, DEAD_LETTER_REASON, Durability, Error, GroupOptions, Overflow, QueueOptions,
    Retention, TopicOptions, TryRecvError,
};

/// Queue `jobs`, whose first nack dead-letters a message to `jobs.dead`, and that queue.
fn dead_lettered_at_once(bus: &Broker) -> (embus::Queue<String>, embus::Queue<String>) {
    let options = QueueOptions::default()
        .max_deliveries(1)
        .dead_letter("jobs.dead");
    let jobs = bus.queue_with::<String>("jobs", options).unwrap();
    (jobs, bus.queue::<String>("jobs.dead").unwrap())
}

#[test]
fn a_dead_letter_survives_a_reopen_when_its_source_row_is_damaged() {
    let dir = common::fresh_dir("dead-letter-durable");
    let path = dir.join("store.embus");
    let marker = "job-PAYLOAD-7f3a";
    // Reads of the source row (once armed) come back with its payload damaged.
    let faults = Faults::tampering(b"PAYLOAD-7f3a", b"PAYLOAD-XXXX");
    let bus = faulty_builder(&path, &faults)
        .cache_size(0) // every read reaches the backend
        .open()
        .unwrap();
    let (jobs, dead) = dead_lettered_at_once(&bus);
    jobs.producer().send(marker.to_owned()).unwrap();
    let mut worker = jobs.consumer();
    let m = worker.recv_timeout(WAIT).unwrap();
    faults.tamper.store(true, Ordering::SeqCst);
    m.nack().unwrap(); // past max_deliveries: dead-lettered
    let mut dlq = dead.consumer();
    let live = dlq.recv_timeout(WAIT).unwrap();
    bus.flush().unwrap();
    assert!(
        !faults.tamper.load(Ordering::SeqCst),
        "the source row was read back"
    );
    assert_eq!(live.payload(), marker);
    drop(live); // released, not acked: it stays stored
    drop((dlq, worker, jobs, dead));
    bus.close().unwrap();

    let bus = Broker::open(&path).unwrap();
    let dead = bus.queue::<String>("jobs.dead").unwrap();
    assert!(dead.undecodable().is_empty(), "{:?}", dead.undecodable());
    assert_eq!(dead.len(), 1, "the dead letter vanished on reopen");
    let mut letters = dead.consumer();
    let m = letters.recv_timeout(WAIT).unwrap();
    assert_eq!(m.payload(), marker);
    assert_eq!(m.headers().get(DEAD_LETTER_REASON), Some(&b"nack"[..]));
    assert!(bus.queue::<String>("jobs").unwrap().is_empty());
    m.ack().unwrap();
    bus.close().unwrap();
}

#[test]
fn undecodable_queue_messages_move_to_the_dead_letter_queue() {
    use embus::redb::{ReadableTable, TableDefinition};
    let path = common::fresh_dir("dead-letter-undecodable").join("bus.embus");
    let options = QueueOptions::default().dead_letter("jobs.dead");
    {
        let bus = Broker::open(&path).unwrap();
        let jobs = bus.queue_with::<String>("jobs", options.clone()).unwrap();
        bus.queue::<String>("plain")
            .unwrap()
            .producer()
            .send("x".into())
            .unwrap();
        for i in 0..3 {
            jobs.producer().send(format!("job-{i}")).unwrap();
        }
        bus.close().unwrap();
    }
    // Damage one bit of message 1's payload, and of the plain queue's message.
    let mut damaged = Vec::new();
    {
        let db = embus::redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        for table in ["embus.q.jobs", "embus.q.plain"] {
            let mut rows = txn
                .open_table(TableDefinition::<u64, &[u8]>::new(table))
                .unwrap();
            let key = u64::from(table == "embus.q.jobs");
            let mut value = rows.get(key).unwrap().unwrap().value().to_vec();
            let last = value.len() - 1;
            value[last] ^= 0x01;
            rows.insert(key, value.as_slice()).unwrap();
            damaged.push(value);
        }
        txn.commit().unwrap();
    }
    {
        let bus = Broker::open(&path).unwrap();
        let plain = bus.queue::<String>("plain").unwrap();
        assert!(matches!(
            plain.dead_letter_undecodable(),
            Err(Error::NoDeadLetterQueue { .. })
        ));
        assert_eq!(plain.undecodable().len(), 1, "nothing moved, nothing lost");
        let jobs = bus.queue_with::<String>("jobs", options.clone()).unwrap();
        let dead = bus.queue::<String>("jobs.dead").unwrap();
        assert_eq!(jobs.undecodable().len(), 1);
        assert_eq!(jobs.dead_letter_undecodable().unwrap(), 1);
        assert!(jobs.undecodable().is_empty());
        assert_eq!(
            dead.undecodable().len(),
            1,
            "listed by the dead-letter queue at once"
        );
        assert_eq!(dead.undecodable()[0].bytes, damaged[0]);
        assert_eq!(jobs.dead_letter_undecodable().unwrap(), 0);
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let jobs = bus.queue_with::<String>("jobs", options).unwrap();
    let dead = bus.queue::<String>("jobs.dead").unwrap();
    assert!(jobs.undecodable().is_empty(), "moved for good");
    let letters = dead.undecodable();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].bytes, damaged[0], "the damaged record, whole");
    assert_eq!((jobs.len(), dead.len()), (2, 0), "the rest is untouched");
    bus.close().unwrap();
}

/// The common case: the payload type changed (every checksum is fine, the old payloads do not
/// decode). Moved to the dead-letter queue, each keeps its key and headers beside the
/// dead-letter ones, and is never delivered as a payload there, after a reopen too.
#[test]
fn messages_of_a_changed_payload_type_move_to_the_dead_letter_queue_and_stay_set_aside() {
    use embus::{DEAD_LETTER_QUEUE, Record};
    let path = common::fresh_dir("dead-letter-changed-type").join("bus.embus");
    let options = QueueOptions::default().dead_letter("jobs.dead");
    {
        let bus = Broker::builder()
            .path(&path)
            .payload_name::<u8>("Job")
            .open()
            .unwrap();
        let jobs = bus.queue_with::<u8>("jobs", options.clone()).unwrap();
        jobs.producer()
            .send_record(Record::new(7).key("k-7").header("trace", b"t-7"))
            .unwrap();
        bus.close().unwrap();
    }
    let reopen = || {
        Broker::builder()
            .path(&path)
            .payload_name::<String>("Job")
            .open()
            .unwrap()
    };
    {
        let bus = reopen();
        let jobs = bus.queue_with::<String>("jobs", options.clone()).unwrap();
        let dead = bus.queue::<String>("jobs.dead").unwrap();
        assert_eq!(
            jobs.undecodable().len(),
            1,
            "a u8 does not decode as a String"
        );
        assert_eq!(jobs.undecodable()[0].bytes, [7]);
        assert_eq!(jobs.dead_letter_undecodable().unwrap(), 1);
        assert_eq!((jobs.undecodable().len(), dead.undecodable().len()), (0, 1));
        bus.close().unwrap();
    }
    // As stored: the record's key and headers, and the dead-letter headers.
    {
        use embus::redb::{ReadableDatabase, ReadableTable, TableDefinition};
        let db = embus::redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let rows = txn
            .open_table(TableDefinition::<u64, &[u8]>::new("embus.q.jobs.dead"))
            .unwrap();
        let (_, value) = rows.first().unwrap().unwrap();
        let value = value.value();
        let has = |needle: &[u8]| value.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"k-7") && has(b"t-7"), "key and headers kept");
        assert!(has(DEAD_LETTER_QUEUE.as_bytes()) && has(b"undecodable"));
    }
    let bus = reopen();
    let dead = bus.queue::<String>("jobs.dead").unwrap();
    let letters = dead.undecodable();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].bytes, [7], "the payload bytes as they were");
    assert_eq!(dead.len(), 0, "never delivered as a payload");
    bus.close().unwrap();
}

/// A dead letter moved as undecodable may hold a damaged record whole as its payload: at a
/// restore it is set aside by its reason header, whatever it happens to decode as (here, a
/// record that decodes fine carries the header).
#[test]
fn a_stored_undecodable_dead_letter_is_never_delivered_as_a_payload() {
    use embus::Record;
    let path = common::fresh_dir("dead-letter-marked").join("bus.embus");
    {
        let bus = Broker::open(&path).unwrap();
        let q = bus.queue::<String>("jobs.dead").unwrap();
        q.producer()
            .send_record(
                Record::new("decodes".to_owned()).header(DEAD_LETTER_REASON, "undecodable"),
            )
            .unwrap();
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let q = bus.queue::<String>("jobs.dead").unwrap();
    assert_eq!((q.len(), q.undecodable().len()), (0, 1));
    bus.close().unwrap();
}

/// Found by the model (`tests/model/regressions.rs`): past `max_deliveries`, a group delivery
/// whose message retention had trimmed meanwhile was copied to the dead-letter queue when the
/// message lay below the log's hot tail (here: after a reopen), from the store's read cache;
/// a memory broker, or a message still in memory, reports it skipped instead
/// (`Lagged`). Both must do the same: a trimmed message is gone.
#[test]
fn a_trimmed_group_message_read_from_the_store_is_not_dead_lettered() {
    let dir = common::fresh_dir("dead-letter-trimmed");
    let path = dir.join("store.embus");
    let options = TopicOptions::default()
        .partitions(1)
        .retention(Retention::messages(2))
        .overflow(Overflow::Lag);
    let bus = Broker::open(&path).unwrap();
    let topic = bus.topic_with::<u64>("events", options).unwrap();
    topic.producer().send_batch(vec![0, 1]).unwrap();
    bus.close().unwrap();

    // Reopened: both messages are read from the store.
    let bus = Broker::open(&path).unwrap();
    let topic = bus.topic_with::<u64>("events", options).unwrap();
    let dead = bus.queue::<u64>("events.dead").unwrap();
    let group = GroupOptions::default()
        .overflow(Overflow::Lag)
        .backoff(Backoff::none())
        .max_deliveries(1)
        .dead_letter("events.dead");
    let mut member = topic.join_group_with("g", group).unwrap();
    let first = member.try_recv().unwrap();
    assert_eq!((first.offset(), *first.payload()), (0, 0));
    topic.producer().send(2).unwrap(); // trims offset 0
    assert_eq!(topic.offsets(0), Some(1..3));
    first.nack().unwrap(); // its last delivery, but the message is gone
    assert_eq!(dead.len(), 0, "a trimmed message was dead-lettered");
    assert!(
        matches!(member.try_recv(), Err(TryRecvError::Lagged { skipped: 1 })),
        "the trimmed message is reported skipped"
    );
    let next = member.try_recv().unwrap();
    assert_eq!((next.offset(), *next.payload()), (1, 1));
    next.ack().unwrap();
    drop(member);
    bus.close().unwrap();
}

/// A dead letter is ready in its dead-letter queue before the commit that moves its row; acked
/// there meanwhile, it stays acked after a clean close and reopen (the ack, kept aside for a
/// commit, is written after the move). The writer waits out its interval with the move queued
/// while the ack is made.
#[test]
fn a_dead_letter_acked_before_its_move_commits_stays_acked_after_a_clean_close() {
    let path = common::fresh_dir("dlq-moved-ack").join("store.embus");
    {
        let bus = Broker::builder()
            .path(&path)
            .durability(Durability::Interval(Duration::from_millis(300)))
            .open()
            .unwrap();
        let (jobs, dead) = dead_lettered_at_once(&bus);
        jobs.producer().send("job".to_owned()).unwrap();
        bus.flush().unwrap();
        let mut worker = jobs.consumer();
        worker.recv_timeout(WAIT).unwrap().nack().unwrap(); // dead-lettered
        let mut letters = dead.consumer();
        letters.recv_timeout(WAIT).unwrap().ack().unwrap();
        drop((letters, worker, jobs, dead));
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let dead = bus.queue::<String>("jobs.dead").unwrap();
    assert_eq!(dead.len(), 0, "the acked dead letter came back");
    assert!(bus.queue::<String>("jobs").unwrap().is_empty());
    bus.close().unwrap();
}

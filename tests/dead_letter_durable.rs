//! Durable dead letters: one is stored from the message the broker holds, not copied from its
//! source row (a source row that is damaged, or gone, when the message is dead-lettered must
//! not make the dead letter vanish on the next open); a queue's undecodable messages can be
//! moved to its dead-letter queue.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::WAIT;
use common::faulty::{Faults, FaultyBackend, open_file};
use embus::{Broker, DEAD_LETTER_REASON, Error, QueueOptions};

#[test]
fn a_dead_letter_survives_a_reopen_when_its_source_row_is_damaged() {
    let dir = common::fresh_dir("dead-letter-durable");
    let path = dir.join("store.embus");
    let marker = "job-PAYLOAD-7f3a";
    // Reads of the source row (once armed) come back with its payload damaged.
    let faults = Faults::tampering(b"PAYLOAD-7f3a", b"PAYLOAD-XXXX");
    let bus = Broker::builder()
        .path(&path)
        .storage_backend(FaultyBackend::new(open_file(&path), Arc::clone(&faults)))
        .cache_size(0) // every read reaches the backend
        .open()
        .unwrap();
    let options = QueueOptions::default()
        .max_deliveries(1)
        .dead_letter("jobs.dead");
    let jobs = bus.queue_with::<String>("jobs", options).unwrap();
    let dead = bus.queue::<String>("jobs.dead").unwrap();
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
        for table in ["q.jobs", "q.plain"] {
            let mut rows = txn
                .open_table(TableDefinition::<u64, &[u8]>::new(table))
                .unwrap();
            let key = u64::from(table == "q.jobs");
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

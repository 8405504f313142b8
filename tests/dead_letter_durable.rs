//! A durable dead letter is stored from the message the broker holds, not copied from its
//! source row: a source row that is damaged (or gone) when the message is dead-lettered must
//! not make the dead letter vanish on the next open.

mod common;
mod store_support;

use std::sync::atomic::Ordering;

use common::WAIT;
use embus::{Broker, DEAD_LETTER_REASON, QueueOptions};
use store_support::{Switches, TestBackend};

#[test]
fn a_dead_letter_survives_a_reopen_when_its_source_row_is_damaged() {
    let dir = common::fresh_dir("dead-letter-durable");
    let path = dir.join("store.embus");
    let marker = "job-PAYLOAD-7f3a";
    // Reads of the source row (once armed) come back with its payload damaged.
    let switches = Switches::new(b"PAYLOAD-7f3a", b"PAYLOAD-XXXX");
    let bus = Broker::builder()
        .path(&path)
        .storage_backend(TestBackend::new(&path, &switches))
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
    switches.tamper.store(true, Ordering::SeqCst);
    m.nack().unwrap(); // past max_deliveries: dead-lettered
    let mut dlq = dead.consumer();
    let live = dlq.recv_timeout(WAIT).unwrap();
    bus.flush().unwrap();
    assert!(
        !switches.tamper.load(Ordering::SeqCst),
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

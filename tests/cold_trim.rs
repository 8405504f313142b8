//! Trimming below a durable partition's in-memory tail decodes no payload: the timestamps and
//! sizes that age and byte retention need come from an index kept as messages leave memory,
//! or (after a reopen) from the stored records' headers.
//!
//! The payload type counts its decodes. In debug builds the seam decodes every payload once
//! when it is sent (its round-trip check; release builds check only the first), so a send
//! path that decodes nothing else decodes exactly one payload per send there.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use embus::{Broker, Retention, Start, TopicOptions};
use serde::{Deserialize, Deserializer, Serialize};

static DECODES: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct Counted(u64);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DECODES.fetch_add(1, Ordering::SeqCst);
        u64::deserialize(d).map(Counted)
    }
}

/// Decodes the seam's round-trip check makes for `sends` sends (see the module docs).
fn checks(sends: u64) -> u64 {
    if cfg!(debug_assertions) { sends } else { 0 }
}

const KEEP: u64 = 10_000;

fn options() -> TopicOptions {
    // A byte and an age limit (neither reached) make trimming look at sizes and timestamps;
    // the count limit does the trimming.
    let retention = Retention::messages(KEEP)
        .and_bytes(1 << 40)
        .and_age(Duration::from_secs(86_400));
    TopicOptions::default().retention(retention)
}

fn send(bus: &Broker, range: std::ops::Range<u64>) -> u64 {
    let producer = bus
        .topic_with::<Counted>("t", options())
        .unwrap()
        .producer();
    let before = DECODES.load(Ordering::SeqCst);
    let all: Vec<Counted> = range.map(Counted).collect();
    for chunk in all.chunks(1000) {
        producer.send_batch(chunk.to_vec()).unwrap();
    }
    DECODES.load(Ordering::SeqCst) - before
}

#[test]
fn trimming_below_the_hot_tail_decodes_no_payload() {
    let dir = common::fresh_dir("cold-trim");
    let path = dir.join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    // Fills retention: about 1,800 of these leave memory (a partition keeps about 8k).
    send(&bus, 0..KEEP);
    // Trims offsets 0..5000, all below the in-memory tail.
    let decoded = send(&bus, KEEP..KEEP + 5000);
    assert_eq!(decoded, checks(5000), "payloads decoded while trimming");
    let topic = bus.topic_with::<Counted>("t", options()).unwrap();
    assert_eq!(topic.offsets(0), Some(5000..KEEP + 5000));
    drop(topic);
    bus.close().unwrap();

    // Reopened, the retained offsets are all in the file: trimming reads their headers.
    let bus = Broker::open(&path).unwrap();
    let decoded = send(&bus, KEEP + 5000..KEEP + 7000);
    assert_eq!(
        decoded,
        checks(2000),
        "payloads decoded while trimming after a reopen"
    );
    let topic = bus.topic_with::<Counted>("t", options()).unwrap();
    assert_eq!(topic.offsets(0), Some(7000..KEEP + 7000));
    // Readers still read what is retained, from the file.
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    assert_eq!(
        *sub.recv_timeout(common::WAIT).unwrap().payload(),
        Counted(7000)
    );
    drop((sub, topic));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

//! A durable queue whose consumer nacks everything: delivery counts are coalesced per message
//! before the writer stores them, so memory stays bounded by the messages, not the
//! deliveries, and `close` does not replay a backlog.
//!
//! Its own test binary: it installs a counting global allocator (see `bounded_memory.rs`).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use embus::{Backoff, Broker, QueueOptions};

mod common;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, LIVE};

#[global_allocator]
static GLOBAL: Counting = Counting;

const MESSAGES: u64 = 4;
const DELIVERIES: u64 = 200_000;
/// What the storm may add to live memory: a pending count per message and one commit's
/// working set (redb pages), never anything per delivery (200 k deliveries queued one by one
/// cost tens of MiB).
const LIMIT: u64 = 4 << 20;

#[test]
fn a_nack_storm_keeps_memory_bounded_and_close_fast() {
    let dir = common::fresh_dir("nack-storm");
    let path = dir.join("store.embus");
    let bus = Broker::builder()
        .path(&path)
        .cache_size(1 << 20)
        .open()
        .unwrap();
    let jobs = bus
        .queue_with::<u64>(
            "jobs",
            // A storm on purpose: no backoff (tests/backoff.rs has the default's).
            QueueOptions::default()
                .no_ack_timeout()
                .backoff(Backoff::none()),
        )
        .unwrap();
    for i in 0..MESSAGES {
        jobs.producer().send(i).unwrap();
    }
    let mut worker = jobs.consumer();
    bus.flush().unwrap();
    let base = LIVE.load(Relaxed);
    let mut peak = 0;
    let started = Instant::now();
    for i in 0..DELIVERIES {
        let m = worker.recv_timeout(common::WAIT).unwrap();
        m.nack().unwrap();
        if i % 1024 == 0 {
            peak = peak.max(LIVE.load(Relaxed).saturating_sub(base));
        }
    }
    let storm = started.elapsed();
    peak = peak.max(LIVE.load(Relaxed).saturating_sub(base));
    let m = worker.recv_timeout(common::WAIT).unwrap();
    let count = m.delivery_count();
    drop(m);
    drop(worker);
    drop(jobs);
    let started = Instant::now();
    bus.close().unwrap();
    let close = started.elapsed();
    eprintln!(
        "{DELIVERIES} nacks in {storm:?}: peak {:.1} KiB above the baseline; close {close:?}",
        peak as f64 / 1024.0
    );
    assert!(count > 1, "redelivered: count {count}");
    assert!(
        peak <= LIMIT,
        "{DELIVERIES} nacks grew live memory by {:.1} MiB",
        peak as f64 / (1 << 20) as f64
    );
    assert!(close < Duration::from_secs(2), "close took {close:?}");

    // The counts are stored: the latest one, within what a final commit may have missed.
    let bus = Broker::open(&path).unwrap();
    let jobs = bus.queue::<u64>("jobs").unwrap();
    let mut worker = jobs.consumer();
    let counts: Vec<u32> = (0..MESSAGES)
        .map(|_| worker.recv_timeout(common::WAIT).unwrap())
        .map(|m| m.delivery_count())
        .collect();
    let total: u64 = counts.iter().map(|c| u64::from(*c)).sum();
    // Each reopened message is delivered once more than stored.
    assert!(
        total >= DELIVERIES,
        "stored delivery counts {counts:?} lost deliveries"
    );
    drop(worker);
    bus.close().unwrap();
}

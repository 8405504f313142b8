//! Memory per retained topic message stays within budget (performance.md §6.1 M9).
//!
//! Its own test binary with a single test, because it installs a counting global allocator and
//! reads a process-wide live-bytes counter. Heap use is deterministic, so unlike a timing this is
//! a valid regression test. `benches/memory_overhead.rs` reports the same figure for more N.

use std::sync::atomic::Ordering::Relaxed;

use embus::{Broker, Retention, TopicOptions};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, LIVE};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes per retained message beyond the payload (M9 target).
const BUDGET: f64 = 64.0;
const N: u64 = 100_000;

#[test]
fn retained_u64_messages_cost_at_most_64_bytes_each_beyond_the_payload() {
    let bus = Broker::memory();
    let topic = bus
        .topic_with::<u64>(
            "retained",
            TopicOptions::default().retention(Retention::messages(N)),
        )
        .unwrap();
    let producer = topic.producer();

    let before = LIVE.load(Relaxed);
    for i in 0..N {
        producer.send(i).unwrap();
    }
    let after = LIVE.load(Relaxed);

    assert_eq!(topic.retained(), N);
    let overhead =
        (after as i64 - before as i64) as f64 / N as f64 - std::mem::size_of::<u64>() as f64;
    println!("{overhead:.2} bytes per retained u64 message beyond the payload");
    assert!(
        overhead <= BUDGET,
        "{overhead:.2} B per retained message beyond the payload; budget {BUDGET} B"
    );
}

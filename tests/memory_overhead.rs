//! Memory per retained topic message stays within budget (performance.md §6.1 M9).
//!
//! Its own test binary with a single test, because it installs a counting global allocator and
//! reads a process-wide live-bytes counter. Heap use is deterministic, so unlike a timing this is
//! a valid regression test. `benches/memory_overhead.rs` reports the same figure for more N.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use embus::{Broker, Retention, TopicOptions};

/// Counts live heap bytes (as requested by `Layout`); otherwise `System`.
struct Counting;

static LIVE: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counter is
// a plain atomic and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as u64, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as u64, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from `System`) with this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as u64, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`, and the caller upholds `realloc`'s contract for `new_size`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as u64, Relaxed);
            LIVE.fetch_sub(layout.size() as u64, Relaxed);
        }
        p
    }
}

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

//! Memory per retained topic message beyond its payload (issue #16 M9: ≤ 40 B for a `u64`; it
//! was 32.5 B when that floor was set; 33.1 B since segments sit on a cache line of their own).
//!
//! A counting `#[global_allocator]` (wrapping `System`) tracks live heap bytes as requested by
//! `Layout`. For each N it builds a fresh 1-partition memory topic that retains N messages, with
//! no subscriber, sends N `u64` messages from one thread and reports
//! `(live bytes after − live bytes before) / N − 8`. It also prints allocations per message and,
//! for reference, the resident-set growth per message (`/proc/self/statm`, Linux), which adds
//! what `malloc` rounds up and its per-chunk headers.
//!
//! ```text
//! cargo bench --bench memory_overhead
//! ```
//!
//! The gate for N = 100,000 is also a regression test: `tests/memory_overhead.rs`.

use std::sync::atomic::Ordering::Relaxed;

use embus::{Broker, Retention, TopicOptions};

#[path = "../tests/common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{ALLOCS, Counting, LIVE};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Resident set size in bytes, if `/proc/self/statm` is there (Linux, 4 KiB pages assumed).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

struct Measured {
    per_message: f64,
    allocs_per_message: f64,
    rss_per_message: Option<f64>,
}

/// Live bytes added by retaining `n` `u64` messages in a fresh topic, per message.
fn measure(n: u64) -> Measured {
    let bus = Broker::memory();
    let topic = bus
        .topic_with::<u64>(
            "retained",
            TopicOptions::default().retention(Retention::messages(n)),
        )
        .expect("topic");
    let producer = topic.producer();
    let (live, allocs, rss0) = (LIVE.load(Relaxed), ALLOCS.load(Relaxed), rss());
    for i in 0..n {
        producer.send(i).expect("send");
    }
    let grown = LIVE.load(Relaxed) - live;
    let calls = ALLOCS.load(Relaxed) - allocs;
    let rss_grown = rss().zip(rss0).map(|(a, b)| a.saturating_sub(b));
    assert_eq!(topic.retained(), n, "every message retained");
    let per = |bytes: u64| bytes as f64 / n as f64;
    Measured {
        per_message: per(grown) - 8.0,
        allocs_per_message: per(calls),
        rss_per_message: rss_grown.map(|b| per(b) - 8.0),
    }
}

/// The table row for one `n`, measured in this (fresh) process.
fn row(n: u64) -> String {
    let m = measure(n);
    format!(
        "| {:>9} | {:>16.2} | {:>10.3} | {:>22} | {} |",
        n,
        m.per_message,
        m.allocs_per_message,
        m.rss_per_message
            .map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}")),
        if m.per_message <= TARGET {
            "PASS"
        } else {
            "MISS"
        }
    )
}

const TARGET: f64 = 40.0;
const SIZES: [u64; 3] = [65_536, 100_000, 1_000_000];

fn main() {
    // Each N runs in a child process of its own, so memory freed by one measurement cannot be
    // reused by the next one and the RSS column stays meaningful.
    let args: Vec<String> = std::env::args().collect();
    if let Some(n) = args
        .iter()
        .position(|a| a == "--child")
        .and_then(|i| args.get(i + 1))
    {
        println!("{}", row(n.parse().expect("--child N")));
        return;
    }
    println!(
        "embus memory per retained u64 message, beyond the 8-byte payload (target ≤ {TARGET} B)\n"
    );
    println!(
        "| {:>9} | {:>16} | {:>10} | {:>22} | verdict |",
        "N", "overhead B/msg", "allocs/msg", "RSS growth − 8, B/msg"
    );
    println!(
        "|{}|{}|{}|{}|{}|",
        "-".repeat(11),
        "-".repeat(18),
        "-".repeat(12),
        "-".repeat(24),
        "-".repeat(9)
    );
    let exe = std::env::current_exe().expect("own path");
    for n in SIZES {
        let out = std::process::Command::new(&exe)
            .args(["--child", &n.to_string()])
            .output()
            .expect("run child");
        assert!(out.status.success(), "child for N = {n} failed: {out:?}");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    println!(
        "\noverhead: live heap bytes requested (Layout sizes), the gate. RSS: resident growth in a fresh \
         process, including malloc's chunk headers and rounding (reference only)."
    );
}

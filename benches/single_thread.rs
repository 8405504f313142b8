//! What one message costs on one thread, with no other core involved: a loop that sends a run
//! of 512 messages and then receives them, over and over, beside crossbeam `bounded(1024)`
//! doing the same. Two scenarios: a topic (`u64`, one partition, `Block` 1,024, one
//! subscriber at `Earliest`) and a queue (`capacity(1024)`, one consumer acking each). It
//! prints nanoseconds per message (send and receive) for each side, medians over interleaved
//! rounds, and the ratio of rates (embus ÷ crossbeam), as `benches/throughput.rs` does.
//!
//! With two threads, `throughput` also measures what crosses between the cores; this loop
//! measures the work alone, and it is the one to count instructions with. Under valgrind's
//! callgrind the count is deterministic (the machine's noise does not reach it): one round
//! of embus alone, divided by the messages the bench prints.
//!
//! ```text
//! cargo bench --bench single_thread                  # both scenarios, 7 rounds per side
//! cargo bench --bench single_thread -- topic         # scenarios whose name contains it
//! cargo bench --bench single_thread --no-run         # then, for instructions per message:
//! EMBUS_BENCH_ROUNDS=1 EMBUS_BENCH_ONLY=embus \
//!     valgrind --tool=callgrind target/release/deps/single_thread-<hash> topic
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use embus::{Broker, Overflow, QueueOptions, Retention, Start, TopicOptions};

#[path = "common/mod.rs"]
mod common;
use common::{Args, load, median, order, range};

/// A scenario: its name, and its embus side (`n` messages, the time they took).
type Scenario = (&'static str, fn(u64) -> Duration);

/// Messages sent, then received, before the loop goes round again.
const RUN: u64 = 512;

/// Sends runs of [`RUN`] messages and receives each run back, `n` messages in all; checks that
/// every message arrived once (the sum of their values).
fn drive(n: u64, side: &str, mut send: impl FnMut(u64), mut recv: impl FnMut() -> u64) -> Duration {
    let start = Instant::now();
    let mut sum = 0u64;
    for first in (0..n).step_by(RUN as usize) {
        let last = (first + RUN).min(n);
        for i in first..last {
            send(i);
        }
        for _ in first..last {
            sum = sum.wrapping_add(recv());
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(sum, n * (n - 1) / 2, "{side} delivered every message once");
    elapsed
}

/// Crossbeam `bounded(1024)`.
fn crossbeam(n: u64) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(1024);
    let send = |i| tx.send(i).expect("receiver alive");
    drive(n, "crossbeam", send, || rx.recv().expect("sender alive"))
}

/// An embus topic: one partition, `Block` 1,024, one subscriber.
fn topic(n: u64) -> Duration {
    let bus = Broker::memory();
    let options = TopicOptions::default()
        .retention(Retention::messages(1024))
        .overflow(Overflow::Block);
    let topic = bus.topic_with::<u64>("bench", options).expect("topic");
    let mut sub = topic.subscribe(Start::Earliest).expect("subscribe");
    let producer = topic.producer();
    let send = |i| {
        producer.send(i).expect("broker open");
    };
    drive(n, "the topic", send, || {
        *sub.recv().expect("broker open").payload()
    })
}

/// An embus queue of capacity 1,024, one consumer acking each message.
fn queue(n: u64) -> Duration {
    let bus = Broker::memory();
    let options = QueueOptions::default().capacity(1024);
    let queue = bus.queue_with::<u64>("bench", options).expect("queue");
    let mut consumer = queue.consumer();
    let producer = queue.producer();
    let send = |i| {
        producer.send(i).expect("broker open");
    };
    drive(n, "the queue", send, || {
        let message = consumer.recv().expect("broker open");
        let value = *message.payload();
        message.ack().expect("memory ack");
        value
    })
}

fn nanos_per_message(elapsed: Duration, n: u64) -> f64 {
    elapsed.as_nanos() as f64 / n as f64
}

fn main() {
    let args = Args::read((5, 7));
    let n: u64 = if args.quick { 20_000 } else { 200_000 };
    // `embus` or `baseline`: run that side only (for a profiler).
    let only = std::env::var("EMBUS_BENCH_ONLY").ok();
    let runs = |side: &str| only.as_deref().is_none_or(|o| o == side);
    println!(
        "embus on one thread vs crossbeam: {} rounds per side, {n} messages a round in runs of \
         {RUN}, load {}",
        args.rounds,
        load()
    );
    println!("ns per message (send + receive), medians; ratio = crossbeam ns ÷ embus ns\n");
    println!("| scenario | crossbeam ns | embus ns | ratio [min–max] |");
    println!("|---|---|---|---|");
    let scenarios: [Scenario; 2] = [("topic", topic), ("queue + ack", queue)];
    for (name, embus) in scenarios {
        if !args.wants(name) {
            continue;
        }
        // One untimed round of each warms the allocator and the caches.
        if runs("baseline") {
            black_box(crossbeam(n / 10));
        }
        if runs("embus") {
            black_box(embus(n / 10));
        }
        let (mut base, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..args.rounds {
            // A/B, then B/A: neither side always runs first.
            let (mut b, mut e) = (None, None);
            for side in order(round, 2) {
                match side {
                    0 if runs("baseline") => b = Some(nanos_per_message(crossbeam(n), n)),
                    1 if runs("embus") => e = Some(nanos_per_message(embus(n), n)),
                    _ => {}
                }
            }
            base.extend(b);
            ours.extend(e);
            if let (Some(b), Some(e)) = (b, e) {
                ratios.push(b / e);
            }
        }
        let show = |v: &[f64]| {
            if v.is_empty() {
                "—".to_owned()
            } else {
                format!("{:.1}", median(v.to_vec()))
            }
        };
        let ratio = if ratios.is_empty() {
            "—".to_owned()
        } else {
            let (min, max) = range(&ratios);
            format!("{:.3} [{min:.3}–{max:.3}]", median(ratios.clone()))
        };
        println!("| {name} | {} | {} | {ratio} |", show(&base), show(&ours));
    }
    if only.is_some() {
        let messages = n / 10 + n * args.rounds as u64;
        println!("\n{messages} messages per scenario on the side that ran (warm-up included)");
    }
}

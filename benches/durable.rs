//! Durable mode (redb) against its floors, measured side by side in one process.
//!
//! A plain `harness = false` binary, like `benches/throughput.rs`: each section runs its sides in
//! interleaved rounds (the order rotates and reverses every round, so no side always goes
//! first; sides compared by a gate are listed next to each other, so they run back to back in
//! most rounds), prints the median of every figure with its min–max, and the median, min and
//! max of each per-round ratio. Absolute numbers drift on a shared VM (and a virtual disk's fsync
//! latency drifts more); ratios are taken within one round. A gate PASSes when the median ratio
//! meets its target; if only the best round does, it says so (noisy).
//!
//! ```text
//! cargo bench --bench durable                          # full run (about 4–5 minutes)
//! EMBUS_BENCH_QUICK=1 cargo bench --bench durable      # smoke run: short windows, 3 rounds
//! cargo bench --bench durable -- open                  # sections whose name contains it
//! cargo bench --bench durable -- tx                    # the transaction sections
//! cargo bench --bench durable -- e2e                   # issue #16's E1: producer → consumer
//! EMBUS_BENCH_ROUNDS=9 cargo bench --bench durable     # rounds (default 7, quick 3)
//! EMBUS_BENCH_ONLY=D1 cargo bench --bench durable      # the side labelled so, else those whose
//!                                                      # label contains it; no ratios (`perf`)
//! EMBUS_BENCH_DIR=/some/disk cargo bench ...           # where the files go (never tmpfs)
//! ```
//!
//! | section | side | what one run does |
//! |---|---|---|
//! | commit | F0 | overwrites 4 KiB blocks of a preallocated file with `write` + `File::sync_data` in a loop: the disk's fsync floor (no size change to sync, as in most redb commits) |
//! | commit | F1 qr / F1 | raw redb, one row (`u64` key, 100-byte value) per `Durability::Immediate` transaction, with and without `set_quick_repair(true)` (embus commits with it) |
//! | commit | D1 | embus `send` of a 100-byte `Vec<u8>`, one producer, `Durability::Immediate` |
//! | commit | D1 1pc | as D1 with `BrokerBuilder::two_phase_commit(false)` (one fsync per commit; its floor is F1) |
//! | commit | D2 | 16 producer threads, each sending one message at a time, `Immediate`; with the sends the recent commits carried (`D2 sends/commit`, from `Broker::stats`) |
//! | commit | D1 / D2 10ms | as D1 / D2 with `Durability::Interval(10 ms)` |
//! | batch | F2 | raw redb, 1000 rows (sequential keys, 100-byte values) per transaction, quick repair |
//! | batch | D3 | embus `send_batch` of 1000 messages, `Immediate` |
//! | e2e | E1 queue | a `Queue<Vec<u8>>`, `Immediate`: one producer thread doing `send_batch` of 1000 for the window, one consumer thread doing `recv` + `ack` of each; counts messages acked |
//! | e2e | F2 | as in batch: E1's floor, in the same rounds |
//! | e2e | E1 group | as E1 queue on a topic (one partition, unlimited retention), the consumer a group member (`join_group`) |
//! | latency | D7 | one producer, one live subscriber (`Start::Latest`): end-to-end latency (send start → `recv` returns) and the `send` call's duration, p50 and p99 |
//! | latency | F0 latency | one such 4 KiB overwrite + `sync_data` at a time, paced like D7: L1's floor (the gate is D7's send p50 over its p50) |
//! | latency | D7 1pc | as D7 with `two_phase_commit(false)`: the `send` call's duration |
//! | latency | F1 qr latency / F1 latency | raw redb, one row per commit, one commit at a time paced like D7, with and without quick repair: what redb itself adds to L1's floor |
//! | latency | D7 memory | the same in `Broker::memory()` |
//! | tx-outbox | T1 outbox | a `Broker::transaction` inserting one row (100-byte value) into the application's own table through `Transaction::redb` and sending one message, committed; broker built with `BrokerBuilder::database` on the application's redb file, `Immediate` |
//! | tx-outbox | T1 send | embus `send` of one message at a time, the same broker setup |
//! | tx-outbox | T1 paired | T1 outbox and T1 send in one run, alternating commit by commit on two brokers (the gate; see below) |
//! | tx-sends | T2 tx | a transaction of 100 sends to one topic, committed, `Immediate` |
//! | tx-sends | T2 batch | embus `send_batch` of 100, `Immediate` |
//! | tx-sends | T2 paired | T2 tx and T2 batch in one run, alternating commit by commit on two brokers (the gate) |
//! | tx-ctp | T3 tx | consume-transform-produce: one group member on a topic of 100k stored inputs (quick: 20k) receives 1000, and one transaction sends their 1000 outputs to another topic and acks the 1000 inputs; `Immediate` |
//! | tx-ctp | T3 plain | the same loop without a transaction: receive 1000, `send_batch` their outputs, then `ack` each input |
//! | tx-ctp | T3 paired | T3 tx and T3 plain in one run, on two pipelines, alternating batch by batch (the gate) |
//! | open | open | `Broker::open` + `bus.topic` + the first `recv` of a `Start::Earliest` subscriber, on a store of 10k vs 1M retained messages (quick: 10k vs 200k), after a clean close and after a kill -9 (of a child with one-phase commits too: `open large kill 1pc`) |
//!
//! Throughput runs are time-boxed (1 s each, quick 0.25 s): each opens a fresh file (untimed),
//! makes one untimed write (table creation; embus: the topic's declaration), then runs the clock
//! from the first timed operation until the store is closed (embus `close`, redb `Database`
//! drop, which both commit once more), so `Interval` mode is charged for making every counted
//! send durable. Rates count messages (rows) per second. The embus topics of the throughput
//! rows have one partition and unlimited retention, so no run pays for trimming, as the raw
//! redb rows do not. E1's producer stops at the end of the window; its clock stops when the
//! consumer has acked every message sent and the broker is closed.
//!
//! D7 paces the producer: after each send it waits for the subscriber to report the message,
//! then pauses 200 µs, so every message finds the subscriber parked in `recv` (a live consumer
//! waiting for work). The gate compares durable mode's (e2e p50 − send p50), what durable mode
//! adds on top of its commit, with memory mode's e2e p50.
//!
//! The transaction gates compare *paired* runs: a virtual disk's fsync latency drifts by several
//! times within seconds (rounds of one side ran at 130/s and at 950/s in one run), which
//! separate 1 s runs of each side do not average out, so their ratio (kept for reference)
//! swings from 0.3× to 3×. A paired run opens both sides' brokers, alternates their
//! operations (a b, b a, …) for twice the window (T3: over all the inputs of each), and
//! charges each side only its own operations' time (and its own `close`), so both sides see
//! the same moments of the disk. Both brokers' writer threads run throughout, so a side's
//! background work (a group's acks ride a later commit) can fall in the other's time; the
//! sequential sides' ratios stay in the report for reference.
//!
//! T3 runs are not time-boxed: each processes all its inputs (stored untimed, in batches of
//! 1000, before the clock starts, with the member already joined) and checks that the output
//! topic holds one output per input; its rate counts inputs per second.
//!
//! The open section builds each store once (untimed, `send_batch` of 1000 in `Interval(10 ms)`
//! mode), then each round times, per store, 3 opens after a clean close and 3 after a kill -9
//! (a run reports the median of its 3: one open is a few fsyncs, as noisy as they are). For a
//! kill, the bench re-executes itself with `EMBUS_BENCH_CHILD=<path>`: the child opens the
//! store, sends a few messages (`Immediate`), says so on stdout and waits; the parent reads
//! that line, SIGKILLs it, and times the open. Every open checks that the first message is offset 0 and
//! that the end offset is what was sent (the killed child's acknowledged sends included). The
//! files stay in the OS page cache throughout: these are warm opens.

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use embus::{Broker, Durability};

#[path = "common/mod.rs"]
mod common;
use common::{
    Args, BATCH, Unit, bench_dir, format_value, load, median, order, payload, print_row,
    print_rule, range, seq_of, unlimited_topic,
};

/// The transaction sections (`tx-…`): kept apart, this file being long enough.
#[path = "durable/tx.rs"]
mod tx;

/// The end-to-end section (`e2e`), apart for the same reason.
#[path = "durable/e2e.rs"]
mod e2e;

/// The latency section (`latency`: D7 and L1).
#[path = "durable/latency.rs"]
mod latency;

/// The open section (`open`), and the child process it kills.
#[path = "durable/open.rs"]
mod open;

/// The floors: raw fsync and raw redb (F0, F1, F2).
#[path = "durable/floors.rs"]
mod floors;
use floors::{FsyncFile, f2, fsync_floor, raw_redb};

// ---------------------------------------------------------------------------------------------
// Settings and files

/// Producer threads in D2.
const THREADS: usize = 16;
/// The relaxed mode's commit interval.
const INTERVAL: Duration = Duration::from_millis(10);

struct Ctx {
    quick: bool,
    rounds: usize,
    /// How long one throughput run sends.
    window: Duration,
    /// Messages per D7 run.
    samples: usize,
    /// Retained messages of the small and the large store (open section).
    open_sizes: (u64, u64),
    dir: PathBuf,
    files: AtomicUsize,
}

impl Ctx {
    /// A fresh file name in the bench directory.
    fn file(&self, label: &str) -> PathBuf {
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        let label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.dir.join(format!("{label}-{n}.db"))
    }

    /// The window of one run: a quarter for warm-up runs.
    fn window(&self, warm: bool) -> Duration {
        if warm { self.window / 4 } else { self.window }
    }
}

/// Removes a run's file (and nothing else).
fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// A fresh durable broker in a fresh file, committing in one phase if `two_phase` is false.
fn durable_broker(
    ctx: &Ctx,
    label: &str,
    durability: Durability,
    two_phase: bool,
) -> (PathBuf, Broker) {
    let path = ctx.file(label);
    let bus = Broker::builder()
        .path(&path)
        .durability(durability)
        .two_phase_commit(two_phase)
        .open()
        .expect("open the durable broker");
    (path, bus)
}

// ---------------------------------------------------------------------------------------------
// Figures: what one run of a side reports

/// One measured figure of one run.
struct Figure {
    key: &'static str,
    value: f64,
    unit: Unit,
}

fn rate(key: &'static str, ops: u64, elapsed: Duration) -> Figure {
    Figure {
        key,
        value: ops as f64 / elapsed.as_secs_f64(),
        unit: Unit::Rate,
    }
}

fn time(key: &'static str, value: Duration) -> Figure {
    Figure {
        key,
        value: value.as_secs_f64(),
        unit: Unit::Time,
    }
}

// ---------------------------------------------------------------------------------------------
// D1, D2, D3: embus throughput

/// A fresh durable broker (as [`durable_broker`]) and its one-partition, unlimited-retention
/// topic, with one message sent (untimed: the topic's declaration rides that commit).
fn embus_topic(
    ctx: &Ctx,
    label: &str,
    durability: Durability,
    two_phase: bool,
) -> (PathBuf, Broker, embus::Topic<Vec<u8>>) {
    let (path, bus) = durable_broker(ctx, label, durability, two_phase);
    let topic = unlimited_topic(&bus, "bench");
    topic.producer().send(payload(0)).expect("warm send");
    (path, bus, topic)
}

/// Runs `op` on `topic` until the round's window has passed (each call sends and returns how
/// many messages, `n` counting those before), then closes the broker (its last commit counted)
/// and removes the file: one side's figure.
fn timed(
    ctx: &Ctx,
    warm: bool,
    key: &'static str,
    (path, bus, topic): (PathBuf, Broker, embus::Topic<Vec<u8>>),
    mut op: impl FnMut(&Broker, &embus::Producer<Vec<u8>>, u64) -> u64,
) -> Vec<Figure> {
    let producer = topic.producer();
    let window = ctx.window(warm);
    let mut n = 0u64;
    let start = Instant::now();
    loop {
        n += op(&bus, &producer, n);
        if start.elapsed() >= window {
            break;
        }
    }
    drop(producer);
    bus.close().expect("close");
    let elapsed = start.elapsed();
    drop(topic);
    remove(&path);
    vec![rate(key, n, elapsed)]
}

/// D1: one producer, `send` one at a time (one-phase commits if `two_phase` is false).
fn embus_single(
    ctx: &Ctx,
    warm: bool,
    key: &'static str,
    durability: Durability,
    two_phase: bool,
) -> Vec<Figure> {
    let store = embus_topic(ctx, key, durability, two_phase);
    timed(ctx, warm, key, store, |_, producer, n| {
        if producer.send(payload(n)).is_err() {
            panic!("send failed");
        }
        1
    })
}

/// D2: `THREADS` producers, each sending one at a time; figures `key` (the rate) and `shared`
/// (the sends the recent commits carried).
fn embus_concurrent(
    ctx: &Ctx,
    warm: bool,
    (key, shared): (&'static str, &'static str),
    durability: Durability,
) -> Vec<Figure> {
    let (path, bus, topic) = embus_topic(ctx, key, durability, true);
    let window = ctx.window(warm);
    let barrier = Barrier::new(THREADS);
    let results: Vec<(Instant, u64)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let producer = topic.producer();
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut n = 0u64;
                    loop {
                        if producer.send(payload(n)).is_err() {
                            panic!("send failed");
                        }
                        n += 1;
                        if start.elapsed() >= window {
                            break;
                        }
                    }
                    (start, n)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("producer thread"))
            .collect()
    });
    // How many sends the recent commits carried: all sixteen when they share each commit.
    let per_commit = bus.stats().store.map_or(0.0, |s| s.records_per_commit);
    bus.close().expect("close");
    let start = results.iter().map(|r| r.0).min().expect("a thread");
    let elapsed = start.elapsed();
    drop(topic);
    remove(&path);
    let n = results.iter().map(|r| r.1).sum();
    vec![
        rate(key, n, elapsed),
        Figure {
            key: shared,
            value: per_commit,
            unit: Unit::Count,
        },
    ]
}

/// D3: one producer, `send_batch` of `BATCH`.
fn embus_batch(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let store = embus_topic(ctx, "D3", Durability::Immediate, true);
    timed(ctx, warm, "D3", store, |_, producer, n| {
        let batch: Vec<Vec<u8>> = (n..n + BATCH as u64).map(payload).collect();
        if producer.send_batch(batch).is_err() {
            panic!("send_batch failed");
        }
        BATCH as u64
    })
}

// ---------------------------------------------------------------------------------------------
// Sections, rounds and the report

type Run = Box<dyn Fn(&Ctx, bool) -> Vec<Figure>>;
type Setup = Box<dyn FnOnce(&Ctx) -> Vec<Side>>;

struct Side {
    label: &'static str,
    what: &'static str,
    run: Run,
}

#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
}

/// A per-round ratio of two figures; `None` target: for reference.
struct Ratio {
    name: &'static str,
    num: &'static str,
    den: &'static str,
    target: Option<Target>,
}

struct Section {
    name: &'static str,
    sides: Vec<Side>,
    ratios: Vec<Ratio>,
    /// Untimed setup before the rounds (the open section builds its stores).
    setup: Option<Setup>,
}

fn side(
    label: &'static str,
    what: &'static str,
    run: impl Fn(&Ctx, bool) -> Vec<Figure> + 'static,
) -> Side {
    Side {
        label,
        what,
        run: Box::new(run),
    }
}

fn ratio(
    name: &'static str,
    num: &'static str,
    den: &'static str,
    target: Option<Target>,
) -> Ratio {
    Ratio {
        name,
        num,
        den,
        target,
    }
}

fn sections() -> Vec<Section> {
    use Target::AtLeast;
    let relaxed = Durability::Interval(INTERVAL);
    vec![
        Section {
            name: "commit",
            sides: vec![
                side("F0", "fsync floor: 4 KiB write + sync_data", fsync_floor),
                side(
                    "F1",
                    "redb 1 row/txn, Immediate, no quick repair",
                    |c, w| raw_redb(c, w, "F1", 1, false),
                ),
                side(
                    "F1 qr",
                    "redb 1 row/txn, Immediate, quick repair",
                    |c, w| raw_redb(c, w, "F1 qr", 1, true),
                ),
                side("D1", "embus send, 1 producer, Immediate", |c, w| {
                    embus_single(c, w, "D1", Durability::Immediate, true)
                }),
                side(
                    "D1 1pc",
                    "embus send, 1 producer, Immediate, one-phase commits",
                    |c, w| embus_single(c, w, "D1 1pc", Durability::Immediate, false),
                ),
                side("D2", "embus send, 16 producers, Immediate", |c, w| {
                    embus_concurrent(c, w, ("D2", "D2 sends/commit"), Durability::Immediate)
                }),
                side(
                    "D2 10ms",
                    "embus send, 16 producers, Interval(10ms)",
                    move |c, w| {
                        embus_concurrent(c, w, ("D2 10ms", "D2 10ms sends/commit"), relaxed)
                    },
                ),
                side(
                    "D1 10ms",
                    "embus send, 1 producer, Interval(10ms)",
                    move |c, w| embus_single(c, w, "D1 10ms", relaxed, true),
                ),
            ],
            ratios: vec![
                ratio("D1 / F1 qr", "D1", "F1 qr", Some(AtLeast(0.8))),
                ratio("D1 1pc / F1 (no qr)", "D1 1pc", "F1", Some(AtLeast(0.8))),
                ratio("D1 1pc / D1", "D1 1pc", "D1", None),
                ratio("D2 / D1", "D2", "D1", Some(AtLeast(10.0))),
                ratio("D1 10ms / D1", "D1 10ms", "D1", None),
                ratio("D2 10ms / D1", "D2 10ms", "D1", None),
                ratio("D1 / F1 (no qr)", "D1", "F1", None),
                ratio("F1 qr / F1 (no qr)", "F1 qr", "F1", None),
                ratio("F1 qr / F0", "F1 qr", "F0", None),
            ],
            setup: None,
        },
        Section {
            name: "batch",
            sides: vec![
                f2(),
                side("D3", "embus send_batch(1000), Immediate", embus_batch),
            ],
            ratios: vec![ratio("D3 / F2", "D3", "F2", Some(AtLeast(0.9)))],
            setup: None,
        },
        e2e::section(),
        latency::section(),
        Section {
            name: "tx-outbox",
            sides: vec![
                side(
                    "T1 outbox",
                    "transaction: 1 app row (redb()) + 1 send, Immediate",
                    tx::outbox_tx,
                ),
                side(
                    "T1 send",
                    "embus send, 1 producer, Immediate, app database",
                    tx::outbox_plain,
                ),
                side(
                    "T1 paired",
                    "T1 outbox and T1 send, alternating commits",
                    tx::outbox_paired,
                ),
            ],
            ratios: vec![
                ratio(
                    "T1 outbox / send, paired",
                    "T1 outbox paired",
                    "T1 send paired",
                    Some(AtLeast(0.8)),
                ),
                ratio("T1 outbox / send", "T1 outbox", "T1 send", None),
            ],
            setup: None,
        },
        Section {
            name: "tx-sends",
            sides: vec![
                side("T2 tx", "transaction of 100 sends, Immediate", tx::sends_tx),
                side(
                    "T2 batch",
                    "embus send_batch(100), Immediate",
                    tx::sends_batch,
                ),
                side(
                    "T2 paired",
                    "T2 tx and T2 batch, alternating commits",
                    tx::sends_paired,
                ),
            ],
            ratios: vec![
                ratio(
                    "T2 tx / batch, paired",
                    "T2 tx paired",
                    "T2 batch paired",
                    Some(AtLeast(0.8)),
                ),
                ratio("T2 tx / batch", "T2 tx", "T2 batch", None),
            ],
            setup: None,
        },
        Section {
            name: "tx-ctp",
            sides: vec![
                side(
                    "T3 tx",
                    "group member: tx of 1000 acks + 1000 sends",
                    tx::ctp_tx,
                ),
                side(
                    "T3 plain",
                    "group member: send_batch(1000), then 1000 acks",
                    tx::ctp_plain,
                ),
                side(
                    "T3 paired",
                    "T3 tx and T3 plain, alternating batches",
                    tx::ctp_paired,
                ),
            ],
            ratios: vec![
                ratio(
                    "T3 tx / plain, paired",
                    "T3 tx paired",
                    "T3 plain paired",
                    Some(AtLeast(0.7)),
                ),
                ratio("T3 tx / plain", "T3 tx", "T3 plain", None),
            ],
            setup: None,
        },
        open::section(),
    ]
}

/// Every run of every side, by round.
struct Results {
    /// (key, unit, index of the side, per-round values), in first-seen order.
    figures: Vec<(&'static str, Unit, usize, Vec<f64>)>,
}

impl Results {
    fn add(&mut self, side: usize, figures: Vec<Figure>) {
        for f in figures {
            match self.figures.iter_mut().find(|(k, ..)| *k == f.key) {
                Some((.., values)) => values.push(f.value),
                None => self.figures.push((f.key, f.unit, side, vec![f.value])),
            }
        }
    }

    fn values(&self, key: &str) -> &[f64] {
        self.figures
            .iter()
            .find(|(k, ..)| *k == key)
            .map_or(&[], |(.., v)| v.as_slice())
    }
}

fn measure(ctx: &Ctx, sides: &[Side]) -> Results {
    // Warm-up: page in code, grow allocator arenas, spin up the CPU and the disk.
    for s in sides {
        let _ = (s.run)(ctx, true);
    }
    let mut results = Results {
        figures: Vec::new(),
    };
    for round in 0..ctx.rounds {
        let mut line = format!("  round {round}:");
        for i in order(round, sides.len()) {
            let figures = (sides[i].run)(ctx, false);
            for f in &figures {
                line.push_str(&format!(" {} {}", f.key, format_value(f.value, f.unit)));
            }
            results.add(i, figures);
        }
        eprintln!("{line}");
    }
    results
}

struct RatioOutcome {
    median: f64,
    min: f64,
    max: f64,
    verdict: &'static str,
}

fn judge(r: &Ratio, results: &Results) -> Option<RatioOutcome> {
    let (num, den) = (results.values(r.num), results.values(r.den));
    if num.is_empty() || num.len() != den.len() {
        return None;
    }
    let ratios: Vec<f64> = num.iter().zip(den).map(|(n, d)| n / d).collect();
    let med = median(ratios.clone());
    let (min, max) = range(&ratios);
    let verdict = match r.target {
        None => "(ref)",
        Some(t) => {
            let (meets, best) = match t {
                Target::AtLeast(x) => (med >= x, max >= x),
                Target::AtMost(x) => (med <= x, min <= x),
            };
            match (meets, best) {
                (true, _) => "PASS",
                (false, true) => "MISS (best round passes: noisy)",
                (false, false) => "MISS",
            }
        }
    };
    Some(RatioOutcome {
        median: med,
        min,
        max,
        verdict,
    })
}

/// Runs matching sides alone (`EMBUS_BENCH_ONLY`), for profiling; no ratios. A label equal to
/// `only` is the one side run (`D2`, not `D2 10ms` too); else every label containing it.
fn profile(ctx: &Ctx, sides: &[Side], only: &str) {
    let exact = sides.iter().any(|s| s.label == only);
    for s in sides
        .iter()
        .filter(|s| s.label == only || !exact && s.label.contains(only))
    {
        for round in 0..ctx.rounds {
            let figures = (s.run)(ctx, false);
            let shown: Vec<String> = figures
                .iter()
                .map(|f| format!("{} {}", f.key, format_value(f.value, f.unit)))
                .collect();
            println!("{:<18} round {round}: {}", s.label, shown.join(", "));
        }
    }
}

fn main() {
    if let Some(path) = std::env::var_os("EMBUS_BENCH_CHILD") {
        open::child(Path::new(&path));
    }
    let args = Args::read((3, 7));
    let (quick, rounds) = (args.quick, args.rounds);
    let (dir, fs) = bench_dir("bench-durable");
    let ctx = Ctx {
        quick,
        rounds,
        window: if quick {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        },
        samples: if quick { 100 } else { 400 },
        open_sizes: if quick {
            (10_000, 200_000)
        } else {
            (10_000, 1_000_000)
        },
        dir,
        files: AtomicUsize::new(0),
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "embus durable mode vs floors: {} mode, {rounds} rounds, {cpus} CPUs, files in {} ({fs}), load {}",
        if ctx.quick { "QUICK" } else { "full" },
        ctx.dir.display(),
        load()
    );
    println!(
        "throughput runs send for {:?} each; figures are medians of rounds [min–max]; ratios are per round\n",
        ctx.window
    );
    let only = std::env::var("EMBUS_BENCH_ONLY").ok();
    let started = Instant::now();
    let mut done = Vec::new();
    for section in sections() {
        if !args.wants(section.name) {
            continue;
        }
        let Section {
            name,
            mut sides,
            ratios,
            setup,
        } = section;
        // The open section's stores take a while to build: only for `EMBUS_BENCH_ONLY=open…`.
        if only.as_ref().is_some_and(|o| !o.starts_with("open")) && setup.is_some() {
            continue;
        }
        eprintln!("{name}:");
        if let Some(setup) = setup {
            sides.extend(setup(&ctx));
        }
        if let Some(only) = &only {
            profile(&ctx, &sides, only);
            continue;
        }
        let results = measure(&ctx, &sides);
        done.push((name, sides, ratios, results));
    }
    if only.is_some() {
        let _ = std::fs::remove_dir_all(&ctx.dir);
        return;
    }

    println!();
    const FIGURE_WIDTHS: [i32; 5] = [9, 20, 52, -12, 25];
    print_row(
        &FIGURE_WIDTHS,
        &["section", "figure", "side", "median", "[min–max]"],
    );
    print_rule(&FIGURE_WIDTHS);
    for (name, sides, _, results) in &done {
        for (key, unit, side, values) in &results.figures {
            let what = sides[*side].what;
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            print_row(
                &FIGURE_WIDTHS,
                &[
                    name,
                    key,
                    what,
                    &format_value(median(values.clone()), *unit),
                    &format!(
                        "[{} – {}]",
                        format_value(min, *unit),
                        format_value(max, *unit)
                    ),
                ],
            );
        }
    }
    println!();
    const RATIO_WIDTHS: [i32; 4] = [34, 26, 7, 31];
    print_row(
        &RATIO_WIDTHS,
        &["ratio", "median [min–max]", "target", "verdict"],
    );
    print_rule(&RATIO_WIDTHS);
    for (_, _, ratios, results) in &done {
        for r in ratios {
            let Some(o) = judge(r, results) else { continue };
            let target = match r.target {
                Some(Target::AtLeast(x)) => format!("≥{x}"),
                Some(Target::AtMost(x)) => format!("≤{x}"),
                None => String::new(),
            };
            print_row(
                &RATIO_WIDTHS,
                &[
                    r.name,
                    &format!("{:.3} [{:.3}–{:.3}]", o.median, o.min, o.max),
                    &target,
                    o.verdict,
                ],
            );
        }
    }
    println!(
        "(load average at the end: {}; wall time {:.0} s)",
        load(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&ctx.dir);
}

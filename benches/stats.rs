//! What `Broker::stats` costs: its latency on a busy broker, and what snapshots cost a producer
//! (issue #15: under 1 ms for 100 topics × 8 partitions and 50 groups; a producer keeps ≥ 0.95×
//! its rate while snapshots run).
//!
//! A plain `harness = false` binary, like `benches/throughput.rs` and `benches/durable.rs`:
//! sides run in interleaved rounds (the order rotates every round and reverses every other
//! one), ratios are taken within a round, and the report gives their median with the min–max.
//! Absolute numbers drift on a shared VM; ratios within one run are what to read.
//!
//! ```text
//! cargo bench --bench stats                          # full run (about a minute)
//! EMBUS_BENCH_QUICK=1 cargo bench --bench stats      # smoke run: short windows, 3 rounds
//! cargo bench --bench stats -- producer              # sections whose name contains it
//! EMBUS_BENCH_ROUNDS=9 cargo bench --bench stats     # rounds (default 7, quick 3)
//! EMBUS_BENCH_DIR=/some/dir cargo bench ...          # where the durable file goes
//! ```
//!
//! Every broker has the same shape ([`populate`]): 100 topics of 8 partitions, 100 `u64`
//! messages in each partition; on each of the first 50 topics a consumer group whose one
//! member received 200 messages, acked 190 and holds 10 (in flight); on 5 other topics a plain
//! subscriber that read 50; 10 queues of 100 messages, each with a consumer holding 5.
//!
//! | section | side | what one run does |
//! |---|---|---|
//! | latency | memory | times each of `CALLS` `stats()` calls on a memory broker (1000, quick 200) |
//! | latency | durable | the same on a durable broker (a file; also reads the store's figures) |
//! | producer | baseline | one thread sends `u64`s to topic `t099` (8 partitions, no readers) for the window (1 s, quick 0.25 s), nobody snapshots |
//! | producer | back-to-back | the same while a second thread calls `stats()` in a loop, back to back (the worst case) |
//! | producer | every 1 ms / 10 ms | the same with a snapshot every 1 ms / 10 ms (the thread sleeps between them) |
//! | producer | (ref) b2b other broker | back-to-back snapshots of a second, identical broker: the cost of a busy second core alone, without touching the producer's locks |
//!
//! The latency gate is the median of all calls against 1 ms (p99 is reported, not gated: one
//! preempted call on a shared core is 4 ms). The producer gates are the median per-round ratio
//! side ÷ baseline against 0.95. When back-to-back misses, compare it with the `other broker`
//! row: if that misses as much, the cost is the second busy core (CPU time, memory bandwidth),
//! not contention on the producer's partitions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use embus::{Broker, Consumer, Message, Start, TopicOptions};

#[path = "common/mod.rs"]
mod common;
use common::{Args, load, median, order};

/// Topics of the shape, their partitions, groups, subscribers and queues.
const TOPICS: usize = 100;
const PARTITIONS: u32 = 8;
const GROUPS: usize = 50;
const SUBSCRIBERS: usize = 5;
const QUEUES: usize = 10;
/// Messages sent to each partition, and to each queue.
const PER_PARTITION: u64 = 100;
/// What each group member receives, and how many of those it leaves unacked.
const GROUP_RECEIVED: usize = 200;
const GROUP_HELD: usize = 10;
/// The topic the producer section sends to (one without readers, so it never blocks).
const PRODUCER_TOPIC: &str = "t099";

/// What keeps a populated broker's readers alive (and their deliveries unsettled).
struct Shape {
    _consumers: Vec<Consumer<u64>>,
    _held: Vec<Message<u64>>,
}

fn topic_name(i: usize) -> String {
    format!("t{i:03}")
}

/// Declares and fills the shape described in the module docs.
fn populate(bus: &Broker) -> Shape {
    let mut consumers = Vec::new();
    let mut held = Vec::new();
    let options = TopicOptions::default().partitions(PARTITIONS);
    for i in 0..TOPICS {
        let topic = bus
            .topic_with::<u64>(&topic_name(i), options)
            .expect("topic");
        let n = PER_PARTITION * u64::from(PARTITIONS);
        topic.producer().send_batch((0..n).collect()).expect("send");
        if i < GROUPS {
            let mut member = topic.join_group(&format!("g{i:03}")).expect("group");
            for k in 0..GROUP_RECEIVED {
                let msg = member.recv_timeout(Duration::from_secs(5)).expect("recv");
                if k < GROUP_RECEIVED - GROUP_HELD {
                    msg.ack().expect("ack");
                } else {
                    held.push(msg);
                }
            }
            consumers.push(member);
        } else if i < GROUPS + SUBSCRIBERS {
            let mut sub = topic.subscribe(Start::Earliest).expect("subscribe");
            for _ in 0..50 {
                sub.recv_timeout(Duration::from_secs(5)).expect("recv");
            }
            consumers.push(sub);
        }
    }
    for q in 0..QUEUES {
        let queue = bus.queue::<u64>(&format!("q{q}")).expect("queue");
        queue
            .producer()
            .send_batch((0..PER_PARTITION).collect())
            .expect("send");
        let mut worker = queue.consumer();
        for _ in 0..5 {
            held.push(worker.recv_timeout(Duration::from_secs(5)).expect("recv"));
        }
        consumers.push(worker);
    }
    check(bus);
    Shape {
        _consumers: consumers,
        _held: held,
    }
}

/// Asserts that a snapshot sees the whole shape (a bench that measures less is worthless).
fn check(bus: &Broker) {
    let stats = bus.stats();
    let partitions: usize = stats.topics.iter().map(|t| t.partitions.len()).sum();
    let groups: Vec<_> = stats.topics.iter().flat_map(|t| &t.groups).collect();
    let subscribers: usize = stats.topics.iter().map(|t| t.subscribers.len()).sum();
    assert_eq!(stats.topics.len(), TOPICS);
    assert_eq!(partitions, TOPICS * PARTITIONS as usize);
    assert_eq!(groups.len(), GROUPS);
    assert!(groups.iter().all(|g| g.in_flight == GROUP_HELD as u64));
    assert_eq!(subscribers, SUBSCRIBERS);
    assert_eq!(stats.queues.len(), QUEUES);
    assert!(stats.queues.iter().all(|q| q.in_flight == 5));
}

// ---------------------------------------------------------------------------------------------
// Figures

/// The `q` quantile of sorted durations (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// A section of the bench.
type Section = fn(&Ctx);

struct Ctx {
    quick: bool,
    rounds: usize,
    dir: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// Section: latency

/// Times `calls` snapshots of `bus`, one by one.
fn time_calls(bus: &Broker, calls: usize, into: &mut Vec<Duration>) {
    for _ in 0..calls {
        let start = Instant::now();
        let stats = bus.stats();
        into.push(start.elapsed());
        std::hint::black_box(stats);
    }
}

fn latency(ctx: &Ctx) {
    let calls = if ctx.quick { 200 } else { 1000 };
    let memory = Broker::memory();
    let _memory_shape = populate(&memory);
    let path = ctx.dir.join("stats.embus");
    let _ = std::fs::remove_file(&path);
    let durable = Broker::open(&path).expect("open the durable broker");
    let _durable_shape = populate(&durable);
    let sides: [(&str, &Broker); 2] = [("memory", &memory), ("durable", &durable)];
    // Warm-up: page in code, grow allocator arenas.
    for (_, bus) in sides {
        time_calls(bus, calls / 4, &mut Vec::new());
    }
    let mut all: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut round_p50: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ctx.rounds {
        for s in order(round, 2) {
            let mut samples = Vec::with_capacity(calls);
            time_calls(sides[s].1, calls, &mut samples);
            samples.sort_unstable();
            round_p50[s].push(quantile(&samples, 0.5).as_secs_f64());
            eprintln!(
                "  latency {:<8} round {round}: p50 {}  p99 {}",
                sides[s].0,
                micros(quantile(&samples, 0.5)),
                micros(quantile(&samples, 0.99))
            );
            all[s].extend(samples);
        }
    }
    println!(
        "## latency: stats() on {TOPICS} topics × {PARTITIONS} partitions, {GROUPS} groups, \
         {SUBSCRIBERS} subscribers, {QUEUES} queues; {} rounds × {calls} calls\n",
        ctx.rounds
    );
    println!(
        "| broker | p50 | p99 | max | round p50s [min–max] | target | verdict |\n\
         |---|--:|--:|--:|--:|--:|---|"
    );
    for (s, (label, _)) in sides.iter().enumerate() {
        let sorted = {
            let mut v = all[s].clone();
            v.sort_unstable();
            v
        };
        let p50 = quantile(&sorted, 0.5);
        let rounds = &round_p50[s];
        let (lo, hi) = rounds
            .iter()
            .fold((f64::INFINITY, 0.0_f64), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        let verdict = match (p50 < Duration::from_millis(1), s == 0) {
            (true, true) => "PASS",
            (false, true) => "FAIL",
            (true, false) => "(ref) meets",
            (false, false) => "(ref) above",
        };
        println!(
            "| {label} | {} | {} | {} | {:.0}–{:.0} µs | p50 < 1 ms | {verdict} |",
            micros(p50),
            micros(quantile(&sorted, 0.99)),
            micros(sorted[sorted.len() - 1]),
            lo * 1e6,
            hi * 1e6
        );
    }
    let json = serde_json::to_string(&memory.stats()).expect("serialize");
    println!("\n(one snapshot is {} KiB of JSON)\n", json.len() / 1024);
    drop(durable);
    let _ = std::fs::remove_file(&path);
}

// ---------------------------------------------------------------------------------------------
// Section: producer

/// Who snapshots while the producer sends.
#[derive(Clone, Copy)]
enum Snapshots {
    None,
    /// Back to back; `true`: of the other broker.
    BackToBack(bool),
    Every(Duration),
}

const SIDES: [(&str, Snapshots, bool); 5] = [
    ("baseline (no snapshots)", Snapshots::None, false),
    ("back-to-back", Snapshots::BackToBack(false), true),
    (
        "every 1 ms",
        Snapshots::Every(Duration::from_millis(1)),
        true,
    ),
    (
        "every 10 ms",
        Snapshots::Every(Duration::from_millis(10)),
        true,
    ),
    ("(ref) b2b other broker", Snapshots::BackToBack(true), false),
];

/// What the scheduler says about the calling thread (Linux `/proc/thread-self/schedstat`):
/// nanoseconds on a CPU and waiting for one; `None` elsewhere.
fn schedstat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// One producer run.
struct Run {
    /// Messages sent per second of wall time.
    rate: f64,
    /// Messages sent per second the producer spent on a CPU (wall rate if unknown).
    cpu_rate: f64,
    /// Share of the window the producer waited for a CPU (0 if unknown).
    queued: f64,
    /// Snapshots taken per second.
    snapshots: f64,
}

/// One run of a side: the producer sends from this thread for `window`.
fn produce(bus: &Broker, other: &Broker, snapshots: Snapshots, window: Duration) -> Run {
    let producer = bus.topic::<u64>(PRODUCER_TOPIC).expect("topic").producer();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(2));
    let snapshotter = {
        let (stop, start) = (Arc::clone(&stop), Arc::clone(&start));
        let target = match snapshots {
            Snapshots::BackToBack(true) => other.clone(),
            _ => bus.clone(),
        };
        std::thread::spawn(move || {
            start.wait();
            let began = Instant::now();
            let mut taken = 0u64;
            let mut next = began;
            while !stop.load(Ordering::Relaxed) {
                match snapshots {
                    Snapshots::None => {
                        std::thread::park_timeout(Duration::from_millis(50));
                        continue;
                    }
                    Snapshots::BackToBack(_) => {}
                    Snapshots::Every(every) => {
                        next += every;
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
                std::hint::black_box(target.stats());
                taken += 1;
            }
            taken as f64 / began.elapsed().as_secs_f64()
        })
    };
    start.wait();
    let sched = schedstat();
    let began = Instant::now();
    let mut sent = 0u64;
    while began.elapsed() < window {
        for _ in 0..256 {
            producer.send(sent).expect("send");
            sent += 1;
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let (on_cpu, queued) = match (sched, schedstat()) {
        (Some((c0, q0)), Some((c1, q1))) => ((c1 - c0) as f64 / 1e9, (q1 - q0) as f64 / 1e9),
        _ => (elapsed, 0.0),
    };
    stop.store(true, Ordering::Relaxed);
    let snapshots = snapshotter.join().expect("snapshot thread");
    Run {
        rate: sent as f64 / elapsed,
        cpu_rate: sent as f64 / on_cpu,
        queued: queued / elapsed,
        snapshots,
    }
}

fn producer(ctx: &Ctx) {
    let window = Duration::from_millis(if ctx.quick { 250 } else { 1000 });
    let bus = Broker::memory();
    let _shape = populate(&bus);
    let other = Broker::memory();
    let _other_shape = populate(&other);
    for (_, snapshots, _) in SIDES {
        produce(&bus, &other, snapshots, window / 4); // warm-up
    }
    let mut runs: Vec<Vec<Run>> = (0..SIDES.len()).map(|_| Vec::new()).collect();
    for round in 0..ctx.rounds {
        for s in order(round, SIDES.len()) {
            runs[s].push(produce(&bus, &other, SIDES[s].1, window));
        }
        let line: Vec<String> = (0..SIDES.len())
            .map(|s| format!("{:.2}", runs[s][round].rate / 1e6))
            .collect();
        eprintln!("  producer round {round}: M msg/s {}", line.join(" / "));
    }
    // Per side and round, a figure of the run ÷ the baseline's in the same round.
    let ratios = |s: usize, figure: fn(&Run) -> f64| -> Vec<f64> {
        (0..ctx.rounds)
            .map(|r| figure(&runs[s][r]) / figure(&runs[0][r]))
            .collect()
    };
    println!(
        "## producer: one thread sends u64 to `{PRODUCER_TOPIC}` ({PARTITIONS} partitions) of the \
         same shape, {:?} per run, {} rounds; ratio = median of per-round side ÷ baseline \
         [min–max]; per CPU-s = messages per second the producer was on a CPU; queued = share \
         of the run it waited for one\n",
        window, ctx.rounds
    );
    println!(
        "| side | M msg/s | snapshots/s | queued | ratio [min–max] | per CPU-s ratio | target | verdict |\n\
         |---|--:|--:|--:|--:|--:|--:|---|"
    );
    for (s, (label, _, gate)) in SIDES.iter().enumerate() {
        let wall = ratios(s, |r| r.rate);
        let ratio = median(wall.clone());
        let lo = wall.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = wall.iter().copied().fold(0.0, f64::max);
        let cpu = ratios(s, |r| r.cpu_rate);
        let verdict = match (s == 0, *gate, ratio >= 0.95, hi >= 0.95) {
            (true, ..) => "",
            (_, true, true, _) => "PASS",
            (_, true, false, true) => "MISS (best round passes: noisy)",
            (_, true, false, false) => "MISS",
            (_, false, true, _) => "(ref) meets",
            (_, false, false, _) => "(ref) below",
        };
        let of = |figure: fn(&Run) -> f64| median(runs[s].iter().map(figure).collect());
        println!(
            "| {label} | {:.2} | {:.0} | {:.0}% | {ratio:.3} [{lo:.3}–{hi:.3}] | {:.3} [{:.3}–{:.3}] | {} | {verdict} |",
            of(|r| r.rate) / 1e6,
            of(|r| r.snapshots),
            of(|r| r.queued) * 100.0,
            median(cpu.clone()),
            cpu.iter().copied().fold(f64::INFINITY, f64::min),
            cpu.iter().copied().fold(0.0, f64::max),
            if s == 0 { "" } else { "≥ 0.95" },
        );
    }
    // The contention itself: back-to-back snapshots of the producer's broker against the same
    // load on another broker, per CPU-second (scheduling cancels out).
    let same: Vec<f64> = (0..ctx.rounds)
        .map(|r| runs[1][r].cpu_rate / runs[4][r].cpu_rate)
        .collect();
    println!(
        "\nback-to-back, this broker ÷ other broker, per CPU-s: {:.3} [{:.3}–{:.3}] \
         (below 1: the snapshots slow the producer's own work: locks, cache lines)\n",
        median(same.clone()),
        same.iter().copied().fold(f64::INFINITY, f64::min),
        same.iter().copied().fold(0.0, f64::max),
    );
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args = Args::read((3, 7));
    let (quick, rounds) = (args.quick, args.rounds);
    let dir = std::env::var_os("EMBUS_BENCH_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-stats"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    let ctx = Ctx { quick, rounds, dir };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "embus stats: {} mode, {rounds} rounds, {cpus} CPUs, load {}\n",
        if quick { "QUICK" } else { "full" },
        load()
    );
    let sections: [(&str, Section); 2] = [("latency", latency), ("producer", producer)];
    for (name, run) in sections {
        if args.wants(name) {
            eprintln!("{name}:");
            run(&ctx);
        }
    }
    println!("(load average at the end: {})", load());
}

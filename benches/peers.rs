//! embus against the brokers an application would otherwise run next to it: Redis Streams,
//! NATS JetStream and RabbitMQ, measured side by side in one process.
//!
//! A plain `harness = false` binary, like `benches/durable.rs`: each test runs its sides in
//! interleaved rounds (the order rotates and reverses every round), prints the median of every
//! figure with its min–max, and for each peer the median, min and max of the per-round ratio
//! embus ÷ peer. Behind the `peer-bench` feature: it needs the servers, and it switches Redis to
//! `appendfsync always` while it runs.
//!
//! ```text
//! cargo bench --features peer-bench,nats,amqp --bench peers                  # full (~2 min)
//! EMBUS_BENCH_QUICK=1 cargo bench --features peer-bench,nats,amqp --bench peers  # 3 short rounds
//! cargo bench --features peer-bench,nats,amqp --bench peers -- e2e           # tests named so
//! EMBUS_BENCH_ROUNDS=9 ...                                                   # rounds (default 7)
//! EMBUS_BENCH_DIR=/some/disk ...                                             # embus's files
//! EMBUS_REDIS_URL / EMBUS_NATS_URL / EMBUS_AMQP_URL                          # other servers
//! ```
//!
//! Every message is 100 bytes. Servers run on this machine and are reached over loopback TCP;
//! embus is in the process. A server that does not answer a TCP connect is skipped with a
//! `SKIPPED:` line.
//!
//! | test | side | what one run does |
//! |---|---|---|
//! | produce | embus durable | one producer, `send_batch(1000)` to a one-partition topic, `Durability::Immediate` (each batch returns once fsynced) |
//! | produce | embus memory | the same on `Broker::memory()` (a reference: nothing is stored) |
//! | produce | Redis | `XADD` pipelined 1000 at a time (write 1000, read 1000 replies), AOF on, `appendfsync always` |
//! | produce | NATS | JetStream publish to a file-storage stream, at most 1000 unacknowledged, every `PubAck` awaited |
//! | produce | RabbitMQ | persistent messages to a durable classic queue, publisher confirms, at most 1000 unconfirmed |
//! | e2e | embus queue | one producer thread (`send_batch(1000)`, `Immediate`) and one consumer thread (`recv`, `ack` each) on a durable queue |
//! | e2e | embus group | the same on a durable one-partition topic, the consumer a group member |
//! | e2e | Redis | producer as in produce; consumer `XREADGROUP COUNT 1000`, then one `XACK` per message, pipelined |
//! | e2e | NATS | producer as in produce; a durable pull consumer (explicit ack, batches of 1000), `ack` each |
//! | e2e | RabbitMQ | producer as in produce; `basic_consume`, manual ack, prefetch 1000, `basic_ack` each |
//! | each | disk | 4 KiB appends to a file in the bench directory, each followed by `fdatasync`: fsyncs per second, or the p50 and p99 of one (a reference: how fast the disk is in this round) |
//! | latency | each | one message at a time: send (embus `send`, Redis `XADD`, NATS publish + `PubAck`, RabbitMQ publish + confirm) → the consumer has it; the consumer acks it, then reports; the producer waits for the report and 200 µs more before the next send |
//! | latency | embus 1pc | as embus durable, with `two_phase_commit(false)`: one fsync per commit, where the default takes two |
//!
//! Throughput runs are time-boxed (1 s, quick 0.25 s, a quarter for the warm-up run of each
//! side): the producer sends until the window has passed; produce counts sent (confirmed)
//! messages over that time; e2e counts messages over the time from the start until the consumer
//! has acked the last one. Each run gets a fresh file, stream, key or queue (unique names),
//! deleted after it. Connections are made before the clock starts.
//!
//! The virtual disks this runs on change their fsync latency by several times within minutes,
//! and every side here but embus memory and NATS waits for fsyncs, some more of them than
//! others: a Redis pipeline needs about ten (below), an embus batch two. So the ratios move
//! with the disk: the `disk` rows show how fast it was in each test.
//!
//! Durability is not the same on every side, and the report says so:
//! - embus `Immediate` fsyncs each batch before `send_batch` returns (a redb commit: two
//!   fsyncs); acks ride the next commit.
//! - Redis: AOF with `appendfsync always` fsyncs before it replies to what it has read. It
//!   reads a client's pipeline 16 KiB at a time, so a pipeline of 1000 `XADD`s (about 170 KB)
//!   costs it about ten fsyncs. The bench sets both with `CONFIG SET` and puts the old values
//!   back when it ends, a panic included, but not when it is killed (Ctrl-C): then check
//!   `CONFIG GET append*`.
//! - RabbitMQ fsyncs persistent messages before confirming them.
//! - NATS JetStream does not fsync by default (`sync_interval` 2 min): its figures are those of
//!   writes to the page cache.
//!
//! The peers pay for loopback TCP and for a server process on the same cores as the bench;
//! embus, in the process, pays for neither. That is the point of an embedded bus, and also why
//! these ratios say nothing about a deployment where the broker has a machine of its own.

#[path = "../tests/common/services.rs"]
#[allow(dead_code)]
mod services;

#[path = "common/mod.rs"]
mod common;
use common::flow::{Flow, POLL, e2e};
use common::{
    Args, BATCH, Unit, bench_dir, format_value, load, median, order, payload, print_row,
    print_rule, range, seq_of,
};

#[path = "peers/amqp.rs"]
mod amqp;
#[path = "peers/embus.rs"]
mod local;
#[path = "peers/nats.rs"]
mod nats;
#[path = "peers/redis.rs"]
mod redis;
#[path = "peers/resp.rs"]
mod resp;

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The latency test's pause after each report.
const PAUSE: Duration = Duration::from_micros(200);

/// A current-thread tokio runtime with I/O and timers (one per client thread).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------------
// The run's settings

/// The run's settings, handed to every side.
struct Ctx {
    rounds: usize,
    /// How long one throughput run sends.
    window: Duration,
    /// Messages per latency run.
    samples: usize,
    /// Where embus's files go.
    dir: PathBuf,
    files: AtomicUsize,
}

impl Ctx {
    /// The window of one run: a quarter for warm-up runs.
    fn window(&self, warm: bool) -> Duration {
        if warm { self.window / 4 } else { self.window }
    }

    /// Messages of one latency run.
    fn samples(&self, warm: bool) -> usize {
        if warm { 20 } else { self.samples }
    }

    /// A fresh file name in the bench directory.
    fn file(&self, label: &str) -> PathBuf {
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{label}-{n}.embus"))
    }
}

// ---------------------------------------------------------------------------------------------
// The drivers every side runs through (the e2e run is `common::flow`'s, shared with durable)

/// The consumer's side of a latency run.
struct Listener {
    ready: Barrier,
    reports: crossbeam_channel::Sender<(u64, Instant)>,
}

impl Listener {
    /// Says the consumer is subscribed: the first send follows.
    fn ready(&self) {
        self.ready.wait();
    }

    /// Reports message `seq`, received at `at` (and acked since).
    fn report(&self, seq: u64, at: Instant) {
        self.reports.send((seq, at)).expect("the producer waits");
    }
}

/// A latency run of `samples` messages (after 5 unreported warm ones): `listen` (on its own
/// thread) subscribes, calls [`Listener::ready`], then receives `count` messages, acking and
/// reporting each; `send` sends message `seq`. Returns the p50 and p99 of send start → receipt.
fn ping(
    samples: usize,
    mut send: impl FnMut(u64),
    listen: impl FnOnce(&Listener, usize) + Send,
) -> Vec<f64> {
    const WARM: usize = 5;
    let total = samples + WARM;
    let (reports, reported) = crossbeam_channel::bounded(1);
    let listener = Listener {
        ready: Barrier::new(2),
        reports,
    };
    let mut latencies = std::thread::scope(|s| {
        let consumer = s.spawn(|| listen(&listener, total));
        listener.ready.wait();
        let mut latencies = Vec::with_capacity(samples);
        for i in 0..total as u64 {
            let start = Instant::now();
            send(i);
            let (seq, at) = reported.recv().expect("the consumer reports");
            assert_eq!(seq, i, "messages out of order");
            if i >= WARM as u64 {
                latencies.push(at.saturating_duration_since(start));
            }
            std::thread::sleep(PAUSE);
        }
        consumer.join().expect("the consumer thread");
        latencies
    });
    latencies.sort();
    [0.5, 0.99]
        .iter()
        .map(|&p| common::percentile(&latencies, p).as_secs_f64())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests and sides

/// One of the three tests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Test {
    Produce,
    E2e,
    Latency,
}

impl Test {
    fn name(self) -> &'static str {
        match self {
            Test::Produce => "produce",
            Test::E2e => "e2e",
            Test::Latency => "latency",
        }
    }

    /// The figures one run reports, and their unit.
    fn figures(self) -> (&'static [&'static str], Unit) {
        match self {
            Test::Produce | Test::E2e => (&["msgs/s"], Unit::Rate),
            Test::Latency => (&["p50", "p99"], Unit::Time),
        }
    }
}

/// A broker to compare embus with.
trait Peer {
    /// As the report names it.
    fn name(&self) -> &'static str;
    /// Its durability setting, for the report.
    fn durability(&self) -> &'static str;
    /// Messages per second sent and confirmed in one produce run.
    fn produce(&self, ctx: &Ctx, warm: bool) -> f64;
    /// Messages per second of one end-to-end run.
    fn e2e(&self, ctx: &Ctx, warm: bool) -> f64;
    /// The p50 and p99 (seconds) of one latency run.
    fn latency(&self, ctx: &Ctx, warm: bool) -> Vec<f64>;
}

/// What a side is to the ratios.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// An embus side: a numerator, named so in the ratio cells.
    Embus(&'static str),
    /// Shown, in no ratio (embus memory).
    Reference,
    Peer,
}

type Run = Box<dyn Fn(&Ctx, bool) -> Vec<f64>>;

struct Side {
    system: String,
    role: Role,
    run: Run,
}

fn side(system: &str, role: Role, run: impl Fn(&Ctx, bool) -> Vec<f64> + 'static) -> Side {
    Side {
        system: system.to_owned(),
        role,
        run: Box::new(run),
    }
}

/// The disk's floor in this round: 4 KiB appends, each followed by `sync_data`, to a file in
/// the bench directory (the servers' data directories may be on another disk: it is a gauge of
/// how fast fsync is at the moment, which moves every figure here). Produce and e2e: fsyncs per
/// second over the window; latency: p50 and p99 of `samples` fsyncs.
fn disk(ctx: &Ctx, warm: bool, test: Test) -> Vec<f64> {
    use std::io::Write;
    let path = ctx.file("disk");
    let mut file = std::fs::File::create(&path).expect("create the disk-floor file");
    let block = [0x5Au8; 4096];
    let mut sync = || {
        let start = Instant::now();
        file.write_all(&block).expect("write");
        file.sync_data().expect("sync_data");
        start.elapsed()
    };
    let figures = if test == Test::Latency {
        let mut times: Vec<Duration> = (0..ctx.samples(warm)).map(|_| sync()).collect();
        times.sort();
        [0.5, 0.99]
            .iter()
            .map(|&p| common::percentile(&times, p).as_secs_f64())
            .collect()
    } else {
        let (start, mut n) = (Instant::now(), 0u64);
        while start.elapsed() < ctx.window(warm) {
            sync();
            n += 1;
        }
        vec![n as f64 / start.elapsed().as_secs_f64()]
    };
    let _ = std::fs::remove_file(&path);
    figures
}

/// The sides of `test`: embus's first, then each reachable peer's, then the disk's floor.
fn sides(test: Test, peers: &[Rc<dyn Peer>]) -> Vec<Side> {
    let mut sides = match test {
        Test::Produce => vec![
            side("embus durable", Role::Embus("durable"), |c, w| {
                vec![local::produce(c, w, local::Store::Durable)]
            }),
            side("embus memory", Role::Reference, |c, w| {
                vec![local::produce(c, w, local::Store::Memory)]
            }),
        ],
        Test::E2e => vec![
            side("embus durable queue", Role::Embus("queue"), |c, w| {
                vec![local::e2e_queue(c, w)]
            }),
            side("embus durable group", Role::Embus("group"), |c, w| {
                vec![local::e2e_group(c, w)]
            }),
        ],
        Test::Latency => vec![
            side("embus durable queue", Role::Embus("durable"), |c, w| {
                local::latency(c, w, local::Store::Durable)
            }),
            side(
                "embus durable queue, one-phase commits",
                Role::Embus("1pc"),
                |c, w| local::latency(c, w, local::Store::OnePhase),
            ),
            side("embus memory queue", Role::Reference, |c, w| {
                local::latency(c, w, local::Store::Memory)
            }),
        ],
    };
    for peer in peers {
        let system = format!("{} ({})", peer.name(), peer.durability());
        let peer = Rc::clone(peer);
        sides.push(side(&system, Role::Peer, move |c, w| match test {
            Test::Produce => vec![peer.produce(c, w)],
            Test::E2e => vec![peer.e2e(c, w)],
            Test::Latency => peer.latency(c, w),
        }));
    }
    let disk_side = match test {
        Test::Produce | Test::E2e => "disk: 4 KiB write + fdatasync (fsyncs/s)",
        Test::Latency => "disk: 4 KiB write + fdatasync",
    };
    sides.push(side(disk_side, Role::Reference, move |c, w| {
        disk(c, w, test)
    }));
    sides
}

/// Every side's runs of one test: `values[side][figure][round]`.
fn measure(ctx: &Ctx, test: Test, sides: &[Side]) -> Vec<Vec<Vec<f64>>> {
    let (names, unit) = test.figures();
    for s in sides {
        let _ = (s.run)(ctx, true);
    }
    let mut values = vec![vec![Vec::new(); names.len()]; sides.len()];
    for round in 0..ctx.rounds {
        let mut line = format!("  {} round {round}:", test.name());
        for i in order(round, sides.len()) {
            let figures = (sides[i].run)(ctx, false);
            for (f, (name, value)) in names.iter().zip(&figures).enumerate() {
                line.push_str(&format!(
                    " | {} {name} {}",
                    sides[i].system,
                    format_value(*value, unit)
                ));
                values[i][f].push(*value);
            }
        }
        eprintln!("{line}");
    }
    values
}

/// The ratio cell of a peer's row: each embus side ÷ the peer, per round.
fn ratios(sides: &[Side], values: &[Vec<Vec<f64>>], peer: usize, figure: usize) -> String {
    let embus: Vec<(usize, &str)> = sides
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s.role {
            Role::Embus(label) => Some((i, label)),
            _ => None,
        })
        .collect();
    let cells: Vec<String> = embus
        .iter()
        .map(|&(i, label)| {
            let per_round: Vec<f64> = values[i][figure]
                .iter()
                .zip(&values[peer][figure])
                .map(|(e, p)| e / p)
                .collect();
            let (min, max) = range(&per_round);
            let cell = format!("{:.2} [{min:.2}–{max:.2}]", median(per_round));
            if embus.len() > 1 {
                format!("{label} {cell}")
            } else {
                cell
            }
        })
        .collect();
    cells.join("; ")
}

fn main() {
    let args = Args::read((3, 7));
    let (dir, fs) = bench_dir("bench-peers");
    let ctx = Ctx {
        rounds: args.rounds,
        window: if args.quick {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        },
        samples: if args.quick { 100 } else { 400 },
        dir,
        files: AtomicUsize::new(0),
    };
    println!(
        "embus vs peers: {} mode, {} rounds, {} CPUs, embus files in {} ({fs}), load {}",
        if args.quick { "QUICK" } else { "full" },
        ctx.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        ctx.dir.display(),
        load()
    );

    // Redis's AOF settings come back when `aof` drops: at the end, or on a panic.
    let mut peers: Vec<Rc<dyn Peer>> = Vec::new();
    let mut aof = None;
    match redis::Redis::connect() {
        Ok((peer, guard)) => {
            aof = Some(guard);
            peers.push(Rc::new(peer));
        }
        Err(why) => println!("SKIPPED: Redis Streams: {why}"),
    }
    match services::nats() {
        Some(url) => peers.push(Rc::new(nats::Nats::new(url))),
        None => println!("SKIPPED: NATS JetStream is not reachable: no rows for it"),
    }
    match services::amqp() {
        Some(url) => peers.push(Rc::new(amqp::Rabbit::new(url))),
        None => println!("SKIPPED: RabbitMQ is not reachable: no rows for it"),
    }
    println!(
        "throughput runs send for {:?}, latency runs {} messages; medians of rounds [min–max]; \
         ratios embus ÷ peer are per round (latency: below 1 is embus faster)\n",
        ctx.window, ctx.samples
    );

    let started = Instant::now();
    let mut done = Vec::new();
    for test in [Test::Produce, Test::E2e, Test::Latency] {
        if !args.wants(test.name()) {
            continue;
        }
        let sides = sides(test, &peers);
        let values = measure(&ctx, test, &sides);
        done.push((test, sides, values));
    }
    drop(aof);

    println!();
    const WIDTHS: [i32; 6] = [7, 46, 6, -11, -23, 46];
    print_row(
        &WIDTHS,
        &[
            "test",
            "system",
            "figure",
            "median",
            "[min – max]",
            "embus ÷ peer, median [min–max]",
        ],
    );
    print_rule(&WIDTHS);
    for (test, sides, values) in &done {
        let (names, unit) = test.figures();
        for (i, side) in sides.iter().enumerate() {
            for (f, name) in names.iter().enumerate() {
                let v = &values[i][f];
                let (min, max) = range(v);
                let ratio = match side.role {
                    Role::Peer => ratios(sides, values, i, f),
                    Role::Embus(_) | Role::Reference => String::new(),
                };
                print_row(
                    &WIDTHS,
                    &[
                        test.name(),
                        &side.system,
                        name,
                        &format_value(median(v.clone()), unit),
                        &format!(
                            "[{} – {}]",
                            format_value(min, unit),
                            format_value(max, unit)
                        ),
                        &ratio,
                    ],
                );
            }
        }
    }
    println!(
        "(load average at the end: {}; wall time {:.0} s)",
        load(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&ctx.dir);
}

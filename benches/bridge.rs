//! The message bridges against their raw clients, measured side by side in one process.
//!
//! A plain `harness = false` binary, like `benches/throughput.rs`: interleaved rounds (raw
//! first in even rounds, embus first in odd ones), the median rate of each side and the median,
//! min and max of the per-round ratio embus ÷ raw. Absolute numbers drift on a shared VM (and
//! the server shares it); only the ratio is gated.
//!
//! ```text
//! cargo bench --bench bridge                          # full run (about a minute)
//! EMBUS_BENCH_QUICK=1 cargo bench --bench bridge      # smoke run: N ÷ 10, 3 rounds
//! cargo bench --bench bridge -- outbound              # sections whose name contains it
//! EMBUS_BENCH_ROUNDS=9 cargo bench --bench bridge     # rounds per side (default 5, quick 3)
//! EMBUS_BENCH_ONLY=embus cargo bench --bench bridge   # one side only (raw|embus), no ratios,
//!                                                     # e.g. under `perf`
//! EMBUS_BENCH_N=100000 cargo bench --bench bridge     # messages per outbound run
//! ```
//!
//! Each far side ([`Far`]) is one server and its raw client; the same bodies ([`outbound`],
//! [`latency`]) run against each: NATS JetStream ([`jetstream::Nats`], async-nats, in
//! `bridge/nats.rs`) and RabbitMQ ([`amqp::Amqp`], lapin, in `bridge/amqp.rs`). Until embus's
//! AMQP bridge is in this tree, [`amqp::Amqp`]'s [`bridge`](Far::bridge) returns `None` and its
//! row shows the raw client alone. A far side whose server is not reachable is skipped with a
//! `SKIPPED:` line (a short TCP connect, as the tests probe).
//!
//! | section | side | what one run does |
//! |---|---|---|
//! | outbound | raw | the raw client (async-nats) connects, then publishes `N` small JSON events (about 50 bytes, encoded in the loop) with `Nats-Msg-Id`, at most `window` unconfirmed, and awaits every `PubAck` (a `FuturesUnordered` on a current-thread tokio runtime) |
//! | outbound | embus memory | `N` events already in a memory topic; `nats::Outbound` with the same window starts from a group member; timed from `start` (which connects) until `stats().forwarded == N`, polled every 200 µs |
//! | outbound | embus durable | the same from a durable broker (redb file under `target/bench-bridge`) |
//! | latency | raw | one event every 1 ms, each published and its `PubAck` awaited; latency is from the publish call to a JetStream pull consumer on the stream receiving it |
//! | latency | embus memory | one event every 1 ms, `send` to a memory topic whose group member an outbound bridge relays; latency is from the `send` call to the same pull consumer receiving it |
//! | outbound, latency | AMQP raw | as NATS, with lapin: a direct exchange and a durable queue bound to it, fresh per run; persistent JSON messages with `message_id`, `mandatory`, publisher confirms (`confirm_select`, at most `window` `PublisherConfirm`s in flight, each checked to be an ack and not a return); the latency listener is a no-ack `basic_consume` on the queue |
//!
//! Outbound: `N` = 20,000 (quick 2,000), window 256; each run gets a fresh stream (deduplicating
//! by `Nats-Msg-Id`, as the bridge expects), deleted afterwards, and checks that it holds `N`
//! messages. Latency: 2,000 events (quick 500) at 1 per ms, so that it measures the path, not a
//! queue; p50 and p99, one run per side.

#[path = "../tests/common/nats_admin.rs"]
#[allow(dead_code)]
mod nats_admin;
#[path = "../tests/common/services.rs"]
#[allow(dead_code)]
mod services;

#[path = "bridge/amqp.rs"]
mod amqp;
#[path = "bridge/nats.rs"]
mod jetstream;

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use embus::bridge::{Bridge, DeadLetter};
use embus::{Broker, Consumer, Queue, Retention, TopicOptions};
use serde::{Deserialize, Serialize};

#[path = "common/mod.rs"]
mod common;
use common::{Args, median};

/// How long a run may take before the bench gives up on it (a stuck bridge, a lost message).
const LIMIT: Duration = Duration::from_secs(120);

/// The payload: a small JSON object, as a service would publish.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Event {
    n: u64,
    kind: String,
    amount: u64,
}

fn event(n: u64) -> Event {
    Event {
        n,
        kind: "order.created".to_string(),
        amount: n * 7 % 1000,
    }
}

// ---------------------------------------------------------------------------------------------
// The far sides

/// A fresh place on the server to publish to: a stream (NATS), or an exchange with a bound
/// queue (AMQP). `subject` is the subject (NATS) or routing key (AMQP).
struct Target {
    name: String,
    subject: String,
}

/// A raw publisher kept open across the paced sends of the latency section.
trait RawSender {
    /// Publishes one event and waits for its confirm.
    fn send(&mut self, event: &Event);
}

/// One server with its raw client, and the embus bridge to it.
trait Far {
    /// The server, as the report names it.
    fn name(&self) -> &'static str;
    /// A fresh target, unique to this run.
    fn create(&self) -> Target;
    /// Deletes what [`create`](Self::create) made.
    fn delete(&self, target: &Target);
    /// How many messages the target holds.
    fn stored(&self, target: &Target) -> u64;
    /// The raw client connects and publishes `events` with confirms, at most `window`
    /// unconfirmed; returns the time from before the connect to the last confirm.
    fn raw_publish(&self, target: &Target, events: &[Event], window: usize) -> Duration;
    /// Starts the embus outbound bridge from `source` to `target`; `None` while embus has no
    /// bridge to this server (the raw side is then measured alone).
    fn bridge(
        &self,
        target: &Target,
        source: Consumer<Event>,
        dead_letters: &Queue<DeadLetter>,
        window: usize,
    ) -> Option<Bridge>;
    /// A connected raw publisher to `target`.
    fn raw_sender(&self, target: &Target) -> Box<dyn RawSender>;
    /// A receiver on `target`, ready when this returns, that timestamps the first `count`
    /// messages to arrive and returns `(event n, arrival)` for each.
    fn listen(&self, target: &Target, count: usize) -> JoinHandle<Vec<(u64, Instant)>>;
}

/// A current-thread tokio runtime with I/O and timers.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------------
// Outbound throughput

/// Where the embus side's messages wait.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Local {
    Memory,
    Durable,
}

/// A broker of the given kind; durable files go under `dir`, one per run.
fn broker(local: Local, dir: &std::path::Path) -> Broker {
    match local {
        Local::Memory => Broker::memory(),
        Local::Durable => {
            let path = dir.join(format!("{}.embus", services::unique("run")));
            Broker::open(path).expect("open the durable broker")
        }
    }
}

/// One raw run: a fresh target, `n` events published, checked, deleted.
fn raw_outbound(far: &dyn Far, n: u64, window: usize) -> Run {
    let events: Vec<Event> = (0..n).map(event).collect();
    let target = far.create();
    let cpu = cpu_ns();
    let elapsed = far.raw_publish(&target, &events, window);
    let cpu = cpu_ns().saturating_sub(cpu);
    assert_eq!(far.stored(&target), n, "raw: every event stored once");
    far.delete(&target);
    Run::new(n, elapsed, cpu)
}

/// One embus run: `n` events stored locally (untimed), then a bridge relays them to a fresh
/// target; timed from `start` to `forwarded == n`.
fn embus_outbound(
    far: &dyn Far,
    n: u64,
    window: usize,
    local: Local,
    dir: &std::path::Path,
) -> Option<Run> {
    let bus = broker(local, dir);
    // Unlimited retention: the group holds every event back until the bridge acks it.
    let options = TopicOptions::default().retention(Retention::unlimited());
    let topic = bus.topic_with::<Event>("events", options).expect("topic");
    let parked = bus.queue::<DeadLetter>("parked").expect("queue");
    let member = topic.join_group("to-far").expect("group");
    let producer = topic.producer();
    let mut sent = 0;
    while sent < n {
        let batch: Vec<Event> = (sent..n.min(sent + 1000)).map(event).collect();
        sent += batch.len() as u64;
        if producer.send_batch(batch).is_err() {
            panic!("local send failed");
        }
    }
    let target = far.create();
    let cpu = cpu_ns();
    let start = Instant::now();
    let Some(bridge) = far.bridge(&target, member, &parked, window) else {
        far.delete(&target);
        return None;
    };
    while bridge.stats().forwarded < n {
        assert!(
            start.elapsed() < LIMIT,
            "the bridge did not forward {n} in {LIMIT:?}: {:?}",
            bridge.stats()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed();
    let cpu = cpu_ns().saturating_sub(cpu);
    let stats = bridge.stats();
    bridge.stop().expect("the bridge stops cleanly");
    assert_eq!(
        (stats.dead_lettered, stats.errors),
        (0, 0),
        "embus: {stats:?}"
    );
    assert_eq!(far.stored(&target), n, "embus: every event stored once");
    far.delete(&target);
    drop((topic, parked, producer));
    bus.close().expect("close the broker");
    Some(Run::new(n, elapsed, cpu))
}

/// CPU time used so far by this process's live threads, in nanoseconds (Linux
/// `/proc/self/task/*/schedstat`; 0 elsewhere). Read around a run, it charges the run with
/// what the client side spent: the raw client's thread, or the bridge's thread, the bench's
/// polling and, for a durable broker, its writer thread. The server's CPU is not in it.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// One outbound run: its rate, and the client side's CPU per message.
#[derive(Clone, Copy)]
struct Run {
    rate: f64,
    cpu_us: f64,
}

impl Run {
    fn new(n: u64, elapsed: Duration, cpu_ns: u64) -> Self {
        Self {
            rate: n as f64 / elapsed.as_secs_f64(),
            cpu_us: cpu_ns as f64 / 1e3 / n as f64,
        }
    }
}

/// A row of the outbound table; `embus` is `None` when embus has no bridge to the server yet.
struct Row {
    name: String,
    raw: Summary,
    embus: Option<(Summary, Ratio)>,
    target: Option<f64>,
}

/// The medians of one side's runs.
struct Summary {
    rate: f64,
    cpu_us: f64,
}

impl Summary {
    fn of(runs: &[Run]) -> Self {
        Self {
            rate: median(runs.iter().map(|r| r.rate).collect()),
            cpu_us: median(runs.iter().map(|r| r.cpu_us).collect()),
        }
    }
}

/// The median, min and max of the per-round ratios embus ÷ raw.
struct Ratio {
    median: f64,
    min: f64,
    max: f64,
}

/// Interleaved rounds of the raw client and the bridge from `local`.
fn outbound(far: &dyn Far, ctx: &Ctx, local: Local) -> Row {
    let label = match local {
        Local::Memory => "memory",
        Local::Durable => "durable",
    };
    let raw = || raw_outbound(far, ctx.n, ctx.window);
    let embus = || embus_outbound(far, ctx.n, ctx.window, local, &ctx.dir);
    // Warm-up: connections, the server's stream code, page cache.
    let _ = raw();
    let bridged = embus().is_some();
    let (mut raws, mut embuses, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ctx.rounds {
        let (r, e) = match (bridged, round % 2 == 0) {
            (false, _) => (raw(), None),
            (true, true) => {
                let r = raw();
                (r, embus())
            }
            (true, false) => {
                let e = embus();
                (raw(), e)
            }
        };
        let mut line = format!(
            "  {} outbound {label} round {round}: raw {:>7.0}/s {:>5.2} µs CPU/msg",
            far.name(),
            r.rate,
            r.cpu_us
        );
        if let Some(e) = e {
            line += &format!(
                "  embus {:>7.0}/s {:>5.2} µs CPU/msg  ratio {:.3}",
                e.rate,
                e.cpu_us,
                e.rate / r.rate
            );
            ratios.push(e.rate / r.rate);
            embuses.push(e);
        }
        eprintln!("{line}");
        raws.push(r);
    }
    let embus = bridged.then(|| {
        let ratio = Ratio {
            median: median(ratios.clone()),
            min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
            max: ratios.iter().copied().fold(0.0, f64::max),
        };
        (Summary::of(&embuses), ratio)
    });
    let name = if bridged {
        format!("{} outbound, {label} topic", far.name())
    } else {
        format!("{} outbound (raw client only)", far.name())
    };
    Row {
        name,
        raw: Summary::of(&raws),
        embus,
        target: (local == Local::Memory).then_some(0.8),
    }
}

/// One side alone, for profiling (`EMBUS_BENCH_ONLY=raw|embus`).
fn profile(far: &dyn Far, ctx: &Ctx, embus: bool) {
    for round in 0..ctx.rounds {
        let run = if embus {
            embus_outbound(far, ctx.n, ctx.window, Local::Memory, &ctx.dir)
        } else {
            Some(raw_outbound(far, ctx.n, ctx.window))
        };
        let side = if embus { "embus" } else { "raw" };
        match run {
            Some(run) => println!(
                "{} outbound {side} round {round}: {:.0}/s, {:.2} µs CPU/msg",
                far.name(),
                run.rate,
                run.cpu_us
            ),
            None => println!("{}: embus has no bridge to it yet", far.name()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// End-to-end latency

/// p50 and p99 of a latency run, in microseconds.
struct Percentiles {
    p50: f64,
    p99: f64,
}

/// Sends `count` events, one every `PACE`, through `send`, while `far` listens on a fresh
/// target; latency is from before each `send` call to the listener's receipt.
fn paced(
    far: &dyn Far,
    target: &Target,
    count: usize,
    mut send: impl FnMut(&Event),
) -> Percentiles {
    const PACE: Duration = Duration::from_millis(1);
    let listener = far.listen(target, count);
    let mut sent_at = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        let due = start + PACE * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sent_at.push(Instant::now());
        send(&event(i as u64));
    }
    let received = listener.join().expect("the listener");
    let mut micros: Vec<f64> = received
        .iter()
        .map(|(n, at)| {
            at.saturating_duration_since(sent_at[*n as usize])
                .as_secs_f64()
                * 1e6
        })
        .collect();
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// The raw client's end-to-end latency, then the bridge's (memory topic).
fn latency(far: &dyn Far, ctx: &Ctx) -> (Percentiles, Option<Percentiles>) {
    let target = far.create();
    let mut sender = far.raw_sender(&target);
    let raw = paced(far, &target, ctx.latency_n, |e| sender.send(e));
    drop(sender);
    far.delete(&target);

    let target = far.create();
    let bus = Broker::memory();
    let topic = bus.topic::<Event>("events").expect("topic");
    let parked = bus.queue::<DeadLetter>("parked").expect("queue");
    let Some(bridge) = far.bridge(
        &target,
        topic.join_group("to-far").expect("group"),
        &parked,
        ctx.window,
    ) else {
        far.delete(&target);
        return (raw, None);
    };
    let producer = topic.producer();
    let embus = paced(far, &target, ctx.latency_n, |e| {
        if producer.send(e.clone()).is_err() {
            panic!("local send failed");
        }
    });
    bridge.stop().expect("the bridge stops cleanly");
    far.delete(&target);
    (raw, Some(embus))
}

// ---------------------------------------------------------------------------------------------

/// The run's settings.
struct Ctx {
    n: u64,
    window: usize,
    rounds: usize,
    latency_n: usize,
    dir: PathBuf,
}

fn main() {
    let args = Args::read((3, 5));
    let (quick, rounds) = (args.quick, args.rounds);
    let wanted = |section: &str| args.wants(section);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-bridge");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    let ctx = Ctx {
        n: std::env::var("EMBUS_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 2_000 } else { 20_000 }),
        window: 256,
        rounds,
        latency_n: if quick { 500 } else { 2_000 },
        dir,
    };

    let mut fars: Vec<Box<dyn Far>> = Vec::new();
    if let Some(url) = services::nats() {
        fars.push(Box::new(jetstream::Nats::new(url)));
    }
    if let Some(url) = services::amqp() {
        fars.push(Box::new(amqp::Amqp::new(url)));
    }
    if fars.is_empty() {
        println!("SKIPPED: no bridge server is reachable; nothing to measure");
        return;
    }
    println!(
        "embus bridges vs raw clients: {} mode, N = {}, window {}, {} rounds per side",
        if quick { "QUICK" } else { "full" },
        ctx.n,
        ctx.window,
        ctx.rounds
    );

    if let Ok(only) = std::env::var("EMBUS_BENCH_ONLY") {
        for far in &fars {
            profile(far.as_ref(), &ctx, only == "embus");
        }
        return;
    }

    let mut rows = Vec::new();
    let mut latencies = Vec::new();
    for far in &fars {
        if wanted("outbound") {
            let row = outbound(far.as_ref(), &ctx, Local::Memory);
            let bridged = row.embus.is_some();
            rows.push(row);
            // Without a bridge the raw side would only run again.
            if bridged {
                rows.push(outbound(far.as_ref(), &ctx, Local::Durable));
            }
        }
        if wanted("latency") {
            latencies.push((far.name(), latency(far.as_ref(), &ctx)));
        }
    }

    if !rows.is_empty() {
        println!(
            "\n| outbound (msgs/s, confirmed) | raw | embus | ratio embus/raw [min–max] | target | verdict | client CPU µs/msg raw | embus |"
        );
        println!("|---|---:|---:|---:|---:|---|---:|---:|");
    }
    for row in &rows {
        let (embus, ratio, target, verdict, embus_cpu) = match (&row.embus, row.target) {
            (None, _) => (
                "n/a".into(),
                "no bridge yet".into(),
                "-".into(),
                "-",
                "-".into(),
            ),
            (Some((e, r)), target) => {
                let verdict = match target {
                    Some(t) if r.median >= t => "PASS",
                    Some(t) if r.max >= t => "MISS (best round passes: noisy)",
                    Some(_) => "MISS",
                    None => "(ref)",
                };
                (
                    format!("{:.0}", e.rate),
                    format!("{:.3} [{:.3}–{:.3}]", r.median, r.min, r.max),
                    target.map_or_else(|| "-".to_string(), |t| format!("≥{t:.2}")),
                    verdict,
                    format!("{:.2}", e.cpu_us),
                )
            }
        };
        println!(
            "| {} | {:.0} | {embus} | {ratio} | {target} | {verdict} | {:.2} | {embus_cpu} |",
            row.name, row.raw.rate, row.raw.cpu_us
        );
    }
    if !latencies.is_empty() {
        println!(
            "\n| end-to-end latency, {} msgs at 1/ms (µs) | raw p50 | raw p99 | embus p50 | embus p99 |",
            ctx.latency_n
        );
        println!("|---|---:|---:|---:|---:|");
    }
    for (name, (raw, embus)) in &latencies {
        let (p50, p99) = embus.as_ref().map_or_else(
            || ("n/a".to_string(), "n/a".to_string()),
            |e| (format!("{:.0}", e.p50), format!("{:.0}", e.p99)),
        );
        println!(
            "| {name}: publish → far-side consumer | {:.0} | {:.0} | {p50} | {p99} |",
            raw.p50, raw.p99
        );
    }
    let _ = std::fs::remove_dir_all(&ctx.dir);
}

//! Open time: the `open` section of `benches/durable.rs` (see its table): a small and a large
//! store, opened after a clean close and after a kill -9 of a child process.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use embus::{Broker, Durability, Retention, Start, TopicOptions};

use super::Target::AtMost;
use super::common::{BATCH, payload, seq_of};
use super::{Ctx, INTERVAL, Section, Side, durable_broker, ratio, side, time};

/// The topic of the open section.
const OPEN_TOPIC: &str = "orders";
/// Messages the killed child sends before it says so.
const CHILD_SENDS: u64 = 8;
/// Opens per run of an open side (the run reports their median).
const OPEN_SAMPLES: usize = 3;

/// A built store of the open section.
struct Store {
    path: PathBuf,
    /// The end offset it should reopen with.
    end: std::sync::Mutex<u64>,
}

/// Builds a store of `n` retained messages with `send_batch`, and closes it cleanly.
fn build_store(ctx: &Ctx, n: u64) -> Store {
    let started = Instant::now();
    let (path, bus) = durable_broker(
        ctx,
        &format!("open-{n}"),
        Durability::Interval(INTERVAL),
        true,
    );
    let options = TopicOptions::default()
        .partitions(1)
        .retention(Retention::messages(2_000_000));
    let topic = bus
        .topic_with::<Vec<u8>>(OPEN_TOPIC, options)
        .expect("declare the topic");
    let producer = topic.producer();
    let mut sent = 0u64;
    while sent < n {
        let k = (n - sent).min(BATCH as u64);
        let batch: Vec<Vec<u8>> = (sent..sent + k).map(payload).collect();
        if producer.send_batch(batch).is_err() {
            panic!("send_batch failed");
        }
        sent += k;
    }
    drop(producer);
    drop(topic);
    bus.close().expect("close");
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    eprintln!(
        "  built {} ({n} messages, {:.1} MiB) in {:.1} s",
        path.display(),
        size as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    Store {
        path,
        end: std::sync::Mutex::new(n),
    }
}

/// Times open + `topic` + the first `recv` from `Earliest`, checks what it found, and closes
/// (untimed).
fn timed_open(store: &Store) -> Duration {
    let start = Instant::now();
    let bus = Broker::open(&store.path).expect("reopen the store");
    let topic = bus.topic::<Vec<u8>>(OPEN_TOPIC).expect("the stored topic");
    let mut sub = topic.subscribe(Start::Earliest).expect("subscribe");
    let first = sub.recv().expect("the first message");
    let elapsed = start.elapsed();
    assert_eq!(
        (first.offset(), seq_of(first.payload())),
        (0, 0),
        "the first message"
    );
    let end = topic.offsets(0).expect("partition 0").end;
    let expected = *store.end.lock().expect("end");
    assert_eq!(
        end,
        expected,
        "{}: end offset after reopen (acknowledged sends lost?)",
        store.path.display()
    );
    drop((first, sub, topic));
    bus.close().expect("close");
    elapsed
}

/// Lets a child process open `store` (with one-phase commits if `two_phase` is false), send a
/// few messages and get SIGKILLed; returns once it is dead.
fn kill_child(store: &Store, two_phase: bool) {
    let exe = std::env::current_exe().expect("the bench binary");
    let mut child = Command::new(exe)
        .env("EMBUS_BENCH_CHILD", &store.path)
        .env("EMBUS_BENCH_CHILD_TWO_PHASE", two_phase.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("child stdout"))
        .read_line(&mut line)
        .expect("read the child's line");
    let end: u64 = line
        .strip_prefix("sent ")
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("the child said {line:?}"));
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert!(!status.success(), "the child was killed: {status}");
    *store.end.lock().expect("end") = end;
}

/// The child: opens the store, sends `CHILD_SENDS` messages (`Immediate`), says `sent <end>`
/// and waits to be killed.
pub(super) fn child(path: &Path) -> ! {
    let two_phase = std::env::var("EMBUS_BENCH_CHILD_TWO_PHASE").map_or(true, |v| v != "false");
    let bus = Broker::builder()
        .path(path)
        .two_phase_commit(two_phase)
        .open()
        .expect("child: open");
    let topic = bus.topic::<Vec<u8>>(OPEN_TOPIC).expect("child: topic");
    let producer = topic.producer();
    let mut end = 0;
    for _ in 0..CHILD_SENDS {
        let next = topic.offsets(0).expect("partition 0").end;
        match producer.send(payload(next)) {
            Ok(receipt) => end = receipt.offset + 1,
            Err(_) => panic!("child: send failed"),
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "sent {end}").expect("child: stdout");
    out.flush().expect("child: flush");
    drop(out);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Builds the open section's stores and returns its sides.
fn open_sides(ctx: &Ctx) -> Vec<Side> {
    let (small, large) = ctx.open_sizes;
    let small = Arc::new(build_store(ctx, small));
    let large = Arc::new(build_store(ctx, large));
    // One open is a few milliseconds, mostly fsyncs: each run reports the median of
    // `OPEN_SAMPLES` opens.
    let clean = |key: &'static str, store: &Arc<Store>| {
        let store = Arc::clone(store);
        move |_: &Ctx, _: bool| {
            let opens = (0..OPEN_SAMPLES).map(|_| timed_open(&store));
            vec![time(key, median_duration(opens.collect()))]
        }
    };
    let killed = |key: &'static str, store: &Arc<Store>, two_phase: bool| {
        let store = Arc::clone(store);
        move |_: &Ctx, _: bool| {
            let opens = (0..OPEN_SAMPLES).map(|_| {
                kill_child(&store, two_phase);
                timed_open(&store)
            });
            vec![time(key, median_duration(opens.collect()))]
        }
    };
    vec![
        side(
            "open small clean",
            "open + topic + first recv, clean close",
            clean("open small clean", &small),
        ),
        side(
            "open large clean",
            "open + topic + first recv, clean close",
            clean("open large clean", &large),
        ),
        side(
            "open small kill",
            "open + topic + first recv, after kill -9",
            killed("open small kill", &small, true),
        ),
        side(
            "open large kill",
            "open + topic + first recv, after kill -9",
            killed("open large kill", &large, true),
        ),
        side(
            "open large kill 1pc",
            "open + topic + first recv, after kill -9 of one-phase commits",
            killed("open large kill 1pc", &large, false),
        ),
    ]
}

fn median_duration(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The section: its sides are built with its stores (`setup`).
pub(super) fn section() -> Section {
    Section {
        name: "open",
        sides: Vec::new(),
        ratios: vec![
            ratio(
                "open large / small, clean",
                "open large clean",
                "open small clean",
                Some(AtMost(2.0)),
            ),
            ratio(
                "open large / small, kill -9",
                "open large kill",
                "open small kill",
                Some(AtMost(2.0)),
            ),
            ratio(
                "open large, kill -9: 1pc / 2pc",
                "open large kill 1pc",
                "open large kill",
                None,
            ),
        ],
        setup: Some(Box::new(open_sides)),
    }
}

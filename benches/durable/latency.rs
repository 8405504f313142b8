//! D7 and L1, a live consumer's latency and a single send's: the `latency` section of
//! `benches/durable.rs` (see its table).

use std::time::{Duration, Instant};

use embus::{Broker, Durability, Retention, Start, TopicOptions};

use super::Target::AtMost;
use super::common::{payload, percentile, seq_of};
use super::floors::RawRedb;
use super::{Ctx, Figure, FsyncFile, Section, Unit, durable_broker, ratio, remove, side, time};

/// The producer's pause after each report (and the floor's after each fsync).
const PAUSE: Duration = Duration::from_micros(200);

/// One producer sends `samples` messages, paced by the subscriber's reports; returns the
/// end-to-end latencies (send start → `recv` returns) and the `send` calls' durations.
fn ping(bus: &Broker, samples: usize) -> (Vec<Duration>, Vec<Duration>) {
    let options = TopicOptions::default()
        .partitions(1)
        .retention(Retention::messages(4096));
    let topic = bus
        .topic_with::<Vec<u8>>("latency", options)
        .expect("declare the topic");
    let producer = topic.producer();
    let mut sub = topic.subscribe(Start::Latest).expect("subscribe");
    const WARM: usize = 5;
    let total = samples + WARM;
    let (report, reports) = crossbeam_channel::bounded::<()>(1);
    let (starts, mut sends, received) = std::thread::scope(|s| {
        let consumer = s.spawn(move || {
            let mut received = Vec::with_capacity(total);
            for i in 0..total {
                let m = sub.recv().expect("recv");
                let at = Instant::now();
                assert_eq!(seq_of(m.payload()), i as u64, "messages out of order");
                received.push(at);
                report.send(()).expect("producer alive");
            }
            received
        });
        let mut starts = Vec::with_capacity(total);
        let mut sends = Vec::with_capacity(total);
        for i in 0..total {
            let msg = payload(i as u64);
            let start = Instant::now();
            if producer.send(msg).is_err() {
                panic!("send failed");
            }
            sends.push(start.elapsed());
            starts.push(start);
            reports.recv().expect("consumer alive");
            std::thread::sleep(PAUSE);
        }
        (starts, sends, consumer.join().expect("consumer thread"))
    });
    let e2e = received
        .iter()
        .zip(&starts)
        .skip(WARM)
        .map(|(r, s)| r.saturating_duration_since(*s))
        .collect();
    (e2e, sends.split_off(WARM))
}

/// D7 (one-phase commits if `two_phase` is false: D7 1pc, which reports the send only).
fn latency_durable(ctx: &Ctx, warm: bool, two_phase: bool) -> Vec<Figure> {
    let (path, bus) = durable_broker(ctx, "d7", Durability::Immediate, two_phase);
    let samples = if warm { 20 } else { ctx.samples };
    let (mut e2e, mut sends) = ping(&bus, samples);
    bus.close().expect("close");
    remove(&path);
    e2e.sort();
    sends.sort();
    let (e2e50, send50) = (percentile(&e2e, 0.5), percentile(&sends, 0.5));
    if !two_phase {
        return vec![
            time("D7 1pc send p50", send50),
            time("D7 1pc send p99", percentile(&sends, 0.99)),
        ];
    }
    let diff = e2e50.as_secs_f64() - send50.as_secs_f64();
    vec![
        time("D7 e2e p50", e2e50),
        time("D7 e2e p99", percentile(&e2e, 0.99)),
        time("D7 send p50", send50),
        Figure {
            key: "D7 e2e−send p50",
            value: diff,
            unit: Unit::Time,
        },
    ]
}

/// L1's floor: one 4 KiB write + `sync_data` at a time (as [`FsyncFile`]), paced as D7 paces
/// its sends.
fn fsync_latency(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let mut file = FsyncFile::create(ctx, "f0-latency");
    let p50 = paced_p50(ctx, warm, || file.sync_block());
    file.remove();
    vec![time("F0 fsync p50", p50)]
}

/// The p50 of `op`'s duration over a run's samples, with D7's pause after each.
fn paced_p50(ctx: &Ctx, warm: bool, mut op: impl FnMut()) -> Duration {
    let samples = if warm { 20 } else { ctx.samples };
    let mut took: Vec<Duration> = (0..samples)
        .map(|_| {
            let start = Instant::now();
            op();
            let took = start.elapsed();
            std::thread::sleep(PAUSE);
            took
        })
        .collect();
    took.sort();
    percentile(&took, 0.5)
}

/// The redb floor of L1: one row per raw redb commit, one commit at a time, paced as D7 (one
/// phase, or two with quick repair as embus's default).
fn redb_latency(ctx: &Ctx, warm: bool, quick_repair: bool) -> Vec<Figure> {
    let mut raw = RawRedb::create(ctx, "f1-latency", quick_repair);
    let p50 = paced_p50(ctx, warm, || raw.commit(1));
    raw.remove();
    let key = if quick_repair {
        "F1 qr commit p50"
    } else {
        "F1 commit p50"
    };
    vec![time(key, p50)]
}

/// D7 memory: as D7 in `Broker::memory()`.
fn latency_memory(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let bus = Broker::memory();
    let samples = if warm { 20 } else { ctx.samples };
    let (mut e2e, _) = ping(&bus, samples);
    bus.close().expect("close");
    e2e.sort();
    vec![
        time("D7 mem e2e p50", percentile(&e2e, 0.5)),
        time("D7 mem e2e p99", percentile(&e2e, 0.99)),
    ]
}

/// The section: D7 beside its floor, and the same with one-phase commits.
pub(super) fn section() -> Section {
    Section {
        name: "latency",
        sides: vec![
            side("D7", "durable (Immediate): send → recv", |c, w| {
                latency_durable(c, w, true)
            }),
            side(
                "F0 latency",
                "one 4 KiB overwrite + sync_data",
                fsync_latency,
            ),
            side(
                "F1 qr latency",
                "raw redb: 1 row/txn, quick repair",
                |c, w| redb_latency(c, w, true),
            ),
            side("D7 1pc", "as D7, one-phase commits: send", |c, w| {
                latency_durable(c, w, false)
            }),
            side("F1 latency", "raw redb: 1 row/txn, one phase", |c, w| {
                redb_latency(c, w, false)
            }),
            side("D7 memory", "Broker::memory(): send → recv", latency_memory),
        ],
        ratios: vec![
            ratio(
                "D7 (e2e−send p50) / mem e2e p50",
                "D7 e2e−send p50",
                "D7 mem e2e p50",
                Some(AtMost(2.0)),
            ),
            ratio("D7 e2e p50 / send p50", "D7 e2e p50", "D7 send p50", None),
            ratio(
                "L1: D7 send p50 / fsync p50",
                "D7 send p50",
                "F0 fsync p50",
                Some(AtMost(2.5)),
            ),
            ratio(
                "L1 1pc: D7 1pc send p50 / fsync p50",
                "D7 1pc send p50",
                "F0 fsync p50",
                Some(AtMost(2.5)),
            ),
            ratio(
                "raw redb qr commit / fsync p50",
                "F1 qr commit p50",
                "F0 fsync p50",
                None,
            ),
            ratio(
                "raw redb 1pc commit / fsync p50",
                "F1 commit p50",
                "F0 fsync p50",
                None,
            ),
            ratio(
                "D7 send / raw redb qr commit",
                "D7 send p50",
                "F1 qr commit p50",
                None,
            ),
            ratio(
                "D7 1pc send / raw redb 1pc commit",
                "D7 1pc send p50",
                "F1 commit p50",
                None,
            ),
            ratio(
                "D7 e2e / raw redb qr commit",
                "D7 e2e p50",
                "F1 qr commit p50",
                None,
            ),
        ],
        setup: None,
    }
}

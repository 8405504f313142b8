//! Memory stays bounded under slow subscribers and full queues (reliability plan: "slow
//! subscribers under Block and Lag, and full queues: memory stays bounded").
//!
//! Its own test binary, because it installs a counting global allocator and reads the
//! process-wide live-bytes counter (all threads: the durable writer thread and redb's page cache
//! included). The tests share that counter, so each one holds `SERIAL` while it measures.
//!
//! Every check compares live bytes at two points far apart in the number of messages sent (or
//! refused): a store that kept anything per message sent would grow by at least the payload's
//! 64 heap bytes per message, far beyond the allowed slack.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use embus::{
    Broker, Consumer, Durability, Overflow, QueueOptions, Retention, Start, TopicOptions,
    TrySendError,
};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, LIVE};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Held by each test while it measures: the tests share the live-bytes counter.
static SERIAL: Mutex<()> = Mutex::new(());

const PAYLOAD: usize = 64;
const WAIT: Duration = Duration::from_secs(10);
/// Slack for incidental allocations (thread-locals, a waiter list, a formatting buffer...).
const SLACK: u64 = 256 << 10;
/// redb's page cache for the durable cases (its default is 1 GiB, allocated as it fills).
const CACHE: usize = 1 << 20;

fn live() -> u64 {
    LIVE.load(Relaxed)
}

/// Live bytes once the store has committed everything asked of it: a durable store's writer
/// thread holds requests (acks, and under `Durability::Interval` sends) until it commits them,
/// after the caller has returned.
fn settled(bus: &Broker) -> u64 {
    bus.flush().unwrap();
    live()
}

fn payload(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; PAYLOAD];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// Asserts `later` (live bytes) is at most `factor` × `earlier` + `slack`, relative to `base`.
#[track_caller]
fn assert_bounded(what: &str, base: u64, earlier: u64, later: u64, factor: f64, slack: u64) {
    let e = earlier.saturating_sub(base);
    let l = later.saturating_sub(base);
    let limit = (e as f64 * factor) as u64 + slack;
    assert!(
        l <= limit,
        "{what}: live bytes above the baseline grew from {} to {} (limit {})",
        kib(e),
        kib(l),
        kib(limit)
    );
}

fn recv_one(sub: &mut Consumer<Vec<u8>>) -> u64 {
    let m = sub.recv_timeout(WAIT).expect("a message");
    let i = u64::from_le_bytes(m.payload()[..8].try_into().unwrap());
    m.ack().unwrap();
    i
}

/// A durable broker on a fresh directory, with redb's cache capped at `CACHE`.
struct Durable {
    bus: Option<Broker>,
    dir: PathBuf,
}

impl Durable {
    fn open(name: &str) -> Self {
        Self::open_with(name, Durability::Immediate)
    }

    fn open_with(name: &str, durability: Durability) -> Self {
        let dir = std::env::temp_dir().join(format!("embus-bounded-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bus = Broker::builder()
            .path(dir.join("bus.embus"))
            .cache_size(CACHE)
            .durability(durability)
            .open()
            .unwrap();
        Self {
            bus: Some(bus),
            dir,
        }
    }

    fn bus(&self) -> &Broker {
        self.bus.as_ref().unwrap()
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        drop(self.bus.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Overflow::Lag: a subscriber that never reads
// ---------------------------------------------------------------------------------------------

/// Sends `total` messages (in batches of `batch`; 1 = `send`) to a Lag topic keeping `keep`,
/// with a subscriber that never reads; returns live bytes (baseline, at `checkpoint`, at
/// `total`).
fn lag_run(bus: &Broker, keep: u64, checkpoint: u64, total: u64, batch: u64) -> (u64, u64, u64) {
    let topic = bus
        .topic_with::<Vec<u8>>(
            "lag",
            TopicOptions::default()
                .retention(Retention::messages(keep))
                .overflow(Overflow::Lag),
        )
        .unwrap();
    let _never_reads = topic.subscribe(Start::Earliest).unwrap();
    let producer = topic.producer();
    let send_up_to = |from: u64, to: u64| {
        let mut i = from;
        while i < to {
            if batch == 1 {
                producer.send(payload(i)).unwrap();
                i += 1;
            } else {
                let n = batch.min(to - i);
                producer
                    .send_batch((i..i + n).map(payload).collect())
                    .unwrap();
                i += n;
            }
        }
    };
    let base = settled(bus);
    send_up_to(0, checkpoint);
    let at_checkpoint = settled(bus);
    send_up_to(checkpoint, total);
    let at_total = settled(bus);
    assert!(topic.retained() <= keep, "retention is {keep}");
    assert_eq!(topic.offsets(0).unwrap().end, total);
    println!(
        "lag (keep {keep}): +{} after {checkpoint} sends, +{} after {total}",
        kib(at_checkpoint - base),
        kib(at_total.saturating_sub(base))
    );
    (base, at_checkpoint, at_total)
}

#[test]
fn lag_topic_with_a_reader_that_never_reads_stays_bounded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let keep = 1_000;
    let bus = Broker::memory();
    let (base, at_20k, at_200k) = lag_run(&bus, keep, 20_000, 200_000, 1);
    assert_bounded("memory, Lag", base, at_20k, at_200k, 1.2, SLACK);
    // And the level itself is that of `keep` messages, not of 20k.
    let per_message = 512;
    assert_bounded(
        "memory, Lag, level",
        base,
        0,
        at_20k,
        0.0,
        keep * per_message + SLACK,
    );
}

#[test]
fn durable_lag_topic_keeps_a_bounded_window_in_memory_whatever_its_retention() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Retention far above the durable in-memory window (about 8k messages per partition).
    let keep = 50_000;
    let d = Durable::open("lag");
    let (base, at_20k, at_100k) = lag_run(d.bus(), keep, 20_000, 100_000, 1_000);
    // Between 20k and 100k sends, retention (50k) fills up: had the log kept what it retains in
    // memory, it would have grown by 30k+ messages' payloads.
    assert_bounded("durable, Lag", base, at_20k, at_100k, 1.2, SLACK);
    // Below what half of `keep` retained messages' payloads alone would take (1.6 MB; in memory
    // 50k retained messages take over 6 MB), plus the cache.
    assert_bounded(
        "durable, Lag, level",
        base,
        0,
        at_100k,
        0.0,
        keep * PAYLOAD as u64 / 2 + CACHE as u64,
    );
}

// ---------------------------------------------------------------------------------------------
// Overflow::Block: the producer is refused while the subscriber lags
// ---------------------------------------------------------------------------------------------

/// A Block topic keeping `keep`, filled by `fill` (so a `try_send` gets Full), refused
/// `refusals` times, then `rounds` rounds of the subscriber reading `step` and the producer
/// sending `step` (with `send_batch` if `batched`, for a durable store, else `try_send`), then
/// drained. The level when full must be at most `level_limit` above the baseline.
fn block_run(
    bus: &Broker,
    keep: u64,
    refusals: u64,
    rounds: u64,
    step: u64,
    batched: bool,
    level_limit: u64,
) {
    let label = if batched { "durable" } else { "memory" };
    let topic = bus
        .topic_with::<Vec<u8>>(
            "block",
            TopicOptions::default()
                .retention(Retention::messages(keep))
                .overflow(Overflow::Block),
        )
        .unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let producer = topic.producer();
    let mut next = 0u64;
    let send = |from: u64, n: u64| {
        if batched {
            for at in (from..from + n).step_by(1_000) {
                let m = 1_000.min(from + n - at);
                producer
                    .send_batch((at..at + m).map(payload).collect())
                    .unwrap();
            }
        } else {
            for i in from..from + n {
                producer.try_send(payload(i)).unwrap();
            }
        }
    };

    let base = settled(bus);
    send(next, keep);
    next += keep;
    assert!(
        matches!(producer.try_send(payload(next)), Err(TrySendError::Full(_))),
        "the window is full"
    );
    let full = settled(bus);

    for _ in 0..refusals {
        assert!(producer.try_send(payload(next)).unwrap_err().is_full());
    }
    let refused = settled(bus);

    let mut expect = 0;
    for _ in 0..rounds {
        for _ in 0..step {
            assert_eq!(recv_one(&mut sub), expect);
            expect += 1;
        }
        send(next, step);
        next += step;
        assert!(producer.try_send(payload(next)).unwrap_err().is_full());
    }
    let flowed = settled(bus);

    while expect < next {
        assert_eq!(recv_one(&mut sub), expect);
        expect += 1;
    }
    assert!(sub.try_recv().unwrap_err().is_empty());
    let drained = settled(bus);

    println!(
        "{label} Block (keep {keep}): +{} full, +{} after {refusals} refusals, +{} after \
         {rounds}x{step} read and sent, +{} drained ({next} sent in all)",
        kib(full - base),
        kib(refused.saturating_sub(base)),
        kib(flowed.saturating_sub(base)),
        kib(drained.saturating_sub(base)),
    );
    assert_bounded(
        &format!("{label}, Block, level"),
        base,
        0,
        full,
        0.0,
        level_limit,
    );
    assert_bounded(
        &format!("{label}, Block, refused"),
        base,
        full,
        refused,
        1.0,
        SLACK,
    );
    assert_bounded(
        &format!("{label}, Block, flowing"),
        base,
        full,
        flowed,
        1.2,
        SLACK,
    );
    assert_bounded(
        &format!("{label}, Block, drained"),
        base,
        full,
        drained,
        1.2,
        SLACK,
    );
}

#[test]
fn block_topic_refusing_a_producer_stays_bounded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bus = Broker::memory();
    let keep = 1_000;
    block_run(&bus, keep, 100_000, 100, 1_000, false, keep * 512 + SLACK);
}

#[test]
fn durable_block_topic_refusing_a_producer_stays_bounded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = Durable::open("block");
    // Sends are batched (each durable commit waits for an fsync); they always fit the window,
    // so a batch never waits. The refusals are single `try_send`s.
    // In memory, 50k retained messages would take over 6 MB (about 130 B each); durable keeps
    // about 8k of them, plus redb's cache.
    let keep = 50_000;
    let limit = keep * PAYLOAD as u64 / 2 + CACHE as u64;
    block_run(d.bus(), keep, 100_000, 20, 1_000, true, limit);
}

// ---------------------------------------------------------------------------------------------
// A full queue with no consumer
// ---------------------------------------------------------------------------------------------

/// Fills a queue of `capacity` with no consumer (with `send_batch` up to capacity if `batched`,
/// then `try_send` until Full), has `refusals` further `try_send`s refused, then a consumer
/// receives and acks everything. After the acks, at most a quarter of the full level plus
/// `ack_slack` may remain.
fn full_queue_run(bus: &Broker, capacity: usize, refusals: u64, batched: bool, ack_slack: u64) {
    let label = if batched { "durable" } else { "memory" };
    let queue = bus
        .queue_with::<Vec<u8>>("jobs", QueueOptions::default().capacity(capacity))
        .unwrap();
    let producer = queue.producer();

    let base = settled(bus);
    let mut sent = 0u64;
    let started = Instant::now();
    if batched {
        while sent < capacity as u64 {
            let n = 1_000.min(capacity as u64 - sent);
            producer
                .send_batch((sent..sent + n).map(payload).collect())
                .unwrap();
            sent += n;
        }
    }
    loop {
        match producer.try_send(payload(sent)) {
            Ok(_) => sent += 1,
            Err(TrySendError::Full(_)) => break,
            Err(e) => panic!("{e:?}"),
        }
        assert!(sent <= capacity as u64, "a queue of capacity {capacity}");
    }
    assert_eq!(sent, capacity as u64);
    let fill_time = started.elapsed();
    let full = settled(bus);

    for _ in 0..refusals {
        assert!(producer.try_send(payload(sent)).unwrap_err().is_full());
    }
    let refused = settled(bus);

    let started = Instant::now();
    let mut consumer = queue.consumer();
    for i in 0..sent {
        assert_eq!(recv_one(&mut consumer), i);
    }
    assert!(consumer.try_recv().unwrap_err().is_empty());
    drop(consumer);
    bus.wait_idle(WAIT).unwrap();
    let ack_time = started.elapsed();
    let acked = settled(bus);

    println!(
        "{label} queue (capacity {capacity}): +{} full (filled in {fill_time:?}), +{} after \
         {refusals} refusals, {}{} after all acked (in {ack_time:?})",
        kib(full - base),
        kib(refused.saturating_sub(base)),
        if acked >= base { "+" } else { "-" },
        kib(acked.abs_diff(base)),
    );
    assert_bounded(
        &format!("{label}, queue, refused"),
        base,
        full,
        refused,
        1.0,
        SLACK,
    );
    // Back near the start: at most a quarter of what the full queue held stays (spare capacity
    // of the ready list, say), plus slack.
    assert_bounded(
        &format!("{label}, queue, acked"),
        base,
        full,
        acked,
        0.25,
        ack_slack,
    );
}

#[test]
fn full_queue_refusing_a_producer_stays_bounded_and_is_freed_when_acked() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bus = Broker::memory();
    full_queue_run(&bus, 1_000, 100_000, false, SLACK);
}

#[test]
fn durable_full_queue_refusing_a_producer_stays_bounded_and_is_freed_when_acked() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = Durable::open_with("queue", Durability::Interval(Duration::from_millis(5)));
    // Large enough that the messages (about 3 MB) outweigh redb's cache, which may stay filled
    // after the acks. Interval durability, because a queue's `send_batch` commits (and fsyncs)
    // each message on its own: 20k of them take about 50 s; measurements wait for the writer
    // to settle.
    full_queue_run(d.bus(), 20_000, 100_000, true, SLACK + CACHE as u64);
}

/// One consumer holds a delivery while another receives and acks `total` messages; live bytes
/// at `total` stay at their level at a tenth of it (regression: every delivery after the held
/// one kept a slot, and each send scanned them all for the earliest ack deadline).
fn held_delivery_run(ack_timeout: Option<Duration>, total: u64) {
    let bus = Broker::memory();
    let options = match ack_timeout {
        Some(t) => QueueOptions::default().ack_timeout(t),
        None => QueueOptions::default(),
    };
    let queue = bus.queue_with::<Vec<u8>>("jobs", options).unwrap();
    let producer = queue.producer();
    producer.send(payload(0)).unwrap();
    let mut holder = queue.consumer();
    let held = holder.recv_timeout(WAIT).unwrap();
    let mut worker = queue.consumer();
    let base = live();
    let mut checkpoint = 0;
    for i in 1..=total {
        producer.send(payload(i)).unwrap();
        assert_eq!(recv_one(&mut worker), i);
        if i == total / 10 {
            checkpoint = live();
        }
    }
    let end = live();
    println!(
        "queue with a held delivery (ack timeout {ack_timeout:?}): +{} after {}, +{} after {total}",
        kib(checkpoint.saturating_sub(base)),
        total / 10,
        kib(end.saturating_sub(base)),
    );
    assert_bounded("queue, held delivery", base, checkpoint, end, 1.0, SLACK);
    held.ack().unwrap();
    assert_eq!((queue.len(), queue.in_flight()), (0, 0));
}

#[test]
fn a_held_queue_delivery_does_not_grow_memory_with_later_deliveries() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    held_delivery_run(Some(Duration::from_secs(3600)), 1_000_000);
    held_delivery_run(None, 1_000_000);
}

//! The embus sides of `benches/peers.rs`: a durable broker (`Durability::Immediate`, a fresh
//! file per run; for latency, with one-phase commits too) and `Broker::memory()` for reference.

use std::time::Instant;

use embus::{Broker, Durability, Retention, TopicOptions};

use super::common::flow::{self, send_until};
use super::{Ctx, payload, ping, seq_of};

/// Where a run's broker keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Store {
    Memory,
    /// A fresh file, committing in two phases (the default).
    Durable,
    /// A fresh file, committing in one phase (`two_phase_commit(false)`: one fsync).
    OnePhase,
}

/// A broker of this run: durable in a fresh file (returned, to remove), or memory.
fn broker(ctx: &Ctx, label: &str, store: Store) -> (Broker, Option<std::path::PathBuf>) {
    if store == Store::Memory {
        return (Broker::memory(), None);
    }
    let path = ctx.file(label);
    let bus = Broker::builder()
        .path(&path)
        .durability(Durability::Immediate)
        .two_phase_commit(store == Store::Durable)
        .open()
        .expect("open the durable broker");
    (bus, Some(path))
}

/// Closes `bus` and removes its file; for a durable run that is not a warm-up, prints the
/// store's commits on stderr (where the time went).
fn finish(bus: Broker, path: Option<std::path::PathBuf>, label: &str, warm: bool) {
    if let Some(store) = bus.stats().store.filter(|_| !warm) {
        eprintln!(
            "    embus {label}: {} commits, {:.0} records/commit, commit p50 {:?} p99 {:?}",
            store.commits, store.records_per_commit, store.commit_p50, store.commit_p99
        );
    }
    bus.close().expect("close");
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
}

/// A one-partition topic; the memory one keeps the last 100k messages, the durable one all
/// (no run pays for trimming).
fn topic(bus: &Broker, durable: bool) -> embus::Topic<Vec<u8>> {
    let retention = if durable {
        Retention::unlimited()
    } else {
        Retention::messages(100_000)
    };
    let options = TopicOptions::default().partitions(1).retention(retention);
    bus.topic_with::<Vec<u8>>("bench", options)
        .expect("declare the topic")
}

/// Produce: `send_batch(BATCH)` for the window.
pub(super) fn produce(ctx: &Ctx, warm: bool, store: Store) -> f64 {
    let (bus, path) = broker(ctx, "produce", store);
    let topic = topic(&bus, store != Store::Memory);
    let producer = topic.producer();
    // Untimed: the topic's declaration rides this commit.
    producer.send(payload(0)).expect("warm send");
    let start = Instant::now();
    let n = send_until(&producer, 1, start + ctx.window(warm));
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop((producer, topic));
    finish(bus, path, "produce", warm);
    rate
}

/// End to end through a durable queue.
pub(super) fn e2e_queue(ctx: &Ctx, warm: bool) -> f64 {
    let (bus, path) = broker(ctx, "e2e-queue", Store::Durable);
    let rate = flow::embus_queue(&bus, ctx.window(warm)).rate();
    finish(bus, path, "e2e queue", warm);
    rate
}

/// End to end through a durable topic, the consumer a group member.
pub(super) fn e2e_group(ctx: &Ctx, warm: bool) -> f64 {
    let (bus, path) = broker(ctx, "e2e-group", Store::Durable);
    let rate = flow::embus_group(&bus, ctx.window(warm)).rate();
    finish(bus, path, "e2e group", warm);
    rate
}

/// Latency through a queue: `send` one message, the consumer `recv`s and acks it.
pub(super) fn latency(ctx: &Ctx, warm: bool, store: Store) -> Vec<f64> {
    let (bus, path) = broker(ctx, "latency", store);
    let queue = bus.queue::<Vec<u8>>("bench").expect("declare the queue");
    let producer = queue.producer();
    let mut consumer = queue.consumer();
    let figures = ping(
        ctx.samples(warm),
        |seq| {
            if producer.send(payload(seq)).is_err() {
                panic!("send failed");
            }
        },
        |listener, count| {
            listener.ready();
            for _ in 0..count {
                let m = consumer.recv().expect("recv");
                let at = Instant::now();
                let seq = seq_of(m.payload());
                m.ack().expect("ack");
                listener.report(seq, at);
            }
        },
    );
    drop((producer, consumer, queue));
    finish(bus, path, "latency", warm);
    figures
}

//! Transactions (`Broker::transaction`) against the same work without one, side by side: the
//! `tx-outbox`, `tx-sends` and `tx-ctp` sections of `benches/durable.rs` (see its table).
//!
//! Every side runs `Durability::Immediate` on a fresh file, one thread, and charges the clock
//! up to the broker's `close`, as the parent's throughput rows do. Rates count messages sent
//! (T1: outbox rows, one message each; T3: inputs processed, one output each).

use std::sync::Arc;
use std::time::{Duration, Instant};

use embus::redb::{self, TableDefinition};
use embus::{Broker, Durability, GroupOptions, Message, Start};

use super::{
    Ctx, Figure, durable_broker, embus_topic, payload, rate, remove, seq_of, timed, unlimited_topic,
};

/// Messages per T2 transaction (and `send_batch`).
const SENDS: usize = 100;
/// Inputs acked, and outputs sent, per T3 transaction (and per `send_batch` without one).
const CTP_BATCH: usize = 1000;

/// The application's table of T1: one row per outbox transaction.
const ORDERS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("orders");

// ---------------------------------------------------------------------------------------------
// T1: the outbox, one row and one message per commit

/// A broker built on the application's own redb database (`BrokerBuilder::database`), with a
/// one-partition, unlimited-retention topic; the application's table and the topic are created
/// untimed.
fn app_broker(ctx: &Ctx, key: &str) -> (std::path::PathBuf, Broker, embus::Topic<Vec<u8>>) {
    let path = ctx.file(key);
    let db = Arc::new(redb::Database::create(&path).expect("create the application database"));
    let txn = db.begin_write().expect("begin_write");
    txn.open_table(ORDERS)
        .expect("create the application table");
    txn.commit().expect("commit");
    let bus = Broker::builder()
        .database(db)
        .durability(Durability::Immediate)
        .open()
        .expect("open the broker on the application database");
    let topic = unlimited_topic(&bus, "placed");
    topic.producer().send(payload(0)).expect("warm send");
    (path, bus, topic)
}

/// T1 send: a plain durable `send` of one message at a time.
pub(super) fn outbox_plain(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let store = app_broker(ctx, "T1 send");
    timed(ctx, warm, "T1 send", store, |_, producer, n| {
        if producer.send(payload(n)).is_err() {
            panic!("send failed");
        }
        1
    })
}

/// T1 outbox: a transaction inserting one row into the application's table (through
/// `Transaction::redb`) and sending one message, committed.
pub(super) fn outbox_tx(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let store = app_broker(ctx, "T1 outbox");
    timed(ctx, warm, "T1 outbox", store, |bus, producer, n| {
        let value = payload(n);
        let mut tx = bus.transaction().expect("begin a transaction");
        tx.redb()
            .expect("the write transaction")
            .open_table(ORDERS)
            .expect("open the application table")
            .insert(n, value.as_slice())
            .expect("insert the row");
        if tx.send(producer, value).is_err() {
            panic!("send in a transaction failed");
        }
        tx.commit().expect("commit");
        1
    })
}

// ---------------------------------------------------------------------------------------------
// Paired runs: both sides in one run, commit by commit

/// One operation of a paired run's side (a commit, given the broker and the operation's
/// number), returning how many messages it sent.
type Op = Box<dyn FnMut(&Broker, u64) -> u64>;

/// One side of a paired run: its broker, its operation, and what it did.
struct Lane {
    key: &'static str,
    path: std::path::PathBuf,
    bus: Broker,
    op: Op,
    sent: u64,
    busy: Duration,
}

impl Lane {
    fn new(
        key: &'static str,
        (path, bus): (std::path::PathBuf, Broker),
        op: impl FnMut(&Broker, u64) -> u64 + 'static,
    ) -> Self {
        Self {
            key,
            path,
            bus,
            op: Box::new(op),
            sent: 0,
            busy: Duration::ZERO,
        }
    }

    fn step(&mut self, i: u64) {
        let start = Instant::now();
        self.sent += (self.op)(&self.bus, i);
        self.busy += start.elapsed();
    }

    /// Closes the broker (charged to the lane, as a sequential run charges its `close`) and
    /// reports the lane's rate over its own busy time.
    fn finish(self) -> Figure {
        let Self {
            key,
            path,
            bus,
            op,
            sent,
            mut busy,
        } = self;
        drop(op);
        let start = Instant::now();
        bus.close().expect("close");
        busy += start.elapsed();
        remove(&path);
        rate(key, sent, busy)
    }
}

/// Runs two lanes, alternating operation by operation (a b, b a, …), so both see the same
/// moments of the disk: a virtual disk's fsync latency drifts by several times within a
/// second, more than a sequential run of each side can average out. `steps`: how many
/// operations each lane runs; `None`: as many as fit in twice the window.
fn paired(ctx: &Ctx, warm: bool, steps: Option<u64>, mut a: Lane, mut b: Lane) -> Vec<Figure> {
    let window = 2 * ctx.window(warm);
    let start = Instant::now();
    let mut i = 0u64;
    while steps.map_or(start.elapsed() < window, |k| i < k) {
        if i.is_multiple_of(2) {
            a.step(i);
            b.step(i);
        } else {
            b.step(i);
            a.step(i);
        }
        i += 1;
    }
    vec![a.finish(), b.finish()]
}

/// T1 paired: the outbox transaction and the plain send, alternating commit by commit, each
/// on its own broker and file.
pub(super) fn outbox_paired(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let (path, bus, topic) = app_broker(ctx, "T1p outbox");
    let producer = topic.producer();
    let outbox = Lane::new("T1 outbox paired", (path, bus), move |bus, i| {
        let value = payload(i);
        let mut tx = bus.transaction().expect("begin a transaction");
        tx.redb()
            .expect("the write transaction")
            .open_table(ORDERS)
            .expect("open the application table")
            .insert(i, value.as_slice())
            .expect("insert the row");
        if tx.send(&producer, value).is_err() {
            panic!("send in a transaction failed");
        }
        tx.commit().expect("commit");
        1
    });
    let (path, bus, topic2) = app_broker(ctx, "T1p send");
    let producer = topic2.producer();
    let plain = Lane::new("T1 send paired", (path, bus), move |_, i| {
        if producer.send(payload(i)).is_err() {
            panic!("send failed");
        }
        1
    });
    let figures = paired(ctx, warm, None, outbox, plain);
    drop((topic, topic2));
    figures
}

/// T2 paired: the transaction of `SENDS` and `send_batch` of `SENDS`, alternating.
pub(super) fn sends_paired(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let (path, bus, topic) = embus_topic(ctx, "T2p tx", Durability::Immediate, true);
    let producer = topic.producer();
    let tx_lane = Lane::new("T2 tx paired", (path, bus), move |bus, i| {
        let mut tx = bus.transaction().expect("begin a transaction");
        let first = i * SENDS as u64;
        for seq in first..first + SENDS as u64 {
            if tx.send(&producer, payload(seq)).is_err() {
                panic!("send in a transaction failed");
            }
        }
        tx.commit().expect("commit");
        SENDS as u64
    });
    let (path, bus, topic2) = embus_topic(ctx, "T2p batch", Durability::Immediate, true);
    let producer = topic2.producer();
    let batch = Lane::new("T2 batch paired", (path, bus), move |_, i| {
        let first = i * SENDS as u64;
        let batch: Vec<Vec<u8>> = (first..first + SENDS as u64).map(payload).collect();
        if producer.send_batch(batch).is_err() {
            panic!("send_batch failed");
        }
        SENDS as u64
    });
    let figures = paired(ctx, warm, None, tx_lane, batch);
    drop((topic, topic2));
    figures
}

// ---------------------------------------------------------------------------------------------
// T2: 100 messages per commit

/// T2 batch: `send_batch` of `SENDS`.
pub(super) fn sends_batch(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let store = embus_topic(ctx, "T2 batch", Durability::Immediate, true);
    timed(ctx, warm, "T2 batch", store, |_, producer, n| {
        let batch: Vec<Vec<u8>> = (n..n + SENDS as u64).map(payload).collect();
        if producer.send_batch(batch).is_err() {
            panic!("send_batch failed");
        }
        SENDS as u64
    })
}

/// T2 tx: a transaction of `SENDS` sends to one topic, committed.
pub(super) fn sends_tx(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let store = embus_topic(ctx, "T2 tx", Durability::Immediate, true);
    timed(ctx, warm, "T2 tx", store, |bus, producer, n| {
        let mut tx = bus.transaction().expect("begin a transaction");
        for seq in n..n + SENDS as u64 {
            if tx.send(producer, payload(seq)).is_err() {
                panic!("send in a transaction failed");
            }
        }
        tx.commit().expect("commit");
        SENDS as u64
    })
}

// ---------------------------------------------------------------------------------------------
// T3: consume-transform-produce

/// What the loop produces from an input: the payload with its sequence number doubled.
fn transform(input: &[u8]) -> Vec<u8> {
    payload(seq_of(input) * 2)
}

/// A broker with `n` inputs stored (untimed, `send_batch` of `CTP_BATCH`), an empty output
/// topic, and one member of group `g` on the input topic, starting at the earliest.
struct Pipeline {
    path: std::path::PathBuf,
    bus: Broker,
    input: embus::Topic<Vec<u8>>,
    output: embus::Topic<Vec<u8>>,
    member: embus::Consumer<Vec<u8>>,
}

fn pipeline(ctx: &Ctx, key: &str, n: u64) -> Pipeline {
    let (path, bus) = durable_broker(ctx, key, Durability::Immediate, true);
    let input = unlimited_topic(&bus, "input");
    let output = unlimited_topic(&bus, "output");
    let producer = input.producer();
    let mut sent = 0u64;
    while sent < n {
        let k = (n - sent).min(CTP_BATCH as u64);
        let batch: Vec<Vec<u8>> = (sent..sent + k).map(payload).collect();
        if producer.send_batch(batch).is_err() {
            panic!("send_batch of inputs failed");
        }
        sent += k;
    }
    let member = input
        .join_group_with("g", GroupOptions::default().start(Start::Earliest))
        .expect("join the group");
    Pipeline {
        path,
        bus,
        input,
        output,
        member,
    }
}

/// Inputs per T3 run: a quarter for warm-up runs.
fn ctp_inputs(ctx: &Ctx, warm: bool) -> u64 {
    let n = if ctx.quick { 20_000 } else { 100_000 };
    if warm { n / 4 } else { n }
}

/// Closes the pipeline's broker (on the clock), checks every input produced one output, and
/// returns the time since `start`.
fn finish(p: Pipeline, n: u64, start: Instant) -> Duration {
    let Pipeline {
        path,
        bus,
        input,
        output,
        member,
    } = p;
    drop(member);
    bus.close().expect("close");
    let elapsed = start.elapsed();
    assert_eq!(output.retained(), n, "outputs produced");
    drop((input, output));
    remove(&path);
    elapsed
}

/// Receives the next `k` inputs.
fn recv_inputs(member: &mut embus::Consumer<Vec<u8>>, k: u64) -> Vec<Message<Vec<u8>>> {
    (0..k)
        .map(|_| member.recv().expect("recv an input"))
        .collect()
}

/// T3 plain's step: receive up to `CTP_BATCH` inputs, `send_batch` their outputs, then ack
/// each input; returns how many it processed.
fn ctp_step_plain(
    member: &mut embus::Consumer<Vec<u8>>,
    producer: &embus::Producer<Vec<u8>>,
    left: u64,
) -> u64 {
    let inputs = recv_inputs(member, left.min(CTP_BATCH as u64));
    let outputs = inputs.iter().map(|m| transform(m.payload())).collect();
    if producer.send_batch(outputs).is_err() {
        panic!("send_batch of outputs failed");
    }
    let k = inputs.len() as u64;
    for m in inputs {
        m.ack().expect("ack");
    }
    k
}

/// T3 tx's step: receive up to `CTP_BATCH` inputs; one transaction sends their outputs and
/// acks them. Returns how many it processed.
fn ctp_step_tx(
    bus: &Broker,
    member: &mut embus::Consumer<Vec<u8>>,
    producer: &embus::Producer<Vec<u8>>,
    left: u64,
) -> u64 {
    let inputs = recv_inputs(member, left.min(CTP_BATCH as u64));
    let k = inputs.len() as u64;
    let mut tx = bus.transaction().expect("begin a transaction");
    for m in inputs {
        if tx.send(producer, transform(m.payload())).is_err() {
            panic!("send in a transaction failed");
        }
        tx.ack(m).expect("ack in a transaction");
    }
    tx.commit().expect("commit");
    k
}

/// T3 plain: the loop without a transaction, over all the inputs.
pub(super) fn ctp_plain(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let n = ctp_inputs(ctx, warm);
    let mut p = pipeline(ctx, "T3 plain", n);
    let producer = p.output.producer();
    let mut done = 0u64;
    let start = Instant::now();
    while done < n {
        done += ctp_step_plain(&mut p.member, &producer, n - done);
    }
    drop(producer);
    let elapsed = finish(p, n, start);
    vec![rate("T3 plain", n, elapsed)]
}

/// T3 tx: the loop with a transaction per `CTP_BATCH` inputs, over all the inputs.
pub(super) fn ctp_tx(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let n = ctp_inputs(ctx, warm);
    let mut p = pipeline(ctx, "T3 tx", n);
    let producer = p.output.producer();
    let mut done = 0u64;
    let start = Instant::now();
    while done < n {
        done += ctp_step_tx(&p.bus, &mut p.member, &producer, n - done);
    }
    drop(producer);
    let elapsed = finish(p, n, start);
    vec![rate("T3 tx", n, elapsed)]
}

/// T3 paired: both loops over their own pipelines, alternating batch by batch; checks that
/// each produced one output per input.
pub(super) fn ctp_paired(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let n = ctp_inputs(ctx, warm);
    let steps = n.div_ceil(CTP_BATCH as u64);
    let lane = |key: &'static str, with_tx: bool| {
        let p = pipeline(ctx, key, n);
        let Pipeline {
            path,
            bus,
            input,
            output,
            mut member,
        } = p;
        let producer = output.producer();
        let mut done = 0u64;
        let op = move |bus: &Broker, _: u64| {
            let k = if with_tx {
                ctp_step_tx(bus, &mut member, &producer, n - done)
            } else {
                ctp_step_plain(&mut member, &producer, n - done)
            };
            done += k;
            k
        };
        (Lane::new(key, (path, bus), op), input, output)
    };
    let (tx_lane, tx_input, tx_output) = lane("T3 tx paired", true);
    let (plain_lane, plain_input, plain_output) = lane("T3 plain paired", false);
    let figures = paired(ctx, warm, Some(steps), tx_lane, plain_lane);
    assert_eq!(tx_output.retained(), n, "T3 tx paired: outputs produced");
    assert_eq!(
        plain_output.retained(),
        n,
        "T3 plain paired: outputs produced"
    );
    drop((tx_input, tx_output, plain_input, plain_output));
    figures
}

//! Transactions (`Broker::transaction`) against the same work without one, side by side: the
//! `tx-outbox`, `tx-sends` and `tx-ctp` sections of `benches/durable.rs` (see its table).
//!
//! Every side runs `Durability::Immediate` on a fresh file, one thread, and charges the clock
//! up to the broker's `close`, as the parent's throughput rows do. Rates count messages sent
//! (T1: outbox rows, one message each; T3: inputs processed, one output each).

use std::sync::Arc;
use std::time::{Duration, Instant};

use embus::redb::{self, TableDefinition};
use embus::{Broker, Durability, GroupOptions, Message, Retention, Start, TopicOptions};

use super::{Ctx, Figure, embus_topic, payload, rate, remove, seq_of};

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
    let options = TopicOptions::default()
        .partitions(1)
        .retention(Retention::unlimited());
    let topic = bus
        .topic_with::<Vec<u8>>("placed", options)
        .expect("declare the topic");
    topic.producer().send(payload(0)).expect("warm send");
    (path, bus, topic)
}

/// T1 send: a plain durable `send` of one message at a time.
pub(super) fn outbox_plain(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let (path, bus, topic) = app_broker(ctx, "T1 send");
    let producer = topic.producer();
    let window = ctx.window(warm);
    let mut n = 0u64;
    let start = Instant::now();
    loop {
        if producer.send(payload(n)).is_err() {
            panic!("send failed");
        }
        n += 1;
        if start.elapsed() >= window {
            break;
        }
    }
    drop(producer);
    bus.close().expect("close");
    let elapsed = start.elapsed();
    drop(topic);
    remove(&path);
    vec![rate("T1 send", n, elapsed)]
}

/// T1 outbox: a transaction inserting one row into the application's table (through
/// `Transaction::redb`) and sending one message, committed.
pub(super) fn outbox_tx(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let (path, bus, topic) = app_broker(ctx, "T1 outbox");
    let producer = topic.producer();
    let window = ctx.window(warm);
    let mut n = 0u64;
    let start = Instant::now();
    loop {
        let value = payload(n);
        let mut tx = bus.transaction().expect("begin a transaction");
        tx.redb()
            .expect("the write transaction")
            .open_table(ORDERS)
            .expect("open the application table")
            .insert(n, value.as_slice())
            .expect("insert the row");
        if tx.send(&producer, value).is_err() {
            panic!("send in a transaction failed");
        }
        tx.commit().expect("commit");
        n += 1;
        if start.elapsed() >= window {
            break;
        }
    }
    drop(producer);
    bus.close().expect("close");
    let elapsed = start.elapsed();
    drop(topic);
    remove(&path);
    vec![rate("T1 outbox", n, elapsed)]
}

// ---------------------------------------------------------------------------------------------
// T2: 100 messages per commit

/// T2 batch: `send_batch` of `SENDS`.
pub(super) fn sends_batch(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let (path, bus, topic) = embus_topic(ctx, "T2 batch", Durability::Immediate);
    let producer = topic.producer();
    let window = ctx.window(warm);
    let mut n = 0u64;
    let start = Instant::now();
    loop {
        let batch: Vec<Vec<u8>> = (n..n + SENDS as u64).map(payload).collect();
        if producer.send_batch(batch).is_err() {
            panic!("send_batch failed");
        }
        n += SENDS as u64;
        if start.elapsed() >= window {
            break;
        }
    }
    drop(producer);
    bus.close().expect("close");
    let elapsed = start.elapsed();
    drop(topic);
    remove(&path);
    vec![rate("T2 batch", n, elapsed)]
}

/// T2 tx: a transaction of `SENDS` sends to one topic, committed.
pub(super) fn sends_tx(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let (path, bus, topic) = embus_topic(ctx, "T2 tx", Durability::Immediate);
    let producer = topic.producer();
    let window = ctx.window(warm);
    let mut n = 0u64;
    let start = Instant::now();
    loop {
        let mut tx = bus.transaction().expect("begin a transaction");
        for seq in n..n + SENDS as u64 {
            if tx.send(&producer, payload(seq)).is_err() {
                panic!("send in a transaction failed");
            }
        }
        tx.commit().expect("commit");
        n += SENDS as u64;
        if start.elapsed() >= window {
            break;
        }
    }
    drop(producer);
    bus.close().expect("close");
    let elapsed = start.elapsed();
    drop(topic);
    remove(&path);
    vec![rate("T2 tx", n, elapsed)]
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
    let path = ctx.file(key);
    let bus = Broker::builder()
        .path(&path)
        .durability(Durability::Immediate)
        .open()
        .expect("open the durable broker");
    let options = TopicOptions::default()
        .partitions(1)
        .retention(Retention::unlimited());
    let input = bus
        .topic_with::<Vec<u8>>("input", options)
        .expect("declare the input topic");
    let output = bus
        .topic_with::<Vec<u8>>("output", options)
        .expect("declare the output topic");
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

/// T3 plain: receive `CTP_BATCH` inputs, `send_batch` their outputs, then ack each input.
pub(super) fn ctp_plain(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let n = ctp_inputs(ctx, warm);
    let mut p = pipeline(ctx, "T3 plain", n);
    let producer = p.output.producer();
    let mut done = 0u64;
    let start = Instant::now();
    while done < n {
        let inputs = recv_inputs(&mut p.member, (n - done).min(CTP_BATCH as u64));
        let outputs = inputs.iter().map(|m| transform(m.payload())).collect();
        if producer.send_batch(outputs).is_err() {
            panic!("send_batch of outputs failed");
        }
        done += inputs.len() as u64;
        for m in inputs {
            m.ack().expect("ack");
        }
    }
    drop(producer);
    let elapsed = finish(p, n, start);
    vec![rate("T3 plain", n, elapsed)]
}

/// T3 tx: receive `CTP_BATCH` inputs; one transaction sends their outputs and acks them.
pub(super) fn ctp_tx(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let n = ctp_inputs(ctx, warm);
    let mut p = pipeline(ctx, "T3 tx", n);
    let producer = p.output.producer();
    let mut done = 0u64;
    let start = Instant::now();
    while done < n {
        let inputs = recv_inputs(&mut p.member, (n - done).min(CTP_BATCH as u64));
        done += inputs.len() as u64;
        let mut tx = p.bus.transaction().expect("begin a transaction");
        for m in inputs {
            if tx.send(&producer, transform(m.payload())).is_err() {
                panic!("send in a transaction failed");
            }
            tx.ack(m).expect("ack in a transaction");
        }
        tx.commit().expect("commit");
    }
    drop(producer);
    let elapsed = finish(p, n, start);
    vec![rate("T3 tx", n, elapsed)]
}

//! Transactions under `kill -9`: a commit takes effect whole or not at all, and once it has
//! returned `Ok` it survives.
//!
//! As in `tests/crash.rs`, each test runs this test binary again as a child process (the tests
//! `*_child`, which do nothing unless `EMBUS_CRASH_TX_CHILD` names a store), kills it with
//! SIGKILL after a varying number of commits and up to 4 ms more (so the kill lands anywhere in
//! the child's loop, between the commits of one step too), reopens the store in-process and
//! checks it against every commit the child printed (a line per commit, flushed after `commit`
//! returned). The harness is in `tests/crash_tx/harness.rs`.
//!
//!
//! - [`transactions_commit_whole_or_not_at_all_under_kill_9`]: two threads commit
//!   transactions that each send the same sequence number to a two-partition topic and to a
//!   queue. For every sequence number, both hold it or neither does; each holds it at most once;
//!   every committed one is there, where its receipts said; per thread, what is stored is a
//!   prefix of the sends (at most one, the commit in flight at the kill, unreported); what an
//!   earlier cycle found is still there.
//! - [`outbox_rows_and_events_commit_together_under_kill_9`]: two threads commit transactions
//!   that each insert row N into the application's table through `Transaction::redb` and send
//!   event N, on a broker built on the application's `redb::Database`
//!   (`BrokerBuilder::database`; every other cycle on the path instead). Row N exists exactly
//!   when event N does; committed ones are there; earlier ones stay.
//! - [`consume_transform_produce_is_exactly_once_under_kill_9`]: the parent fills an input
//!   topic (two partitions) with `INPUTS` numbers; the child, a member of group `etl`, takes
//!   each and commits one transaction that sends `input * 10` to an output topic and
//!   `"{input}"` to an output queue and acks the input. After every kill, per input partition,
//!   exactly the inputs below the group's stored position (its first unacked offset) have
//!   outputs, once each in both outputs, and none at or above it; every committed input is below
//!   it; positions never move back. A last child runs to completion: every input has exactly
//!   one output in each. The child acks in order (one input at a time).
//! - [`consume_transform_produce_acking_out_of_order_is_exactly_once_under_kill_9`]: the same
//!   with the child committing three inputs at a time, last one first, so inputs are acked above
//!   the group's position; no input is ever output twice, and at the end each exactly once.
//!   [`an_input_acked_above_the_position_is_not_delivered_again`] is its smallest case, without
//!   a kill (the engine stores such acks with the transaction, in `embus.acked`).
//!
//! `EMBUS_CRASH_CYCLES=<n>` runs `n` kill cycles per test instead of 20. Each cycle re-reads the
//! whole file, so every `EMBUS_CRASH_FILE_CYCLES` cycles (default 200) a test starts again on a
//! fresh file (the consume-transform-produce tests fill a fresh input topic and run their last
//! child to the end on each file), which keeps a long run's cost linear.
//! `EMBUS_CRASH_SEED=<u64>` repeats a run's kill points (the seed is printed on stderr).

mod common;

#[path = "crash_tx/harness.rs"]
mod harness;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use embus::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use embus::{
    Broker, Payload, Queue, QueueOptions, Retention, Start, Topic, TopicOptions, TryRecvError,
};
use harness::{child_setup, die, files, run_child, say, settings};

/// How many inputs the consume-transform-produce child processes before it stops.
const INPUTS_ENV: &str = "EMBUS_CRASH_TX_INPUTS";
/// Set: the consume-transform-produce child takes inputs three at a time (two of them from one
/// partition) and commits their transactions last one first.
const REVERSED_ENV: &str = "EMBUS_CRASH_TX_REVERSED";
/// Threads committing at once in the first two children (so that commits share fsyncs).
const THREADS: u32 = 2;
const PARTITIONS: u32 = 2;
/// The application's table of the outbox test: key -> key * 3.
const ROWS: TableDefinition<u64, u64> = TableDefinition::new("orders");

fn topic_options() -> TopicOptions {
    TopicOptions::default()
        .partitions(PARTITIONS)
        .retention(Retention::unlimited())
}

fn queue_options() -> QueueOptions {
    QueueOptions::default().capacity(1 << 24)
}

/// Runs `body(thread)` on [`THREADS`] threads and waits for them (they run until killed).
fn on_threads(body: impl Fn(u32) + Send + Sync + 'static) {
    let body = Arc::new(body);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let body = Arc::clone(&body);
            std::thread::spawn(move || body(t))
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

// ---------------------------------------------------------------------------------------------
// The parent's side: running a child, reading a store back
// ---------------------------------------------------------------------------------------------

/// Every record `topic` retains, read from the start: (partition, offset, payload), with the
/// offsets of each partition contiguous from 0.
fn read_topic<T: Payload + Clone>(topic: &Topic<T>, ctx: &str) -> Vec<(u32, u64, T)> {
    let total = topic.retained();
    let mut all = topic.subscribe(Start::Earliest).unwrap();
    let mut next = [0u64; PARTITIONS as usize];
    let mut records = Vec::new();
    for i in 0..total {
        let m = all.recv_timeout(common::WAIT).unwrap_or_else(|e| {
            panic!("{ctx}: record {i} of {total} stored could not be read back: {e}")
        });
        let p = m.partition();
        assert_eq!(
            m.offset(),
            next[p as usize],
            "{ctx}: partition {p} skipped or repeated an offset"
        );
        next[p as usize] += 1;
        records.push((p, m.offset(), m.payload().clone()));
    }
    match all.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!(
            "{ctx}: more than the {total} retained records: {:?}",
            other.map(|m| (m.partition(), m.offset()))
        ),
    }
    records
}

/// Every message `queue` holds: (id, payload). Taken and released again (nothing in flight
/// after a reopen).
fn read_queue<T: Payload + Clone>(queue: &Queue<T>, ctx: &str) -> Vec<(u64, T)> {
    assert_eq!(
        queue.in_flight(),
        0,
        "{ctx}: in flight right after a reopen"
    );
    let ready = queue.len();
    let mut worker = queue.consumer();
    let mut held = Vec::with_capacity(ready);
    for i in 0..ready {
        let m = worker
            .recv_timeout(common::WAIT)
            .unwrap_or_else(|e| panic!("{ctx}: queue message {i} of {ready}: {e}"));
        held.push(m);
    }
    match worker.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!(
            "{ctx}: the queue delivered more than its length {ready}: id {:?}",
            other.map(|m| m.offset())
        ),
    }
    held.iter()
        .map(|m| (m.offset(), m.payload().clone()))
        .collect()
}

/// Checks that each thread's stored sequence numbers of this cycle are a prefix of its sends,
/// with at most one (the commit in flight at the kill) beyond the last one it reported.
fn check_prefixes(ctx: &str, stored: &BTreeMap<u32, Vec<u64>>, reported: &HashMap<u32, u64>) {
    for (thread, ns) in stored {
        let mut ns = ns.clone();
        ns.sort_unstable();
        assert!(
            ns.iter().copied().eq(0..ns.len() as u64),
            "{ctx}: thread {thread}'s stored sends are not a prefix of its sends: {ns:?}"
        );
        let reported = reported.get(thread).map_or(0, |&last| last + 1);
        assert!(
            ns.len() as u64 <= reported + 1,
            "{ctx}: thread {thread} stored {} sends, reported {reported} commits; at most one \
             is in flight",
            ns.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (a) Transactions over a topic and a queue
// ---------------------------------------------------------------------------------------------

/// A payload of the first test: (cycle, thread, sequence number of the thread).
type Seq = (u32, u32, u64);

/// The child of the first test: commits transactions until it is killed.
#[test]
fn tx_child() {
    let Some((path, cycle)) = child_setup() else {
        return;
    };
    let bus = Broker::open(&path).expect("child: open");
    let topic = bus
        .topic_with::<Seq>("events", topic_options())
        .expect("child: topic");
    let queue = bus
        .queue_with::<Seq>("jobs", queue_options())
        .expect("child: queue");
    say(format_args!("READY {cycle}"));
    on_threads(move |t| {
        let (events, jobs) = (topic.producer(), queue.producer());
        for n in 0.. {
            let mut tx = bus
                .transaction()
                .unwrap_or_else(|e| die(format_args!("tx: {e}")));
            let seq = (cycle, t, n);
            tx.send(&events, seq)
                .unwrap_or_else(|e| die(format_args!("topic send {n}: {e}")));
            tx.send(&jobs, seq)
                .unwrap_or_else(|e| die(format_args!("queue send {n}: {e}")));
            let r = tx
                .commit()
                .unwrap_or_else(|e| die(format_args!("commit {n}: {e}")));
            say(format_args!(
                "C {t} {n} {} {} {}",
                r[0].partition, r[0].offset, r[1].offset
            ));
        }
    });
}

#[test]
fn transactions_commit_whole_or_not_at_all_under_kill_9() {
    let (cycles, mut rng) = settings("crash_tx transactions");
    let dir = common::fresh_dir("crash-tx");
    let started = Instant::now();
    let (mut committed, mut in_files) = (0, 0);
    for (file, file_cycles) in files(cycles) {
        let path = dir.join(format!("tx-{file}.embus"));
        // What the file held at the last check (it only grows: nothing consumes).
        let mut before: HashSet<Seq> = HashSet::new();
        for cycle in file_cycles {
            let at = rng.kill_point(20, 131);
            let commits = run_child("tx_child", &path, cycle, &[], Some(at));
            let ctx = format!("transactions, cycle {cycle}");
            let bus = Broker::open(&path).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
            let topic = bus.topic_with::<Seq>("events", topic_options()).unwrap();
            let queue = bus.queue_with::<Seq>("jobs", queue_options()).unwrap();
            let records = read_topic(&topic, &ctx);
            let messages = read_queue(&queue, &ctx);

            let mut in_topic: HashMap<Seq, (u32, u64)> = HashMap::new();
            for &(p, offset, seq) in &records {
                let twice = in_topic.insert(seq, (p, offset));
                assert!(twice.is_none(), "{ctx}: {seq:?} twice in the topic");
            }
            let mut in_queue: HashMap<Seq, u64> = HashMap::new();
            for &(id, seq) in &messages {
                let twice = in_queue.insert(seq, id);
                assert!(twice.is_none(), "{ctx}: {seq:?} twice in the queue");
            }
            let topic_only: Vec<_> = in_topic
                .keys()
                .filter(|s| !in_queue.contains_key(s))
                .collect();
            let queue_only: Vec<_> = in_queue
                .keys()
                .filter(|s| !in_topic.contains_key(s))
                .collect();
            assert!(
                topic_only.is_empty() && queue_only.is_empty(),
                "{ctx}: half a transaction stored: in the topic only {topic_only:?}, in the queue \
                 only {queue_only:?}"
            );
            let lost: Vec<_> = before
                .iter()
                .filter(|s| !in_topic.contains_key(s))
                .collect();
            assert!(lost.is_empty(), "{ctx}: earlier sends vanished: {lost:?}");

            let mut reported: HashMap<u32, u64> = HashMap::new();
            for c in &commits {
                let &[t, n, p, offset, id] = c.as_slice() else {
                    panic!("{ctx}: bad commit line {c:?}");
                };
                let seq = (cycle, t as u32, n);
                assert_eq!(
                    in_topic.get(&seq),
                    Some(&(p as u32, offset)),
                    "{ctx}: committed {seq:?} is not in the topic where its receipt said"
                );
                assert_eq!(
                    in_queue.get(&seq),
                    Some(&id),
                    "{ctx}: committed {seq:?} is not in the queue under its receipt's id"
                );
                reported.insert(t as u32, n);
            }
            let mut stored: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            for &(c, t, n) in in_topic.keys() {
                if c == cycle {
                    stored.entry(t).or_default().push(n);
                } else {
                    assert!(
                        before.contains(&(c, t, n)),
                        "{ctx}: {:?} of an earlier cycle appeared from nowhere",
                        (c, t, n)
                    );
                }
            }
            check_prefixes(&ctx, &stored, &reported);
            eprintln!(
                "{ctx}: {} commits reported, {} transactions stored in all",
                commits.len(),
                in_topic.len()
            );
            committed += commits.len();
            before = in_topic.into_keys().collect();
            drop((topic, queue));
            bus.close().unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
        }
        in_files += before.len();
    }
    eprintln!(
        "crash_tx transactions: {cycles} kill -9 cycles in {:.1?}: {committed} commits checked, \
         {in_files} transactions stored in all files",
        started.elapsed(),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// (b) The outbox
// ---------------------------------------------------------------------------------------------

/// The outbox key of a thread's `n`th commit in `cycle` (also the event's payload).
fn outbox_key(cycle: u32, thread: u32, n: u64) -> u64 {
    (u64::from(cycle) << 40) | (u64::from(thread) << 32) | n
}

/// The child of the outbox test: on the application's database in even cycles, on the path in
/// odd ones; commits a row and an event per transaction until it is killed.
#[test]
fn outbox_child() {
    let Some((path, cycle)) = child_setup() else {
        return;
    };
    let bus = if cycle % 2 == 0 {
        let db = Database::create(&path).expect("child: database");
        Broker::builder().database(Arc::new(db)).open()
    } else {
        Broker::open(&path)
    }
    .expect("child: open");
    let topic = bus
        .topic_with::<u64>("placed", topic_options())
        .expect("child: topic");
    say(format_args!("READY {cycle}"));
    on_threads(move |t| {
        let placed = topic.producer();
        for n in 0.. {
            let key = outbox_key(cycle, t, n);
            let mut tx = bus
                .transaction()
                .unwrap_or_else(|e| die(format_args!("tx: {e}")));
            let txn = tx.redb().unwrap_or_else(|e| die(format_args!("redb: {e}")));
            let mut table = txn
                .open_table(ROWS)
                .unwrap_or_else(|e| die(format_args!("table: {e}")));
            table
                .insert(key, key * 3)
                .unwrap_or_else(|e| die(format_args!("insert {n}: {e}")));
            drop(table);
            tx.send(&placed, key)
                .unwrap_or_else(|e| die(format_args!("send {n}: {e}")));
            let r = tx
                .commit()
                .unwrap_or_else(|e| die(format_args!("commit {n}: {e}")));
            say(format_args!("C {key} {} {}", r[0].partition, r[0].offset));
        }
    });
}

/// The application's rows, read straight from its database.
fn stored_rows(db: &Database, ctx: &str) -> HashMap<u64, u64> {
    let txn = db.begin_read().unwrap();
    let table = match txn.open_table(ROWS) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return HashMap::new(),
        Err(e) => panic!("{ctx}: open the application's table: {e}"),
    };
    let rows = table.iter().unwrap().map(|row| {
        let (k, v) = row.unwrap_or_else(|e| panic!("{ctx}: read a row: {e}"));
        (k.value(), v.value())
    });
    rows.collect()
}

#[test]
fn outbox_rows_and_events_commit_together_under_kill_9() {
    let (cycles, mut rng) = settings("crash_tx outbox");
    let dir = common::fresh_dir("crash-tx-outbox");
    let started = Instant::now();
    let (mut committed, mut in_files) = (0, 0);
    for (file, file_cycles) in files(cycles) {
        let path = dir.join(format!("app-{file}.redb"));
        let mut before: HashSet<u64> = HashSet::new();
        for cycle in file_cycles {
            let at = rng.kill_point(20, 131);
            let commits = run_child("outbox_child", &path, cycle, &[], Some(at));
            let ctx = format!("outbox, cycle {cycle}");
            // As the application would: its own database (redb repairs it), shared with the broker.
            let db = Arc::new(
                Database::create(&path)
                    .unwrap_or_else(|e| panic!("{ctx}: reopen the database: {e}")),
            );
            let rows = stored_rows(&db, &ctx);
            let bus = Broker::builder()
                .database(Arc::clone(&db))
                .open()
                .unwrap_or_else(|e| panic!("{ctx}: reopen the broker: {e}"));
            let topic = bus.topic_with::<u64>("placed", topic_options()).unwrap();
            let mut events: HashMap<u64, (u32, u64)> = HashMap::new();
            for (p, offset, key) in read_topic(&topic, &ctx) {
                let twice = events.insert(key, (p, offset));
                assert!(twice.is_none(), "{ctx}: event {key:#x} twice");
            }
            for (&key, &value) in &rows {
                assert_eq!(value, key * 3, "{ctx}: row {key:#x} holds {value}");
            }
            let rows_only: Vec<_> = rows.keys().filter(|k| !events.contains_key(k)).collect();
            let events_only: Vec<_> = events.keys().filter(|k| !rows.contains_key(k)).collect();
            assert!(
                rows_only.is_empty() && events_only.is_empty(),
                "{ctx}: half an outbox commit stored: rows without their event {rows_only:x?}, \
                 events without their row {events_only:x?}"
            );
            let lost: Vec<_> = before.iter().filter(|k| !rows.contains_key(k)).collect();
            assert!(lost.is_empty(), "{ctx}: earlier rows vanished: {lost:x?}");

            let mut reported: HashMap<u32, u64> = HashMap::new();
            for c in &commits {
                let &[key, p, offset] = c.as_slice() else {
                    panic!("{ctx}: bad commit line {c:?}");
                };
                assert_eq!(
                    events.get(&key),
                    Some(&(p as u32, offset)),
                    "{ctx}: committed event {key:#x} is not where its receipt said"
                );
                assert!(
                    rows.contains_key(&key),
                    "{ctx}: committed row {key:#x} lost"
                );
                reported.insert(((key >> 32) & 0xff) as u32, key & 0xffff_ffff);
            }
            let mut stored: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            for &key in rows.keys() {
                if key >> 40 == u64::from(cycle) {
                    stored
                        .entry(((key >> 32) & 0xff) as u32)
                        .or_default()
                        .push(key & 0xffff_ffff);
                } else {
                    assert!(
                        before.contains(&key),
                        "{ctx}: row {key:#x} of an earlier cycle appeared from nowhere"
                    );
                }
            }
            check_prefixes(&ctx, &stored, &reported);
            eprintln!(
                "{ctx} ({}): {} commits reported, {} rows and events in all",
                if cycle % 2 == 0 { "database" } else { "path" },
                commits.len(),
                rows.len()
            );
            committed += commits.len();
            before = rows.into_keys().collect();
            drop(topic);
            bus.close().unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
            drop(db);
        }
        in_files += before.len();
    }
    eprintln!(
        "crash_tx outbox: {cycles} kill -9 cycles in {:.1?}: {committed} commits checked, \
         {in_files} rows with their events in all files",
        started.elapsed(),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// (c) Exactly-once consume-transform-produce
// ---------------------------------------------------------------------------------------------

/// The child of the last test: consumes, transforms and produces in one transaction per input
/// until it is killed or the group has acked all `INPUTS_ENV` inputs.
#[test]
fn etl_child() {
    let Some((path, cycle)) = child_setup() else {
        return;
    };
    let inputs: u64 = std::env::var(INPUTS_ENV)
        .expect("child: no input count")
        .parse()
        .expect("child: bad input count");
    let bus = Broker::open(&path).expect("child: open");
    let input = bus
        .topic_with::<u64>("input", topic_options())
        .expect("child: input");
    let output = bus
        .topic_with::<u64>("output", topic_options())
        .expect("child: output");
    let done = bus
        .queue_with::<String>("done", queue_options())
        .expect("child: queue");
    let mut member = input.join_group("etl").expect("child: join");
    let (outputs, dones) = (output.producer(), done.producer());
    say(format_args!("READY {cycle}"));
    let reversed = std::env::var_os(REVERSED_ENV).is_some();
    let process = |m: embus::Message<u64>| {
        let (p, offset, value) = (m.partition(), m.offset(), *m.payload());
        let mut tx = bus
            .transaction()
            .unwrap_or_else(|e| die(format_args!("tx: {e}")));
        tx.send(&outputs, value * 10)
            .unwrap_or_else(|e| die(format_args!("output {value}: {e}")));
        tx.send(&dones, format!("{value}"))
            .unwrap_or_else(|e| die(format_args!("done {value}: {e}")));
        tx.ack(m)
            .unwrap_or_else(|e| die(format_args!("ack {value}: {e}")));
        tx.commit()
            .unwrap_or_else(|e| die(format_args!("commit {value}: {e}")));
        say(format_args!("C {p} {offset} {value}"));
    };
    let acked = || {
        input
            .group_position("etl")
            .map_or(0, |p| p.iter().sum::<u64>())
    };
    while acked() < inputs {
        let m = member
            .recv_timeout(common::WAIT)
            .unwrap_or_else(|e| die(format_args!("recv: {e}")));
        // Out of order: up to two more inputs (so two of one partition) go first, the last
        // one first (fewer once the inputs run out).
        let mut batch = vec![m];
        while reversed && batch.len() < 3 {
            match member.recv_timeout(Duration::from_millis(100)) {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        batch.into_iter().rev().for_each(&process);
    }
    drop(member);
    bus.close().expect("child: close");
    say(format_args!("DONE"));
}

/// Checks the store after a cycle against the inputs ((partition, offset) -> value), the
/// group's positions before it, and what the child committed; returns the positions. With
/// `in_order` false (the child acked out of order), inputs at or above a position may have an
/// output too (at most one, and in both outputs).
fn check_etl(
    path: &Path,
    ctx: &str,
    inputs: &HashMap<(u32, u64), u64>,
    before: &[u64],
    commits: &[Vec<u64>],
    in_order: bool,
) -> Vec<u64> {
    let bus = Broker::open(path).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    let input = bus.topic_with::<u64>("input", topic_options()).unwrap();
    let output = bus.topic_with::<u64>("output", topic_options()).unwrap();
    let done = bus.queue_with::<String>("done", queue_options()).unwrap();
    let positions = input
        .group_position("etl")
        .unwrap_or_else(|| vec![0; PARTITIONS as usize]);
    assert!(
        before.iter().zip(&positions).all(|(b, n)| b <= n),
        "{ctx}: group positions moved back from {before:?} to {positions:?}"
    );
    // Exactly the inputs below the position (first unacked offset) of their partition.
    let expected: HashSet<u64> = inputs
        .iter()
        .filter(|((p, offset), _)| *offset < positions[*p as usize])
        .map(|(_, &value)| value)
        .collect();
    let mut in_topic = HashSet::new();
    for (p, offset, out) in read_topic(&output, ctx) {
        assert_eq!(
            out % 10,
            0,
            "{ctx}: output {out} at {p}/{offset} is no input's"
        );
        assert!(
            in_topic.insert(out / 10),
            "{ctx}: input {} output twice",
            out / 10
        );
    }
    let mut in_queue = HashSet::new();
    for (id, text) in read_queue(&done, ctx) {
        let value: u64 = text
            .parse()
            .unwrap_or_else(|_| panic!("{ctx}: queue message {id} is {text:?}"));
        assert!(in_queue.insert(value), "{ctx}: input {value} queued twice");
    }
    let halves: Vec<_> = in_topic.symmetric_difference(&in_queue).collect();
    assert!(
        halves.is_empty(),
        "{ctx}: inputs with one output of two: {halves:?}"
    );
    for (name, found) in [("output topic", &in_topic), ("output queue", &in_queue)] {
        let missing: Vec<_> = expected.difference(found).collect();
        let extra: Vec<_> = found.difference(&expected).collect();
        assert!(
            missing.is_empty() && (extra.is_empty() || !in_order),
            "{ctx}: the {name} does not match the group positions {positions:?}: inputs acked \
             without output {missing:?}, outputs of inputs not acked {extra:?}"
        );
    }
    for c in commits {
        let &[p, offset, value] = c.as_slice() else {
            panic!("{ctx}: bad commit line {c:?}");
        };
        assert_eq!(
            inputs.get(&(p as u32, offset)),
            Some(&value),
            "{ctx}: input"
        );
        assert!(
            offset < positions[p as usize] || !in_order,
            "{ctx}: committed input {value} at {p}/{offset} is not acked (positions {positions:?})"
        );
        assert!(
            in_topic.contains(&value),
            "{ctx}: committed input {value}'s output lost"
        );
    }
    drop((input, output, done));
    bus.close().unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
    positions
}

#[test]
fn consume_transform_produce_is_exactly_once_under_kill_9() {
    etl_under_kill_9(false);
}

/// As above, but the child takes inputs three at a time (so two of one partition) and commits
/// their transactions last one first: inputs acked above their group's position (the first
/// unacked offset) must not be delivered again after a kill either (their acks are stored with
/// the transaction, in `embus.acked`). See
/// [`an_input_acked_above_the_position_is_not_delivered_again`].
#[test]
fn consume_transform_produce_acking_out_of_order_is_exactly_once_under_kill_9() {
    etl_under_kill_9(true);
}

/// The case in its smallest form, with no crash at all: input 1 is acked in a committed
/// transaction with its output while input 0 is still held; after a clean close and reopen,
/// input 0 is delivered again and input 1 is not.
#[test]
fn an_input_acked_above_the_position_is_not_delivered_again() {
    let dir = common::fresh_dir("crash-tx-above");
    let path = dir.join("bus.embus");
    {
        let bus = Broker::open(&path).unwrap();
        let input = bus.topic::<u64>("input").unwrap();
        let output = bus.topic::<u64>("output").unwrap();
        input.producer().send_batch(vec![0, 1]).unwrap();
        let mut member = input.join_group("etl").unwrap();
        let first = member.recv_timeout(common::WAIT).unwrap();
        let second = member.recv_timeout(common::WAIT).unwrap();
        assert_eq!((*first.payload(), *second.payload()), (0, 1));
        let mut tx = bus.transaction().unwrap();
        tx.send(&output.producer(), 10).unwrap();
        tx.ack(second).unwrap();
        tx.commit().unwrap();
        drop(first); // released, not acked: delivered again, as it should be
        drop(member);
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let input = bus.topic::<u64>("input").unwrap();
    assert_eq!(bus.topic::<u64>("output").unwrap().retained(), 1);
    let mut member = input.join_group("etl").unwrap();
    let again = member.recv_timeout(common::WAIT).unwrap();
    assert_eq!(*again.payload(), 0);
    again.ack().unwrap();
    let redelivered = member.try_recv();
    assert!(
        matches!(redelivered, Err(embus::TryRecvError::Empty)),
        "input 1, acked with its output in a committed transaction, was delivered again: \
         processing it again outputs it twice"
    );
    drop((member, input, bus));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The consume-transform-produce kill loop; `reversed`: the child acks out of order.
fn etl_under_kill_9(reversed: bool) {
    let (cycles, mut rng) = settings("crash_tx etl");
    let dir = common::fresh_dir(if reversed {
        "crash-tx-etl-reversed"
    } else {
        "crash-tx-etl"
    });
    let started = Instant::now();
    let (mut inputs, mut committed) = (0, 0);
    for (file, file_cycles) in files(cycles) {
        let path = dir.join(format!("etl-{file}.embus"));
        let (count, commits) = etl_on_one_file(&path, file_cycles, &mut rng, reversed);
        inputs += count;
        committed += commits;
        let _ = std::fs::remove_file(&path);
    }
    eprintln!(
        "crash_tx etl: {cycles} kill -9 cycles and a last run per file in {:.1?}: {inputs} \
         inputs, {committed} commits reported",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Fills a fresh input topic at `path`, runs a child per kill cycle and a last one to the end,
/// checking the outputs after each; returns the inputs and the commits the children reported.
fn etl_on_one_file(
    path: &Path,
    cycles: std::ops::Range<u32>,
    rng: &mut harness::Rng,
    reversed: bool,
) -> (u64, usize) {
    // More inputs than the kill cycles can take (at most 50 each, plus the few the child
    // commits before the kill lands), so the last child has some left.
    let count = cycles.len() as u64 * 60 + 40;
    let mut inputs = HashMap::new();
    {
        let bus = Broker::open(path).unwrap();
        let input = bus.topic_with::<u64>("input", topic_options()).unwrap();
        let receipts = input.producer().send_batch((0..count).collect()).unwrap();
        for (value, r) in (0..count).zip(receipts) {
            inputs.insert((r.partition, r.offset), value);
        }
        drop(input);
        bus.close().unwrap();
    }
    let mut env = vec![(INPUTS_ENV, count.to_string())];
    if reversed {
        env.push((REVERSED_ENV, "1".to_owned()));
    }
    let mut positions = vec![0; PARTITIONS as usize];
    let mut committed = 0;
    let last_cycle = cycles.end;
    for cycle in cycles.start..=last_cycle {
        let last = cycle == last_cycle;
        let at = rng.kill_point(5, 46);
        let kill_after = (!last).then_some(at);
        let commits = run_child("etl_child", path, cycle, &env, kill_after);
        let ctx = format!(
            "etl, cycle {cycle}{}",
            if last { " (the last on its file)" } else { "" }
        );
        positions = check_etl(path, &ctx, &inputs, &positions, &commits, !reversed);
        eprintln!(
            "{ctx}: {} commits reported, positions {positions:?}",
            commits.len()
        );
        committed += commits.len();
    }
    assert_eq!(
        positions.iter().sum::<u64>(),
        count,
        "after the last child every input is acked (so, checked above, output exactly once)"
    );
    (count, committed)
}

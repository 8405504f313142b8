//! Bridges between processes: services that talk only through the server, and bridges killed
//! with SIGKILL mid-stream.
//!
//! As in `tests/crash.rs`, each test runs this test binary again as child processes (the test
//! [`bridge_process_child`], which does nothing unless `EMBUS_PROC_ROLE` names a role). Each
//! child opens its own durable broker and reports on stdout, one tagged line at a time; the
//! parent reads the lines, kills (`Child::kill`, SIGKILL on Unix), restarts, and checks the
//! server and the store files once the children are gone:
//!
//! - [`nats_two_services`]: service A sends 10,000 keyed messages through an outbound bridge;
//!   service B's inbound bridge stores them in a topic with a dedupe window. B gets each once,
//!   in per-key order.
//! - [`nats_two_replicas_of_a_sender_share_a_stream`]: two replicas of service A, each with its
//!   own store and the same topic name, send through one stream: none of one replica's
//!   messages is taken for a duplicate of the other's (their derived ids differ).
//! - [`nats_outbound_survives_kill_9`]: a sender is killed and restarted on the same file
//!   (`EMBUS_BRIDGE_CRASH_CYCLES`, default 20); after a last clean run the stream holds every
//!   message whose send returned `Ok`, each once by `Nats-Msg-Id` and by payload.
//! - [`nats_inbound_survives_kill_9`]: an inbound bridge draining a pre-filled stream is killed
//!   as often; the local topic ends with each message once, and the run shows that a kill
//!   landed between a local commit and its remote ack (the dedupe window dropped a
//!   redelivery).
//!
//! The tests are written against [`Server`]; each scenario runs on NATS JetStream and on
//! RabbitMQ (`amqp_*`: one exchange and one queue). RabbitMQ has no duplicate window: there
//! the crashing sender's queue holds every acknowledged send at least once, and its republished
//! copies (same `message_id`) are counted; B and the inbound bridge still store each message
//! once, through their topic's dedupe window. Without a server a test skips.
//! `EMBUS_BRIDGE_CRASH_SEED=<u64>` repeats a run's kill points.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::bridge_server::{Amqp, Nats, Server};
use common::process::{Proc, Rng, env_u64, numbers};
use common::services::wait_until;
use embus::bridge::DeadLetter;
use embus::{Broker, Dedupe, Payload, Queue, Record, Retention, Start, Topic, TopicOptions};
use serde::{Deserialize, Serialize};

/// The role a child plays; without it [`bridge_process_child`] returns at once.
const ROLE_ENV: &str = "EMBUS_PROC_ROLE";
/// [`Server::NAME`] of the server the child talks to.
const SERVER_ENV: &str = "EMBUS_PROC_SERVER";
const URL_ENV: &str = "EMBUS_PROC_URL";
/// [`Server::route`]: the names the child's bridge uses.
const ROUTE_ENV: &str = "EMBUS_PROC_ROUTE";
/// The child's store file.
const STORE_ENV: &str = "EMBUS_PROC_STORE";
/// Which replica of service A a sender is, and how many messages it sends.
const SENDER_ENV: &str = "EMBUS_PROC_SENDER";
const COUNT_ENV: &str = "EMBUS_PROC_COUNT";
/// The crashing sender's first number.
const FROM_ENV: &str = "EMBUS_PROC_FROM";
/// `1` for the last, clean run of a crash test: relay what is left, then stop.
const FINAL_ENV: &str = "EMBUS_PROC_FINAL";
/// Starts every line a child reports on (the test harness prints its own lines too).
const TAG: &str = "@proc";
/// The name of the child test, which the parent runs with `--exact`.
const CHILD_TEST: &str = "bridge_process_child";

/// Two-services test: messages, and keys they are spread over.
const MESSAGES: u64 = 10_000;
/// Replicas test: messages per replica.
const REPLICA_MESSAGES: u64 = 2_000;
const KEYS: u64 = 20;
/// Inbound crash test: messages pre-filled in the stream.
const PREFILLED: u64 = 5_000;
/// The inbound bridge's window (prefetch) in the crash test.
const INBOUND_WINDOW: usize = 256;

/// With this many kill cycles or more, a crash test also asserts that some kill landed between
/// a commit on one side and the ack on the other (in practice it does in several cycles of a run).
const EVIDENCE_CYCLES: u64 = 5;
/// The local consumer group every outbound bridge reads as.
const GROUP: &str = "to-remote";
/// The longest a test waits for something that should happen (a passing run is far quicker).
const LONG: Duration = Duration::from_secs(60);
/// How long a working child may stay silent before the parent gives up on it.
const SILENCE: Duration = Duration::from_secs(30);

#[test]
fn nats_two_services() {
    services::<Nats>("two-services", 1, MESSAGES);
}

#[test]
fn nats_two_replicas_of_a_sender_share_a_stream() {
    services::<Nats>("replicas", 2, REPLICA_MESSAGES);
}

#[test]
fn nats_outbound_survives_kill_9() {
    outbound_survives_kill_9::<Nats>();
}

#[test]
fn nats_inbound_survives_kill_9() {
    inbound_survives_kill_9::<Nats>();
}

#[test]
fn amqp_two_services() {
    services::<Amqp>("two-services", 1, MESSAGES);
}

#[test]
fn amqp_two_replicas_of_a_sender_share_a_queue() {
    services::<Amqp>("replicas", 2, REPLICA_MESSAGES);
}

#[test]
fn amqp_outbound_survives_kill_9() {
    outbound_survives_kill_9::<Amqp>();
}

#[test]
fn amqp_inbound_survives_kill_9() {
    inbound_survives_kill_9::<Amqp>();
}

#[test]
fn nats_inbound_clean_restart_keeps_stream_order() {
    inbound_clean_restart::<Nats>();
}

/// On RabbitMQ a clean stop closes the connection, and the server requeues the prefetched
/// messages in place at once (a NATS bridge hands its pulled batch back with NAKs).
#[test]
fn amqp_inbound_clean_restart_keeps_stream_order() {
    inbound_clean_restart::<Amqp>();
}

// ===== the children =====

/// A keyed message of the two-services test: its key and its number within the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Keyed {
    /// Which replica of service A sent it.
    sender: u64,
    key: u64,
    seq: u64,
}

/// Prints one report line and flushes it before the caller goes on.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    // The parent may be gone (it failed); nothing to do about it here.
    let _ = writeln!(out, "{TAG} {line}");
    let _ = out.flush();
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child: no {name}"))
}

/// Disconnects once the parent closes the child's stdin: the signal to stop.
fn stop_signal() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut rest);
        drop(tx);
    });
    rx
}

fn stopped(signal: &mpsc::Receiver<()>, wait: Duration) -> bool {
    matches!(
        signal.recv_timeout(wait),
        Err(mpsc::RecvTimeoutError::Disconnected)
    )
}

fn dedupe_options() -> TopicOptions {
    TopicOptions::default()
        .retention(Retention::unlimited())
        .dedupe(Dedupe::within(Duration::from_secs(600)))
}

fn sender_options() -> TopicOptions {
    TopicOptions::default()
        .partitions(4)
        .retention(Retention::unlimited())
}

/// Waits until group [`GROUP`] has acked everything in `topic`.
fn wait_caught_up<T: Payload>(topic: &Topic<T>) {
    wait_until("the outbound bridge caught up", LONG, || {
        let ends: Vec<u64> = (0..topic.partitions())
            .map(|p| topic.offsets(p).map_or(0, |o| o.end))
            .collect();
        topic.group_position(GROUP) == Some(ends)
    });
}

/// The child: plays `EMBUS_PROC_ROLE`. Does nothing in an ordinary test run.
#[test]
fn bridge_process_child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    // The harness may have printed "test bridge_process_child ... " without a newline.
    println!();
    match env(SERVER_ENV).as_str() {
        Nats::NAME => child::<Nats>(&role),
        Amqp::NAME => child::<Amqp>(&role),
        other => panic!("child: unknown server {other:?}"),
    }
}

fn child<S: Server>(role: &str) {
    let server = S::attach(&env(URL_ENV), &env(ROUTE_ENV));
    let bus = Broker::open(env(STORE_ENV)).expect("child: open the store");
    let parked = bus.queue::<DeadLetter>("parked").expect("child: parked");
    match role {
        "sender" => sender(&server, &bus, &parked),
        "receiver" => receiver(&server, &bus, &parked),
        "crash-out" => crash_out(&server, &bus, &parked),
        "crash-in" => crash_in(&server, &bus, &parked),
        other => panic!("child: unknown role {other:?}"),
    }
    assert!(parked.is_empty(), "child: dead letters: {}", parked.len());
}

/// Service A: sends keyed messages in batches, then waits until its bridge relayed them all.
fn sender<S: Server>(server: &S, bus: &Broker, parked: &Queue<DeadLetter>) {
    let outbox = bus.topic_with::<Keyed>("outbox", sender_options()).unwrap();
    let bridge = server.outbound(outbox.join_group(GROUP).unwrap(), parked);
    let producer = outbox.producer();
    let sender: u64 = env(SENDER_ENV).parse().unwrap();
    let count: u64 = env(COUNT_ENV).parse().unwrap();
    let mut next = [0u64; KEYS as usize];
    let all: Vec<u64> = (0..count).collect();
    for chunk in all.chunks(100) {
        let records = chunk
            .iter()
            .map(|&n| {
                // Keys spread unevenly, so that partitions interleave differently.
                let key = (n ^ (n >> 3) ^ (n >> 7)) % KEYS;
                let seq = next[key as usize];
                next[key as usize] += 1;
                Record::new(Keyed { sender, key, seq }).key(format!("k{key}"))
            })
            .collect();
        producer.send_record_batch(records).unwrap();
    }
    say(format_args!("SENT"));
    wait_caught_up(&outbox);
    let stats = bridge.stats();
    bridge.stop().unwrap();
    say(format_args!("DONE {}", stats.forwarded));
}

/// Service B: reports each message its inbound bridge stores, until told to stop.
fn receiver<S: Server>(server: &S, bus: &Broker, parked: &Queue<DeadLetter>) {
    let inbox = bus.topic_with::<Keyed>("inbox", dedupe_options()).unwrap();
    let mut reader = inbox.subscribe(Start::Earliest).unwrap();
    let bridge = server.inbound(inbox.producer(), parked, 256);
    let stop = stop_signal();
    say(format_args!("READY"));
    let report = |m: embus::Message<Keyed>| {
        let Keyed { sender, key, seq } = *m.payload();
        say(format_args!("M {sender} {key} {seq}"));
    };
    loop {
        match reader.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => report(m),
            Err(embus::RecvTimeoutError::Timeout) => {
                if stopped(&stop, Duration::ZERO) {
                    break;
                }
            }
            Err(e) => panic!("child: receive: {e}"),
        }
    }
    let stats = bridge.stats();
    bridge.stop().unwrap();
    // What the bridge stored before it stopped is readable now.
    while let Ok(m) = reader.try_recv() {
        report(m);
    }
    say(format_args!("END {} {}", inbox.retained(), stats.forwarded));
}

/// The crashing sender: numbered sends, each reported once it returned `Ok`, with the bridge's
/// count of confirmed publishes. The final run only relays what is left.
fn crash_out<S: Server>(server: &S, bus: &Broker, parked: &Queue<DeadLetter>) {
    let outbox = bus.topic_with::<u64>("outbox", sender_options()).unwrap();
    let bridge = server.outbound(outbox.join_group(GROUP).unwrap(), parked);
    say(format_args!("READY"));
    if std::env::var(FINAL_ENV).is_ok() {
        wait_caught_up(&outbox);
        let stats = bridge.stats();
        bridge.stop().unwrap();
        say(format_args!("DONE {}", stats.forwarded));
        return;
    }
    let from: u64 = env(FROM_ENV).parse().unwrap();
    let producer = outbox.producer();
    for n in from.. {
        producer
            .send_record(Record::new(n).key(format!("k{}", n % 7)))
            .unwrap();
        say(format_args!("OK {n} {}", bridge.stats().forwarded));
    }
}

/// The crashing inbound bridge: reports, every few milliseconds, how many messages it stored
/// (its `forwarded`, read first) and how many records the topic holds (read after), until told
/// to stop.
fn crash_in<S: Server>(server: &S, bus: &Broker, parked: &Queue<DeadLetter>) {
    let inbox = bus.topic_with::<u64>("inbox", dedupe_options()).unwrap();
    let before = inbox.retained();
    let bridge = server.inbound(inbox.producer(), parked, INBOUND_WINDOW);
    let stop = stop_signal();
    say(format_args!("READY {before}"));
    loop {
        let stats = bridge.stats();
        say(format_args!("P {} {}", stats.forwarded, inbox.retained()));
        if stopped(&stop, Duration::from_millis(5)) {
            break;
        }
    }
    bridge.stop().unwrap();
}

// ===== the parent =====

/// Runs a child as `role` on `server`, with its store at `store`.
fn spawn<S: Server>(
    server: &S,
    role: &str,
    what: String,
    store: &Path,
    env: &[(&str, String)],
) -> Proc {
    let mut env = env.to_vec();
    env.extend([
        (ROLE_ENV, role.to_string()),
        (SERVER_ENV, S::NAME.to_string()),
        (URL_ENV, server.url().to_string()),
        (ROUTE_ENV, server.route()),
        (STORE_ENV, store.display().to_string()),
    ]);
    Proc::spawn(CHILD_TEST, TAG, what, &env)
}

/// Service B, then `senders` replicas of service A (each with its own store, and the same
/// topic and group names) sending `each` messages: B gets each message once, in per-key order.
fn services<S: Server>(prefix: &str, senders: u64, each: u64) {
    let Some(url) = S::probe() else { return };
    let started = Instant::now();
    let total = senders * each;
    let server = S::create(&url, prefix);
    let dir = common::fresh_dir(&format!("bridge-{prefix}-{}", S::NAME));
    let mut b = spawn(
        &server,
        "receiver",
        "service B".into(),
        &dir.join("b.embus"),
        &[],
    );
    b.expect("READY", SILENCE);
    let mut replicas: Vec<Proc> = (0..senders)
        .map(|i| {
            let env = [(SENDER_ENV, i.to_string()), (COUNT_ENV, each.to_string())];
            let store = dir.join(format!("a{i}.embus"));
            spawn(&server, "sender", format!("service A{i}"), &store, &env)
        })
        .collect();
    for a in &mut replicas {
        let forwarded = numbers(&a.expect("DONE", SILENCE))[0];
        a.succeed();
        assert!(
            forwarded >= each,
            "A's bridge confirmed {forwarded} of {each}"
        );
    }

    // The stream is complete now. B acks remotely only after the local commit: once the server
    // has nothing unacked (RabbitMQ: nothing undelivered) and B reported storing `total`, B
    // stops, reporting the rest of what it stored.
    let mut got: Vec<Keyed> = Vec::new();
    let mut end = None;
    let mut take = |line: String, got: &mut Vec<Keyed>| {
        if let Some(rest) = line.strip_prefix("END ") {
            end = Some(numbers(rest));
        } else if let Some(rest) = line.strip_prefix("M ") {
            let n = numbers(rest);
            let (sender, key, seq) = (n[0], n[1], n[2]);
            got.push(Keyed { sender, key, seq });
        }
    };
    wait_until(
        "B stored everything and acked it at the server",
        LONG,
        || {
            while let Some(line) = b.try_line(Duration::ZERO) {
                take(line, &mut got);
            }
            got.len() as u64 >= total && server.unacked() == 0
        },
    );
    b.tell_to_stop();
    while let Some(line) = b.line(SILENCE) {
        take(line, &mut got);
    }
    let end = end.expect("B ended without END");
    b.succeed();

    if S::DEDUPES_BY_ID {
        assert_eq!(
            server.count(),
            total,
            "the server holds each message once (none dropped as a duplicate of another's)"
        );
    }
    assert_eq!(got.len() as u64, total, "B received each once");
    // Exactly once, in per-key order: per sender and key, 0, 1, 2, … with no gap or repeat.
    let mut per_key: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    for m in &got {
        per_key.entry((m.sender, m.key)).or_default().push(m.seq);
    }
    for ((sender, key), seqs) in &per_key {
        if let Some(i) = (0..seqs.len()).find(|&i| seqs[i] != i as u64) {
            panic!(
                "A{sender} key {key}: at position {i} B got {} ({:?}…)",
                seqs[i],
                &seqs[i.saturating_sub(3)..(i + 3).min(seqs.len())]
            );
        }
    }
    assert_eq!(per_key.len() as u64, senders * KEYS);
    assert_eq!(end[0], total, "B's topic holds each once");
    eprintln!(
        "{prefix} ({}): {total} messages from {senders} sender(s) over {KEYS} keys each to B \
         in {:.1?}, each once and in key order; B's bridge relayed {} ({} dropped as \
         duplicates)",
        S::NAME,
        started.elapsed(),
        end[1],
        end[1].saturating_sub(end[0])
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn outbound_survives_kill_9<S: Server>() {
    let Some(url) = S::probe() else { return };
    let started = Instant::now();
    let cycles = cycles();
    let mut rng = Rng::from_env("EMBUS_BRIDGE_CRASH_SEED");
    let server = S::create(&url, "crash-out");
    let dir = common::fresh_dir(&format!("bridge-crash-out-{}", S::NAME));
    let store = dir.join("out.embus");

    let mut ok: BTreeSet<u64> = BTreeSet::new();
    // Per cycle, the number after its last `Ok`: the one send that may be stored unreported.
    let mut in_flight: BTreeSet<u64> = BTreeSet::new();
    // Confirmed publishes the stream did not add (lower bounds): republished copies dropped.
    let mut dropped = 0u64;
    let mut count_before = 0u64;
    for cycle in 0..cycles {
        let from = (cycle + 1) * 1_000_000;
        let target = 20 + rng.below(200);
        let what = format!("crash-out cycle {cycle}");
        let env = [(FROM_ENV, from.to_string())];
        let mut child = spawn(&server, "crash-out", what.clone(), &store, &env);
        child.expect("READY", SILENCE);
        let (mut sent, mut confirmed, mut killed) = (0u64, 0u64, false);
        let mut next = from;
        while let Some(line) = child.line(SILENCE) {
            let Some(rest) = line.strip_prefix("OK ") else {
                continue;
            };
            let n = numbers(rest);
            assert_eq!(n[0], next, "{what}: sends out of order");
            next += 1;
            ok.insert(n[0]);
            confirmed = n[1];
            sent += 1;
            if sent >= target && !killed {
                child.child.kill().unwrap(); // SIGKILL; lines it wrote before are read on
                killed = true;
            }
        }
        child.killed();
        in_flight.insert(next);
        let count = server.count();
        dropped += confirmed.saturating_sub(count - count_before);
        count_before = count;
        eprintln!(
            "{what}: killed after {sent} acknowledged sends; {confirmed} confirmed by the server, which holds {count}"
        );
    }
    let mut last = spawn(
        &server,
        "crash-out",
        "crash-out final run".into(),
        &store,
        &[(FINAL_ENV, "1".into())],
    );
    last.expect("READY", SILENCE);
    let confirmed = numbers(&last.expect("DONE", SILENCE))[0];
    last.succeed();
    let count = server.count();
    dropped += confirmed.saturating_sub(count - count_before);

    // The local topic, read back after the children are gone.
    let bus = Broker::open(&store).unwrap();
    let outbox = bus.topic_with::<u64>("outbox", sender_options()).unwrap();
    let mut local = BTreeSet::new();
    let mut reader = outbox.subscribe(Start::Earliest).unwrap();
    for _ in 0..outbox.retained() {
        let m = reader.recv_timeout(common::WAIT).unwrap();
        assert!(
            local.insert(*m.payload()),
            "{} stored twice locally",
            m.payload()
        );
    }
    let unreported: Vec<u64> = local.difference(&ok).copied().collect();
    assert!(
        unreported.iter().all(|n| in_flight.contains(n)),
        "stored locally but never sent: {unreported:?}"
    );

    // The stream: every acknowledged send, nothing else; each once by id and by payload where
    // the server dedupes by id, else with one id for all its copies.
    let mut ids: BTreeMap<String, u64> = BTreeMap::new();
    let mut remote = BTreeSet::new();
    let stored = server.stored();
    // Copies of a message stored before (0 where the server dedupes by id).
    let mut copies = 0u64;
    // Per key (n % 7), each message's first copy in stream order as they were sent: a restart
    // republishes in order.
    let mut last_of_key: BTreeMap<u64, u64> = BTreeMap::new();
    for (id, payload) in &stored {
        let n: u64 = serde_json::from_slice(payload).expect("JSON numbers on the wire");
        let id = id
            .clone()
            .unwrap_or_else(|| panic!("{n} has no message id"));
        if let Some(first) = ids.insert(id.clone(), n) {
            assert!(
                !S::DEDUPES_BY_ID,
                "message id {id} twice in the stream ({first}, {n})"
            );
            assert_eq!(first, n, "message id {id} on two messages");
        }
        if !remote.insert(n) {
            assert!(!S::DEDUPES_BY_ID, "{n} twice in the stream (id {id})");
            copies += 1;
            continue;
        }
        if let Some(before) = last_of_key.insert(n % 7, n) {
            assert!(
                before < n,
                "key k{}: {n} after {before} in the stream",
                n % 7
            );
        }
    }
    assert_eq!(ids.len(), remote.len(), "one message id per message");
    let lost: Vec<u64> = ok.difference(&remote).copied().collect();
    assert!(
        lost.is_empty(),
        "acknowledged sends missing from the stream: {lost:?}"
    );
    assert_eq!(
        remote, local,
        "the stream holds exactly what the local topic holds"
    );
    let copies_seen = if S::DEDUPES_BY_ID {
        format!("each once in the stream; at least {dropped} republished copies dropped by id")
    } else {
        format!("every one in the queue, plus {copies} republished copies")
    };
    eprintln!(
        "crash-out ({}): {cycles} kill -9 cycles and a clean run in {:.1?}: {} acknowledged \
         sends ({} more stored in flight), {copies_seen}",
        S::NAME,
        started.elapsed(),
        ok.len(),
        unreported.len(),
    );
    if cycles >= EVIDENCE_CYCLES {
        // Where the server dedupes, the copies it dropped; else the copies it stored.
        assert!(
            dropped + copies > 0,
            "no kill landed between a confirm and the local ack in {cycles} cycles"
        );
    }
    drop((reader, outbox));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn inbound_survives_kill_9<S: Server>() {
    let Some(url) = S::probe() else { return };
    let started = Instant::now();
    let cycles = cycles();
    let mut rng = Rng::from_env("EMBUS_BRIDGE_CRASH_SEED");
    let server = S::create(&url, "crash-in");
    let dir = common::fresh_dir(&format!("bridge-crash-in-{}", S::NAME));
    let store = dir.join("in.embus");
    // Even numbers carry their own id, odd ones get the server's (stream/sequence/time on NATS).
    let own_id = |i: u64| i.is_multiple_of(2) || !S::ASSIGNS_IDS;
    for i in 0..PREFILLED {
        let id = own_id(i).then(|| format!("m-{i}"));
        server.publish(id.as_deref(), &serde_json::to_vec(&i).unwrap());
    }
    server.prepare_for_crashes();

    // Kill after 1 to 2/3 of an even share of new records (a batch may overshoot), so that
    // each cycle stores some and the final run has plenty left.
    let share = PREFILLED / (cycles + 1).max(1);
    let mut dropped = 0u64;
    for cycle in 0..cycles {
        let target = 1 + rng.below(share.max(1) * 2 / 3 + 1);
        let what = format!("crash-in cycle {cycle}");
        let mut child = spawn(&server, "crash-in", what.clone(), &store, &[]);
        let before = numbers(&child.expect("READY", SILENCE))[0];
        let (mut forwarded, mut retained, mut killed) = (0u64, before, false);
        while let Some(line) = child.line(SILENCE) {
            let Some(rest) = line.strip_prefix("P ") else {
                continue;
            };
            let n = numbers(rest);
            (forwarded, retained) = (n[0], n[1]);
            let done = retained >= PREFILLED;
            if !killed && (retained - before >= target || done) {
                child.child.kill().unwrap();
                killed = true;
            }
        }
        child.killed();
        // Stored by the bridge, but not new in the topic: redeliveries the dedupe window dropped.
        let here = forwarded.saturating_sub(retained - before);
        dropped += here;
        eprintln!(
            "{what}: killed after storing {} new ({forwarded} stored, {here} duplicates dropped)",
            retained - before
        );
    }
    let mut last = spawn(
        &server,
        "crash-in",
        "crash-in final run".into(),
        &store,
        &[],
    );
    let before = numbers(&last.expect("READY", SILENCE))[0];
    let deadline = Instant::now() + LONG;
    let mut latest = (0, before);
    loop {
        let line = last.line(SILENCE).expect("the final run ended early");
        if let Some(rest) = line.strip_prefix("P ") {
            let n = numbers(rest);
            latest = (n[0], n[1]);
            if latest.1 >= PREFILLED && server.unacked() == 0 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the final run stored {} of {PREFILLED}; {} unacked at the server",
            latest.1,
            server.unacked()
        );
    }
    last.tell_to_stop();
    while let Some(line) = last.line(SILENCE) {
        if let Some(rest) = line.strip_prefix("P ") {
            let n = numbers(rest);
            latest = (n[0], n[1]);
        }
    }
    last.succeed();
    dropped += latest.0.saturating_sub(latest.1 - before);
    let redeliveries = server.deliveries().map_or_else(
        || "redeliveries not reported".to_string(),
        |d| {
            format!(
                "{d} deliveries by the server, {} of them redeliveries",
                d.saturating_sub(PREFILLED)
            )
        },
    );

    // The local topic, read back after the children are gone: each message once.
    let bus = Broker::open(&store).unwrap();
    let inbox = bus.topic_with::<u64>("inbox", dedupe_options()).unwrap();
    assert_eq!(
        inbox.retained(),
        PREFILLED,
        "the topic holds each message once"
    );
    let mut reader = inbox.subscribe(Start::Earliest).unwrap();
    let mut seen = BTreeSet::new();
    // Records stored after a later one: a redelivery comes after what the server sent since.
    let mut late = 0;
    for _ in 0..PREFILLED {
        let m = reader.recv_timeout(common::WAIT).unwrap();
        let n = *m.payload();
        late += usize::from(seen.last().is_some_and(|&last| last > n));
        assert!(seen.insert(n), "{n} stored twice");
        if own_id(n) {
            assert_eq!(m.id(), Some(format!("m-{n}").as_str()), "the id of {n}");
        } else {
            assert!(m.id().is_some(), "{n} has the server's id");
        }
    }
    assert!(
        seen.iter().copied().eq(0..PREFILLED),
        "every message, none invented"
    );
    eprintln!(
        "crash-in ({}): {cycles} kill -9 cycles and a clean run in {:.1?}: {PREFILLED} \
         messages, each once locally; {redeliveries}; the \
         dedupe window dropped at least {dropped} already stored; {late} stored out of \
         stream order",
        S::NAME,
        started.elapsed(),
    );
    assert!(
        dropped > 0 || cycles < EVIDENCE_CYCLES,
        "no kill landed between a local commit and its remote ack ({redeliveries})"
    );
    drop((reader, inbox));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kill cycles per crash test: `EMBUS_BRIDGE_CRASH_CYCLES`, default 20.
fn cycles() -> u64 {
    env_u64("EMBUS_BRIDGE_CRASH_CYCLES").unwrap_or(20)
}

/// An inbound bridge stopped cleanly after a quarter of the stream, and started again with the
/// consumer the bridge created (the defaults are under test): the second run stores the rest
/// within 10 s (the server's ack wait is 30 s), and the topic ends in stream order.
fn inbound_clean_restart<S: Server>() {
    let Some(url) = S::probe() else { return };
    let total = 2_000u64;
    let server = S::create(&url, "restart-in");
    let dir = common::fresh_dir(&format!("bridge-restart-in-{}", S::NAME));
    let store = dir.join("in.embus");
    for i in 0..total {
        server.publish(Some(&format!("m-{i}")), &serde_json::to_vec(&i).unwrap());
    }
    for (run, goal) in [(0, total / 4), (1, total)] {
        let what = format!("restart run {run}");
        let mut child = spawn(&server, "crash-in", what.clone(), &store, &[]);
        child.expect("READY", SILENCE);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stored = 0;
        while stored < goal {
            assert!(
                Instant::now() < deadline,
                "{what}: {stored} of {goal} stored after 10 s; {} unacked at the server",
                server.unacked()
            );
            let line = child.line(SILENCE).expect("the child ended early");
            if let Some(rest) = line.strip_prefix("P ") {
                stored = numbers(rest)[1];
            }
        }
        child.tell_to_stop();
        while child.line(SILENCE).is_some() {}
        child.succeed();
    }
    let bus = Broker::open(&store).unwrap();
    let inbox = bus.topic_with::<u64>("inbox", dedupe_options()).unwrap();
    let mut reader = inbox.subscribe(Start::Earliest).unwrap();
    let order: Vec<u64> = (0..inbox.retained())
        .map(|_| *reader.recv_timeout(common::WAIT).unwrap().payload())
        .collect();
    let first_late = order.windows(2).position(|w| w[0] > w[1]);
    assert_eq!(first_late, None, "stored out of stream order");
    assert_eq!(order, (0..total).collect::<Vec<_>>());
    drop((reader, inbox));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

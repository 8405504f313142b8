//! The one-core stress run (issue #16): producers and consumers of every kind crowded onto one
//! CPU (`taskset -c 0`), where every handoff goes through the scheduler, so a lost wakeup is a
//! hang rather than a delay that the other core hides. A watchdog fails the run if a scenario
//! goes quiet, and each scenario checks counts and checksums.
//!
//! [`one_core_stress`] re-runs this binary's [`one_core_child`] under `taskset -c 0` and watches
//! the lines it prints; the child does nothing in an ordinary run. Without `taskset` the child
//! runs unpinned, with a message, unless `EMBUS_ONE_CORE_REQUIRED` is set (`.ci/run` sets it).
//! `EMBUS_ONE_CORE_N` sets the messages per scenario (default 100,000; `.ci/run` runs 500,000).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use common::process::Proc;
use embus::{
    Broker, Consumer, Message, Overflow, QueueOptions, RecvError, Retention, Start, Topic,
    TopicOptions,
};

const CHILD: &str = "one_core_child";
const CHILD_ENV: &str = "EMBUS_ONE_CORE_CHILD";
const TAG: &str = "one-core:";
/// The scenarios the child reports, in order.
const SCENARIOS: [&str; 5] = ["topic-block", "topic-lag", "queue-nack", "group", "async"];
/// How long a scenario may go without finishing before the run counts as hung.
const QUIET: Duration = Duration::from_secs(120);

/// Messages per scenario.
fn n() -> u64 {
    std::env::var("EMBUS_ONE_CORE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

#[test]
fn one_core_stress() {
    let pinned = std::process::Command::new("taskset")
        .args(["-c", "0", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !pinned {
        assert!(
            std::env::var_os("EMBUS_ONE_CORE_REQUIRED").is_none(),
            "EMBUS_ONE_CORE_REQUIRED is set but `taskset -c 0` does not run (install util-linux)"
        );
        eprintln!("one_core_stress: `taskset` is not available; running unpinned");
    }
    let prefix: &[&str] = if pinned { &["taskset", "-c", "0"] } else { &[] };
    let what = format!("the one-core child ({} messages per scenario)", n());
    let env = [
        (CHILD_ENV, "1".to_string()),
        ("EMBUS_ONE_CORE_N", n().to_string()),
    ];
    let mut child = Proc::spawn_with(prefix, CHILD, TAG, what, &env);
    let cpus = child.expect("cpus", QUIET);
    if pinned {
        assert_eq!(
            cpus, "0",
            "the child may run on CPUs {cpus}, not on CPU 0 alone"
        );
    }
    for scenario in SCENARIOS {
        let report = child.expect(scenario, QUIET);
        eprintln!("one_core_stress: {scenario} {report}");
    }
    child.succeed();
}

/// The child: runs each scenario and reports `<scenario> ok ...` after it. Does nothing in an
/// ordinary test run.
#[test]
fn one_core_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    println!(); // the harness may have printed "test one_core_child ... " without a newline
    let n = n();
    // The CPUs this process may run on, as the kernel says.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cpus = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map_or("unknown", str::trim);
    println!("{TAG}cpus {cpus}");
    report("topic-block", topic_block(n));
    report("topic-lag", topic_lag(n));
    report("queue-nack", queue_nack(n));
    report("group", group(n));
    report("async", async_topic(n));
}

fn report(scenario: &str, detail: String) {
    println!("{TAG}{scenario} ok {detail}");
}

/// The sum of `0..n`.
fn sum_below(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// A topic `name` on `bus` retaining eight messages under `Block`.
fn block_of_eight(bus: &Broker, name: &str) -> Topic<u64> {
    let options = TopicOptions::default()
        .retention(Retention::messages(8))
        .overflow(Overflow::Block);
    bus.topic_with(name, options).unwrap()
}

/// `Block`, eight retained, three subscribers: each gets every offset in order, its own payload.
fn topic_block(n: u64) -> String {
    let bus = Broker::memory();
    let topic = block_of_eight(&bus, "block");
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let mut sub = topic.subscribe(Start::Earliest).unwrap();
            thread::spawn(move || {
                let mut sum = 0;
                for expected in 0..n {
                    let m = sub.recv().unwrap();
                    assert_eq!((m.offset(), *m.payload()), (expected, expected));
                    sum += *m.payload();
                }
                sum
            })
        })
        .collect();
    let producer = topic.producer();
    for i in 0..n {
        producer.send(i).unwrap();
    }
    for reader in readers {
        assert_eq!(reader.join().unwrap(), sum_below(n));
    }
    format!("3 x {n} in order")
}

/// `Lag`, four retained, two subscribers: every offset reaches each once, as a message (in
/// order, its own payload) or in a `Lagged` count.
fn topic_lag(n: u64) -> String {
    let bus = Broker::memory();
    let options = TopicOptions::default().retention(Retention::messages(4));
    let topic = bus.topic_with::<u64>("lag", options).unwrap();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let mut sub = topic.subscribe(Start::Earliest).unwrap();
            thread::spawn(move || {
                let (mut next, mut got, mut skipped) = (0, 0, 0);
                while next < n {
                    match sub.recv() {
                        Ok(m) => {
                            assert_eq!((m.offset(), *m.payload()), (next, next));
                            got += 1;
                            next += 1;
                        }
                        Err(RecvError::Lagged { skipped: k }) => {
                            assert!(k > 0 && next + k <= n, "skipped {k} at {next}");
                            skipped += k;
                            next += k;
                        }
                        Err(e) => panic!("at {next}: {e}"),
                    }
                }
                assert_eq!(got + skipped, n);
                (got, skipped)
            })
        })
        .collect();
    let producer = topic.producer();
    for i in 0..n {
        producer.send(i).unwrap();
    }
    let counts: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    format!("(received, lagged) {counts:?}")
}

/// Hands each message `consumer` receives to `each` until the broker closes; any other error
/// fails the scenario.
fn until_closed(consumer: &mut Consumer<u64>, mut each: impl FnMut(Message<u64>)) {
    loop {
        match consumer.recv() {
            Ok(m) => each(m),
            Err(RecvError::Disconnected) => return,
            Err(e) => panic!("{e}"),
        }
    }
}

/// A queue of 16, two producers, three consumers that nack every seventh delivery once: each
/// message is acked exactly once (counted and summed), and the nacked come back.
fn queue_nack(n: u64) -> String {
    let bus = Broker::memory();
    let queue = bus
        .queue_with::<u64>("jobs", QueueOptions::default().capacity(16))
        .unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let sum = Arc::new(AtomicU64::new(0));
    let redelivered = Arc::new(AtomicU64::new(0));
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let mut consumer = queue.consumer();
            let (acked, sum, redelivered) = (acked.clone(), sum.clone(), redelivered.clone());
            thread::spawn(move || {
                until_closed(&mut consumer, |m| {
                    let payload = *m.payload();
                    if m.delivery_count() == 1 && payload % 7 == 0 {
                        return m.nack().unwrap();
                    }
                    if m.delivery_count() > 1 {
                        redelivered.fetch_add(1, Ordering::Relaxed);
                    }
                    m.ack().unwrap();
                    acked.fetch_add(1, Ordering::Relaxed);
                    sum.fetch_add(payload, Ordering::Relaxed);
                });
            })
        })
        .collect();
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let producer = queue.producer();
            thread::spawn(move || {
                for i in (p..n).step_by(2) {
                    producer.send(i).unwrap();
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    bus.wait_idle(QUIET).unwrap();
    bus.close().unwrap();
    for consumer in consumers {
        consumer.join().unwrap();
    }
    let nacked = n.div_ceil(7);
    assert_eq!(acked.load(Ordering::SeqCst), n, "each message acked once");
    assert_eq!(sum.load(Ordering::SeqCst), sum_below(n));
    assert_eq!(redelivered.load(Ordering::SeqCst), nacked);
    format!("{n} acked, {nacked} nacked and redelivered")
}

/// Three partitions, a group of two members acking each: every message exactly once.
fn group(n: u64) -> String {
    let bus = Broker::memory();
    let topic = bus
        .topic_with::<u64>("keyed", TopicOptions::default().partitions(3))
        .unwrap();
    let members: Vec<_> = (0..2).map(|_| topic.join_group("g").unwrap()).collect();
    let members: Vec<_> = members
        .into_iter()
        .map(|mut member| {
            thread::spawn(move || {
                let mut seen = Vec::new();
                until_closed(&mut member, |m| {
                    seen.push(*m.payload());
                    m.ack().unwrap();
                });
                seen
            })
        })
        .collect();
    let producer = topic.producer();
    for i in 0..n {
        producer
            .send_record(embus::Record::new(i).key(format!("k{}", i % 11)))
            .unwrap();
    }
    bus.wait_idle(QUIET).unwrap();
    bus.close().unwrap();
    let seen: Vec<Vec<u64>> = members.into_iter().map(|m| m.join().unwrap()).collect();
    let all: Vec<u64> = seen.iter().flatten().copied().collect();
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(
        (all.len() as u64, distinct.len() as u64),
        (n, n),
        "exactly once"
    );
    let split: Vec<usize> = seen.iter().map(Vec::len).collect();
    format!("{n} exactly once, split {split:?}")
}

/// Async on two tokio workers (both on the one core): a producer task and two subscriber
/// tasks on a `Block` topic of eight.
fn async_topic(n: u64) -> String {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let bus = Broker::memory();
    let topic = block_of_eight(&bus, "async");
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let mut sub = topic.subscribe(Start::Earliest).unwrap();
            runtime.spawn(async move {
                let mut sum = 0;
                for expected in 0..n {
                    let m = sub.recv_async().await.unwrap();
                    assert_eq!((m.offset(), *m.payload()), (expected, expected));
                    sum += *m.payload();
                }
                sum
            })
        })
        .collect();
    let producer = topic.producer();
    runtime.block_on(async move {
        for i in 0..n {
            producer.send_async(i).await.unwrap();
        }
        for reader in readers {
            assert_eq!(reader.await.unwrap(), sum_below(n));
        }
    });
    format!("2 x {n} in order")
}

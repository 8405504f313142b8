//! Simulated power loss: a storage backend that loses (or tears) every write not yet synced,
//! with the power cut after each sync point of a reference workload in turn.
//!
//! - [`CrashBackend`] keeps the database in memory as two images: `live` (every write and
//!   set_len applied, what the running broker reads) and `durable` (a copy of `live` taken at
//!   each `sync_data`). Told to freeze after sync `K`, it keeps serving the broker from `live`
//!   but `durable` stops advancing: the power was cut after sync `K`, and it records the writes
//!   issued between sync `K` and sync `K + 1` (the ones a real disk may or may not have kept).
//! - The reference workload (a topic with 2 partitions and a queue; keyed sends one by one,
//!   a few batches, queue messages taken and some acked; `Durability::Immediate`) runs once to
//!   count its syncs `S`, then again for every `K` in `0..=S` on a backend frozen at `K`. Each
//!   run records, for every send that returned `Ok`, its receipt and the sync count right after
//!   the `Ok`: a send acknowledged while that count was `<= K` had its commit's fsync inside the
//!   durable image, so it must survive.
//! - Each crash image (the durable image, plus torn variants of it: a random subset of the
//!   unsynced writes applied, some of them only in part, and one variant with every unsynced
//!   write applied but the last one torn in half) is loaded into a fresh backend and reopened.
//!   The torn variants respect redb's stated assumptions: single bytes are written atomically,
//!   and a write never changes bytes outside its range (powersafe overwrite).
//! - Every reopen must succeed (before the store's first complete commit an `Error` naming the
//!   file is accepted too), never panic or hang; every acknowledged send must be at its receipt
//!   offset with its payload (queue messages: unless acked); nothing may be present that was
//!   never sent; per-partition offsets are contiguous from 0; the reopened store takes a send.
//! - All of it twice: with the default two-phase commits (two fsyncs each), and with
//!   `BrokerBuilder::two_phase_commit(false)` (one fsync each, its syncs counted afresh).
//!
//! `EMBUS_POWER_LOSS_TORN=<variants>[,<seed>]` sets how many torn variants each sync point gets
//! (default 3, the first being the deterministic "last write torn in half" one) and the decimal
//! seed of the random ones (default fixed; the summary line prints it): raise the count to search
//! wider, change the seed to search elsewhere.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use common::power::{CrashBackend, Rng, guarded, torn_image, torn_settings};
use embus::{Broker, Receipt, Record, Start, TopicOptions, TryRecvError};

/// Names the store in errors (nothing is written there).
const PATH: &str = "power-loss.embus";
const PARTITIONS: u32 = 2;
/// Single sends in the workload.
const SENDS: usize = 30;
// ---------------------------------------------------------------------------------------------
// The reference workload
// ---------------------------------------------------------------------------------------------

/// A send that returned `Ok`, with the sync count right after it returned.
#[derive(Debug, Clone)]
struct Acked {
    at: Receipt,
    payload: String,
    syncs: u64,
}

#[derive(Debug, Default)]
struct Run {
    /// Whether the broker committed in two phases (the default), or one
    /// (`BrokerBuilder::two_phase_commit(false)`); the reopen does the same.
    two_phase: bool,
    /// Syncs when `open` returned: the store's first complete commit is in by then.
    open_syncs: u64,
    topic: Vec<Acked>,
    queue: Vec<Acked>,
    /// Queue messages acked (they may be gone after the reopen, or not).
    acked: HashSet<u64>,
    /// Syncs in all, close included.
    syncs: u64,
}

fn topic_options() -> TopicOptions {
    TopicOptions::default().partitions(PARTITIONS)
}

fn payload(i: usize) -> String {
    format!("message {i} {}", "x".repeat(i * 7 % 40))
}

fn open_on(backend: CrashBackend, two_phase: bool) -> Result<Broker, embus::Error> {
    Broker::builder()
        .path(PATH)
        .storage_backend(backend)
        .two_phase_commit(two_phase)
        .open()
}

/// Runs the workload on `backend`; every send must succeed (the backend never fails).
fn workload(backend: &CrashBackend, two_phase: bool) -> Run {
    let mut run = Run {
        two_phase,
        ..Run::default()
    };
    let bus = open_on(backend.clone(), two_phase).unwrap_or_else(|e| panic!("workload: open: {e}"));
    run.open_syncs = backend.syncs();
    let topic = bus.topic_with::<String>("t", topic_options()).unwrap();
    let queue = bus.queue::<String>("q").unwrap();
    let (events, jobs) = (topic.producer(), queue.producer());
    let mut worker = queue.consumer();
    let mut held = Vec::new();
    let mut n = 0; // payload counter: every payload is unique
    for i in 0..SENDS {
        if i % 3 == 2 {
            let text = payload(n);
            n += 1;
            let at = jobs
                .send(text.clone())
                .unwrap_or_else(|e| panic!("workload: queue send {i}: {e}"));
            let syncs = backend.syncs();
            run.queue.push(Acked {
                at,
                payload: text.clone(),
                syncs,
            });
            let m = worker
                .recv_timeout(common::WAIT)
                .unwrap_or_else(|e| panic!("workload: queue send {i} not delivered: {e}"));
            assert_eq!(m.payload(), &text, "workload: queue send {i}: delivered");
            if i % 2 == 0 {
                run.acked.insert(m.offset());
                m.ack().unwrap_or_else(|e| panic!("workload: ack {i}: {e}"));
            } else {
                held.push(m);
            }
        } else {
            let text = payload(n);
            n += 1;
            let at = events
                .send_record(Record::new(text.clone()).key(format!("k{}", i % 4)))
                .unwrap_or_else(|e| panic!("workload: topic send {i}: {e}"));
            let syncs = backend.syncs();
            run.topic.push(Acked {
                at,
                payload: text,
                syncs,
            });
        }
        if i == 10 || i == 20 {
            let texts: Vec<String> = (0..3).map(|j| payload(n + j)).collect();
            n += 3;
            let receipts = events
                .send_batch(texts.clone())
                .unwrap_or_else(|e| panic!("workload: topic batch at {i}: {e}"));
            let syncs = backend.syncs();
            assert_eq!(receipts.len(), texts.len(), "workload: batch receipts");
            for (at, payload) in receipts.into_iter().zip(texts) {
                run.topic.push(Acked { at, payload, syncs });
            }
            let texts: Vec<String> = (0..2).map(|j| payload(n + j)).collect();
            n += 2;
            let receipts = jobs
                .send_batch(texts.clone())
                .unwrap_or_else(|e| panic!("workload: queue batch at {i}: {e}"));
            let syncs = backend.syncs();
            assert_eq!(receipts.len(), texts.len(), "workload: batch receipts");
            for (at, text) in receipts.into_iter().zip(texts) {
                run.queue.push(Acked {
                    at,
                    payload: text.clone(),
                    syncs,
                });
                let m = worker
                    .recv_timeout(common::WAIT)
                    .unwrap_or_else(|e| panic!("workload: batch message not delivered: {e}"));
                assert_eq!(m.payload(), &text, "workload: batch message delivered");
                held.push(m);
            }
        }
    }
    drop(held);
    drop((worker, events, jobs, topic, queue));
    bus.close()
        .unwrap_or_else(|e| panic!("workload: close: {e}"));
    run.syncs = backend.syncs();
    run
}

// ---------------------------------------------------------------------------------------------
// Reopening a crash image
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Tally {
    sync_points: u64,
    images: u64,
    opened: u64,
    /// Images from before the first complete commit that failed to open with an `Error`.
    refused_early: u64,
    /// Acknowledged sends that had to be present, and were.
    acked_checked: u64,
    /// Sends not (yet) acknowledged at the crash found in the image anyway.
    unacked_present: u64,
}

/// Reopens `image` (the power cut after sync `k` of `run`) and checks it; `Err` says why not.
fn check_image(image: Vec<u8>, run: &Run, k: u64, tally: &mut Tally) -> Result<(), String> {
    let bus = match open_on(CrashBackend::from_image(image), run.two_phase) {
        Ok(bus) => bus,
        Err(e) if k < run.open_syncs => {
            let message = e.to_string();
            if !message.contains(PATH) {
                return Err(format!("reopen failed without naming the file: {message}"));
            }
            tally.refused_early += 1;
            return Ok(());
        }
        Err(e) => return Err(format!("reopen failed: {e} ({e:?})")),
    };
    tally.opened += 1;
    let topic = bus
        .topic_with::<String>("t", topic_options())
        .map_err(|e| format!("topic after reopen: {e}"))?;
    let queue = bus
        .queue::<String>("q")
        .map_err(|e| format!("queue after reopen: {e}"))?;

    // The topic: contiguous offsets, only what was sent, every acknowledged send.
    let sent: HashMap<(u32, u64), &Acked> = run
        .topic
        .iter()
        .map(|a| ((a.at.partition, a.at.offset), a))
        .collect();
    let mut next = vec![0u64; PARTITIONS as usize];
    let mut found = HashSet::new();
    let total = topic.retained();
    let mut all = topic
        .subscribe(Start::Earliest)
        .map_err(|e| format!("subscribe: {e}"))?;
    for i in 0..total {
        let m = all
            .recv_timeout(common::WAIT)
            .map_err(|e| format!("stored record {i} of {total}: {e}"))?;
        let at = (m.partition(), m.offset());
        if m.offset() != next[at.0 as usize] {
            return Err(format!(
                "partition {} skips or repeats an offset: {} after {}",
                at.0,
                m.offset(),
                next[at.0 as usize]
            ));
        }
        next[at.0 as usize] += 1;
        match sent.get(&at) {
            Some(a) if m.payload() == &a.payload => {
                if a.syncs > k {
                    tally.unacked_present += 1;
                }
            }
            Some(a) => {
                return Err(format!(
                    "record at {at:?} is {:?}, sent {:?}",
                    m.payload(),
                    a.payload
                ));
            }
            None => {
                return Err(format!(
                    "record at {at:?} was never sent: {:?}",
                    m.payload()
                ));
            }
        }
        found.insert(at);
    }
    match all.try_recv() {
        Err(TryRecvError::Empty) => {}
        Ok(m) => {
            return Err(format!(
                "the topic delivers more than it retains: {:?} at {:?}",
                m.payload(),
                (m.partition(), m.offset())
            ));
        }
        Err(e) => return Err(format!("reading the topic: {e}")),
    }
    for a in run.topic.iter().filter(|a| a.syncs <= k) {
        let at = (a.at.partition, a.at.offset);
        if !found.contains(&at) {
            return Err(format!(
                "acknowledged topic send lost: {:?} at {at:?} (acknowledged at sync {})",
                a.payload, a.syncs
            ));
        }
        tally.acked_checked += 1;
    }

    // The queue: only what was sent, once; every acknowledged send not acked.
    let sent: HashMap<u64, &Acked> = run.queue.iter().map(|a| (a.at.offset, a)).collect();
    let mut found = HashSet::new();
    let mut worker = queue.consumer();
    let mut held = Vec::new();
    for _ in 0..queue.len() {
        let m = worker
            .recv_timeout(common::WAIT)
            .map_err(|e| format!("stored queue message: {e}"))?;
        match sent.get(&m.offset()) {
            Some(a) if m.payload() == &a.payload => {
                if a.syncs > k {
                    tally.unacked_present += 1;
                }
            }
            Some(a) => {
                return Err(format!(
                    "queue message {} is {:?}, sent {:?}",
                    m.offset(),
                    m.payload(),
                    a.payload
                ));
            }
            None => {
                return Err(format!(
                    "queue message {} was never sent: {:?}",
                    m.offset(),
                    m.payload()
                ));
            }
        }
        if !found.insert(m.offset()) {
            return Err(format!("queue message {} delivered twice", m.offset()));
        }
        held.push(m);
    }
    match worker.try_recv() {
        Err(TryRecvError::Empty) => {}
        Ok(m) => {
            return Err(format!(
                "the queue delivers more than its length: {} {:?}",
                m.offset(),
                m.payload()
            ));
        }
        Err(e) => return Err(format!("reading the queue: {e}")),
    }
    for a in run.queue.iter().filter(|a| a.syncs <= k) {
        if run.acked.contains(&a.at.offset) {
            continue;
        }
        if !found.contains(&a.at.offset) {
            return Err(format!(
                "acknowledged queue send lost: {} {:?} (acknowledged at sync {})",
                a.at.offset, a.payload, a.syncs
            ));
        }
        tally.acked_checked += 1;
    }

    // The reopened store takes writes again, where the partition left off.
    let r = topic
        .producer()
        .send("after".to_owned())
        .map_err(|e| format!("send after the reopen: {e}"))?;
    if r.offset != next[r.partition as usize] {
        return Err(format!(
            "offsets do not continue: sent at {} in partition {}, expected {}",
            r.offset, r.partition, next[r.partition as usize]
        ));
    }
    drop(held);
    drop((worker, all, topic, queue));
    bus.close()
        .map_err(|e| format!("close after the reopen: {e}"))
}

#[test]
fn power_loss_at_every_sync_point_loses_nothing_acknowledged() {
    cut_power_at_every_sync_point(true);
}

/// One fsync per commit instead of two: a commit the cut interrupted fails its checksums and
/// is rolled back whole, and every commit whose fsync returned is there.
#[test]
fn power_loss_with_one_phase_commits_loses_nothing_acknowledged() {
    cut_power_at_every_sync_point(false);
}

/// What the option is for: a single send costs one fsync, not two.
#[test]
fn a_one_phase_commit_syncs_once() {
    const N: u64 = 20;
    let syncs = |two_phase| {
        let backend = CrashBackend::frozen_after(None);
        let bus = open_on(backend.clone(), two_phase).unwrap();
        let producer = bus.topic::<String>("t").unwrap().producer();
        producer.send(payload(0)).unwrap(); // the declaration's commit
        let before = backend.syncs();
        for i in 0..N as usize {
            producer.send(payload(i)).unwrap();
        }
        backend.syncs() - before
    };
    let (one, two) = (syncs(false), syncs(true));
    eprintln!("{N} sends: {one} fsyncs with one-phase commits, {two} with two");
    // Give or take a sync as the file grows.
    assert!((N..=N + 2).contains(&one), "one fsync per send: {one}");
    assert!(
        (2 * N..=2 * N + 2).contains(&two),
        "two per send by default: {two}"
    );
}

fn cut_power_at_every_sync_point(two_phase: bool) {
    let started = Instant::now();
    let (variants, seed) = torn_settings();
    let reference = guarded(move || workload(&CrashBackend::frozen_after(None), two_phase))
        .unwrap_or_else(|e| panic!("reference run: {e}"));
    let total = reference.syncs;
    assert!(
        total > reference.open_syncs,
        "the workload synced only {total} times"
    );

    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut rng = Rng(seed);
    for k in 0..=total {
        tally.sync_points += 1;
        let backend = CrashBackend::frozen_after(Some(k));
        let run_backend = backend.clone();
        let run = match guarded(move || workload(&run_backend, two_phase)) {
            Ok(run) => run,
            Err(e) => {
                failures.push(format!("crash after sync {k}: workload: {e}"));
                continue;
            }
        };
        let (durable, unsynced) = backend.crash_image();
        let run = Arc::new(run);
        let mut images = vec![("durable image".to_owned(), durable.clone())];
        for v in 0..variants {
            let image = torn_image(&durable, &unsynced, v, &mut rng);
            images.push((
                format!(
                    "torn variant {v} (seed {seed}, {} unsynced operations)",
                    unsynced.len()
                ),
                image,
            ));
        }
        for (what, image) in images {
            tally.images += 1;
            let run = Arc::clone(&run);
            let mut local = Tally::default();
            let result = guarded(move || {
                let result = check_image(image, &run, k, &mut local);
                (result, local)
            });
            let context = format!("crash after sync {k} of {total}, {what}");
            match result {
                Ok((Ok(()), local)) => {
                    tally.opened += local.opened;
                    tally.refused_early += local.refused_early;
                    tally.acked_checked += local.acked_checked;
                    tally.unacked_present += local.unacked_present;
                }
                Ok((Err(e), _)) | Err(e) => failures.push(format!("{context}: {e}")),
            }
        }
    }
    eprintln!(
        "power loss ({}-phase commits): {} sync points tried (0..={total}; the store's first commit is in after \
         sync {}), {} images reopened ({} opened, {} refused with an error before the first \
         commit), {} acknowledged messages checked present, {} not-yet-acknowledged messages \
         found anyway, {variants} torn variants per sync point (seed {seed}), in {:?}",
        if two_phase { "two" } else { "one" },
        tally.sync_points,
        reference.open_syncs,
        tally.images,
        tally.opened,
        tally.refused_early,
        tally.acked_checked,
        tally.unacked_present,
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} crash images failed:\n{}",
        failures.len(),
        tally.images,
        failures.join("\n")
    );
    assert!(
        tally.acked_checked > 0,
        "no acknowledged message was checked"
    );
}

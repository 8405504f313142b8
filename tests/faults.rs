//! Storage faults under a live broker: failing I/O.
//!
//! - [`FaultyBackend`] (`tests/common/faulty.rs`) wraps redb's `FileBackend` and fails the Nth
//!   mutating operation (write, set_len, sync_data) after it is armed: then every later one
//!   (sticky), only that one (transient), or that one as a torn write (half its bytes land) and
//!   every later one. For each N in 1..=40 a broker sends through the fault: the failing send
//!   and every later one must hand their message back with `Error::Poisoned`, nothing may panic
//!   or hang, and the file, reopened with a plain `Broker::open`, must hold every send that
//!   returned `Ok` and nothing else, except perhaps the first failed send: a commit can fail in
//!   its last fsync, after its data reached the file (a few cases do; the summary counts them).
//!   A commit takes about 14 mutating operations, so 1..=40 hits every step of a commit.
//!   Faults while the store is first created leave an error naming the file, never a panic.
//! - A panic on the writer thread fails the sends waiting for it instead of hanging them.
//!
//! Damaged files are `tests/damaged_files.rs`; what follows a failed commit, and the writer
//! thread's own close, `tests/writer.rs`.

mod common;

use std::collections::{HashMap, HashSet};
use std::panic::catch_unwind;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use common::faulty::{
    Faults, Mode, PARTITIONS, broker_thread_panics, faulty_builder, payload, topic_options,
    watch_panics, within,
};
use embus::{Broker, Error, Receipt, Record, SendError, Start, TryRecvError};

// ---------------------------------------------------------------------------------------------
// Sending through a failing backend
// ---------------------------------------------------------------------------------------------

/// Sends before the fault is armed.
const BEFORE: usize = 6;
/// Sends after (enough to reach the 40th mutating operation).
const AFTER: usize = 60;

/// What happened to one case's sends.
#[derive(Debug, Default)]
struct Sends {
    /// Topic sends that returned `Ok`.
    topic: Vec<(Receipt, String)>,
    /// Queue sends that returned `Ok`: id and payload.
    queue: Vec<(u64, String)>,
    /// Queue messages acked (they may be gone after the reopen).
    acked: HashSet<u64>,
    /// Sends that failed, with their payloads handed back.
    failed: Vec<String>,
}

/// Summary counts over all cases of a mode.
#[derive(Debug, Default)]
struct Tally {
    cases: u64,
    ok_sends: usize,
    failed_sends: usize,
    /// Failed sends found in the file after the reopen (a commit whose outcome I/O could not
    /// report: the error came after the data reached the file).
    failed_but_stored: usize,
}

/// Opens a broker on a faulty backend, sends, arms the fault after `BEFORE` sends to fail the
/// `n`th mutating operation from there, keeps sending, then reopens the file plainly and checks
/// it.
fn fault_case(dir: &Path, mode: Mode, n: u64, tally: &mut Tally) {
    let path = dir.join(format!("{mode:?}-{n}.embus"));
    let faults = Faults::new(mode);
    let name = format!("{mode:?} fault at mutating operation {n} after arming");
    let (ctx, run_path, run_faults) = (name.clone(), path.clone(), Arc::clone(&faults));
    let sends = within(common::WAIT * 3, &name, move || {
        send_through_fault(&run_path, &run_faults, n, &ctx)
    });
    assert!(
        faults.failed.load(Ordering::SeqCst) > 0,
        "{name}: the fault never fired ({} mutating operations in all)",
        faults.ops.load(Ordering::SeqCst)
    );
    assert!(!sends.failed.is_empty(), "{name}: no send failed");
    let ctx = name.clone();
    let (sends, failed_but_stored) = within(common::WAIT * 3, &name, move || {
        let stored = check_after_fault(&path, &sends, &ctx);
        (sends, stored)
    });
    tally.cases += 1;
    tally.ok_sends += sends.topic.len() + sends.queue.len();
    tally.failed_sends += sends.failed.len();
    tally.failed_but_stored += failed_but_stored;
}

fn send_through_fault(path: &Path, faults: &Arc<Faults>, n: u64, ctx: &str) -> Sends {
    let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
    let bus = faulty_builder(path, faults)
        .open()
        .unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
    let topic = bus.topic_with::<String>("t", topic_options()).unwrap();
    let queue = bus.queue::<String>("q").unwrap();
    let (events, jobs) = (topic.producer(), queue.producer());
    let mut worker = queue.consumer();
    let mut held = Vec::new();
    let mut sends = Sends::default();
    for i in 0..BEFORE + AFTER {
        if i == BEFORE {
            faults.arm(n);
        }
        let text = payload(i);
        let failure = if i % 2 == 0 {
            let key = format!("k{}", i % 5);
            match events.send_record(Record::new(text.clone()).key(&key)) {
                Ok(receipt) => {
                    sends.topic.push((receipt, text.clone()));
                    None
                }
                Err(SendError::Failed(back, e)) => {
                    assert_eq!(
                        back.payload(),
                        &text,
                        "{ctx}: send {i}: another message back"
                    );
                    assert_eq!(
                        back.key_bytes(),
                        Some(key.as_bytes()),
                        "{ctx}: send {i}: key"
                    );
                    Some(e)
                }
                Err(SendError::Disconnected(_)) => panic!("{ctx}: send {i}: disconnected"),
            }
        } else {
            match jobs.send(text.clone()) {
                Ok(receipt) => {
                    sends.queue.push((receipt.offset, text.clone()));
                    // Take it, and ack every other one (the ack rides a later commit).
                    let m = worker
                        .recv_timeout(common::WAIT)
                        .unwrap_or_else(|e| panic!("{ctx}: send {i} was not delivered: {e}"));
                    assert_eq!(m.payload(), &text, "{ctx}: send {i}: delivered");
                    if i % 4 == 1 {
                        sends.acked.insert(m.offset());
                        let _ = m.ack(); // may fail after the fault; must not panic
                    } else {
                        held.push(m);
                    }
                    None
                }
                Err(SendError::Failed(back, e)) => {
                    assert_eq!(back, text, "{ctx}: send {i}: another message back");
                    Some(e)
                }
                Err(SendError::Disconnected(_)) => panic!("{ctx}: send {i}: disconnected"),
            }
        };
        match failure {
            None => assert!(
                sends.failed.is_empty(),
                "{ctx}: send {i} succeeded after {} failed",
                sends.failed.len()
            ),
            Some(e) => {
                assert!(
                    i >= BEFORE,
                    "{ctx}: send {i} failed before the fault was armed: {e}"
                );
                assert!(
                    matches!(e, Error::Poisoned { .. }),
                    "{ctx}: send {i}: expected Error::Poisoned, got {e:?}"
                );
                let message = e.to_string();
                assert!(
                    message.contains(&file_name),
                    "{ctx}: the error names the file: {message}"
                );
                sends.failed.push(text);
            }
        }
    }
    // Failed sends were never published: the broker shows exactly the sends that succeeded.
    match worker.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!(
            "{ctx}: the queue delivers a message that was not sent: {:?}",
            other.map(|m| m.payload().clone())
        ),
    }
    let mut all = topic.subscribe(Start::Earliest).unwrap();
    let mut visible = Vec::new();
    loop {
        match all.try_recv() {
            Ok(m) => visible.push(((m.partition(), m.offset()), m.payload().clone())),
            Err(TryRecvError::Empty) => break,
            Err(e) => panic!("{ctx}: reading the topic back: {e}"),
        }
    }
    let mut expected: Vec<_> = sends
        .topic
        .iter()
        .map(|(r, text)| ((r.partition, r.offset), text.clone()))
        .collect();
    visible.sort();
    expected.sort();
    assert_eq!(
        visible, expected,
        "{ctx}: the topic shows exactly the sends that succeeded"
    );

    drop(held);
    drop((worker, all, events, jobs, topic, queue));
    match bus.close() {
        Err(Error::Poisoned { cause, .. }) => {
            assert!(!cause.contains("panicked"), "{ctx}: close: {cause}");
        }
        other => panic!("{ctx}: close after a failed commit: expected Poisoned, got {other:?}"),
    }
    sends
}

/// Reopens the file with a plain `Broker::open` and checks every send that returned `Ok` is
/// there; returns how many failed sends were found stored anyway.
fn check_after_fault(path: &Path, sends: &Sends, ctx: &str) -> usize {
    let bus = Broker::open(path).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    let topic = bus.topic_with::<String>("t", topic_options()).unwrap();
    let queue = bus.queue::<String>("q").unwrap();
    // The first failed send may be in the file: its commit can fail after its data reached the
    // file (a failing fsync leaves the outcome unknown). Later ones never reached the writer.
    let first_failed = sends.failed.first();
    let mut failed_but_stored = 0;

    let ok: HashMap<(u32, u64), &str> = sends
        .topic
        .iter()
        .map(|(r, text)| ((r.partition, r.offset), text.as_str()))
        .collect();
    let mut found = HashSet::new();
    let mut next = vec![0; PARTITIONS as usize];
    let total = topic.retained();
    let mut all = topic.subscribe(Start::Earliest).unwrap();
    for i in 0..total {
        let m = all
            .recv_timeout(common::WAIT)
            .unwrap_or_else(|e| panic!("{ctx}: stored record {i} of {total}: {e}"));
        let at = (m.partition(), m.offset());
        assert_eq!(
            m.offset(),
            next[at.0 as usize],
            "{ctx}: partition {} skips or repeats an offset",
            at.0
        );
        next[at.0 as usize] += 1;
        match ok.get(&at) {
            Some(text) => assert_eq!(m.payload(), text, "{ctx}: record at {at:?}"),
            None if first_failed == Some(m.payload()) => failed_but_stored += 1,
            None => panic!("{ctx}: record at {at:?} was never sent: {:?}", m.payload()),
        }
        found.insert(at);
    }
    let lost: Vec<_> = ok.keys().filter(|at| !found.contains(*at)).collect();
    assert!(
        lost.is_empty(),
        "{ctx}: sends that returned Ok are gone: {lost:?}"
    );

    let ok: HashMap<u64, &str> = sends
        .queue
        .iter()
        .map(|(id, t)| (*id, t.as_str()))
        .collect();
    let mut found = HashSet::new();
    let mut worker = queue.consumer();
    let mut held = Vec::new();
    for _ in 0..queue.len() {
        let m = worker
            .recv_timeout(common::WAIT)
            .unwrap_or_else(|e| panic!("{ctx}: stored queue message: {e}"));
        match ok.get(&m.offset()) {
            Some(text) => assert_eq!(m.payload(), text, "{ctx}: queue message {}", m.offset()),
            None if first_failed == Some(m.payload()) => failed_but_stored += 1,
            None => panic!("{ctx}: queue message {} was never sent", m.offset()),
        }
        assert!(
            found.insert(m.offset()),
            "{ctx}: queue message {} twice",
            m.offset()
        );
        held.push(m);
    }
    let lost: Vec<_> = ok
        .keys()
        .filter(|id| !found.contains(*id) && !sends.acked.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{ctx}: queue sends that returned Ok and were not acked are gone: {lost:?}"
    );

    // The reopened store takes writes again.
    let r = topic.producer().send("after".to_owned()).unwrap();
    assert_eq!(
        r.offset, next[r.partition as usize],
        "{ctx}: offsets continue"
    );
    drop(held);
    drop((worker, all, topic, queue));
    bus.close()
        .unwrap_or_else(|e| panic!("{ctx}: close after the reopen: {e}"));
    failed_but_stored
}

fn faults_in(mode: Mode) {
    watch_panics();
    let dir = common::fresh_dir(&format!("faults-{mode:?}").to_lowercase());
    let mut tally = Tally::default();
    for n in 1..=40 {
        fault_case(&dir, mode, n, &mut tally);
    }
    eprintln!(
        "faults ({mode:?}): {} cases, {} sends returned Ok and were found after the reopen, {} \
         failed with their message back ({} of those were in the file anyway)",
        tally.cases, tally.ok_sends, tally.failed_sends, tally.failed_but_stored
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_write_poisons_sends_and_loses_nothing_acknowledged() {
    faults_in(Mode::Sticky);
}

#[test]
fn a_transient_write_failure_poisons_sends_and_loses_nothing_acknowledged() {
    faults_in(Mode::Transient);
}

#[test]
fn a_torn_write_poisons_sends_and_loses_nothing_acknowledged() {
    faults_in(Mode::Torn);
}

/// Faults while the store is created: `open` fails cleanly (or the broker fails its first
/// sends), and whatever is left opens, or is a clear error naming the file.
#[test]
fn a_failure_while_creating_the_store_is_an_error() {
    watch_panics();
    let dir = common::fresh_dir("faults-creating");
    let mut outcomes: HashMap<(&str, &str), usize> = HashMap::new();
    for n in 1..=12 {
        let path = dir.join(format!("create-{n}.embus"));
        let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
        let name = format!("fault at mutating operation {n} of creating the store");
        let ctx = name.clone();
        let outcome = within(common::WAIT * 3, &name, move || {
            let faults = Faults::new(Mode::Sticky);
            faults.arm(n);
            let builder = faulty_builder(&path, &faults);
            let first = match builder.open() {
                Err(e) => {
                    assert!(e.to_string().contains(&file_name), "{ctx}: {e}");
                    "open failed"
                }
                Ok(bus) => {
                    let q = bus.queue::<String>("q").unwrap();
                    let sent = q.producer().send("x".to_owned());
                    if let Err(e) = &sent {
                        assert!(matches!(e, SendError::Failed(..)), "{ctx}: {e:?}");
                    }
                    drop(q);
                    if let Err(Error::Poisoned { cause, .. }) = bus.close() {
                        assert!(!cause.contains("panicked"), "{ctx}: close: {cause}");
                    }
                    if sent.is_ok() {
                        "opened and sent"
                    } else {
                        "opened, send failed"
                    }
                }
            };
            // What is left of the file opens as a store, or is a clear error.
            let second = match catch_unwind(|| Broker::open(&path)) {
                Err(_) => panic!("{ctx}: reopening panicked"),
                Ok(Err(e)) => {
                    // With a storage backend of the caller's, the file is created in place: a
                    // fault before redb wrote its header leaves a file it calls "not a redb
                    // file" (Corrupt). `Broker::open(path)` creates under a temporary name and
                    // renames it into place instead (tests/durable.rs).
                    assert!(matches!(e, Error::Corrupt { .. }), "{ctx}: reopen: {e:?}");
                    assert!(e.to_string().contains(&file_name), "{ctx}: reopen: {e}");
                    "reopen failed"
                }
                Ok(Ok(bus)) => {
                    let q = bus.queue::<String>("q").unwrap();
                    q.producer().send("y".to_owned()).unwrap();
                    drop(q);
                    bus.close().unwrap();
                    "reopened"
                }
            };
            (first, second)
        });
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!("faults while creating the store: {outcomes:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A panic on the writer thread (here from a consumer's waker, which the writer calls when it
/// publishes; redb panics too, on some damaged pages) must fail what waits for the writer, not
/// leave it waiting forever.
#[test]
fn a_panic_on_the_writer_thread_fails_sends_instead_of_hanging() {
    use std::future::Future;
    use std::task::{Context, Wake, Waker};

    struct PanickingWaker;
    impl Wake for PanickingWaker {
        fn wake(self: Arc<Self>) {
            panic!("this waker panics");
        }
    }

    watch_panics();
    let dir = common::fresh_dir("faults-writer-panic");
    let path = dir.join("bus.embus");
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let bus = Broker::open(&path).unwrap();
        let topic = bus.topic::<u32>("t").unwrap();
        let mut reader = topic.subscribe(Start::Earliest).unwrap();
        let waker = Waker::from(Arc::new(PanickingWaker));
        let mut next = std::pin::pin!(reader.recv_async());
        let polled = next.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(polled.is_pending());
        let producer = topic.producer();
        let first = producer.send(1).map_err(|e| format!("{e:?}"));
        let _ = tx.send(format!("first send: {first:?}"));
        let second = producer.send(2).map_err(|e| format!("{e:?}"));
        let _ = tx.send(format!("second send: {second:?}"));
        let closed = bus.close().map_err(|e| e.to_string());
        let _ = tx.send(format!("close: {closed:?}"));
    });
    let mut seen = Vec::new();
    for step in ["first send", "second send", "close"] {
        match rx.recv_timeout(common::WAIT) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "{step} still waiting after {:?} (after: {seen:?}); broker thread panics: {:?}",
                common::WAIT,
                broker_thread_panics()
            ),
        }
    }
    waiter.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

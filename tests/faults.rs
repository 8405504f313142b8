//! Storage faults: failing I/O under a live broker, damaged files, another format version.
//!
//! - [`FaultyBackend`] wraps redb's `FileBackend` and fails the Nth mutating operation (write,
//!   set_len, sync_data) after it is armed: then every later one (sticky), only that one
//!   (transient), or that one as a torn write (half its bytes land) and every later one. For each
//!   N in 1..=40 a broker sends through the fault: the failing send and every later one must
//!   hand their message back with `Error::Poisoned`, nothing may panic or hang, and the file,
//!   reopened with a plain `Broker::open`, must hold every send that returned `Ok` and nothing
//!   else, except perhaps the first failed send: a commit can fail in its last fsync, after its
//!   data reached the file (a few cases do; the summary counts them).
//!   A commit takes about 14 mutating operations, so 1..=40 hits every step of a commit.
//!   Faults while the store is first created leave an error naming the file, never a panic.
//! - A panic on the writer thread fails the sends waiting for it instead of hanging them.
//! - Garbage, empty, truncated, overwritten and bit-flipped files: `Broker::open` returns an
//!   error naming the path, or opens and then never panics, stalls or returns a payload that was
//!   not written where it is read. The overwritten and bit-flipped tests damage a fresh store at
//!   `EMBUS_DAMAGE_POSITIONS` (default 128) evenly spread offsets (raise it to search wider;
//!   the layout varies a little between runs, with how the first commits batch); another flips
//!   bit 0 and bit 4 of every byte in the head (entry count, value ends, keys) of the page
//!   holding a given record.
//! - A store of another format version is `Error::Incompatible`; a redb file that is not a
//!   store is `Error::Corrupt`.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, mpsc};
use std::time::Duration;

use embus::redb::backends::FileBackend;
use embus::redb::{BackendError, StorageBackend, TableDefinition};
use embus::{Broker, Error, Receipt, Record, SendError, Start, TopicOptions, TryRecvError};

/// Runs `f` on its own thread; fails if it takes longer than `limit` (a hang) or panics.
fn within<R: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    try_within(limit, what, f).unwrap_or_else(|e| panic!("{e}"))
}

/// [`within`], returning what went wrong instead of failing.
fn try_within<R: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, String> {
    watch_panics();
    let broker_panics = broker_thread_panics().len();
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let result = catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(result.map_err(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(not a string)");
            let at = LAST_PANIC.with(|p| p.borrow().clone()).unwrap_or_default();
            format!("{message} (at {at})")
        }));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(result)) => {
            handle.join().unwrap();
            Ok(result)
        }
        Ok(Err(panic)) => Err(format!("{what}: panicked: {panic}")),
        Err(_) => {
            let panics = broker_thread_panics().split_off(broker_panics);
            let hint = if panics.is_empty() {
                String::new()
            } else {
                format!(
                    "; meanwhile a broker thread panicked: {}",
                    panics.join(", ")
                )
            };
            Err(format!(
                "{what}: still running after {limit:?} (hung){hint}"
            ))
        }
    }
}

fn broker_thread_panics() -> Vec<String> {
    BROKER_THREAD_PANICS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

thread_local! {
    /// Where this thread last panicked.
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Panics on the broker's own threads (the writer), which no caller sees: where, in order.
static BROKER_THREAD_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Installs (once) a panic hook that records panics on broker threads and remembers where each
/// thread last panicked.
fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let at = info.location().map(ToString::to_string);
            if let Some(name) = thread.name().filter(|n| n.starts_with("embus")) {
                let mut panics = BROKER_THREAD_PANICS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                panics.push(format!("{name} at {}", at.as_deref().unwrap_or("?")));
            }
            LAST_PANIC.with(|p| *p.borrow_mut() = at);
            previous(info);
        }));
    });
}

// ---------------------------------------------------------------------------------------------
// A fault-injecting storage backend
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The Nth mutating operation fails, and every one after it.
    Sticky,
    /// Only the Nth fails; later ones succeed.
    Transient,
    /// The Nth, if a write, writes the first half of its bytes before failing; every later one
    /// fails.
    Torn,
}

/// Shared between the backend (owned by redb) and the test.
#[derive(Debug)]
struct Faults {
    mode: Mode,
    /// Mutating operations so far.
    ops: AtomicU64,
    /// The first failing operation's number; `u64::MAX` while disarmed.
    fail_at: AtomicU64,
    /// Operations failed so far.
    failed: AtomicU64,
    /// While set, `sync_data` waits until it is cleared (holds the writer mid-commit).
    hold: Mutex<bool>,
    released: std::sync::Condvar,
}

impl Faults {
    fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            mode,
            ops: AtomicU64::new(0),
            fail_at: AtomicU64::new(u64::MAX),
            failed: AtomicU64::new(0),
            hold: Mutex::new(false),
            released: std::sync::Condvar::new(),
        })
    }

    /// Holds every `sync_data` from now until `hold_syncs(false)`.
    fn hold_syncs(&self, hold: bool) {
        *self.hold.lock().unwrap() = hold;
        self.released.notify_all();
    }

    fn wait_if_held(&self) {
        let mut held = self.hold.lock().unwrap();
        while *held {
            held = self.released.wait(held).unwrap();
        }
    }

    /// Fails the `n`th mutating operation from now (1: the next one).
    fn arm(&self, n: u64) {
        let now = self.ops.load(Ordering::SeqCst);
        self.fail_at.store(now + n, Ordering::SeqCst);
    }

    /// Counts one mutating operation; `Some(torn)` if it fails.
    fn check(&self) -> Option<bool> {
        let op = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        let at = self.fail_at.load(Ordering::SeqCst);
        let fail = match self.mode {
            Mode::Transient => op == at,
            Mode::Sticky | Mode::Torn => op >= at,
        };
        if !fail {
            return None;
        }
        self.failed.fetch_add(1, Ordering::SeqCst);
        Some(self.mode == Mode::Torn && op == at)
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what}"))
}

#[derive(Debug)]
struct FaultyBackend {
    inner: FileBackend,
    faults: Arc<Faults>,
}

impl FaultyBackend {
    fn new(file: File, faults: Arc<Faults>) -> Self {
        Self {
            inner: FileBackend::new(file).unwrap(),
            faults,
        }
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        match self.faults.check() {
            Some(_) => Err(injected("set_len")),
            None => self.inner.set_len(len),
        }
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.faults.wait_if_held();
        match self.faults.check() {
            Some(_) => Err(injected("sync_data")),
            None => self.inner.sync_data(),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        match self.faults.check() {
            Some(true) => {
                self.inner.write(offset, &data[..data.len() / 2])?;
                Err(injected("torn write"))
            }
            Some(false) => Err(injected("write")),
            None => self.inner.write(offset, data),
        }
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

fn open_file(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Sending through a failing backend
// ---------------------------------------------------------------------------------------------

const PARTITIONS: u32 = 2;
/// Sends before the fault is armed.
const BEFORE: usize = 6;
/// Sends after (enough to reach the 40th mutating operation).
const AFTER: usize = 60;

fn topic_options() -> TopicOptions {
    TopicOptions::default().partitions(PARTITIONS)
}

fn payload(i: usize) -> String {
    format!("message {i} {}", "x".repeat(i % 50))
}

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
    let backend = FaultyBackend::new(open_file(path), Arc::clone(faults));
    let bus = Broker::builder()
        .path(path)
        .storage_backend(backend)
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
            let backend = FaultyBackend::new(open_file(&path), Arc::clone(&faults));
            let builder = Broker::builder().path(&path).storage_backend(backend);
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

/// An ack or nack after a commit failed cannot be stored: it says so (the message comes
/// again after a reopen), instead of returning `Ok` and dropping it.
#[test]
fn acks_after_a_failed_commit_say_they_cannot_be_stored() {
    let dir = common::fresh_dir("faults-ack");
    let path = dir.join("bus.embus");
    let faults = Faults::new(Mode::Sticky);
    let backend = FaultyBackend::new(open_file(&path), Arc::clone(&faults));
    let bus = Broker::builder()
        .path(&path)
        .storage_backend(backend)
        .open()
        .unwrap();
    let q = bus.queue::<String>("q").unwrap();
    let producer = q.producer();
    producer.send("a".to_owned()).unwrap();
    producer.send("b".to_owned()).unwrap();
    let mut worker = q.consumer();
    let a = worker.recv_timeout(common::WAIT).unwrap();
    let b = worker.recv_timeout(common::WAIT).unwrap();
    faults.arm(1);
    let failed = producer.send("c".to_owned()).unwrap_err();
    assert!(
        matches!(failed, SendError::Failed(_, Error::Poisoned { .. })),
        "{failed:?}"
    );
    assert!(matches!(a.ack(), Err(Error::Poisoned { .. })));
    assert!(matches!(b.nack(), Err(Error::Poisoned { .. })));
    drop((worker, q, producer));
    let _ = bus.close();

    let bus = Broker::open(&path).unwrap();
    let q = bus.queue::<String>("q").unwrap();
    assert_eq!(q.len(), 2, "neither settle was stored: both come again");
    drop(q);
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Disk full (every write fails from some point on): after the failed commit poisons the
/// store, the acknowledged messages are intact, and a reader that needs the file (they are
/// below the in-memory tail) reads them or gets `RecvError::Failed`; it never waits silently.
#[test]
fn a_reader_does_not_stall_after_a_failed_commit() {
    use embus::RecvError;
    watch_panics();
    let dir = common::fresh_dir("faults-reader-after-poison");
    let path = dir.join("bus.embus");
    let ctx = "reading after a failed commit";
    within(common::WAIT * 3, ctx, move || {
        let faults = Faults::new(Mode::Sticky);
        let backend = FaultyBackend::new(open_file(&path), Arc::clone(&faults));
        let bus = Broker::builder()
            .path(&path)
            .storage_backend(backend)
            .cache_size(0)
            .open()
            .unwrap();
        let topic = bus.topic::<u64>("t").unwrap();
        let producer = topic.producer();
        // More than a partition keeps in memory (about 8k): the oldest are read from the file.
        for start in (0..10_000).step_by(1000) {
            producer
                .send_batch((start..start + 1000).collect())
                .unwrap();
        }
        faults.arm(1);
        match producer.send(10_000) {
            Err(SendError::Failed(_, Error::Poisoned { .. })) => {}
            other => panic!("{ctx}: expected Poisoned, got {other:?}"),
        }
        let mut sub = topic.subscribe(Start::Earliest).unwrap();
        let mut group = topic.join_group("g").unwrap();
        for reader in [&mut sub, &mut group] {
            match reader.recv() {
                Ok(m) => assert_eq!(*m.payload(), 0, "{ctx}"),
                Err(RecvError::Failed(f)) => {
                    assert_eq!((f.name.as_str(), f.partition, f.offset), ("t", 0, 0));
                    assert!(f.to_string().contains("bus.embus"), "{ctx}: {f}");
                }
                Err(e) => panic!("{ctx}: {e:?}"),
            }
        }
        drop((sub, group, producer, topic));
        assert!(matches!(bus.close(), Err(Error::Poisoned { .. })));
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression: a waker run by the writer thread (it publishes) that drops the last handle made
/// the writer close the broker, flush and join itself: a deadlock, every later send hung.
#[test]
fn dropping_the_last_handle_on_the_writer_thread_does_not_deadlock() {
    use std::future::Future;
    use std::task::{Context, Poll, Wake, Waker};

    /// Holds the last handles; drops them when woken, and says on which thread.
    struct Dropper {
        handles: Mutex<Option<(Broker, embus::Topic<u32>)>>,
        dropped_on: Mutex<mpsc::Sender<Option<String>>>,
    }
    impl Wake for Dropper {
        fn wake(self: Arc<Self>) {
            if let Some(handles) = self.handles.lock().unwrap().take() {
                drop(handles);
                let name = std::thread::current().name().map(str::to_owned);
                let _ = self.dropped_on.lock().unwrap().send(name);
            }
        }
    }

    watch_panics();
    let dir = common::fresh_dir("faults-drop-on-writer");
    let path = dir.join("bus.embus");
    let faults = Faults::new(Mode::Sticky); // never armed: only held
    let backend = FaultyBackend::new(open_file(&path), Arc::clone(&faults));
    let bus = Broker::builder()
        .path(&path)
        .storage_backend(backend)
        .open()
        .unwrap();
    let topic = bus.topic::<u32>("t").unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let producer = topic.producer();
    let (tx, rx) = mpsc::channel();
    let dropper = Arc::new(Dropper {
        handles: Mutex::new(Some((bus, topic))),
        dropped_on: Mutex::new(tx),
    });
    let waker = Waker::from(Arc::clone(&dropper));
    let mut recv = Box::pin(sub.recv_async()); // registered with the dropper until it ends
    assert!(
        recv.as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    // The send's commit waits in its fsync until every other handle is gone, so the writer's
    // publish wakes the dropper, which drops the last handles on the writer thread.
    faults.hold_syncs(true);
    {
        let mut send = std::pin::pin!(producer.send_async(7));
        let polled = send.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending(), "the commit is held");
    } // dropped while its commit is pending: still stored and delivered
    drop(producer);
    faults.hold_syncs(false);
    let dropped_on = rx
        .recv_timeout(common::WAIT)
        .expect("the waker that dropped the last handle never returned: a deadlock");
    assert_eq!(dropped_on.as_deref(), Some("embus-writer"));
    match recv.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(m)) => assert_eq!(*m.payload(), 7),
        other => panic!("the woken receive: {other:?}"),
    }
    drop(recv);
    assert!(
        sub.recv_timeout(common::WAIT)
            .unwrap_err()
            .is_disconnected()
    );
    drop(sub);

    // The writer ends on its own and releases the file: it reopens with the message.
    let deadline = std::time::Instant::now() + common::WAIT;
    let bus = loop {
        match Broker::open(&path) {
            Ok(bus) => break bus,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e; // still held by the ending writer
                std::thread::yield_now();
            }
            Err(e) => panic!("the file was never released: {e}"),
        }
    };
    let mut sub = bus
        .topic::<u32>("t")
        .unwrap()
        .subscribe(Start::Earliest)
        .unwrap();
    assert_eq!(*sub.recv_timeout(common::WAIT).unwrap().payload(), 7);
    drop(sub);
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `close_async` never blocks its executor: with the final commit held in its fsync, the first
/// poll returns `Pending`; the future resolves once the commit is done, and the file is
/// released.
#[test]
fn close_async_does_not_block_on_the_final_commit() {
    use std::future::Future;
    use std::task::{Context, Waker};

    let dir = common::fresh_dir("faults-close-async");
    let path = dir.join("bus.embus");
    let faults = Faults::new(Mode::Sticky); // never armed: only held
    let backend = FaultyBackend::new(open_file(&path), Arc::clone(&faults));
    let bus = Broker::builder()
        .path(&path)
        .storage_backend(backend)
        .open()
        .unwrap();
    let queue = bus.queue::<u32>("q").unwrap();
    queue.producer().send(1).unwrap();
    drop(queue);
    faults.hold_syncs(true);
    let mut closing = Box::pin(bus.close_async());
    let first = within(common::WAIT, "the first poll of close_async", move || {
        let first = closing
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        (first.is_pending(), closing)
    });
    let (pending, closing) = first;
    assert!(pending, "close_async finished with its final commit held");
    faults.hold_syncs(false);
    futures::executor::block_on(closing).unwrap();
    let bus = Broker::open(&path).unwrap(); // released
    assert_eq!(bus.queue::<u32>("q").unwrap().len(), 1);
    bus.close().unwrap();
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

// ---------------------------------------------------------------------------------------------
// Damaged files
// ---------------------------------------------------------------------------------------------

/// A valid store and what it holds.
struct Written {
    bytes: Vec<u8>,
    topic: HashMap<(u32, u64), String>,
    queue: HashMap<u64, String>,
}

fn write_store(path: &Path) -> Written {
    let bus = Broker::open(path).unwrap();
    let topic = bus.topic_with::<String>("t", topic_options()).unwrap();
    let queue = bus.queue::<String>("q").unwrap();
    let mut written = Written {
        bytes: Vec::new(),
        topic: HashMap::new(),
        queue: HashMap::new(),
    };
    // One send per commit, so that the file's layout is the same in every run.
    let events = topic.producer();
    for i in 0..600 {
        let text = format!("t{i}:{}", "y".repeat(100 + i % 97));
        let r = events.send(text.clone()).unwrap();
        written.topic.insert((r.partition, r.offset), text);
    }
    let jobs = queue.producer();
    for i in 0..100 {
        let text = format!("q{i}:{}", "z".repeat(50 + i));
        let r = jobs.send(text.clone()).unwrap();
        written.queue.insert(r.offset, text);
    }
    drop((events, jobs, topic, queue));
    bus.close().unwrap();
    written.bytes = std::fs::read(path).unwrap();
    written
}

/// Opens a damaged file: an error naming it, or a store that reads back only what was written.
/// Returns what happened, for the summary.
fn open_damaged(path: &Path, written: Option<&Written>, what: &str) -> &'static str {
    let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
    let opened = catch_unwind(AssertUnwindSafe(|| Broker::open(path)));
    let bus = match opened {
        Err(_) => panic!("{what}: Broker::open panicked"),
        Ok(Err(e)) => {
            let message = e.to_string();
            assert!(
                message.contains(&file_name),
                "{what}: the error does not name the file: {message}"
            );
            // A flip inside the stored format version reads as another version.
            assert!(
                matches!(
                    e,
                    Error::Corrupt { .. } | Error::Storage { .. } | Error::Incompatible { .. }
                ),
                "{what}: {e:?}"
            );
            return "error";
        }
        Ok(Ok(bus)) => bus,
    };
    let read = catch_unwind(AssertUnwindSafe(|| read_damaged(&bus, written, what)));
    if let Err(panic) = read {
        std::panic::resume_unwind(panic);
    }
    let _ = bus.close(); // may report the damage; must not panic
    "opened"
}

fn read_damaged(bus: &Broker, written: Option<&Written>, what: &str) {
    let (no_topic, no_queue) = (HashMap::new(), HashMap::new());
    let (topic_written, queue_written) = match written {
        Some(w) => (&w.topic, &w.queue),
        None => (&no_topic, &no_queue),
    };
    // After a reopen every retained record is read from the file as it is asked for, so
    // `try_recv` has each one at once: a record, or a report that it is damaged.
    if let Ok(topic) = bus.topic_with::<String>("t", topic_options()) {
        let mut all = topic.subscribe(Start::Earliest).unwrap();
        let mut retained = 0;
        for p in 0..PARTITIONS {
            retained += topic
                .offsets(p)
                .map_or(0, |r| r.end.saturating_sub(r.start));
        }
        let mut accounted = 0;
        while accounted < retained {
            match all.try_recv() {
                Ok(m) => {
                    let at = (m.partition(), m.offset());
                    let text = topic_written.get(&at);
                    assert_eq!(
                        Some(m.payload()),
                        text,
                        "{what}: the topic returned a payload at {at:?} that was not written there"
                    );
                    accounted += 1;
                }
                Err(TryRecvError::Lagged { skipped }) => accounted += skipped,
                // A damaged record: reported with where it is, and the reader moves past it.
                Err(TryRecvError::Undecodable(u)) => {
                    assert_eq!(u.name, "t", "{what}");
                    assert!(u.partition < PARTITIONS, "{what}: {u}");
                    accounted += 1;
                }
                Err(e) => panic!(
                    "{what}: reading the topic: {e} after {accounted} of {retained} retained \
                     offsets (a reader stalls)"
                ),
            }
        }
    }
    if let Ok(queue) = bus.queue::<String>("q") {
        let mut worker = queue.consumer();
        let mut held = Vec::new();
        let mut ids = HashSet::new();
        for i in 0..queue.len() {
            let m = worker.try_recv().unwrap_or_else(|e| {
                panic!(
                    "{what}: reading the queue: {e} after {i} of {}",
                    queue.len()
                )
            });
            assert_eq!(
                Some(m.payload()),
                queue_written.get(&m.offset()),
                "{what}: the queue returned a payload under id {} that was not written",
                m.offset()
            );
            assert!(
                ids.insert(m.offset()),
                "{what}: queue message {} twice",
                m.offset()
            );
            held.push(m);
        }
    }
}

/// Random bytes (xorshift64*), so a failure repeats.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[test]
fn garbage_files_are_an_error_naming_the_path() {
    let dir = common::fresh_dir("faults-garbage");
    for (i, len) in [1, 17, 512, 4096, 4097, 65_536, 1 << 20]
        .into_iter()
        .enumerate()
    {
        let path = dir.join(format!("garbage-{len}.embus"));
        std::fs::write(&path, noise(i as u64 + 1, len)).unwrap();
        let what = format!("{len} random bytes");
        let outcome = within(common::WAIT, &what.clone(), move || {
            open_damaged(&path, None, &what)
        });
        assert_eq!(outcome, "error", "{len} random bytes opened as a store");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_empty_file_opens_as_a_new_store() {
    let dir = common::fresh_dir("faults-empty");
    let path = dir.join("empty.embus");
    File::create(&path).unwrap();
    let bus = Broker::open(&path).unwrap();
    let q = bus.queue::<String>("q").unwrap();
    q.producer().send("first".to_owned()).unwrap();
    bus.close().unwrap();
    let bus = Broker::open(&path).unwrap();
    let m = bus
        .queue::<String>("q")
        .unwrap()
        .consumer()
        .recv_timeout(common::WAIT)
        .unwrap();
    assert_eq!(m.payload(), "first");
    drop(m);
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Damage `cases` (what, bytes) of the store `written` and open each: see [`open_damaged`].
/// Every case runs; the failures are listed together.
fn damaged(test: &str, dir: &Path, written: &Arc<Written>, cases: Vec<(String, Vec<u8>)>) {
    let mut outcomes: HashMap<&str, usize> = HashMap::new();
    let mut failures = Vec::new();
    let count = cases.len();
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let path = dir.join(format!("damaged-{i}.embus"));
        std::fs::write(&path, bytes).unwrap();
        let written = Arc::clone(written);
        let run = what.clone();
        match try_within(common::WAIT, &what, move || {
            open_damaged(&path, Some(&written), &run)
        }) {
            Ok(outcome) => *outcomes.entry(outcome).or_default() += 1,
            Err(failure) => failures.push(format!("damaged-{i}.embus: {failure}")),
        }
    }
    eprintln!(
        "{test} ({count} files): {outcomes:?}, {} failed",
        failures.len()
    );
    // Grouped by kind (where it panicked, or how it failed), with a few examples each.
    let mut kinds: Vec<(String, Vec<String>)> = Vec::new();
    for failure in &failures {
        let kind = kind_of(failure);
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, examples)) => examples.push(failure.clone()),
            None => kinds.push((kind, vec![failure.clone()])),
        }
    }
    let report: Vec<String> = kinds
        .iter()
        .map(|(kind, examples)| {
            let shown: Vec<&str> = examples.iter().take(3).map(String::as_str).collect();
            format!(
                "{} x {kind}, e.g.\n    {}",
                examples.len(),
                shown.join("\n    ")
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {count} damaged files failed (left in {}):\n{}",
        failures.len(),
        dir.display(),
        report.join("\n")
    );
}

/// A failure's kind: where it panicked, a hang, or the failed check with its numbers blanked.
fn kind_of(failure: &str) -> String {
    if let Some(at) = failure.rfind("(at ") {
        return format!("panic {}", &failure[at..]);
    }
    if failure.contains("(hung)") {
        return "hang".to_owned();
    }
    let check = failure.split_once("panicked: ").map_or(failure, |(_, c)| c);
    let first = check.lines().next().unwrap_or(check);
    first
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
}

/// Where to damage a file of `len` bytes: `EMBUS_DAMAGE_POSITIONS` (default 128) evenly spread
/// offsets.
fn positions(len: usize) -> impl Iterator<Item = usize> {
    let n: usize = std::env::var("EMBUS_DAMAGE_POSITIONS")
        .ok()
        .map(|v| v.parse().expect("EMBUS_DAMAGE_POSITIONS is a number"))
        .unwrap_or(128);
    (1..n).map(move |k| len * k / n)
}

#[test]
fn truncated_stores_are_an_error_or_read_back_only_what_was_written() {
    let dir = common::fresh_dir("faults-truncated");
    let written = Arc::new(write_store(&dir.join("valid.embus")));
    let len = written.bytes.len();
    let mut cases = Vec::new();
    for (num, den) in [(1, 2), (1, 4), (3, 4), (1, 16), (15, 16)] {
        let cut = len * num / den;
        let what = format!("truncated to {cut} of {len} bytes");
        cases.push((what, written.bytes[..cut].to_vec()));
    }
    let what = "truncated by one byte".to_owned();
    cases.push((what, written.bytes[..len - 1].to_vec()));
    damaged("truncated", &dir, &written, cases);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn overwritten_stores_are_an_error_or_read_back_only_what_was_written() {
    let dir = common::fresh_dir("faults-overwritten");
    let written = Arc::new(write_store(&dir.join("valid.embus")));
    let len = written.bytes.len();
    let mut cases = Vec::new();
    for (k, at) in positions(len).enumerate() {
        let mut bytes = written.bytes.clone();
        let end = (at + 512).min(len);
        bytes[at..end].copy_from_slice(&noise(k as u64 + 1, end - at));
        cases.push((format!("512 random bytes written at {at} of {len}"), bytes));
    }
    let mut header = written.bytes.clone();
    header[..512].copy_from_slice(&noise(99, 512));
    cases.push(("the first 512 bytes overwritten".into(), header));
    damaged("overwritten", &dir, &written, cases);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bit_flipped_stores_are_an_error_or_read_back_only_what_was_written() {
    let dir = common::fresh_dir("faults-bit-flipped");
    let written = Arc::new(write_store(&dir.join("valid.embus")));
    let len = written.bytes.len();
    let mut cases = Vec::new();
    for at in positions(len) {
        let mut bytes = written.bytes.clone();
        bytes[at] ^= 0x10;
        cases.push((format!("one bit flipped at {at} of {len}"), bytes));
    }
    damaged("bit-flipped", &dir, &written, cases);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Flips one bit at a time in the head of the page holding one topic record: the page's type and
/// entry count, the ends of its values and the keys (offsets) of its rows. Records carry a
/// checksum, but the structure around them is redb's, read without one.
#[test]
fn bit_flips_in_a_record_page_are_an_error_or_read_back_only_what_was_written() {
    const PAGE: usize = 4096; // redb's default page size
    let dir = common::fresh_dir("faults-record-page");
    let written = Arc::new(write_store(&dir.join("valid.embus")));
    let bytes = &written.bytes;
    let (&(partition, offset), needle) = written
        .topic
        .iter()
        .find(|(_, text)| text.starts_with("t300:"))
        .unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("the record is in the file");
    let page = at / PAGE * PAGE;
    // A redb 4 leaf page with fixed-width keys: type 1, a byte, u16 entry count, then a u32
    // value end and a u64 key per entry.
    assert_eq!(
        bytes[page], 1,
        "record {partition}/{offset} is not in a leaf page"
    );
    let entries = usize::from(u16::from_le_bytes([bytes[page + 2], bytes[page + 3]]));
    let head = 4 + entries * (4 + 8);
    assert!(head < PAGE, "{entries} entries");
    let mut cases = Vec::new();
    for i in page..page + head {
        for bit in [0x01, 0x10] {
            let mut damaged = bytes.clone();
            damaged[i] ^= bit;
            let what = format!(
                "bit {bit:#04x} flipped at {} of the page at {page} holding {partition}/{offset}",
                i - page
            );
            cases.push((what, damaged));
        }
    }
    damaged("record page", &dir, &written, cases);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Format versions
// ---------------------------------------------------------------------------------------------

#[test]
fn a_store_of_another_format_version_is_incompatible() {
    let dir = common::fresh_dir("faults-version");
    let path = dir.join("future.embus");
    {
        let bus = Broker::open(&path).unwrap();
        bus.queue::<String>("q")
            .unwrap()
            .producer()
            .send("kept".to_owned())
            .unwrap();
        bus.close().unwrap();
    }
    {
        let db = embus::redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let meta: TableDefinition<&str, u64> = TableDefinition::new("embus.meta");
            let mut table = txn.open_table(meta).unwrap();
            assert_eq!(
                table.insert("format", 99).unwrap().map(|v| v.value()),
                Some(3)
            );
        }
        txn.commit().unwrap();
    }
    let err = Broker::open(&path).unwrap_err();
    match &err {
        Error::Incompatible {
            found,
            expected,
            path: named,
        } => {
            assert_eq!(*found, 99);
            assert_eq!(*expected, 3);
            assert_eq!(named, &path);
        }
        other => panic!("expected Error::Incompatible, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("future.embus") && message.contains("99"),
        "{message}"
    );
    // Refusing it changed nothing: back at version 3 it opens with its message.
    {
        let db = embus::redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<&str, u64>::new("embus.meta"))
            .unwrap()
            .insert("format", 3)
            .unwrap();
        txn.commit().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let m = bus
        .queue::<String>("q")
        .unwrap()
        .consumer()
        .recv_timeout(common::WAIT)
        .unwrap();
    assert_eq!(m.payload(), "kept");
    drop(m);
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_redb_file_that_is_not_a_store_is_corrupt() {
    let dir = common::fresh_dir("faults-foreign");
    let path = dir.join("foreign.redb");
    {
        let db = embus::redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<u64, u64>::new("something"))
            .unwrap()
            .insert(1, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Broker::open(&path).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("foreign.redb"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

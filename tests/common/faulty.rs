//! The one fault-injecting storage backend of the tests ([`FaultyBackend`], switched by its
//! [`Faults`]: fails, tears or holds redb's I/O, fills the disk, fails or damages reads) and
//! the watchdogs the fault tests run under (a hang or a panic on a broker thread fails the test).

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, mpsc};
use std::time::Duration;

use embus::redb::backends::FileBackend;
use embus::redb::{BackendError, StorageBackend};

/// Runs `f` on its own thread; fails if it takes longer than `limit` (a hang) or panics.
pub fn within<R: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    try_within(limit, what, f).unwrap_or_else(|e| panic!("{e}"))
}

/// [`within`], returning what went wrong instead of failing.
pub fn try_within<R: Send + 'static>(
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

pub fn broker_thread_panics() -> Vec<String> {
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
pub static BROKER_THREAD_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Installs (once) a panic hook that records panics on broker threads and remembers where each
/// thread last panicked.
pub fn watch_panics() {
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
pub enum Mode {
    /// The Nth mutating operation fails, and every one after it.
    Sticky,
    /// Only the Nth fails; later ones succeed.
    Transient,
    /// The Nth, if a write, writes the first half of its bytes before failing; every later one
    /// fails.
    Torn,
}

/// What the test controls in a [`FaultyBackend`]: shared between the backend (owned by redb)
/// and the test. Every switch starts off.
#[derive(Debug)]
pub struct Faults {
    pub mode: Mode,
    /// Mutating operations so far.
    pub ops: AtomicU64,
    /// The first failing operation's number; `u64::MAX` while disarmed.
    pub fail_at: AtomicU64,
    /// Operations failed so far.
    pub failed: AtomicU64,
    /// `sync_data` calls so far.
    pub syncs: AtomicU64,
    /// While set, `sync_data` waits until it is cleared (holds the writer mid-commit).
    pub hold: Mutex<bool>,
    pub released: std::sync::Condvar,
    /// Writes, `set_len` and fsyncs fail while set (a full disk).
    pub full: AtomicBool,
    /// Reads still to fail (`u64::MAX`: every one).
    pub failing_reads: AtomicU64,
    /// Reads failed so far.
    pub failed_reads: AtomicU64,
    /// The next read holding `pattern.0` has it replaced by `pattern.1` (same length) while
    /// set; that disarms it (a page redb copies on write would keep the damage otherwise).
    pub tamper: AtomicBool,
    /// What `tamper` replaces, and with what; empty (from [`Faults::new`]): nothing.
    pub pattern: (Vec<u8>, Vec<u8>),
}

impl Faults {
    /// Controls failing the Nth mutating operation as `mode` says (once [`Faults::arm`]ed).
    pub fn new(mode: Mode) -> Arc<Self> {
        Self::build(mode, (Vec::new(), Vec::new()))
    }

    /// Controls whose `tamper` switch replaces `from` with `to` in what a read returns; the
    /// fail-at-N mode is [`Mode::Sticky`] (disarmed until [`Faults::arm`]).
    pub fn tampering(from: &[u8], to: &[u8]) -> Arc<Self> {
        assert_eq!(from.len(), to.len());
        Self::build(Mode::Sticky, (from.to_vec(), to.to_vec()))
    }

    fn build(mode: Mode, pattern: (Vec<u8>, Vec<u8>)) -> Arc<Self> {
        Arc::new(Self {
            mode,
            ops: AtomicU64::new(0),
            fail_at: AtomicU64::new(u64::MAX),
            failed: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            hold: Mutex::new(false),
            released: std::sync::Condvar::new(),
            full: AtomicBool::new(false),
            failing_reads: AtomicU64::new(0),
            failed_reads: AtomicU64::new(0),
            tamper: AtomicBool::new(false),
            pattern,
        })
    }

    /// Holds every `sync_data` from now until `hold_syncs(false)`.
    pub fn hold_syncs(&self, hold: bool) {
        *self.hold.lock().unwrap() = hold;
        self.released.notify_all();
    }

    pub fn wait_if_held(&self) {
        let mut held = self.hold.lock().unwrap();
        while *held {
            held = self.released.wait(held).unwrap();
        }
    }

    /// Fails the `n`th mutating operation from now (1: the next one).
    pub fn arm(&self, n: u64) {
        let now = self.ops.load(Ordering::SeqCst);
        self.fail_at.store(now + n, Ordering::SeqCst);
    }

    /// Counts one mutating operation; `Some(torn)` if it fails.
    pub fn check(&self) -> Option<bool> {
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

    /// Fails a mutating operation while the disk is `full`.
    fn check_full(&self) -> Result<(), io::Error> {
        if self.full.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected fault: disk full",
            ));
        }
        Ok(())
    }

    /// Counts one read; `true` if it fails (`failing_reads`).
    fn read_fails(&self) -> bool {
        let left = self.failing_reads.load(Ordering::SeqCst);
        if left == 0 {
            return false;
        }
        if left != u64::MAX {
            self.failing_reads.fetch_sub(1, Ordering::SeqCst);
        }
        self.failed_reads.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Damages `out` as the `tamper` switch says.
    fn tamper_with(&self, out: &mut [u8]) {
        let (from, to) = &self.pattern;
        if from.is_empty() {
            return;
        }
        let found = || out.windows(from.len()).any(|w| w == from);
        if self.tamper.load(Ordering::SeqCst)
            && found()
            && self.tamper.swap(false, Ordering::SeqCst)
        {
            let mut at = 0;
            while let Some(i) = out[at..].windows(from.len()).position(|w| w == from) {
                out[at + i..at + i + to.len()].copy_from_slice(to);
                at += i + to.len();
            }
        }
    }
}

pub fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what}"))
}

/// redb's `FileBackend` with the faults its [`Faults`] switch on: the Nth mutating operation
/// failing (sticky, transient or torn), fsyncs held, a full disk, failing reads, damaged reads.
#[derive(Debug)]
pub struct FaultyBackend {
    pub inner: FileBackend,
    pub faults: Arc<Faults>,
}

impl FaultyBackend {
    pub fn new(file: File, faults: Arc<Faults>) -> Self {
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
        if self.faults.read_fails() {
            return Err(injected("read"));
        }
        self.inner.read(offset, out)?;
        self.faults.tamper_with(out);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.faults.check_full()?;
        match self.faults.check() {
            Some(_) => Err(injected("set_len")),
            None => self.inner.set_len(len),
        }
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        self.faults.wait_if_held();
        self.faults.check_full()?;
        match self.faults.check() {
            Some(_) => Err(injected("sync_data")),
            None => self.inner.sync_data(),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.faults.check_full()?;
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

pub fn open_file(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

/// The partitions of the fault tests' topic.
pub const PARTITIONS: u32 = 2;

/// The fault tests' topic options.
pub fn topic_options() -> embus::TopicOptions {
    embus::TopicOptions::default().partitions(PARTITIONS)
}

/// The fault tests' payloads: of varied lengths, saying which they are.
pub fn payload(i: usize) -> String {
    format!("message {i} {}", "x".repeat(i % 50))
}

/// A broker builder on `path`, through a [`FaultyBackend`] that `faults` drives.
pub fn faulty_builder(path: &Path, faults: &Arc<Faults>) -> embus::BrokerBuilder {
    let backend = FaultyBackend::new(open_file(path), Arc::clone(faults));
    embus::Broker::builder().path(path).storage_backend(backend)
}

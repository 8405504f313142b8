//! Reads below a partition's in-memory tail (`Store::load`) that fail: the reader gets
//! `RecvError::Failed` after the engine's retries, skips nothing, and never waits silently
//! (after a failed commit too: `tests/faults.rs`). (redb refuses every read
//! after one I/O error until the file is reopened, so a transient failure cannot be made
//! here: the engine's unit tests, `src/engine/topic/tests.rs`, cover retrying.)
//!
//! The backend here fails reads on demand; redb's page cache is kept tiny so that cold reads
//! reach it.

mod common;

use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use embus::redb::backends::FileBackend;
use embus::redb::{BackendError, StorageBackend};
use embus::{Broker, Error, RecvError, RecvTimeoutError, Start, Topic};

/// Messages sent before the reads fail: more than a partition keeps in memory (about 8k), so
/// the oldest are read back from the file.
const SENT: u64 = 10_000;

#[derive(Debug, Default)]
struct Switches {
    /// Reads still to fail (`u64::MAX`: every one).
    failing_reads: AtomicU64,
    /// Reads failed so far.
    failed_reads: AtomicU64,
}

#[derive(Debug)]
struct Flaky {
    inner: FileBackend,
    switches: Arc<Switches>,
}

impl StorageBackend for Flaky {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let s = &self.switches;
        let left = s.failing_reads.load(Ordering::SeqCst);
        if left > 0 {
            if left != u64::MAX {
                s.failing_reads.fetch_sub(1, Ordering::SeqCst);
            }
            s.failed_reads.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other("injected: read failed"));
        }
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
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

/// A durable broker on a [`Flaky`] backend, with topic `t` holding `SENT` messages `0..SENT`.
fn filled(path: &Path) -> (Broker, Topic<u64>, Arc<Switches>) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    let switches = Arc::new(Switches::default());
    let backend = Flaky {
        inner: FileBackend::new(file).unwrap(),
        switches: Arc::clone(&switches),
    };
    let bus = Broker::builder()
        .path(path)
        .storage_backend(backend)
        .cache_size(0)
        .open()
        .unwrap();
    let topic = bus.topic::<u64>("t").unwrap();
    let producer = topic.producer();
    for chunk in (0..SENT).collect::<Vec<_>>().chunks(1000) {
        producer.send_batch(chunk.to_vec()).unwrap();
    }
    (bus, topic, switches)
}

/// Runs `f` on a thread of its own and fails the test if it does not finish within `limit`
/// (a hang) instead of hanging the test binary.
fn within<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still waiting after {limit:?}: a reader hangs"))
}

#[test]
fn a_failing_read_is_returned_to_the_reader_not_a_hang() {
    let dir = common::fresh_dir("cold-lasting");
    let (bus, topic, switches) = filled(&dir.join("bus.embus"));
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let mut group = topic.join_group("g").unwrap();
    switches.failing_reads.store(u64::MAX, Ordering::SeqCst);
    let (sub_err, group_err, mut sub, group) = within(common::WAIT, move || {
        let a = sub.recv().map(|m| *m.payload());
        let b = group.recv_timeout(common::WAIT).map(|m| *m.payload());
        (a, b, sub, group)
    });
    match sub_err {
        Err(RecvError::Failed(f)) => {
            assert_eq!((f.name.as_str(), f.partition, f.offset), ("t", 0, 0));
            // The first failure is the I/O error; redb refuses every read after it until a
            // reopen, which the store reports as `Poisoned` (the retries see that).
            assert!(
                matches!(*f.error, Error::Storage { .. } | Error::Poisoned { .. }),
                "{:?}",
                f.error
            );
            let text = f.to_string();
            assert!(text.contains("`t`") && text.contains("0/0"), "{text}");
        }
        other => panic!("expected RecvError::Failed, got {other:?}"),
    }
    match group_err {
        Err(RecvTimeoutError::Failed(f)) => assert_eq!(f.offset, 0),
        other => panic!("expected RecvTimeoutError::Failed, got {other:?}"),
    }
    // Nothing was skipped: each receive tries again from the same message (redb refuses reads
    // after an I/O error until the file is reopened, so the error comes again).
    switches.failing_reads.store(0, Ordering::SeqCst);
    let (again, sub, group) = within(common::WAIT, move || {
        let again = sub.recv().map(|m| *m.payload());
        (again, sub, group)
    });
    match again {
        Err(RecvError::Failed(f)) => assert_eq!(f.offset, 0),
        other => panic!("expected RecvError::Failed again, got {other:?}"),
    }
    // A task cannot park until its next attempt: the broker's timer wakes it for each one.
    let mut late = topic.subscribe(Start::Earliest).unwrap();
    let (from_task, late) = within(common::WAIT, move || {
        let got = futures::executor::block_on(late.recv_async()).map(|m| *m.payload());
        (got, late)
    });
    match from_task {
        Err(RecvError::Failed(f)) => assert_eq!(f.offset, 0),
        other => panic!("expected RecvError::Failed from recv_async, got {other:?}"),
    }
    drop(late);
    drop((sub, group, topic));
    let _ = bus.close();
    // Reopened, the file reads again: both readers would start where they were.
    let bus = Broker::open(dir.join("bus.embus")).unwrap();
    let topic = bus.topic::<u64>("t").unwrap();
    let mut group = topic.join_group("g").unwrap();
    let m = group.recv_timeout(common::WAIT).unwrap();
    assert_eq!(*m.payload(), 0, "the group skipped nothing");
    drop((m, group, topic));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

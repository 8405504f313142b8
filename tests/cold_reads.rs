//! Reads below a partition's in-memory tail (`Store::load`) that fail: the reader gets
//! `RecvError::Failed` after the engine's retries, skips nothing, and never waits silently
//! (after a failed commit too: `tests/faults.rs`). (redb refuses every read
//! after one I/O error until the file is reopened, so a transient failure cannot be made
//! here: the engine's unit tests, `src/engine/topic/tests.rs`, cover retrying.)
//!
//! [`FaultyBackend`] (`tests/common/faulty.rs`) fails reads on demand here; redb's page cache
//! is kept tiny so that cold reads reach it.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::faulty::{Faults, Mode, faulty_builder};
use embus::{Broker, Error, RecvError, RecvTimeoutError, Start, Topic};

/// Messages sent before the reads fail: more than a partition keeps in memory (about 8k), so
/// the oldest are read back from the file.
const SENT: u64 = 10_000;

/// A durable broker on a [`FaultyBackend`], with topic `t` holding `SENT` messages `0..SENT`.
fn filled(path: &Path) -> (Broker, Topic<u64>, Arc<Faults>) {
    let faults = Faults::new(Mode::Sticky); // never armed: only its reads fail
    let bus = faulty_builder(path, &faults).cache_size(0).open().unwrap();
    let topic = bus.topic::<u64>("t").unwrap();
    let producer = topic.producer();
    for chunk in (0..SENT).collect::<Vec<_>>().chunks(1000) {
        producer.send_batch(chunk.to_vec()).unwrap();
    }
    (bus, topic, faults)
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
    let (bus, topic, faults) = filled(&dir.join("bus.embus"));
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let mut group = topic.join_group("g").unwrap();
    faults.failing_reads.store(u64::MAX, Ordering::SeqCst);
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
    faults.failing_reads.store(0, Ordering::SeqCst);
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

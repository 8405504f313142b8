//! The writer's retention trims, against sinks the tests control: a commit trims a log's file
//! rows only to a floor whose causes it holds.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use redb::ReadableTable;

use super::schema::records;
use super::{DurableStore, Options};
use crate::error::Error;
use crate::options::Durability;
use crate::store::{Append, Commit, LogId, Sink, Stager, Store};

type Hook = Box<dyn FnOnce() + Send>;

/// A log whose floor the test sets, with hooks run when the writer reads its floor or
/// publishes into it.
struct FakeSink {
    log: LogId,
    floor: AtomicU64,
    on_floor: Mutex<Option<Hook>>,
    on_publish: Mutex<Option<Hook>>,
}

impl FakeSink {
    fn new(topic: &str) -> Arc<Self> {
        Arc::new(Self {
            log: LogId::partition(topic, 0),
            floor: AtomicU64::new(0),
            on_floor: Mutex::new(None),
            on_publish: Mutex::new(None),
        })
    }
}

impl Sink for FakeSink {
    fn log(&self) -> &LogId {
        &self.log
    }

    fn publish(&self, _upto: u64) {
        let hook = self.on_publish.lock().take();
        if let Some(hook) = hook {
            hook();
        }
    }

    fn floor(&self) -> Option<u64> {
        let hook = self.on_floor.lock().take();
        if let Some(hook) = hook {
            hook();
        }
        Some(self.floor.load(Ordering::SeqCst))
    }
}

/// Appends records with `keys` to `sink`.
struct Job {
    sink: Arc<dyn Sink>,
    keys: Range<u64>,
}

impl Append for Job {
    fn publish(&mut self) {
        unreachable!("a durable store stages");
    }

    fn encode(&mut self) -> Result<Vec<Vec<u8>>, Error> {
        Ok(self.keys.clone().map(|_| vec![0; 32]).collect())
    }

    fn stage(&mut self, stager: &mut dyn Stager) {
        for key in self.keys.clone() {
            stager.record(&self.sink, key, 0, 32, None);
        }
        stager.end();
    }

    fn unstage(&mut self) {}
}

fn append(store: &DurableStore, sink: &Arc<FakeSink>, keys: Range<u64>, commit: Commit) {
    let sink: Arc<dyn Sink> = Arc::clone(sink) as Arc<dyn Sink>;
    store.append(&mut Job { sink, keys }, commit).unwrap();
}

/// The keys of `sink`'s rows in the file (none before its first commit).
fn keys(store: &DurableStore, sink: &FakeSink) -> Vec<u64> {
    let table = sink.log.table().to_owned();
    store
        .read(|txn| {
            let rows = match txn.open_table(records(&table)) {
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                rows => rows?,
            };
            rows.iter()?
                .map(|row| Ok(row?.0.value()))
                .collect::<Result<Vec<u64>, redb::Error>>()
        })
        .unwrap()
}

/// A floor moved after the writer took its batch (as an ack moves it, after sending the
/// position that justifies it) is not applied by that batch's commit, which does not hold
/// the ack: a power cut after it would keep the trim without the ack. It is applied by a
/// commit that holds what was sent before the floor moved.
#[test]
fn a_trim_commits_with_what_was_sent_before_its_floor_moved() {
    let path = std::env::temp_dir().join(format!("embus-trims-{}.embus", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(
        DurableStore::open(
            &path,
            Options {
                durability: Durability::Immediate,
                backend: None,
                cache_bytes: None,
                database: None,
                codec: "test",
                check_integrity: false,
            },
        )
        .unwrap(),
    );
    let (trimmed, other, ack) = (FakeSink::new("t"), FakeSink::new("o"), FakeSink::new("a"));
    append(&store, &trimmed, 0..10, Commit::Wait); // published: trimmed next commit
    // When the writer reads `trimmed`'s floor: "an ack" is sent (a record to `ack`, not
    // waited for), then the floor moves to 5 because of it.
    let (hook_store, hook_trimmed, hook_ack) =
        (Arc::clone(&store), Arc::clone(&trimmed), Arc::clone(&ack));
    *trimmed.on_floor.lock() = Some(Box::new(move || {
        append(&hook_store, &hook_ack, 0..1, Commit::Staged);
        hook_trimmed.floor.store(5, Ordering::SeqCst);
    }));
    // After the commit of the next batch: if it trimmed, it must hold the ack.
    let seen = Arc::new(Mutex::new(None));
    let (hook_store, hook_trimmed, hook_ack, hook_seen) = (
        Arc::clone(&store),
        Arc::clone(&trimmed),
        Arc::clone(&ack),
        Arc::clone(&seen),
    );
    *other.on_publish.lock() = Some(Box::new(move || {
        *hook_seen.lock() = Some((
            keys(&hook_store, &hook_trimmed),
            keys(&hook_store, &hook_ack),
        ));
    }));
    append(&store, &other, 0..1, Commit::Wait);
    // That commit took the ack with its batch, so it may trim, and does (a writer that read
    // the floor after taking its batch trims without the ack).
    let (rows, acks) = seen.lock().take().expect("the commit published");
    assert_eq!(rows.first(), Some(&5), "the commit holding the ack trims");
    assert_eq!(
        acks,
        [0],
        "the trim committed without the ack behind its floor"
    );
    // Later commits keep both.
    append(&store, &other, 1..2, Commit::Wait);
    store.flush().unwrap();
    assert_eq!(keys(&store, &trimmed), (5..10).collect::<Vec<_>>());
    assert_eq!(keys(&store, &ack), [0]);
    drop(store);
    let _ = std::fs::remove_file(&path);
}

//! Unit tests of reading a topic back from a store that fails or holds damaged records: a fake
//! store whose partition holds offsets `0..N` (restored, so every read is a cold read).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Poll as TaskPoll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use super::{Member, Subscriber, TopicCore};
use crate::clock::Clock;
use crate::codec::CodecKind;
use crate::engine::notify::{Deadline, Wait};
use crate::engine::{Context, Poll, Source};
use crate::error::{Error, RecvError};
use crate::options::{Start, TopicOptions};
use crate::record::{Headers, Payload};
use crate::store::{Append, Commit, Loaded, LogId, Progress, Restored, Store, Ticket, format};

const N: u64 = 4;
const LIMIT: Duration = Duration::from_secs(10);

/// A store holding `u64` payloads `0..N` at offsets `0..N` of one partition.
#[derive(Debug, Default)]
struct FakeStore {
    /// Loads still to fail with an I/O error.
    failing: AtomicU32,
    /// Loads so far.
    loads: AtomicU32,
    /// A load whose range holds this offset fails as corrupt (a damaged page).
    corrupt: Option<u64>,
    /// This offset's record fails its checksum.
    flipped: Option<u64>,
}

/// The checksum seed of the fake store's one table.
const SEED: u32 = 7;

impl FakeStore {
    fn value(&self, key: u64) -> Vec<u8> {
        let mut value = format::body(None, &Headers::new());
        CodecKind::Bincode.encode(&key, &mut value).unwrap();
        format::seal(&mut value, SEED, key, 1 + key, 0);
        if self.flipped == Some(key) {
            let last = value.len() - 1;
            value[last] ^= 1;
        }
        value
    }
}

impl Store for FakeStore {
    fn instance(&self) -> u64 {
        1
    }

    fn append(&self, job: &mut dyn Append, _commit: Commit) -> Result<Option<Ticket>, Error> {
        job.publish();
        Ok(None)
    }

    fn transact(
        &self,
        job: &mut dyn crate::store::TxJob,
        _lent: &mut Option<crate::store::Lent>,
    ) -> Result<(), Error> {
        job.run(None)
    }

    fn poll_stored(&self, _ticket: Ticket, _waker: &Waker) -> TaskPoll<Result<(), Error>> {
        TaskPoll::Ready(Ok(()))
    }

    fn progress(&self, _change: Progress<'_>) {}

    fn can_record(&self) -> Result<(), Error> {
        Ok(())
    }

    fn declared(&self, _name: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(None)
    }

    fn declare(&self, _name: &str, _declaration: Vec<u8>) {}

    fn forget_group(&self, _topic: &str, _group: &str) {}

    fn undeclare(&self, _name: &str) {}

    fn restore(&self, _log: &LogId) -> Result<Restored, Error> {
        Ok(Restored {
            base: 0,
            end: N,
            bytes: 0,
            last_ts: N,
        })
    }

    fn groups(&self, _topic: &str) -> Result<Vec<(String, u32, u64)>, Error> {
        Ok(Vec::new())
    }

    fn reads_back(&self) -> bool {
        true
    }

    fn load(&self, _log: &LogId, from: u64, to: u64) -> Result<Vec<Loaded>, Error> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let failing = self.failing.load(Ordering::SeqCst);
        if failing > 0 {
            self.failing.store(failing - 1, Ordering::SeqCst);
            return Err(Error::Storage {
                path: self.path(),
                message: "injected: read failed".to_owned(),
            });
        }
        if self.corrupt.is_some_and(|c| (from..to).contains(&c)) {
            return Err(Error::Corrupt {
                path: self.path(),
                detail: "injected: damaged page".to_owned(),
            });
        }
        let keys = from..to.min(N);
        Ok(keys
            .map(|key| Loaded {
                key,
                value: self.value(key),
                deliveries: 0,
                seed: SEED,
            })
            .collect())
    }

    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    fn close(&self) -> Result<(), Error> {
        Ok(())
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("fake.embus")
    }
}

fn topic(store: FakeStore) -> (Arc<TopicCore<u64>>, Arc<FakeStore>) {
    topic_with(store, TopicOptions::default())
}

fn topic_with(store: FakeStore, options: TopicOptions) -> (Arc<TopicCore<u64>>, Arc<FakeStore>) {
    let store = Arc::new(store);
    let context = Context::new(
        Clock::default(),
        Arc::clone(&store) as Arc<dyn Store>,
        CodecKind::Bincode,
        HashMap::new(),
    );
    let core = TopicCore::create("t", options, context).unwrap();
    (core, store)
}

/// The blocking receive's loop (`consumer.rs`): poll, and park until woken or `wake_at`.
fn recv<T: Payload>(source: &mut impl Source<T>) -> Poll<T> {
    let deadline = Instant::now() + LIMIT;
    loop {
        match source.poll(Wait::Thread) {
            Poll::Empty => {
                assert!(Instant::now() < deadline, "still waiting after {LIMIT:?}");
                Deadline::At(deadline).park(source.wake_at());
            }
            other => return other,
        }
    }
}

fn payload<T: Payload + Copy>(poll: Poll<T>) -> Result<T, RecvError> {
    match poll {
        Poll::Ready(delivery) => Ok(*delivery.payload()),
        Poll::Lagged(skipped) => Err(RecvError::Lagged { skipped }),
        Poll::Error(e) => Err(e),
        Poll::Empty => panic!("nothing received"),
    }
}

#[test]
fn a_transient_read_error_is_retried_and_the_parked_reader_woken_for_it() {
    let (core, store) = topic(FakeStore::default());
    store.failing.store(3, Ordering::SeqCst);
    let mut sub = Subscriber::new(Arc::clone(&core), Start::Earliest, None);
    // A quiet partition: nothing but the retry can wake the reader.
    assert_eq!(payload(recv(&mut sub)), Ok(0));
    assert_eq!(
        store.loads.load(Ordering::SeqCst),
        4,
        "three failures, then the read"
    );

    // A group member, on a topic of its own (nothing cached).
    let (core, store) = topic(FakeStore::default());
    store.failing.store(3, Ordering::SeqCst);
    let group = core.declare_group("g", None).unwrap();
    let mut member = Member::join(Arc::clone(&core), group);
    assert_eq!(payload(recv(&mut member)), Ok(0));
    assert_eq!(
        store.loads.load(Ordering::SeqCst),
        4,
        "three failures, then the read"
    );
}

#[test]
fn a_task_waiting_for_a_retry_is_woken_by_the_timer() {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let (core, store) = topic(FakeStore::default());
    store.failing.store(2, Ordering::SeqCst);
    let group = core.declare_group("g", None).unwrap();
    let mut member = Member::join(Arc::clone(&core), group);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let deadline = Instant::now() + LIMIT;
    let got = loop {
        match member.poll(Wait::Task(&waker)) {
            Poll::Empty => {
                assert!(Instant::now() < deadline, "the task was never woken");
                thread::park_timeout(LIMIT); // only the waker (the timer) unparks us
            }
            other => break other,
        }
    };
    member.finish_wait();
    assert_eq!(payload(got), Ok(0));
    assert_eq!(store.loads.load(Ordering::SeqCst), 3);
}

#[test]
fn a_lasting_read_error_is_returned_and_skips_nothing() {
    let (core, store) = topic(FakeStore::default());
    store.failing.store(u32::MAX, Ordering::SeqCst);
    let mut sub = Subscriber::new(Arc::clone(&core), Start::Earliest, None);
    let started = Instant::now();
    match payload(recv(&mut sub)) {
        Err(RecvError::Failed(f)) => {
            assert_eq!((f.name.as_str(), f.partition, f.offset), ("t", 0, 0));
            assert!(matches!(*f.error, Error::Storage { .. }));
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(store.loads.load(Ordering::SeqCst), 10, "ten attempts");
    store.failing.store(0, Ordering::SeqCst);
    assert_eq!(payload(recv(&mut sub)), Ok(0), "nothing skipped");
}

/// Regression: with one retry record per consumer, two failing partitions reset each other's
/// count, so the reader never got `Failed` and woke every millisecond for ever.
#[test]
fn failing_reads_of_several_partitions_are_each_returned() {
    let (core, store) = topic_with(FakeStore::default(), TopicOptions::default().partitions(2));
    store.failing.store(u32::MAX, Ordering::SeqCst);
    let mut sub = Subscriber::new(Arc::clone(&core), Start::Earliest, None);
    let mut failed = Vec::new();
    for _ in 0..2 {
        match payload(recv(&mut sub)) {
            Err(RecvError::Failed(f)) => failed.push(f.partition),
            other => panic!("expected Failed, got {other:?}"),
        }
    }
    failed.sort_unstable();
    assert_eq!(failed, [0, 1]);
}

/// Every offset of a fresh subscriber, as payloads or the offsets of undecodable records.
fn read_all(core: &Arc<TopicCore<u64>>) -> Vec<Result<u64, (u64, String, usize)>> {
    let mut sub = Subscriber::new(Arc::clone(core), Start::Earliest, None);
    (0..N)
        .map(|_| match payload(recv(&mut sub)) {
            Ok(n) => Ok(n),
            Err(RecvError::Undecodable(u)) => Err((u.offset, u.message.clone(), u.bytes.len())),
            Err(e) => panic!("{e}"),
        })
        .collect()
}

#[test]
fn a_damaged_page_costs_only_the_records_it_holds() {
    // The store fails every read whose range holds offset 2, as redb does on a damaged page
    // (or panics, which the store turns into the same error): the chunk is read in halves.
    let (core, _store) = topic(FakeStore {
        corrupt: Some(2),
        ..FakeStore::default()
    });
    let got = read_all(&core);
    assert_eq!(got[..2], [Ok(0), Ok(1)]);
    assert!(
        matches!(&got[2], Err((2, message, 0)) if message.contains("damaged page")),
        "{:?}",
        got[2]
    );
    assert_eq!(got[3], Ok(3));
}

#[test]
fn a_record_that_fails_its_checksum_is_undecodable_with_its_bytes() {
    let (core, store) = topic(FakeStore {
        flipped: Some(1),
        ..FakeStore::default()
    });
    let got = read_all(&core);
    let whole = store.value(1).len();
    assert_eq!(got[0], Ok(0));
    assert!(
        matches!(&got[1], Err((1, message, len)) if message.contains("checksum") && *len == whole),
        "{:?}",
        got[1]
    );
    assert_eq!(got[2..], [Ok(2), Ok(3)]);
}

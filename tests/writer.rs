//! The writer thread: what follows a failed commit (acks and readers), dropping the last
//! handle on the writer itself, and closing without blocking an executor. Faults come from
//! [`FaultyBackend`] (`tests/common/faulty.rs`), which can also hold the writer in an fsync.

mod common;

use std::sync::{Arc, Mutex, mpsc};

use common::faulty::{Faults, Mode, faulty_builder, watch_panics, within};
use embus::{Broker, Error, SendError, Start};

/// An ack or nack after a commit failed cannot be stored: it says so (the message comes
/// again after a reopen), instead of returning `Ok` and dropping it.
#[test]
fn acks_after_a_failed_commit_say_they_cannot_be_stored() {
    let dir = common::fresh_dir("faults-ack");
    let path = dir.join("bus.embus");
    let faults = Faults::new(Mode::Sticky);
    let bus = faulty_builder(&path, &faults).open().unwrap();
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
        let bus = faulty_builder(&path, &faults).cache_size(0).open().unwrap();
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
    let bus = faulty_builder(&path, &faults).open().unwrap();
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
    let bus = faulty_builder(&path, &faults).open().unwrap();
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

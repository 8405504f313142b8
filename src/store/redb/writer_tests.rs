//! The writer against sinks the tests control: a commit trims a log's file rows only to a
//! floor whose causes it holds; group positions and queue acks coalesced within a commit leave
//! the rows the requests one by one would.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use redb::ReadableTable;

use super::schema::{GROUPS, deliveries, existing, open_position, records};
use super::{DurableStore, Options};
use crate::error::Error;
use crate::options::Durability;
use crate::store::{Append, Commit, LogId, Progress, Sink, Stager, Store};

type Hook = Box<dyn FnOnce() + Send>;

/// A log whose floor the test sets, with hooks run when the writer reads its floor or
/// publishes into it.
struct FakeSink {
    log: LogId,
    /// A queue's: no floor (its acks delete its rows).
    queue: bool,
    floor: AtomicU64,
    on_floor: Mutex<Option<Hook>>,
    on_publish: Mutex<Option<Hook>>,
}

impl FakeSink {
    fn new(topic: &str) -> Arc<Self> {
        Self::of(LogId::partition(topic, 0), false)
    }

    fn queue(name: &str) -> Arc<Self> {
        Self::of(LogId::queue(name), true)
    }

    fn of(log: LogId, queue: bool) -> Arc<Self> {
        Arc::new(Self {
            log,
            queue,
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
        (!self.queue).then(|| self.floor.load(Ordering::SeqCst))
    }
}

/// A store that commits every send at once.
fn options() -> Options {
    Options {
        durability: Durability::Immediate,
        backend: None,
        cache_bytes: None,
        database: None,
        codec: "test",
        check_integrity: false,
        two_phase: true,
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

/// A store on a fresh file for test `name` (any file of an earlier run removed), closed and
/// its file removed when the test drops it.
struct Fresh {
    store: Option<Arc<DurableStore>>,
    path: std::path::PathBuf,
}

fn fresh_store(name: &str) -> Fresh {
    let path = std::env::temp_dir().join(format!("embus-{name}-{}.embus", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(DurableStore::open(&path, options()).unwrap());
    Fresh {
        store: Some(store),
        path,
    }
}

impl std::ops::Deref for Fresh {
    type Target = Arc<DurableStore>;

    fn deref(&self) -> &Self::Target {
        self.store.as_ref().expect("open until dropped")
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        drop(self.store.take());
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Moves message 0 of queue `from` to id 0 of queue `to` (a dead letter), as the engine sends
/// it.
fn move_dead_letter(store: &DurableStore, from: &Arc<dyn Sink>, to: &Arc<dyn Sink>) {
    let headers = crate::record::Headers::new();
    store.progress(Progress::DeadLetter {
        queue: from,
        id: 0,
        to,
        to_id: 0,
        headers: &headers,
        body: &|| Ok(vec![0; 32]),
        ts: 0,
        size: 32,
    });
}

/// The offsets of `sink`'s records in the file (none before its first commit).
fn keys(store: &DurableStore, sink: &FakeSink) -> Vec<u64> {
    let table = sink.log.table().to_owned();
    store
        .read(|txn| {
            let rows = match txn.open_table(records(&table)) {
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                rows => rows?,
            };
            let mut out = Vec::new();
            super::rows::visit(&rows, sink.log.seed(), (0, u64::MAX), |offset, _| {
                out.push(offset);
                Ok(true)
            })?;
            Ok(out)
        })
        .unwrap()
}

/// A floor moved after the writer took its batch (as an ack moves it, after sending the
/// position that justifies it) is not applied by that batch's commit, which does not hold
/// the ack: a power cut after it would keep the trim without the ack. It is applied by a
/// commit that holds what was sent before the floor moved.
#[test]
fn a_trim_commits_with_what_was_sent_before_its_floor_moved() {
    let store = fresh_store("trims");
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
}

/// A floor that moves after the writer read it (an ack with retention by interest, during the
/// commit) is applied by the next commit, even one that publishes nothing, such as close's:
/// the file does not keep rows its log trimmed until the log publishes again.
#[test]
fn a_floor_that_moves_after_it_was_read_is_applied_by_the_next_commit() {
    let store = fresh_store("trims-moved");
    let (trimmed, other) = (FakeSink::new("t"), FakeSink::new("o"));
    append(&store, &trimmed, 0..10, Commit::Wait); // published: trimmed next commit
    // The next commit reads floor 0; it moves to 5 right after that read.
    let hook_trimmed = Arc::clone(&trimmed);
    *trimmed.on_floor.lock() = Some(Box::new(move || {
        let moved = Arc::clone(&hook_trimmed);
        *hook_trimmed.on_floor.lock() = Some(Box::new(move || {
            moved.floor.store(5, Ordering::SeqCst);
        }));
    }));
    append(&store, &other, 0..1, Commit::Wait);
    assert_eq!(keys(&store, &trimmed), (0..10).collect::<Vec<_>>());
    store.flush().unwrap(); // a commit with nothing to publish
    assert_eq!(keys(&store, &trimmed), (5..10).collect::<Vec<_>>());
}

/// A group's new position nominates its partition: the commit after it trims the file to the
/// floor that retention by interest moved to once the ack was sent, though nothing was
/// published into it since.
#[test]
fn a_group_position_nominates_its_partition_for_the_next_commit() {
    position_nominates("acked", false);
}

/// The same for a position that reaches the writer while it lends its write transaction
/// (`tx.redb()`): it rides the loan's commit, which nominates too (a review found it did not).
#[test]
fn a_group_position_sent_during_a_loan_nominates_its_partition() {
    position_nominates("lent", true);
}

/// Sends a group's position in a log that nothing publishes into, during a loan if `lend`,
/// and checks that the commits after it trim the file to the floor the ack moved.
fn position_nominates(name: &str, lend: bool) {
    let store = fresh_store(&format!("trims-{name}"));
    let trimmed = FakeSink::new("t");
    append(&store, &trimmed, 0..10, Commit::Wait);
    store.flush().unwrap(); // trims to floor 0, and forgets the log until it publishes
    let lent = lend.then(|| store.lend_writer().unwrap());
    store.progress(Progress::GroupPosition {
        topic: "t",
        group: "g",
        partition: 0,
        offset: 5,
    });
    trimmed.floor.store(5, Ordering::SeqCst); // what the ack let retention trim
    if let Some(lent) = lent {
        store.give_back_writer(lent); // the loan's commit holds the position
    }
    store.flush().unwrap(); // holds the position, or is the commit after the loan's
    store.flush().unwrap(); // the commit after it
    assert_eq!(keys(&store, &trimmed), (5..10).collect::<Vec<_>>());
}

/// The stored position of group `g` in partition 0 of `t`.
fn stored_position(store: &DurableStore) -> Option<u64> {
    let key = ("t", "g", 0);
    store
        .read(|txn| {
            let Some(table) = existing(txn, GROUPS)? else {
                return Ok(None);
            };
            let value = table.get(key)?;
            value.map(|v| open_position(key, v.value())).transpose()
        })
        .unwrap()
}

/// Runs `requests` with the writer lent, so that they all ride one commit, then flushes.
fn in_one_commit(store: &DurableStore, requests: impl FnOnce()) {
    let lent = store.lend_writer().unwrap();
    requests();
    store.give_back_writer(lent);
    store.flush().unwrap();
}

/// A consumer acking each message sends a position each: the commit that holds them writes
/// the last, and a group forgotten between them keeps only what came after.
#[test]
fn positions_in_one_commit_leave_the_last_one_written() {
    let store = fresh_store("positions");
    let position = |offset| Progress::GroupPosition {
        topic: "t",
        group: "g",
        partition: 0,
        offset,
    };
    in_one_commit(&store, || {
        store.progress(position(5));
        store.progress(position(9));
    });
    assert_eq!(stored_position(&store), Some(9));
    // A position may move back (a reset): the last one sent wins, whatever its value.
    in_one_commit(&store, || {
        store.progress(position(3));
        store.forget_group("t", "g");
        store.progress(position(7));
        store.progress(position(4));
    });
    assert_eq!(stored_position(&store), Some(4));
    in_one_commit(&store, || {
        store.progress(position(8));
        store.forget_group("t", "g");
    });
    assert_eq!(stored_position(&store), None);
}

/// Acks kept aside (not sent one request each) are in the commit after them: the rows and
/// delivery counts of the acked messages are gone, the others stay.
#[test]
fn coalesced_acks_delete_their_rows_and_counts() {
    let store = fresh_store("acks");
    let jobs = FakeSink::queue("jobs");
    append(&store, &jobs, 0..6, Commit::Wait);
    let queue: Arc<dyn Sink> = Arc::clone(&jobs) as Arc<dyn Sink>;
    for id in [1, 2, 4] {
        let count = 2;
        store.progress(Progress::QueueDelivery {
            queue: &queue,
            id,
            count,
        });
    }
    store.flush().unwrap();
    for id in [0, 1, 3] {
        store.progress(Progress::QueueAck { queue: &queue, id });
    }
    store.progress(Progress::QueueDelivery {
        queue: &queue,
        id: 5,
        count: 1,
    });
    store.progress(Progress::QueueAck {
        queue: &queue,
        id: 5,
    }); // its count is moot
    store.flush().unwrap();
    assert_eq!(keys(&store, &jobs), [2, 4]);
    let counted = store
        .read(|txn| {
            let table = txn.open_table(deliveries(jobs.log.counts_table()))?;
            table
                .iter()?
                .map(|row| Ok(row?.0.value()))
                .collect::<Result<Vec<u64>, redb::Error>>()
        })
        .unwrap();
    assert_eq!(counted, [2, 4]);
}

/// A message moved to another queue (a dead letter, a redrive, a group's dead letter) is ready
/// there at once, before the move commits (`QueueCore::push_moved`, `push_group_dead_letter`):
/// a consumer may ack it while the move still waits for its commit. The ack, kept aside, must
/// not be written before the move that inserts the row: the acked message would come back on
/// the next open (even after a clean close).
#[test]
fn an_ack_of_a_moved_message_in_the_commit_of_its_move_deletes_it() {
    let store = fresh_store("moved-ack");
    let jobs = FakeSink::queue("jobs");
    let dead = FakeSink::queue("dead");
    append(&store, &jobs, 0..1, Commit::Wait);
    let (from, to): (Arc<dyn Sink>, Arc<dyn Sink>) = (
        Arc::clone(&jobs) as Arc<dyn Sink>,
        Arc::clone(&dead) as Arc<dyn Sink>,
    );
    in_one_commit(&store, || {
        // The engine sends the move under the target's lock, then the message is ready there.
        move_dead_letter(&store, &from, &to);
        store.progress(Progress::QueueAck { queue: &to, id: 0 });
    });
    assert_eq!(keys(&store, &jobs), Vec::<u64>::new(), "moved out");
    assert_eq!(
        keys(&store, &dead),
        Vec::<u64>::new(),
        "moved in, then acked"
    );
}

/// As above, for a group's dead letter into a queue.
#[test]
fn an_ack_of_a_group_dead_letter_in_the_commit_that_stores_it_deletes_it() {
    let store = fresh_store("group-ack");
    let dead = FakeSink::queue("dead");
    let to: Arc<dyn Sink> = Arc::clone(&dead) as Arc<dyn Sink>;
    in_one_commit(&store, || {
        store.progress(Progress::GroupDeadLetter {
            to: &to,
            to_id: 0,
            body: &[0; 32],
            ts: 0,
            size: 32,
            position: None,
        });
        store.progress(Progress::QueueAck { queue: &to, id: 0 });
    });
    assert_eq!(keys(&store, &dead), Vec::<u64>::new(), "stored, then acked");
}

/// As above, when the move is not in the commit that takes the ack: a batch stops at its limit
/// (`MAX_BATCH` requests), and the acks kept aside that it takes may have been made after
/// requests it does not hold. An ack must not be written in a commit before the one of a
/// request sent before it.
#[test]
fn an_ack_made_after_a_move_beyond_the_batch_limit_is_not_written_before_the_move() {
    let store = fresh_store("cut-ack");
    let (jobs, dead, other) = (
        FakeSink::queue("jobs"),
        FakeSink::queue("dead"),
        FakeSink::new("o"),
    );
    append(&store, &jobs, 0..1, Commit::Wait);
    // On the writer thread, after the next commit: more requests than one batch takes, then
    // the move, then its ack (the moved message was ready at once).
    let (hook_store, from, to) = (
        Arc::clone(&store),
        Arc::clone(&jobs) as Arc<dyn Sink>,
        Arc::clone(&dead) as Arc<dyn Sink>,
    );
    *other.on_publish.lock() = Some(Box::new(move || {
        for offset in 0..super::writer::MAX_BATCH as u64 {
            hook_store.progress(Progress::GroupPosition {
                topic: "t",
                group: "g",
                partition: 0,
                offset,
            });
        }
        move_dead_letter(&hook_store, &from, &to);
        hook_store.progress(Progress::QueueAck { queue: &to, id: 0 });
    }));
    append(&store, &other, 0..1, Commit::Wait);
    store.flush().unwrap();
    store.flush().unwrap();
    assert_eq!(keys(&store, &jobs), Vec::<u64>::new(), "moved out");
    assert_eq!(
        keys(&store, &dead),
        Vec::<u64>::new(),
        "moved in, then acked"
    );
}

#[test]
fn a_store_keeps_its_instance_number_and_another_draws_its_own() {
    let store = fresh_store("instance"); // removes the file when dropped, at the end
    let instance = store.instance();
    assert_ne!(fresh_store("instance-other").instance(), instance);
    store.close().unwrap(); // releases the file
    let reopen = || {
        let again = DurableStore::open(&store.path, options()).unwrap();
        let instance = again.instance();
        again.close().unwrap();
        instance
    };
    assert_eq!(reopen(), instance, "kept across a reopen");
    // A store from before instance numbers draws one at its next open, and keeps it.
    let db = redb::Database::open(&store.path).unwrap();
    let txn = db.begin_write().unwrap();
    let removed = txn
        .open_table(super::schema::META)
        .unwrap()
        .remove(super::schema::INSTANCE)
        .unwrap()
        .map(|v| v.value());
    assert_eq!(removed, Some(instance));
    txn.commit().unwrap();
    drop(db);
    let drawn = reopen();
    assert_ne!(drawn, instance);
    assert_eq!(reopen(), drawn, "kept once drawn");
}

/// How long a test waits for the writer thread before it fails.
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until the writer thread is parked with nothing queued: a send made then is the only
/// one that can take the baton.
fn until_parked(store: &DurableStore) {
    let deadline = std::time::Instant::now() + WAIT;
    while !store.inner.line.writer_parked() {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never parked"
        );
        std::thread::yield_now();
    }
}

/// Sets `sink`'s publish hook to report the thread it runs on, after running `then`.
fn report_publish(
    sink: &FakeSink,
    then: impl FnOnce() + Send + 'static,
) -> std::sync::mpsc::Receiver<Option<String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    *sink.on_publish.lock() = Some(Box::new(move || {
        then();
        let _ = tx.send(std::thread::current().name().map(str::to_owned));
    }));
    rx
}

/// A lone sender that waits for its commit commits it on its own thread, with no wake of the
/// writer thread and none back; what a waker run there does cannot wait for that commit (a
/// flush returns at once instead of hanging the sender). A send nobody waits for (an async
/// send polls its ticket) is the writer thread's.
#[test]
fn a_lone_waiting_sender_commits_its_own_send() {
    let store = fresh_store("lead");
    let sink = FakeSink::new("t");
    until_parked(&store);
    let flusher = Arc::clone(&store);
    let (flushed_tx, flushed) = std::sync::mpsc::channel();
    let published_on = report_publish(&sink, move || {
        let _ = flushed_tx.send(flusher.flush().map_err(|e| e.to_string()));
    });
    let (store_in, sink_in) = (Arc::clone(&store), Arc::clone(&sink));
    let (sent_tx, sent) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("sender".to_owned())
        .spawn(move || {
            append(&store_in, &sink_in, 0..1, Commit::Wait);
            let _ = sent_tx.send(());
        })
        .unwrap();
    sent.recv_timeout(WAIT)
        .expect("the send never returned: a waker it ran waited for its own commit");
    assert_eq!(published_on.recv().unwrap().as_deref(), Some("sender"));
    assert_eq!(flushed.recv().unwrap(), Ok(()));
    assert_eq!(keys(&store, &sink), [0]);

    until_parked(&store);
    let published_on = report_publish(&sink, || {});
    let sink_dyn: Arc<dyn Sink> = Arc::clone(&sink) as Arc<dyn Sink>;
    let job = &mut Job {
        sink: sink_dyn,
        keys: 1..2,
    };
    let ticket = store.append(job, Commit::Poll).unwrap().expect("a ticket");
    let thread = std::thread::current();
    let waker = std::task::Waker::from(Arc::new(Unpark(thread)));
    let deadline = std::time::Instant::now() + WAIT;
    while store.poll_stored(ticket, &waker).is_pending() {
        assert!(std::time::Instant::now() < deadline, "never committed");
        std::thread::park_timeout(WAIT);
    }
    assert_eq!(
        published_on.recv().unwrap().as_deref(),
        Some("embus-writer")
    );
    assert_eq!(keys(&store, &sink), [0, 1]);
}

/// Unparks a thread when woken.
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A panic that ends the writer thread fails the loan queued behind it (no other thread serves
/// loans) instead of leaving its borrower waiting, and releases the file.
#[test]
fn a_writer_thread_that_dies_strands_no_loan_and_releases_the_file() {
    let store = fresh_store("writer-dies");
    let sink = FakeSink::new("t");
    append(&store, &sink, 0..1, Commit::Wait); // published: its floor is read next round
    *sink.on_floor.lock() = Some(Box::new(|| panic!("a floor that panics")));
    until_parked(&store);
    let lender = Arc::clone(&store);
    let (tx, loaned) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(lender.lend().map(|_| ()).map_err(|e| e.to_string()));
    });
    let loan = loaned
        .recv_timeout(WAIT)
        .expect("the borrower still waits for a writer thread that died");
    assert!(loan.is_err(), "{loan:?}");
    assert!(matches!(store.close(), Err(Error::Poisoned { .. })));
    let again = DurableStore::open(&store.path, options()).expect("the file is released");
    assert_eq!(keys(&again, &sink), [0]);
    again.close().unwrap();
}

/// The writer thread's linger in `Immediate` mode: a batch short of what is expected waits (at
/// most half the last commit, capped at 2 ms) for that many; a full one, or a lone sender's,
/// commits at once.
#[test]
fn a_batch_short_of_the_expected_senders_waits_for_them() {
    use super::writer::linger;
    use std::time::Duration;
    let took = Duration::from_micros(600);
    // Two groups of 8 alternating: the 8 queued during the last commit wait for the 8 it
    // released.
    assert_eq!(linger(8, 16, took), Some((Duration::from_micros(300), 16)));
    assert_eq!(linger(16, 16, took), None);
    assert_eq!(linger(1, 1, took), None, "a lone sender never waits");
    assert_eq!(linger(0, 0, took), None);
    let slow = Duration::from_millis(40);
    assert_eq!(linger(1, 2, slow), Some((Duration::from_millis(2), 2)));
    let many = super::writer::MAX_BATCH;
    assert_eq!(
        linger(many, many + 10, took),
        None,
        "never more than a batch holds"
    );
}

/// Senders waiting for one commit are each unparked when it ends, and none stays listed.
#[test]
fn waiting_senders_return_after_their_commit_and_none_stays_listed() {
    let store = fresh_store("sleepers");
    let sink = FakeSink::new("t");
    let lent = store.lend_writer().unwrap(); // the senders' requests ride the loan's commit
    let (done, returned) = std::sync::mpsc::channel();
    for i in 0..16u64 {
        let (store, sink, done) = (Arc::clone(&store), Arc::clone(&sink), done.clone());
        std::thread::spawn(move || {
            append(&store, &sink, i..i + 1, Commit::Wait);
            let _ = done.send(i);
        });
    }
    let deadline = std::time::Instant::now() + WAIT;
    while store.inner.done.lock().sleepers.len() < 16 {
        assert!(
            std::time::Instant::now() < deadline,
            "the senders never waited"
        );
        std::thread::yield_now();
    }
    assert!(
        returned.try_recv().is_err(),
        "a send returned before its commit"
    );
    store.give_back_writer(lent);
    for _ in 0..16 {
        returned
            .recv_timeout(WAIT)
            .expect("a sender was never woken");
    }
    assert!(store.inner.done.lock().sleepers.is_empty());
    assert_eq!(keys(&store, &sink), (0..16).collect::<Vec<_>>());
}

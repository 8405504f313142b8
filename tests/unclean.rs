//! A store that was not closed cleanly (a crash, or a commit that failed) gets redb's integrity
//! check before anything reads it: damage there is `Error::Corrupt` at `Broker::open`, before
//! redb walks a damaged page (where it may panic, which `panic = "abort"` cannot survive). A
//! store closed cleanly is not scanned (opening stays fast): its damage is found as records
//! are read, unless the broker is built with `check_integrity(true)`. With one-phase commits
//! (`two_phase_commit(false)`) redb's own repair does the check, and a damaged last commit is
//! rolled back instead (the option's documented price).

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;

use common::WAIT;
use common::faulty::{Faults, Mode, faulty_builder};
use embus::{Broker, Error, RecvTimeoutError, SendError, Start, TopicOptions};

const MARK: &[u8] = b"UNCLEAN-MARK-";
const RECORDS: usize = 40;

/// Writes `RECORDS` records whose payloads hold `MARK`; `cleanly`: closes the broker, else
/// leaves the store as a failed commit (a full disk) does.
fn write(path: &Path, cleanly: bool) {
    write_with(path, cleanly, true, 0);
}

/// As [`write`], committing in two phases or one, with `after` more records (without the
/// mark) sent one by one after the marked ones, to another topic (so that their commits copy
/// no page holding a marked record).
fn write_with(path: &Path, cleanly: bool, two_phase: bool, after: usize) {
    let faults = Faults::new(Mode::Sticky); // never armed: only the disk fills
    let builder = faulty_builder(path, &faults).two_phase_commit(two_phase);
    let bus = builder.open().unwrap();
    let topic = bus
        .topic_with::<String>("t", TopicOptions::default().partitions(1))
        .unwrap();
    let payloads = (0..RECORDS).map(|i| format!("UNCLEAN-MARK-{i:04}"));
    topic.producer().send_batch(payloads.collect()).unwrap();
    let other = bus.topic::<String>("other").unwrap();
    for i in 0..after {
        other.producer().send(format!("after-{i}")).unwrap();
    }
    if cleanly {
        bus.close().unwrap();
        return;
    }
    faults.full.store(true, Ordering::SeqCst);
    assert!(matches!(
        topic.producer().send("lost".to_owned()),
        Err(SendError::Failed(_, Error::Poisoned { .. }))
    ));
    assert!(matches!(bus.close(), Err(Error::Poisoned { .. })));
}

/// Flips a bit in every copy of the records' payloads in the file (live and freed pages).
fn damage(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mut found = 0;
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(MARK.len()).position(|w| w == MARK) {
        bytes[at + i] ^= 0x20;
        at += i + MARK.len();
        found += 1;
    }
    assert!(found >= RECORDS, "the records were found in the file");
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_store_left_by_a_failed_commit_is_corrupt_at_open() {
    let path = common::fresh_dir("unclean").join("store.embus");
    write(&path, false);
    damage(&path);
    assert_corrupt(
        Broker::open(&path),
        "integrity check",
        "left unclean, without a check",
    );
}

#[test]
fn an_undamaged_store_left_by_a_failed_commit_opens_with_everything() {
    let path = common::fresh_dir("unclean-intact").join("store.embus");
    write(&path, false);
    let bus = Broker::open(&path).unwrap();
    let mut sub = bus
        .topic::<String>("t")
        .unwrap()
        .subscribe(Start::Earliest)
        .unwrap();
    for i in 0..RECORDS {
        assert_eq!(
            sub.recv_timeout(WAIT).unwrap().payload(),
            &format!("UNCLEAN-MARK-{i:04}")
        );
    }
    drop(sub);
    bus.close().unwrap();
    // Closed cleanly now: the next open has nothing to check.
    Broker::open(&path).unwrap().close().unwrap();
}

#[test]
fn a_damaged_store_closed_cleanly_opens_and_reports_what_is_damaged() {
    let path = common::fresh_dir("unclean-clean").join("store.embus");
    write(&path, true);
    damage(&path);
    let bus = Broker::open(&path).unwrap(); // not scanned
    let mut sub = bus
        .topic::<String>("t")
        .unwrap()
        .subscribe(Start::Earliest)
        .unwrap();
    match sub.recv_timeout(WAIT) {
        Err(RecvTimeoutError::Undecodable(bad)) => assert_eq!(bad.name, "t"),
        Ok(m) => panic!("a damaged record was delivered: {:?}", m.payload()),
        Err(e) => panic!("{e}"),
    }
    drop(sub);
    bus.close().unwrap();
}

#[test]
fn check_integrity_finds_a_store_damaged_at_rest_after_a_clean_close() {
    let path = common::fresh_dir("unclean-checked").join("store.embus");
    write(&path, true);
    // Undamaged: the check passes and everything is there.
    let bus = Broker::builder()
        .path(&path)
        .check_integrity(true)
        .open()
        .unwrap();
    assert_eq!(bus.topic::<String>("t").unwrap().retained(), RECORDS as u64);
    bus.close().unwrap();
    damage(&path);
    let opened = Broker::builder().path(&path).check_integrity(true).open();
    assert_corrupt(
        opened,
        "fails redb's integrity check",
        "despite check_integrity(true)",
    );
}

/// Asserts `opened` failed with `Error::Corrupt` naming the store and saying `says`; `what`
/// says what opened otherwise.
#[track_caller]
fn assert_corrupt(opened: Result<Broker, Error>, says: &str, what: &str) {
    match opened {
        Err(e @ Error::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("store.embus") && text.contains(says),
                "{text}"
            );
        }
        Err(other) => panic!("expected Error::Corrupt, got {other:?}"),
        Ok(_) => panic!("a damaged store opened {what}"),
    }
}

#[test]
fn check_integrity_cannot_be_asked_of_the_applications_database() {
    let path = common::fresh_dir("unclean-app").join("app.redb");
    let db = std::sync::Arc::new(embus::redb::Database::create(&path).unwrap());
    let err = Broker::builder()
        .database(db)
        .check_integrity(true)
        .open()
        .map(drop)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                option: "database",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("check_integrity"), "{err}");
}

/// One-phase commits (`two_phase_commit(false)`): damage to what an earlier commit wrote is
/// still `Error::Corrupt` at open.
#[test]
fn with_one_phase_commits_damage_before_the_last_commit_is_corrupt_at_open() {
    let path = common::fresh_dir("unclean-1pc").join("store.embus");
    write_with(&path, false, false, 1);
    damage(&path);
    let opened = Broker::builder().path(&path).two_phase_commit(false).open();
    assert_corrupt(
        opened,
        "integrity check",
        "although damaged before its last commit",
    );
}

/// What one-phase commits give up (`BrokerBuilder::two_phase_commit`'s docs): a last commit
/// damaged on the disk cannot be told from one a power cut interrupted, and is rolled back
/// whole at the next open; with two phases the same file is `Error::Corrupt`
/// ([`a_damaged_store_left_by_a_failed_commit_is_corrupt_at_open`]).
#[test]
fn with_one_phase_commits_a_damaged_last_commit_is_rolled_back() {
    let path = common::fresh_dir("unclean-1pc-last").join("store.embus");
    write_with(&path, false, false, 0);
    damage(&path);
    let bus = Broker::builder()
        .path(&path)
        .two_phase_commit(false)
        .open()
        .unwrap();
    let topic = bus.topic::<String>("t").unwrap();
    assert_eq!(topic.retained(), 0, "the damaged batch is gone whole");
    drop(topic);
    bus.close().unwrap();
}

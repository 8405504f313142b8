//! Damaged files: garbage, empty, truncated, overwritten and bit-flipped stores.
//! `Broker::open` returns an error naming the path, or opens and then never panics, stalls or
//! returns a payload that was not written where it is read. The truncated, overwritten and
//! bit-flipped tests cut or damage a fresh store at `EMBUS_DAMAGE_POSITIONS` (default 128)
//! evenly spread offsets (raise it to search wider; the layout varies a little between runs,
//! with how the first commits batch), and print what happened and their slowest file;
//! `EMBUS_DAMAGE_CHECK_INTEGRITY=1` opens each with `BrokerBuilder::check_integrity(true)`.
//! Another test flips bit 0 and bit 4 of every byte in the head (entry count, value ends, keys)
//! of the page holding a given record. A store of another format version is
//! `Error::Incompatible`; a redb file that is not a store is `Error::Corrupt`.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::faulty::{PARTITIONS, topic_options, try_within, within};
use embus::redb::TableDefinition;
use embus::{Broker, Error, RecvTimeoutError, Start};

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
    let opened = catch_unwind(AssertUnwindSafe(|| {
        Broker::builder()
            .path(path)
            .check_integrity(check_integrity())
            .open()
    }));
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
    let whole = read.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let _ = bus.close(); // may report the damage; must not panic
    if whole {
        "opened"
    } else {
        "opened, reads failed"
    }
}

/// Reads everything back; `false` if the topic's reader ended with `Failed` before the end.
fn read_damaged(bus: &Broker, written: Option<&Written>, what: &str) -> bool {
    let mut whole = true;
    let (no_topic, no_queue) = (HashMap::new(), HashMap::new());
    let (topic_written, queue_written) = match written {
        Some(w) => (&w.topic, &w.queue),
        None => (&no_topic, &no_queue),
    };
    // After a reopen every retained record is read from the file as it is asked for: a
    // record, a report that it is damaged, or (a read the store keeps refusing, which redb
    // does after an I/O error on a damaged page) `Failed` after the retries; never a stall.
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
            match all.recv_timeout(common::WAIT) {
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
                Err(RecvTimeoutError::Lagged { skipped }) => accounted += skipped,
                // A damaged record: reported with where it is, and the reader moves past it.
                Err(RecvTimeoutError::Undecodable(u)) => {
                    assert_eq!(u.name, "t", "{what}");
                    assert!(u.partition < PARTITIONS, "{what}: {u}");
                    accounted += 1;
                }
                // The file cannot be read further (until a reopen): said, not a stall.
                Err(RecvTimeoutError::Failed(f)) => {
                    assert_eq!(f.name, "t", "{what}");
                    assert!(f.to_string().contains(".embus"), "{what}: {f}");
                    whole = false;
                    break;
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
    whole
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
/// Every case runs; the failures are listed together. The cases are made one at a time (10,000
/// copies of the store would take gigabytes), and each file is removed once it passed.
fn damaged(
    test: &str,
    dir: &Path,
    written: &Arc<Written>,
    cases: impl Iterator<Item = (String, Vec<u8>)>,
) {
    let started = Instant::now();
    let mut outcomes: HashMap<&str, usize> = HashMap::new();
    let mut failures = Vec::new();
    let mut count = 0;
    let mut slowest = (Duration::ZERO, String::new());
    for (i, (what, bytes)) in cases.enumerate() {
        count += 1;
        let path = dir.join(format!("damaged-{i}.embus"));
        std::fs::write(&path, bytes).unwrap();
        let written = Arc::clone(written);
        let (run, opened) = (what.clone(), path.clone());
        let start = Instant::now();
        match try_within(common::WAIT, &what, move || {
            open_damaged(&opened, Some(&written), &run)
        }) {
            Ok(outcome) => {
                *outcomes.entry(outcome).or_default() += 1;
                let _ = std::fs::remove_file(&path);
            }
            Err(failure) => failures.push(format!("damaged-{i}.embus: {failure}")),
        }
        if start.elapsed() > slowest.0 {
            slowest = (start.elapsed(), what);
        }
    }
    eprintln!(
        "{test} ({count} files, {:.1?}): {outcomes:?}, {} failed; slowest {:.2?} ({})",
        started.elapsed(),
        failures.len(),
        slowest.0,
        slowest.1
    );
    // `Failed` ends a reader only where redb refuses the file: a few damaged files, not most
    // (a reader that gave up too early would end most runs that way).
    let cut_short = outcomes.get("opened, reads failed").copied().unwrap_or(0);
    assert!(
        cut_short <= count / 20 + 1,
        "{test}: {cut_short} of {count} files could not be read to the end"
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

/// `EMBUS_DAMAGE_CHECK_INTEGRITY=1`: every damaged file is opened with
/// `BrokerBuilder::check_integrity(true)` (redb's integrity check at open), as an application
/// that may meet files damaged at rest does. Without it (the default), a cleanly closed file is
/// opened unchecked, as `Broker::open` does.
fn check_integrity() -> bool {
    std::env::var("EMBUS_DAMAGE_CHECK_INTEGRITY").is_ok_and(|v| v == "1")
}

/// Where to damage (or cut) a file of `len` bytes: `EMBUS_DAMAGE_POSITIONS` (default 128)
/// evenly spread offsets.
fn positions(len: usize) -> impl Iterator<Item = usize> + Clone {
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
    // The cuts at `EMBUS_DAMAGE_POSITIONS` spread lengths, then by one byte.
    let cuts = positions(len).chain([len - 1]);
    let cases = cuts.map(|cut| {
        let what = format!("truncated to {cut} of {len} bytes");
        (what, written.bytes[..cut].to_vec())
    });
    damaged("truncated", &dir, &written, cases);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn overwritten_stores_are_an_error_or_read_back_only_what_was_written() {
    let dir = common::fresh_dir("faults-overwritten");
    let written = Arc::new(write_store(&dir.join("valid.embus")));
    let len = written.bytes.len();
    let spread = positions(len).enumerate().map(|(k, at)| {
        let mut bytes = written.bytes.clone();
        let end = (at + 512).min(len);
        bytes[at..end].copy_from_slice(&noise(k as u64 + 1, end - at));
        (format!("512 random bytes written at {at} of {len}"), bytes)
    });
    let mut header = written.bytes.clone();
    header[..512].copy_from_slice(&noise(99, 512));
    let cases = spread.chain([("the first 512 bytes overwritten".into(), header)]);
    damaged("overwritten", &dir, &written, cases);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bit_flipped_stores_are_an_error_or_read_back_only_what_was_written() {
    let dir = common::fresh_dir("faults-bit-flipped");
    let written = Arc::new(write_store(&dir.join("valid.embus")));
    let len = written.bytes.len();
    let cases = positions(len).map(|at| {
        let mut bytes = written.bytes.clone();
        bytes[at] ^= 0x10;
        (format!("one bit flipped at {at} of {len}"), bytes)
    });
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
    damaged("record page", &dir, &written, cases.into_iter());
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
                Some(7)
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
            assert_eq!(*expected, 7);
            assert_eq!(named, &path);
        }
        other => panic!("expected Error::Incompatible, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("future.embus") && message.contains("99"),
        "{message}"
    );
    // Refusing it changed nothing: back at version 3 (the version before records with timing)
    // it opens with its message, upgraded in place.
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
fn a_redb_file_without_embus_tables_gets_them_and_keeps_its_own() {
    let dir = common::fresh_dir("faults-foreign");
    let path = dir.join("foreign.redb");
    let something = TableDefinition::<u64, u64>::new("something");
    {
        let db = embus::redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(something).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    bus.queue::<String>("q")
        .unwrap()
        .producer()
        .send("kept".to_owned())
        .unwrap();
    bus.close().unwrap();
    {
        use embus::redb::{ReadableDatabase, ReadableTable};
        let db = embus::redb::Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(something).unwrap();
        assert_eq!(table.get(1).unwrap().map(|v| v.value()), Some(2));
        assert_eq!(table.iter().unwrap().count(), 1);
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
fn a_redb_file_with_embus_tables_but_no_format_version_is_corrupt() {
    let dir = common::fresh_dir("faults-no-meta");
    let path = dir.join("half.redb");
    {
        let db = embus::redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<u64, &[u8]>::new("embus.q.jobs"))
            .unwrap()
            .insert(1, &b"x"[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Broker::open(&path).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("half.redb") && text.contains("embus.q.jobs"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! The `embus` tool on bad input: each case exits with 1 (the file, a name) or 2 (usage),
//! says what is wrong on stderr, prints nothing on stdout and never panics.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use embus::{Broker, QueueOptions};

use common::fresh_dir;

fn embus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_embus"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs the tool expecting exit code `code` and `says` in stderr.
fn fails(args: &[&str], code: i32, says: &str) {
    let out = embus(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(
        stderr.contains(says),
        "{args:?}: expected {says:?} in:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{args:?} printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A store with a topic `orders` (u32) and queues `jobs` (String, dead letters to `jobs.dead`)
/// and `counts` (u64).
fn store(test: &str) -> (PathBuf, String) {
    let path = fresh_dir(test).join("app.embus");
    let bus = Broker::open(&path).unwrap();
    bus.topic::<u32>("orders")
        .unwrap()
        .producer()
        .send(7)
        .unwrap();
    let jobs = bus
        .queue_with::<String>("jobs", QueueOptions::default().dead_letter("jobs.dead"))
        .unwrap();
    jobs.producer().send("pear-payload".to_owned()).unwrap();
    bus.queue::<u64>("counts").unwrap();
    bus.close().unwrap();
    let text = path.to_str().unwrap().to_owned();
    (path, text)
}

fn write(path: &Path, bytes: &[u8]) -> String {
    std::fs::write(path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn files_that_are_not_stores_are_clear_errors() {
    let dir = fresh_dir("cli-not-stores");
    let missing = dir.join("missing.embus");
    fails(&["inspect", missing.to_str().unwrap()], 1, "no such file");
    fails(
        &["inspect", dir.to_str().unwrap()],
        1,
        "a directory, not a store file",
    );
    let empty = write(&dir.join("empty"), b"");
    fails(
        &["tail", &empty, "orders"],
        1,
        "an empty file, not an embus store",
    );
    let mut noise = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..8192 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.push(x as u8);
    }
    let random = write(&dir.join("random"), &noise);
    fails(&["inspect", &random], 1, "not a redb file");

    let foreign = dir.join("foreign.redb");
    {
        let db = embus::redb::Database::create(&foreign).unwrap();
        let txn = db.begin_write().unwrap();
        let table: embus::redb::TableDefinition<'_, u64, u64> =
            embus::redb::TableDefinition::new("app.rows");
        txn.open_table(table).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    fails(
        &["inspect", foreign.to_str().unwrap()],
        1,
        "not an embus store: a redb file without embus's tables",
    );
}

#[test]
fn a_store_of_a_newer_format_version_is_refused() {
    let (path, file) = store("cli-newer");
    {
        let db = embus::redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: embus::redb::TableDefinition<'_, &str, u64> =
            embus::redb::TableDefinition::new("embus.meta");
        txn.open_table(meta).unwrap().insert("format", 99).unwrap();
        txn.commit().unwrap();
    }
    fails(
        &["inspect", &file],
        1,
        "has embus format version 99; this build reads version 7",
    );
}

#[test]
fn a_damaged_record_is_reported_as_corrupt() {
    let (path, file) = store("cli-damaged");
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = b"pear-payload";
    let mut flipped = 0;
    for at in 0..bytes.len() - needle.len() {
        if &bytes[at..at + needle.len()] == needle {
            bytes[at] ^= 0x20; // every copy, old pages included
            flipped += 1;
        }
    }
    assert!(flipped > 0, "the record is in the file");
    std::fs::write(&path, &bytes).unwrap();
    // The bookkeeping still reads; the record does not.
    let out = embus(&["inspect", &file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fails(&["tail", &file, "jobs"], 1, "record checksum mismatch");
    fails(&["tail", &file, "jobs"], 1, "is corrupt");
}

#[test]
fn a_store_held_by_a_running_broker_is_refused_with_a_clear_error() {
    let (path, file) = store("cli-held");
    let bus = Broker::open(&path).unwrap();
    fails(
        &["inspect", &file],
        1,
        "the file is open in another process",
    );
    fails(
        &["dlq", &file, "jobs.dead", "--redrive", "jobs"],
        1,
        "open in another process",
    );
    bus.close().unwrap();
    assert!(embus(&["inspect", &file]).status.success());
}

#[test]
fn unknown_names_list_what_exists() {
    let (_, file) = store("cli-unknown");
    fails(
        &["tail", &file, "nope"],
        1,
        "no topic or queue named `nope`",
    );
    fails(
        &["tail", &file, "nope"],
        1,
        "topics: orders\n  queues: counts, jobs, jobs.dead",
    );
    fails(
        &["dlq", &file, "nope"],
        1,
        "queues: counts, jobs, jobs.dead",
    );
}

#[test]
fn usage_errors_exit_with_2() {
    let (_, file) = store("cli-usage");
    fails(
        &["tail", &file, "orders", "--from", "yesterday"],
        2,
        "\"yesterday\" is not a start",
    );
    fails(
        &["tail", &file, "orders", "--from", "2026-13-01T00:00:00Z"],
        2,
        "RFC 3339",
    );
    fails(&["tail", &file], 2, "`tail` takes FILE NAME");
    fails(&[], 2, "no command given");
    fails(&["frobnicate", &file], 2, "unknown command `frobnicate`");
    fails(
        &["inspect", &file, "--follow"],
        2,
        "`inspect` takes no --follow",
    );
    fails(
        &["dlq", &file, "jobs.dead", "--limit", "2"],
        2,
        "--limit goes with --redrive",
    );
    let help = embus(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--follow"));
}

#[test]
fn redrive_refuses_a_missing_a_foreign_or_the_same_queue() {
    let (_, file) = store("cli-redrive-bad");
    fails(
        &["dlq", &file, "jobs.dead", "--redrive", "gone"],
        1,
        "no topic or queue named `gone`",
    );
    fails(
        &["dlq", &file, "nope", "--redrive", "jobs"],
        1,
        "no topic or queue named `nope`",
    );
    fails(
        &["dlq", &file, "jobs.dead", "--redrive", "counts"],
        1,
        "`counts` is already declared as a queue of u64, not as a queue of String",
    );
    fails(
        &["dlq", &file, "jobs.dead", "--redrive", "orders"],
        1,
        "`orders` is already declared as a topic",
    );
    fails(
        &["dlq", &file, "jobs", "--redrive", "jobs"],
        1,
        "a queue cannot be redriven into itself",
    );
    // None of it changed the file.
    let out = embus(&["tail", &file, "jobs"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

/// Child role of [`a_store_needing_recovery_is_refused_read_only`]: commits to a redb file
/// without redb's quick repair, then exits without closing it.
#[test]
fn leave_a_store_needing_recovery() {
    let Ok(path) = std::env::var("EMBUS_CLI_UNCLEAN") else {
        return; // only as a child
    };
    let db = embus::redb::Database::create(&path).unwrap();
    let txn = db.begin_write().unwrap();
    let meta: embus::redb::TableDefinition<'_, &str, u64> =
        embus::redb::TableDefinition::new("embus.meta");
    txn.open_table(meta).unwrap().insert("format", 7).unwrap();
    txn.commit().unwrap();
    std::process::exit(0); // no close: redb must recover the file
}

#[test]
fn a_store_needing_recovery_is_refused_read_only() {
    let path = fresh_dir("cli-unclean").join("app.embus");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "leave_a_store_needing_recovery",
            "--nocapture",
            "-q",
        ])
        .env("EMBUS_CLI_UNCLEAN", &path)
        .status()
        .unwrap();
    assert!(status.success());
    let file = path.to_str().unwrap();
    fails(
        &["inspect", file],
        1,
        "needs recovery, which a read-only open cannot do",
    );
    fails(&["inspect", file], 1, "Broker::open repairs it");
}

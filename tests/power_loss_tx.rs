//! Simulated power loss under the outbox: the application's redb database on a backend that
//! loses (or tears) every write not yet synced, with the power cut after each sync point of an
//! outbox workload in turn.
//!
//! - The backend is `tests/power_loss.rs`'s ([`common::power::CrashBackend`]): the application
//!   builds its `redb::Database` on it (`redb::Builder::create_with_backend`) and shares it
//!   with the broker (`BrokerBuilder::database`).
//! - The workload (`Durability::Immediate`) commits transactions that each insert a row into
//!   the application's table through `Transaction::redb` and send its event to a topic (two
//!   partitions), every other one a copy to a queue `mail`, and some ack a job of a queue
//!   `jobs` in the same commit; between them come plain sends (an event, a job) and two
//!   commits of the application's own on the shared database (a table `notes`). It runs once to
//!   count its syncs `S`, then for every `K` in `0..=S` on a backend frozen after sync `K`,
//!   recording for each commit that returned `Ok` the sync count right after: `<= K` means its
//!   fsync is in the durable image, so it must survive.
//! - Each crash image (the durable one and its torn variants) is reopened as the application
//!   would: the database on the image, the broker on the database. It must open (before the
//!   store's first complete commit redb may refuse the image; the broker never may), never
//!   panic or hang, and:
//!   a row exists exactly when its event does (and its `mail` copy, if it sent one); a job the
//!   transaction acked is gone exactly when the row is there (if the job's send survived);
//!   every commit acknowledged by sync `K` is there, the application's own included; nothing
//!   is there that was never sent, or twice; per-partition offsets are contiguous from 0; the
//!   reopened store commits another outbox transaction.
//!
//! All of it twice: with the default two-phase commits, and with
//! `BrokerBuilder::two_phase_commit(false)`.
//!
//! `EMBUS_POWER_LOSS_TORN=<variants>[,<seed>]` sets the torn variants per sync point, as for
//! `tests/power_loss.rs` (default 3).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use common::power::{CrashBackend, Rng, guarded, torn_image, torn_settings};
use embus::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use embus::{Broker, Payload, Queue, Receipt, Start, TopicOptions, TryRecvError};

/// The application's outbox table: order id -> the order's text (also its event's payload).
const ROWS: TableDefinition<u64, &str> = TableDefinition::new("orders");
/// A table the application commits to on its own, not through the broker.
const NOTES: TableDefinition<u64, &str> = TableDefinition::new("notes");
const PARTITIONS: u32 = 2;
/// Steps of the workload: three outbox transactions, then plain sends, in turn.
const STEPS: u64 = 24;

fn topic_options() -> TopicOptions {
    TopicOptions::default().partitions(PARTITIONS)
}

fn order(i: u64) -> String {
    format!("order {i} {}", "x".repeat((i * 7 % 40) as usize))
}

/// An outbox transaction that returned `Ok`.
#[derive(Debug, Clone)]
struct Outbox {
    id: u64,
    text: String,
    event: Receipt,
    /// Its copy in `mail`, if it sent one.
    mail: Option<Receipt>,
    /// The id of the job it acked, if any.
    acked: Option<u64>,
    /// Syncs right after the commit returned.
    syncs: u64,
}

/// A plain send (or the application's own commit) that returned `Ok`: where, what, and the
/// sync count right after.
#[derive(Debug, Clone)]
struct Plain {
    at: Receipt,
    text: String,
    syncs: u64,
}

#[derive(Debug, Default)]
struct Run {
    /// Whether the broker committed in two phases (the default), or one
    /// (`BrokerBuilder::two_phase_commit(false)`); the reopen does the same.
    two_phase: bool,
    /// Syncs when the broker was open: the store's first complete commit is in by then.
    open_syncs: u64,
    outbox: Vec<Outbox>,
    events: Vec<Plain>,
    jobs: Vec<Plain>,
    /// The application's own commits: (note id, syncs).
    notes: Vec<(u64, u64)>,
    /// Syncs in all, close included.
    syncs: u64,
}

/// The application's database on `backend`, and a broker sharing it.
fn open_on(backend: CrashBackend, two_phase: bool) -> Result<(Arc<Database>, Broker), String> {
    let db = embus::redb::Builder::new()
        .create_with_backend(backend)
        .map_err(|e| format!("open the database: {e}"))?;
    let db = Arc::new(db);
    let bus = Broker::builder()
        .database(Arc::clone(&db))
        .two_phase_commit(two_phase)
        .open()
        .map_err(|e| format!("open the broker: {e}"))?;
    Ok((db, bus))
}

/// Runs the workload on `backend`; everything must succeed (the backend never fails).
fn workload(backend: &CrashBackend, two_phase: bool) -> Run {
    let mut run = Run {
        two_phase,
        ..Run::default()
    };
    let (db, bus) = open_on(backend.clone(), two_phase).unwrap_or_else(|e| panic!("workload: {e}"));
    run.open_syncs = backend.syncs();
    let placed = bus.topic_with::<String>("placed", topic_options()).unwrap();
    let mail = bus.queue::<String>("mail").unwrap();
    let jobs = bus.queue::<String>("jobs").unwrap();
    let mut worker = jobs.consumer();
    let mut taken = 0;
    for i in 0..STEPS {
        if i % 4 == 3 {
            let text = format!("event {i}");
            let at = placed.producer().send(text.clone()).unwrap();
            let syncs = backend.syncs();
            run.events.push(Plain { at, text, syncs });
            let text = format!("job {i}");
            let at = jobs.producer().send(text.clone()).unwrap();
            let syncs = backend.syncs();
            run.jobs.push(Plain { at, text, syncs });
        } else {
            let text = order(i);
            let mut tx = bus.transaction().unwrap();
            let txn = tx.redb().unwrap();
            txn.open_table(ROWS)
                .unwrap()
                .insert(i, text.as_str())
                .unwrap();
            tx.send(&placed.producer(), text.clone()).unwrap();
            if i % 2 == 0 {
                tx.send(&mail.producer(), text.clone()).unwrap();
            }
            let mut acked = None;
            if i % 4 == 1 && taken < run.jobs.len() {
                let job = worker
                    .recv_timeout(common::WAIT)
                    .unwrap_or_else(|e| panic!("workload: job for step {i}: {e}"));
                taken += 1;
                acked = Some(job.offset());
                tx.ack(job).unwrap();
            }
            let receipts = tx
                .commit()
                .unwrap_or_else(|e| panic!("workload: commit {i}: {e}"));
            run.outbox.push(Outbox {
                id: i,
                text,
                event: receipts[0],
                mail: receipts.get(1).copied(),
                acked,
                syncs: backend.syncs(),
            });
        }
        if i == 10 || i == 18 {
            let txn = db.begin_write().unwrap();
            txn.open_table(NOTES).unwrap().insert(i, "note").unwrap();
            txn.commit().unwrap();
            run.notes.push((i, backend.syncs()));
        }
    }
    drop((worker, placed, mail, jobs));
    bus.close()
        .unwrap_or_else(|e| panic!("workload: close: {e}"));
    drop(db);
    run.syncs = backend.syncs();
    run
}

// ---------------------------------------------------------------------------------------------
// Reopening a crash image
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Tally {
    sync_points: u64,
    images: u64,
    opened: u64,
    /// Images from before the first complete commit that failed to open with an error.
    refused_early: u64,
    /// Acknowledged commits that had to be present, and were.
    acked_checked: u64,
    /// Outbox commits not (yet) acknowledged at the cut found in the image anyway.
    unacked_present: u64,
}

/// The rows of `table` in `db` (none if it does not exist yet).
fn rows(db: &Database, table: TableDefinition<u64, &str>) -> Result<HashMap<u64, String>, String> {
    let txn = db.begin_read().map_err(|e| format!("begin_read: {e}"))?;
    let table = match txn.open_table(table) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
        Err(e) => return Err(format!("open the application's table: {e}")),
    };
    let mut rows = HashMap::new();
    for row in table.iter().map_err(|e| format!("rows: {e}"))? {
        let (k, v) = row.map_err(|e| format!("row: {e}"))?;
        rows.insert(k.value(), v.value().to_owned());
    }
    Ok(rows)
}

/// Every message of `queue` by id (taken and released again), each once.
fn queued<T: Payload + Clone>(queue: &Queue<T>, name: &str) -> Result<HashMap<u64, T>, String> {
    let mut worker = queue.consumer();
    let mut held = Vec::new();
    let mut found = HashMap::new();
    for _ in 0..queue.len() {
        let m = worker
            .recv_timeout(common::WAIT)
            .map_err(|e| format!("stored {name} message: {e}"))?;
        if found.insert(m.offset(), m.payload().clone()).is_some() {
            return Err(format!("{name} message {} delivered twice", m.offset()));
        }
        held.push(m);
    }
    match worker.try_recv() {
        Err(TryRecvError::Empty) => Ok(found),
        Ok(m) => Err(format!(
            "{name} delivers more than its length: {}",
            m.offset()
        )),
        Err(e) => Err(format!("reading {name}: {e}")),
    }
}

/// Reopens `image` (the power cut after sync `k` of `run`) and checks it; `Err` says why not.
fn check_image(image: Vec<u8>, run: &Run, k: u64, tally: &mut Tally) -> Result<(), String> {
    let (db, bus) = match open_on(CrashBackend::from_image(image), run.two_phase) {
        Ok(opened) => opened,
        // redb refusing an image from before the database's first complete commit; the broker
        // must open on any database that opened (its first commit is one redb commit).
        Err(e) if k < run.open_syncs && e.starts_with("open the database") => {
            tally.refused_early += 1;
            return Ok(());
        }
        Err(e) => return Err(format!("reopen failed: {e}")),
    };
    tally.opened += 1;
    let orders = rows(&db, ROWS)?;
    let notes = rows(&db, NOTES)?;
    let placed = bus
        .topic_with::<String>("placed", topic_options())
        .map_err(|e| format!("topic after reopen: {e}"))?;
    let mail = bus
        .queue::<String>("mail")
        .map_err(|e| format!("mail: {e}"))?;
    let jobs = bus
        .queue::<String>("jobs")
        .map_err(|e| format!("jobs: {e}"))?;

    // The topic, contiguous from 0 in each partition.
    let mut events = HashMap::new();
    let mut next = vec![0u64; PARTITIONS as usize];
    let total = placed.retained();
    let mut all = placed
        .subscribe(Start::Earliest)
        .map_err(|e| format!("subscribe: {e}"))?;
    for i in 0..total {
        let m = all
            .recv_timeout(common::WAIT)
            .map_err(|e| format!("stored record {i} of {total}: {e}"))?;
        let p = m.partition() as usize;
        if m.offset() != next[p] {
            return Err(format!(
                "partition {p} skips to {} from {}",
                m.offset(),
                next[p]
            ));
        }
        next[p] += 1;
        events.insert((m.partition(), m.offset()), m.payload().clone());
    }
    if let Ok(m) = all.try_recv() {
        return Err(format!(
            "the topic delivers more than it retains: {:?}",
            m.payload()
        ));
    }
    let in_mail = queued(&mail, "mail")?;
    let in_jobs = queued(&jobs, "jobs")?;

    // Nothing that was never sent (so, with the checks below, nothing twice).
    let mut sent: HashMap<(u32, u64), &str> = HashMap::new();
    for o in &run.outbox {
        sent.insert((o.event.partition, o.event.offset), &o.text);
    }
    for e in &run.events {
        sent.insert((e.at.partition, e.at.offset), &e.text);
    }
    for (at, text) in &events {
        if sent.get(at) != Some(&text.as_str()) {
            return Err(format!("event {text:?} at {at:?} was never sent there"));
        }
    }
    let outbox: HashMap<u64, &Outbox> = run.outbox.iter().map(|o| (o.id, o)).collect();
    for (id, text) in &orders {
        if outbox.get(id).map(|o| o.text.as_str()) != Some(text.as_str()) {
            return Err(format!("row {id} {text:?} was never committed"));
        }
    }
    let mails: HashSet<(u64, &str)> = run
        .outbox
        .iter()
        .filter_map(|o| o.mail.map(|m| (m.offset, o.text.as_str())))
        .collect();
    if let Some((id, text)) = in_mail.iter().find(|(id, t)| !mails.contains(&(**id, t))) {
        return Err(format!("mail {id} {text:?} was never sent"));
    }
    let sent_jobs: HashMap<u64, &Plain> = run.jobs.iter().map(|j| (j.at.offset, j)).collect();
    if let Some((id, text)) = in_jobs
        .iter()
        .find(|(id, t)| sent_jobs.get(id).map(|j| &j.text) != Some(t))
    {
        return Err(format!("job {id} {text:?} was never sent"));
    }

    // Each outbox commit whole or not at all; the acknowledged ones there.
    let mut gone_jobs = HashSet::new();
    for o in &run.outbox {
        let row = orders.contains_key(&o.id);
        let event = events.contains_key(&(o.event.partition, o.event.offset));
        let copy = o.mail.map(|m| in_mail.contains_key(&m.offset));
        if event != row || copy.is_some_and(|c| c != row) {
            return Err(format!(
                "half of outbox commit {}: row {row}, event {event}, mail copy {copy:?}",
                o.id
            ));
        }
        if let Some(job) = o.acked {
            let job_stored = sent_jobs.get(&job).is_some_and(|j| j.syncs <= k);
            let present = in_jobs.contains_key(&job);
            if (row && present) || (!row && job_stored && !present) {
                return Err(format!(
                    "outbox commit {} acked job {job}: row {row}, job still there {present}",
                    o.id
                ));
            }
            if row {
                gone_jobs.insert(job);
            }
        }
        match (o.syncs <= k, row) {
            (true, false) => {
                return Err(format!(
                    "acknowledged outbox commit {} lost (acknowledged at sync {})",
                    o.id, o.syncs
                ));
            }
            (true, true) => tally.acked_checked += 1,
            (false, true) => tally.unacked_present += 1,
            (false, false) => {}
        }
    }
    for e in run.events.iter().filter(|e| e.syncs <= k) {
        if !events.contains_key(&(e.at.partition, e.at.offset)) {
            return Err(format!("acknowledged plain send {:?} lost", e.text));
        }
        tally.acked_checked += 1;
    }
    for j in run.jobs.iter().filter(|j| j.syncs <= k) {
        if !in_jobs.contains_key(&j.at.offset) && !gone_jobs.contains(&j.at.offset) {
            return Err(format!("acknowledged job {:?} lost, never acked", j.text));
        }
        tally.acked_checked += 1;
    }
    for &(id, syncs) in run.notes.iter().filter(|(_, s)| *s <= k) {
        if !notes.contains_key(&id) {
            return Err(format!(
                "the application's own commit {id} lost (sync {syncs})"
            ));
        }
        tally.acked_checked += 1;
    }

    // The reopened store commits another outbox transaction, where the partition left off.
    let mut tx = bus
        .transaction()
        .map_err(|e| format!("tx after reopen: {e}"))?;
    let txn = tx.redb().map_err(|e| format!("redb after reopen: {e}"))?;
    let mut table = txn
        .open_table(ROWS)
        .map_err(|e| format!("table after reopen: {e}"))?;
    table
        .insert(1000, "after")
        .map_err(|e| format!("row after reopen: {e}"))?;
    drop(table);
    tx.send(&placed.producer(), "after".to_owned())
        .map_err(|e| format!("send after reopen: {e}"))?;
    let r = tx
        .commit()
        .map_err(|e| format!("commit after reopen: {e}"))?[0];
    if r.offset != next[r.partition as usize] {
        return Err(format!(
            "offsets do not continue: {} in partition {}, expected {}",
            r.offset, r.partition, next[r.partition as usize]
        ));
    }
    drop((all, placed, mail, jobs));
    bus.close()
        .map_err(|e| format!("close after reopen: {e}"))?;
    if rows(&db, ROWS)?.get(&1000).map(String::as_str) != Some("after") {
        return Err("the row committed after the reopen is missing".to_owned());
    }
    Ok(())
}

#[test]
fn power_loss_at_every_sync_point_keeps_rows_and_messages_together() {
    cut_power_at_every_sync_point(true);
}

/// The same with one-phase commits: the broker's commits (the lent transactions included)
/// fsync once.
#[test]
fn power_loss_with_one_phase_commits_keeps_rows_and_messages_together() {
    cut_power_at_every_sync_point(false);
}

fn cut_power_at_every_sync_point(two_phase: bool) {
    let started = Instant::now();
    let (variants, seed) = torn_settings();
    let reference = guarded(move || workload(&CrashBackend::frozen_after(None), two_phase))
        .unwrap_or_else(|e| panic!("reference run: {e}"));
    let total = reference.syncs;
    assert!(
        total > reference.open_syncs,
        "the workload synced only {total} times"
    );
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut rng = Rng(seed);
    for k in 0..=total {
        tally.sync_points += 1;
        let backend = CrashBackend::frozen_after(Some(k));
        let run_backend = backend.clone();
        let run = match guarded(move || workload(&run_backend, two_phase)) {
            Ok(run) => Arc::new(run),
            Err(e) => {
                failures.push(format!("crash after sync {k}: workload: {e}"));
                continue;
            }
        };
        let (durable, unsynced) = backend.crash_image();
        let mut images = vec![("durable image".to_owned(), durable.clone())];
        for v in 0..variants {
            let image = torn_image(&durable, &unsynced, v, &mut rng);
            let what = format!(
                "torn variant {v} (seed {seed}, {} unsynced)",
                unsynced.len()
            );
            images.push((what, image));
        }
        for (what, image) in images {
            tally.images += 1;
            let run = Arc::clone(&run);
            let mut local = Tally::default();
            let result = guarded(move || {
                let result = check_image(image, &run, k, &mut local);
                (result, local)
            });
            match result {
                Ok((Ok(()), local)) => {
                    tally.opened += local.opened;
                    tally.refused_early += local.refused_early;
                    tally.acked_checked += local.acked_checked;
                    tally.unacked_present += local.unacked_present;
                }
                Ok((Err(e), _)) | Err(e) => {
                    failures.push(format!("crash after sync {k} of {total}, {what}: {e}"));
                }
            }
        }
    }
    eprintln!(
        "power loss (outbox, {}-phase commits): {} sync points tried (0..={total}; the store's first commit is in \
         after sync {}), {} images reopened ({} opened, {} refused before the first commit), {} \
         acknowledged commits checked present, {} not-yet-acknowledged outbox commits found \
         whole, {variants} torn variants per sync point (seed {seed}), in {:?}",
        if two_phase { "two" } else { "one" },
        tally.sync_points,
        reference.open_syncs,
        tally.images,
        tally.opened,
        tally.refused_early,
        tally.acked_checked,
        tally.unacked_present,
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} crash images failed:\n{}",
        failures.len(),
        tally.images,
        failures.join("\n")
    );
    assert!(
        tally.acked_checked > 0,
        "no acknowledged commit was checked"
    );
}

//! Crash recovery under `kill -9`: no acknowledged send is lost, nothing is invented.
//!
//! [`acknowledged_sends_survive_kill_9`] runs this test binary again as a child process (the
//! test [`crash_child`], which does nothing unless `EMBUS_CRASH_CHILD` names a store). The
//! child opens a durable broker and sends, from two threads, keyed records to a two-partition
//! topic and messages to a queue, printing each acknowledged send (partition, offset, sequence
//! number) on its own line, flushed. Meanwhile a consumer group acks the topic, and a queue
//! worker acks some queue messages (announcing each ack before making it) and holds the rest in
//! flight; both print what they receive. After a varying number of acknowledged sends (50 to
//! 500) the parent kills the child with SIGKILL, reopens the store in-process and checks it
//! against everything the child printed:
//!
//! - every partition's offsets are contiguous from 0 (retention is unlimited);
//! - what an earlier cycle found in the file is still there, unchanged;
//! - every acknowledged topic send is at the offset its receipt gave, with its payload and key;
//!   the cycle's stored topic sends are a prefix of the sends, in order, each once; per sender
//!   at most one send (the one in flight at the kill) is stored without having been
//!   acknowledged;
//! - the queue holds every acknowledged queue message that was not acked (in-flight ones
//!   included), under the id its receipt gave, each once, and nothing that was never sent;
//! - whatever a consumer received is still there unless acked (consumers only see stored
//!   messages);
//! - consumer group positions never move back and never pass a partition's end.
//!
//! Then the next cycle runs on the same file. Every third cycle (the second of three) commits
//! in one phase (`BrokerBuilder::two_phase_commit(false)`: one fsync per commit). Every tenth
//! cycle uses `Durability::Interval(20 ms)` (and is killed only after consumers have seen some
//! of its sends): acknowledged sends may be lost there, but what is stored must still be a
//! consistent prefix, and what consumers saw must survive.
//!
//! `EMBUS_CRASH_CYCLES=<n>` runs `n` cycles instead of 20. Each cycle re-reads the whole file,
//! so every `EMBUS_CRASH_FILE_CYCLES` cycles (default 200) the run starts again on a fresh file
//! (a new model too), which keeps a long run's cost linear. `EMBUS_CRASH_SEED=<u64>` repeats a
//! run's kill points (the seed is printed on stderr, with a line per cycle).

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::process::{Rng, env_u64, files as files_of};
use embus::{
    Broker, Durability, QueueOptions, Record, Retention, Start, TopicOptions, TryRecvError,
};

/// Names the store the child opens; without it `crash_child` returns at once.
const CHILD_ENV: &str = "EMBUS_CRASH_CHILD";
/// The cycle number, put in every payload the child sends.
const CYCLE_ENV: &str = "EMBUS_CRASH_CYCLE";
/// `interval` for `Durability::Interval(20 ms)`; anything else is `Immediate`.
const DURABILITY_ENV: &str = "EMBUS_CRASH_DURABILITY";
/// `one` for one-phase commits (`BrokerBuilder::two_phase_commit(false)`).
const PHASES_ENV: &str = "EMBUS_CRASH_PHASES";
/// Starts every line the child reports on (the test harness prints its own lines too).
const TAG: &str = "@crash";

const TOPIC: &str = "events";
const QUEUE: &str = "jobs";
const GROUP: &str = "audit";
const PARTITIONS: u32 = 2;

/// A payload: (cycle, sequence number within the cycle).
type Event = (u32, u64);

fn topic_options() -> TopicOptions {
    TopicOptions::default()
        .partitions(PARTITIONS)
        .retention(Retention::unlimited())
}

fn queue_options() -> QueueOptions {
    QueueOptions::default().capacity(1 << 24)
}

fn key_of(n: u64) -> String {
    format!("k{}", n % 7)
}

/// Prints one report line and flushes it before the caller goes on.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    // The parent may be gone (it failed); nothing to do about it here.
    let _ = writeln!(out, "{TAG} {line}");
    let _ = out.flush();
}

/// The child: sends until it is killed. Does nothing in an ordinary test run.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    // The harness may have printed "test crash_child ... " without a newline.
    println!();
    let cycle: u32 = std::env::var(CYCLE_ENV)
        .expect("child: no cycle")
        .parse()
        .expect("child: bad cycle");
    let durability = match std::env::var(DURABILITY_ENV).as_deref() {
        Ok("interval") => Durability::Interval(Duration::from_millis(20)),
        _ => Durability::Immediate,
    };
    let two_phase = std::env::var(PHASES_ENV).as_deref() != Ok("one");
    let bus = Broker::builder()
        .path(&path)
        .durability(durability)
        .two_phase_commit(two_phase)
        .open()
        .expect("child: open");
    let topic = bus
        .topic_with::<Event>(TOPIC, topic_options())
        .expect("child: topic");
    let queue = bus
        .queue_with::<Event>(QUEUE, queue_options())
        .expect("child: queue");

    let mut group = topic.join_group(GROUP).expect("child: join group");
    std::thread::spawn(move || {
        while let Ok(m) = group.recv() {
            let (c, n) = *m.payload();
            say(format_args!("G {} {} {c} {n}", m.partition(), m.offset()));
            let _ = m.ack();
        }
    });
    let mut worker = queue.consumer();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok(m) = worker.recv() {
            let (c, n) = *m.payload();
            say(format_args!("R {} {c} {n}", m.offset()));
            if c < cycle || n % 3 == 0 {
                // Announced first: the ack may reach the file before the process dies.
                say(format_args!("A {c} {n}"));
                let _ = m.ack();
            } else {
                held.push(m); // in flight when the process dies
            }
        }
    });

    say(format_args!("READY {cycle}"));
    // Two senders, so that commits are shared (and each has at most one send in flight).
    let jobs = queue.producer();
    std::thread::spawn(move || {
        for n in 0.. {
            let r = jobs.send((cycle, n)).unwrap_or_else(|e| {
                eprintln!("child: queue send {n}: {e:?}");
                std::process::exit(3) // not just this thread: the parent must notice
            });
            say(format_args!("Q {} {n}", r.offset));
        }
    });
    let events = topic.producer();
    for n in 0.. {
        let record = Record::new((cycle, n)).key(key_of(n));
        let r = events.send_record(record).expect("child: topic send");
        say(format_args!("T {} {} {n}", r.partition, r.offset));
    }
}

/// What one child reported before it died.
#[derive(Debug, Default)]
struct Report {
    /// Acknowledged topic sends: (partition, offset, n), in send order.
    topic: Vec<(u32, u64, u64)>,
    /// Acknowledged queue sends: (id, n), in send order.
    queue: Vec<(u64, u64)>,
    /// Queue messages the worker was about to ack (so they may be gone).
    acking: HashSet<Event>,
    /// Topic records the group received (so they were stored): (partition, offset, payload).
    seen_topic: Vec<(u32, u64, Event)>,
    /// Queue messages the worker received (so they were stored): (id, payload).
    seen_queue: Vec<(u64, Event)>,
    /// How many of those were sent in this cycle.
    seen_now: usize,
}

impl Report {
    fn acknowledged(&self) -> usize {
        self.topic.len() + self.queue.len()
    }

    /// Takes in one line of the child's (of cycle `now`).
    fn parse(&mut self, line: &str, now: u32) -> Result<(), String> {
        let Some(rest) = line.strip_prefix(TAG) else {
            return Ok(()); // the harness's own output
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| -> Result<u64, String> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| format!("bad line from the child: {line:?}"))
        };
        let cycle = |i: usize| u32::try_from(num(i)?).map_err(|e| e.to_string());
        match fields.first().copied() {
            Some("T") => {
                let partition = u32::try_from(num(1)?).map_err(|e| e.to_string())?;
                self.topic.push((partition, num(2)?, num(3)?));
            }
            Some("Q") => self.queue.push((num(1)?, num(2)?)),
            Some("A") => {
                self.acking.insert((cycle(1)?, num(2)?));
            }
            Some("G") => {
                let event = (cycle(3)?, num(4)?);
                let partition = u32::try_from(num(1)?).map_err(|e| e.to_string())?;
                self.seen_topic.push((partition, num(2)?, event));
                self.seen_now += usize::from(event.0 == now);
            }
            Some("R") => {
                let event = (cycle(2)?, num(3)?);
                self.seen_queue.push((num(1)?, event));
                self.seen_now += usize::from(event.0 == now);
            }
            Some("READY") => {}
            _ => return Err(format!("unknown line from the child: {line:?}")),
        }
        Ok(())
    }
}

/// Kills the child when dropped (a failing parent leaves no process behind).
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs one child on `path` until it has acknowledged `target` sends, kills it, and returns
/// everything it reported (lines already written when it died included).
fn run_child(path: &Path, cycle: u32, interval: bool, two_phase: bool, target: usize) -> Report {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_ENV, path)
        .env(CYCLE_ENV, cycle.to_string())
        .env(
            DURABILITY_ENV,
            if interval { "interval" } else { "immediate" },
        )
        .env(PHASES_ENV, if two_phase { "two" } else { "one" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaper(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut report = Report::default();
    let mut killed = false;
    loop {
        match lines.recv_timeout(common::WAIT) {
            Ok(line) => report.parse(&line, cycle).unwrap(),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                drop(child);
                panic!(
                    "cycle {cycle}: the child printed nothing for {:?} after {} acknowledged \
                     sends (hung?); its stderr:\n{}",
                    common::WAIT,
                    report.acknowledged(),
                    errors.join().unwrap()
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break, // its stdout is closed
        }
        // Under Interval durability, also after a few commits (consumers see only what is
        // stored), or it would mostly kill before the first one.
        let committed = !interval || report.seen_now >= 20;
        if !killed && report.acknowledged() >= target && committed {
            child.0.kill().unwrap(); // SIGKILL on Unix
            killed = true;
            // Keep reading: lines it wrote before it died are acknowledged sends too.
        }
    }
    let status = child.0.wait().unwrap();
    let errors = errors.join().unwrap();
    assert!(
        killed,
        "cycle {cycle}: the child exited by itself ({status}) after {} acknowledged sends; its \
         stderr:\n{errors}",
        report.acknowledged()
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "cycle {cycle}: the child was not killed by SIGKILL ({status}); its stderr:\n{errors}"
        );
    }
    report
}

/// What the file held at the last check.
#[derive(Debug, Default)]
struct Model {
    /// Per partition, the record at each offset (from 0).
    topic: Vec<Vec<Event>>,
    /// Queue messages and their ids.
    queue: HashMap<Event, u64>,
    /// The group's positions, once it has any.
    group: Option<Vec<u64>>,
}

/// Counts for the summary.
#[derive(Debug, Default)]
struct Totals {
    acknowledged: usize,
    checked: usize,
    unacknowledged_stored: usize,
    acked_gone: usize,
    earlier_acked_gone: usize,
    lost_interval: usize,
    seen: usize,
}

impl Model {
    /// Reopens the store after cycle `cycle` and checks it against the model and the report.
    fn check(
        &mut self,
        path: &Path,
        cycle: u32,
        interval: bool,
        report: &Report,
        totals: &mut Totals,
    ) {
        let ctx = format!(
            "cycle {cycle} ({})",
            if interval { "interval" } else { "immediate" }
        );
        let bus = Broker::open(path).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
        let topic = bus
            .topic_with::<Event>(TOPIC, topic_options())
            .unwrap_or_else(|e| panic!("{ctx}: topic: {e}"));
        let queue = bus
            .queue_with::<Event>(QUEUE, queue_options())
            .unwrap_or_else(|e| panic!("{ctx}: queue: {e}"));

        // The topic, read back through a subscriber (after a reopen, from the file).
        let mut stored: Vec<Vec<Event>> = vec![Vec::new(); PARTITIONS as usize];
        for p in 0..PARTITIONS {
            let offsets = topic.offsets(p).unwrap();
            assert_eq!(
                offsets.start, 0,
                "{ctx}: partition {p} was trimmed: {offsets:?}"
            );
        }
        let total = topic.retained();
        let mut all = topic.subscribe(Start::Earliest).unwrap();
        for i in 0..total {
            let m = all.recv_timeout(common::WAIT).unwrap_or_else(|e| {
                panic!("{ctx}: record {i} of {total} stored could not be read back: {e}")
            });
            let p = m.partition() as usize;
            let (c, n) = *m.payload();
            assert_eq!(
                m.offset(),
                stored[p].len() as u64,
                "{ctx}: partition {p} skipped or repeated an offset (payload {c}/{n})"
            );
            assert_eq!(
                m.key(),
                Some(key_of(n).as_bytes()),
                "{ctx}: wrong key at {p}/{}",
                m.offset()
            );
            stored[p].push((c, n));
        }
        match all.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!(
                "{ctx}: more than the {total} retained records: {:?}",
                other.map(|m| (m.partition(), m.offset(), *m.payload()))
            ),
        }
        for (p, records) in stored.iter().enumerate() {
            let end = topic.offsets(p as u32).unwrap().end;
            assert_eq!(records.len() as u64, end, "{ctx}: partition {p}'s end");
        }

        // What earlier cycles found is still there.
        if self.topic.is_empty() {
            self.topic = vec![Vec::new(); PARTITIONS as usize];
        }
        for (p, (now, old)) in stored.iter().zip(&self.topic).enumerate() {
            assert!(
                now.len() >= old.len(),
                "{ctx}: partition {p} lost records: {} stored, {} before",
                now.len(),
                old.len()
            );
            if let Some(i) = (0..old.len()).find(|&i| now[i] != old[i]) {
                panic!(
                    "{ctx}: partition {p} offset {i} changed from {:?} to {:?}",
                    old[i], now[i]
                );
            }
        }

        // This cycle's topic sends: each acknowledged one where its receipt said, and together
        // a prefix of what was sent.
        let mut reported: Vec<Vec<(u64, u64)>> = vec![Vec::new(); PARTITIONS as usize];
        for &(p, offset, n) in &report.topic {
            reported[p as usize].push((offset, n));
        }
        let mut new_ns = BTreeSet::new();
        let mut topic_extras = 0;
        let mut missing = Vec::new();
        for p in 0..PARTITIONS as usize {
            let from = self.topic[p].len();
            let new = &stored[p][from..];
            for (i, &(offset, n)) in reported[p].iter().enumerate() {
                assert_eq!(
                    offset,
                    (from + i) as u64,
                    "{ctx}: partition {p}: the receipt of send {n} gave offset {offset}, not the \
                     next one"
                );
                match new.get(i) {
                    Some(&found) => {
                        assert_eq!(found, (cycle, n), "{ctx}: wrong record at {p}/{offset}");
                        totals.checked += 1;
                    }
                    None => missing.push((p, offset, n)),
                }
            }
            for (i, &(c, n)) in new.iter().enumerate() {
                assert_eq!(
                    c,
                    cycle,
                    "{ctx}: a record of cycle {c} appeared at {p}/{}",
                    from + i
                );
                assert!(new_ns.insert(n), "{ctx}: send {n} stored twice");
                if i >= reported[p].len() {
                    topic_extras += 1;
                }
                if i > 0 {
                    assert!(
                        new[i - 1].1 < n,
                        "{ctx}: partition {p} out of send order at {}",
                        from + i
                    );
                }
            }
        }
        if !interval {
            assert!(
                missing.is_empty(),
                "{ctx}: acknowledged topic sends lost (partition, offset, n): {missing:?}"
            );
        }
        let sent_prefix = new_ns.iter().copied().eq(0..new_ns.len() as u64);
        assert!(
            sent_prefix,
            "{ctx}: the stored topic sends are not a prefix of the sends: {new_ns:?}"
        );
        assert!(
            topic_extras <= 1,
            "{ctx}: {topic_extras} topic sends stored unacknowledged; one sender has at most one \
             in flight"
        );

        // The queue.
        assert_eq!(
            queue.in_flight(),
            0,
            "{ctx}: in flight right after a reopen"
        );
        let ready = queue.len();
        let mut worker = queue.consumer();
        let mut held = Vec::with_capacity(ready);
        let mut observed: HashMap<Event, u64> = HashMap::new();
        for i in 0..ready {
            let m = worker
                .recv_timeout(common::WAIT)
                .unwrap_or_else(|e| panic!("{ctx}: queue message {i} of {ready}: {e}"));
            let previous = observed.insert(*m.payload(), m.offset());
            assert!(
                previous.is_none(),
                "{ctx}: queue message {:?} twice",
                m.payload()
            );
            held.push(m);
        }
        match worker.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!(
                "{ctx}: the queue delivered more than its length {ready}: {:?}",
                other.map(|m| *m.payload())
            ),
        }
        let ids: HashSet<u64> = observed.values().copied().collect();
        assert_eq!(ids.len(), observed.len(), "{ctx}: queue ids are not unique");
        // Earlier messages: still there unless acked since, under the same id.
        for (event, id) in &self.queue {
            match observed.get(event) {
                Some(found) => assert_eq!(found, id, "{ctx}: queue message {event:?} changed id"),
                None if report.acking.contains(event) => totals.earlier_acked_gone += 1,
                None => panic!("{ctx}: queue message {event:?} (id {id}) vanished unacked"),
            }
        }
        // This cycle's: every acknowledged one unless acked, and nothing never sent.
        let sent: HashMap<u64, u64> = report.queue.iter().map(|&(id, n)| (n, id)).collect();
        let last_sent = report.queue.last().map(|&(_, n)| n);
        let mut lost = Vec::new();
        let mut queue_extras = 0;
        for &(id, n) in &report.queue {
            match observed.get(&(cycle, n)) {
                Some(&found) => {
                    assert_eq!(
                        found, id,
                        "{ctx}: queue message {n} has id {found}, its receipt said {id}"
                    );
                    totals.checked += 1;
                }
                None if report.acking.contains(&(cycle, n)) => totals.acked_gone += 1,
                None => lost.push((id, n)),
            }
        }
        if !interval {
            assert!(
                lost.is_empty(),
                "{ctx}: acknowledged queue sends lost (id, n): {lost:?}"
            );
        }
        for (&(c, n), id) in &observed {
            if c == cycle && !sent.contains_key(&n) {
                // Only the send in flight at the kill: the one after the last acknowledged.
                assert_eq!(
                    Some(n),
                    last_sent.map_or(Some(0), |last| Some(last + 1)),
                    "{ctx}: queue message {n} (id {id}) stored but never sent"
                );
                queue_extras += 1;
            } else if c != cycle {
                assert!(
                    self.queue.contains_key(&(c, n)),
                    "{ctx}: queue message {c}/{n} appeared from nowhere"
                );
            }
        }
        // What a consumer received was stored (consumers only see stored messages), so it
        // survives in any durability mode, unless it was acked.
        for &(p, offset, event) in &report.seen_topic {
            let found = stored[p as usize].get(offset as usize);
            assert_eq!(
                found,
                Some(&event),
                "{ctx}: the group received {event:?} at {p}/{offset}, so it was stored, but the \
                 reopened file has {found:?} there"
            );
        }
        for &(id, event) in &report.seen_queue {
            if report.acking.contains(&event) {
                continue;
            }
            let found = observed.get(&event);
            assert_eq!(
                found,
                Some(&id),
                "{ctx}: the worker received {event:?} (id {id}), so it was stored, and did not \
                 ack it, but the reopened queue has {found:?}"
            );
        }
        totals.seen += report.seen_topic.len() + report.seen_queue.len();
        let lost_count = missing.len() + lost.len();
        totals.unacknowledged_stored += topic_extras + queue_extras;
        totals.acknowledged += report.acknowledged();
        totals.lost_interval += lost_count;
        eprintln!(
            "{ctx}: {} topic and {} queue sends acknowledged, {} received; {} unacknowledged \
             stored, {} lost",
            report.topic.len(),
            report.queue.len(),
            report.seen_topic.len() + report.seen_queue.len(),
            topic_extras + queue_extras,
            lost_count,
        );

        // The group never moves back, and never past what is stored.
        let group = topic.group_position(GROUP);
        if let Some(positions) = &group {
            for (p, &at) in positions.iter().enumerate() {
                assert!(
                    at <= stored[p].len() as u64,
                    "{ctx}: group position {at} past partition {p}'s end {}",
                    stored[p].len()
                );
            }
        }
        if let Some(before) = &self.group {
            let now = group
                .as_ref()
                .unwrap_or_else(|| panic!("{ctx}: the group is gone"));
            assert!(
                before.iter().zip(now).all(|(b, n)| b <= n),
                "{ctx}: group positions moved back from {before:?} to {now:?}"
            );
        }

        drop(held); // back to the queue: redelivered to the next child
        drop((worker, all, topic, queue));
        bus.close().unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
        self.topic = stored;
        self.queue = observed;
        if group.is_some() {
            self.group = group;
        }
    }
}

#[test]
fn acknowledged_sends_survive_kill_9() {
    let cycles = u32::try_from(env_u64("EMBUS_CRASH_CYCLES").unwrap_or(20)).unwrap();
    let mut rng = Rng::from_env("EMBUS_CRASH_SEED");
    let dir = common::fresh_dir("crash");
    let started = Instant::now();
    let mut totals = Totals::default();
    let (mut interval_cycles, mut one_phase_cycles) = (0, 0);
    let (mut files, mut records, mut queued) = (0, 0, 0);
    for (file, file_cycles) in files_of(cycles) {
        let path = dir.join(format!("crash-{file}.embus"));
        let mut model = Model::default();
        for cycle in file_cycles {
            let interval = cycle % 10 == 9;
            interval_cycles += u32::from(interval);
            let two_phase = cycle % 3 != 1;
            one_phase_cycles += u32::from(!two_phase);
            let target = 50 + rng.below(451) as usize;
            let report = run_child(&path, cycle, interval, two_phase, target);
            model.check(&path, cycle, interval, &report, &mut totals);
        }
        files += 1;
        records += model.topic.iter().map(Vec::len).sum::<usize>();
        queued += model.queue.len();
        let _ = std::fs::remove_file(&path);
    }
    eprintln!(
        "crash: {cycles} kill -9 cycles ({interval_cycles} with Interval durability, \
         {one_phase_cycles} with one-phase commits) in {:.1?}: \
         {} acknowledged sends checked: {} found in place, {} queue messages gone after an ack \
         (and {} of earlier cycles), {} lost in Interval cycles; {} stored unacknowledged (in \
         flight at the kill); {} receipts by consumers checked; the {files} files ended with \
         {records} topic records and {queued} queue messages",
        started.elapsed(),
        totals.acknowledged,
        totals.checked,
        totals.acked_gone,
        totals.earlier_acked_gone,
        totals.lost_interval,
        totals.unacknowledged_stored,
        totals.seen,
    );
    assert_eq!(
        totals.checked + totals.acked_gone + totals.lost_interval,
        totals.acknowledged,
        "every acknowledged send is accounted for"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

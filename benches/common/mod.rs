//! What every benchmark shares: its command line (`EMBUS_BENCH_QUICK`, `EMBUS_BENCH_ROUNDS`,
//! name filters), the machine's load and disk, medians and percentiles, the order of sides in
//! interleaved rounds, Markdown table rows, the 100-byte payload, and (in [`flow`]) the
//! end-to-end run of `benches/durable.rs` and `benches/peers.rs`.
#![allow(dead_code)] // each bench uses what it needs

pub mod flow;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bytes of every [`payload`].
pub const VALUE: usize = 100;
/// Messages per batch where a bench sends in batches (`benches/peers.rs`: also per pipeline
/// or confirm window; `benches/durable.rs`: also raw redb rows per transaction in F2).
pub const BATCH: usize = 1000;

/// A [`VALUE`]-byte payload carrying `seq` in its first 8 bytes.
pub fn payload(seq: u64) -> Vec<u8> {
    let mut v = vec![0xA5; VALUE];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    v
}

/// The sequence number [`payload`] put in.
pub fn seq_of(payload: &[u8]) -> u64 {
    u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"))
}

/// Declares topic `name` on `bus` with one partition and unlimited retention, so no run pays
/// for trimming.
pub fn unlimited_topic(bus: &embus::Broker, name: &str) -> embus::Topic<Vec<u8>> {
    let options = embus::TopicOptions::default()
        .partitions(1)
        .retention(embus::Retention::unlimited());
    bus.topic_with::<Vec<u8>>(name, options)
        .expect("declare the topic")
}

/// What `cargo bench --bench <name> [filters]` asked for.
pub struct Args {
    /// `EMBUS_BENCH_QUICK` is set (and not `0`): smaller runs.
    pub quick: bool,
    /// `EMBUS_BENCH_ROUNDS`, else the bench's default for its mode.
    pub rounds: usize,
    /// Arguments other than flags: run only sections or scenarios whose names contain one.
    pub filters: Vec<String>,
}

impl Args {
    /// Reads them; `rounds` is `(quick, full)`, the default round counts.
    pub fn read((quick_rounds, full_rounds): (usize, usize)) -> Self {
        let quick = std::env::var_os("EMBUS_BENCH_QUICK").is_some_and(|v| v != "0");
        let rounds = std::env::var("EMBUS_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { quick_rounds } else { full_rounds });
        // `cargo bench` passes `--bench`; any other argument filters by name.
        let filters = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .collect();
        Self {
            quick,
            rounds,
            filters,
        }
    }

    /// Whether the section or scenario `name` runs.
    pub fn wants(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }
}

/// The 1-minute load average (Linux), to show how busy the shared machine was.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "n/a".to_owned())
}

/// What a figure counts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Operations (messages, rows, fsyncs) per second.
    Rate,
    /// Seconds.
    Time,
    /// A plain number (sends per commit).
    Count,
}

/// A figure for the report: `12.3 k/s`, `1.45 ms`.
pub fn format_value(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Rate if value >= 1e6 => format!("{:.2} M/s", value / 1e6),
        Unit::Rate if value >= 1e4 => format!("{:.1} k/s", value / 1e3),
        Unit::Rate => format!("{value:.0} /s"),
        Unit::Time if value.abs() < 1e-3 => format!("{:.1} µs", value * 1e6),
        Unit::Time if value.abs() < 1.0 => format!("{:.2} ms", value * 1e3),
        Unit::Time => format!("{value:.2} s"),
        Unit::Count => format!("{value:.1}"),
    }
}

/// The median (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The smallest and largest of `v` (for a median's `[min–max]`).
pub fn range(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// The `p` quantile (0 to 1) of sorted durations: the nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Creates an empty bench directory, `EMBUS_BENCH_DIR` or `target/<default>`, and returns it
/// with its filesystem type; refuses tmpfs and ramfs, where fsync costs nothing.
pub fn bench_dir(default: &str) -> (PathBuf, String) {
    let dir = std::env::var_os("EMBUS_BENCH_DIR").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join(default)
        },
        PathBuf::from,
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    let fs = fs_type(&dir).unwrap_or_else(|| "unknown".to_owned());
    assert!(
        !matches!(fs.as_str(), "tmpfs" | "ramfs"),
        "{} is on {fs}: fsync costs nothing there; set EMBUS_BENCH_DIR to a real disk",
        dir.display()
    );
    (dir, fs)
}

/// The filesystem type holding `dir` (Linux: the longest matching mount in /proc/mounts).
pub fn fs_type(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            let point = point.replace("\\040", " ");
            dir.starts_with(&point)
                .then(|| (point.len(), kind.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}

/// The order of `k` sides in round `round`: rotated by one each round, and reversed in every
/// other run of `k` rounds, so that each side runs in each position, after each other side,
/// equally often. (Reversing every other round instead undoes the rotation when `k` is 2: the
/// same side then always ran first.)
pub fn order(round: usize, k: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..k).map(|i| (i + round) % k).collect();
    if k > 0 && (round / k) % 2 == 1 {
        v.reverse();
    }
    v
}

/// One Markdown table row; positive widths left-align, negative right-align.
pub fn print_row(widths: &[i32], cells: &[&str]) {
    let mut line = String::from("|");
    for (cell, width) in cells.iter().zip(widths) {
        let w = width.unsigned_abs() as usize;
        if *width > 0 {
            line.push_str(&format!(" {cell:<w$} |"));
        } else {
            line.push_str(&format!(" {cell:>w$} |"));
        }
    }
    println!("{line}");
}

/// A Markdown table's rule line under a [`print_row`] header.
pub fn print_rule(widths: &[i32]) {
    let rule: Vec<String> = widths
        .iter()
        .map(|w| "-".repeat(w.unsigned_abs() as usize))
        .collect();
    let cells: Vec<&str> = rule.iter().map(String::as_str).collect();
    print_row(widths, &cells);
}

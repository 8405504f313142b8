//! The writer's commit figures for [`Broker::stats`](crate::Broker::stats): commits and
//! records in this run, and the latency and size of the recent commits.

use std::path::Path;
use std::time::Duration;

use crate::stats::StoreStats;

/// Recent commits kept for the percentiles.
const RECENT: usize = 1024;

/// What the writer has committed; written once per commit, read by snapshots.
#[derive(Default, Clone)]
pub(super) struct Figures {
    commits: u64,
    records: u64,
    /// The recent commits, a ring: (latency in microseconds, records).
    recent: Vec<(u32, u32)>,
    /// Where the next one goes once the ring is full.
    next: usize,
}

impl Figures {
    /// One successful commit of `records` records that took `took`.
    pub(super) fn committed(&mut self, records: u64, took: Duration) {
        self.commits += 1;
        self.records += records;
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        let row = (micros, u32::try_from(records).unwrap_or(u32::MAX));
        if self.recent.len() < RECENT {
            self.recent.push(row);
        } else {
            self.recent[self.next] = row;
            self.next = (self.next + 1) % RECENT;
        }
    }

    /// The snapshot of a store at `path`, poisoned by `failed` if it is (call it on a copy:
    /// it reads the file's size and sorts the recent latencies).
    pub(super) fn stats(&self, path: &Path, failed: Option<String>) -> StoreStats {
        let mut latencies: Vec<u32> = self.recent.iter().map(|&(micros, _)| micros).collect();
        latencies.sort_unstable();
        let at = |q: f64| {
            let last = latencies.len().checked_sub(1)?;
            let i = ((last as f64) * q).round() as usize;
            Some(Duration::from_micros(u64::from(latencies[i.min(last)])))
        };
        let recent_records: u64 = self.recent.iter().map(|&(_, r)| u64::from(r)).sum();
        StoreStats {
            path: path.to_owned(),
            file_bytes: std::fs::metadata(path).ok().map(|m| m.len()),
            commits: self.commits,
            records: self.records,
            records_per_commit: if self.recent.is_empty() {
                0.0
            } else {
                recent_records as f64 / self.recent.len() as f64
            },
            commit_p50: at(0.5),
            commit_p99: at(0.99),
            poisoned: failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recent_commits() {
        let mut figures = Figures::default();
        assert_eq!(figures.stats(Path::new("x"), None).commit_p50, None);
        for ms in 1..=100 {
            figures.committed(2, Duration::from_millis(ms));
        }
        let stats = figures.stats(Path::new("x"), Some("disk full".into()));
        assert_eq!((stats.commits, stats.records), (100, 200));
        assert_eq!(stats.records_per_commit, 2.0);
        assert_eq!(stats.commit_p50, Some(Duration::from_millis(51)));
        assert_eq!(stats.commit_p99, Some(Duration::from_millis(99)));
        assert_eq!(stats.poisoned.as_deref(), Some("disk full"));
        // The ring keeps the last 1,024 only.
        for _ in 0..RECENT {
            figures.committed(1, Duration::from_micros(10));
        }
        let stats = figures.stats(Path::new("x"), None);
        assert_eq!(stats.commit_p99, Some(Duration::from_micros(10)));
        assert_eq!(stats.records_per_commit, 1.0);
        assert_eq!(stats.commits, 100 + RECENT as u64);
    }
}

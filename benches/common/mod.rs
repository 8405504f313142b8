//! What every benchmark shares: its command line (`EMBUS_BENCH_QUICK`, `EMBUS_BENCH_ROUNDS`,
//! name filters), the machine's load, and medians.
#![allow(dead_code)] // each bench uses what it needs

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

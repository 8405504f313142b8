//! A progress bar on stderr for long reads, drawn only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Reads shorter than this show no bar.
const LONG: u64 = 10_000;
/// The bar is redrawn at most this often.
const EVERY: Duration = Duration::from_millis(100);
const WIDTH: u64 = 30;

/// Counts the messages read out of an estimated total and draws `[####....] n/total`.
pub(crate) struct Progress {
    total: u64,
    done: u64,
    drawn: Option<Instant>,
    enabled: bool,
}

impl Progress {
    /// A bar for about `total` messages: off when stderr is not a terminal or the read is short.
    pub(crate) fn new(total: u64) -> Self {
        Self {
            total,
            done: 0,
            drawn: None,
            enabled: total >= LONG && std::io::stderr().is_terminal(),
        }
    }

    /// One more message read.
    pub(crate) fn step(&mut self) {
        self.done += 1;
        if !self.enabled || self.drawn.is_some_and(|at| at.elapsed() < EVERY) {
            return;
        }
        self.drawn = Some(Instant::now());
        let filled = (self.done.min(self.total) * WIDTH / self.total.max(1)) as usize;
        let bar = format!(
            "\r[{}{}] {}/{}",
            "#".repeat(filled),
            ".".repeat(WIDTH as usize - filled),
            self.done,
            self.total
        );
        let _ = std::io::stderr().write_all(bar.as_bytes());
    }

    /// Clears the bar.
    pub(crate) fn finish(&mut self) {
        if self.drawn.take().is_some() {
            let _ = std::io::stderr().write_all(b"\r\x1b[K");
        }
    }
}

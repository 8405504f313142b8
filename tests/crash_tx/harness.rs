//! The kill -9 harness of `tests/crash_tx.rs`, as in `tests/crash.rs`: the child's side (how it
//! learns its store and reports each commit) and the parent's (running a child, killing it at a
//! seeded random point).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Names the store the child opens; without it the `*_child` tests return at once.
pub const CHILD_ENV: &str = "EMBUS_CRASH_TX_CHILD";
/// The cycle number, put in what the child sends.
pub const CYCLE_ENV: &str = "EMBUS_CRASH_TX_CYCLE";
/// Starts every line the child reports on (the test harness prints its own lines too).
pub const TAG: &str = "@crash_tx";

/// Prints one report line and flushes it before the caller goes on.
pub fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    // The parent may be gone (it failed); nothing to do about it here.
    let _ = writeln!(out, "{TAG} {line}");
    let _ = out.flush();
}

/// In a child: the store and the cycle; `None` in an ordinary test run.
pub fn child_setup() -> Option<(std::path::PathBuf, u32)> {
    let path = std::env::var_os(CHILD_ENV)?;
    // The harness may have printed "test ..._child ... " without a newline.
    println!();
    let cycle = std::env::var(CYCLE_ENV)
        .expect("child: no cycle")
        .parse()
        .expect("child: bad cycle");
    Some((path.into(), cycle))
}

/// Ends the child process on a failure (not just the failing thread: the parent must notice).
pub fn die(what: std::fmt::Arguments<'_>) -> ! {
    eprintln!("child: {what}");
    std::process::exit(3)
}

/// Kills the child when dropped (a failing parent leaves no process behind).
pub struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the child test `name` on `path` (with `env` besides the store and cycle) and returns
/// the numbers of every `C` line it printed: killed with SIGKILL once it printed `kill_after.0`
/// of them and `kill_after.1` more passed (a jitter, so that the kill lands anywhere in the
/// child's loop, not always just after it printed), or, with `None`, run until it ends by
/// itself (it must succeed and print `DONE`).
pub fn run_child(
    name: &str,
    path: &Path,
    cycle: u32,
    env: &[(&str, String)],
    kill_after: Option<(usize, Duration)>,
) -> Vec<Vec<u64>> {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    command
        .args(["--exact", name, "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, path)
        .env(CYCLE_ENV, cycle.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = Reaper(command.spawn().unwrap());
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

    let mut commits = Vec::new();
    let (mut killed, mut done) = (false, false);
    loop {
        let line = match lines.recv_timeout(crate::common::WAIT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                drop(child);
                panic!(
                    "{name} cycle {cycle}: the child printed nothing for {:?} after {} commits \
                     (hung?); its stderr:\n{}",
                    crate::common::WAIT,
                    commits.len(),
                    errors.join().unwrap()
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break, // its stdout is closed
        };
        let Some(rest) = line.strip_prefix(TAG) else {
            continue; // the harness's own output
        };
        let mut fields = rest.split_whitespace();
        match fields.next() {
            Some("C") => commits.push(
                fields
                    .map(|f| f.parse().unwrap_or_else(|_| panic!("bad line {line:?}")))
                    .collect(),
            ),
            Some("DONE") => done = true,
            Some("READY") => {}
            _ => panic!("{name} cycle {cycle}: unknown line from the child: {line:?}"),
        }
        if let Some((_, jitter)) = kill_after.filter(|&(n, _)| !killed && commits.len() >= n) {
            std::thread::sleep(jitter); // not a wait for anything: moves the kill point
            child.0.kill().unwrap(); // SIGKILL on Unix
            killed = true;
            // Keep reading: lines it wrote before it died are commits too.
        }
    }
    let status = child.0.wait().unwrap();
    let errors = errors.join().unwrap();
    if kill_after.is_none() {
        assert!(
            status.success() && done,
            "{name} cycle {cycle}: the last child failed ({status}) after {} commits; its \
             stderr:\n{errors}",
            commits.len()
        );
        return commits;
    }
    assert!(
        killed,
        "{name} cycle {cycle}: the child exited by itself ({status}) after {} commits; its \
         stderr:\n{errors}",
        commits.len()
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "{name} cycle {cycle}: not killed by SIGKILL ({status}); its stderr:\n{errors}"
        );
    }
    commits
}

pub use crate::common::process::{Rng, env_u64, files};

impl Rng {
    /// When to kill a child: after `min..min + spread` commits, plus up to 4 ms.
    pub fn kill_point(&mut self, min: usize, spread: u64) -> (usize, Duration) {
        let commits = min + self.below(spread) as usize;
        (commits, Duration::from_micros(self.below(4000)))
    }
}

/// The cycle count and a generator seeded from `EMBUS_CRASH_SEED` (or the time), announced.
pub fn settings(test: &str) -> (u32, Rng) {
    let cycles = env_u64("EMBUS_CRASH_CYCLES").unwrap_or(20);
    eprintln!("{test}: kill points");
    (
        u32::try_from(cycles).unwrap(),
        Rng::from_env("EMBUS_CRASH_SEED"),
    )
}

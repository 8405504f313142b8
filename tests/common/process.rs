//! Child processes for the tests that re-run their own binary (`--exact <child test>`): a
//! [`Proc`] reads the lines its child reports and kills it (SIGKILL) or waits for it; a seeded
//! [`Rng`] repeats a run's kill points.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A child process, killed when dropped (a failing parent leaves none behind).
pub struct Proc {
    what: String,
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Proc {
    /// Runs test `test` of this test binary (alone, `--exact`) with `env`; `what` names it in
    /// failures. Only the lines it prints starting with `tag` are reported, without it.
    pub fn spawn(test: &str, tag: &'static str, what: String, env: &[(&str, String)]) -> Self {
        Self::spawn_with(&[], test, tag, what, env)
    }

    /// As [`spawn`](Self::spawn), run through the command `prefix` names (`taskset -c 0`, say;
    /// none if empty).
    pub fn spawn_with(
        prefix: &[&str],
        test: &str,
        tag: &'static str,
        what: String,
        env: &[(&str, String)],
    ) -> Self {
        let exe = std::env::current_exe().unwrap();
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        command
            .args(["--exact", test, "--nocapture", "--test-threads=1", "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some(line) = line.strip_prefix(tag) else {
                    continue; // the harness's own output
                };
                if tx.send(line.trim().to_string()).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Self {
            what,
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The next line the child reports, or `None` once its stdout closed (it ended). Fails the
    /// test if it stays silent for `limit`.
    pub fn line(&mut self, limit: Duration) -> Option<String> {
        match self.lines.recv_timeout(limit) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let (_, errors) = self.wait();
                panic!(
                    "{}: silent for {limit:?} (hung?); its stderr:\n{errors}",
                    self.what
                )
            }
        }
    }

    /// The next line the child reports within `wait`, or `None` if there is none yet or it
    /// ended.
    pub fn try_line(&mut self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Reads lines until one starts with `prefix`; returns the rest of it. Fails the test if
    /// the child ends first, or stays silent for `limit`.
    pub fn expect(&mut self, prefix: &str, limit: Duration) -> String {
        loop {
            match self.line(limit) {
                Some(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                None => {
                    let (status, errors) = self.wait();
                    panic!(
                        "{}: ended ({status}) before reporting {prefix}; its stderr:\n{errors}",
                        self.what
                    );
                }
            }
        }
    }

    /// Closes the child's stdin: its signal to stop.
    pub fn tell_to_stop(&mut self) {
        self.stdin.take();
    }

    /// Waits for the child to end; its exit status and stderr.
    pub fn wait(&mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let errors = self
            .stderr
            .take()
            .map_or_else(String::new, |t| t.join().unwrap());
        (status, errors)
    }

    /// Waits for the child to end, failing the test unless it succeeded.
    pub fn succeed(&mut self) {
        let (status, errors) = self.wait();
        assert!(
            status.success(),
            "{} failed ({status}); its stderr:\n{errors}",
            self.what
        );
    }

    /// Waits for the child to end, failing the test unless SIGKILL ended it.
    pub fn killed(&mut self) {
        let (status, errors) = self.wait();
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "{} was not killed by SIGKILL ({status}); its stderr:\n{errors}",
                self.what
            );
        }
        let _ = errors;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small deterministic generator (xorshift64*), so a seed repeats a run.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `var`, else from the clock (the seed is printed on stderr).
    pub fn from_env(var: &str) -> Self {
        let seed = env_u64(var).unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(1, |d| d.as_nanos() as u64) | 1
        });
        eprintln!("seed {seed} ({var} repeats the run)");
        Self(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

pub fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// The kill cycles `0..cycles` of a crash test, split into runs on one store file each, as
/// `(file number, its cycles)`: `EMBUS_CRASH_FILE_CYCLES` cycles per file (default 200). Each
/// cycle's check reads the whole file back, so one file for a long run would cost the square of
/// its cycle count; a fresh file every few hundred cycles keeps a 1,000-cycle run linear.
pub fn files(cycles: u32) -> impl Iterator<Item = (u32, std::ops::Range<u32>)> {
    let per_file = env_u64("EMBUS_CRASH_FILE_CYCLES").unwrap_or(200);
    let per_file = u32::try_from(per_file.max(1)).expect("EMBUS_CRASH_FILE_CYCLES fits a u32");
    (0..cycles.div_ceil(per_file))
        .map(move |file| (file, file * per_file..cycles.min((file + 1) * per_file)))
}

/// Parses the numbers of a report line.
pub fn numbers(line: &str) -> Vec<u64> {
    line.split_whitespace()
        .map(|f| f.parse().unwrap_or_else(|_| panic!("bad line {line:?}")))
        .collect()
}

//! The `embus` command-line tool: looks inside a store file (`inspect`, `tail`, `dlq`) and
//! redrives dead letters (`dlq --redrive`), through [`embus::inspect`].
//!
//! Exit codes: 0 done, 1 the command failed (the file, a name), 2 a usage error.

#![forbid(unsafe_code)]

mod args;
mod progress;
mod table;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use embus::inspect::{Cursor, Entries, ReadFrom, StoreFile};

use self::args::{Command, Parsed};
use self::progress::Progress;

/// How often `tail --follow` reopens the file.
const POLL: Duration = Duration::from_millis(500);

/// Why a command stopped.
enum Failure {
    /// A usage error: exit code 2.
    Usage(String),
    /// The command failed: exit code 1.
    Runtime(String),
    /// stdout was closed (`embus tail ... | head`): stop quietly.
    Closed,
}

impl From<embus::Error> for Failure {
    fn from(e: embus::Error) -> Self {
        Self::Runtime(e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Self::Closed
        } else {
            Self::Runtime(format!("cannot write the output: {e}"))
        }
    }
}

fn main() -> ExitCode {
    let parsed = args::parse(std::env::args_os().skip(1));
    let result = match parsed {
        Ok(Parsed::Help) => write_text(args::HELP),
        Ok(Parsed::Version) => write_text(&format!("embus {}\n", env!("CARGO_PKG_VERSION"))),
        Ok(Parsed::Run(command)) => run(command),
        Err(usage) => Err(Failure::Usage(usage)),
    };
    match result {
        Ok(()) | Err(Failure::Closed) => ExitCode::SUCCESS,
        Err(Failure::Runtime(message)) => {
            eprintln!("embus: error: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("embus: {message}\nTry `embus --help`.");
            ExitCode::from(2)
        }
    }
}

fn write_text(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Inspect { file, json } => {
            let store = StoreFile::open(&file)?;
            let summary = store.summary()?;
            if json {
                let text = serde_json::to_string_pretty(&summary)
                    .map_err(|e| Failure::Runtime(e.to_string()))?;
                write_text(&(text + "\n"))
            } else {
                write_text(&table::summary(&summary))
            }
        }
        Command::Tail {
            file,
            name,
            from,
            follow,
        } => tail(&file, &name, &from, follow),
        Command::Dlq {
            file,
            queue,
            json,
            redrive: None,
        } => {
            let store = StoreFile::open(&file)?;
            let entries = read(&store, &queue, &ReadFrom::Earliest)?;
            let mut progress = Progress::new(entries.estimate());
            let mut out = std::io::stdout().lock();
            let mut rows = Vec::new();
            for entry in entries {
                let entry = entry?;
                progress.step();
                if json {
                    writeln!(out, "{}", json_line(&entry)?)?;
                } else {
                    rows.push(table::dead_letter_row(&entry));
                }
            }
            progress.finish();
            if !json {
                out.write_all(table::dead_letters(rows).as_bytes())?;
            }
            out.flush()?;
            Ok(())
        }
        Command::Dlq {
            file,
            queue,
            redrive: Some((to, limit)),
            ..
        } => {
            let store = StoreFile::open(&file)?;
            let moved = store.redrive(&queue, &to, limit)?;
            let s = if moved == 1 { "" } else { "s" };
            write_text(&format!(
                "moved {moved} message{s} from `{queue}` to `{to}`\n"
            ))
        }
    }
}

/// `store.read`, with an unknown name's error listing the names there are.
fn read<'a>(store: &'a StoreFile, name: &str, from: &ReadFrom) -> Result<Entries<'a>, Failure> {
    match store.read(name, from) {
        Ok(entries) => Ok(entries),
        Err(e @ embus::Error::NotFound { .. }) => {
            let summary = store.summary()?;
            let list = |names: Vec<&str>| {
                if names.is_empty() {
                    "(none)".to_owned()
                } else {
                    names.join(", ")
                }
            };
            let topics = list(summary.topics.iter().map(|t| t.name.as_str()).collect());
            let queues = list(summary.queues.iter().map(|q| q.name.as_str()).collect());
            Err(Failure::Runtime(format!(
                "{e} in {}\n  topics: {topics}\n  queues: {queues}",
                store.path().display()
            )))
        }
        Err(e) => Err(e.into()),
    }
}

fn json_line(entry: &embus::inspect::Entry) -> Result<String, Failure> {
    serde_json::to_string(entry).map_err(|e| Failure::Runtime(e.to_string()))
}

/// Prints `entries` as JSON lines; returns where they stopped.
fn print(entries: Entries<'_>, progress: &mut Progress) -> Result<Cursor, Failure> {
    let mut entries = entries;
    let mut out = std::io::stdout().lock();
    for entry in entries.by_ref() {
        let entry = entry?;
        progress.step();
        writeln!(out, "{}", json_line(&entry)?)?;
    }
    out.flush()?;
    Ok(entries.cursor())
}

fn tail(file: &std::path::Path, name: &str, from: &ReadFrom, follow: bool) -> Result<(), Failure> {
    let mut waiting = false;
    let store = if follow {
        loop {
            match StoreFile::try_open(file)? {
                Some(store) => break store,
                None => {
                    notice(file, &mut waiting);
                    std::thread::sleep(POLL);
                }
            }
        }
    } else {
        StoreFile::open(file)?
    };
    let entries = read(&store, name, from)?;
    let mut progress = Progress::new(if follow { 0 } else { entries.estimate() });
    let mut cursor = print(entries, &mut progress)?;
    progress.finish();
    drop(store);
    if !follow {
        return Ok(());
    }
    // redb cannot share the file with a running broker: reopen it now and then, and print
    // what was stored since.
    loop {
        std::thread::sleep(POLL);
        match StoreFile::try_open(file)? {
            Some(store) => {
                waiting = false;
                cursor = print(store.resume(&cursor)?, &mut Progress::new(0))?;
            }
            None => notice(file, &mut waiting),
        }
    }
}

/// Says once (until the file is free again) that a process holds the file.
fn notice(file: &std::path::Path, waiting: &mut bool) {
    if !*waiting {
        eprintln!(
            "embus: {} is open in another process; waiting until it closes it (checking every \
             500 ms)",
            file.display()
        );
        *waiting = true;
    }
}

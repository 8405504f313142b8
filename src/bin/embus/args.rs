//! The command line: `embus inspect | tail | dlq ...`, parsed by hand (no dependency).

use std::ffi::OsString;
use std::path::PathBuf;

use embus::inspect::ReadFrom;

/// `embus --help`.
pub(crate) const HELP: &str = "\
embus: look inside an embus store file

Usage:
  embus inspect FILE [--json]
  embus tail FILE NAME [--from START] [--follow]
  embus dlq FILE QUEUE [--json]
  embus dlq FILE QUEUE --redrive TO [--limit N]

Commands:
  inspect   Topics (options, partitions with offsets and sizes, groups with position and
            lag) and queues (depth, delivered, dead letters); a table, or JSON with --json.
  tail      The messages of topic or queue NAME, one JSON object per line: topic and
            partition and offset, or queue and id and delivery count; timestamp (RFC 3339
            and nanoseconds), key, headers (UTF-8 text, or {\"base64\": ...}), and the payload
            (\"payload\", the JSON itself, if the store's codec is JSON; else
            \"payload_base64\"). A topic is printed partition by partition.
  dlq       The messages of QUEUE (a dead-letter queue is an ordinary queue) with the queue
            they came from, the reason and the delivery count; a table, or JSON lines with
            --json. With --redrive TO, moves up to N (default: all) of them to the end of
            queue TO instead, as Queue::redrive does (delivery count back to 0): the only
            command that changes the file.

Options:
  --from START  earliest (default), latest, an offset (topic: in every partition) or id
                (queue), or an RFC 3339 time such as 2026-12-06T10:00:00Z
  --follow      keep printing new messages until Ctrl-C. A running broker holds its file
                exclusively, so the file is reopened every 500 ms and read while no process
                holds it: new messages appear once the broker closes the file (one notice on
                stderr says it is waiting). Messages stored and removed (acked, trimmed)
                while the broker ran are never seen. While it reads, the tool holds the
                file too: an application opening it in that moment is refused (and told so).
  --json        JSON instead of a table
  --redrive TO  move the messages to queue TO (same payload type, not QUEUE itself)
  --limit N     move at most N messages
  -h, --help    this help
  -V, --version the version

The file is opened read-only (except --redrive); a file a running process holds is refused
with an error that says so. Progress shows on stderr during long reads when stderr is a
terminal.

Exit codes: 0 done, 1 the command failed (the file, a name), 2 a usage error.
";

/// A command to run.
#[derive(Debug)]
pub(crate) enum Command {
    Inspect {
        file: PathBuf,
        json: bool,
    },
    Tail {
        file: PathBuf,
        name: String,
        from: ReadFrom,
        follow: bool,
    },
    Dlq {
        file: PathBuf,
        queue: String,
        json: bool,
        /// Queue to move to, and the limit.
        redrive: Option<(String, Option<usize>)>,
    },
}

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Parsed {
    Help,
    Version,
    Run(Command),
}

/// Parses the arguments after the program name; `Err` is a usage error's message.
pub(crate) fn parse(args: impl Iterator<Item = OsString>) -> Result<Parsed, String> {
    let mut positional: Vec<OsString> = Vec::new();
    let mut flags = Flags::default();
    let mut args = args.peekable();
    let mut only_positional = false;
    while let Some(arg) = args.next() {
        let text = arg.to_str().unwrap_or("");
        if only_positional || !text.starts_with('-') || text == "-" {
            positional.push(arg);
            continue;
        }
        let (flag, inline) = match text.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (text, None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            let v = args.next().ok_or(format!("{name} needs a value"))?;
            v.into_string()
                .map_err(|_| format!("{name}: the value is not UTF-8"))
        };
        match flag {
            "--" => only_positional = true,
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "--json" => flags.json = true,
            "--follow" | "-f" => flags.follow = true,
            "--from" => flags.from = Some(value("--from")?),
            "--redrive" => flags.redrive = Some(value("--redrive")?),
            "--limit" => flags.limit = Some(value("--limit")?),
            _ => return Err(format!("unknown option `{text}`")),
        }
    }
    let mut positional = positional.into_iter();
    let Some(command) = positional.next() else {
        return Err("no command given (inspect, tail or dlq)".to_owned());
    };
    let command = command.to_string_lossy().into_owned();
    let rest: Vec<OsString> = positional.collect();
    let parsed = match command.as_str() {
        "help" => return Ok(Parsed::Help),
        "inspect" => {
            let [file] = take::<1>(&command, rest, "FILE")?;
            flags.allow(&command, &["--json"])?;
            Command::Inspect {
                file: file.into(),
                json: flags.json,
            }
        }
        "tail" => {
            let [file, name] = take::<2>(&command, rest, "FILE NAME")?;
            flags.allow(&command, &["--from", "--follow"])?;
            let from = match &flags.from {
                Some(text) => text.parse().map_err(|e| format!("--from: {e}"))?,
                None => ReadFrom::Earliest,
            };
            Command::Tail {
                file: file.into(),
                name: utf8(name)?,
                from,
                follow: flags.follow,
            }
        }
        "dlq" => {
            let [file, queue] = take::<2>(&command, rest, "FILE QUEUE")?;
            flags.allow(&command, &["--json", "--redrive", "--limit"])?;
            if flags.limit.is_some() && flags.redrive.is_none() {
                return Err("--limit goes with --redrive".to_owned());
            }
            if flags.json && flags.redrive.is_some() {
                return Err("--json lists dead letters; --redrive moves them: not both".into());
            }
            let limit = match &flags.limit {
                Some(text) => Some(
                    text.parse::<usize>()
                        .map_err(|_| format!("--limit: {text:?} is not a number"))?,
                ),
                None => None,
            };
            Command::Dlq {
                file: file.into(),
                queue: utf8(queue)?,
                json: flags.json,
                redrive: flags.redrive.take().map(|to| (to, limit)),
            }
        }
        other => return Err(format!("unknown command `{other}` (inspect, tail or dlq)")),
    };
    Ok(Parsed::Run(parsed))
}

/// The options given, checked against the command's.
#[derive(Debug, Default)]
struct Flags {
    json: bool,
    follow: bool,
    from: Option<String>,
    redrive: Option<String>,
    limit: Option<String>,
}

impl Flags {
    fn allow(&self, command: &str, allowed: &[&str]) -> Result<(), String> {
        let given = [
            ("--json", self.json),
            ("--follow", self.follow),
            ("--from", self.from.is_some()),
            ("--redrive", self.redrive.is_some()),
            ("--limit", self.limit.is_some()),
        ];
        match given.iter().find(|(f, on)| *on && !allowed.contains(f)) {
            Some((flag, _)) => Err(format!("`{command}` takes no {flag}")),
            None => Ok(()),
        }
    }
}

fn take<const N: usize>(
    command: &str,
    rest: Vec<OsString>,
    what: &str,
) -> Result<[OsString; N], String> {
    let count = rest.len();
    rest.try_into()
        .map_err(|_| format!("`{command}` takes {what} (got {count} arguments)"))
}

fn utf8(name: OsString) -> Result<String, String> {
    name.into_string()
        .map_err(|n| format!("{n:?}: names are UTF-8 (ASCII letters, digits, '.', '_', '-')"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Result<Parsed, String> {
        parse(line.split_whitespace().map(OsString::from))
    }

    #[test]
    fn parses_each_command() {
        assert!(matches!(run("--help"), Ok(Parsed::Help)));
        assert!(matches!(
            run("inspect f --json"),
            Ok(Parsed::Run(Command::Inspect { json: true, .. }))
        ));
        assert!(matches!(
            run("tail f t --from=7 -f"),
            Ok(Parsed::Run(Command::Tail {
                from: ReadFrom::Offset(7),
                follow: true,
                ..
            }))
        ));
        assert!(matches!(
            run("dlq f q --redrive to --limit 3"),
            Ok(Parsed::Run(Command::Dlq {
                redrive: Some((_, Some(3))),
                ..
            }))
        ));
    }

    #[test]
    fn refuses_usage_errors() {
        for line in [
            "",
            "inspect",
            "inspect f g",
            "inspect f --follow",
            "tail f",
            "tail f t --from yesterday",
            "tail f t --from",
            "dlq f q --limit 3",
            "dlq f q --redrive to --limit x",
            "frobnicate f",
            "inspect f --bogus",
        ] {
            assert!(run(line).is_err(), "{line}");
        }
    }
}

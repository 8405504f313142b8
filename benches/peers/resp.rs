//! A minimal blocking Redis client for `benches/peers.rs`: RESP2 commands written to a buffered
//! `TcpStream`, replies read back in order. Pipelining is writing several commands before one
//! flush and reading as many replies.
//!
//! It is what the bench needs and no more (no TLS, no AUTH, no RESP3, no reconnect), instead of
//! the `redis` crate and its dependencies in the lockfile for one bench (see `peer-bench` in
//! Cargo.toml).

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR …`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$n`, `None` for `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*n`, `None` for `*-1` (e.g. a blocking read that timed out).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The bulk or status string as text.
    pub(super) fn text(&self) -> String {
        match self {
            Reply::Status(s) => s.clone(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    /// The array's items (none for a null array).
    pub(super) fn items(self) -> Vec<Reply> {
        match self {
            Reply::Array(items) => items.unwrap_or_default(),
            other => panic!("expected an array reply, got {other:?}"),
        }
    }

    /// The bulk string's bytes.
    pub(super) fn bytes(self) -> Vec<u8> {
        match self {
            Reply::Bulk(Some(b)) => b,
            other => panic!("expected a bulk reply, got {other:?}"),
        }
    }
}

/// One connection.
pub(super) struct Conn {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

impl Conn {
    /// Connects to `addr` (`host:port`).
    pub(super) fn connect(addr: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Self {
            reader: BufReader::with_capacity(1 << 16, stream.try_clone()?),
            writer: BufWriter::with_capacity(1 << 16, stream),
        })
    }

    /// Queues one command (sent at the next [`flush`](Self::flush)).
    pub(super) fn queue(&mut self, args: &[&[u8]]) {
        let w = &mut self.writer;
        let result = (|| {
            write!(w, "*{}\r\n", args.len())?;
            for arg in args {
                write!(w, "${}\r\n", arg.len())?;
                w.write_all(arg)?;
                w.write_all(b"\r\n")?;
            }
            io::Result::Ok(())
        })();
        result.expect("write to Redis");
    }

    /// Sends the queued commands.
    pub(super) fn flush(&mut self) {
        self.writer.flush().expect("write to Redis");
    }

    /// Reads the next reply, which must not be an error.
    pub(super) fn read(&mut self) -> Reply {
        match self.read_reply().expect("read from Redis") {
            Reply::Error(e) => panic!("Redis: {e}"),
            reply => reply,
        }
    }

    /// Sends one command and reads its reply, which must not be an error.
    pub(super) fn call(&mut self, args: &[&[u8]]) -> Reply {
        self.queue(args);
        self.flush();
        self.read()
    }

    /// Sends one command and reads its reply, errors included.
    pub(super) fn try_call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        self.queue(args);
        self.writer.flush()?;
        self.read_reply()
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if !line.ends_with("\r\n") {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "reply cut"));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1.min(line.len()));
        let number = || {
            rest.parse::<i64>()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, line.clone()))
        };
        Ok(match kind {
            "+" => Reply::Status(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(number()?),
            "$" => match usize::try_from(number()?) {
                Err(_) => Reply::Bulk(None),
                Ok(len) => {
                    let mut data = vec![0; len + 2];
                    self.reader.read_exact(&mut data)?;
                    data.truncate(len);
                    Reply::Bulk(Some(data))
                }
            },
            "*" => match usize::try_from(number()?) {
                Err(_) => Reply::Array(None),
                Ok(len) => {
                    let mut items = Vec::with_capacity(len);
                    for _ in 0..len {
                        items.push(self.read_reply()?);
                    }
                    Reply::Array(Some(items))
                }
            },
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, line)),
        })
    }
}

//! The Redis Streams side of `benches/peers.rs`: `XADD` pipelined, `XREADGROUP` + `XACK`, with
//! AOF on and `appendfsync always` for the run ([`AofGuard`] puts the old settings back).

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::resp::{Conn, Reply};
use super::{BATCH, Ctx, Flow, POLL, Peer, e2e, payload, ping, seq_of, services};

/// Redis on this machine.
const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The consumer group of the e2e and latency runs.
const GROUP: &[u8] = b"bench";

/// Redis Streams through [`Conn`].
pub(super) struct Redis {
    addr: String,
}

/// Puts Redis's `appendonly` and `appendfsync` back as they were when dropped (also while a
/// panic unwinds).
pub(super) struct AofGuard {
    addr: String,
    appendonly: String,
    appendfsync: String,
}

impl Drop for AofGuard {
    fn drop(&mut self) {
        let restore = || -> std::io::Result<()> {
            let mut conn = Conn::connect(&self.addr)?;
            for (name, value) in [
                ("appendonly", &self.appendonly),
                ("appendfsync", &self.appendfsync),
            ] {
                let reply =
                    conn.try_call(&[b"CONFIG", b"SET", name.as_bytes(), value.as_bytes()])?;
                if let Reply::Error(e) = reply {
                    eprintln!("Redis: could not put {name} back to {value}: {e}");
                }
            }
            Ok(())
        };
        match restore() {
            Ok(()) => eprintln!(
                "Redis: appendonly {} and appendfsync {} restored",
                self.appendonly, self.appendfsync
            ),
            Err(e) => eprintln!(
                "Redis: could not restore appendonly {} and appendfsync {}: {e}",
                self.appendonly, self.appendfsync
            ),
        }
    }
}

/// The value of `CONFIG GET name`.
fn config(conn: &mut Conn, name: &str) -> Result<String, String> {
    match conn.try_call(&[b"CONFIG", b"GET", name.as_bytes()]) {
        Ok(Reply::Array(Some(items))) if items.len() == 2 => Ok(items[1].text()),
        other => Err(format!("CONFIG GET {name}: {other:?}")),
    }
}

/// `field:value` from an `INFO` section.
fn info(conn: &mut Conn, section: &str, field: &str) -> Option<String> {
    let text = conn.call(&[b"INFO", section.as_bytes()]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::to_owned)
}

impl Redis {
    /// Connects, turns AOF on with `appendfsync always`, and waits for the rewrite that starts
    /// the AOF; `Err` says why Redis is skipped.
    pub(super) fn connect() -> Result<(Self, AofGuard), String> {
        let url = std::env::var("EMBUS_REDIS_URL").unwrap_or_else(|_| REDIS_URL.to_owned());
        let addr = services::host_port(&url);
        let reachable = addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
        if !reachable {
            return Err(format!(
                "not reachable at {addr}; start it (or set EMBUS_REDIS_URL) to compare with it"
            ));
        }
        let mut conn = Conn::connect(&addr).map_err(|e| format!("connect to {addr}: {e}"))?;
        let guard = AofGuard {
            addr: addr.clone(),
            appendonly: config(&mut conn, "appendonly")?,
            appendfsync: config(&mut conn, "appendfsync")?,
        };
        for (name, value) in [("appendfsync", "always"), ("appendonly", "yes")] {
            match conn.try_call(&[b"CONFIG", b"SET", name.as_bytes(), value.as_bytes()]) {
                Ok(Reply::Status(_)) => {}
                other => return Err(format!("CONFIG SET {name} {value}: {other:?}")),
            }
        }
        // Turning AOF on starts a rewrite; measure once it is done.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let busy = ["aof_rewrite_in_progress", "aof_rewrite_scheduled"]
                .iter()
                .any(|f| info(&mut conn, "persistence", f).as_deref() != Some("0"));
            if !busy {
                break;
            }
            if Instant::now() > deadline {
                return Err("the AOF rewrite did not finish in 60 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let version = info(&mut conn, "server", "redis_version").unwrap_or_default();
        println!(
            "Redis {version} at {addr}: appendonly yes, appendfsync always for the run (was {} / {})",
            guard.appendonly, guard.appendfsync
        );
        Ok((Self { addr }, guard))
    }

    fn conn(&self) -> Conn {
        Conn::connect(&self.addr).expect("connect to Redis")
    }

    /// A fresh stream key with the bench's group on it.
    fn stream(&self, conn: &mut Conn, test: &str) -> String {
        let key = services::unique(&format!("embus-bench-{test}"));
        conn.call(&[
            b"XGROUP",
            b"CREATE",
            key.as_bytes(),
            GROUP,
            b"$",
            b"MKSTREAM",
        ]);
        key
    }
}

/// Pipelines `XADD`s of `BATCH` messages from `from` until `deadline`; returns how many.
fn xadd_until(conn: &mut Conn, key: &str, from: u64, deadline: Instant) -> u64 {
    let mut n = from;
    loop {
        for seq in n..n + BATCH as u64 {
            conn.queue(&[b"XADD", key.as_bytes(), b"*", b"d", &payload(seq)]);
        }
        conn.flush();
        for _ in 0..BATCH {
            conn.read();
        }
        n += BATCH as u64;
        if Instant::now() >= deadline {
            return n - from;
        }
    }
}

/// The entries of an `XREADGROUP` reply on one stream: (id, the `d` field's value).
fn entries(reply: Reply) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(stream) = reply.items().into_iter().next() else {
        return Vec::new(); // timed out
    };
    let mut stream = stream.items();
    let entries = stream.pop().expect("the stream's entries").items();
    entries
        .into_iter()
        .map(|entry| {
            let mut entry = entry.items();
            let mut fields = entry.pop().expect("fields").items();
            let value = fields.pop().expect("the value").bytes();
            (entry.pop().expect("the id").bytes(), value)
        })
        .collect()
}

/// `XREADGROUP` of at most `count`, waiting at most `block_ms` (0: for ever).
fn xreadgroup(conn: &mut Conn, key: &str, count: usize, block_ms: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (count, block) = (count.to_string(), block_ms.to_string());
    let reply = conn.call(&[
        b"XREADGROUP",
        b"GROUP",
        GROUP,
        b"c",
        b"COUNT",
        count.as_bytes(),
        b"BLOCK",
        block.as_bytes(),
        b"STREAMS",
        key.as_bytes(),
        b">",
    ]);
    entries(reply)
}

impl Peer for Redis {
    fn name(&self) -> &'static str {
        "Redis Streams"
    }

    fn durability(&self) -> &'static str {
        "AOF, appendfsync always"
    }

    fn produce(&self, ctx: &Ctx, warm: bool) -> f64 {
        let mut conn = self.conn();
        let key = services::unique("embus-bench-produce");
        // Untimed: creates the key.
        conn.call(&[b"XADD", key.as_bytes(), b"*", b"d", &payload(0)]);
        let start = Instant::now();
        let n = xadd_until(&mut conn, &key, 1, start + ctx.window(warm));
        let rate = n as f64 / start.elapsed().as_secs_f64();
        conn.call(&[b"DEL", key.as_bytes()]);
        rate
    }

    fn e2e(&self, ctx: &Ctx, warm: bool) -> f64 {
        let mut admin = self.conn();
        let key = self.stream(&mut admin, "e2e");
        let rate = e2e(
            ctx.window(warm),
            |flow: &Flow| {
                let mut conn = self.conn();
                xadd_until(&mut conn, &key, 0, flow.go())
            },
            |flow: &Flow| {
                let mut conn = self.conn();
                flow.go();
                let mut acked = 0;
                while !flow.done(acked) {
                    let entries = xreadgroup(&mut conn, &key, BATCH, POLL.as_millis() as u64);
                    if entries.is_empty() {
                        flow.check(acked);
                        continue;
                    }
                    for (id, _) in &entries {
                        conn.queue(&[b"XACK", key.as_bytes(), GROUP, id]);
                    }
                    conn.flush();
                    for _ in &entries {
                        assert_eq!(conn.read(), Reply::Int(1), "XACK");
                    }
                    acked += entries.len() as u64;
                }
                acked
            },
        )
        .rate();
        admin.call(&[b"DEL", key.as_bytes()]);
        rate
    }

    fn latency(&self, ctx: &Ctx, warm: bool) -> Vec<f64> {
        let mut producer = self.conn();
        let key = self.stream(&mut producer, "latency");
        let figures = ping(
            ctx.samples(warm),
            |seq| {
                producer.call(&[b"XADD", key.as_bytes(), b"*", b"d", &payload(seq)]);
            },
            |listener, count| {
                let mut conn = self.conn();
                listener.ready();
                let mut got = 0;
                while got < count {
                    for (id, value) in xreadgroup(&mut conn, &key, 1, 0) {
                        let at = Instant::now();
                        conn.call(&[b"XACK", key.as_bytes(), GROUP, &id]);
                        listener.report(seq_of(&value), at);
                        got += 1;
                    }
                }
            },
        );
        producer.call(&[b"DEL", key.as_bytes()]);
        figures
    }
}

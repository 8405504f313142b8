//! The real servers the bridge tests talk to (NATS with JetStream, RabbitMQ), and a loopback
//! TCP proxy to cut and restore the connection to one.
//!
//! A test asks [`nats`] or [`amqp`] for the server's URL. When the server is unreachable it
//! gets `None` and returns early after a `SKIPPED:` line on stderr, so a plain `cargo test` on a
//! machine without the servers passes; with `EMBUS_REQUIRE_SERVICES=1` (set by `.ci/run`) an
//! unreachable server fails the test instead. `EMBUS_NATS_URL` and `EMBUS_AMQP_URL` point the
//! tests at other servers.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// NATS with JetStream on this machine.
pub const NATS_URL: &str = "nats://127.0.0.1:4222";
/// RabbitMQ on this machine (guest/guest, vhost `/`).
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The NATS server's URL, or `None` (after a `SKIPPED:` line) when it is unreachable.
pub fn nats() -> Option<String> {
    service("NATS JetStream", "EMBUS_NATS_URL", NATS_URL)
}

/// The RabbitMQ server's URL, or `None` (after a `SKIPPED:` line) when it is unreachable.
pub fn amqp() -> Option<String> {
    service("RabbitMQ", "EMBUS_AMQP_URL", AMQP_URL)
}

/// Host and port of a `scheme://[user:pass@]host:port[/...]` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split(['/', '?']).next().unwrap_or(rest).to_string()
}

/// `url` with its host and port replaced by `addr` (to go through a [`Proxy`]).
pub fn via(url: &str, addr: SocketAddr) -> String {
    url.replacen(&host_port(url), &addr.to_string(), 1)
}

fn service(name: &str, env: &str, default: &str) -> Option<String> {
    let url = std::env::var(env).unwrap_or_else(|_| default.to_string());
    let hostport = host_port(&url);
    let reachable = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    if reachable {
        return Some(url);
    }
    assert!(
        std::env::var_os("EMBUS_REQUIRE_SERVICES").is_none(),
        "{name} is not reachable at {hostport}, and EMBUS_REQUIRE_SERVICES is set: start it \
         (.ci/run does) or unset the variable to skip"
    );
    eprintln!(
        "SKIPPED: {name} is not reachable at {hostport}; start it (or set {env}) to run this \
         test"
    );
    None
}

/// A name no other test or run uses: `prefix`, this process and a counter.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A loopback TCP proxy in front of a server: [`cut`](Self::cut) closes every connection and
/// refuses new ones, [`restore`](Self::restore) lets them through again.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
}

struct State {
    upstream: SocketAddr,
    open: AtomicBool,
    closed: AtomicBool,
    /// Both ends of every live connection, to shut down on a cut.
    live: Mutex<Vec<TcpStream>>,
    /// Connections accepted so far.
    accepted: AtomicU64,
}

impl Proxy {
    /// Starts a proxy to the server at `url`'s host and port.
    pub fn start(url: &str) -> Self {
        let upstream = host_port(url).to_socket_addrs().unwrap().next().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream,
            open: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
        });
        let accepting = Arc::clone(&state);
        std::thread::spawn(move || accept(&listener, &accepting));
        Self { addr, state }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` pointed at this proxy.
    pub fn url(&self, url: &str) -> String {
        via(url, self.addr)
    }

    /// Closes every connection through the proxy and refuses new ones until [`restore`].
    pub fn cut(&self) {
        self.state.open.store(false, Ordering::SeqCst);
        for stream in self.state.live.lock().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.state.open.store(true, Ordering::SeqCst);
    }

    /// Connections accepted and passed through so far (a reconnect adds one).
    pub fn connections(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.state.closed.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop to see `closed`
    }
}

fn accept(listener: &TcpListener, state: &Arc<State>) {
    for client in listener.incoming() {
        if state.closed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if !state.open.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect(state.upstream) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        state.live.lock().extend([c3, s3]);
        state.accepted.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || pipe(client, server));
        std::thread::spawn(move || pipe(s2, c2));
    }
}

/// Copies `from` to `to` until either side closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Polls `done` until it holds, failing the test with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

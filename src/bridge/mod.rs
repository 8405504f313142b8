//! Bridges to NATS JetStream ([`nats`], feature `nats`) and RabbitMQ ([`amqp`], feature
//! `amqp`): the way out of one process. This module owns what both share: the running
//! [`Bridge`] handle and its [`BridgeStats`], [`BridgeError`], the [`DeadLetter`] a bridge
//! parks what it cannot deliver as, the [`Envelope`] routes are derived from, and the two
//! relay loops (outbound and inbound) each client plugs into.
//!
//! Like Kafka Connect or a RabbitMQ Shovel, a bridge relays a local durable consumer to the
//! remote server, or a remote durable consumer to a local topic or queue, and loses nothing when
//! either side crashes:
//!
//! - **Outbound** publishes each message with the server's confirm (the JetStream `PubAck`,
//!   AMQP publisher confirms with `mandatory`) and acks it locally only after that confirm, with
//!   at most `window` messages in flight. Each carries its id ([`Record::id`](crate::Record::id),
//!   else `source/instance/partition/offset/timestamp`: the instance is a random number the
//!   source broker's store draws when it is created and keeps, and the timestamp is in
//!   nanoseconds as stored with the record, so that two brokers with a topic of the same name
//!   do not share ids; give each replica its own store, not a copy of one) as
//!   `Nats-Msg-Id` or AMQP `message_id`, so a redelivery after a crash is a duplicate the far
//!   side can drop.
//! - **Inbound** receives with manual acks and a prefetch, stores each message locally with its
//!   remote id as [`Record::id`](crate::Record::id), and acks it remotely only once the local send
//!   is durable. A redelivery then meets the target's [dedupe window](crate::Dedupe).
//!
//! A message the server refuses (unroutable, rejected) or a payload that does not decode goes
//! to a local dead-letter queue of [`DeadLetter`]s with the reason and the bytes; it is never
//! retried in a loop, and never dropped.
//!
//! Each bridge runs on its own thread (`embus-bridge`) with a small single-threaded tokio
//! runtime, so blocking applications need no runtime of their own.
//!
//! | Local side | Across the bridge | Far side |
//! |---|---|---|
//! | outbound, group member or queue consumer (at least once) | confirm, then local ack; redelivery after a crash | NATS: once per `Nats-Msg-Id` within the stream's duplicate window; AMQP: at least once, `message_id` set for the consumer to dedupe |
//! | inbound target with a dedupe window | local commit, then remote ack; redelivery after a crash | once per remote id within the window (NATS: `Nats-Msg-Id`, else stream/sequence/time; AMQP: `message_id`) |
//! | inbound target without a dedupe window | same | at least once |
//! | per-key order, outbound | one connection, publishes in order | kept, except that a message published again after a reconnect can land after later ones the server already had |
//! | per-key order, inbound | stored in the order received | kept across a clean stop (what was pulled and not stored is handed back first); after a crash or a lost connection, JetStream redelivers the unacked messages after the consumer's ack wait, behind newer ones |

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::codec::CodecKind;
use crate::error::Error;
use crate::options::Backoff;
use crate::record::Headers;

#[cfg(feature = "amqp")]
#[cfg_attr(docsrs, doc(cfg(feature = "amqp")))]
pub mod amqp;
mod inbound;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats;
mod outbound;

/// The header that carries a record's key across a bridge (NATS and AMQP alike).
pub const KEY_HEADER: &str = "Embus-Key";

/// A running bridge: stop it with [`stop`](Self::stop), which drains what is in flight.
/// Dropping it stops it the same way, and so blocks like `stop` (up to the drain timeout plus a
/// few seconds to close the connection): drop it where blocking is fine, not on an async task
/// that must not stall.
///
/// Threads: `embus-bridge` runs the bridge and its tokio runtime; an inbound bridge adds
/// `embus-bridge-writer`, which stores what it receives; the AMQP client adds its own I/O
/// thread (`lapin-io-loop`). All end when the bridge stops.
pub struct Bridge {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<(), BridgeError>>>,
}

/// A bridge's counters at one moment, from [`Bridge::stats`] (and, for every running bridge
/// of a broker, in [`Broker::stats`](crate::Broker::stats)).
pub use crate::stats::BridgeStats;

/// What a bridge could not deliver, kept in a local dead-letter queue instead of being lost.
///
/// Outbound: a message the server refused (unroutable, rejected, not encodable). Inbound: a
/// message whose payload did not decode as the target's type (`payload` holds its raw bytes),
/// or one the target refused (a compacted topic and no key; `payload` is encoded again by the
/// bridge's codec). A redelivery of a message after a crash can be dead-lettered again: once
/// per delivery, not once per message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Why it was dead-lettered.
    pub reason: String,
    /// Where it came from: the local topic or queue, or the server and its subject or queue.
    pub origin: String,
    /// Where it was going: the subject, exchange and routing key, or the local target.
    pub target: String,
    /// Its message id, if it had one.
    pub id: Option<String>,
    /// Its key, if it had one.
    pub key: Option<Vec<u8>>,
    /// Its headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The payload as it is on the wire (encoded by the bridge's codec, or as received).
    pub payload: Vec<u8>,
}

/// Why a bridge could not start, or stopped. The server is named without credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The server could not be reached.
    #[error("cannot connect to {server}: {reason}")]
    Connect {
        /// The server's URL, without credentials.
        server: String,
        /// What the client said.
        reason: String,
    },
    /// The server refused the credentials.
    #[error("{server} refused the credentials: {reason}")]
    Auth {
        /// The server's URL, without credentials.
        server: String,
        /// What the server said.
        reason: String,
    },
    /// No JetStream stream captures the subject.
    #[error("{server} has no JetStream stream for subject `{subject}`")]
    NoStream {
        /// The server's URL, without credentials.
        server: String,
        /// The subject.
        subject: String,
    },
    /// The AMQP exchange does not exist.
    #[error("{server} has no exchange `{exchange}`")]
    NoExchange {
        /// The server's URL, without credentials.
        server: String,
        /// The exchange.
        exchange: String,
    },
    /// The remote source does not exist: an AMQP queue, or a JetStream stream or consumer.
    #[error("{server} has no {what} `{name}`")]
    NoSource {
        /// The server's URL, without credentials.
        server: String,
        /// `queue`, `stream` or `consumer`.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// Another error from the server, about one subject, exchange or queue.
    #[error("{server} ({target}): {reason}")]
    Remote {
        /// The server's URL, without credentials.
        server: String,
        /// The subject, exchange or queue concerned.
        target: String,
        /// What the server or client said.
        reason: String,
    },
    /// A bridge option is out of range, or the local source cannot be bridged.
    #[error("invalid bridge option: {0}")]
    InvalidOption(String),
    /// The local broker failed (closed, the topic or queue deleted, a failing store).
    #[error("local broker: {0}")]
    Local(#[from] Error),
    /// The bridge's thread or runtime could not be started.
    #[error("cannot start the bridge's thread: {0}")]
    Runtime(String),
    /// The bridge's thread panicked.
    #[error("the bridge thread panicked: {0}")]
    Panicked(String),
}

/// What a route is derived from: the message's place and metadata, not its payload.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Envelope<'a> {
    /// The local topic or queue it was read from.
    pub source: &'a str,
    /// Its partition (0 for a queue).
    pub partition: u32,
    /// Its offset (for a queue, its sequence number).
    pub offset: u64,
    /// Its key, if it has one.
    pub key: Option<&'a [u8]>,
    /// Its headers.
    pub headers: &'a Headers,
    /// The id it travels with.
    pub id: &'a str,
}

/// A route: the subject or routing key for each message.
pub(crate) type RouteFn = Arc<dyn Fn(&Envelope<'_>) -> String + Send + Sync>;

/// Options every bridge has; the builders set them through [`common_options!`].
#[derive(Clone)]
pub(crate) struct Common {
    /// Outbound: messages published and not yet confirmed. Inbound: the prefetch.
    pub(crate) window: usize,
    pub(crate) codec: CodecKind,
    pub(crate) reconnect: Backoff,
    pub(crate) drain_timeout: Duration,
    pub(crate) credentials: Option<(String, String)>,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            window: 256,
            codec: CodecKind::Json,
            reconnect: Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5)),
            drain_timeout: Duration::from_secs(30),
            credentials: None,
        }
    }
}

impl Common {
    /// Checks the options before a bridge starts.
    pub(crate) fn validate(&self) -> Result<(), BridgeError> {
        if self.window == 0 || self.window > 65_536 {
            return Err(BridgeError::InvalidOption(format!(
                "the window (prefetch) must be 1..=65536, not {}",
                self.window
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Common")
            .field("window", &self.window)
            .field("codec", &self.codec)
            .field("reconnect", &self.reconnect)
            .field("drain_timeout", &self.drain_timeout)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The option setters every bridge builder shares (its `common` field is a [`Common`]).
macro_rules! common_options {
    () => {
        /// At most this many messages in flight: published and not yet confirmed (outbound),
        /// or received and not yet stored locally (inbound, the prefetch). Default 256; at
        /// most 65,536.
        pub fn window(mut self, window: usize) -> Self {
            self.common.window = window;
            self
        }

        /// The payload encoding on the wire. Default [`CodecKind::Json`](crate::codec::CodecKind::Json),
        /// which non-Rust services can read.
        pub fn codec(mut self, codec: crate::codec::CodecKind) -> Self {
            self.common.codec = codec;
            self
        }

        /// How long to wait between reconnection attempts after a loss, by attempt. Default:
        /// at once, then 100 ms doubling up to 5 s.
        pub fn reconnect(mut self, backoff: crate::Backoff) -> Self {
            self.common.reconnect = backoff;
            self
        }

        /// How long [`Bridge::stop`](crate::bridge::Bridge::stop) waits for what is in flight
        /// to settle. What is still unsettled then is left to the source to redeliver. Default
        /// 30 s.
        pub fn drain_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.common.drain_timeout = timeout;
            self
        }

        /// The user name and password to connect with. They are never logged or shown in an
        /// error; a URL's own credentials are stripped from errors too.
        pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
            self.common.credentials = Some((user.into(), password.into()));
            self
        }
    };
}
pub(crate) use common_options;

/// The server's URL as errors and stats show it: scheme, host and port, no credentials.
pub(crate) fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    if scheme.is_empty() {
        host.to_string()
    } else {
        format!("{scheme}://{host}")
    }
}

/// What the bridge's thread and its handle share.
#[derive(Default)]
pub(crate) struct Shared {
    /// What it relays, for stats.
    name: String,
    stop: AtomicBool,
    stop_signal: tokio::sync::Notify,
    forwarded: AtomicU64,
    in_flight: AtomicU64,
    lag: AtomicU64,
    dead_lettered: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    /// Connection losses since traffic last flowed: the reconnect backoff's attempt count.
    losses: std::sync::atomic::AtomicU32,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    /// The state of a bridge that relays what `name` says, reporting to the broker of
    /// `dead_letters` while it lives.
    pub(crate) fn new(name: String, dead_letters: &crate::Queue<DeadLetter>) -> Arc<Self> {
        let shared = Arc::new(Self {
            name,
            ..Self::default()
        });
        let weak = Arc::downgrade(&shared);
        dead_letters.add_reporter(weak);
        shared
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Resolves once [`Bridge::stop`] was called.
    pub(crate) async fn stopped(&self) {
        while !self.stopping() {
            self.stop_signal.notified().await;
        }
    }

    pub(crate) fn forwarded(&self, n: u64) {
        self.forwarded.fetch_add(n, Ordering::Relaxed);
        self.progress();
    }

    /// Traffic flowed (a confirm, a stored batch): the next loss reconnects at once again.
    pub(crate) fn progress(&self) {
        self.losses.store(0, Ordering::Relaxed);
    }

    pub(crate) fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn set_lag(&self, n: u64) {
        self.lag.store(n, Ordering::Relaxed);
    }

    pub(crate) fn dead_lettered(&self, n: u64) {
        self.dead_lettered.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_connected(&self, connected: bool, reconnected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        if reconnected {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn error(&self, error: impl fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(error.to_string());
    }

    fn stats(&self) -> BridgeStats {
        BridgeStats {
            name: self.name.clone(),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            lag: self.lag.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
        }
    }
}

impl crate::engine::Reporter for Shared {
    fn report(&self) -> BridgeStats {
        self.stats()
    }
}

impl Bridge {
    /// Starts a bridge on its own thread with a single-threaded tokio runtime. `run` connects
    /// first and calls [`Ready::ready`]; an error before that (a wrong URL, bad credentials, a
    /// missing stream or exchange) is returned here. Then it relays until stopped.
    pub(crate) fn spawn<F, Fut>(shared: Arc<Shared>, run: F) -> Result<Self, BridgeError>
    where
        F: FnOnce(Arc<Shared>, Ready) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BridgeError>>,
    {
        let (tx, started) = std::sync::mpsc::sync_channel(1);
        let sent = Arc::new(AtomicBool::new(false));
        let ours = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("embus-bridge".into())
            .spawn(move || {
                let ready = Ready {
                    started: tx.clone(),
                    sent: Arc::clone(&sent),
                };
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|error| BridgeError::Runtime(error.to_string()))
                    .and_then(|runtime| runtime.block_on(run(Arc::clone(&ours), ready)));
                ours.set_connected(false, false);
                match result {
                    Err(error) if !sent.load(Ordering::Acquire) => {
                        // Before `Ready::ready`, the error is `start`'s answer.
                        let _ = tx.send(Err(error));
                        Ok(())
                    }
                    Err(error) => {
                        ours.error(&error);
                        Err(error)
                    }
                    Ok(()) => Ok(()),
                }
            })
            .map_err(|error| BridgeError::Runtime(error.to_string()))?;
        match started.recv() {
            Ok(Ok(())) => Ok(Self {
                shared,
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => Err(match thread.join() {
                Err(panic) => BridgeError::Panicked(panic_text(&*panic)),
                Ok(Err(error)) => error,
                Ok(Ok(())) => BridgeError::Runtime("the bridge ended before it started".into()),
            }),
        }
    }

    /// The bridge's counters now.
    pub fn stats(&self) -> BridgeStats {
        self.shared.stats()
    }

    /// Whether the bridge is still relaying (it stops on [`stop`](Self::stop), or on an error
    /// it cannot recover from, such as the local topic deleted).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops taking new messages, waits (up to the drain timeout) for those in flight to be
    /// settled on both sides, closes the connection (waiting at most 5 s for a server that is
    /// down), and returns. An unsettled message stays at its source, to be redelivered when a
    /// bridge starts again. If the drain timed out, an inbound bridge's writer thread may still
    /// finish storing the batch it holds after `stop` returns; those messages are not acked
    /// remotely, so the target's dedupe window drops them when they come again.
    ///
    /// # Errors
    /// The error that stopped the bridge earlier, if one did.
    pub fn stop(mut self) -> Result<(), BridgeError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), BridgeError> {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.stop_signal.notify_waiters();
        self.shared.stop_signal.notify_one();
        match self.thread.take() {
            None => Ok(()),
            Some(thread) => thread
                .join()
                .unwrap_or_else(|panic| Err(BridgeError::Panicked(panic_text(&*panic)))),
        }
    }
}

/// Tells [`Bridge::spawn`] that the bridge connected and is relaying.
pub(crate) struct Ready {
    started: std::sync::mpsc::SyncSender<Result<(), BridgeError>>,
    sent: Arc<AtomicBool>,
}

impl Ready {
    pub(crate) fn ready(self) {
        self.sent.store(true, Ordering::Release);
        let _ = self.started.try_send(Ok(()));
    }
}

/// A connection to the server, as both relays see it.
pub(crate) trait Remote: Send + 'static {
    /// Connects, or reconnects after a failure, and checks that the subject, exchange, stream
    /// or queue exists.
    async fn connect(&mut self) -> Result<(), BridgeError>;

    /// Sends what the client still buffers (acks, publishes) before the bridge ends.
    async fn close(&mut self) {}
}

/// Reconnects after a loss, waiting by the backoff between attempts. `false` if the bridge was
/// told to stop and either has nothing in flight (`idle`) or its drain timeout passed first.
///
/// The attempts count on from the last loss until traffic flows again ([`Shared::progress`]),
/// so a connection that comes up and fails at once (a server that refuses the first publish
/// again and again) backs off too, rather than reconnecting in a hot loop.
pub(crate) async fn reconnect(
    remote: &mut impl Remote,
    shared: &Shared,
    common: &Common,
    drain: &mut Option<tokio::time::Instant>,
    idle: bool,
) -> bool {
    shared.set_connected(false, false);
    loop {
        if idle && (drain.is_some() || shared.stopping()) {
            return false;
        }
        let attempt = shared
            .losses
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let wait = common.reconnect.delay(attempt);
        tokio::select! {
            biased;
            () = shared.stopped(), if drain.is_none() => {
                *drain = Some(drain_deadline(common));
                continue;
            }
            () = sleep_until(*drain) => return false,
            () = tokio::time::sleep(wait) => {}
        }
        // A connect that hangs must not hold a stop past its drain deadline either.
        let connected = tokio::select! {
            biased;
            () = sleep_until(*drain) => return false,
            connected = remote.connect() => connected,
        };
        match connected {
            Ok(()) => {
                shared.set_connected(true, true);
                return true;
            }
            Err(error) => shared.error(error),
        }
    }
}

/// When a bridge told to stop now gives up on what is still in flight.
pub(crate) fn drain_deadline(common: &Common) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(common.drain_timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Flushes and closes the client as a bridge ends, waiting at most [`CLOSE_TIMEOUT`]: a server
/// that is down must not hold `stop` (or a drop) for ever.
pub(crate) async fn close(remote: &mut impl Remote) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, remote.close()).await;
}

/// The longest a bridge waits for its last acks, and for its client to flush and close, when
/// it ends.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A local send that failed: the broker closed, or the store refused it.
pub(crate) fn send_failed<T>(error: crate::SendError<T>) -> BridgeError {
    match error {
        crate::SendError::Disconnected(_) => BridgeError::Local(Error::Closed),
        crate::SendError::Failed(_, error) => BridgeError::Local(error),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_string())
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_strips_credentials_and_paths() {
        assert_eq!(redact("nats://u:p@127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact("amqp://guest:guest@localhost:5672/%2f"),
            "amqp://localhost:5672"
        );
        assert_eq!(redact("127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(redact("amqp://a:b@c@h:1/v?x=1"), "amqp://h:1");
    }

    #[test]
    fn common_options_are_checked() {
        let zero = Common {
            window: 0,
            ..Common::default()
        };
        assert!(matches!(
            zero.validate(),
            Err(BridgeError::InvalidOption(_))
        ));
        assert!(Common::default().validate().is_ok());
        let secret = Common {
            credentials: Some(("user".into(), "hunter2".into())),
            ..Common::default()
        };
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}

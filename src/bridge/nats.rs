//! The NATS JetStream bridge (feature `nats`, on `async-nats`): [`Outbound`] publishes a local
//! group member's or queue consumer's messages to a JetStream subject with `Nats-Msg-Id`, and
//! [`Inbound`] relays a JetStream durable pull consumer into a local topic or queue.
//!
//! ```no_run
//! use std::time::Duration;
//! use embus::bridge::{DeadLetter, nats};
//! use embus::{Broker, Dedupe, TopicOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Broker::open("orders.embus")?;
//! let orders = bus.topic::<String>("orders")?;
//! let parked = bus.queue::<DeadLetter>("orders.bridge-dead-letters")?;
//!
//! // Out: every order, once into the ORDERS stream (the stream captures `orders.created`).
//! let out = nats::Outbound::new("nats://127.0.0.1:4222", "orders.created")
//!     .start(orders.join_group("to-nats")?, &parked)?;
//!
//! // In: the PAYMENTS stream's durable consumer `embus` into a local topic, deduplicated.
//! let payments = bus.topic_with::<String>(
//!     "payments",
//!     TopicOptions::default().dedupe(Dedupe::within(Duration::from_secs(600))),
//! )?;
//! let inbound = nats::Inbound::new("nats://127.0.0.1:4222", "PAYMENTS", "embus")
//!     .start(payments.producer(), &parked)?;
//! # let _ = (out, inbound);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, context::PublishErrorKind};
use std::str::FromStr;

use async_nats::{HeaderMap, HeaderName};
use futures_util::StreamExt;

use super::inbound::{self, Incoming, RemoteAck};
use super::outbound::{self, Confirm, Failure, Outgoing};
use super::{Bridge, BridgeError, Common, DeadLetter, Envelope, KEY_HEADER, Remote, RouteFn};
use crate::record::Payload;
use crate::{Consumer, Producer, Queue};

/// The header JetStream deduplicates by.
const MSG_ID: &str = "Nats-Msg-Id";

/// How long a publish waits for its `PubAck` before the bridge reconnects and publishes again.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an inbound bridge's pull request asks the server to wait for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// Publishes a local consumer's messages to JetStream, acking each locally after its `PubAck`.
///
/// Each message goes to the subject given to [`new`](Self::new), or the one
/// [`subject_with`](Self::subject_with) derives, with its id as `Nats-Msg-Id`, its key as
/// `Embus-Key` and its headers. A redelivery after a crash or reconnect has the same id, so
/// the stream stores it once within its duplicate window (2 minutes by default; set the
/// stream's `duplicate_window` to cover your longest outage). Header values must be text
/// without line breaks on NATS: a message with another goes to the dead-letter queue.
pub struct Outbound {
    url: String,
    subject: String,
    route: Option<RouteFn>,
    common: Common,
}

impl Outbound {
    /// Publishes to `subject` on the server at `url` (`nats://host:port`). A JetStream stream
    /// must capture `subject`: [`start`](Self::start) checks it.
    pub fn new(url: impl Into<String>, subject: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            subject: subject.into(),
            route: None,
            common: Common::default(),
        }
    }

    /// Derives each message's subject (from its key, headers, or place). The subject given to
    /// [`new`](Self::new) is still the one checked at start; a derived subject no stream
    /// captures sends that message to the dead-letter queue.
    pub fn subject_with(
        mut self,
        route: impl Fn(&Envelope<'_>) -> String + Send + Sync + 'static,
    ) -> Self {
        self.route = Some(Arc::new(route));
        self
    }

    super::common_options!();

    /// Connects, checks that a stream captures the subject, and starts relaying `source` (a
    /// group member or a queue consumer). What the server refuses goes to `dead_letters`.
    ///
    /// # Errors
    /// [`BridgeError::Connect`], [`BridgeError::Auth`], [`BridgeError::NoStream`], or
    /// [`BridgeError::InvalidOption`] (a plain subscriber as the source, a window out of
    /// range).
    pub fn start<T: Payload>(
        self,
        source: Consumer<T>,
        dead_letters: &Queue<DeadLetter>,
    ) -> Result<Bridge, BridgeError> {
        let subject = self.subject.clone();
        let route = self
            .route
            .unwrap_or_else(|| Arc::new(move |_: &Envelope<'_>| subject.clone()));
        let sink = Sink {
            link: Link::new(self.url, &self.common),
            subject: self.subject,
            context: None,
            checked: None,
        };
        outbound::start(sink, source, dead_letters, route, self.common)
    }
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("nats::Outbound")
            .field("server", &super::redact(&self.url))
            .field("subject", &self.subject)
            .field("common", &self.common)
            .finish_non_exhaustive()
    }
}

/// Relays a JetStream durable pull consumer into a local topic or queue, acking each message
/// remotely once it is stored locally.
///
/// The bridge creates the durable consumer on the stream if it does not exist (explicit acks,
/// delivering from the start of the stream). Each record gets the message's `Nats-Msg-Id` as
/// its [id](crate::Record::id), or `stream/sequence/time` without one (the time the server
/// stored it, in nanoseconds, so that a stream of the same name made anew repeats no id), so a
/// redelivery is dropped by the target's [dedupe window](crate::Dedupe); its key comes from
/// `Embus-Key`.
pub struct Inbound {
    url: String,
    stream: String,
    durable: String,
    filter: Option<String>,
    ack_wait: Duration,
    common: Common,
}

impl Inbound {
    /// Reads stream `stream` on the server at `url` through its durable consumer `durable`.
    pub fn new(
        url: impl Into<String>,
        stream: impl Into<String>,
        durable: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            stream: stream.into(),
            durable: durable.into(),
            filter: None,
            ack_wait: Duration::from_secs(30),
            common: Common::default(),
        }
    }

    /// Only the stream's messages on `subject` (wildcards allowed), when the bridge creates the
    /// durable consumer.
    pub fn filter_subject(mut self, subject: impl Into<String>) -> Self {
        self.filter = Some(subject.into());
        self
    }

    /// How long the server waits for an ack before it delivers a message again, when the
    /// bridge creates the durable consumer. Default 30 s, JetStream's own. After a lost
    /// connection, what the server had already sent down it comes again only after this wait;
    /// a shorter one resumes sooner, at the price of redeliveries (dropped by the dedupe
    /// window) whenever a local commit takes longer.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    super::common_options!();

    /// Connects, finds the stream and the durable consumer (creating the consumer if needed),
    /// and starts relaying into `target`. A payload that does not decode goes to
    /// `dead_letters` with its raw bytes.
    ///
    /// # Errors
    /// [`BridgeError::Connect`], [`BridgeError::Auth`], [`BridgeError::NoSource`] (no such
    /// stream), [`BridgeError::Remote`], or [`BridgeError::InvalidOption`].
    pub fn start<T: Payload>(
        self,
        target: Producer<T>,
        dead_letters: &Queue<DeadLetter>,
    ) -> Result<Bridge, BridgeError> {
        let source = Source {
            link: Link::new(self.url, &self.common),
            stream: self.stream,
            durable: self.durable,
            filter: self.filter,
            ack_wait: self.ack_wait,
            window: self.common.window,
            pull: None,
            lag: None,
        };
        inbound::start(source, target, dead_letters, self.common)
    }
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("nats::Inbound")
            .field("server", &super::redact(&self.url))
            .field("stream", &self.stream)
            .field("durable", &self.durable)
            .field("common", &self.common)
            .finish_non_exhaustive()
    }
}

/// How to reach the server; each (re)connect makes a fresh client.
struct Link {
    url: String,
    server: String,
    credentials: Option<(String, String)>,
    window: usize,
}

impl Link {
    fn new(url: String, common: &Common) -> Self {
        Self {
            server: super::redact(&url),
            url,
            credentials: common.credentials.clone(),
            window: common.window,
        }
    }

    async fn connect(&self) -> Result<jetstream::Context, BridgeError> {
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            // The relay reconnects with its own backoff and a fresh client; the client's own
            // attempts only ride out a blip, and then give up so nothing waits on it for ever.
            .max_reconnects(Some(3));
        if let Some((user, password)) = &self.credentials {
            options = options.user_and_password(user.clone(), password.clone());
        }
        let client = options.connect(self.url.as_str()).await.map_err(|error| {
            let reason = error.to_string();
            match error.kind() {
                async_nats::ConnectErrorKind::AuthorizationViolation
                | async_nats::ConnectErrorKind::Authentication => BridgeError::Auth {
                    server: self.server.clone(),
                    reason,
                },
                _ => BridgeError::Connect {
                    server: self.server.clone(),
                    reason,
                },
            }
        })?;
        Ok(jetstream::ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .max_ack_inflight(self.window)
            .backpressure_on_inflight(true)
            .build(client))
    }

    fn remote(&self, target: &str, reason: impl fmt::Display) -> BridgeError {
        BridgeError::Remote {
            server: self.server.clone(),
            target: target.to_string(),
            reason: reason.to_string(),
        }
    }
}

struct Sink {
    link: Link,
    subject: String,
    /// Shared with the confirms, which look the stream up when one says "no responders".
    context: Option<Arc<jetstream::Context>>,
    /// The last subject found valid, kept to publish to again without checking or copying it
    /// (routes rarely change between messages).
    checked: Option<async_nats::Subject>,
}

impl Remote for Sink {
    async fn connect(&mut self) -> Result<(), BridgeError> {
        self.context = None;
        let context = self.link.connect().await?;
        match context.stream_by_subject(self.subject.as_str()).await {
            Ok(_) => {}
            Err(error)
                if error.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound =>
            {
                return Err(BridgeError::NoStream {
                    server: self.link.server.clone(),
                    subject: self.subject.clone(),
                });
            }
            Err(error) => return Err(self.link.remote(&self.subject, error)),
        }
        self.context = Some(Arc::new(context));
        Ok(())
    }

    async fn close(&mut self) {
        if let Some(context) = &self.context {
            let _ = context.client().flush().await;
        }
    }
}

impl outbound::Sink for Sink {
    async fn publish(&mut self, message: &Outgoing) -> Result<Confirm, Failure> {
        let Some(context) = &self.context else {
            return Err(Failure::Retry("not connected".into()));
        };
        let subject = match &self.checked {
            Some(subject) if subject.as_str() == message.route => subject.clone(),
            _ => {
                check_subject(&message.route).map_err(Failure::Reject)?;
                let subject = async_nats::Subject::from(message.route.as_str());
                self.checked = Some(subject.clone());
                subject
            }
        };
        let mut headers = HeaderMap::new();
        let key = message.key.iter().map(|key| (KEY_HEADER, key.as_slice()));
        let user = message
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()));
        for (name, value) in key.chain(user) {
            let (name, value) = nats_header(name, value)?;
            // A `String` known to hold no line break goes in as it is (a `&str` is scanned and
            // copied character by character).
            headers.append(name, value.to_string());
        }
        headers.insert(MSG_ID, message.id.clone());
        let publish = jetstream::message::PublishMessage::build()
            .payload(message.payload.clone())
            .headers(headers);
        let ack = context
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|error| match error.kind() {
                PublishErrorKind::MaxPayloadExceeded => Failure::Reject(error.to_string()),
                _ => Failure::Retry(error.to_string()),
            })?;
        let context = Arc::clone(context);
        Ok(Box::pin(async move {
            let Err(error) = ack.await else {
                return Ok(());
            };
            let reason = error.to_string();
            Err(match error.kind() {
                PublishErrorKind::StreamNotFound => {
                    // "No responders": no stream takes the subject, or JetStream is not up
                    // yet after a restart. Only a stream lookup that says so dead-letters it.
                    match context.stream_by_subject(subject.as_str()).await {
                        Err(lookup)
                            if lookup.kind()
                                == jetstream::context::GetStreamByNameErrorKind::NotFound =>
                        {
                            Failure::Reject(format!("{reason}: no stream captures `{subject}`"))
                        }
                        _ => Failure::Retry(reason),
                    }
                }
                PublishErrorKind::Other if unavailable(&error) => Failure::Retry(reason),
                PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => Failure::Retry(reason),
                // The stream refused the message (limits, a sealed stream, ...).
                _ => Failure::Reject(reason),
            })
        }))
    }

    fn describe(&self, route: &str) -> String {
        let subject = if route.is_empty() {
            &self.subject
        } else {
            route
        };
        format!("{} subject `{subject}`", self.link.server)
    }
}

/// Whether a JetStream API error says "try again later" (503: no JetStream leader or quorum).
fn unavailable(error: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|api| api.code() == 503)
}

/// A subject the bridge can publish to: dot-separated tokens, none empty, without spaces or
/// wildcards. A derived subject that is not one dead-letters its message.
fn check_subject(subject: &str) -> Result<(), String> {
    let bad_token = subject.split('.').any(|token| {
        token.is_empty()
            || token == "*"
            || token == ">"
            || token.contains(|c: char| c.is_whitespace() || c.is_control())
    });
    if bad_token {
        return Err(format!("`{subject}` is not a subject NATS can publish to"));
    }
    Ok(())
}

/// A header as NATS can carry it: an ASCII name without `:`, a value of text without line
/// breaks. Anything else refuses the message (it goes to the dead-letter queue).
fn nats_header<'a>(name: &str, value: &'a [u8]) -> Result<(HeaderName, &'a str), Failure> {
    let name = HeaderName::from_str(name).map_err(|error| {
        Failure::Reject(format!(
            "header name `{name}` cannot travel on NATS: {error}"
        ))
    })?;
    match std::str::from_utf8(value) {
        Ok(text) if !text.contains(['\r', '\n']) => Ok((name, text)),
        _ => Err(Failure::Reject(format!(
            "header `{name}` is not single-line text, which NATS headers cannot carry"
        ))),
    }
}

/// A pull request in the making: stored, so a `next` cancelled while it is sent resumes it.
type Fetch = std::pin::Pin<Box<dyn Future<Output = Result<pull::Batch, pull::BatchError>> + Send>>;

struct Source {
    link: Link,
    stream: String,
    durable: String,
    filter: Option<String>,
    ack_wait: Duration,
    window: usize,
    pull: Option<Pull>,
    lag: Option<u64>,
}

/// The connection's pull consumer, and the one pull request (batch) it has out, if any.
///
/// The bridge pulls one batch of at most `window` messages at a time, each asking the server to
/// wait at most [`PULL_EXPIRES`], instead of a continuous stream: when it stops, it finishes the
/// batch it has out, handing back (NAK) what it brings, so no pull request stays behind to take
/// messages the next bridge would otherwise get at once.
struct Pull {
    context: jetstream::Context,
    consumer: jetstream::consumer::PullConsumer,
    fetch: Option<Fetch>,
    batch: Option<pull::Batch>,
}

impl Pull {
    /// The next message of the current batch, pulling a new batch when it is done. `Ok(None)`
    /// after an empty batch, to look at the connection.
    async fn next(&mut self, window: usize) -> Result<Option<jetstream::Message>, Failure> {
        if self.batch.is_none() {
            let fetch = self.fetch.get_or_insert_with(|| {
                let consumer = self.consumer.clone();
                Box::pin(async move {
                    consumer
                        .batch()
                        .max_messages(window)
                        .expires(PULL_EXPIRES)
                        .messages()
                        .await
                })
            });
            let batch = fetch.await;
            self.fetch = None;
            self.batch = Some(batch.map_err(|error| Failure::Retry(error.to_string()))?);
        }
        let Some(batch) = &mut self.batch else {
            return Ok(None);
        };
        match batch.next().await {
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(error)) => {
                self.batch = None;
                Err(Failure::Retry(error.to_string()))
            }
            None => {
                self.batch = None;
                Ok(None)
            }
        }
    }

    fn connected(&self) -> bool {
        self.context.client().connection_state() == async_nats::connection::State::Connected
    }
}

impl Remote for Source {
    async fn connect(&mut self) -> Result<(), BridgeError> {
        self.pull = None;
        let context = self.link.connect().await?;
        let stream = context
            .get_stream(self.stream.as_str())
            .await
            .map_err(|error| match error.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(e) if e.code() == 404 => {
                    BridgeError::NoSource {
                        server: self.link.server.clone(),
                        what: "stream",
                        name: self.stream.clone(),
                    }
                }
                _ => self.link.remote(&self.stream, error),
            })?;
        let config = pull::Config {
            durable_name: Some(self.durable.clone()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            // Room for what crashed bridges left unacked (it waits out the ack wait) on top of
            // a live bridge's window, so a restart after a crash is not starved.
            max_ack_pending: i64::try_from((self.window * 16).max(10_000)).unwrap_or(i64::MAX),
            filter_subject: self.filter.clone().unwrap_or_default(),
            ack_wait: self.ack_wait,
            ..pull::Config::default()
        };
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(self.durable.as_str(), config)
            .await
            .map_err(|error| self.link.remote(&inbound::Source::describe(self), error))?;
        self.pull = Some(Pull {
            context,
            consumer,
            fetch: None,
            batch: None,
        });
        Ok(())
    }

    async fn close(&mut self) {
        let Some(mut pull) = self.pull.take() else {
            return;
        };
        // Finish the batch that is out, handing back (NAK) what it brings: the next bridge gets
        // it at once and first, instead of after the ack wait behind newer messages. A batch
        // ends after `window` deliveries or when it expires, whichever is first.
        let window = self.window;
        let hand_back = async {
            while pull.fetch.is_some() || pull.batch.is_some() {
                match pull.next(window).await {
                    Ok(Some(message)) => {
                        let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
        };
        let _ = tokio::time::timeout(PULL_EXPIRES * 2, hand_back).await;
        let _ = pull.context.client().flush().await;
    }
}

/// Acks one JetStream message.
pub(crate) struct Ack(jetstream::message::Acker);

impl RemoteAck for Ack {
    async fn ack(self) -> Result<(), Failure> {
        self.0
            .ack()
            .await
            .map_err(|error| Failure::Retry(error.to_string()))
    }
}

impl inbound::Source for Source {
    type Ack = Ack;

    async fn next(&mut self, room: usize) -> Result<Incoming<Ack>, Failure> {
        let Some(pull) = &mut self.pull else {
            return Err(Failure::Retry("not connected".into()));
        };
        let message = loop {
            if let Some(message) = pull.next(room.max(1)).await? {
                break message;
            }
            // An empty batch: fine, unless it was empty because the connection is down.
            if !pull.connected() {
                return Err(Failure::Retry(
                    "the connection to the server was lost".into(),
                ));
            }
        };
        // Without a Nats-Msg-Id, the stream, the sequence and when the server stored it: the
        // same for every redelivery, and not repeated by a stream of that name made anew.
        let info = message
            .info()
            .map(|info| {
                let stored = info.published.unix_timestamp_nanos();
                let id = format!("{}/{}/{stored}", info.stream, info.stream_sequence);
                (info.pending, id)
            })
            .ok();
        let (message, acker) = message.split();
        let mut id = info.as_ref().map(|(_, id)| id.clone());
        self.lag = info.map(|(pending, _)| pending);
        let mut headers = Vec::new();
        for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
            let name: &str = name.as_ref();
            for value in values {
                if name.eq_ignore_ascii_case(MSG_ID) {
                    id = Some(value.as_str().to_string());
                } else {
                    headers.push((name.to_string(), value.as_str().as_bytes().to_vec()));
                }
            }
        }
        Ok(Incoming {
            id,
            headers,
            payload: message.payload.to_vec(),
            ack: Ack(acker),
        })
    }

    fn lag(&self) -> Option<u64> {
        self.lag
    }

    fn describe(&self) -> String {
        format!(
            "{} stream `{}` consumer `{}`",
            self.link.server, self.stream, self.durable
        )
    }
}

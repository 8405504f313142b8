//! The RabbitMQ (AMQP 0.9.1) bridge, on `lapin`: [`Outbound`] publishes a local group member
//! or queue consumer to an exchange with publisher confirms, and [`Inbound`] consumes an AMQP
//! queue with manual acks into a local topic or queue.
//!
//! # Outbound
//!
//! Each message is published `mandatory`, persistent (`delivery_mode` 2), with its id as the
//! AMQP `message_id`, its headers (and its key, under [`KEY_HEADER`]) as a header table of byte
//! strings, and `content_type` `application/json` (or `application/octet-stream` for bincode).
//! It is acked locally once the server confirms it. A message the server returns as unroutable
//! (no queue bound for its routing key) or nacks goes to the dead-letter queue with the reason;
//! it is not published again. The routing key is the local topic or queue's name unless
//! [`routing_key`](Outbound::routing_key) or [`routing_key_with`](Outbound::routing_key_with)
//! says otherwise.
//!
//! ```no_run
//! use embus::{Broker, bridge::amqp};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = Broker::memory();
//! let orders = broker.topic::<u64>("orders")?;
//! let dead = broker.queue::<embus::bridge::DeadLetter>("orders.dead")?;
//! let member = orders.join_group("to-rabbit")?;
//! let bridge = amqp::Outbound::new("amqp://guest:guest@127.0.0.1:5672/%2f", "orders")
//!     .routing_key("orders.created")
//!     .start(member, &dead)?;
//! // ... later
//! bridge.stop()?;
//! # Ok(()) }
//! ```
//!
//! # Inbound
//!
//! Messages are consumed with manual acks and a prefetch of `window`. Each is stored locally
//! with the AMQP `message_id` as its [`Record::id`](crate::Record::id), its header table as
//! headers (byte strings as they are, other scalars as text) and the [`KEY_HEADER`] header as
//! its key, and acked remotely only once stored. A payload that does not decode as the target's
//! type goes to the dead-letter queue with its raw bytes, and is acked.
//!
//! # Delivery
//!
//! Outbound is at least once: after a lost connection, everything unconfirmed is published
//! again, so the far side may see a message twice (with the same `message_id`). Inbound is
//! exactly once per `message_id` when the target has a [dedupe window](crate::Dedupe) longer
//! than a redelivery takes, at least once otherwise.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind,
    ExchangeKind,
};

use super::inbound::{Incoming, RemoteAck, Source};
use super::outbound::{Confirm, Failure, Outgoing, Sink};
use super::{Bridge, BridgeError, Common, DeadLetter, Envelope, KEY_HEADER, RouteFn, redact};
use crate::codec::CodecKind;
use crate::record::Payload;
use crate::{Consumer, Producer, Queue};

/// How often an inbound bridge asks the server how many messages wait in its queue.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long closing a broken connection may take before it is abandoned.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// An outbound bridge from a local group member or queue consumer to an AMQP exchange; see the
/// [module docs](self).
pub struct Outbound {
    url: String,
    exchange: String,
    route: Route,
    common: Common,
}

/// How an outbound bridge picks each message's routing key.
enum Route {
    /// The local topic or queue's name.
    Source,
    Fixed(String),
    With(RouteFn),
}

impl Outbound {
    /// A bridge publishing to `exchange` on the server at `url`
    /// (`amqp://[user:password@]host[:port][/vhost]`, the vhost percent-encoded: `%2f` is `/`).
    /// The exchange must exist: [`start`](Self::start) checks it.
    pub fn new(url: impl Into<String>, exchange: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            exchange: exchange.into(),
            route: Route::Source,
            common: Common::default(),
        }
    }

    /// Publishes every message with this routing key. Default: the local topic or queue's name.
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.route = Route::Fixed(key.into());
        self
    }

    /// Publishes each message with the routing key `f` derives from its [`Envelope`].
    pub fn routing_key_with(
        mut self,
        f: impl Fn(&Envelope<'_>) -> String + Send + Sync + 'static,
    ) -> Self {
        self.route = Route::With(Arc::new(f));
        self
    }

    super::common_options!();

    /// Connects, checks that the exchange exists, and relays `source` (a group member or a queue
    /// consumer) to it on the bridge's own thread until the [`Bridge`] is stopped or dropped.
    ///
    /// # Errors
    /// [`BridgeError::Connect`] if the server cannot be reached, [`BridgeError::Auth`] if it
    /// refuses the credentials, [`BridgeError::NoExchange`] if the exchange does not exist,
    /// [`BridgeError::InvalidOption`] for a bad URL, name or option, or a plain subscriber as the
    /// source. Nothing is taken from `source` before the bridge is connected, so an error loses
    /// no local message.
    pub fn start<T: Payload>(
        self,
        source: Consumer<T>,
        dead_letters: &Queue<DeadLetter>,
    ) -> Result<Bridge, BridgeError> {
        let server = Server::new(self.url, self.common.credentials.clone())?;
        let exchange =
            short(&self.exchange, "exchange name").map_err(BridgeError::InvalidOption)?;
        let route: RouteFn = match self.route {
            Route::Source => Arc::new(|envelope: &Envelope<'_>| envelope.source.to_string()),
            Route::Fixed(key) => {
                short(&key, "routing key").map_err(BridgeError::InvalidOption)?;
                Arc::new(move |_: &Envelope<'_>| key.clone())
            }
            Route::With(f) => f,
        };
        let sink = Publisher {
            server,
            exchange,
            codec: self.common.codec,
            link: None,
        };
        super::outbound::start(sink, source, dead_letters, route, self.common)
    }
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let route = match &self.route {
            Route::Source => "the source's name".to_string(),
            Route::Fixed(key) => format!("`{key}`"),
            Route::With(_) => "a function".to_string(),
        };
        f.debug_struct("Outbound")
            .field("server", &redact(&self.url))
            .field("exchange", &self.exchange)
            .field("routing_key", &route)
            .field("common", &self.common)
            .finish()
    }
}

/// An inbound bridge from an AMQP queue to a local topic or queue; see the
/// [module docs](self).
pub struct Inbound {
    url: String,
    queue: String,
    common: Common,
}

impl Inbound {
    /// A bridge consuming `queue` on the server at `url`
    /// (`amqp://[user:password@]host[:port][/vhost]`). The queue must exist:
    /// [`start`](Self::start) checks it. The [`window`](Self::window) is the prefetch
    /// (`basic.qos`; at most 65,535 here).
    pub fn new(url: impl Into<String>, queue: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            queue: queue.into(),
            common: Common::default(),
        }
    }

    super::common_options!();

    /// Connects, checks that the queue exists, and relays it into `target` on the bridge's own
    /// thread until the [`Bridge`] is stopped or dropped.
    ///
    /// # Errors
    /// [`BridgeError::Connect`] if the server cannot be reached, [`BridgeError::Auth`] if it
    /// refuses the credentials, [`BridgeError::NoSource`] if the queue does not exist,
    /// [`BridgeError::InvalidOption`] for a bad URL, name or option.
    pub fn start<T: Payload>(
        self,
        target: Producer<T>,
        dead_letters: &Queue<DeadLetter>,
    ) -> Result<Bridge, BridgeError> {
        let server = Server::new(self.url, self.common.credentials.clone())?;
        let queue = short(&self.queue, "queue name").map_err(BridgeError::InvalidOption)?;
        let source = Subscriber {
            server,
            queue,
            prefetch: u16::try_from(self.common.window).unwrap_or(u16::MAX),
            link: None,
            lag: Arc::new(AtomicU64::new(0)),
        };
        super::inbound::start(source, target, dead_letters, self.common)
    }
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound")
            .field("server", &redact(&self.url))
            .field("queue", &self.queue)
            .field("common", &self.common)
            .finish()
    }
}

/// `name` as an AMQP short string (at most 255 bytes), or why not.
fn short(name: &str, what: &str) -> Result<ShortString, String> {
    ShortString::try_new(name).map_err(|_| {
        format!(
            "the {what} `{name}` is {} bytes long; AMQP allows 255",
            name.len()
        )
    })
}

/// What a connection goes to: the parsed URL with the credentials to use, and its name in
/// errors.
struct Server {
    uri: AMQPUri,
    name: String,
}

/// Which resource a server's NOT_FOUND is about.
enum Missing<'a> {
    Exchange(&'a str),
    Queue(&'a str),
}

impl Server {
    fn new(url: String, credentials: Option<(String, String)>) -> Result<Self, BridgeError> {
        let name = redact(&url);
        // The parser's message repeats the URL, credentials included: not shown.
        let mut uri: AMQPUri = url.parse().map_err(|_: String| {
            BridgeError::InvalidOption(format!(
                "`{name}` is not an AMQP URL (amqp://[user:password@]host[:port][/vhost])"
            ))
        })?;
        if let Some((user, password)) = credentials {
            uri.authority.userinfo.username = user;
            uri.authority.userinfo.password = password;
        }
        Ok(Self { uri, name })
    }

    /// A new connection, driven by the bridge's (current) tokio runtime.
    ///
    /// With its `tokio` feature, lapin's default runtime is `async_rs::Runtime::tokio_current()`,
    /// a handle to the runtime this is called on. lapin runs its I/O loop on a thread of its own
    /// (`lapin-io-loop`) through that handle; the bridge's thread, which sits in
    /// `Runtime::block_on` for as long as the bridge runs, drives the socket and timers. When the
    /// bridge's runtime is dropped, the loop gets a runtime-shutdown error and its thread ends.
    async fn connect(&self, missing: &Missing<'_>) -> Result<Connection, BridgeError> {
        let properties =
            ConnectionProperties::default().with_connection_name("embus-bridge".into());
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect_uri(self.uri.clone(), properties),
        )
        .await
        {
            Ok(connected) => connected.map_err(|error| self.error(&error, missing)),
            Err(_) => Err(self.silent()),
        }
    }

    /// The server did not answer a connection or its setup within [`CONNECT_TIMEOUT`].
    fn silent(&self) -> BridgeError {
        BridgeError::Connect {
            server: self.name.clone(),
            reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
        }
    }

    /// A client or server error as a [`BridgeError`] naming this server and `missing`.
    fn error(&self, error: &lapin::Error, missing: &Missing<'_>) -> BridgeError {
        let server = self.name.clone();
        let reason = error.to_string();
        let target = match missing {
            Missing::Exchange(name) => format!("exchange `{name}`"),
            Missing::Queue(name) => format!("queue `{name}`"),
        };
        match error.kind() {
            ErrorKind::IOError(_) | ErrorKind::RuntimeShutdownError(_) => {
                BridgeError::Connect { server, reason }
            }
            ErrorKind::AuthProviderError(_) => BridgeError::Auth { server, reason },
            ErrorKind::ProtocolError(amqp) => match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                    BridgeError::Auth { server, reason }
                }
                AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => match missing {
                    Missing::Exchange(name) => BridgeError::NoExchange {
                        server,
                        exchange: (*name).to_string(),
                    },
                    Missing::Queue(name) => BridgeError::NoSource {
                        server,
                        what: "queue",
                        name: (*name).to_string(),
                    },
                },
                _ => BridgeError::Remote {
                    server,
                    target,
                    reason,
                },
            },
            _ if reason.contains("ACCESS_REFUSED") || reason.contains("ACCESS-REFUSED") => {
                BridgeError::Auth { server, reason }
            }
            _ => BridgeError::Remote {
                server,
                target,
                reason,
            },
        }
    }
}

/// Closes a connection that is being replaced, in the background; see [`close`].
fn abandon<P: Send + 'static>(connection: Connection, parts: P) {
    tokio::spawn(close(connection, parts, "reconnecting"));
}

/// Closes a connection cleanly (the server requeues what it had not been acked), waiting at
/// most [`CLOSE_TIMEOUT`], and only then drops `parts`, its channels and consumer: lapin can
/// deadlock (two of its locks taken in opposite orders) when a consumer is dropped while its
/// connection is still delivering to it.
async fn close<P>(connection: Connection, parts: P, why: &'static str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, why.into())).await;
    drop(parts);
}

/// The outbound client: one connection and one channel in confirm mode.
struct Publisher {
    server: Server,
    exchange: ShortString,
    codec: CodecKind,
    link: Option<(Connection, Channel)>,
}

impl super::Remote for Publisher {
    async fn connect(&mut self) -> Result<(), BridgeError> {
        if let Some((connection, channel)) = self.link.take() {
            abandon(connection, channel);
        }
        let exchange = self.exchange.to_string();
        let missing = Missing::Exchange(&exchange);
        let connection = self.server.connect(&missing).await?;
        let setup = async {
            let channel = connection.create_channel().await?;
            // The default exchange ("") always exists, and cannot be declared, even passively.
            if !exchange.is_empty() {
                let passive = ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                };
                channel
                    .exchange_declare(
                        self.exchange.clone(),
                        ExchangeKind::Direct,
                        passive,
                        FieldTable::default(),
                    )
                    .await?;
            }
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(channel)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, setup).await {
            Ok(Ok(channel)) => {
                self.link = Some((connection, channel));
                Ok(())
            }
            Ok(Err(error)) => {
                abandon(connection, ());
                Err(self.server.error(&error, &missing))
            }
            Err(_) => {
                abandon(connection, ());
                Err(self.server.silent())
            }
        }
    }

    async fn close(&mut self) {
        if let Some((connection, channel)) = self.link.take() {
            close(connection, channel, "bridge stopped").await;
        }
    }
}

impl Sink for Publisher {
    async fn publish(&mut self, message: &Outgoing) -> Result<Confirm, Failure> {
        let Some((_, channel)) = &self.link else {
            return Err(Failure::Retry("not connected".into()));
        };
        let routing_key = short(&message.route, "routing key").map_err(Failure::Reject)?;
        let message_id = short(&message.id, "message id").map_err(Failure::Reject)?;
        let mut headers = FieldTable::default();
        for (name, value) in &message.headers {
            let name = short(name, "header name").map_err(Failure::Reject)?;
            headers.insert(name, AMQPValue::LongString(LongString::from(value.clone())));
        }
        if let Some(key) = &message.key {
            headers.insert(
                KEY_HEADER.into(),
                AMQPValue::LongString(LongString::from(key.clone())),
            );
        }
        let content_type = match self.codec {
            CodecKind::Json => "application/json",
            CodecKind::Bincode => "application/octet-stream",
        };
        let properties = BasicProperties::default()
            .with_message_id(message_id)
            .with_delivery_mode(2)
            .with_content_type(content_type.into())
            .with_headers(headers);
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = channel
            .basic_publish(
                self.exchange.clone(),
                routing_key,
                options,
                &message.payload,
                properties,
            )
            .await
            .map_err(|error| Failure::Retry(error.to_string()))?;
        Ok(Box::pin(async move {
            match confirm.await {
                Ok(Confirmation::Ack(None)) => Ok(()),
                Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => {
                    Err(Failure::Reject(format!(
                        "returned by the server: {} {} (unroutable: no queue is bound for \
                         routing key `{}`)",
                        returned.reply_code, returned.reply_text, returned.delivery.routing_key
                    )))
                }
                Ok(Confirmation::Nack(None)) => {
                    Err(Failure::Reject("nacked by the server".to_string()))
                }
                Ok(Confirmation::NotRequested) => Err(Failure::Retry(
                    "the channel is not in confirm mode".to_string(),
                )),
                Err(error) => Err(Failure::Retry(error.to_string())),
            }
        }))
    }

    fn describe(&self, route: &str) -> String {
        if route.is_empty() {
            format!("{} exchange `{}`", self.server.name, self.exchange)
        } else {
            format!(
                "{} exchange `{}` routing key `{route}`",
                self.server.name, self.exchange
            )
        }
    }
}

/// The inbound client: one connection, a consuming channel, and a task that polls the queue's
/// length on a second channel.
struct Subscriber {
    server: Server,
    queue: ShortString,
    prefetch: u16,
    link: Option<Subscription>,
    /// Messages ready in the queue, as last reported.
    lag: Arc<AtomicU64>,
}

struct Subscription {
    /// Taken out when the subscription is replaced, to be closed.
    connection: Option<Connection>,
    consumer: lapin::Consumer,
    lag_task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.lag_task.abort();
    }
}

impl Subscriber {
    /// Checks the queue, starts consuming it, and starts the lag task.
    async fn subscribe(
        &self,
        connection: &Connection,
    ) -> Result<(lapin::Consumer, tokio::task::JoinHandle<()>), lapin::Error> {
        let channel = connection.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(self.queue.clone(), passive, FieldTable::default())
            .await?;
        self.lag
            .store(u64::from(declared.message_count()), Ordering::Relaxed);
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        // Before consuming: a consumer dropped while its connection delivers can deadlock
        // lapin (see `close`), so nothing that can fail comes after `basic_consume`.
        let counter = connection.create_channel().await?;
        let consumer = channel
            .basic_consume(
                self.queue.clone(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let queue = self.queue.clone();
        let lag = Arc::clone(&self.lag);
        let lag_task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LAG_EVERY).await;
                match counter
                    .queue_declare(queue.clone(), passive, FieldTable::default())
                    .await
                {
                    Ok(declared) => {
                        lag.store(u64::from(declared.message_count()), Ordering::Relaxed);
                    }
                    // The consumer sees the loss too, and the next connection starts a new task.
                    Err(_) => return,
                }
            }
        });
        Ok((consumer, lag_task))
    }
}

impl super::Remote for Subscriber {
    async fn connect(&mut self) -> Result<(), BridgeError> {
        if let Some(mut old) = self.link.take()
            && let Some(connection) = old.connection.take()
        {
            abandon(connection, old);
        }
        let queue = self.queue.to_string();
        let missing = Missing::Queue(&queue);
        let connection = self.server.connect(&missing).await?;
        // Nothing can fail, nor be cancelled, after `basic_consume` in `subscribe`: a timeout
        // never drops a live consumer.
        let subscribed = tokio::time::timeout(CONNECT_TIMEOUT, self.subscribe(&connection)).await;
        let Ok(subscribed) = subscribed else {
            abandon(connection, ());
            return Err(self.server.silent());
        };
        match subscribed {
            Ok((consumer, lag_task)) => {
                self.link = Some(Subscription {
                    connection: Some(connection),
                    consumer,
                    lag_task,
                });
                Ok(())
            }
            Err(error) => {
                abandon(connection, ());
                Err(self.server.error(&error, &missing))
            }
        }
    }

    async fn close(&mut self) {
        if let Some(mut old) = self.link.take()
            && let Some(connection) = old.connection.take()
        {
            close(connection, old, "bridge stopped").await;
        }
    }
}

/// Acks one delivery on the channel it came from.
struct Ack(lapin::Acker);

impl RemoteAck for Ack {
    async fn ack(self) -> Result<(), Failure> {
        match self.0.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            // The channel it came on is gone: the server delivers it again.
            Ok(false) => Err(Failure::Retry("the delivery's channel is closed".into())),
            Err(error) => Err(Failure::Retry(error.to_string())),
        }
    }
}

impl Source for Subscriber {
    type Ack = Ack;

    async fn next(&mut self, _room: usize) -> Result<Incoming<Ack>, Failure> {
        // The server's prefetch (`basic_qos(window)`) already counts what is unacked.
        let Some(link) = &mut self.link else {
            return Err(Failure::Retry("not connected".into()));
        };
        match link.consumer.next().await {
            Some(Ok(delivery)) => {
                let properties = &delivery.properties;
                let id = properties.message_id().as_ref().map(ToString::to_string);
                let headers = properties
                    .headers()
                    .as_ref()
                    .map(|table| {
                        table
                            .inner()
                            .iter()
                            .map(|(name, value)| (name.to_string(), header_bytes(value)))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Incoming {
                    id,
                    headers,
                    payload: delivery.data,
                    ack: Ack(delivery.acker),
                })
            }
            Some(Err(error)) => Err(Failure::Retry(error.to_string())),
            None => Err(Failure::Retry("the server cancelled the consumer".into())),
        }
    }

    fn lag(&self) -> Option<u64> {
        Some(self.lag.load(Ordering::Relaxed))
    }

    fn describe(&self) -> String {
        format!("{} queue `{}`", self.server.name, self.queue)
    }
}

/// A header value as bytes: byte strings as they are, anything else as text.
fn header_bytes(value: &AMQPValue) -> Vec<u8> {
    match value {
        AMQPValue::LongString(bytes) => bytes.as_bytes().to_vec(),
        AMQPValue::ShortString(text) => text.as_str().as_bytes().to_vec(),
        AMQPValue::ByteArray(bytes) => bytes.as_slice().to_vec(),
        AMQPValue::Boolean(b) => b.to_string().into_bytes(),
        AMQPValue::ShortShortInt(n) => n.to_string().into_bytes(),
        AMQPValue::ShortShortUInt(n) => n.to_string().into_bytes(),
        AMQPValue::ShortInt(n) => n.to_string().into_bytes(),
        AMQPValue::ShortUInt(n) => n.to_string().into_bytes(),
        AMQPValue::LongInt(n) => n.to_string().into_bytes(),
        AMQPValue::LongUInt(n) => n.to_string().into_bytes(),
        AMQPValue::LongLongInt(n) => n.to_string().into_bytes(),
        AMQPValue::Float(n) => n.to_string().into_bytes(),
        AMQPValue::Double(n) => n.to_string().into_bytes(),
        AMQPValue::Timestamp(n) => n.to_string().into_bytes(),
        AMQPValue::Void => Vec::new(),
        // Decimals, arrays and nested tables: their debug form, so that nothing is dropped.
        other => format!("{other:?}").into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_credentials() {
        let outbound = Outbound::new("amqp://user:hunter2@host:5672/%2f", "x")
            .credentials("other", "swordfish");
        let text = format!("{outbound:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("swordfish"),
            "{text}"
        );
        let inbound = Inbound::new("amqp://user:hunter2@host:5672/%2f", "q");
        assert!(!format!("{inbound:?}").contains("hunter2"));
    }

    #[test]
    fn bad_url_and_long_names_are_refused_without_credentials() {
        let error = Server::new("amqp://u:hunter2@[bad".into(), None)
            .err()
            .map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| !e.contains("hunter2")),
            "{error:?}"
        );
        assert!(short(&"x".repeat(256), "queue name").is_err());
        assert!(short(&"x".repeat(255), "queue name").is_ok());
    }

    #[test]
    fn header_values_become_bytes() {
        assert_eq!(
            header_bytes(&AMQPValue::LongString(LongString::from(vec![0u8, 255]))),
            vec![0, 255]
        );
        assert_eq!(header_bytes(&AMQPValue::LongLongInt(-3)), b"-3".to_vec());
        assert_eq!(header_bytes(&AMQPValue::Boolean(true)), b"true".to_vec());
    }
}

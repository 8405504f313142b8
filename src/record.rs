//! What producers hand over ([`Record`], [`Headers`]) and get back ([`Receipt`]), the
//! [`Payload`] bound, the dead-letter headers, and the engine's shared [`Entry`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::trace_context::{TRACEPARENT, TraceContext};

/// The payload bound of every topic and queue: the same in memory and durable mode, so switching
/// modes never breaks a build.
pub trait Payload: Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Payload for T {}

/// Header naming the queue a dead letter came from.
pub const DEAD_LETTER_QUEUE: &str = "embus-dead-letter-queue";
/// Header saying why a message was dead-lettered: `nack`, `dropped`, `ack-timeout`, `expired`
/// or `undecodable`.
pub const DEAD_LETTER_REASON: &str = "embus-dead-letter-reason";
/// Header with how many times the message was delivered before it was dead-lettered (decimal).
pub const DEAD_LETTER_DELIVERIES: &str = "embus-dead-letter-deliveries";
/// Header carrying the producer-chosen message id ([`Record::id`]), by which a topic or queue
/// with a [dedupe window](crate::Dedupe) recognizes a duplicate send. A bridge that copies the
/// headers passes the id on.
pub const MESSAGE_ID: &str = "embus-message-id";
/// The longest message id accepted at send, in bytes ([`Record::id`]).
pub const MAX_MESSAGE_ID_LEN: usize = 256;

/// A payload with an optional key and headers, for
/// [`Producer::send_record`](crate::Producer::send_record).
///
/// ```
/// let rec = embus::Record::new(42u64).key("customer-42").header("trace-id", b"abc");
/// assert_eq!(rec.headers().get("trace-id"), Some(&b"abc"[..]));
/// ```
pub struct Record<T> {
    pub(crate) payload: T,
    /// Key, headers and timing, boxed so that records without them stay one pointer bigger
    /// than their payload; the box moves into the stored entry as it is.
    pub(crate) meta: Option<Box<Meta>>,
}

/// When a record may be delivered, until when, and how urgently: what a producer asked for,
/// before the broker resolves it against its clock at the send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Timing {
    pub(crate) due: Option<Due>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) priority: u8,
}

impl Timing {
    /// Whether a delay or time-to-live counts from the record's stamp, which must then be
    /// precise ([`Clock::stamp`](crate::clock::Clock::stamp)).
    pub(crate) fn counts_from_stamp(&self) -> bool {
        matches!(self.due, Some(Due::After(_))) || self.ttl.is_some()
    }

    /// When a record stored at `ts` becomes due, if it was delayed.
    pub(crate) fn due_at(&self, ts: Nanos) -> Option<Nanos> {
        self.due.map(|due| match due {
            Due::After(delay) => ts.saturating_add(duration_nanos(delay)),
            Due::At(time) => to_nanos(time),
        })
    }

    /// When a record stored at `ts` expires, if it has a time-to-live.
    pub(crate) fn expires_at(&self, ts: Nanos) -> Option<Nanos> {
        self.ttl.map(|ttl| ts.saturating_add(duration_nanos(ttl)))
    }
}

/// Whether anything of a record's (or entry's) counts from its stamp: a delay or a
/// time-to-live, or a dedupe window (it has a message id).
fn counts_from_stamp(meta: Option<&Meta>) -> bool {
    meta.is_some_and(|m| m.timing.counts_from_stamp() || m.headers.message_id().is_some())
}

/// A duration in nanoseconds, saturating.
pub(crate) fn duration_nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// When a delayed record becomes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// This long after the send, on the broker's clock.
    After(Duration),
    /// At this time on the broker's clock.
    At(SystemTime),
}

impl<T> Record<T> {
    /// A record with no key and no headers.
    pub fn new(payload: T) -> Self {
        Self {
            payload,
            meta: None,
        }
    }

    /// Sets the key. On a topic the key picks the partition (by a stable hash, the same as
    /// Kafka's default partitioner), so records with one key stay in order.
    #[must_use]
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.meta_mut().key = Some(key.as_ref().into());
        self
    }

    /// Appends a header. Names may repeat; [`Headers::get`] returns the first.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.meta_mut().headers.push(name, value);
        self
    }

    /// Sets the message id, a producer-chosen name for this message (an order number, an
    /// event id), stored in the [`MESSAGE_ID`] header, so it is delivered with the message
    /// ([`Message::id`](crate::Message::id)) and passed on by whatever copies headers. Setting
    /// it again replaces it.
    ///
    /// On a topic or queue with a [dedupe window](crate::Dedupe), a send whose id was already
    /// sent there within the window stores nothing and returns the original receipt: a
    /// producer that retries after a crash or a timeout does not send twice. Elsewhere the id
    /// is only carried.
    ///
    /// The id must be 1 to [`MAX_MESSAGE_ID_LEN`] (256) bytes: the send refuses another with
    /// [`Error::InvalidMessageId`](crate::Error::InvalidMessageId), the record handed back.
    ///
    /// **Cost.** Sends with an id to a topic or queue with a window take its dedupe lock while
    /// the id is checked and the message staged, never while a send waits for room or for its
    /// commit: in a durable broker, concurrent sends with ids share commits as other sends
    /// do. A duplicate sent while its original's commit is still pending returns once that
    /// commit is done (it fails if that commit fails). Sends without an id do not take it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use embus::{Broker, Dedupe, Record, TopicOptions};
    ///
    /// let bus = Broker::memory();
    /// let options = TopicOptions::default().dedupe(Dedupe::within(Duration::from_secs(60)));
    /// let payments = bus.topic_with::<u64>("payments", options)?;
    /// let mut reader = payments.subscribe(embus::Start::Earliest)?;
    /// let producer = payments.producer();
    /// let receipt = producer.send_record(Record::new(100).id("payment-1"))?;
    /// // A retry of the same send: nothing is stored, the same receipt comes back.
    /// assert_eq!(producer.send_record(Record::new(100).id("payment-1"))?, receipt);
    /// let message = reader.recv()?;
    /// assert_eq!(message.id(), Some("payment-1"));
    /// assert!(reader.try_recv().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        let meta = self.meta_mut();
        meta.headers.remove(MESSAGE_ID);
        meta.headers.push(MESSAGE_ID, id.into());
        self
    }

    /// Sets the W3C [`TRACEPARENT`] header to `context` (its `00-…` text), replacing one
    /// already there, so that the consumer continues the trace
    /// ([`Message::trace_context`](crate::Message::trace_context)). A `tracestate` header is
    /// neither read nor changed: add it with [`header`](Self::header) if you carry one.
    ///
    /// ```
    /// use embus::{Record, TraceContext, TRACEPARENT};
    ///
    /// let context = TraceContext::new_root();
    /// let record = Record::new(7u64).trace_context(context);
    /// assert_eq!(record.headers().get(TRACEPARENT), Some(context.to_string().as_bytes()));
    /// ```
    #[must_use]
    pub fn trace_context(mut self, context: TraceContext) -> Self {
        let meta = self.meta_mut();
        meta.headers.remove(TRACEPARENT);
        meta.headers.push(TRACEPARENT, context.to_string());
        self
    }

    /// The message id ([`id`](Self::id)), if set (and valid UTF-8).
    pub fn message_id(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.headers.message_id())
    }

    /// Delivers the record no sooner than `delay` after the send, on the broker's clock
    /// ([`ManualClock`](crate::ManualClock) drives it). On a queue the message is invisible
    /// until then, and messages sent after it are not held back. On a topic it keeps its
    /// place: readers of its partition reach it in offset order and wait there until it is
    /// due, so per-partition order holds (later messages of that partition wait behind it, as
    /// behind a Kafka consumer that pauses for a delayed head).
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.meta_mut().timing.due = Some(Due::After(delay));
        self
    }

    /// Delivers the record no sooner than `time` on the broker's clock; as
    /// [`delay`](Self::delay). A time in the past delivers at once.
    #[must_use]
    pub fn deliver_at(mut self, time: SystemTime) -> Self {
        self.meta_mut().timing.due = Some(Due::At(time));
        self
    }

    /// On a queue, the message expires `ttl` after the send if it was not delivered by then:
    /// it is never delivered, and moves to the dead-letter queue with the reason `expired`
    /// (or is dropped and counted without one). The shorter of this and the queue's
    /// [`message_ttl`](crate::QueueOptions::message_ttl) applies. Topics keep messages by
    /// their retention instead, and ignore it.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.meta_mut().timing.ttl = Some(ttl);
        self
    }

    /// On a queue with [`priorities`](crate::QueueOptions::priorities), delivers this message
    /// before those of lower priority (default 0, the lowest). Topics keep offset order, and
    /// ignore it.
    #[must_use]
    pub fn priority(mut self, priority: u8) -> Self {
        self.meta_mut().timing.priority = priority;
        self
    }

    fn meta_mut(&mut self) -> &mut Meta {
        self.meta.get_or_insert_with(Box::default)
    }

    /// Whether its delay, time-to-live or dedupe window counts from its stamp (see
    /// [`Clock::stamp`](crate::clock::Clock::stamp)).
    pub(crate) fn counts_from_stamp(&self) -> bool {
        counts_from_stamp(self.meta.as_deref())
    }

    /// The key, as a slice.
    pub(crate) fn key_ref(&self) -> Option<&[u8]> {
        self.meta.as_ref().and_then(|m| m.key.as_deref())
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        self.meta.as_ref().map_or(&NO_HEADERS, |m| &m.headers)
    }

    /// The key, if set.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        self.key_ref()
    }

    /// Takes the payload back.
    pub fn into_payload(self) -> T {
        self.payload
    }
}

impl<T> From<T> for Record<T> {
    fn from(payload: T) -> Self {
        Self::new(payload)
    }
}

impl<T> fmt::Debug for Record<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("key", &self.key_ref())
            .field("headers", self.headers())
            .finish_non_exhaustive()
    }
}

/// Ordered name/value pairs carried with a message.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Box<[u8]>)>);

pub(crate) static NO_HEADERS: Headers = Headers(Vec::new());

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Appends a header.
    pub fn push(&mut self, name: impl Into<String>, value: impl AsRef<[u8]>) {
        self.0.push((name.into(), value.as_ref().into()));
    }

    /// The value of the first header with this name.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| &**v)
    }

    /// All headers, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_str(), &**v))
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The message id ([`MESSAGE_ID`]), if present and valid UTF-8.
    pub(crate) fn message_id(&self) -> Option<&str> {
        self.get(MESSAGE_ID)
            .and_then(|id| std::str::from_utf8(id).ok())
    }

    /// Removes every header named `name`.
    fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    /// Appends the dead-letter headers: where it came from (a queue, or `topic/group`), why
    /// (`reason`) and after how many deliveries. The one place they are written.
    pub(crate) fn push_dead_letter(&mut self, from: &str, reason: &str, deliveries: u32) {
        self.push(DEAD_LETTER_QUEUE, from);
        self.push(DEAD_LETTER_REASON, reason);
        self.push(DEAD_LETTER_DELIVERIES, deliveries.to_string());
    }

    pub(crate) fn byte_len(&self) -> usize {
        self.0.iter().map(|(n, v)| n.len() + v.len()).sum()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

/// Where a sent message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Receipt {
    /// The partition (always 0 for a queue).
    pub partition: u32,
    /// The offset in that partition (for a queue, the message's sequence number).
    pub offset: u64,
}

/// Key, headers and timing, boxed apart from the payload so records without them cost one null
/// pointer.
#[derive(Clone, Default)]
pub(crate) struct Meta {
    pub(crate) key: Option<Box<[u8]>>,
    pub(crate) headers: Headers,
    pub(crate) timing: Timing,
}

/// One stored message: shared (by `Arc`) between the log and every consumer holding it.
pub(crate) struct Entry<T> {
    pub(crate) payload: T,
    pub(crate) meta: Option<Box<Meta>>,
    /// Counted size for byte retention (0 when no byte limit is set).
    pub(crate) size: u32,
}

impl<T> Entry<T> {
    pub(crate) fn new(record: Record<T>, size: u32) -> Self {
        Self {
            payload: record.payload,
            meta: record.meta,
            size,
        }
    }

    /// Whether its delay, time-to-live or dedupe window counts from its stamp (see
    /// [`Clock::stamp`](crate::clock::Clock::stamp)).
    pub(crate) fn counts_from_stamp(&self) -> bool {
        counts_from_stamp(self.meta.as_deref())
    }

    /// The record's timing (default when it had none).
    pub(crate) fn timing(&self) -> Timing {
        self.meta
            .as_ref()
            .map_or_else(Timing::default, |m| m.timing)
    }

    /// The message id, if it carries one ([`Record::id`]).
    pub(crate) fn message_id(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.headers.message_id())
    }

    pub(crate) fn into_record(self) -> Record<T> {
        Record {
            payload: self.payload,
            meta: self.meta,
        }
    }
}

/// A timestamp: nanoseconds since the Unix epoch on the broker's clock.
pub(crate) type Nanos = u64;

pub(crate) fn to_system_time(nanos: Nanos) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

pub(crate) fn to_nanos(time: SystemTime) -> Nanos {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

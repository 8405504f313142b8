//! What producers hand over ([`Record`], [`Headers`]) and get back ([`Receipt`]), the
//! [`Payload`] bound, the dead-letter headers, and the engine's shared [`Entry`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The payload bound of every topic and queue: the same in memory and durable mode, so switching
/// modes never breaks a build.
pub trait Payload: Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Payload for T {}

/// Header naming the queue a dead letter came from.
pub const DEAD_LETTER_QUEUE: &str = "embus-dead-letter-queue";
/// Header saying why a message was dead-lettered: `nack`, `dropped` or `ack-timeout`.
pub const DEAD_LETTER_REASON: &str = "embus-dead-letter-reason";
/// Header with how many times the message was delivered before it was dead-lettered (decimal).
pub const DEAD_LETTER_DELIVERIES: &str = "embus-dead-letter-deliveries";

/// A payload with an optional key and headers, for
/// [`Producer::send_record`](crate::Producer::send_record).
///
/// ```
/// let rec = embus::Record::new(42u64).key("customer-42").header("trace-id", b"abc");
/// assert_eq!(rec.headers().get("trace-id"), Some(&b"abc"[..]));
/// ```
pub struct Record<T> {
    pub(crate) payload: T,
    pub(crate) key: Option<Box<[u8]>>,
    pub(crate) headers: Headers,
}

impl<T> Record<T> {
    /// A record with no key and no headers.
    pub fn new(payload: T) -> Self {
        Self {
            payload,
            key: None,
            headers: Headers::new(),
        }
    }

    /// Sets the key. On a topic the key picks the partition (by a stable hash, the same as
    /// Kafka's default partitioner), so records with one key stay in order.
    #[must_use]
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(key.as_ref().into());
        self
    }

    /// Appends a header. Names may repeat; [`Headers::get`] returns the first.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push(name, value);
        self
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The key, if set.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        self.key.as_deref()
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
            .field("key", &self.key)
            .field("headers", &self.headers)
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

/// Key and headers, boxed apart from the payload so records without them cost one null pointer.
#[derive(Clone)]
pub(crate) struct Meta {
    pub(crate) key: Option<Box<[u8]>>,
    pub(crate) headers: Headers,
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
        let Record {
            payload,
            key,
            headers,
        } = record;
        let meta = (key.is_some() || !headers.is_empty()).then(|| Box::new(Meta { key, headers }));
        Self {
            payload,
            meta,
            size,
        }
    }

    pub(crate) fn into_record(self) -> Record<T> {
        match self.meta {
            Some(meta) => Record {
                payload: self.payload,
                key: meta.key,
                headers: meta.headers,
            },
            None => Record::new(self.payload),
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

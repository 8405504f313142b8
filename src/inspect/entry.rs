//! One stored message as [`StoreFile::read`](super::StoreFile::read) yields it, and its JSON
//! form (bytes as UTF-8 text where they are, else base64).

use serde::ser::{SerializeMap, Serializer};

use super::time;
use crate::record::Headers;

/// Where an [`Entry`] is stored: a topic's partition and offset, or a queue and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    /// A topic message.
    Topic {
        /// Its partition.
        partition: u32,
        /// Its offset in the partition.
        offset: u64,
    },
    /// A queued message.
    Queue {
        /// Its id in the queue (send order).
        id: u64,
        /// How many deliveries of it ended without an ack so far (0: never delivered).
        delivery_count: u32,
    },
}

/// One stored message, read from a store file.
///
/// Its JSON form (`Serialize`, one line per message in `embus tail`):
/// `{"topic": "orders", "partition": 0, "offset": 3, ...}` or
/// `{"queue": "jobs", "id": 7, "delivery_count": 1, ...}`, then `"timestamp"` (RFC 3339, UTC,
/// nanoseconds), `"timestamp_ns"` (nanoseconds since the Unix epoch), `"key"` (`null`, a string,
/// or `{"base64": "..."}` for a key that is not UTF-8), `"headers"` (name -> value as the key;
/// a name that repeats maps to an array of its values) and the payload: `"payload"`, the JSON
/// value itself, when the store's codec is JSON, else `"payload_base64"`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Entry {
    /// The topic's or queue's name.
    pub name: String,
    /// Partition and offset, or id and delivery count.
    pub place: Place,
    /// When it was sent, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The record's key.
    pub key: Option<Vec<u8>>,
    /// The record's headers.
    pub headers: Headers,
    /// The payload's bytes, in the store's codec.
    pub payload: Vec<u8>,
    /// The payload as JSON, when the store's codec is JSON (self-describing).
    pub payload_json: Option<serde_json::Value>,
}

impl Entry {
    /// The timestamp as RFC 3339 in UTC with nanoseconds (`2026-12-06T10:00:00.000000000Z`).
    pub fn timestamp(&self) -> String {
        time::format(self.timestamp_ns)
    }

    /// The offset (topic) or id (queue).
    pub fn position(&self) -> u64 {
        match self.place {
            Place::Topic { offset, .. } => offset,
            Place::Queue { id, .. } => id,
        }
    }
}

impl serde::Serialize for Entry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self.place {
            Place::Topic { partition, offset } => {
                map.serialize_entry("topic", &self.name)?;
                map.serialize_entry("partition", &partition)?;
                map.serialize_entry("offset", &offset)?;
            }
            Place::Queue { id, delivery_count } => {
                map.serialize_entry("queue", &self.name)?;
                map.serialize_entry("id", &id)?;
                map.serialize_entry("delivery_count", &delivery_count)?;
            }
        }
        map.serialize_entry("timestamp", &self.timestamp())?;
        map.serialize_entry("timestamp_ns", &self.timestamp_ns)?;
        map.serialize_entry("key", &self.key.as_deref().map(bytes_value))?;
        map.serialize_entry("headers", &headers_value(&self.headers))?;
        match &self.payload_json {
            Some(value) => map.serialize_entry("payload", value)?,
            None => map.serialize_entry("payload_base64", &base64(&self.payload))?,
        }
        map.end()
    }
}

/// Bytes as a JSON string if they are UTF-8, else `{"base64": "..."}`.
pub(crate) fn bytes_value(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::Value::String(text.to_owned()),
        Err(_) => serde_json::json!({ "base64": base64(bytes) }),
    }
}

/// Headers as a JSON object: name -> [`bytes_value`], or an array of them if the name repeats.
pub(crate) fn headers_value(headers: &Headers) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (name, value) in headers.iter() {
        let value = bytes_value(value);
        match out.get_mut(name) {
            None => {
                out.insert(name.to_owned(), value);
            }
            Some(serde_json::Value::Array(values)) => values.push(value),
            Some(first) => *first = serde_json::Value::Array(vec![first.take(), value]),
        }
    }
    serde_json::Value::Object(out)
}

/// Standard base64 with padding (RFC 4648).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn headers_say_which_values_are_base64_and_keep_repeats() {
        let mut headers = Headers::new();
        headers.push("a", b"text");
        headers.push("b", [0xff]);
        headers.push("a", b"again");
        assert_eq!(
            headers_value(&headers),
            serde_json::json!({"a": ["text", "again"], "b": {"base64": "/w=="}})
        );
    }
}

//! Payload encoding: the [`Codec`] trait, its two built-in codecs — [`Bincode`] (the default:
//! compact and fast) and [`Json`] (self-describing: it carries every serde shape and lets a
//! payload type evolve) — and [`CodecKind`], which picks one for a broker
//! ([`BrokerBuilder::codec`](crate::BrokerBuilder::codec)). The only file that names `bincode`
//! or `serde_json`'s payload encoding. Memory mode never encodes; it only counts sizes for byte
//! retention.
//!
//! # What the binary codec cannot carry
//!
//! Bincode writes fields in order with no names or markers, so it cannot carry serde shapes
//! that need to look ahead when reading: `#[serde(tag = "..")]` and `#[serde(untagged)]`
//! enums, `#[serde(flatten)]`, `skip_serializing_if`, and types that deserialize with
//! `deserialize_any` (such as `serde_json::Value`). A durable broker refuses such a payload at
//! `send` with [`Error::Unsupported`](crate::Error::Unsupported) rather than store what it could
//! not read back. Use [`CodecKind::Json`] for them.
//!
//! # Evolving a payload type
//!
//! Stored messages outlive the code that wrote them. With bincode, adding, removing or
//! reordering a field makes older messages undecodable (a queue sets them aside, lists them by
//! [`Queue::undecodable`](crate::Queue::undecodable) and can move them to its dead-letter
//! queue with [`Queue::dead_letter_undecodable`](crate::Queue::dead_letter_undecodable); on a
//! topic a reader gets each as
//! [`RecvError::Undecodable`](crate::RecvError::Undecodable), with its raw bytes). With
//! JSON, add a field with `#[serde(default)]` and old messages read with its default; remove a
//! field and old messages' extra value is ignored. For changes neither covers, carry a version:
//! an enum with one variant per version, or a new topic for the new type.

use bincode::enc::write::Writer;
use bincode::error::EncodeError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How payloads become bytes in a durable store, and back.
///
/// The durable store encodes every payload once, on the sending thread, and decodes only what
/// it reads back from the file (after a reopen, or for a reader behind the in-memory tail).
/// A broker uses one of the built-in codecs, chosen with [`CodecKind`]; the trait is how the
/// engine reaches them, and lets you use the same encodings elsewhere.
///
/// ```
/// use embus::codec::{Bincode, Codec};
/// let mut bytes = Vec::new();
/// Bincode::encode(&("order", 42u32), &mut bytes)?;
/// let back: (String, u32) = Bincode::decode(&bytes)?;
/// assert_eq!(back, ("order".to_string(), 42));
/// # Ok::<(), embus::codec::CodecError>(())
/// ```
pub trait Codec: Send + Sync + 'static {
    /// Appends `value`'s encoding to `out`.
    ///
    /// # Errors
    /// [`CodecError`] if the value cannot be encoded (e.g. a map serde cannot size).
    fn encode<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Decodes a value from exactly `bytes`.
    ///
    /// # Errors
    /// [`CodecError`] if the bytes are not an encoding of a `T` (or have bytes left over).
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;
}

/// Why a payload could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// The most a decoded value may claim to allocate: 1 GiB.
const DECODE_LIMIT: usize = 1 << 30;

/// bincode 2 with its standard configuration (varint integers), through serde. Decoding
/// refuses values claiming more than 1 GiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

impl Codec for Bincode {
    fn encode<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        // Straight into the `Vec` (bincode writes a `Vec<u8>` payload byte by byte: through
        // `std::io::Write` each byte also pays an `io::Result` and a byte count).
        bincode::serde::encode_into_writer(value, VecWriter(out), bincode::config::standard())
            .map_err(|e| CodecError(e.to_string()))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        // A limit makes bincode refuse a damaged length prefix before allocating for it (an
        // allocation failure aborts the process).
        let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
        let (value, used) = bincode::serde::decode_from_slice(bytes, config)
            .map_err(|e| CodecError(e.to_string()))?;
        if used == bytes.len() {
            Ok(value)
        } else {
            Err(CodecError(format!(
                "{} bytes left over after the payload",
                bytes.len() - used
            )))
        }
    }
}

/// A bincode writer appending to a `Vec`.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for VecWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// What [`Bincode`] writes for a `Vec<u8>`, written in one go: through serde a `Vec<u8>` is a
/// sequence, its length encoded as a `usize` (a varint in the standard configuration) and then
/// each byte by itself, one write per byte. The same bytes, byte for byte.
pub(crate) fn bincode_bytes(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::encode_into_writer(bytes.len(), VecWriter(out), bincode::config::standard())
        .map_err(|e| CodecError(e.to_string()))?;
    out.extend_from_slice(bytes);
    Ok(())
}

/// JSON through `serde_json`: self-describing, so it carries every serde shape (tagged and
/// untagged enums, `flatten`, `skip_serializing_if`) and tolerates added (`#[serde(default)]`)
/// and removed fields. Larger and slower than [`Bincode`].
///
/// ```
/// use embus::codec::{Codec, Json};
/// let mut bytes = Vec::new();
/// Json::encode(&("order", 42u32), &mut bytes)?;
/// assert_eq!(bytes, br#"["order",42]"#);
/// # Ok::<(), embus::codec::CodecError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Codec for Json {
    fn encode<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        serde_json::to_writer(out, value).map_err(|e| CodecError(e.to_string()))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError(e.to_string()))
    }
}

/// Which codec a broker stores payloads with, set by
/// [`BrokerBuilder::codec`](crate::BrokerBuilder::codec) and kept in the store's file:
/// reopening a file with another codec is [`Error::CodecMismatch`](crate::Error::CodecMismatch).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use embus::{Broker, codec::CodecKind};
/// # let dir = std::env::temp_dir().join(format!("embus-doc-codec-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// #[serde(tag = "type")]
/// enum Event { Created { id: u32 }, Deleted { id: u32 } }
///
/// let bus = Broker::builder().path(dir.join("events.embus")).codec(CodecKind::Json).open()?;
/// bus.topic::<Event>("events")?.producer().send(Event::Created { id: 1 })?;
/// # bus.close()?; std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CodecKind {
    /// [`Bincode`]: compact and fast; cannot carry self-describing serde shapes.
    #[default]
    Bincode,
    /// [`Json`]: carries every serde shape and lets payload types evolve.
    Json,
}

impl CodecKind {
    /// The name stored in the file and shown in errors: `bincode` or `json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bincode => "bincode",
            Self::Json => "json",
        }
    }

    pub(crate) fn encode<T: Serialize>(
        self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        match self {
            Self::Bincode => Bincode::encode(value, out),
            Self::Json => Json::encode(value, out),
        }
    }

    pub(crate) fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            Self::Bincode => Bincode::decode(bytes),
            Self::Json => Json::decode(bytes),
        }
    }

    /// The encoded length of `value` in this codec, without producing the bytes. A value the
    /// codec cannot encode counts as its in-memory size, so byte retention still bounds it.
    pub(crate) fn encoded_len<T: Serialize>(self, value: &T) -> usize {
        let counted = match self {
            Self::Bincode => {
                let mut counter = Counter(0);
                bincode::serde::encode_into_writer(value, &mut counter, bincode::config::standard())
                    .map(|()| counter.0)
                    .ok()
            }
            Self::Json => {
                let mut counter = Counter(0);
                serde_json::to_writer(&mut counter, value)
                    .map(|()| counter.0)
                    .ok()
            }
        };
        counted.unwrap_or(std::mem::size_of::<T>())
    }
}

/// A writer that keeps only the count.
struct Counter(usize);

impl Writer for Counter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.0 += bytes.len();
        Ok(())
    }
}

impl std::io::Write for Counter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bincode_bytes_writes_what_bincode_writes() {
        // Around each varint boundary: one byte up to 250, then 0xFB + u16, 0xFC + u32.
        for len in [0, 1, 100, 250, 251, 252, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 256) as u8).collect();
            let mut serde = b"body".to_vec();
            Bincode::encode(&payload, &mut serde).unwrap();
            let mut fast = b"body".to_vec();
            bincode_bytes(&payload, &mut fast).unwrap();
            assert_eq!(fast, serde, "{len} bytes");
        }
    }

    #[test]
    fn counts_like_bincode_standard() {
        // standard() uses varints: small integers take one byte, strings a length prefix.
        let encoded_len = |v: &dyn Fn(CodecKind) -> usize| v(CodecKind::Bincode);
        assert_eq!(encoded_len(&|c| c.encoded_len(&7u64)), 1);
        assert_eq!(encoded_len(&|c| c.encoded_len(&"hello".to_string())), 6);
        assert_eq!(encoded_len(&|c| c.encoded_len(&vec![0u8; 300])), 300 + 3);
        assert_eq!(CodecKind::Json.encoded_len(&"hello".to_string()), 7);
    }

    #[test]
    fn decode_rejects_garbage_and_leftovers() {
        let mut bytes = Vec::new();
        Bincode::encode(&"hi".to_string(), &mut bytes).unwrap();
        assert_eq!(
            bytes.len(),
            CodecKind::Bincode.encoded_len(&"hi".to_string())
        );
        bytes.push(0);
        assert!(
            Bincode::decode::<String>(&bytes).is_err(),
            "a byte left over"
        );
        assert!(Bincode::decode::<String>(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn a_huge_length_prefix_is_an_error_not_an_abort() {
        // varint 0xfd = u64 follows: a string claiming 2^60 bytes.
        let mut bytes = vec![0xfd];
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(Bincode::decode::<String>(&bytes).is_err());
        assert!(Bincode::decode::<Vec<u64>>(&bytes).is_err());
    }
}

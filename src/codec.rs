//! Payload encoding: the [`Codec`] trait and its default, [`Bincode`] (bincode 2, pinned: upstream
//! is unmaintained, so everything else reaches it through this trait). The only file that
//! imports `bincode`. Memory mode never encodes; it only counts sizes for byte retention.

use bincode::enc::write::Writer;
use bincode::error::EncodeError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How payloads become bytes in a durable store, and back.
///
/// The durable store encodes every payload once, on the sending thread, and decodes only what
/// it reads back from the file (after a reopen, or for a reader behind the in-memory tail).
/// [`Bincode`] is the default and the only codec a broker uses today; the trait keeps the
/// payload format replaceable without touching the engine.
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
        bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
            .map(drop)
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

/// A bincode writer that keeps only the count.
struct Counter(usize);

impl Writer for Counter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.0 += bytes.len();
        Ok(())
    }
}

/// The bincode-2 (standard configuration) encoded length of `value`. A value bincode cannot encode
/// (a sequence of unknown length, say) counts as its in-memory size, so byte retention still
/// bounds it.
pub(crate) fn encoded_len<T: Serialize>(value: &T) -> usize {
    let mut counter = Counter(0);
    match bincode::serde::encode_into_writer(value, &mut counter, bincode::config::standard()) {
        Ok(()) => counter.0,
        Err(_) => std::mem::size_of::<T>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_bincode_standard() {
        // standard() uses varints: small integers take one byte, strings a length prefix.
        assert_eq!(encoded_len(&7u64), 1);
        assert_eq!(encoded_len(&"hello".to_string()), 6);
        assert_eq!(encoded_len(&vec![0u8; 300]), 300 + 3);
    }

    #[test]
    fn decode_rejects_garbage_and_leftovers() {
        let mut bytes = Vec::new();
        Bincode::encode(&"hi".to_string(), &mut bytes).unwrap();
        assert_eq!(bytes.len(), encoded_len(&"hi".to_string()));
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

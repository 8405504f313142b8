//! Payload sizes for byte retention, counted through bincode 2 without producing bytes. The only
//! file that imports `bincode`.

use bincode::enc::write::Writer;
use bincode::error::EncodeError;
use serde::Serialize;

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
    use super::encoded_len;

    #[test]
    fn counts_like_bincode_standard() {
        // standard() uses varints: small integers take one byte, strings a length prefix.
        assert_eq!(encoded_len(&7u64), 1);
        assert_eq!(encoded_len(&"hello".to_string()), 6);
        assert_eq!(encoded_len(&vec![0u8; 300]), 300 + 3);
    }
}

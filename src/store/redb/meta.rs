//! Checksummed metadata rows (format version 3).
//!
//! Every value in `embus.ends`, `embus.groups`, `embus.declarations`, `embus.settings` and the
//! delivery-count tables (`embus.c.<queue>`) is stored as
//! `CRC-32 (4 bytes, little-endian) ++ value`. The CRC covers the table's name, the row's key
//! and the value, so a flipped bit, or a row or page of another table or key, is caught
//! before the store acts on it: it is
//! [`Error::Corrupt`](crate::Error::Corrupt) naming the file, the table and the row, never an
//! end to trim to, a position to start from or a loop bound. A log's own tables (delivery
//! counts, key indexes) seal under their logical names ([`schema`](super::schema)).

use std::fmt::Display;

/// Seals `value` for `key` in `table`.
pub(super) fn seal(table: &str, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + value.len());
    out.extend_from_slice(&checksum(table, key, value).to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Checks `stored` (sealed for `key` in `table`) and returns its value; `row` names the row in
/// the error.
pub(super) fn open<'a>(
    table: &str,
    key: &[u8],
    row: impl Display,
    stored: &'a [u8],
) -> Result<&'a [u8], redb::Error> {
    match stored.split_first_chunk::<4>() {
        Some((crc, value)) if u32::from_le_bytes(*crc) == checksum(table, key, value) => Ok(value),
        _ => Err(damaged(table, row, "checksum mismatch")),
    }
}

/// A damaged metadata row, for [`storage`](super::open::storage) to report as corrupt.
pub(super) fn damaged(table: &str, row: impl Display, what: &str) -> redb::Error {
    redb::Error::Corrupted(format!("table `{table}`, row `{row}`: {what}"))
}

fn checksum(table: &str, key: &[u8], value: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in [table.as_bytes(), key] {
        hasher.update(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_le_bytes());
        hasher.update(part);
    }
    hasher.update(value);
    hasher.finalize()
}

/// A fixed-size little-endian value, or a damaged-row error.
pub(super) fn fixed<const N: usize>(
    table: &str,
    row: impl Display,
    value: &[u8],
) -> Result<[u8; N], redb::Error> {
    value
        .try_into()
        .map_err(|_| damaged(table, row, "wrong length"))
}

/// The key bytes of a group position row.
pub(super) fn group_key(topic: &str, group: &str, partition: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(topic.len() + group.len() + 12);
    for part in [topic, group] {
        out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(&partition.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_single_bit_flip_and_every_other_place_is_caught() {
        let stored = seal("embus.ends", b"t.a.0", &[7; 16]);
        assert_eq!(
            open("embus.ends", b"t.a.0", "t.a.0", &stored).unwrap(),
            &[7; 16]
        );
        for bit in 0..stored.len() * 8 {
            let mut bad = stored.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(open("embus.ends", b"t.a.0", "", &bad).is_err(), "bit {bit}");
        }
        assert!(open("embus.ends", b"t.a.1", "", &stored).is_err());
        assert!(open("embus.groups", b"t.a.0", "", &stored).is_err());
        assert!(open("embus.ends", b"t.a.0", "", &stored[..3]).is_err());
        let err = open("embus.ends", b"t.a.1", "t.a.1", &stored).unwrap_err();
        assert!(
            err.to_string().contains("`embus.ends`, row `t.a.1`"),
            "{err}"
        );
    }
}

//! Hooks for the fuzz targets in `fuzz/` (built only with `--cfg fuzzing`, which cargo-fuzz
//! sets): the crate-private pieces a target drives directly. Not part of the API.

use crate::store::format;

/// The table the fuzzed records are checked against.
const TABLE: &str = "t.fuzz.0";

/// Decodes `input` as a stored record value and checks what a decoder must hold: no panic,
/// and a record that decodes re-encodes to one that decodes to the same fields, and whose own
/// re-encoding is byte for byte the same (the encoding is canonical).
///
/// The first byte of `input` steers: bit 0 set seals the rest with a valid checksum first (so
/// the fuzzer gets past the CRC into the field parsing), the next 8 bytes are the row's key.
///
/// # Panics
/// When a property above does not hold: that is what the fuzzer looks for.
pub fn record(input: &[u8]) {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let Some((key, value)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let key = u64::from_le_bytes(*key);
    let seed = format::seed(TABLE);
    let mut value = value.to_vec();
    if mode & 1 == 1 && value.len() >= format::HEAD {
        // As the writer seals (version 2 or 3), or as version 1 did: the CRC of the key
        // and the rest, from scratch. Any other version byte is put back as it was.
        let version = value[0];
        let ts = u64::from_le_bytes(value[5..13].try_into().unwrap_or_default());
        let size = u32::from_le_bytes(value[13..17].try_into().unwrap_or_default());
        format::seal(&mut value, seed, key, ts, size);
        value[0] = version;
        if version == 1 {
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&key.to_le_bytes());
            hasher.update(&value[5..]);
            let crc = hasher.finalize();
            value[1..5].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let Ok(row) = format::open(seed, key, &value) else {
        return;
    };
    let again = reencode(&row, seed, key);
    let reread = format::open(seed, key, &again)
        .unwrap_or_else(|e| panic!("a re-encoded record does not open: {e} ({row:?})"));
    assert_eq!(
        (reread.ts, reread.size, reread.key, reread.payload),
        (row.ts, row.size, row.key, row.payload),
        "fields changed in a re-encoding"
    );
    assert_eq!(reread.timing, row.timing, "timing changed in a re-encoding");
    let names = |h: &crate::Headers| {
        h.iter()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&reread.headers),
        names(&row.headers),
        "headers changed in a re-encoding"
    );
    assert_eq!(
        reencode(&reread, seed, key),
        again,
        "the re-encoding is not canonical"
    );
}

/// `row` encoded as the writer encodes it.
fn reencode(row: &format::Row<'_>, seed: u32, key: u64) -> Vec<u8> {
    let mut out = format::body_timed(row.key, &row.headers, &row.timing);
    out.extend_from_slice(row.payload);
    format::seal(&mut out, seed, key, row.ts, row.size);
    out
}

//! The on-disk record format: how one stored message is laid out in a redb value, with its
//! checksum, and how the payload's bytes are found again.
//!
//! ```text
//! offset  size  field
//! 0       1     record version (2, or 3 with a timing section; 1 is still read)
//! 1       4     CRC-32 (IEEE), little-endian, of: the table's seed (version 2 only, see
//!               below), the row's key (8 bytes, little-endian) and every byte after this field
//! 5       8     timestamp, nanoseconds since the Unix epoch, little-endian
//! 13      4     size counted by byte retention, little-endian
//! 17      ..    version 3 only: the timing section (see below)
//!         4     key length + 1 (0: no key), little-endian; then the key
//!         4     header count; then per header: u32 name length, name, u32 value length, value
//!         ..    the payload, encoded by the codec (the rest of the value)
//! ```
//!
//! # Versions
//!
//! Version 2 binds the checksum to the table the row is in: the CRC starts from the table's
//! [`seed`] (the CRC of its name's length and name), so a row (or a whole page) of another
//! partition, queue or topic does not pass as this table's record at the same key. Version 1
//! (files of format versions 1 and 2) covered only the key and the value; such rows are still
//! read and checked as before, never rewritten: an upgraded file keeps its old rows as they
//! are (opening must not scan the log), and new rows are written as version 2. Flipping a
//! version 2 row's version byte to 1 does not pass either: the CRCs differ.
//!
//! Version 3 is version 2 with a timing section after the size: a flags byte (bit 0: a delay
//! follows, bit 1: a due time follows, bit 2: a time-to-live follows), the priority (one
//! byte), then each value the flags announce as a little-endian `u64` in nanoseconds (the
//! delay and the time-to-live relative to the timestamp, the due time since the Unix epoch).
//! Only records sent with [`Record::delay`](crate::Record::delay),
//! [`deliver_at`](crate::Record::deliver_at), [`ttl`](crate::Record::ttl) or
//! [`priority`](crate::Record::priority) are written as version 3; every other record stays
//! version 2, byte for byte. A build that predates version 3 refuses the file by its format
//! version (4) before it meets such a record.
//!
//! The producer encodes everything from offset 17 on its own thread ([`body`], then the
//! engine appends the payload in its codec), leaving room for the first 17 bytes; the writer
//! thread fills them in ([`seal`]) once it knows the timestamp. A reader checks version and
//! checksum before it trusts a byte ([`open`]).

use std::time::Duration;

use crate::record::{Due, Headers, Meta, Nanos, Timing, duration_nanos, to_nanos, to_system_time};

/// The record version this build writes for records without timing.
pub(crate) const RECORD_VERSION: u8 = 2;
/// The record version of records with timing (version 2 plus a timing section).
pub(crate) const TIMED_VERSION: u8 = 3;
/// The older record version this build still reads (checksum not bound to the table).
const UNBOUND_VERSION: u8 = 1;
/// Bytes before the body.
pub(crate) const HEAD: usize = 17;
/// The first byte of a batch row ([`batch`](super::batch)): no record version.
pub(crate) const BATCH: u8 = 16;

/// `HEAD` zero bytes, then key and headers: the payload's bytes go after them.
pub(crate) fn body(key: Option<&[u8]>, headers: &Headers) -> Vec<u8> {
    body_with_room(key, headers, &Timing::default(), 0)
}

/// As [`body`], with the record's timing: version 3 if it has any (see the module docs),
/// else exactly [`body`].
#[cfg(any(test, fuzzing))]
pub(crate) fn body_timed(key: Option<&[u8]>, headers: &Headers, timing: &Timing) -> Vec<u8> {
    body_with_room(key, headers, timing, 0)
}

/// As [`body_timed`], allocated with room for `room` more bytes (the payload the codec
/// appends), so appending them does not reallocate.
pub(crate) fn body_with_room(
    key: Option<&[u8]>,
    headers: &Headers,
    timing: &Timing,
    room: usize,
) -> Vec<u8> {
    let timed = *timing != Timing::default();
    let header_bytes: usize = headers.iter().map(|(n, v)| 8 + n.len() + v.len()).sum();
    let timing_bytes = if timed { 2 + 2 * 8 } else { 0 };
    let len = HEAD + timing_bytes + 4 + key.map_or(0, <[u8]>::len) + 4 + header_bytes;
    let mut out = Vec::with_capacity(len + room);
    out.resize(HEAD, 0);
    if timed {
        out[0] = TIMED_VERSION;
        let (mut flags, mut values) = (0u8, [0u64; 2]);
        let mut n = 0;
        match timing.due {
            Some(Due::After(delay)) => {
                flags |= DELAY;
                values[n] = duration_nanos(delay);
                n += 1;
            }
            Some(Due::At(time)) => {
                flags |= DUE_AT;
                values[n] = to_nanos(time);
                n += 1;
            }
            None => {}
        }
        if let Some(ttl) = timing.ttl {
            flags |= TTL;
            values[n] = duration_nanos(ttl);
            n += 1;
        }
        out.push(flags);
        out.push(timing.priority);
        for value in &values[..n] {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    match key {
        Some(key) => {
            put_len(&mut out, key.len() + 1);
            out.extend_from_slice(key);
        }
        None => put_len(&mut out, 0),
    }
    put_headers(&mut out, headers);
    out
}

/// Timing section flags: a delay, a due time, a time-to-live follows.
const DELAY: u8 = 1;
const DUE_AT: u8 = 2;
const TTL: u8 = 4;

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_headers(out: &mut Vec<u8>, headers: &Headers) {
    put_len(out, headers.len());
    for (name, value) in headers.iter() {
        put_len(out, name.len());
        out.extend_from_slice(name.as_bytes());
        put_len(out, value.len());
        out.extend_from_slice(value);
    }
}

/// The checksum seed of `table`: binds version 2 records to the table they are stored in.
pub(crate) fn seed(table: &str) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&u32::try_from(table.len()).unwrap_or(u32::MAX).to_le_bytes());
    hasher.update(table.as_bytes());
    hasher.finalize()
}

/// Fills in version, timestamp, size and the checksum, which also covers the row's `key` (a
/// damaged key must not pass off a record as another offset's) and, through `seed`, its table.
/// A body from [`body_timed`] keeps its version 3.
pub(crate) fn seal(value: &mut [u8], seed: u32, key: u64, ts: Nanos, size: u32) {
    if value[0] != TIMED_VERSION {
        value[0] = RECORD_VERSION;
    }
    value[5..13].copy_from_slice(&ts.to_le_bytes());
    value[13..17].copy_from_slice(&size.to_le_bytes());
    let crc = checksum(Some(seed), key, &value[5..]);
    value[1..5].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC of a record: from the table's seed (version 2) or from scratch (version 1).
fn checksum(seed: Option<u32>, key: u64, rest: &[u8]) -> u32 {
    let mut hasher = match seed {
        Some(seed) => crc32fast::Hasher::new_with_initial(seed),
        None => crc32fast::Hasher::new(),
    };
    hasher.update(&key.to_le_bytes());
    hasher.update(rest);
    hasher.finalize()
}

/// A checked stored record: its fields borrowed from the value.
#[derive(Debug)]
pub(crate) struct Row<'a> {
    pub(crate) ts: Nanos,
    pub(crate) size: u32,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) headers: Headers,
    /// Version 3's timing section (default for older versions).
    pub(crate) timing: Timing,
    pub(crate) payload: &'a [u8],
}

/// Why a stored value is not a record this build can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bad {
    Version(u8),
    Checksum,
    Truncated,
    /// A batch row ([`batch`](super::batch)) whose header is damaged, read as one record.
    Batch,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Version(v) => write!(
                f,
                "record version {v}, this build reads versions {UNBOUND_VERSION} to \
                 {TIMED_VERSION}"
            ),
            Self::Checksum => f.write_str("record checksum mismatch"),
            Self::Truncated => f.write_str("record truncated"),
            Self::Batch => f.write_str("record batch damaged"),
        }
    }
}

/// Checks the value stored under `key` in the table of `seed` and splits it into fields.
pub(crate) fn open(seed: u32, key: u64, value: &[u8]) -> Result<Row<'_>, Bad> {
    let mut r = Reader(value);
    let version = r.take(1)?[0];
    let seed = match version {
        RECORD_VERSION | TIMED_VERSION => Some(seed),
        UNBOUND_VERSION => None,
        BATCH => return Err(Bad::Batch),
        version => return Err(Bad::Version(version)),
    };
    let crc = r.u32()?;
    if checksum(seed, key, r.0) != crc {
        return Err(Bad::Checksum);
    }
    let ts = u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| Bad::Truncated)?);
    let size = r.u32()?;
    let timing = if version == TIMED_VERSION {
        r.timing()?
    } else {
        Timing::default()
    };
    let key = match r.u32()? {
        0 => None,
        n => Some(r.take(n as usize - 1)?),
    };
    let mut headers = Headers::new();
    for _ in 0..r.u32()? {
        let name = r.len_prefixed()?;
        let value = r.len_prefixed()?;
        headers.push(String::from_utf8_lossy(name), value);
    }
    Ok(Row {
        ts,
        size,
        key,
        headers,
        timing,
        payload: r.0,
    })
}

/// A stored value with its headers replaced (a dead letter's added headers), sealed for `key`
/// in the table of `seed`.
pub(crate) fn with_headers(row: &Row<'_>, seed: u32, key: u64, headers: &Headers) -> Vec<u8> {
    let mut out = body(row.key, headers);
    out.extend_from_slice(row.payload);
    seal(&mut out, seed, key, row.ts, row.size);
    out
}

impl Row<'_> {
    /// Key, headers and timing as the engine keeps them.
    pub(crate) fn meta(&self) -> Option<Box<Meta>> {
        let timed = self.timing != Timing::default();
        (self.key.is_some() || !self.headers.is_empty() || timed).then(|| {
            Box::new(Meta {
                key: self.key.map(Into::into),
                headers: self.headers.clone(),
                timing: self.timing,
            })
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        if n > self.0.len() {
            return Err(Bad::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, Bad> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, Bad> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| Bad::Truncated)?,
        ))
    }

    /// A version 3 timing section.
    fn timing(&mut self) -> Result<Timing, Bad> {
        let flags = self.take(1)?[0];
        let priority = self.take(1)?[0];
        let mut timing = Timing {
            priority,
            ..Timing::default()
        };
        if flags & DELAY != 0 {
            timing.due = Some(Due::After(Duration::from_nanos(self.u64()?)));
        }
        if flags & DUE_AT != 0 {
            timing.due = Some(Due::At(to_system_time(self.u64()?)));
        }
        if flags & TTL != 0 {
            timing.ttl = Some(Duration::from_nanos(self.u64()?));
        }
        Ok(timing)
    }

    fn len_prefixed(&mut self) -> Result<&'a [u8], Bad> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "t.orders.0";

    fn sealed() -> Vec<u8> {
        let mut headers = Headers::new();
        headers.push("h", b"v");
        let mut value = body(Some(b"k"), &headers);
        value.extend_from_slice(b"payload");
        seal(&mut value, seed(TABLE), 42, 7, 3);
        value
    }

    #[test]
    fn round_trips() {
        let value = sealed();
        let row = open(seed(TABLE), 42, &value).unwrap();
        assert_eq!((row.ts, row.size, row.key), (7, 3, Some(&b"k"[..])));
        assert_eq!(row.headers.get("h"), Some(&b"v"[..]));
        assert_eq!(row.payload, b"payload");
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let value = sealed();
        let seed = seed(TABLE);
        for byte in 0..value.len() {
            for bit in 0..8 {
                let mut bad = value.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    open(seed, 42, &bad).is_err(),
                    "flip at {byte}.{bit} went unnoticed"
                );
            }
        }
        for len in 0..value.len() {
            assert!(
                open(seed, 42, &value[..len]).is_err(),
                "truncation to {len}"
            );
        }
        for bit in 0..64 {
            assert!(
                open(seed, 42 ^ (1 << bit), &value).is_err(),
                "key bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn a_record_of_another_table_is_caught() {
        let value = sealed();
        for other in ["t.orders.1", "t.order.0", "q.orders", "t.orders.0 ", ""] {
            assert_eq!(
                open(seed(other), 42, &value).unwrap_err(),
                Bad::Checksum,
                "{other}"
            );
        }
    }

    #[test]
    fn version_1_records_still_read() {
        let mut value = sealed();
        value[0] = UNBOUND_VERSION;
        let crc = checksum(None, 42, &value[5..]);
        value[1..5].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            open(seed("anything"), 42, &value).unwrap().payload,
            b"payload"
        );
        // A version 2 record whose version byte flipped to 1 does not pass.
        let mut flipped = sealed();
        flipped[0] = UNBOUND_VERSION;
        assert_eq!(open(seed(TABLE), 42, &flipped).unwrap_err(), Bad::Checksum);
    }

    #[test]
    fn timing_round_trips_in_version_3_and_only_there() {
        let mut headers = Headers::new();
        headers.push("h", b"v");
        let plain = body_timed(Some(b"k"), &headers, &Timing::default());
        assert_eq!(
            plain,
            body(Some(b"k"), &headers),
            "no timing: version 2 as before"
        );
        for due in [
            None,
            Some(Due::After(Duration::from_millis(5))),
            Some(Due::At(to_system_time(1_767_225_600_000_000_000))),
        ] {
            let timing = Timing {
                due,
                ttl: Some(Duration::from_secs(3)),
                priority: 7,
            };
            let mut value = body_timed(Some(b"k"), &headers, &timing);
            value.extend_from_slice(b"payload");
            seal(&mut value, seed(TABLE), 42, 7, 3);
            assert_eq!(value[0], TIMED_VERSION);
            let row = open(seed(TABLE), 42, &value).unwrap();
            assert_eq!(row.timing, timing);
            assert_eq!((row.key, row.payload), (Some(&b"k"[..]), &b"payload"[..]));
            assert_eq!(row.meta().unwrap().timing, timing);
            for byte in 0..value.len() {
                let mut bad = value.clone();
                bad[byte] ^= 1;
                assert!(open(seed(TABLE), 42, &bad).is_err(), "flip at {byte}");
            }
        }
    }

    #[test]
    fn another_version_is_named() {
        let mut value = sealed();
        value[0] = 9;
        assert_eq!(open(seed(TABLE), 42, &value).unwrap_err(), Bad::Version(9));
    }
}

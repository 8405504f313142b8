//! Record batches (format version 7): consecutive records of one partition stored in one row,
//! as Kafka's record batches are, so a commit of many sends inserts one B-tree row per batch
//! instead of one per message.
//!
//! ```text
//! offset  size  field
//! 0       1     BATCH (16): not a record version, so no build before 7 takes it for a record
//! 1       4     CRC-32 (IEEE), little-endian, from the table's seed, of the row's key (8
//!               bytes, little-endian) and the count and lengths below
//! 5       4     count n of records (at least 2)
//! 9       4 n   each record's length, little-endian
//! ..            the n records, one after the other, each laid out and sealed as a lone
//!               record is (see [`format`](super::format)) for its own offset: the row's key
//!               plus its index
//! ```
//!
//! The row's key is its first record's offset. Each record keeps its own checksum, so damage
//! to one record loses only that one; damage to the count or lengths fails the header's
//! checksum, and the row reads as one damaged record at its key (the offsets after it are then
//! missing, which readers report as lost). Partitions of compacted topics, whose rows are
//! replaced one by one, and queues, whose rows are deleted one by one as they are acked, keep
//! one record per row; so does a partition's lone record of a commit.

use super::format::{self, BATCH, Bad};

/// Most records one batch row holds. A reader of one offset reads its whole row, and a trim
/// that ends inside a row stores the rest of it again, so rows stay the size of a partition's
/// in-memory segment (a cold read loads that many): 1,000 sends in one commit are 8 rows, and
/// a trim of one record per commit copies at most 127 others.
pub(crate) const MOST_RECORDS: usize = 128;

/// Most bytes of records one batch row holds (a single larger record gets a row of its own).
pub(crate) const MOST_BYTES: usize = 1 << 20;

/// Bytes before the lengths.
const HEAD: usize = 9;

/// Whether the stored `value` is a batch row (else a lone record).
pub(crate) fn is_batch(value: &[u8]) -> bool {
    value.first() == Some(&BATCH)
}

/// One row of `records` (each already sealed for its offset, `key` and on) for `key` in the
/// table of `seed`.
pub(crate) fn seal(seed: u32, key: u64, records: &[impl AsRef<[u8]>]) -> Vec<u8> {
    let body: usize = records.iter().map(|r| r.as_ref().len()).sum();
    let mut out = Vec::with_capacity(HEAD + 4 * records.len() + body);
    out.push(BATCH);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&len(records.len()).to_le_bytes());
    for record in records {
        out.extend_from_slice(&len(record.as_ref().len()).to_le_bytes());
    }
    let crc = checksum(seed, key, &out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
    for record in records {
        out.extend_from_slice(record.as_ref());
    }
    out
}

fn len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn checksum(seed: u32, key: u64, header: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(seed);
    hasher.update(&key.to_le_bytes());
    hasher.update(header);
    hasher.finalize()
}

/// The records of the row stored under `key` in the table of `seed`, with their offsets: a
/// lone record is one (checked only when opened, [`format::open`]); a batch's header is
/// checked here.
pub(crate) fn records(seed: u32, key: u64, value: &[u8]) -> Result<Records<'_>, Bad> {
    if !is_batch(value) {
        return Ok(Records {
            next: key,
            lens: &[],
            rest: value,
            lone: true,
        });
    }
    let count = value.get(5..HEAD).ok_or(Bad::Truncated)?;
    let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]) as usize;
    let header_end = count
        .checked_mul(4)
        .and_then(|n| n.checked_add(HEAD))
        .filter(|&end| end <= value.len())
        .ok_or(Bad::Truncated)?;
    let crc = u32::from_le_bytes([value[1], value[2], value[3], value[4]]);
    if checksum(seed, key, &value[5..header_end]) != crc {
        return Err(Bad::Checksum);
    }
    let (lens, rest) = (&value[HEAD..header_end], &value[header_end..]);
    let body: u64 = lens
        .chunks_exact(4)
        .map(|l| u64::from(u32::from_le_bytes([l[0], l[1], l[2], l[3]])))
        .sum();
    if body != rest.len() as u64 {
        return Err(Bad::Truncated);
    }
    Ok(Records {
        next: key,
        lens,
        rest,
        lone: false,
    })
}

/// The offset and bytes of each record of a row, in order.
pub(crate) struct Records<'a> {
    next: u64,
    lens: &'a [u8],
    rest: &'a [u8],
    lone: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let n = if self.lone {
            self.lone = false;
            self.rest.len()
        } else {
            let (l, lens) = self.lens.split_first_chunk::<4>()?;
            self.lens = lens;
            u32::from_le_bytes(*l) as usize // the lengths add up to `rest` (checked)
        };
        let (record, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        let offset = self.next;
        self.next += 1;
        Some((offset, record))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = if self.lone { 1 } else { self.lens.len() / 4 };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Records<'_> {}

/// The records of a batch row for `key` from offset `from` on, as the row that holds them
/// once the offsets below `from` are trimmed: a lone record's own bytes, or a smaller batch
/// keyed `from`; `None` if none is left.
pub(crate) fn tail(seed: u32, key: u64, value: &[u8], from: u64) -> Option<Vec<u8>> {
    let kept: Vec<&[u8]> = records(seed, key, value)
        .ok()?
        .filter(|(offset, _)| *offset >= from)
        .map(|(_, record)| record)
        .collect();
    match kept.as_slice() {
        [] => None,
        [lone] => Some(lone.to_vec()),
        kept => Some(seal(seed, from, kept)),
    }
}

/// The counted size of each record of the row below offset `below` (a damaged one counts 0).
pub(crate) fn size_below(seed: u32, key: u64, value: &[u8], below: u64) -> u64 {
    let Ok(records) = records(seed, key, value) else {
        return 0;
    };
    records
        .take_while(|(offset, _)| *offset < below)
        .map(|(offset, record)| format::open(seed, offset, record).map_or(0, |r| u64::from(r.size)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Headers;

    const TABLE: &str = "t.orders.0";

    fn record(key: u64, payload: &[u8]) -> Vec<u8> {
        let mut value = format::body(None, &Headers::new());
        value.extend_from_slice(payload);
        format::seal(&mut value, format::seed(TABLE), key, 7 + key, 3);
        value
    }

    fn batch(key: u64, n: u64) -> (Vec<Vec<u8>>, Vec<u8>) {
        let records: Vec<_> = (key..key + n)
            .map(|k| record(k, format!("p{k}").as_bytes()))
            .collect();
        let row = seal(format::seed(TABLE), key, &records);
        (records, row)
    }

    #[test]
    fn a_batch_round_trips_with_each_record_at_its_offset() {
        let seed = format::seed(TABLE);
        let (records, row) = batch(40, 3);
        assert!(is_batch(&row));
        assert_eq!(super::records(seed, 40, &row).unwrap().len(), 3);
        let read: Vec<_> = super::records(seed, 40, &row).unwrap().collect();
        assert_eq!(read.len(), 3);
        for ((offset, bytes), (k, sent)) in read.iter().zip((40..).zip(&records)) {
            assert_eq!((*offset, *bytes), (k, sent.as_slice()));
            let opened = format::open(seed, *offset, bytes).unwrap();
            assert_eq!(opened.payload, format!("p{k}").as_bytes());
        }
    }

    #[test]
    fn a_lone_record_is_one_record_at_its_key() {
        let seed = format::seed(TABLE);
        let value = record(9, b"x");
        assert!(!is_batch(&value));
        let read: Vec<_> = records(seed, 9, &value).unwrap().collect();
        assert_eq!(read, vec![(9, value.as_slice())]);
    }

    #[test]
    fn damage_to_the_header_is_caught_and_to_a_record_loses_only_it() {
        let seed = format::seed(TABLE);
        let (_, row) = batch(40, 3);
        let header_end = HEAD + 3 * 4;
        for byte in 0..header_end {
            for bit in 0..8 {
                let mut bad = row.clone();
                bad[byte] ^= 1 << bit;
                let read = records(seed, 40, &bad).map(Iterator::count);
                // The tag byte turns the row into a "lone record" that fails to open.
                let caught = read.is_err() || (byte == 0 && format::open(seed, 40, &bad).is_err());
                assert!(caught, "flip at {byte}.{bit} went unnoticed");
            }
        }
        for cut in 1..row.len() {
            assert!(
                records(seed, 40, &row[..cut]).is_err(),
                "truncated to {cut}"
            );
        }
        assert!(records(seed, 41, &row).is_err(), "another key");
        assert!(
            records(format::seed("t.orders.1"), 40, &row).is_err(),
            "another table"
        );
        // A flip inside the second record: the others still open.
        let mut bad = row.clone();
        let last = bad.len() - 1;
        bad[last - record(42, b"p42").len()] ^= 1;
        let opened: Vec<bool> = records(seed, 40, &bad)
            .unwrap()
            .map(|(offset, bytes)| format::open(seed, offset, bytes).is_ok())
            .collect();
        assert_eq!(opened, [true, false, true]);
    }

    #[test]
    fn a_tail_keeps_the_records_from_an_offset_with_their_bytes() {
        let seed = format::seed(TABLE);
        let (records, row) = batch(40, 4);
        let tail2 = tail(seed, 40, &row, 42).unwrap();
        let read: Vec<_> = super::records(seed, 42, &tail2).unwrap().collect();
        assert_eq!(
            read,
            vec![(42, records[2].as_slice()), (43, records[3].as_slice())]
        );
        assert_eq!(
            tail(seed, 40, &row, 43).unwrap(),
            records[3],
            "one left: lone"
        );
        assert_eq!(tail(seed, 40, &row, 44), None);
        assert_eq!(size_below(seed, 40, &row, 42), 6);
        assert_eq!(size_below(seed, 40, &row, 99), 12);
    }
}

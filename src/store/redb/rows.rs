//! A log table's rows as records: from format version 7 a plain partition stores the records
//! of one commit in batch rows ([`batch`]), which these helpers write, read a record at a time
//! and trim; every other row (a queue's, a compacted partition's, an older file's) is a lone
//! record, which they read as a batch of one.

use redb::ReadableTable;

use crate::store::batch;

/// Consecutive records of one partition bound for one row ([`batch`]).
#[derive(Default)]
pub(super) struct Run {
    key: u64,
    records: Vec<Vec<u8>>,
    bytes: usize,
}

impl Run {
    /// Whether record `key` (sealed `value`) may join this row.
    pub(super) fn takes(&self, key: u64, value: &[u8]) -> bool {
        self.records.is_empty()
            || (key == self.key + self.records.len() as u64
                && self.records.len() < batch::MOST_RECORDS
                && self.bytes + value.len() <= batch::MOST_BYTES)
    }

    pub(super) fn push(&mut self, key: u64, value: Vec<u8>) {
        if self.records.is_empty() {
            self.key = key;
            self.bytes = 0;
        }
        self.bytes += value.len();
        self.records.push(value);
    }

    /// Stores the row (a lone record as it is) and empties the run; the records' buffers go
    /// to `spent`.
    pub(super) fn store(
        &mut self,
        table: &mut redb::Table<'_, u64, &'static [u8]>,
        seed: u32,
        spent: &mut Vec<Vec<u8>>,
    ) -> Result<(), redb::Error> {
        match self.records.as_slice() {
            [] => {}
            [lone] => {
                table.insert(self.key, lone.as_slice())?;
            }
            records => {
                table.insert(self.key, batch::seal(seed, self.key, records).as_slice())?;
            }
        }
        spent.append(&mut self.records);
        Ok(())
    }
}

/// Visits the records of offsets `from..to` of `rows` (a log table whose checksum seed is
/// `seed`) in order, as `(offset, bytes)`, until `visit` says to stop: a batch row's records
/// one by one, including the row that starts below `from` and holds it. A batch row whose
/// header is damaged is visited once, whole, at its key (its bytes do not open as a record).
pub(super) fn visit(
    rows: &impl ReadableTable<u64, &'static [u8]>,
    seed: u32,
    (from, to): (u64, u64),
    mut visit: impl FnMut(u64, &[u8]) -> Result<bool, redb::Error>,
) -> Result<(), redb::Error> {
    let mut row = |key: u64, value: &[u8]| -> Result<bool, redb::Error> {
        let Ok(records) = batch::records(seed, key, value) else {
            return if (from..to).contains(&key) {
                visit(key, value)
            } else {
                Ok(true)
            };
        };
        for (offset, record) in records.skip_while(|(offset, _)| *offset < from) {
            if offset >= to || !visit(offset, record)? {
                return Ok(false);
            }
        }
        Ok(true)
    };
    if from > 0
        && let Some(before) = rows.range(..from)?.next_back()
    {
        let (key, value) = before?;
        if batch::is_batch(value.value()) && !row(key.value(), value.value())? {
            return Ok(());
        }
    }
    for stored in rows.range(from..to)? {
        let (key, value) = stored?;
        if !row(key.value(), value.value())? {
            break;
        }
    }
    Ok(())
}

/// The last record of `rows` (a log table whose checksum seed is `seed`, recorded end `end`):
/// its offset and bytes. A last row whose batch header is damaged comes back whole: how many
/// offsets it held is unknown, so it is taken to reach the end (its readers report them lost,
/// as for a damaged row in the middle), with bytes that do not open as a record.
pub(super) fn last(
    rows: &impl ReadableTable<u64, &'static [u8]>,
    seed: u32,
    end: u64,
) -> Result<Option<(u64, Vec<u8>)>, redb::Error> {
    let Some((key, value)) = rows.last()? else {
        return Ok(None);
    };
    let (key, value) = (key.value(), value.value());
    let last = match batch::records(seed, key, value) {
        Ok(records) => records.last().unwrap_or((key, value)),
        Err(_) => (key.max(end.saturating_sub(1)), value),
    };
    Ok(Some((last.0, last.1.to_vec())))
}

/// How many records `rows` holds (a log table whose checksum seed is `seed`, recorded end
/// `end`): its rows, with each batch row counted for its records, and one whose header is
/// damaged for the offsets up to the next row's key (or the end).
pub(super) fn count(
    rows: &impl ReadableTable<u64, &'static [u8]>,
    seed: u32,
    end: u64,
) -> Result<u64, redb::Error> {
    let mut n = 0;
    // A damaged row's key: its span is known at the next row.
    let mut damaged: Option<u64> = None;
    for stored in rows.iter()? {
        let (key, value) = stored?;
        let (key, value) = (key.value(), value.value());
        if let Some(at) = damaged.take() {
            n += key.saturating_sub(at).max(1);
        }
        match batch::records(seed, key, value) {
            Ok(records) => n += records.len() as u64,
            Err(_) => damaged = Some(key),
        }
    }
    if let Some(at) = damaged {
        n += end.saturating_sub(at).max(1);
    }
    Ok(n)
}

/// Deletes the records of `rows` below `floor` (a batch row that holds `floor` keeps its
/// records from there, rekeyed `floor`; one whose header is damaged, which cannot be split,
/// stays whole, so that its offsets are still reported lost); returns their counted bytes.
pub(super) fn trim(
    rows: &mut redb::Table<'_, u64, &'static [u8]>,
    seed: u32,
    mut floor: u64,
) -> Result<u64, redb::Error> {
    let tail = match rows.range(..floor)?.next_back() {
        Some(stored) => {
            let (key, value) = stored?;
            let (key, value) = (key.value(), value.value());
            if batch::is_batch(value) && batch::records(seed, key, value).is_err() {
                floor = key;
                None
            } else {
                batch::tail(seed, key, value, floor)
            }
        }
        None => None,
    };
    let mut freed = 0u64;
    rows.retain_in(..floor, |key, value| {
        freed += batch::size_below(seed, key, value, floor);
        false
    })?;
    if let Some(tail) = tail {
        rows.insert(floor, tail.as_slice())?;
    }
    Ok(freed)
}

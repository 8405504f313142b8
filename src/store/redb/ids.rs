//! The message ids of dedupe windows (`embus.d.<topic or queue>`): written by the writer in
//! the commit that stores their records, read back when a topic or queue is declared.
//!
//! One table per topic or queue, keyed by the id's bytes; the value is the sealed
//! ([`meta`](super::meta)) `partition (u32) ++ key (u64) ++ timestamp (u64) ++ order (u64)`,
//! little-endian, where `order` is the window's sequence number of the id ([`IdRow::seq`]):
//! the order the window remembered its ids in, which neither the timestamps (ids of one clock
//! reading) nor the partitions and keys can give. Rows written up to format version 5 lack
//! it (20 bytes); they are read with no order ([`StoredId::seq`] `None`).
//!
//! The engine decides which ids leave the window and names them with the next id it stores
//! ([`IdRow::forget`]), so the table holds the window plus at most what left it since the last
//! send with an id, and pruning costs one delete per id, in the writer's commit.

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::meta;
use super::schema::existing;
use crate::record::Nanos;
use crate::store::{IdRow, StoredId};

/// The length of a row's value (unsealed) up to format version 5, without the order.
const LEGACY_LEN: usize = 20;
/// The length of a row's value (unsealed) from format version 6.
const LEN: usize = 28;

fn table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// Writes the ids of one commit, in the order their records were staged: each record's
/// `forget` rows are deleted before its own id is inserted (an id that left the window may be
/// sent again).
pub(super) fn write(
    txn: &WriteTransaction,
    rows: Vec<(&str, &IdRow, u64, Nanos)>,
) -> Result<(), redb::Error> {
    for (name, row, key, ts) in rows {
        let mut ids = txn.open_table(table(name))?;
        for id in &row.forget {
            ids.remove(id.as_bytes())?;
        }
        let mut value = [0u8; LEN];
        value[..4].copy_from_slice(&row.partition.to_le_bytes());
        value[4..12].copy_from_slice(&key.to_le_bytes());
        value[12..20].copy_from_slice(&ts.to_le_bytes());
        value[20..].copy_from_slice(&row.seq.to_le_bytes());
        let sealed = meta::seal(name, row.id.as_bytes(), &value);
        ids.insert(row.id.as_bytes(), sealed.as_slice())?;
    }
    Ok(())
}

/// Every id stored in table `name` (none if it does not exist).
pub(super) fn load(txn: &ReadTransaction, name: &str) -> Result<Vec<StoredId>, redb::Error> {
    let Some(ids) = existing(txn, table(name))? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for row in ids.iter()? {
        let (key, value) = row?;
        let id = String::from_utf8_lossy(key.value()).into_owned();
        let value = meta::open(name, key.value(), &id, value.value())?;
        let (bytes, seq): ([u8; LEGACY_LEN], Option<u64>) = match value.len() {
            LEGACY_LEN => (meta::fixed(name, &id, value)?, None),
            _ => {
                let bytes: [u8; LEN] = meta::fixed(name, &id, value)?;
                let (head, seq) = bytes.split_at(LEGACY_LEN);
                let head = head.try_into().unwrap_or([0; LEGACY_LEN]);
                // A window numbers its ids from 0, one per send: a number this high is damage
                // (its CRC can be recomputed) and would overflow the numbers after it.
                let seq = u64_at(seq);
                if seq >= 1 << 63 {
                    return Err(meta::damaged(name, &id, "sequence number out of range"));
                }
                (head, Some(seq))
            }
        };
        out.push(StoredId {
            id: id.into(),
            partition: u32::from_le_bytes(bytes[..4].try_into().unwrap_or_default()),
            key: u64_at(&bytes[4..12]),
            ts: u64_at(&bytes[12..]),
            seq,
        });
    }
    Ok(out)
}

/// The little-endian `u64` of `bytes` (8 of them).
fn u64_at(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().unwrap_or_default())
}

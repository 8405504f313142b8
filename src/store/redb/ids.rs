//! The message ids of dedupe windows (`embus.d.<topic or queue>`): written by the writer in
//! the commit that stores their records, read back when a topic or queue is declared.
//!
//! One table per topic or queue, keyed by the id's bytes; the value is the sealed
//! ([`meta`](super::meta)) `partition (u32) ++ key (u64) ++ timestamp (u64)`, little-endian.
//! The engine decides which ids leave the window and names them with the next id it stores
//! ([`IdRow::forget`]), so the table holds the window plus at most what left it since the last
//! send with an id, and pruning costs one delete per id, in the writer's commit.

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::meta;
use super::schema::existing;
use crate::record::Nanos;
use crate::store::{IdRow, StoredId};

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
        let mut value = [0u8; 20];
        value[..4].copy_from_slice(&row.partition.to_le_bytes());
        value[4..12].copy_from_slice(&key.to_le_bytes());
        value[12..].copy_from_slice(&ts.to_le_bytes());
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
        let bytes: [u8; 20] = meta::fixed(name, &id, value)?;
        let (partition, rest) = bytes.split_at(4);
        let (offset, ts) = rest.split_at(8);
        out.push(StoredId {
            id: id.into(),
            partition: u32::from_le_bytes(partition.try_into().unwrap_or_default()),
            key: u64::from_le_bytes(offset.try_into().unwrap_or_default()),
            ts: u64::from_le_bytes(ts.try_into().unwrap_or_default()),
        });
    }
    Ok(out)
}

//! The file's layout: format version, table names and definitions, and the bookkeeping of
//! each log's end and retained bytes.
//!
//! # Layout (format version 7)
//!
//! Every table embus creates is named with the reserved prefix `embus.` ([`PREFIX`]), so an
//! application database that embus shares
//! ([`BrokerBuilder::database`](crate::BrokerBuilder::database)) keeps its own tables under
//! any other name, and embus never opens, lists or changes them.
//!
//! - `embus.meta`: `"format" -> 7` (a plain `u64`, so every build can read which version it
//!   is); `"clean" -> ` 1 once the broker closed cleanly, 0 from its first commit on (opening
//!   a store left at 0 runs redb's integrity check first).
//! - `embus.settings`: `"codec" -> ` the payload codec's name (`bincode` or `json`).
//! - `embus.declarations`: name -> the engine's declaration bytes (kind, payload type name and
//!   options).
//! - `embus.t.<topic>.<partition>`: offset -> record ([`format`](crate::store::format)), or
//!   first offset -> a batch of the consecutive records from there
//!   ([`batch`](crate::store::batch)): the records one commit stores in a partition of a topic
//!   that is not compacted, when there are at least two. Its first row's key is always the
//!   partition's oldest retained offset: a trim that leaves part of a batch stores that part
//!   again, keyed by its first offset.
//! - `embus.q.<queue>`: id -> record; `embus.c.<queue>`: id -> deliveries so far (u32,
//!   delivered messages only).
//! - `embus.ends`: table (its full name, `embus.t.…` or `embus.q.…`) -> next key and retained
//!   bytes (two u64, what a trimmed-empty table cannot say).
//! - `embus.groups`: (topic, group, partition) -> first unacked offset (u64).
//! - `embus.acked`: (topic, group, partition, offset) -> nothing (a seal of the key): offsets a
//!   transaction acked ahead of the group's position, kept until the position passes them,
//!   so that a reopen delivers none of them again. It appears with the first such ack; a
//!   file without it is the same format.
//! - `embus.k.t.<topic>.<partition>` (compacted topics only): record key -> offset of its
//!   latest record (u64). The writer keeps it as it stores records, and deletes the row a new
//!   one supersedes in the same commit, so the table has one row per key and a reopen reads
//!   none of it. A file without these tables is the same format: they appear with compaction.
//!
//! - `embus.d.<topic or queue>` (with a dedupe window only): message id -> partition, key and
//!   timestamp of its record, and the id's sequence number in the window (the order it was
//!   remembered in; [`ids`](super::ids)), written in the record's commit. A file without
//!   these tables is the same format: they appear with dedupe.
//!
//! Every value of `embus.settings`, `embus.declarations`, `embus.ends`, `embus.groups`, `embus.acked` and
//! `embus.c.<queue>` is sealed with a checksum over table, key and value
//! ([`meta`](super::meta)); numbers are little-endian. Records carry their own checksum, bound
//! to their table from record version 2 on.
//!
//! A log's tables have a *logical name*: the name without the prefix (`t.orders.0`, `q.jobs`,
//! `c.jobs`, `k.t.orders.0`; [`logical`]), which is what they were called up to version 4.
//! Records' checksum seeds and the seals of delivery counts and key-index rows are bound to
//! it, so moving the tables under the prefix never touches their rows. The metadata tables
//! seal with their full names, as before, and `embus.ends` rows are keyed (and sealed) by the
//! full name of the table they describe.
//!
//! # Older versions
//!
//! Version 1 had no `embus.settings` (its payloads are bincode); version 2 stored the
//! metadata above unsealed, as typed redb values. Opening either seals the metadata rows in
//! place ([`upgrade`](super::upgrade)): one per table, group, declaration and queued message's
//! delivery count; the records are left as they are (their version 1 checksum is still read),
//! so the upgrade never reads the log. Version 3 is version 4 without records of record
//! version 3 (records with a timing section: delay, due time, time-to-live, priority; see
//! [`format`](crate::store::format)), which an older build must not meet: it refuses the file
//! by its format version instead. Version 4 is version 5 with the log tables named without the
//! prefix (`t.<topic>.<partition>`, `q.<queue>`, `c.<queue>`, `k.t.<topic>.<partition>`) and
//! `embus.ends` keyed by those names. Version 5 is version 6 with `embus.d.` rows without the
//! sequence number (20 bytes, not 28): version 6 still reads them (they restore before every
//! row that has one, ordered by time, partition and key, as version 5 did), but a version 5
//! build would take the longer rows for damaged ones, so the version number changed.
//!
//! Version 6 is version 7 without batch rows, which a version 6 build would take for damaged
//! records: version 7 reads its rows as they are.
//!
//! Opening a file of any older version upgrades it to version 7 in one commit, with the new
//! version number: the version 1 and 2 metadata is sealed as above, then, in a file of
//! version 4 or older, every log table is renamed under the prefix (redb moves the table,
//! never its rows) and each `embus.ends` row is checked and rekeyed to the new name. In a file
//! of version 4 or older every table is embus's: those versions refused any other file. A
//! version 5 or 6 file needs nothing but the new version number (its id rows stay as they
//! are).

use std::collections::HashMap;

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use super::meta;
use crate::store::format;

/// The format version this build writes.
pub(crate) const FORMAT_VERSION: u64 = 7;
/// The older format versions this build opens, upgrading them.
pub(crate) const UPGRADES_FROM: [u64; 6] = [1, 2, 3, 4, 5, 6];

/// The prefix of every table embus creates (format version 5 on).
pub(crate) const PREFIX: &str = "embus.";

pub(super) const META: TableDefinition<'static, &str, u64> = TableDefinition::new("embus.meta");
/// The key in [`META`] of the clean-shutdown marker.
pub(super) const CLEAN: &str = "clean";
/// The key in [`META`] of the store's instance number (`Store::instance`).
pub(super) const INSTANCE: &str = "instance";
pub(super) const DECLARATIONS: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("embus.declarations");
pub(super) const ENDS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("embus.ends");
/// Acks of transactions ahead of a group's position: (topic, group, partition, offset).
pub(super) const ACKED: TableDefinition<'static, (&str, &str, u32, u64), &[u8]> =
    TableDefinition::new("embus.acked");
pub(super) const GROUPS: TableDefinition<'static, (&str, &str, u32), &[u8]> =
    TableDefinition::new("embus.groups");
pub(super) const SETTINGS: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("embus.settings");

/// `definition`'s table as `txn` reads it, or `None` if it does not exist (yet).
pub(super) fn existing<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    definition: TableDefinition<'_, K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, redb::Error> {
    match txn.open_table(definition) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn records(table: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(table)
}

pub(super) fn deliveries(table: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(table)
}

/// A log table's logical name: `table` without [`PREFIX`] (its name up to format version 4).
/// Records' checksum seeds, delivery counts' and key-index rows' seals are bound to it.
pub(crate) fn logical(table: &str) -> &str {
    table.strip_prefix(PREFIX).unwrap_or(table)
}

/// Checks a row of a log's own table (delivery counts, key index), sealed under the table's
/// [`logical`] name; an error names the table as it is in the file.
fn open_log_row<'a>(
    table: &str,
    key: &[u8],
    row: impl std::fmt::Display,
    stored: &'a [u8],
) -> Result<&'a [u8], redb::Error> {
    let row = row.to_string();
    meta::open(logical(table), key, &row, stored)
        .map_err(|_| meta::damaged(table, &row, "checksum mismatch"))
}

/// A stored delivery count of counts table `table`, checked.
pub(super) fn open_count(table: &str, id: u64, stored: &[u8]) -> Result<u32, redb::Error> {
    let value = open_log_row(table, &id.to_le_bytes(), id, stored)?;
    Ok(u32::from_le_bytes(meta::fixed(table, id, value)?))
}

/// A delivery count for counts table `table`, sealed.
pub(super) fn seal_count(table: &str, id: u64, count: u32) -> Vec<u8> {
    meta::seal(logical(table), &id.to_le_bytes(), &count.to_le_bytes())
}

/// A stored end (next key, retained bytes) of `table`, checked.
pub(super) fn open_end(table: &str, stored: &[u8]) -> Result<(u64, u64), redb::Error> {
    let name = ENDS.name();
    let value = meta::open(name, table.as_bytes(), table, stored)?;
    let bytes: [u8; 16] = meta::fixed(name, table, value)?;
    let (next, retained) = bytes.split_at(8);
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
    Ok((word(next), word(retained)))
}

/// An end of `table`, sealed.
pub(super) fn seal_end(table: &str, (next, retained): (u64, u64)) -> Vec<u8> {
    let mut value = [0; 16];
    value[..8].copy_from_slice(&next.to_le_bytes());
    value[8..].copy_from_slice(&retained.to_le_bytes());
    meta::seal(ENDS.name(), table.as_bytes(), &value)
}

/// A stored group position, checked.
pub(super) fn open_position(
    (topic, group, partition): (&str, &str, u32),
    stored: &[u8],
) -> Result<u64, redb::Error> {
    let name = GROUPS.name();
    let row = format!("{topic}/{group}/{partition}");
    let value = meta::open(
        name,
        &meta::group_key(topic, group, partition),
        &row,
        stored,
    )?;
    Ok(u64::from_le_bytes(meta::fixed(name, row, value)?))
}

/// The key bytes of a kept ack's row.
fn acked_key(topic: &str, group: &str, partition: u32, offset: u64) -> Vec<u8> {
    let mut key = meta::group_key(topic, group, partition);
    key.extend_from_slice(&offset.to_le_bytes());
    key
}

/// A kept ack ahead of a group's position, sealed (its key is all it says).
pub(super) fn seal_acked(topic: &str, group: &str, partition: u32, offset: u64) -> Vec<u8> {
    meta::seal(
        ACKED.name(),
        &acked_key(topic, group, partition, offset),
        &[],
    )
}

/// Checks a kept ack's row.
pub(super) fn open_acked(
    (topic, group, partition, offset): (&str, &str, u32, u64),
    stored: &[u8],
) -> Result<(), redb::Error> {
    let key = acked_key(topic, group, partition, offset);
    let row = format!("{topic}/{group}/{partition}/{offset}");
    meta::open(ACKED.name(), &key, row, stored).map(|_| ())
}

/// A group position, sealed.
pub(super) fn seal_position(topic: &str, group: &str, partition: u32, offset: u64) -> Vec<u8> {
    let key = meta::group_key(topic, group, partition);
    meta::seal(GROUPS.name(), &key, &offset.to_le_bytes())
}

/// A `&str`-keyed value of `embus.declarations` or `embus.settings`, sealed.
pub(super) fn seal_named(
    table: TableDefinition<'_, &str, &[u8]>,
    key: &str,
    value: &[u8],
) -> Vec<u8> {
    meta::seal(table.name(), key.as_bytes(), value)
}

/// Every stored declaration, in name order, each checked: (name, the engine's bytes).
pub(super) fn declarations(
    txn: &redb::ReadTransaction,
) -> Result<Vec<(String, Vec<u8>)>, redb::Error> {
    let Some(table) = existing(txn, DECLARATIONS)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        let name = k.value();
        let bytes = open_named(DECLARATIONS, name, v.value())?.to_vec();
        out.push((name.to_owned(), bytes));
    }
    Ok(out)
}

/// A `&str`-keyed value of `embus.declarations` or `embus.settings`, checked.
pub(super) fn open_named<'a>(
    table: TableDefinition<'_, &str, &[u8]>,
    key: &str,
    stored: &'a [u8],
) -> Result<&'a [u8], redb::Error> {
    meta::open(table.name(), key.as_bytes(), key, stored)
}

/// The table of a topic partition.
pub(crate) fn partition_table(topic: &str, partition: u32) -> String {
    format!("{}{partition}", partition_prefix(topic))
}

/// What the tables of `topic`'s partitions start with (the partition number follows).
pub(crate) fn partition_prefix(topic: &str) -> String {
    format!("{PREFIX}t.{topic}.")
}

/// The table of a queue.
pub(crate) fn queue_table(queue: &str) -> String {
    format!("{PREFIX}q.{queue}")
}

/// The key index of a compacted partition's table `table`: key -> latest offset.
pub(crate) fn keys_table(table: &str) -> String {
    format!("{PREFIX}k.{}", logical(table))
}

pub(super) fn key_index(table: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(table)
}

/// A latest offset of `key` in key index `table`, sealed.
pub(super) fn seal_latest(table: &str, key: &[u8], offset: u64) -> Vec<u8> {
    meta::seal(logical(table), key, &offset.to_le_bytes())
}

/// A stored latest offset, checked.
pub(super) fn open_latest(table: &str, key: &[u8], stored: &[u8]) -> Result<u64, redb::Error> {
    let value = open_log_row(table, key, "a key", stored)?;
    Ok(u64::from_le_bytes(meta::fixed(table, "a key", value)?))
}

/// The message id table of a topic's or queue's dedupe window.
pub(crate) fn ids_table(name: &str) -> String {
    format!("embus.d.{name}")
}

/// The table of a queue's delivery counts.
pub(crate) fn counts_table(queue: &str) -> String {
    format!("{PREFIX}c.{queue}")
}

/// The stored end of `table`, loaded on first use.
pub(super) fn end_of<'a>(
    txn: &WriteTransaction,
    ends: &'a mut HashMap<String, (u64, u64)>,
    table: &str,
) -> Result<&'a mut (u64, u64), redb::Error> {
    if !ends.contains_key(table) {
        let stored = match txn.open_table(ENDS)?.get(table)? {
            Some(v) => open_end(table, v.value())?,
            None => (0, 0),
        };
        ends.insert(table.to_owned(), stored);
    }
    Ok(ends.entry(table.to_owned()).or_default())
}

/// Deletes the records of `table` below `floor`.
pub(super) fn trim(
    txn: &WriteTransaction,
    table: &str,
    floor: u64,
    ends: &mut HashMap<String, (u64, u64)>,
) -> Result<(), redb::Error> {
    let mut rows = txn.open_table(records(table))?;
    if rows.first()?.is_none_or(|(k, _)| k.value() >= floor) {
        return Ok(());
    }
    let freed = super::rows::trim(&mut rows, format::seed(logical(table)), floor)?;
    drop(rows);
    let end = end_of(txn, ends, table)?;
    end.1 = end.1.saturating_sub(freed);
    Ok(())
}

pub(super) fn save_ends(
    txn: &WriteTransaction,
    tables: &[&str],
    ends: &HashMap<String, (u64, u64)>,
) -> Result<(), redb::Error> {
    let mut table = txn.open_table(ENDS)?;
    for name in tables {
        if let Some(end) = ends.get(*name) {
            table.insert(*name, seal_end(name, *end).as_slice())?;
        }
    }
    Ok(())
}

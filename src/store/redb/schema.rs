//! The file's layout: format version, table names and definitions, and the bookkeeping of
//! each log's end and retained bytes.
//!
//! # Layout (format version 2)
//!
//! - `embus.meta`: `"format" -> 2`.
//! - `embus.settings`: `"codec" -> ` the payload codec's name (`bincode` or `json`).
//! - `embus.declarations`: name -> the engine's declaration bytes (kind, payload type name and
//!   options).
//! - `t.<topic>.<partition>`: offset -> record ([`format`](crate::store::format)).
//! - `q.<queue>`: id -> record; `c.<queue>`: id -> deliveries so far (delivered messages only).
//! - `embus.ends`: table -> next key and retained bytes (what a trimmed-empty table cannot say).
//! - `embus.groups`: (topic, group, partition) -> first unacked offset.
//!
//! Version 1 had no `embus.settings` (its payloads are bincode); opening one upgrades it in
//! place to version 2.

use std::collections::HashMap;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::store::format;

/// The format version this build writes.
pub(crate) const FORMAT_VERSION: u64 = 2;
/// The older format version this build opens, upgrading it.
pub(crate) const UPGRADES_FROM: u64 = 1;

pub(super) const META: TableDefinition<'static, &str, u64> = TableDefinition::new("embus.meta");
pub(super) const DECLARATIONS: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("embus.declarations");
pub(super) const ENDS: TableDefinition<'static, &str, (u64, u64)> =
    TableDefinition::new("embus.ends");
pub(super) const GROUPS: TableDefinition<'static, (&str, &str, u32), u64> =
    TableDefinition::new("embus.groups");

pub(super) fn records(table: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(table)
}

pub(super) fn deliveries(table: &str) -> TableDefinition<'_, u64, u32> {
    TableDefinition::new(table)
}

pub(super) const SETTINGS: TableDefinition<'static, &str, &str> =
    TableDefinition::new("embus.settings");

/// The table of a topic partition.
pub(crate) fn partition_table(topic: &str, partition: u32) -> String {
    format!("t.{topic}.{partition}")
}

/// The table of a queue.
pub(crate) fn queue_table(queue: &str) -> String {
    format!("q.{queue}")
}

/// The table of a queue's delivery counts.
pub(crate) fn counts_table(queue: &str) -> String {
    format!("c.{queue}")
}

/// The stored end of `table`, loaded on first use.
pub(super) fn end_of<'a>(
    txn: &WriteTransaction,
    ends: &'a mut HashMap<String, (u64, u64)>,
    table: &str,
) -> Result<&'a mut (u64, u64), redb::Error> {
    if !ends.contains_key(table) {
        let stored = txn
            .open_table(ENDS)?
            .get(table)?
            .map_or((0, 0), |v| v.value());
        ends.insert(table.to_owned(), stored);
    }
    Ok(ends.entry(table.to_owned()).or_default())
}

/// Deletes the rows of `table` below `floor`.
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
    let mut freed = 0u64;
    rows.retain_in(..floor, |key, value| {
        freed += u64::from(format::open(key, value).map_or(0, |r| r.size));
        false
    })?;
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
            table.insert(*name, *end)?;
        }
    }
    Ok(())
}

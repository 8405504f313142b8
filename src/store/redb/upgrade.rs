//! Upgrading a file of an older format version to version 7 in place, in the commit that
//! records the new version: a version 1 or 2 file's metadata rows are sealed with their
//! checksums ([`metadata`]); then every file of version 4 or older has its log tables moved
//! under the reserved prefix ([`prefix`]). The records, whose checksums are bound to their
//! tables' logical names (and, from version 1, still read), are left as they are: the upgrade
//! never reads the log. A version 5 file changes only its version number: its dedupe id rows,
//! which lack the order of version 6, are read as they are ([`ids`](super::ids)). So does a
//! version 6 file: its rows are lone records, which version 7 reads as it did.

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use super::schema::{
    DECLARATIONS, ENDS, GROUPS, PREFIX, deliveries, open_end, seal_count, seal_end, seal_named,
    seal_position,
};

/// How the log tables' names began up to format version 4, before they took [`PREFIX`]:
/// partitions, queues, delivery counts and key indexes.
const OLD_LOG_TABLES: [&str; 4] = ["t.", "q.", "c.", "k."];

/// Version 2's unsealed metadata tables (version 1 had the same, without settings).
const OLD_ENDS: TableDefinition<'static, &str, (u64, u64)> = TableDefinition::new("embus.ends");
const OLD_GROUPS: TableDefinition<'static, (&str, &str, u32), u64> =
    TableDefinition::new("embus.groups");
pub(super) const OLD_SETTINGS: TableDefinition<'static, &str, &str> =
    TableDefinition::new("embus.settings");

fn old_deliveries(table: &str) -> TableDefinition<'_, u64, u32> {
    TableDefinition::new(table)
}

/// Seals every metadata row of a version 1 or 2 file (the settings are rewritten by the
/// caller, with the format version).
pub(super) fn metadata(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let ends: Vec<(String, (u64, u64))> = rows(txn, OLD_ENDS, |k, v| (k.to_owned(), v))?;
    let groups: Vec<((String, String, u32), u64)> = rows(txn, OLD_GROUPS, |(t, g, p), v| {
        ((t.to_owned(), g.to_owned(), p), v)
    })?;
    txn.delete_table(OLD_ENDS)?;
    txn.delete_table(OLD_GROUPS)?;
    txn.delete_table(OLD_SETTINGS)?;
    {
        let mut table = txn.open_table(ENDS)?;
        for (name, end) in &ends {
            table.insert(name.as_str(), seal_end(name, *end).as_slice())?;
        }
        let mut table = txn.open_table(GROUPS)?;
        for ((topic, group, partition), offset) in &groups {
            let sealed = seal_position(topic, group, *partition, *offset);
            table.insert(
                (topic.as_str(), group.as_str(), *partition),
                sealed.as_slice(),
            )?;
        }
        // Same types: the values are sealed in place.
        let mut table = txn.open_table(DECLARATIONS)?;
        let declared: Vec<(String, Vec<u8>)> = table
            .iter()?
            .map(|row| row.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())))
            .collect::<Result<_, _>>()?;
        for (name, bytes) in &declared {
            let sealed = seal_named(DECLARATIONS, name, bytes);
            table.insert(name.as_str(), sealed.as_slice())?;
        }
    }
    let counts: Vec<String> = txn
        .list_tables()?
        .map(|t| t.name().to_owned())
        .filter(|name| name.starts_with("c."))
        .collect();
    for name in counts {
        let old = rows(txn, old_deliveries(&name), |id, count| (id, count))?;
        txn.delete_table(old_deliveries(&name))?;
        let mut table = txn.open_table(deliveries(&name))?;
        for (id, count) in old {
            table.insert(id, seal_count(&name, id, count).as_slice())?;
        }
    }
    Ok(())
}

/// Moves a version 1 to 4 file's log tables under [`PREFIX`] (their rows stay as they are:
/// redb renames a table without reading it) and rekeys their `embus.ends` rows, each checked
/// under its old name and sealed under its new one. A table or row already under the prefix
/// is left alone.
pub(super) fn prefix(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let old: Vec<String> = txn
        .list_tables()?
        .map(|t| t.name().to_owned())
        .filter(|name| OLD_LOG_TABLES.iter().any(|p| name.starts_with(p)))
        .collect();
    for name in &old {
        let renamed = format!("{PREFIX}{name}");
        // Only the names matter to redb here.
        txn.rename_table(
            TableDefinition::<u64, &[u8]>::new(name),
            TableDefinition::<u64, &[u8]>::new(&renamed),
        )?;
    }
    let mut ends = txn.open_table(ENDS)?;
    let stored: Vec<(String, Vec<u8>)> = ends
        .iter()?
        .map(|row| row.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())))
        .collect::<Result<_, _>>()?;
    for (name, value) in stored {
        if name.starts_with(PREFIX) {
            continue;
        }
        let end = open_end(&name, &value)?;
        let renamed = format!("{PREFIX}{name}");
        ends.remove(name.as_str())?;
        ends.insert(renamed.as_str(), seal_end(&renamed, end).as_slice())?;
    }
    Ok(())
}

/// Every row of `definition` (none if it does not exist), mapped to owned values.
fn rows<K, V, R>(
    txn: &WriteTransaction,
    definition: TableDefinition<'_, K, V>,
    f: impl Fn(K::SelfType<'_>, V::SelfType<'_>) -> R,
) -> Result<Vec<R>, redb::Error>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    let table = match txn.open_table(definition) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        out.push(f(k.value(), v.value()));
    }
    Ok(out)
}

//! Deleting a topic or queue from the file: its declaration, tables, ends and group positions,
//! in the commit that carries the request (after everything else in it).

use std::collections::HashMap;
use std::sync::Arc;

use redb::{TableDefinition, WriteTransaction};

use super::schema::{ACKED, DECLARATIONS, ENDS, GROUPS};
use crate::store::Sink;

/// A delete the writer applies last in its commit.
pub(super) struct Delete {
    pub(super) name: String,
    pub(super) tables: Vec<String>,
    pub(super) sinks: Vec<Arc<dyn Sink>>,
    pub(super) topic: bool,
}

/// Drops `delete`'s tables and every row about them.
pub(super) fn apply(
    txn: &WriteTransaction,
    delete: &Delete,
    ends: &mut HashMap<String, (u64, u64)>,
) -> Result<(), redb::Error> {
    let mut stored_ends = txn.open_table(ENDS)?;
    for table in &delete.tables {
        // Only the name matters to redb here.
        let definition: TableDefinition<'_, u64, &[u8]> = TableDefinition::new(table);
        if let Err(e) = txn.delete_table(definition) {
            match e {
                redb::TableError::TableTypeMismatch { .. } => {
                    let keyed: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new(table);
                    txn.delete_table(keyed)?;
                }
                e => return Err(e.into()),
            }
        }
        stored_ends.remove(table.as_str())?;
        ends.remove(table);
    }
    drop(stored_ends);
    if delete.topic {
        let mut groups = txn.open_table(GROUPS)?;
        let topic = delete.name.as_str();
        groups.retain_in((topic, "", 0).., |(t, _, _), _| t != topic)?;
        txn.open_table(ACKED)?
            .retain_in((topic, "", 0, 0).., |(t, _, _, _), _| t != topic)?;
        // Its groups' declarations, `topic/group`: the names from "topic/" up to "topic0"
        // ('0' follows '/').
        let (from, to) = (format!("{topic}/"), format!("{topic}0"));
        txn.open_table(DECLARATIONS)?
            .retain_in(from.as_str()..to.as_str(), |_, _| false)?;
    }
    txn.open_table(DECLARATIONS)?.remove(delete.name.as_str())?;
    Ok(())
}

//! Compaction of a compacted topic's stored rows, by the writer: each key's latest
//! offset is kept in the partition's key table (`embus.k.t.<topic>.<partition>`), and the row a new
//! record supersedes is deleted in the commit that stores the new one.
//!
//! So the table holds one row per key (gaps between them), the work is one index update and
//! one delete per record, done in the commit (by the thread committing: the writer thread, or
//! a lone sender waiting for that commit anyway; never under an engine lock, but for a
//! deleting thread's hold on the registry while its delete commits), and a reopen needs
//! nothing of it: the index is on disk.

use redb::{Table, WriteTransaction};

use super::schema::{key_index, open_latest, seal_latest};
use crate::store::{LogId, format};

/// One commit's compaction of one partition's table.
pub(super) struct Compaction<'txn> {
    keys: Table<'txn, &'static [u8], &'static [u8]>,
    name: String,
    seed: u32,
    /// Counted bytes of the rows deleted.
    pub(super) freed: u64,
}

impl<'txn> Compaction<'txn> {
    /// The compaction of `log`'s table, if it is a compacted partition's.
    pub(super) fn open(
        txn: &'txn WriteTransaction,
        log: &LogId,
    ) -> Result<Option<Self>, redb::Error> {
        let name = log.keys_table();
        if name.is_empty() {
            return Ok(None);
        }
        let keys = txn.open_table(key_index(name))?;
        Ok(Some(Self {
            keys,
            name: name.to_owned(),
            seed: log.seed(),
            freed: 0,
        }))
    }

    /// Record `offset` (sealed `value`) was just stored in `rows`: it is its key's latest; the
    /// row it supersedes is deleted.
    pub(super) fn stored(
        &mut self,
        rows: &mut Table<'_, u64, &'static [u8]>,
        offset: u64,
        value: &[u8],
    ) -> Result<(), redb::Error> {
        // A record that does not open has no key to compact by: it stays.
        let Ok(row) = format::open(self.seed, offset, value) else {
            return Ok(());
        };
        let Some(key) = row.key else {
            return Ok(());
        };
        let sealed = seal_latest(&self.name, key, offset);
        let previous = match self.keys.insert(key, sealed.as_slice())? {
            Some(stored) => Some(open_latest(&self.name, key, stored.value())?),
            None => None,
        };
        if let Some(previous) = previous.filter(|p| *p != offset)
            && let Some(old) = rows.remove(previous)?
        {
            let size = format::open(self.seed, previous, old.value()).map_or(0, |r| r.size);
            self.freed += u64::from(size);
        }
        Ok(())
    }
}

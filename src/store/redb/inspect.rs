//! Reading a store file without changing it, for [`crate::inspect`] and the `embus` tool: a
//! read-only redb open with the format checks of [`open`](super::open), and plain reads of the
//! declarations, the logs' ends, group positions and records, every sealed value checked.
//!
//! redb refuses a read-only open while a process holds the file for writing (the broker opens it
//! in redb's default `ExclusiveWriter` mode), and refuses a file that needs recovery (a
//! read-only open cannot repair): both are clear errors, never a wait or a repair.

use std::path::{Path, PathBuf};

use redb::{ReadOnlyDatabase, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableHandle};

use super::open::{storage, upgrade_first};
use super::quiet;
use super::schema::{
    CLEAN, ENDS, FORMAT_VERSION, GROUPS, META, SETTINGS, UPGRADES_FROM, deliveries, existing,
    logical, open_count, open_end, open_named, open_position, partition_prefix, records,
};
use crate::error::Error;
use crate::record::{Headers, Nanos};
use crate::store::format;

/// What a read-only open says when redb would have to recover the file first.
const NEEDS_RECOVERY: &str = "the store was not closed cleanly and needs recovery, which a \
     read-only open cannot do: open it once with the application (Broker::open repairs it), \
     then try again";

/// What a read-only open says while a process holds the file.
pub(crate) const HELD: &str = "the file is open in another process (a running broker holds \
     it exclusively); the embus tool can read it once that process has closed it";

/// A store file opened read-only, its format version and codec checked.
pub(crate) struct Reader {
    path: PathBuf,
    /// `None` once dropped (redb's close runs under [`quiet::catch`]).
    db: Option<ReadOnlyDatabase>,
    codec: String,
    clean: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.path)
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let db = self.db.take();
        let _ = quiet::catch(move || drop(db));
    }
}

/// A log table's extent: its first and last stored keys (offsets: a batch row's last is its
/// last record's), how many records (or other rows) it holds, the bytes its rows take (keys and
/// records, as redb stores them), and its recorded end (next key) from `embus.ends`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) first: Option<u64>,
    pub(crate) last: Option<u64>,
    pub(crate) records: u64,
    pub(crate) next: u64,
    pub(crate) bytes: u64,
}

/// One stored record, checked, with its delivery count (queues).
#[derive(Debug, Clone)]
pub(crate) struct StoredRecord {
    pub(crate) key: u64,
    pub(crate) ts: Nanos,
    pub(crate) record_key: Option<Vec<u8>>,
    pub(crate) headers: Headers,
    pub(crate) payload: Vec<u8>,
    pub(crate) deliveries: u32,
}

/// Opens `path` read-only; `Ok(None)` while another process holds it.
///
/// # Errors
/// [`Error::Storage`] for a missing file, a directory, an empty or a foreign file, or one that
/// needs recovery; [`Error::Corrupt`] for a damaged file; [`Error::Incompatible`] for another
/// format version (an older one is upgraded by opening it with a broker).
pub(crate) fn open(path: &Path) -> Result<Option<Reader>, Error> {
    let refuse = |message: String| Error::Storage {
        path: path.to_owned(),
        message,
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse("no such file".to_owned()));
        }
        Err(e) => return Err(refuse(e.to_string())),
        Ok(m) if m.is_dir() => return Err(refuse("a directory, not a store file".to_owned())),
        Ok(m) if m.len() == 0 => return Err(refuse("an empty file, not an embus store".into())),
        Ok(_) => {}
    }
    let opened = quiet::catch(|| {
        let db = match redb::Builder::new().open_read_only(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Ok(None),
            Err(redb::DatabaseError::RepairAborted) => return Err(refuse(NEEDS_RECOVERY.into())),
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() == std::io::ErrorKind::InvalidData =>
            {
                return Err(Error::Corrupt {
                    path: path.to_owned(),
                    detail: format!("not a redb file: {e}"),
                });
            }
            Err(e) => return Err(storage(path, e)),
        };
        let mut reader = Reader {
            path: path.to_owned(),
            db: Some(db),
            codec: String::new(),
            clean: false,
        };
        reader.check()?;
        Ok(Some(reader))
    });
    opened.unwrap_or_else(|panic| {
        Err(Error::Corrupt {
            path: path.to_owned(),
            detail: format!("redb failed while opening the file ({panic})"),
        })
    })
}

impl Reader {
    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The payload codec's name (`bincode` or `json`).
    pub(crate) fn codec(&self) -> &str {
        &self.codec
    }

    /// Whether the broker that wrote the file last closed it cleanly.
    pub(crate) fn clean(&self) -> bool {
        self.clean
    }

    /// Checks the format version and reads codec and clean marker.
    fn check(&mut self) -> Result<(), Error> {
        let path = self.path.clone();
        let (version, clean, codec) = self.read(|txn| {
            let Some(meta) = existing(txn, META)? else {
                return Ok((None, false, None));
            };
            let version = meta.get("format")?.map(|v| v.value());
            let clean = meta.get(CLEAN)?.map(|v| v.value());
            let codec = match existing(txn, SETTINGS)? {
                Some(t) => match t.get("codec")? {
                    Some(v) => Some(open_named(SETTINGS, "codec", v.value())?.to_vec()),
                    None => None,
                },
                None => None,
            };
            Ok((version, clean != Some(0), codec))
        })?;
        match version {
            // Version 5 differs only in dedupe id rows, which nothing here reads, and version 6
            // only in having no batch rows.
            Some(FORMAT_VERSION | 5 | 6) => {}
            Some(found) if UPGRADES_FROM.contains(&found) => {
                return Err(upgrade_first(&path, found));
            }
            Some(found) => {
                return Err(Error::Incompatible {
                    path,
                    found,
                    expected: FORMAT_VERSION,
                });
            }
            None => {
                return Err(Error::Storage {
                    path,
                    message: "not an embus store: a redb file without embus's tables".into(),
                });
            }
        }
        let Some(codec) = codec else {
            return Err(Error::Corrupt {
                path,
                detail: "the store does not say which codec its payloads use".into(),
            });
        };
        self.codec = String::from_utf8_lossy(&codec).into_owned();
        self.clean = clean;
        Ok(())
    }

    /// Runs `f` in a read transaction, mapping redb's failures and panics to errors naming
    /// the file.
    fn read<R>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<R, redb::Error>,
    ) -> Result<R, Error> {
        let Some(db) = self.db.as_ref() else {
            return Err(Error::Closed);
        };
        match quiet::catch(|| f(&db.begin_read()?)) {
            Ok(result) => result.map_err(|e| storage(&self.path, e)),
            Err(panic) => Err(Error::Corrupt {
                path: self.path.clone(),
                detail: format!("redb failed while reading a damaged page ({panic})"),
            }),
        }
    }

    /// Every declaration (topics, queues, groups as `topic/group`), in name order, checked.
    pub(crate) fn declarations(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.read(super::schema::declarations)
    }

    /// The partitions with a table of topic `topic`, ascending.
    pub(crate) fn partition_tables(&self, topic: &str) -> Result<Vec<u32>, Error> {
        let prefix = partition_prefix(topic);
        self.read(|txn| {
            let mut out: Vec<u32> = txn
                .list_tables()?
                .filter_map(|t| t.name().strip_prefix(&prefix)?.parse().ok())
                .collect();
            out.sort_unstable();
            Ok(out)
        })
    }

    /// The extent of log table `table` (a missing table is empty).
    pub(crate) fn extent(&self, table: &str) -> Result<Extent, Error> {
        self.read(|txn| {
            let (next, _counted) = match existing(txn, ENDS)? {
                Some(t) => match t.get(table)? {
                    Some(v) => open_end(table, v.value())?,
                    None => (0, 0),
                },
                None => (0, 0),
            };
            let Some(rows) = existing(txn, records(table))? else {
                return Ok(Extent {
                    next,
                    ..Extent::default()
                });
            };
            let first = rows.first()?.map(|(k, _)| k.value());
            // Only a partition's table has batch rows (a queue's are lone records, and a
            // counts table's are not records).
            let (last, records) = if logical(table).starts_with("t.") {
                let seed = format::seed(logical(table));
                let last = super::rows::last(&rows, seed, next)?.map(|(offset, _)| offset);
                (last, super::rows::count(&rows, seed, next)?)
            } else {
                (rows.last()?.map(|(k, _)| k.value()), rows.len()?)
            };
            Ok(Extent {
                first,
                last,
                records,
                next,
                bytes: rows.stats()?.stored_bytes(),
            })
        })
    }

    /// Every group position: (topic, group, partition, first unacked offset), checked.
    pub(crate) fn positions(&self) -> Result<Vec<(String, String, u32, u64)>, Error> {
        self.read(|txn| {
            let Some(table) = existing(txn, GROUPS)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                let key = k.value();
                let offset = open_position(key, v.value())?;
                out.push((key.0.to_owned(), key.1.to_owned(), key.2, offset));
            }
            Ok(out)
        })
    }

    /// Up to `limit` records of log table `table` from key `from` on, checked, with their
    /// delivery counts from `counts` (a queue's counts table; `None` for a partition).
    pub(crate) fn records(
        &self,
        table: &str,
        counts: Option<&str>,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, Error> {
        self.read(|txn| read_records(txn, table, counts, from, limit))
    }
}

fn read_records(
    txn: &redb::ReadTransaction,
    table: &str,
    counts: Option<&str>,
    from: u64,
    limit: usize,
) -> Result<Vec<StoredRecord>, redb::Error> {
    let Some(rows) = existing(txn, records(table))? else {
        return Ok(Vec::new());
    };
    let counts = match counts {
        Some(name) => existing(txn, deliveries(name))?.map(|t| (name, t)),
        None => None,
    };
    let seed = format::seed(logical(table));
    let mut out: Vec<StoredRecord> = Vec::new();
    super::rows::visit(&rows, seed, (from, u64::MAX), |key, value| {
        if out.len() >= limit {
            return Ok(false);
        }
        if key < from || out.last().is_some_and(|r| r.key >= key) {
            let what = "key out of order";
            return Err(super::meta::damaged(table, key, what));
        }
        let record = format::open(seed, key, value)
            .map_err(|bad| super::meta::damaged(table, key, &bad.to_string()))?;
        let deliveries = match &counts {
            Some((name, t)) => match t.get(key)? {
                Some(stored) => open_count(name, key, stored.value())?,
                None => 0,
            },
            None => 0,
        };
        out.push(StoredRecord {
            key,
            ts: record.ts,
            record_key: record.key.map(<[u8]>::to_vec),
            headers: record.headers,
            payload: record.payload.to_vec(),
            deliveries,
        });
        Ok(true)
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use redb::{Database, TableDefinition};

    use super::*;
    use crate::store::redb::schema::{
        DECLARATIONS, seal_count, seal_end, seal_named, seal_position,
    };
    use crate::store::redb::scratch_dir;

    /// A store of this build's format version written by hand: queue `jobs` with two records (the first delivered
    /// twice), a group position, and what `damage` does to the first record's bytes.
    fn write(path: &Path, mut damage: impl FnMut(&mut Vec<u8>)) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("format", FORMAT_VERSION).unwrap();
            meta.insert(CLEAN, 1).unwrap();
            let codec = seal_named(SETTINGS, "codec", b"json");
            txn.open_table(SETTINGS)
                .unwrap()
                .insert("codec", codec.as_slice())
                .unwrap();
            let declaration = br#"{"version":2,"kind":"queue","payload":"Job","options":{}}"#;
            let sealed = seal_named(DECLARATIONS, "jobs", declaration);
            txn.open_table(DECLARATIONS)
                .unwrap()
                .insert("jobs", sealed.as_slice())
                .unwrap();
            let table = "embus.q.jobs";
            let mut rows = txn.open_table(records(table)).unwrap();
            for (id, payload) in [(3u64, &b"\"a\""[..]), (4, b"\"b\"")] {
                let mut headers = Headers::new();
                headers.push("h", [0xff]);
                let mut value = format::body(Some(b"k"), &headers);
                value.extend_from_slice(payload);
                format::seal(&mut value, format::seed(logical(table)), id, 1_000 + id, 3);
                if id == 3 {
                    damage(&mut value);
                }
                rows.insert(id, value.as_slice()).unwrap();
            }
            let counts = "embus.c.jobs";
            let sealed = seal_count(counts, 3, 2);
            txn.open_table(deliveries(counts))
                .unwrap()
                .insert(3, sealed.as_slice())
                .unwrap();
            let end = seal_end(table, (5, 6));
            txn.open_table(ENDS)
                .unwrap()
                .insert(table, end.as_slice())
                .unwrap();
            let position = seal_position("t", "g", 1, 9);
            txn.open_table(GROUPS)
                .unwrap()
                .insert(("t", "g", 1), position.as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn reads_extents_records_counts_and_positions() {
        let path = scratch_dir("inspect-reads").join("s.embus");
        write(&path, |_| {});
        let reader = open(&path).unwrap().unwrap();
        assert_eq!((reader.codec(), reader.clean()), ("json", true));
        assert_eq!(reader.declarations().unwrap()[0].0, "jobs");
        let extent = reader.extent("embus.q.jobs").unwrap();
        // The bytes redb stores for the rows: an 8-byte key and the record each.
        let stored: u64 = reader
            .read(|txn| {
                let rows = txn.open_table(records("embus.q.jobs"))?;
                let mut sum = 0;
                for row in rows.iter()? {
                    sum += 8 + row?.1.value().len() as u64;
                }
                Ok(sum)
            })
            .unwrap();
        assert_eq!(
            extent,
            Extent {
                first: Some(3),
                last: Some(4),
                records: 2,
                next: 5,
                bytes: stored
            }
        );
        assert_eq!(reader.extent("embus.c.jobs").unwrap().records, 1);
        assert_eq!(reader.extent("embus.q.none").unwrap(), Extent::default());
        let rows = reader
            .records("embus.q.jobs", Some("embus.c.jobs"), 0, 10)
            .unwrap();
        let read: Vec<_> = rows.iter().map(|r| (r.key, r.ts, r.deliveries)).collect();
        assert_eq!(read, [(3, 1_003, 2), (4, 1_004, 0)]);
        assert_eq!(rows[0].payload, b"\"a\"");
        assert_eq!(rows[0].record_key.as_deref(), Some(&b"k"[..]));
        assert_eq!(rows[0].headers.get("h"), Some(&[0xff][..]));
        let later = reader.records("embus.q.jobs", None, 4, 1).unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].key, 4);
        assert_eq!(
            reader.positions().unwrap(),
            [("t".to_owned(), "g".to_owned(), 1, 9)]
        );
    }

    #[test]
    fn a_damaged_record_is_corrupt_naming_table_and_row() {
        let path = scratch_dir("inspect-damaged").join("s.embus");
        write(&path, |value| {
            let last = value.len() - 1;
            value[last] ^= 1;
        });
        let reader = open(&path).unwrap().unwrap();
        let err = reader.records("embus.q.jobs", None, 0, 10).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("`embus.q.jobs`, row `3`"), "{err}");
    }

    #[test]
    fn a_file_held_for_writing_is_none() {
        let path = scratch_dir("inspect-held").join("s.embus");
        write(&path, |_| {});
        let held = Database::open(&path).unwrap();
        assert!(open(&path).unwrap().is_none());
        drop(held);
        assert!(open(&path).unwrap().is_some());
    }

    #[test]
    fn an_older_format_version_asks_for_an_upgrade() {
        for version in [2, 4] {
            let path = scratch_dir(&format!("inspect-older-{version}")).join("s.embus");
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let meta: TableDefinition<'_, &str, u64> = TableDefinition::new("embus.meta");
            txn.open_table(meta)
                .unwrap()
                .insert("format", version)
                .unwrap();
            txn.commit().unwrap();
            drop(db);
            let err = open(&path).unwrap_err();
            assert!(
                err.to_string().contains("Broker::open upgrades it"),
                "{err}"
            );
        }
    }
}

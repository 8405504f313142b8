//! Opening the file: creating a new store safely, checking (or upgrading) its format version
//! and codec, and turning redb's failures into errors that name the path. An application's
//! own database ([`shared`]) gets the same check and upgrade, and embus's tables on first use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, ReadableDatabase, TableHandle};

use super::schema::existing;
use super::schema::{
    CLEAN, FORMAT_VERSION, INSTANCE, META, PREFIX, SETTINGS, UPGRADES_FROM, open_named, seal_named,
};
use super::upgrade;
use super::{OpenWith, quiet};
use crate::error::Error;

/// A storage error naming the file.
pub(super) fn storage(path: &Path, e: impl Into<redb::Error>) -> Error {
    let e: redb::Error = e.into();
    match e {
        redb::Error::DatabaseAlreadyOpen => Error::Storage {
            path: path.to_owned(),
            message: "the file is open in another broker or process (an `embus` tool reading \
                      it holds it only while it reads)"
                .to_owned(),
        },
        redb::Error::Corrupted(detail) => Error::Corrupt {
            path: path.to_owned(),
            detail,
        },
        e => Error::Storage {
            path: path.to_owned(),
            message: e.to_string(),
        },
    }
}

/// A store of an older format version that only a broker's open upgrades (the tools that
/// read or edit a file in place do not).
pub(super) fn upgrade_first(path: &Path, found: u64) -> Error {
    Error::Storage {
        path: path.to_owned(),
        message: format!(
            "embus format version {found} is older than this build's {FORMAT_VERSION}: open it \
             once with the application (Broker::open upgrades it), then try again"
        ),
    }
}

/// Opens (or creates) the database at `path` (or on `backend`), checking its format version
/// and codec.
pub(super) fn database(
    path: &Path,
    backend: Option<OpenWith>,
    cache_bytes: Option<usize>,
    codec: &str,
    always_check: bool,
) -> Result<(Database, u64), Error> {
    let mut builder = Database::builder();
    if let Some(bytes) = cache_bytes {
        builder.set_cache_size(bytes);
    }
    // `check_integrity(true)`: redb checks every page as it opens, before it reads its own
    // saved state (a plain open trusts that, and may panic on it).
    builder.set_check_integrity_on_open(always_check);
    let unclean = (!always_check).then(|| Unclean::watch(&mut builder));
    let finish = |opened: Result<Database, Error>| {
        let db = match &unclean {
            Some(unclean) => unclean.check(path, opened)?,
            None => opened.map_err(|e| match e {
                Error::Corrupt { path, detail } => Error::Corrupt {
                    path,
                    detail: format!("the store fails redb's integrity check: {detail}"),
                },
                e => e,
            })?,
        };
        let instance = check_format(path, &db, codec)?;
        Ok((db, instance))
    };
    // Checking the format reads the file, and dropping a database that failed the check
    // runs redb's close: either may meet a damaged page, where redb may panic.
    let opened = quiet::catch(|| match backend {
        Some(open) => finish(guarded(path, || open(&builder))),
        None if path.exists() => finish(guarded(path, || super::file::create(&builder, path))),
        None => create(path, &builder, codec),
    });
    opened.unwrap_or_else(|panic| {
        Err(Error::Corrupt {
            path: path.to_owned(),
            detail: format!("redb failed while checking the file ({panic})"),
        })
    })
}

/// Checks (or upgrades, or creates) the store in an application's database `db`, named `path`
/// in errors. redb's integrity check after an unclean shutdown is not run: it needs the
/// database to itself, so opening it is the application's to do.
/// Returns the store's instance number, as [`check_format`].
pub(super) fn shared(path: &Path, db: &Database, codec: &str) -> Result<u64, Error> {
    let checked = quiet::catch(|| check_format(path, db, codec));
    checked.unwrap_or_else(|panic| {
        Err(Error::Corrupt {
            path: path.to_owned(),
            detail: format!("redb failed while checking the database ({panic})"),
        })
    })
}

/// Opens a database, turning redb's failures (and its debug-build panics on some damaged
/// files) into errors naming the path.
pub(super) fn guarded(
    path: &Path,
    open: impl FnOnce() -> Result<Database, redb::DatabaseError>,
) -> Result<Database, Error> {
    match quiet::catch(open) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            Err(Error::Corrupt {
                path: path.to_owned(),
                detail: format!("not a redb file: {e}"),
            })
        }
        Ok(Err(e)) => Err(storage(path, e)),
        Err(panic) => Err(Error::Corrupt {
            path: path.to_owned(),
            detail: format!("redb failed while opening the file ({panic})"),
        }),
    }
}

/// The check of a store that was not closed cleanly, for an open through a builder it
/// [`watch`](Self::watch)es.
pub(super) struct Unclean {
    /// Whether redb repaired the file while opening it.
    repaired: Arc<AtomicBool>,
}

impl Unclean {
    /// Watches `builder`'s opens for redb's repair. A store whose last commit saved no
    /// allocator state (one-phase commits, `Writer::two_phase`) is repaired as redb opens it
    /// after a crash: redb verifies every page's checksum, falling back to the previous
    /// commit if the last one does not verify, and rebuilds its allocator.
    pub(super) fn watch(builder: &mut redb::Builder) -> Self {
        let repaired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&repaired);
        builder.set_repair_callback(move |_| flag.store(true, Ordering::Relaxed));
        Self { repaired }
    }

    /// Checks the database `opened` if it was not closed cleanly: redb's repair did, if it
    /// ran (its failure is this check's), and [`verify_if_unclean`] does otherwise, rather
    /// than read the whole file a second time.
    pub(super) fn check(
        &self,
        path: &Path,
        opened: Result<Database, Error>,
    ) -> Result<Database, Error> {
        let repaired = || self.repaired.load(Ordering::Relaxed);
        let mut db = opened.map_err(|e| match e {
            Error::Corrupt { path, detail } if repaired() => unclean_corrupt(path, &detail),
            e => e,
        })?;
        if !repaired() {
            verify_if_unclean(path, &mut db)?;
        }
        Ok(db)
    }
}

/// A store that was not closed cleanly and failed the check at open.
fn unclean_corrupt(path: PathBuf, detail: &str) -> Error {
    Error::Corrupt {
        path,
        detail: format!(
            "the store was not closed cleanly and fails redb's integrity check: {detail}"
        ),
    }
}

/// Runs redb's integrity check (every page's checksum, before anything reads a record) if
/// the store was not closed cleanly: its writer committed since it last closed (`"clean"` is
/// 0 in `embus.meta`), or it is of a format version whose upgrade rewrites tables (4 and
/// older; checked once, as it is upgraded). A cleanly closed store is not scanned: opening
/// stays as fast as the log is long (`BrokerBuilder::check_integrity` has redb check every
/// open instead).
fn verify_if_unclean(path: &Path, db: &mut Database) -> Result<(), Error> {
    let unclean = {
        let txn = db.begin_read().map_err(|e| storage(path, e))?;
        match txn.open_table(META) {
            Ok(t) => {
                let get = |key| -> Result<Option<u64>, Error> {
                    let value = t.get(key).map_err(|e| storage(path, e))?;
                    Ok(value.map(|v| v.value()))
                };
                match get("format")? {
                    // Versions 5 and 6 have the clean flag too, and their upgrade rewrites
                    // nothing.
                    Some(FORMAT_VERSION | 5 | 6) => get(CLEAN)? == Some(0),
                    Some(older) => UPGRADES_FROM.contains(&older),
                    None => false,
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => false,
            Err(e) => return Err(storage(path, e)),
        }
    };
    if !unclean {
        return Ok(());
    }
    // `Ok(false)`: redb repaired its own bookkeeping (what a crash leaves); the data verified.
    match db.check_integrity() {
        Ok(_) => Ok(()),
        Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail))) => {
            Err(unclean_corrupt(path.to_owned(), &detail))
        }
        Err(e) => Err(storage(path, e)),
    }
}

/// Creates a new store under a temporary name and renames it into place once its format
/// version is committed, so a failure or crash while creating never leaves a half-written
/// file at `path` that would not open again.
fn create(path: &Path, builder: &redb::Builder, codec: &str) -> Result<(Database, u64), Error> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".creating");
    let temporary = path.with_file_name(name);
    let _ = std::fs::remove_file(&temporary); // left by a crash while creating
    let created = guarded(path, || super::file::create(builder, &temporary)).and_then(|db| {
        let instance = check_format(path, &db, codec)?;
        std::fs::rename(&temporary, path).map_err(|e| Error::Storage {
            path: path.to_owned(),
            message: format!("cannot move the new store into place: {e}"),
        })?;
        sync_parent(path);
        Ok((db, instance))
    });
    if created.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    created
}

/// Fsyncs the directory holding a new file, so the file's name survives a power loss.
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all(); // best effort: not every platform can sync a directory
    }
}

/// Checks (or, in a new file, writes) the format version and the codec; upgrades a file of
/// version 1 (bincode payloads, no settings), 2 (unsealed metadata), 3 or 4 (log tables
/// without the prefix), 5 (dedupe id rows without their order, which stay as they are) or 6
/// (no batch rows) to version 7 ([`upgrade`]). A file without `embus.meta` is new to
/// embus: empty, or an application's database with none of embus's tables, which gets them
/// (its own tables are left alone); one with tables under the prefix but no format version is
/// not a store embus wrote.
///
/// Returns the store's instance number ([`Store::instance`](crate::store::Store::instance)):
/// drawn when the store is created (or, for a store from before it had one, at its first open
/// since) and kept under [`INSTANCE`] in `embus.meta`.
fn check_format(path: &Path, db: &Database, codec: &str) -> Result<u64, Error> {
    let (version, stored_codec, instance) = {
        let txn = db.begin_read().map_err(|e| storage(path, e))?;
        let version = match txn.open_table(META) {
            Ok(t) => t
                .get("format")
                .map_err(|e| storage(path, e))?
                .map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => {
                let mut tables = txn.list_tables().map_err(|e| storage(path, e))?;
                if let Some(table) = tables.find(|t| t.name().starts_with(PREFIX)) {
                    return Err(Error::Corrupt {
                        path: path.to_owned(),
                        detail: format!(
                            "table `{}` is named like embus's, but the file has no format \
                             version: not a store embus wrote",
                            table.name()
                        ),
                    });
                }
                None
            }
            Err(e) => return Err(storage(path, e)),
        };
        let stored_codec = match version {
            Some(3..=6 | FORMAT_VERSION) => stored_codec(&txn).map_err(|e| storage(path, e))?,
            Some(2) => old_codec(&txn).map_err(|e| storage(path, e))?,
            _ => None,
        };
        let instance = match version {
            Some(_) => stored_instance(&txn).map_err(|e| storage(path, e))?,
            None => None,
        };
        (version, stored_codec, instance)
    };
    let stored_codec = match (version, stored_codec) {
        (Some(1), _) => "bincode".to_owned(), // version 1 had only bincode
        (Some(v), Some(stored)) if v == FORMAT_VERSION || UPGRADES_FROM.contains(&v) => stored,
        (Some(v), None) if v == FORMAT_VERSION || UPGRADES_FROM.contains(&v) => {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                detail: "the store does not say which codec its payloads use".into(),
            });
        }
        (Some(found), _) => {
            return Err(Error::Incompatible {
                path: path.to_owned(),
                found,
                expected: FORMAT_VERSION,
            });
        }
        (None, _) => codec.to_owned(), // a new store
    };
    if stored_codec != codec {
        return Err(Error::CodecMismatch {
            path: path.to_owned(),
            stored: stored_codec,
            requested: codec.to_owned(),
        });
    }
    if let (Some(FORMAT_VERSION), Some(instance)) = (version, instance) {
        return Ok(instance);
    }
    let instance = instance.unwrap_or_else(crate::trace_context::random_u64);
    // A new store, an upgrade, or a store without an instance number yet: one commit writes
    // the version, the codec and the instance number, and seals an older file's metadata.
    let write = || -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        if matches!(version, Some(1 | 2)) {
            upgrade::metadata(&txn)?;
        }
        // Version 5 is prefixed already, and may share its database with an application's
        // tables, whatever their names.
        if matches!(version, Some(1..=4)) {
            upgrade::prefix(&txn)?;
        }
        {
            let mut meta = txn.open_table(META)?;
            meta.insert("format", FORMAT_VERSION)?;
            meta.insert(INSTANCE, instance)?;
            let mut settings = txn.open_table(SETTINGS)?;
            let sealed = seal_named(SETTINGS, "codec", codec.as_bytes());
            settings.insert("codec", sealed.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    };
    write().map_err(|e| storage(path, e))?;
    Ok(instance)
}

/// The instance number a store names in `embus.meta`, if it has one yet.
fn stored_instance(txn: &redb::ReadTransaction) -> Result<Option<u64>, redb::Error> {
    let Some(meta) = existing(txn, META)? else {
        return Ok(None);
    };
    Ok(meta.get(INSTANCE)?.map(|v| v.value()))
}

/// The codec a file of version 3 or later names, checked.
fn stored_codec(txn: &redb::ReadTransaction) -> Result<Option<String>, redb::Error> {
    let Some(table) = existing(txn, SETTINGS)? else {
        return Ok(None);
    };
    let Some(stored) = table.get("codec")? else {
        return Ok(None);
    };
    let value = open_named(SETTINGS, "codec", stored.value())?;
    Ok(Some(String::from_utf8_lossy(value).into_owned()))
}

/// The codec a version 2 file names (unsealed).
fn old_codec(txn: &redb::ReadTransaction) -> Result<Option<String>, redb::Error> {
    match txn.open_table(upgrade::OLD_SETTINGS) {
        Ok(t) => Ok(t.get("codec")?.map(|v| v.value().to_owned())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

//! Redriving a closed store file's queue: the one write of the `embus` tool
//! ([`crate::inspect`]), with the semantics of [`Queue::redrive`](crate::Queue::redrive).
//!
//! Up to `limit` messages that a reopened broker would find ready (not delayed, not expired)
//! move, highest priority first then in id order as the queue would hand them out, to the end
//! of another declared queue of the same payload type, within its capacity. Each keeps its
//! payload, key, headers and timestamp, and loses its delivery count (its counts row is
//! deleted) and its timing: it is written as a record of version 2, sealed for the target's
//! table, at the target's next id. The target's end in `embus.ends` moves past the new ids;
//! counted bytes stay as they are, as the broker's own moves leave them (a queue's are not read
//! back). No message id row is written, as the broker's moves write none. Everything is one
//! redb commit, which marks the store closed cleanly, as a broker's close leaves it.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::path::Path;

use redb::{Database, ReadableTable, ReadableTableMetadata};

use super::open::{Unclean, guarded, storage, upgrade_first};
use super::quiet;
use super::schema::{
    CLEAN, DECLARATIONS, FORMAT_VERSION, META, UPGRADES_FROM, counts_table, deliveries, end_of,
    logical, open_named, queue_table, records, save_ends,
};
use crate::error::Error;
use crate::options::QueueOptions;
use crate::record::Nanos;
use crate::store::format;

/// A declaration as version 2 stores it, read for what a redrive checks.
#[derive(serde::Deserialize)]
struct Declaration {
    version: u32,
    kind: String,
    payload: String,
    #[serde(default)]
    options: serde_json::Value,
}

/// Moves up to `limit` messages of queue `from` to queue `to` in the store at `path`, at time
/// `now`; returns how many moved.
///
/// # Errors
/// [`Error::InvalidOption`] if `from` is `to`; [`Error::NotFound`] for an undeclared name;
/// [`Error::Mismatch`] if either is not a queue or their payload types differ;
/// [`Error::Storage`] / [`Error::Corrupt`] / [`Error::Incompatible`] for the file.
pub(crate) fn redrive(
    path: &Path,
    from: &str,
    to: &str,
    limit: usize,
    now: Nanos,
) -> Result<usize, Error> {
    if from == to {
        return Err(Error::InvalidOption {
            name: from.to_owned(),
            option: "redrive",
            reason: "a queue cannot be redriven into itself",
        });
    }
    if !path.is_file() {
        return Err(Error::Storage {
            path: path.to_owned(),
            message: "no such store file".to_owned(),
        });
    }
    let moved = quiet::catch(|| {
        let mut builder = Database::builder();
        let unclean = Unclean::watch(&mut builder);
        let db = unclean.check(path, guarded(path, || builder.open(path)))?;
        let moved = apply(path, &db, from, to, limit, now);
        let closed = quiet::catch(move || drop(db));
        moved.and_then(|n| {
            closed.map(|()| n).map_err(|panic| Error::Corrupt {
                path: path.to_owned(),
                detail: format!("redb failed while closing the file ({panic})"),
            })
        })
    });
    moved.unwrap_or_else(|panic| {
        Err(Error::Corrupt {
            path: path.to_owned(),
            detail: format!("redb failed while redriving ({panic})"),
        })
    })
}

fn apply(
    path: &Path,
    db: &Database,
    from: &str,
    to: &str,
    limit: usize,
    now: Nanos,
) -> Result<usize, Error> {
    let txn = db.begin_write().map_err(|e| storage(path, e))?;
    let version = {
        let meta = txn.open_table(META).map_err(|e| storage(path, e))?;
        let version = meta.get("format").map_err(|e| storage(path, e))?;
        version.map(|v| v.value())
    };
    if let Some(found) = version.filter(|v| UPGRADES_FROM.contains(v)) {
        return Err(upgrade_first(path, found));
    }
    if version != Some(FORMAT_VERSION) {
        return Err(Error::Incompatible {
            path: path.to_owned(),
            found: version.unwrap_or(0),
            expected: FORMAT_VERSION,
        });
    }
    let source = declaration(path, &txn, from)?;
    let target = declaration(path, &txn, to)?;
    if source.payload != target.payload {
        return Err(Error::Mismatch {
            name: to.to_owned(),
            existing: format!("a queue of {}", target.payload),
            requested: format!("a queue of {} (the payload of `{from}`)", source.payload),
        });
    }
    let options = |d: &Declaration, name: &str| {
        serde_json::from_value::<QueueOptions>(d.options.clone()).map_err(|e| Error::Corrupt {
            path: path.to_owned(),
            detail: format!("the stored declaration of `{name}` cannot be read: {e}"),
        })
    };
    let (source_options, target_options) = (options(&source, from)?, options(&target, to)?);
    let write = || -> Result<usize, redb::Error> {
        let (from_table, to_table) = (queue_table(from), queue_table(to));
        let stored = txn.open_table(records(&to_table))?.len()?;
        let room = usize::try_from(stored)
            .map_or(0, |n| target_options.capacity_limit().saturating_sub(n))
            .min(limit);
        let chosen = ready(&txn, &from_table, &source_options, now, room)?;
        if chosen.is_empty() {
            return Ok(0);
        }
        let mut ends = HashMap::new();
        let last = txn
            .open_table(records(&to_table))?
            .last()?
            .map(|(k, _)| k.value());
        let end = end_of(&txn, &mut ends, &to_table)?;
        end.0 = end.0.max(last.map_or(0, |k| k + 1));
        let mut next = end.0;
        let (from_seed, to_seed) = (
            format::seed(logical(&from_table)),
            format::seed(logical(&to_table)),
        );
        {
            let mut source = txn.open_table(records(&from_table))?;
            let mut target = txn.open_table(records(&to_table))?;
            let mut counts = txn.open_table(deliveries(&counts_table(from)))?;
            for id in &chosen {
                let Some(value) = source.remove(*id)? else {
                    continue;
                };
                let row = format::open(from_seed, *id, value.value())
                    .map_err(|bad| super::meta::damaged(&from_table, id, &bad.to_string()))?;
                let moved = format::with_headers(&row, to_seed, next, &row.headers);
                drop(row);
                drop(value);
                target.insert(next, moved.as_slice())?;
                counts.remove(*id)?;
                next += 1;
            }
        }
        end_of(&txn, &mut ends, &to_table)?.0 = next;
        save_ends(&txn, &[to_table.as_str()], &ends)?;
        txn.open_table(META)?.insert(CLEAN, 1)?;
        Ok(chosen.len())
    };
    let moved = write().map_err(|e| storage(path, e))?;
    if moved == 0 {
        txn.abort().map_err(|e| storage(path, e))?;
        return Ok(0);
    }
    let mut txn = txn;
    txn.set_quick_repair(true);
    txn.commit().map_err(|e| storage(path, e))?;
    Ok(moved)
}

/// The stored declaration of queue `name`.
fn declaration(
    path: &Path,
    txn: &redb::WriteTransaction,
    name: &str,
) -> Result<Declaration, Error> {
    let table = txn.open_table(DECLARATIONS).map_err(|e| storage(path, e))?;
    let stored = table.get(name).map_err(|e| storage(path, e))?;
    let Some(stored) = stored else {
        return Err(Error::NotFound {
            name: name.to_owned(),
        });
    };
    let bytes = open_named(DECLARATIONS, name, stored.value()).map_err(|e| storage(path, e))?;
    if bytes.first() != Some(&b'{') {
        return Err(Error::Storage {
            path: path.to_owned(),
            message: format!(
                "`{name}` is declared in the format 1 encoding, whose options this tool does not \
                 read: redrive it with Queue::redrive in the application"
            ),
        });
    }
    let declaration: Declaration = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        path: path.to_owned(),
        detail: format!("the stored declaration of `{name}` cannot be read: {e}"),
    })?;
    if declaration.version > 2 {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            detail: format!(
                "the stored declaration of `{name}` is of version {}, this build reads up to 2",
                declaration.version
            ),
        });
    }
    if declaration.kind != "queue" {
        return Err(Error::Mismatch {
            name: name.to_owned(),
            existing: format!("a {} of {}", declaration.kind, declaration.payload),
            requested: "a queue".to_owned(),
        });
    }
    Ok(declaration)
}

/// The ids of up to `room` messages of `table` that a reopened broker would hand out first at
/// `now`: not delayed past `now`, not expired, highest priority first, then in id order.
fn ready(
    txn: &redb::WriteTransaction,
    table: &str,
    options: &QueueOptions,
    now: Nanos,
    room: usize,
) -> Result<Vec<u64>, redb::Error> {
    if room == 0 {
        return Ok(Vec::new());
    }
    let seed = format::seed(logical(table));
    let top = options.priority_levels().saturating_sub(1);
    let queue_ttl = options.message_ttl_duration();
    let rows = txn.open_table(records(table))?;
    let mut out: Vec<(Reverse<u8>, u64)> = Vec::new();
    for row in rows.iter()? {
        let (k, v) = row?;
        let id = k.value();
        let record = format::open(seed, id, v.value())
            .map_err(|bad| super::meta::damaged(table, id, &bad.to_string()))?;
        let timing = record.timing;
        let delayed = timing.due_at(record.ts).is_some_and(|due| due > now);
        let ttl = [timing.ttl, queue_ttl].into_iter().flatten().min();
        let expires = ttl.map(|ttl| {
            let ttl = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
            record.ts.saturating_add(ttl)
        });
        if delayed || expires.is_some_and(|at| at <= now) {
            continue;
        }
        out.push((Reverse(timing.priority.min(top)), id));
    }
    out.sort_unstable();
    Ok(out.into_iter().take(room).map(|(_, id)| id).collect())
}

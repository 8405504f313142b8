//! What one commit writes: each request of a batch turned into rows, in order, with the
//! appended records grouped per table ([`rows`](super::rows) makes a partition's batch rows).

use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadableTable, WriteTransaction};

use super::request::Request;
use super::schema::{
    ACKED, DECLARATIONS, GROUPS, deliveries, end_of, records, seal_acked, seal_named, seal_position,
};
use crate::record::Nanos;
use crate::store::format;
use crate::store::{IdRow, Sink};

/// Per sink touched by a commit: publish up to this key.
pub(super) struct Touched {
    pub(super) sink: Arc<dyn Sink>,
    pub(super) upto: u64,
    /// Counted bytes appended.
    pub(super) bytes: u64,
}

/// The batch with each transaction's requests in its place (numbered as the transaction).
fn flatten(batch: Vec<(u64, Request)>) -> Vec<(u64, Request)> {
    if !batch.iter().any(|(_, r)| matches!(r, Request::Many(_))) {
        return batch;
    }
    let mut out = Vec::with_capacity(batch.len());
    for (seq, request) in batch {
        match request {
            Request::Many(requests) => out.extend(requests.into_iter().map(|r| (seq, r))),
            request => out.push((seq, request)),
        }
    }
    out
}

/// Writes a batch's requests. Appends are grouped per table (one table open each); the rest
/// apply in order (an ack or a move only ever follows the commit of what it refers to).
/// Deletes are handed back, to apply last; requests of deleted sinks are dropped. The appended
/// values end in `spent`.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_batch(
    txn: &WriteTransaction,
    batch: Vec<(u64, Request)>,
    deleted: &[Arc<dyn Sink>],
    touched: &mut Vec<Touched>,
    ends: &mut HashMap<String, (u64, u64)>,
    dirty: &mut Vec<String>,
    deletes: &mut Vec<super::delete::Delete>,
    spent: &mut Vec<Vec<u8>>,
) -> Result<(), redb::Error> {
    let mut appends: Vec<(usize, Vec<u8>, u64)> = Vec::with_capacity(spent.capacity());
    // Group positions, the last of each (topic, group, partition) since the last request
    // that writes or removes positions otherwise: only the last one's row would remain.
    let mut positions: Vec<(String, String, u32, u64)> = Vec::new();
    // Message ids of the appended records (dedupe): `(sink, row, key, ts)`.
    let mut ids: Vec<(Arc<dyn Sink>, IdRow, u64, Nanos)> = Vec::new();
    for (_, request) in flatten(batch) {
        match request {
            Request::Append { sink, .. } | Request::Ack { queue: sink, .. }
                if is_deleted(deleted, &sink) => {}
            Request::DeadLetter { queue, to, .. }
                if is_deleted(deleted, &queue) || is_deleted(deleted, &to) => {}
            Request::Delete {
                name,
                tables,
                sinks,
                topic,
            } => deletes.push(super::delete::Delete {
                name,
                tables,
                sinks,
                topic,
            }),
            Request::Append { sink, records } => {
                let at = match touched.iter().position(|t| Arc::ptr_eq(&t.sink, &sink)) {
                    Some(at) => at,
                    None => {
                        touched.push(Touched {
                            sink,
                            upto: 0,
                            bytes: 0,
                        });
                        touched.len() - 1
                    }
                };
                let t = &mut touched[at];
                for mut record in records {
                    let seed = t.sink.log().seed();
                    format::seal(&mut record.value, seed, record.key, record.ts, record.size);
                    t.upto = t.upto.max(record.key + 1);
                    t.bytes += u64::from(record.size);
                    if let Some(id) = record.id {
                        ids.push((Arc::clone(&t.sink), id, record.key, record.ts));
                    }
                    appends.push((at, record.value, record.key));
                }
            }
            Request::Ack { queue, id } => {
                txn.open_table(records(queue.log().table()))?.remove(id)?;
                txn.open_table(deliveries(queue.log().counts_table()))?
                    .remove(id)?;
            }
            Request::DeadLetter {
                queue,
                id,
                to,
                to_id,
                record,
                headers,
            } => {
                let moved = {
                    let mut from = txn.open_table(records(queue.log().table()))?;
                    let removed = from.remove(id)?;
                    match record {
                        Some(mut record) => {
                            let seed = to.log().seed();
                            format::seal(&mut record.value, seed, to_id, record.ts, record.size);
                            Some(record.value)
                        }
                        None => removed.and_then(|v| {
                            let row = format::open(queue.log().seed(), id, v.value()).ok()?;
                            let seed = to.log().seed();
                            Some(format::with_headers(&row, seed, to_id, &headers))
                        }),
                    }
                };
                txn.open_table(deliveries(queue.log().counts_table()))?
                    .remove(id)?;
                if let Some(value) = moved {
                    let to = to.log().table();
                    txn.open_table(records(to))?
                        .insert(to_id, value.as_slice())?;
                    let end = end_of(txn, ends, to)?;
                    end.0 = end.0.max(to_id + 1);
                    if !dirty.iter().any(|d| d == to) {
                        dirty.push(to.to_owned());
                    }
                }
            }
            Request::GroupDeadLetter {
                to,
                mut record,
                position,
            } => {
                if position.is_some() {
                    write_positions(txn, &mut positions)?;
                }
                let seed = to.log().seed();
                format::seal(&mut record.value, seed, record.key, record.ts, record.size);
                let to = to.log().table();
                txn.open_table(records(to))?
                    .insert(record.key, record.value.as_slice())?;
                let end = end_of(txn, ends, to)?;
                end.0 = end.0.max(record.key + 1);
                if !dirty.iter().any(|d| d == to) {
                    dirty.push(to.to_owned());
                }
                if let Some((topic, group, partition, offset)) = position {
                    let sealed = seal_position(&topic, &group, partition, offset);
                    txn.open_table(GROUPS)?.insert(
                        (topic.as_str(), group.as_str(), partition),
                        sealed.as_slice(),
                    )?;
                }
            }
            Request::Acked {
                topic,
                group,
                partition,
                offset,
            } => {
                let sealed = seal_acked(&topic, &group, partition, offset);
                let key = (topic.as_str(), group.as_str(), partition, offset);
                txn.open_table(ACKED)?.insert(key, sealed.as_slice())?;
            }
            Request::AckedBelow {
                topic,
                group,
                partition,
                below,
            } => {
                let (t, g) = (topic.as_str(), group.as_str());
                txn.open_table(ACKED)?
                    .retain_in((t, g, partition, 0)..(t, g, partition, below), |_, _| false)?;
            }
            Request::ForgetGroup(topic, group) => {
                write_positions(txn, &mut positions)?;
                let (t, g) = (topic.as_str(), group.as_str());
                txn.open_table(ACKED)?
                    .retain_in((t, g, 0, 0)..=(t, g, u32::MAX, u64::MAX), |_, _| false)?;
                let mut table = txn.open_table(GROUPS)?;
                let range = (topic.as_str(), group.as_str(), 0)
                    ..=(topic.as_str(), group.as_str(), u32::MAX);
                let keys: Vec<u32> = table
                    .range(range)?
                    .map(|row| row.map(|(k, _)| k.value().2))
                    .collect::<Result<_, _>>()?;
                for partition in keys {
                    table.remove((topic.as_str(), group.as_str(), partition))?;
                }
            }
            Request::Undeclare(name) => {
                txn.open_table(DECLARATIONS)?.remove(name.as_str())?;
            }
            Request::Position {
                topic,
                group,
                partition,
                offset,
            } => {
                let same = |p: &&mut (String, String, u32, u64)| {
                    p.0 == topic && p.1 == group && p.2 == partition
                };
                match positions.iter_mut().find(same) {
                    Some(p) => p.3 = offset,
                    None => positions.push((topic, group, partition, offset)),
                }
            }
            Request::Declare(name, bytes) => {
                let sealed = seal_named(DECLARATIONS, &name, &bytes);
                txn.open_table(DECLARATIONS)?
                    .insert(name.as_str(), sealed.as_slice())?;
            }
            Request::Sync
            | Request::Close
            | Request::Pending
            | Request::Many(_)
            | Request::Lend(_)
            | Request::Return { .. } => {}
        }
    }
    write_positions(txn, &mut positions)?;
    appends.sort_by_key(|(at, _, _)| *at); // stable: keys stay ascending per table
    let mut appends = appends.into_iter().peekable();
    for (at, t) in touched.iter().enumerate() {
        let log = t.sink.log();
        let mut table = txn.open_table(records(log.table()))?;
        let mut compaction = super::compact::Compaction::open(txn, log)?;
        // A plain partition's records go in batch rows; a compacted one's, replaced one by
        // one, and a queue's, acked one by one, in rows of their own.
        let mut run = super::rows::Run::default();
        let batches = compaction.is_none() && log.counts_table().is_empty();
        while let Some((_, value, key)) = appends.next_if(|(of, _, _)| *of == at) {
            if batches {
                if !run.takes(key, &value) {
                    run.store(&mut table, log.seed(), spent)?;
                }
                run.push(key, value);
                continue;
            }
            table.insert(key, value.as_slice())?;
            if let Some(compaction) = compaction.as_mut() {
                compaction.stored(&mut table, key, &value)?;
            }
            spent.push(value);
        }
        run.store(&mut table, log.seed(), spent)?;
        drop(table);
        let freed = compaction.map_or(0, |c| c.freed);
        let end = end_of(txn, ends, log.table())?;
        end.0 = end.0.max(t.upto);
        end.1 = (end.1 + t.bytes).saturating_sub(freed);
    }
    let ids = ids
        .iter()
        .map(|(sink, row, key, ts)| (sink.log().ids_table(), row, *key, *ts));
    super::ids::write(txn, ids.collect())
}

/// Writes the group positions kept so far (see `write_batch`), and forgets them.
fn write_positions(
    txn: &WriteTransaction,
    positions: &mut Vec<(String, String, u32, u64)>,
) -> Result<(), redb::Error> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(GROUPS)?;
    for (topic, group, partition, offset) in positions.drain(..) {
        let sealed = seal_position(&topic, &group, partition, offset);
        table.insert(
            (topic.as_str(), group.as_str(), partition),
            sealed.as_slice(),
        )?;
    }
    Ok(())
}

/// Whether `sink` belongs to a deleted topic or queue.
pub(super) fn is_deleted(deleted: &[Arc<dyn Sink>], sink: &Arc<dyn Sink>) -> bool {
    !deleted.is_empty() && deleted.iter().any(|d| Arc::ptr_eq(d, sink))
}

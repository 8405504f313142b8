//! What [`StoreFile::summary`](super::StoreFile::summary) reports: topics with their
//! partitions and groups, queues with their depths, read from the file's bookkeeping (no
//! record is read).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Error;
use crate::store::{Reader, counts_table, partition_table, queue_table};

/// A store file's topics and queues.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// The file.
    pub path: std::path::PathBuf,
    /// The payload codec (`bincode` or `json`).
    pub codec: String,
    /// Whether the broker that wrote it last closed it cleanly (a crash leaves `false`).
    pub closed_cleanly: bool,
    /// The topics, by name.
    pub topics: Vec<TopicSummary>,
    /// The queues, by name.
    pub queues: Vec<QueueSummary>,
}

/// One topic.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TopicSummary {
    /// Its name.
    pub name: String,
    /// The payload type's stored name.
    pub payload: String,
    /// Its options as stored (JSON); `null` for a declaration of the format 1 encoding, whose
    /// options this tool does not read.
    pub options: serde_json::Value,
    /// Its partitions, ascending.
    pub partitions: Vec<PartitionSummary>,
    /// Its consumer groups with a stored position, by name.
    pub groups: Vec<GroupSummary>,
}

/// One partition of a topic.
#[derive(Debug, Clone, Copy, Serialize)]
#[non_exhaustive]
pub struct PartitionSummary {
    /// The partition number.
    pub partition: u32,
    /// The oldest retained offset (`None`: nothing retained).
    pub first_offset: Option<u64>,
    /// The offset the next message gets.
    pub next_offset: u64,
    /// How many messages are retained.
    pub messages: u64,
    /// The bytes its retained messages take in the file: their keys and records (headers and
    /// payloads included) as redb stores them, without the pages' own overhead.
    pub bytes: u64,
}

/// One consumer group of a topic.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct GroupSummary {
    /// The group's name.
    pub name: String,
    /// Its options as stored (JSON), `null` if none were stored.
    pub options: serde_json::Value,
    /// Its position per partition.
    pub partitions: Vec<GroupPartition>,
    /// The sum of the partitions' lags.
    pub lag: u64,
}

/// A group's position in one partition.
#[derive(Debug, Clone, Copy, Serialize)]
#[non_exhaustive]
pub struct GroupPartition {
    /// The partition number.
    pub partition: u32,
    /// The first offset not yet acknowledged.
    pub position: u64,
    /// How many retained messages lie at or after the position (as
    /// [`Broker::stats`](crate::Broker::stats) counts it).
    pub lag: u64,
}

/// One queue.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct QueueSummary {
    /// Its name.
    pub name: String,
    /// The payload type's stored name.
    pub payload: String,
    /// Its options as stored (JSON); `null` for a format 1 declaration.
    pub options: serde_json::Value,
    /// How many messages it holds.
    pub depth: u64,
    /// How many of them were delivered at least once and not acked: in flight when the broker
    /// closed (they are ready again when it reopens) or waiting for a redelivery.
    pub delivered: u64,
    /// The id the next message gets.
    pub next_id: u64,
    /// Its dead-letter queue, if it has one.
    pub dead_letter_queue: Option<String>,
    /// How many messages its dead-letter queue holds.
    pub dead_letters: Option<u64>,
}

/// A declaration read for display: kind, payload name, options.
struct Declared {
    queue: bool,
    payload: String,
    options: serde_json::Value,
}

/// Reads a stored declaration: JSON (version 2), or the format 1 encoding's kind and type
/// name (bincode: a `bool`, then a length-prefixed string).
fn declared(path: &std::path::Path, name: &str, bytes: &[u8]) -> Result<Declared, Error> {
    let corrupt = |detail: String| Error::Corrupt {
        path: path.to_owned(),
        detail: format!("the stored declaration of `{name}` cannot be read: {detail}"),
    };
    if bytes.first() == Some(&b'{') {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        let text = |field: &str| value.get(field).and_then(|v| v.as_str()).map(str::to_owned);
        let kind = text("kind").ok_or_else(|| corrupt("no kind".to_owned()))?;
        return Ok(Declared {
            queue: kind == "queue",
            payload: text("payload").unwrap_or_default(),
            options: value.get("options").cloned().unwrap_or_default(),
        });
    }
    let legacy = <crate::codec::Bincode as crate::codec::Codec>::decode::<(bool, String)>(bytes)
        .map_err(|e| corrupt(e.to_string()))?;
    Ok(Declared {
        queue: legacy.0,
        payload: legacy.1,
        options: serde_json::Value::Null,
    })
}

/// Builds the summary of the file `reader` reads.
pub(super) fn summarize(reader: &Reader) -> Result<Summary, Error> {
    let path = reader.path();
    let mut topics = Vec::new();
    let mut queues = Vec::new();
    let mut groups: BTreeMap<(String, String), serde_json::Value> = BTreeMap::new();
    for (name, bytes) in reader.declarations()? {
        if let Some((topic, group)) = name.split_once('/') {
            let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let options = value.get("options").cloned().unwrap_or_default();
            groups.insert((topic.to_owned(), group.to_owned()), options);
            continue;
        }
        let d = declared(path, &name, &bytes)?;
        if d.queue {
            let extent = reader.extent(&queue_table(&name))?;
            let delivered = reader.extent(&counts_table(&name))?.records;
            let dead_letter_queue = d
                .options
                .get("dead_letter")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            queues.push(QueueSummary {
                name,
                payload: d.payload,
                options: d.options,
                depth: extent.records,
                delivered,
                next_id: extent.next.max(extent.last.map_or(0, |l| l + 1)),
                dead_letter_queue,
                dead_letters: None,
            });
        } else {
            let declared = d
                .options
                .get("partitions")
                .and_then(serde_json::Value::as_u64);
            let mut numbers = reader.partition_tables(&name)?;
            let declared = declared.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
            numbers.extend(0..declared);
            numbers.sort_unstable();
            numbers.dedup();
            let mut partitions = Vec::new();
            for partition in numbers {
                let e = reader.extent(&partition_table(&name, partition))?;
                partitions.push(PartitionSummary {
                    partition,
                    first_offset: e.first,
                    next_offset: e.next.max(e.last.map_or(0, |l| l + 1)),
                    messages: e.records,
                    bytes: e.bytes,
                });
            }
            topics.push(TopicSummary {
                name,
                payload: d.payload,
                options: d.options,
                partitions,
                groups: Vec::new(),
            });
        }
    }
    let depths: BTreeMap<String, u64> = queues.iter().map(|q| (q.name.clone(), q.depth)).collect();
    for queue in &mut queues {
        queue.dead_letters = queue
            .dead_letter_queue
            .as_ref()
            .and_then(|d| depths.get(d))
            .copied();
    }
    let mut positions: BTreeMap<(String, String), Vec<(u32, u64)>> = BTreeMap::new();
    for (topic, group, partition, offset) in reader.positions()? {
        positions
            .entry((topic, group))
            .or_default()
            .push((partition, offset));
    }
    for key in groups.keys() {
        positions.entry(key.clone()).or_default();
    }
    for ((topic_name, group), stored) in positions {
        let Some(topic) = topics.iter_mut().find(|t| t.name == topic_name) else {
            continue; // a deleted topic's leftovers
        };
        let mut partitions = Vec::new();
        for (partition, position) in stored {
            // Retained messages at or after the position, as the broker counts lag.
            let (earliest, end) = topic
                .partitions
                .iter()
                .find(|p| p.partition == partition)
                .map_or((position, position), |p| {
                    (p.first_offset.unwrap_or(p.next_offset), p.next_offset)
                });
            partitions.push(GroupPartition {
                partition,
                position,
                lag: end - position.clamp(earliest.min(end), end),
            });
        }
        let options = groups
            .remove(&(topic_name, group.clone()))
            .unwrap_or_default();
        topic.groups.push(GroupSummary {
            name: group,
            options,
            lag: partitions.iter().map(|p| p.lag).sum(),
            partitions,
        });
    }
    Ok(Summary {
        path: path.to_owned(),
        codec: reader.codec().to_owned(),
        closed_cleanly: reader.clean(),
        topics,
        queues,
    })
}

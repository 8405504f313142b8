//! A topic's figures: those its handle reports (offsets, retained messages, group positions),
//! and its part of [`Broker::stats`](crate::Broker::stats): its partitions, groups and
//! subscribers, each partition read under its own lock, then each group under its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Group, Partition, TopicCore};
use crate::engine::Context;
use crate::record::Payload;
use crate::stats::{Meter, PartitionStats, SubscriberStats, TopicStats};

/// The append meters of a new topic's partitions, from their restored ends.
pub(super) fn meters<T>(partitions: &[Partition<T>], context: &Context) -> Mutex<Vec<Meter>> {
    let ticks = context.clock.ticks();
    let meter = |part: &Partition<T>| Meter::new(ticks, part.lock().end());
    Mutex::new(partitions.iter().map(meter).collect())
}

impl<T: Payload> TopicCore<T> {
    /// The retained offsets of `partition`: `earliest..next`.
    pub(crate) fn offsets(&self, partition: u32) -> Option<std::ops::Range<u64>> {
        let mut log = self.partitions.get(partition as usize)?.lock();
        self.trim_for_read(&mut log);
        Some(log.base()..log.end())
    }

    /// How many messages are retained, over all partitions.
    pub(crate) fn retained(&self) -> u64 {
        let count = |log: &Partition<T>| {
            let mut log = log.lock();
            self.trim_for_read(&mut log);
            log.len() as u64
        };
        self.partitions.iter().map(count).sum()
    }

    /// A group's first unacked offset per partition, if the group exists.
    pub(crate) fn group_positions(&self, name: &str) -> Option<Vec<u64>> {
        let group = self.groups.lock().get(name).cloned()?;
        Some(group.positions())
    }

    /// The topic's figures now.
    pub(crate) fn stats(&self) -> TopicStats {
        let ticks = self.context.clock.ticks();
        let counted = self.limits.bytes.is_some();
        // Per partition: (earliest, next), for the groups' lag.
        let mut bounds = Vec::with_capacity(self.partitions.len());
        let mut bytes = Vec::with_capacity(self.partitions.len());
        // Per subscriber (by id, so oldest first): lag and whether it blocks.
        let mut subscribers: BTreeMap<u64, (u64, bool)> = BTreeMap::new();
        for part in self.partitions.iter() {
            let mut log = part.lock();
            self.trim_for_read(&mut log);
            let (base, end) = (log.base(), log.end());
            for (id, at, blocks) in log.subscriber_positions() {
                let entry = subscribers.entry(id).or_insert((0, blocks));
                entry.0 += end - at.clamp(base, end);
            }
            bytes.push(log.bytes());
            drop(log);
            bounds.push((base, end));
        }
        let partitions = {
            let mut meters = self.meters.lock();
            let rows = bounds.iter().zip(&bytes).zip(meters.iter_mut());
            rows.enumerate()
                .map(|(p, ((&(earliest, next), &bytes), meter))| PartitionStats {
                    partition: p as u32,
                    earliest,
                    next,
                    messages: next - earliest,
                    bytes: counted.then_some(bytes),
                    appended: meter.since_origin(next),
                    append_rate: meter.rate(ticks, next),
                })
                .collect()
        };
        let mut groups: Vec<Arc<Group<T>>> = self.groups.lock().values().cloned().collect();
        groups.sort_by(|a, b| a.name().cmp(b.name()));
        TopicStats {
            name: self.name.clone(),
            partitions,
            groups: groups.iter().map(|g| g.stats(&bounds)).collect(),
            subscribers: subscribers
                .into_iter()
                .map(|(id, (lag, blocks))| SubscriberStats { id, lag, blocks })
                .collect(),
        }
    }
}

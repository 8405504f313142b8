//! A topic's figures for [`Broker::stats`](crate::Broker::stats): its partitions, groups and
//! subscribers, each partition read under its own lock, then each group under its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Group, TopicCore};
use crate::record::Payload;
use crate::stats::{PartitionStats, SubscriberStats, TopicStats};

impl<T: Payload> TopicCore<T> {
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

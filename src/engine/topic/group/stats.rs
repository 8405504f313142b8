//! A group's figures for [`Broker::stats`](crate::Broker::stats), read under the group's lock.

use super::Group;
use crate::stats::{GroupPartitionStats, GroupStats};

impl<T> Group<T> {
    /// The group's figures, its lag counted against each partition's `(earliest, next)` as
    /// the caller just read them.
    pub(crate) fn stats(&self, bounds: &[(u64, u64)]) -> GroupStats {
        let state = self.state.lock();
        let partitions: Vec<GroupPartitionStats> = state
            .parts
            .iter()
            .zip(bounds)
            .enumerate()
            .map(|(p, (part, &(earliest, next)))| {
                let position = part.first_unacked();
                let in_flight = part.pending.values().filter(|d| d.holder.is_some());
                GroupPartitionStats {
                    partition: p as u32,
                    owner: part.owner,
                    position,
                    lag: next - position.clamp(earliest, next),
                    in_flight: in_flight.count() as u64,
                }
            })
            .collect();
        GroupStats {
            name: self.name.clone(),
            members: state.members.clone(),
            lag: partitions.iter().map(|p| p.lag).sum(),
            in_flight: partitions.iter().map(|p| p.in_flight).sum(),
            redelivered: state.parts.iter().map(|p| p.redelivered).sum(),
            dead_lettered: state.dead_lettered,
            partitions,
        }
    }
}

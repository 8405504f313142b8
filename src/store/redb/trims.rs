//! Which logs' retention the writer applies to the file, and to what floor: a commit trims a
//! log's rows only below a floor whose causes it holds (see [`Trims::floors`]).
//!
//! A log is nominated for the next commit when a commit publishes into it (its own retention
//! may have trimmed), when a commit carries a group's new position in it (retention by
//! interest trims once the ack is sent), and at close, which trims every log it knows to where
//! it is. It stays nominated while its floor keeps moving. The writer knows a log once a
//! commit has published into it since the store opened: a log restored at open and only acked
//! since is trimmed in the file by its next publish, not before.

use std::sync::Arc;

use super::schema::partition_prefix;
use crate::store::Sink;

/// The floors of the nominated logs, read before the batch they may trim with was complete.
pub(super) struct Floors {
    /// The last request numbered when they were read.
    pub(super) seq: u64,
    pub(super) floors: Vec<(Arc<dyn Sink>, u64)>,
}

impl Floors {
    /// Whether `sink`'s floor is past the one read here (or was not read).
    fn moved(&self, sink: &Arc<dyn Sink>) -> bool {
        let read = self.floors.iter().find(|(s, _)| Arc::ptr_eq(s, sink));
        sink.floor()
            .is_some_and(|now| read.is_none_or(|(_, floor)| now > *floor))
    }
}

/// The writer's nominations.
#[derive(Default)]
pub(super) struct Trims {
    /// The logs whose retention the next commit applies.
    next: Vec<Arc<dyn Sink>>,
    /// Every log with a floor that a commit published into (what acks and close nominate).
    known: Vec<Arc<dyn Sink>>,
}

impl Trims {
    /// The floors of the nominated logs, then the last request number handed out (`seq`). A
    /// floor moves only once the requests that justify it are sent, under the partition's lock
    /// that reading it takes (a published record is committed; a group's ack, alone or in a
    /// transaction, is sent before retention by interest trims), so every request behind a
    /// floor read here is numbered at most `seq`: a commit that holds them all may trim to
    /// it. A commit that may not (its batch ends before `seq`) keeps the nominations.
    pub(super) fn floors(&self, seq: impl FnOnce() -> u64) -> Floors {
        let floors = self
            .next
            .iter()
            .filter_map(|sink| Some((Arc::clone(sink), sink.floor()?)))
            .collect();
        Floors { seq: seq(), floors }
    }

    /// Nominates the partitions in which a batch moves a group's position, `(topic,
    /// partition)` (every partition for `None`: a group deleted), for the commit after it: the trim that allows is made by then (under the lock
    /// that reading the floor takes).
    pub(super) fn nominate_acked<'t>(
        &mut self,
        moved: impl Iterator<Item = (&'t str, Option<u32>)>,
    ) {
        for (topic, partition) in moved {
            let prefix = partition_prefix(topic);
            self.nominate(|sink| {
                let rest = sink.log().table().strip_prefix(&prefix);
                rest.and_then(|p| p.parse::<u32>().ok())
                    .is_some_and(|p| partition.is_none_or(|wanted| p == wanted))
            });
        }
    }

    /// Nominates every known log (close: its commit trims each to where it is).
    pub(super) fn nominate_all(&mut self) {
        self.nominate(|_| true);
    }

    fn nominate(&mut self, wanted: impl Fn(&Arc<dyn Sink>) -> bool) {
        for sink in self.known.iter().filter(|s| wanted(s)) {
            if !self.next.iter().any(|s| Arc::ptr_eq(s, sink)) {
                self.next.push(Arc::clone(sink));
            }
        }
    }

    /// After a commit that applied `trims` (if it could) and published into `published`:
    /// those stay nominated whose floor moved since it was read, and the published join them.
    /// Deleted logs are forgotten.
    pub(super) fn committed<'a>(
        &mut self,
        trims: Option<&Floors>,
        published: impl Iterator<Item = &'a Arc<dyn Sink>>,
        deleted: impl Fn(&Arc<dyn Sink>) -> bool,
    ) {
        if let Some(trims) = trims {
            self.next.retain(|sink| trims.moved(sink));
        }
        self.next.retain(|sink| !deleted(sink));
        self.known.retain(|sink| !deleted(sink));
        for sink in published {
            if !self.known.iter().any(|s| Arc::ptr_eq(s, sink)) {
                if sink.floor().is_none() {
                    continue; // nothing to trim (a queue's acks delete its rows)
                }
                self.known.push(Arc::clone(sink));
            }
            if !self.next.iter().any(|s| Arc::ptr_eq(s, sink)) {
                self.next.push(Arc::clone(sink));
            }
        }
    }
}

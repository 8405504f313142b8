//! A queue's figures for [`Broker::stats`](crate::Broker::stats), read under its lock.

use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;

use super::QueueCore;
use crate::engine::Context;
use crate::stats::{Meter, QueueStats};

/// The ack and nack meters of a new queue.
pub(super) fn meters(context: &Context) -> Mutex<[Meter; 2]> {
    let ticks = context.clock.ticks();
    Mutex::new([Meter::new(ticks, 0), Meter::new(ticks, 0)])
}

impl<T> QueueCore<T> {
    /// The queue's figures now (due messages made ready and expired ones moved on first, as
    /// any look at the queue does).
    pub(crate) fn stats(&self) -> QueueStats {
        let now = self.context.clock.now();
        let ticks = self.context.clock.ticks();
        let mut stats = self.with_expired(|s| QueueStats {
            name: self.name.clone(),
            ready: s.ready_len() as u64,
            in_flight: s.in_flight() as u64,
            delayed: s.waiting_len() as u64,
            dead_lettered: s.dead_lettered,
            expired: s.expired,
            oldest_ready_age: s
                .head_ts()
                .map(|ts| Duration::from_nanos(now.saturating_sub(ts))),
            acked: s.acked,
            nacked: s.nacked,
            ack_rate: 0.0,
            nack_rate: 0.0,
            consumers: self.consumers.load(Ordering::Acquire) as u64,
            capacity: self.options.capacity_limit() as u64,
        });
        let [acks, nacks] = &mut *self.meters.lock();
        stats.ack_rate = acks.rate(ticks, stats.acked);
        stats.nack_rate = nacks.rate(ticks, stats.nacked);
        stats
    }
}

//! `QueueState`: the ready list, in-flight deliveries, delivery counts, prefetch, ack timeouts
//! and the choice between requeue and dead-letter. Pure state, no locking or waking.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::engine::notify::Waiters;
use crate::record::{Entry, Meta, Nanos};

/// A message waiting in the queue.
pub(crate) struct Item<T> {
    pub(crate) id: u64,
    pub(crate) ts: Nanos,
    pub(crate) entry: Arc<Entry<T>>,
    /// Key and headers that replace the entry's (a dead letter's added headers).
    pub(crate) meta: Option<Arc<Meta>>,
    /// Deliveries so far.
    pub(crate) count: u32,
}

struct InFlight<T> {
    item: Item<T>,
    consumer: u64,
    deadline: Option<Nanos>,
}

/// Why a delivery ended without an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Nack,
    Dropped,
    Timeout,
}

/// What became of a released delivery.
pub(crate) enum Released<T> {
    Requeued,
    /// Past `max_deliveries`: the caller moves it to the dead-letter queue.
    Dead(Item<T>, Reason),
    /// The delivery was already acked or released.
    Stale,
}

pub(crate) struct QueueState<T> {
    next_id: u64,
    /// Messages stored ahead of publishing (durable mode), in id order; `None` once taken back
    /// after a failed commit.
    staged: VecDeque<(u64, Option<Item<T>>)>,
    ready: VecDeque<Item<T>>,
    /// In-flight deliveries by delivery number (`delivery_base + index`); `None` once ended.
    deliveries: VecDeque<Option<InFlight<T>>>,
    delivery_base: u64,
    in_flight: usize,
    /// Unacked deliveries per consumer, kept only when a prefetch limit is set.
    held: HashMap<u64, u32>,
    pub(crate) dead_lettered: u64,
    pub(crate) readers: Waiters,
    pub(crate) writers: Waiters,
}

impl<T> QueueState<T> {
    pub(crate) fn new() -> Self {
        Self {
            next_id: 0,
            staged: VecDeque::new(),
            ready: VecDeque::new(),
            deliveries: VecDeque::new(),
            delivery_base: 0,
            in_flight: 0,
            held: HashMap::new(),
            dead_lettered: 0,
            readers: Waiters::default(),
            writers: Waiters::default(),
        }
    }

    pub(crate) fn ready_len(&self) -> usize {
        self.ready.len()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Appends a new message; returns its id.
    pub(crate) fn push(&mut self, ts: Nanos, entry: Arc<Entry<T>>, meta: Option<Arc<Meta>>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.ready.push_back(Item {
            id,
            ts,
            entry,
            meta,
            count: 0,
        });
        id
    }

    /// Durable mode: keeps a new message aside until its commit; returns its id.
    pub(crate) fn stage(&mut self, ts: Nanos, entry: Arc<Entry<T>>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let item = Item {
            id,
            ts,
            entry,
            meta: None,
            count: 0,
        };
        self.staged.push_back((id, Some(item)));
        id
    }

    /// Whether a staged message may still be published.
    pub(crate) fn has_staged(&self) -> bool {
        self.staged.iter().any(|(_, item)| item.is_some())
    }

    /// Takes a staged message back (its commit failed).
    pub(crate) fn unstage(&mut self, id: u64) -> Option<Arc<Entry<T>>> {
        let slot = self.staged.iter_mut().find(|(at, _)| *at == id)?;
        slot.1.take().map(|item| item.entry)
    }

    /// Makes the staged messages with ids below `upto` ready (they are committed).
    pub(crate) fn publish_staged(&mut self, upto: u64) {
        while self.staged.front().is_some_and(|(id, _)| *id < upto) {
            if let Some((_, Some(item))) = self.staged.pop_front() {
                self.ready.push_back(item);
            }
        }
    }

    /// Adds a message read back from the store (ids ascending), with its deliveries so far.
    pub(crate) fn restore(&mut self, id: u64, ts: Nanos, entry: Arc<Entry<T>>, count: u32) {
        self.next_id = self.next_id.max(id + 1);
        self.ready.push_back(Item {
            id,
            ts,
            entry,
            meta: None,
            count,
        });
    }

    /// Ids from here on are new.
    pub(crate) fn start_ids_at(&mut self, next: u64) {
        self.next_id = self.next_id.max(next);
    }

    /// Hands the next ready message to `consumer`, unless its prefetch limit is reached.
    /// Returns the item (with its new delivery count) and the delivery number.
    pub(crate) fn deliver(
        &mut self,
        consumer: u64,
        prefetch: Option<u32>,
        deadline: Option<Nanos>,
    ) -> Option<(&Item<T>, u64)> {
        if self.ready.is_empty() {
            return None;
        }
        if let Some(limit) = prefetch {
            if self.held.get(&consumer).copied().unwrap_or(0) >= limit {
                return None;
            }
            *self.held.entry(consumer).or_insert(0) += 1;
        }
        let mut item = self.ready.pop_front()?;
        item.count += 1;
        self.in_flight += 1;
        let delivery = self.delivery_base + self.deliveries.len() as u64;
        self.deliveries.push_back(Some(InFlight {
            item,
            consumer,
            deadline,
        }));
        let item = &self.deliveries.back()?.as_ref()?.item;
        Some((item, delivery))
    }

    fn end(&mut self, delivery: u64) -> Option<InFlight<T>> {
        let index = usize::try_from(delivery.checked_sub(self.delivery_base)?).ok()?;
        let ended = self.deliveries.get_mut(index)?.take()?;
        self.in_flight -= 1;
        if let Some(held) = self.held.get_mut(&ended.consumer) {
            *held -= 1;
        }
        while matches!(self.deliveries.front(), Some(None)) {
            self.deliveries.pop_front();
            self.delivery_base += 1;
        }
        Some(ended)
    }

    /// Acks a delivery: the message is gone. `false` if it had already ended (timed out).
    pub(crate) fn ack(&mut self, delivery: u64) -> bool {
        self.end(delivery).is_some()
    }

    /// Ends a delivery without an ack: requeue it at the front, or hand it back for the
    /// dead-letter queue once it has been delivered `max_deliveries` times.
    pub(crate) fn release(
        &mut self,
        delivery: u64,
        reason: Reason,
        max_deliveries: Option<u32>,
    ) -> Released<T> {
        let Some(ended) = self.end(delivery) else {
            return Released::Stale;
        };
        if max_deliveries.is_some_and(|max| ended.item.count >= max) {
            self.dead_lettered += 1;
            return Released::Dead(ended.item, reason);
        }
        self.ready.push_front(ended.item);
        Released::Requeued
    }

    /// The delivery numbers whose ack deadline has passed, oldest first.
    pub(crate) fn expired(&self, now: Nanos) -> Vec<u64> {
        let mut expired = Vec::new();
        for (i, d) in self.deliveries.iter().enumerate() {
            match d {
                Some(InFlight {
                    deadline: Some(at), ..
                }) if *at <= now => expired.push(self.delivery_base + i as u64),
                Some(InFlight {
                    deadline: Some(_), ..
                }) => break,
                _ => {}
            }
        }
        expired
    }

    /// The earliest ack deadline.
    pub(crate) fn next_deadline(&self) -> Option<Nanos> {
        self.deliveries.iter().flatten().find_map(|d| d.deadline)
    }

    /// The deliveries `consumer` still holds.
    pub(crate) fn held_by(&self, consumer: u64) -> Vec<u64> {
        (self.delivery_base..)
            .zip(&self.deliveries)
            .filter_map(|(n, d)| d.as_ref().filter(|d| d.consumer == consumer).map(|_| n))
            .collect()
    }

    pub(crate) fn forget_consumer(&mut self, consumer: u64) {
        self.held.remove(&consumer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(n: u64) -> QueueState<u64> {
        let mut s = QueueState::new();
        for i in 0..n {
            s.push(
                0,
                Arc::new(Entry {
                    payload: i,
                    meta: None,
                    size: 0,
                }),
                None,
            );
        }
        s
    }

    #[test]
    fn release_requeues_at_front_until_the_limit() {
        let mut s = state_with(2);
        let (_, d) = s.deliver(1, None, None).map(|(i, d)| (i.id, d)).unwrap();
        assert!(matches!(
            s.release(d, Reason::Nack, Some(2)),
            Released::Requeued
        ));
        let (item, d) = s
            .deliver(1, None, None)
            .map(|(i, d)| ((i.id, i.count), d))
            .unwrap();
        assert_eq!(item, (0, 2), "redelivered first, delivery count 2");
        assert!(matches!(
            s.release(d, Reason::Nack, Some(2)),
            Released::Dead(_, Reason::Nack)
        ));
        assert_eq!((s.ready_len(), s.in_flight(), s.dead_lettered), (1, 0, 1));
    }

    #[test]
    fn prefetch_limits_unacked_deliveries_per_consumer() {
        let mut s = state_with(3);
        let d = s.deliver(1, Some(1), None).map(|(_, d)| d).unwrap();
        assert!(s.deliver(1, Some(1), None).is_none());
        assert!(
            s.deliver(2, Some(1), None).is_some(),
            "another consumer has its own limit"
        );
        assert!(s.ack(d));
        assert!(s.deliver(1, Some(1), None).is_some());
    }

    #[test]
    fn expiry_finds_only_passed_deadlines_and_acks_go_stale() {
        let mut s = state_with(3);
        let a = s.deliver(1, None, Some(10)).map(|(_, d)| d).unwrap();
        let b = s.deliver(1, None, Some(20)).map(|(_, d)| d).unwrap();
        assert_eq!(s.expired(15), vec![a]);
        assert_eq!(s.next_deadline(), Some(10));
        assert!(matches!(
            s.release(a, Reason::Timeout, None),
            Released::Requeued
        ));
        assert!(!s.ack(a), "a timed-out delivery cannot be acked");
        assert!(s.ack(b));
        assert_eq!(s.in_flight(), 0);
    }
}

//! `Flight`: one consumer's deliveries in flight — delivery counts, ack deadlines, prefetch.
//! Pure state; its consumer's link holds it behind a lock no other consumer takes.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::record::{Entry, Meta, Nanos};

/// A message waiting in the queue or in flight.
pub(crate) struct Item<T> {
    pub(crate) id: u64,
    pub(crate) ts: Nanos,
    pub(crate) entry: Arc<Entry<T>>,
    /// Key and headers that replace the entry's (a dead letter's added headers).
    pub(crate) meta: Option<Arc<Meta>>,
    /// Deliveries so far.
    pub(crate) count: u32,
}

/// Why a delivery ended without an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Nack,
    Dropped,
    Timeout,
}

struct InFlight<T> {
    item: Item<T>,
    deadline: Option<Nanos>,
    /// The queue-wide delivery order, so releases from several consumers requeue in order.
    order: u64,
}

/// A delivery taken out of flight, with its queue-wide delivery order.
pub(crate) struct Ended<T> {
    pub(crate) item: Item<T>,
    pub(crate) order: u64,
}

/// One consumer's deliveries, by delivery number (`base + index`); `None` once ended.
pub(crate) struct Flight<T> {
    deliveries: VecDeque<Option<InFlight<T>>>,
    base: u64,
    held: u32,
}

impl<T> Flight<T> {
    pub(crate) fn new() -> Self {
        Self {
            deliveries: VecDeque::new(),
            base: 0,
            held: 0,
        }
    }

    /// Unacked deliveries (for prefetch).
    pub(crate) fn held(&self) -> u32 {
        self.held
    }

    /// Puts `item` (its count already raised) in flight; returns its delivery number.
    pub(crate) fn insert(&mut self, item: Item<T>, deadline: Option<Nanos>, order: u64) -> u64 {
        let delivery = self.base + self.deliveries.len() as u64;
        self.deliveries.push_back(Some(InFlight {
            item,
            deadline,
            order,
        }));
        self.held += 1;
        delivery
    }

    pub(crate) fn get(&self, delivery: u64) -> Option<&Item<T>> {
        let index = usize::try_from(delivery.checked_sub(self.base)?).ok()?;
        Some(&self.deliveries.get(index)?.as_ref()?.item)
    }

    /// The ack deadline of a delivery still in flight (`Some(None)`: no timeout).
    pub(crate) fn deadline(&self, delivery: u64) -> Option<Option<Nanos>> {
        let index = usize::try_from(delivery.checked_sub(self.base)?).ok()?;
        Some(self.deliveries.get(index)?.as_ref()?.deadline)
    }

    /// Ends a delivery (ack or release); `None` if it had already ended.
    pub(crate) fn end(&mut self, delivery: u64) -> Option<Ended<T>> {
        let index = usize::try_from(delivery.checked_sub(self.base)?).ok()?;
        let ended = self.deliveries.get_mut(index)?.take()?;
        self.held -= 1;
        self.compact();
        Some(Ended {
            item: ended.item,
            order: ended.order,
        })
    }

    fn compact(&mut self) {
        while matches!(self.deliveries.front(), Some(None)) {
            self.deliveries.pop_front();
            self.base += 1;
        }
    }

    /// Ends every delivery whose deadline is at or before `now` (deadlines rise with delivery
    /// order, so they are at the front).
    pub(crate) fn expire(&mut self, now: Nanos) -> Vec<Ended<T>> {
        let mut expired = Vec::new();
        for slot in &mut self.deliveries {
            match slot {
                Some(InFlight {
                    deadline: Some(at), ..
                }) if *at <= now => {
                    if let Some(d) = slot.take() {
                        expired.push(Ended {
                            item: d.item,
                            order: d.order,
                        });
                    }
                }
                Some(InFlight {
                    deadline: Some(_), ..
                }) => break,
                _ => {}
            }
        }
        self.held -= expired.len() as u32;
        self.compact();
        expired
    }

    /// The earliest ack deadline in flight.
    pub(crate) fn next_deadline(&self) -> Option<Nanos> {
        self.deliveries.iter().flatten().find_map(|d| d.deadline)
    }

    /// Ends every delivery (the consumer is gone).
    pub(crate) fn drain(&mut self) -> Vec<Ended<T>> {
        self.base += self.deliveries.len() as u64;
        self.held = 0;
        let ended: Vec<_> = self
            .deliveries
            .drain(..)
            .flatten()
            .map(|d| Ended {
                item: d.item,
                order: d.order,
            })
            .collect();
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: u64) -> Item<u64> {
        let entry = Arc::new(Entry {
            payload: id,
            meta: None,
            size: 0,
        });
        Item {
            id,
            ts: 0,
            entry,
            meta: None,
            count: 1,
        }
    }

    #[test]
    fn ending_out_of_order_keeps_numbers_stable() {
        let mut f = Flight::new();
        let a = f.insert(item(1), None, 0);
        let b = f.insert(item(2), None, 1);
        assert_eq!(f.end(b).map(|e| e.item.id), Some(2));
        assert!(f.end(b).is_none(), "a delivery ends once");
        assert_eq!(f.get(a).map(|i| i.id), Some(1));
        assert_eq!(f.held(), 1);
    }

    #[test]
    fn expiry_takes_only_passed_deadlines_from_the_front() {
        let mut f = Flight::new();
        let a = f.insert(item(1), Some(10), 0);
        let b = f.insert(item(2), Some(20), 1);
        let expired: Vec<u64> = f.expire(15).into_iter().map(|e| e.item.id).collect();
        assert_eq!(expired, [1]);
        assert!(f.deadline(a).is_none());
        assert_eq!(f.deadline(b), Some(Some(20)));
        assert_eq!(f.next_deadline(), Some(20));
        assert_eq!(f.held(), 1);
    }

    #[test]
    fn drain_ends_everything() {
        let mut f = Flight::new();
        f.insert(item(1), None, 0);
        f.insert(item(2), None, 1);
        assert_eq!(f.drain().len(), 2);
        assert_eq!(f.held(), 0);
    }
}

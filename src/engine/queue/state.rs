//! `QueueState`: the ready list, in-flight deliveries, delivery counts, prefetch, ack timeouts,
//! the waiting (delayed, backing off) messages and expiry, and the choice between requeue and
//! dead-letter. Pure state, no locking or waking; it reads the broker's clock only for
//! messages that use timing.
//!
//! In-flight deliveries live in a slab, so one delivery held for hours pins one slot, not every
//! delivery made since; ack deadlines are kept in deadline order beside it, so the earliest is
//! found without a scan. Both stay proportional to what is in flight now.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use super::item::Item;
use super::ready::Ready;
use super::timed::Timed;
use crate::clock::Clock;
use crate::engine::deadlines::Deadlines;
use crate::engine::notify::Waiters;
use crate::options::{Backoff, QueueOptions};
use crate::record::{Entry, Meta, Nanos, duration_nanos};

struct InFlight<T> {
    item: Item<T>,
    consumer: u64,
    deadline: Option<Nanos>,
    /// Order of handing out, for releasing oldest-in-front.
    seq: u64,
    /// When the message expires (ticks), if it does: checked when the delivery ends.
    expires: Option<Nanos>,
}

/// One delivery: its slab slot, and its sequence number (unique for the queue's life), so an
/// id whose delivery ended never settles the slot's next delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeliveryId {
    slot: u32,
    seq: u64,
}

/// One slab slot.
struct Slot<T> {
    delivery: Option<InFlight<T>>,
    /// How the slot's last delivery ended without an ack (`None`: acked), so a late settle
    /// can say why it was too late.
    ended: Option<(u64, Reason)>,
}

/// Why a delivery ended without an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Nack,
    Dropped,
    Timeout,
    /// Past its time-to-live (never the end of a delivery: in-flight messages do not expire).
    Expired,
}

/// What became of a released delivery.
pub(crate) enum Released<T> {
    Requeued,
    /// Waiting out its backoff.
    Waiting,
    /// Past its time-to-live, and no dead-letter queue: the caller deletes it.
    Dropped(Item<T>),
    /// Past `max_deliveries`: the caller moves it to the dead-letter queue.
    Dead(Item<T>, Reason),
    /// The delivery had already ended: how, if known.
    Stale(Option<Reason>),
}

pub(crate) struct QueueState<T> {
    next_id: u64,
    /// Messages stored ahead of publishing (durable mode), in id order; `None` once taken back
    /// after a failed commit.
    staged: VecDeque<(u64, Option<Item<T>>)>,
    ready: Ready<T>,
    /// Delayed and backing-off messages, and expiry times.
    timed: Timed<T>,
    clock: Clock,
    /// The redelivery backoff (`None`: it never waits).
    backoff: Option<Backoff>,
    /// The queue's `message_ttl` in nanoseconds.
    ttl: Option<Nanos>,
    /// Whether expired messages move to a dead-letter queue (else they are dropped).
    dead_letters: bool,
    /// Messages dropped because they expired.
    pub(crate) expired: u64,
    /// The moment the broker's timer is set to wake this queue (system clock only).
    pub(crate) armed: Option<Nanos>,
    /// In-flight deliveries by slot (see [`DeliveryId`]), and the free slots.
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    /// Ack deadlines in deadline order, with their delivery numbers. An entry whose delivery
    /// ended, or whose deadline was extended, is stale: dropped when it reaches the front, or
    /// all at once when they outnumber the live ones.
    deadlines: Deadlines<DeliveryId>,
    next_seq: u64,
    in_flight: usize,
    /// Unacked deliveries per consumer, kept only when a prefetch limit is set.
    held: HashMap<u64, u32>,
    pub(crate) dead_lettered: u64,
    /// Acks and nacks in this run (stats).
    pub(crate) acked: u64,
    pub(crate) nacked: u64,
    pub(crate) readers: Waiters,
    pub(crate) writers: Waiters,
}

impl<T> QueueState<T> {
    pub(crate) fn new(options: &QueueOptions, clock: Clock) -> Self {
        Self {
            next_id: 0,
            staged: VecDeque::new(),
            ready: Ready::new(options.priority_levels()),
            timed: Timed::new(),
            clock,
            backoff: Some(options.redelivery_backoff())
                .filter(|b| !b.is_none())
                .cloned(),
            ttl: options.message_ttl_duration().map(duration_nanos),
            dead_letters: options.dead_letter_queue().is_some(),
            expired: 0,
            armed: None,
            slots: Vec::new(),
            free: Vec::new(),
            deadlines: Deadlines::new(),
            next_seq: 0,
            in_flight: 0,
            held: HashMap::new(),
            dead_lettered: 0,
            acked: 0,
            nacked: 0,
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

    /// Messages waiting out a delay or a backoff.
    pub(crate) fn waiting_len(&self) -> usize {
        self.timed.waiting_len()
    }

    /// Appends a new message; returns its id.
    pub(crate) fn push(&mut self, ts: Nanos, entry: Arc<Entry<T>>, meta: Option<Arc<Meta>>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.enqueue(Item {
            id,
            ts,
            entry,
            meta,
            count: 0,
        });
        id
    }

    /// Queues a message that is not in flight: ready, or waiting for its due time; its expiry
    /// noted. A message without timing, in a queue without a time-to-live, costs one branch.
    fn enqueue(&mut self, item: Item<T>) {
        let timing = item.timing();
        if timing.is_none() && self.ttl.is_none() && self.timed.is_empty() {
            self.ready.push_back(item);
            return;
        }
        let timing = timing.unwrap_or_default();
        let record_expiry = timing.expires_at(item.ts);
        let queue_expiry = self.ttl.map(|ttl| item.ts.saturating_add(ttl));
        let expires = record_expiry.into_iter().chain(queue_expiry).min();
        let due = timing.due_at(item.ts);
        if expires.is_none() && due.is_none() && self.timed.next_due().is_none() {
            self.ready.push_back(item);
            return;
        }
        // Wall-clock times become ticks, measured from now.
        let (wall, ticks) = (self.clock.now(), self.clock.ticks());
        // Whatever fell due before this message goes ahead of it.
        self.promote(ticks);
        let to_ticks = |at: Nanos| ticks.saturating_add(at.saturating_sub(wall));
        if let Some(at) = expires {
            self.timed.track(item.id, to_ticks(at));
        }
        match due.map(to_ticks) {
            Some(due) if due > ticks => self.timed.wait(due, item),
            _ => self.ready.push_back(item),
        }
    }

    /// Whether anything waits or can expire (then [`next_timed`](Self::next_timed) says when).
    pub(crate) fn has_timed(&self) -> bool {
        !self.timed.is_empty()
    }

    /// The next moment a waiting message is due or a message expires.
    pub(crate) fn next_timed(&self) -> Option<Nanos> {
        self.timed.next()
    }

    /// The next moment anything happens by itself: an ack deadline, a due time or an expiry.
    pub(crate) fn next_wake(&self) -> Option<Nanos> {
        self.next_deadline()
            .into_iter()
            .chain(self.next_timed())
            .min()
    }

    /// Makes the waiting messages due by `now` ready: redeliveries in front (the earliest due
    /// first), first deliveries at the back in due order. Returns how many.
    pub(crate) fn promote(&mut self, now: Nanos) -> usize {
        if self.timed.next_due().is_none_or(|due| due > now) {
            return 0;
        }
        let due = self.timed.take_due(now);
        let count = due.len();
        let mut again = Vec::new();
        for item in due {
            if item.count > 0 {
                again.push(item);
            } else {
                self.ready.push_back(item);
            }
        }
        for item in again.into_iter().rev() {
            self.ready.push_front(item);
        }
        count
    }

    /// Takes out the messages (ready or waiting) expired by `now`, in expiry order (then id
    /// order), counting them as dead letters or as dropped.
    pub(crate) fn take_expired(&mut self, now: Nanos) -> Vec<Item<T>> {
        let ranks = self.timed.take_expired(now);
        if ranks.is_empty() {
            return Vec::new();
        }
        // The waiting ones first, so the ready list is searched only for what is left.
        let mut out = self.timed.take_waiting(&ranks);
        if out.len() < ranks.len() {
            let mut rest = ranks.clone();
            for item in &out {
                rest.remove(&item.id);
            }
            out.extend(self.ready.take(&rest));
        }
        out.sort_unstable_by_key(|item| ranks.get(&item.id).copied());
        self.count_expired(out.len() as u64);
        out
    }

    fn count_expired(&mut self, n: u64) {
        if self.dead_letters {
            self.dead_lettered += n;
        } else {
            self.expired += n;
        }
    }

    /// Takes every message that is not in flight (ready and waiting), in delivery order.
    pub(crate) fn purge(&mut self) -> Vec<Item<T>> {
        let mut out = self.ready.take_all();
        out.extend(self.timed.take_all());
        out
    }

    /// Takes the next ready message out (a redrive), forgetting its expiry.
    pub(crate) fn take_next(&mut self) -> Option<Item<T>> {
        let item = self.ready.pop_front()?;
        if self.timed.tracks_expiry() {
            self.timed.untrack(item.id);
        }
        Some(item)
    }

    /// The ready messages in delivery order, then the waiting ones in due order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Item<T>> {
        self.ready.iter().chain(self.timed.iter())
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

    /// Takes back the last staged message, `id`, before anything follows it (a transaction
    /// that did not commit): its id is handed out again.
    pub(crate) fn retract(&mut self, id: u64) -> Option<Arc<Entry<T>>> {
        if id + 1 != self.next_id || self.staged.back().is_none_or(|(at, _)| *at != id) {
            return None;
        }
        self.next_id = id;
        self.staged.pop_back()?.1.map(|item| item.entry)
    }

    /// Makes the staged messages with ids below `upto` ready (they are committed).
    pub(crate) fn publish_staged(&mut self, upto: u64) {
        while self.staged.front().is_some_and(|(id, _)| *id < upto) {
            if let Some((_, Some(item))) = self.staged.pop_front() {
                self.enqueue(item);
            }
        }
    }

    /// Adds a message read back from the store (ids ascending), with its deliveries so far.
    pub(crate) fn restore(&mut self, id: u64, ts: Nanos, entry: Arc<Entry<T>>, count: u32) {
        self.next_id = self.next_id.max(id + 1);
        self.enqueue(Item {
            id,
            ts,
            entry,
            meta: None,
            count,
        });
    }

    /// Takes the next id for a message that is stored but not kept here (an undecodable dead
    /// letter).
    pub(crate) fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
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
    ) -> Option<(&Item<T>, DeliveryId)> {
        if self.ready.is_empty() {
            return None;
        }
        if let Some(limit) = prefetch {
            let held = self.held.entry(consumer).or_insert(0);
            if *held >= limit {
                return None;
            }
            *held += 1;
        }
        let mut item = self.ready.pop_front()?;
        let expires = if self.timed.tracks_expiry() {
            self.timed.untrack(item.id)
        } else {
            None
        };
        item.count = item.count.saturating_add(1);
        self.in_flight += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => slot as usize,
            None => {
                self.slots.push(Slot {
                    delivery: None,
                    ended: None,
                });
                self.slots.len() - 1
            }
        };
        let delivery = DeliveryId {
            slot: slot as u32,
            seq,
        };
        if let Some(at) = deadline {
            self.deadlines.push(at, delivery);
        }
        let held = self.slots[slot].delivery.insert(InFlight {
            item,
            consumer,
            deadline,
            seq,
            expires,
        });
        Some((&held.item, delivery))
    }

    /// The live delivery behind `delivery`, if it has not ended.
    fn live(&self, delivery: DeliveryId) -> Option<&InFlight<T>> {
        let slot = self.slots.get(delivery.slot as usize)?;
        slot.delivery.as_ref().filter(|d| d.seq == delivery.seq)
    }

    /// Why `delivery`, no longer live, ended (if this slot still remembers).
    fn why_ended(&self, delivery: DeliveryId) -> Option<Reason> {
        let slot = self.slots.get(delivery.slot as usize)?;
        slot.ended
            .filter(|(seq, _)| *seq == delivery.seq)
            .map(|(_, why)| why)
    }

    /// Ends a live delivery (`why`: how, if not by an ack).
    fn end(&mut self, delivery: DeliveryId, why: Option<Reason>) -> Option<InFlight<T>> {
        let slot = self.slots.get_mut(delivery.slot as usize)?;
        if slot.delivery.as_ref()?.seq != delivery.seq {
            return None;
        }
        let ended = slot.delivery.take()?;
        slot.ended = why.map(|why| (delivery.seq, why));
        self.free.push(delivery.slot);
        self.in_flight -= 1;
        if let Some(held) = self.held.get_mut(&ended.consumer) {
            *held -= 1;
        }
        if ended.deadline.is_some() {
            self.deadline_went_stale();
        }
        Some(ended)
    }

    /// One more deadline entry is stale (see [`Deadlines`]).
    fn deadline_went_stale(&mut self) {
        let slots = &self.slots;
        self.deadlines.went_stale(|at, d| live_at(slots, d, at));
    }

    /// `Ok` if `delivery` is still in flight, else why it ended (if known).
    pub(crate) fn check(&self, delivery: DeliveryId) -> Result<(), Option<Reason>> {
        match self.live(delivery) {
            Some(_) => Ok(()),
            None => Err(self.why_ended(delivery)),
        }
    }

    /// Acks a delivery: the message is gone (returned, for the caller to drop after
    /// unlocking). Fails as [`check`](Self::check) if it had already ended.
    pub(crate) fn ack(&mut self, delivery: DeliveryId) -> Result<Item<T>, Option<Reason>> {
        match self.end(delivery, None) {
            Some(ended) => {
                self.acked += 1;
                Ok(ended.item)
            }
            None => Err(self.why_ended(delivery)),
        }
    }

    /// The send timestamp of the message at the head of the ready list.
    pub(crate) fn head_ts(&self) -> Option<Nanos> {
        self.ready.heads().map(|item| item.ts).min()
    }

    /// Moves a live delivery's ack deadline to `deadline` (work in progress). Fails as
    /// [`check`](Self::check) if it had already ended.
    pub(crate) fn extend(
        &mut self,
        delivery: DeliveryId,
        deadline: Nanos,
    ) -> Result<(), Option<Reason>> {
        self.check(delivery)?;
        let slot = &mut self.slots[delivery.slot as usize];
        let Some(live) = slot.delivery.as_mut() else {
            return Ok(()); // unreachable: checked live
        };
        if live.deadline.is_none_or(|at| at >= deadline) {
            return Ok(()); // no timeout, or already later
        }
        live.deadline = Some(deadline);
        self.deadlines.push(deadline, delivery);
        self.deadline_went_stale();
        Ok(())
    }

    /// Ends a delivery without an ack: hand it back for the dead-letter queue once it has been
    /// delivered `max_deliveries` times (or expired meanwhile), else requeue it at the front,
    /// after `wait` (`None`: the backoff's wait for its delivery count).
    pub(crate) fn release(
        &mut self,
        delivery: DeliveryId,
        reason: Reason,
        max_deliveries: Option<u32>,
        wait: Option<Duration>,
    ) -> Released<T> {
        let Some(ended) = self.end(delivery, Some(reason)) else {
            return Released::Stale(self.why_ended(delivery));
        };
        self.nacked += u64::from(reason == Reason::Nack);
        let item = ended.item;
        let mut now = None;
        if let Some(expires) = ended.expires {
            let ticks = *now.get_or_insert_with(|| self.clock.ticks());
            if expires <= ticks {
                self.count_expired(1);
                return if self.dead_letters {
                    Released::Dead(item, Reason::Expired)
                } else {
                    Released::Dropped(item)
                };
            }
            self.timed.track(item.id, expires);
        }
        if max_deliveries.is_some_and(|max| item.count >= max) {
            if ended.expires.is_some() {
                self.timed.untrack(item.id);
            }
            self.dead_lettered += 1;
            return Released::Dead(item, reason);
        }
        let wait = wait.unwrap_or_else(|| {
            let backoff = self.backoff.as_ref();
            backoff.map_or(Duration::ZERO, |b| b.delay(item.count))
        });
        if wait.is_zero() {
            self.ready.push_front(item);
            return Released::Requeued;
        }
        let ticks = *now.get_or_insert_with(|| self.clock.ticks());
        self.timed
            .wait(ticks.saturating_add(duration_nanos(wait)), item);
        Released::Waiting
    }

    /// The delivery numbers whose ack deadline has passed, oldest first.
    pub(crate) fn expired(&self, now: Nanos) -> Vec<DeliveryId> {
        self.deadlines.due(now, |at, d| live_at(&self.slots, d, at))
    }

    /// The earliest ack deadline.
    pub(crate) fn next_deadline(&self) -> Option<Nanos> {
        self.deadlines.next()
    }

    /// The deliveries `consumer` still holds, oldest first.
    pub(crate) fn held_by(&self, consumer: u64) -> Vec<DeliveryId> {
        let mut held: Vec<DeliveryId> = (0..self.slots.len())
            .filter_map(|i| {
                let d = self.slots[i].delivery.as_ref()?;
                (d.consumer == consumer).then_some(DeliveryId {
                    slot: i as u32,
                    seq: d.seq,
                })
            })
            .collect();
        held.sort_unstable_by_key(|d| d.seq);
        held
    }

    pub(crate) fn forget_consumer(&mut self, consumer: u64) {
        self.held.remove(&consumer);
    }

    /// Slab slots and deadline entries, to show they stay proportional to what is in flight.
    #[cfg(test)]
    fn footprint(&self) -> (usize, usize) {
        (self.slots.len(), self.deadlines.len())
    }
}

/// Whether `delivery` is live with its ack deadline at `at` (a deadline entry that is not:
/// stale).
fn live_at<T>(slots: &[Slot<T>], delivery: DeliveryId, at: Nanos) -> bool {
    let slot = slots.get(delivery.slot as usize);
    let live = slot.and_then(|s| s.delivery.as_ref().filter(|d| d.seq == delivery.seq));
    live.is_some_and(|d| d.deadline == Some(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(n: u64) -> QueueState<u64> {
        let options = QueueOptions::default().backoff(Backoff::none());
        let mut s = QueueState::new(&options, Clock::default());
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
            s.release(d, Reason::Nack, Some(2), None),
            Released::Requeued
        ));
        let (item, d) = s
            .deliver(1, None, None)
            .map(|(i, d)| ((i.id, i.count), d))
            .unwrap();
        assert_eq!(item, (0, 2), "redelivered first, delivery count 2");
        assert!(matches!(
            s.release(d, Reason::Nack, Some(2), None),
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
        assert!(s.ack(d).is_ok());
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
            s.release(a, Reason::Timeout, None, None),
            Released::Requeued
        ));
        assert!(s.ack(a).is_err(), "a timed-out delivery cannot be acked");
        assert!(s.ack(b).is_ok());
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn a_held_delivery_pins_one_slot_not_every_later_delivery() {
        for timeout in [None, Some(1_000)] {
            let mut s = state_with(1);
            let held = s.deliver(1, None, timeout).map(|(_, d)| d).unwrap();
            for i in 0..100_000u64 {
                let entry = Arc::new(Entry {
                    payload: i,
                    meta: None,
                    size: 0,
                });
                s.push(0, entry, None);
                let deadline = timeout.map(|t| t + i);
                let d = s.deliver(2, None, deadline).map(|(_, d)| d).unwrap();
                assert!(s.ack(d).is_ok());
            }
            let (slots, deadlines) = s.footprint();
            assert!(slots <= 2, "{slots} slots for 1 held delivery");
            assert!(
                deadlines <= 130,
                "{deadlines} deadline entries for 1 held delivery"
            );
            assert_eq!(s.next_deadline(), timeout);
            assert!(s.ack(held).is_ok());
        }
    }

    #[test]
    fn an_ended_delivery_number_never_settles_the_next_delivery_in_its_slot() {
        let mut s = state_with(2);
        let first = s.deliver(1, None, None).map(|(_, d)| d).unwrap();
        assert!(s.ack(first).is_ok());
        let second = s.deliver(1, None, None).map(|(_, d)| d).unwrap();
        assert!(s.ack(first).is_err(), "the first delivery already ended");
        assert!(matches!(
            s.release(first, Reason::Nack, None, None),
            Released::Stale(_)
        ));
        assert!(s.check(second).is_ok());
        assert!(s.ack(second).is_ok());
    }

    #[test]
    fn an_extended_deadline_moves_behind_the_others() {
        let mut s = state_with(2);
        let a = s.deliver(1, None, Some(10)).map(|(_, d)| d).unwrap();
        let b = s.deliver(1, None, Some(20)).map(|(_, d)| d).unwrap();
        assert!(s.extend(a, 30).is_ok());
        assert_eq!(s.next_deadline(), Some(20));
        assert_eq!(s.expired(25), vec![b], "a's old deadline no longer counts");
        assert_eq!(s.expired(30), vec![b, a]);
        assert!(s.ack(a).is_ok());
        assert!(
            s.extend(a, 40).is_err(),
            "an ended delivery cannot be extended"
        );
    }

    #[test]
    fn delivery_count_saturates() {
        let mut s = state_with(1);
        let d = s.deliver(1, None, None).map(|(_, d)| d).unwrap();
        assert!(matches!(
            s.release(d, Reason::Nack, None, None),
            Released::Requeued
        ));
        s.ready.first_mut().unwrap().count = u32::MAX;
        let (count, _) = s.deliver(1, None, None).map(|(i, d)| (i.count, d)).unwrap();
        assert_eq!(count, u32::MAX);
    }

    /// Two consumers read the clock, then take the lock in the other order: the earlier
    /// deadline must still fire first.
    #[test]
    fn a_deadline_filed_after_a_later_one_still_comes_first() {
        let mut s = state_with(2);
        let later = s.deliver(1, None, Some(20)).map(|(_, d)| d).unwrap();
        let earlier = s.deliver(2, None, Some(10)).map(|(_, d)| d).unwrap();
        assert_eq!(s.next_deadline(), Some(10));
        assert_eq!(s.expired(15), vec![earlier]);
        assert_eq!(s.expired(20), vec![earlier, later]);
    }
}

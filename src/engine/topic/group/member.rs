//! A group member: the consumer side of a membership.

use std::sync::Arc;
use std::time::Instant;

use super::settle::Why;
use super::{Group, Ticks};
use crate::engine::delivery::GroupAck;
use crate::engine::notify::Wait;
use crate::engine::topic::retry::Retry;
use crate::engine::topic::{Cold, TopicCore, not_due};
use crate::engine::{Delivery, Poll, Source};
use crate::error::{Deleted, Error, RecvError, Settle};
use crate::observe;
use crate::record::Payload;

pub(crate) struct Member<T> {
    topic: Arc<TopicCore<T>>,
    group: Arc<Group<T>>,
    id: u64,
    turn: usize,
    /// A read from the store that failed, to try again.
    retry: Retry,
    /// When a timeout, a backoff or a delayed message of this member's partitions falls due
    /// (real clock only), as of the last look.
    wake: Option<Instant>,
}

impl<T: Payload> Member<T> {
    pub(crate) fn join(topic: Arc<TopicCore<T>>, group: Arc<Group<T>>) -> Self {
        let id = topic.context.next_id();
        group.join(&topic, id);
        Self {
            topic,
            group,
            id,
            turn: 0,
            retry: Retry::default(),
            wake: None,
        }
    }

    pub(crate) fn assigned(&self) -> Vec<u32> {
        self.group.assigned(self.id)
    }

    /// Messages in this member's partitions not yet acked by the group.
    pub(crate) fn lag(&self) -> u64 {
        let state = self.group.state.lock();
        state
            .parts
            .iter()
            .zip(self.topic.partitions.iter())
            .filter(|(part, _)| part.owner == Some(self.id))
            .map(|(part, log)| self.topic.retained_after(log, part.first_unacked()))
            .sum()
    }
}

impl<T: Payload> Member<T> {
    /// One look at the member's partitions: `None` when it moved past a compacted gap, or
    /// past held messages that retention trimmed, and must look again.
    fn poll_once(&mut self, wait: Wait<'_>) -> Option<Poll<T>> {
        let group = &self.group;
        let topic = &self.topic;
        let clock = &topic.context.clock;
        let mut ticks = Ticks::new(clock);
        let mut state = group.state.lock();
        if !state.deleted
            && let Some(woken) = group.expire(topic, &mut state, &mut ticks)
        {
            // Other members may take what fell due; woken outside the lock.
            drop(state);
            woken.wake();
            state = group.state.lock();
        }
        if state.deleted {
            drop(state);
            let deleted = Deleted::group(topic.name.clone(), group.name.clone());
            return Some(Poll::Error(RecvError::Deleted(deleted)));
        }
        let n = state.parts.len();
        for i in 0..n {
            let p = (self.turn + i) % n;
            let part = &mut state.parts[p];
            if part.owner != Some(self.id) || self.retry.waiting(p as u32) {
                continue;
            }
            let mut log = topic.partitions[p].lock();
            topic.trim_for_read(&mut log);
            let before = part.first_unacked();
            let skipped = part.skip_trimmed(log.base());
            if skipped == 0 && part.first_unacked() != before {
                // Retention trimmed only held messages: nothing to report skipped, but the
                // group moved past them, and that is stored as after a skip; then look again.
                let woken = part.settle(&mut log, topic, &group.name, p as u32);
                drop(log);
                drop(state);
                woken.wake();
                topic.context.idle.notify();
                return None;
            }
            if skipped > 0 {
                let woken = part.settle(&mut log, topic, &group.name, p as u32);
                drop(log);
                drop(state);
                woken.wake();
                topic.context.idle.notify();
                observe::event!(
                    "embus::topic",
                    WARN,
                    topic = topic.name.as_str(),
                    group = group.name.as_str(),
                    partition = p as u32,
                    skipped,
                    "lagged"
                );
                return Some(Poll::Lagged(skipped));
            }
            let (offset, fresh) = match part.ready.pop_first() {
                Some(offset) => (offset, false),
                None if part.next < log.end() && part.delayed.is_none() => (part.next, true),
                None => {
                    log.readers.register(self.id, wait);
                    continue;
                }
            };
            if fresh && part.done.contains(&offset) {
                // Acked by a transaction before a reopen: not delivered again.
                part.next += 1;
                let woken = part.settle(&mut log, topic, &group.name, p as u32);
                drop(log);
                drop(state);
                woken.wake();
                return None;
            }
            if log.is_gap(offset) {
                // Compacted away (superseded): the group moves past it, and past the gap.
                part.pending.remove(&offset);
                part.next = log.skip_gap(part.next);
                let woken = part.settle(&mut log, topic, &group.name, p as u32);
                drop(log);
                drop(state);
                woken.wake();
                return None;
            }
            let read = if offset < log.hot() {
                log.cold(offset)
            } else {
                match log.stored(offset) {
                    Some(stored) => Cold::Got(stored),
                    None => {
                        // Unreachable after `skip_trimmed`; keep the offset deliverable.
                        if !fresh {
                            part.ready.insert(offset);
                        }
                        continue;
                    }
                }
            };
            let stored = match read {
                Cold::Got(stored) => {
                    self.retry.succeeded(p as u32);
                    if fresh {
                        // A delayed record holds its partition's later ones back (order).
                        if let Some(due) = not_due(stored.get(), || clock.now()) {
                            part.delayed = Some(ticks.of_wall(due));
                            log.readers.register(self.id, wait);
                            continue;
                        }
                        part.next += 1;
                    }
                    stored
                }
                Cold::Undecodable(undecodable) => {
                    // Damaged in the store, or not a `T`: delivered as an error the member
                    // settles; the position stays before it until then.
                    self.retry.succeeded(p as u32);
                    if fresh {
                        part.next += 1;
                    }
                    let count = group.hand_out(part, offset, self.id, &mut ticks);
                    let settle = GroupSettle {
                        topic: Arc::clone(topic),
                        group: Arc::clone(group),
                        member: self.id,
                        partition: p as u32,
                        offset,
                        count,
                    };
                    self.turn = (p + 1) % n;
                    let undecodable = undecodable.settled_by(Box::new(settle));
                    return Some(Poll::Error(RecvError::Undecodable(Box::new(undecodable))));
                }
                Cold::Failed(error) => {
                    // The store cannot be read now: keep it deliverable, skip nothing.
                    if !fresh {
                        part.ready.insert(offset);
                    }
                    log.readers.register(self.id, wait);
                    let failed = self.retry.failed(&topic.name, p as u32, offset, error);
                    if let Some(failure) = failed {
                        drop(log);
                        drop(state);
                        return Some(Poll::Error(RecvError::Failed(Box::new(failure))));
                    }
                    continue;
                }
            };
            let count = group.hand_out(part, offset, self.id, &mut ticks);
            let ack = GroupAck {
                topic: Arc::clone(topic),
                group: Arc::clone(group),
                member: self.id,
            };
            let message = Delivery::group(stored, p as u32, count, ack);
            self.turn = (p + 1) % n;
            return Some(Poll::Ready(message));
        }
        state.waiters.register(self.id, wait);
        let next = state
            .parts
            .iter()
            .filter(|part| part.owner == Some(self.id))
            .filter_map(super::Part::next_deadline)
            .min();
        drop(state);
        self.wake = next.and_then(|at| clock.wake_at(at));
        self.retry
            .arm_with(&topic.context, self.id, wait, self.wake);
        Some(Poll::Empty)
    }
}

impl<T: Payload> Source<T> for Member<T> {
    fn poll(&mut self, wait: Wait<'_>) -> Poll<T> {
        loop {
            if let Some(poll) = self.poll_once(wait) {
                observe::traced! {
                    if let Poll::Ready(delivery) = &poll {
                        delivery.trace_delivered(&self.topic.name);
                    }
                }
                return poll;
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.topic.has_ended()
    }

    #[inline]
    fn deleted(&self) -> Option<String> {
        self.topic.is_deleted().then(|| self.topic.name.clone())
    }

    fn wake_at(&self) -> Option<Instant> {
        self.retry.wake_at().into_iter().chain(self.wake).min()
    }
}

/// How an undecodable group record is settled: like a delivery's ack or release.
struct GroupSettle<T> {
    topic: Arc<TopicCore<T>>,
    group: Arc<Group<T>>,
    member: u64,
    partition: u32,
    offset: u64,
    count: u32,
}

impl<T: Payload> Settle for GroupSettle<T> {
    fn ack(self: Box<Self>) -> Result<(), Error> {
        let _ = self.group.ack(&self.topic, self.partition, self.offset);
        self.topic.context.store.can_record() // as a delivery's ack
    }

    fn release(self: Box<Self>) {
        let _ = self.group.release(
            &self.topic,
            self.partition,
            self.offset,
            self.member,
            self.count,
            None,
            Why::Dropped,
        );
    }
}

impl<T> Member<T> {
    /// The topic's name.
    pub(crate) fn topic_name(&self) -> &str {
        &self.topic.name
    }

    /// Its broker's store instance ([`Store::instance`](crate::store::Store::instance)).
    #[cfg(any(feature = "nats", feature = "amqp"))]
    pub(crate) fn store_instance(&self) -> u64 {
        self.topic.context.store.instance()
    }

    /// After a wait ended with a result: registrations on the group and the other partitions
    /// are still there.
    pub(crate) fn finish_wait(&mut self) {
        self.unregister();
    }

    /// Forgets this consumer's waker registrations.
    pub(crate) fn unregister(&mut self) {
        self.retry.disarm(&self.topic.context, self.id);
        self.group.state.lock().waiters.remove(self.id);
        for part in self.topic.partitions.iter() {
            part.lock().readers.remove(self.id);
        }
    }
}

impl<T> Drop for Member<T> {
    fn drop(&mut self) {
        self.retry.disarm(&self.topic.context, self.id);
        self.group.leave(&self.topic, self.id);
    }
}

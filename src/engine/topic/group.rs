//! Consumer groups: membership, partition assignment, rebalancing, acks and group positions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::retry::Retry;
use super::{Cold, Log, TopicCore};
use crate::engine::delivery::GroupAck;
use crate::engine::notify::{Wait, Waiters, Woken};
use crate::engine::{Delivery, Poll, Source};
use crate::error::{Error, RecvError, Settle};
use crate::record::Payload;
use crate::store::Progress;

/// A named group on one topic. It outlives its members: a group that everyone left keeps its
/// position (and, under `Block`, keeps producers waiting for it).
pub(crate) struct Group {
    name: String,
    state: Mutex<GroupState>,
}

struct GroupState {
    /// Member ids in join order (see [`rebalance`]).
    members: Vec<u64>,
    parts: Vec<Part>,
    /// Members waiting for a redelivery or a new assignment.
    waiters: Waiters,
}

/// The group's state in one partition.
struct Part {
    owner: Option<u64>,
    /// The next offset never delivered.
    next: u64,
    /// Delivered but not acked, by offset.
    pending: BTreeMap<u64, Pending>,
    /// Pending offsets released for redelivery.
    ready: BTreeSet<u64>,
    /// This group's cursor slot in the partition's log.
    cursor: usize,
    /// The first unacked offset, as last published to the log's cursor.
    position: u64,
}

struct Pending {
    /// Deliveries so far.
    count: u32,
    /// The member holding the current delivery, if any.
    holder: Option<u64>,
}

impl Part {
    fn first_unacked(&self) -> u64 {
        self.pending
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next)
            .min(self.next)
    }

    /// Publishes a moved position to the log (for `Block`) and the store.
    fn settle<T>(
        &mut self,
        log: &mut Log<T>,
        topic: &TopicCore<T>,
        group: &str,
        partition: u32,
    ) -> Woken {
        let position = self.first_unacked();
        if position == self.position || topic.is_deleted() {
            return Woken::none(); // a deleted topic's positions are gone with it
        }
        self.position = position;
        topic.context.store.progress(Progress::GroupPosition {
            topic: &topic.name,
            group,
            partition,
            offset: position,
        });
        log.set_cursor(self.cursor, position)
    }

    /// Drops what retention trimmed; returns how many undelivered messages were lost.
    fn skip_trimmed(&mut self, base: u64) -> u64 {
        let mut skipped = 0;
        if self.next < base {
            skipped += base - self.next;
            self.next = base;
        }
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() >= base {
                break;
            }
            let (offset, pending) = entry.remove_entry();
            if pending.holder.is_none() {
                self.ready.remove(&offset);
                skipped += 1;
            }
        }
        skipped
    }
}

impl Group {
    pub(crate) fn new(name: &str, cursors: Vec<(u64, usize)>) -> Self {
        let parts = cursors
            .into_iter()
            .map(|(at, cursor)| Part {
                owner: None,
                next: at,
                pending: BTreeMap::new(),
                ready: BTreeSet::new(),
                cursor,
                position: at,
            })
            .collect();
        let state = GroupState {
            members: Vec::new(),
            parts,
            waiters: Waiters::default(),
        };
        Self {
            name: name.to_owned(),
            state: Mutex::new(state),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn positions(&self) -> Vec<u64> {
        self.state
            .lock()
            .parts
            .iter()
            .map(Part::first_unacked)
            .collect()
    }

    /// Messages retained or pending that the group has not acked.
    pub(crate) fn behind<T: Payload>(&self, topic: &TopicCore<T>) -> u64 {
        let state = self.state.lock();
        state
            .parts
            .iter()
            .zip(topic.partitions.iter())
            .map(|(part, log)| topic.retained_after(log, part.first_unacked()))
            .sum()
    }

    pub(crate) fn take_waiters(&self) -> Woken {
        self.state.lock().waiters.take()
    }

    fn assigned(&self, member: u64) -> Vec<u32> {
        let state = self.state.lock();
        (0..state.parts.len() as u32)
            .filter(|&p| state.parts[p as usize].owner == Some(member))
            .collect()
    }

    fn join(&self, member: u64) {
        let mut state = self.state.lock();
        state.members.push(member);
        let woken = rebalance(&mut state);
        drop(state);
        woken.wake();
    }

    fn leave<T>(&self, topic: &TopicCore<T>, member: u64) {
        let mut state = self.state.lock();
        state.members.retain(|&m| m != member);
        state.waiters.remove(member);
        let woken = rebalance(&mut state);
        drop(state);
        for log in topic.partitions.iter() {
            log.lock().readers.remove(member);
        }
        woken.wake();
    }

    /// Acks a delivery (whoever holds it now: the work is done).
    pub(crate) fn ack<T>(&self, topic: &TopicCore<T>, partition: u32, offset: u64) {
        let mut state = self.state.lock();
        let Some(part) = state.parts.get_mut(partition as usize) else {
            return;
        };
        if part.pending.remove(&offset).is_none() {
            return;
        }
        part.ready.remove(&offset);
        let woken = part.settle(
            &mut topic.partitions[partition as usize].lock(),
            topic,
            &self.name,
            partition,
        );
        drop(state);
        woken.wake();
        topic.context.idle.notify();
    }

    /// Makes a delivery ready again, if `member` still holds that very delivery.
    pub(crate) fn release(
        &self,
        partition: u32,
        offset: u64,
        member: u64,
        count: u32,
        delay: Option<Duration>,
    ) {
        let _ = delay; // FOUNDATION: redelivery waits are not implemented yet
        let mut state = self.state.lock();
        let Some(part) = state.parts.get_mut(partition as usize) else {
            return;
        };
        match part.pending.get_mut(&offset) {
            Some(p) if p.holder == Some(member) && p.count == count => p.holder = None,
            _ => return,
        }
        part.ready.insert(offset);
        let woken = state.waiters.take();
        drop(state);
        woken.wake();
    }
}

/// Reassigns partitions stickily: each member gets a fair share (members earlier in join order
/// take the remainder; members beyond the partition count get none), and a partition keeps its
/// owner while that owner is still within its share. A partition that changes owner has its
/// deliveries made ready again.
fn rebalance(state: &mut GroupState) -> Woken {
    let (n, m) = (state.parts.len(), state.members.len());
    let share = |i: usize| n / m.max(1) + usize::from(i < n % m.max(1));
    let mut owned = vec![0; m];
    let index = |owner: Option<u64>| owner.and_then(|o| state.members.iter().position(|&x| x == o));
    let mut owners: Vec<Option<usize>> = state.parts.iter().map(|p| index(p.owner)).collect();
    for owner in &mut owners {
        match *owner {
            Some(i) if owned[i] < share(i) => owned[i] += 1,
            _ => *owner = None,
        }
    }
    for owner in owners.iter_mut().filter(|o| o.is_none()) {
        *owner = (0..m).find(|&i| owned[i] < share(i));
        if let Some(i) = *owner {
            owned[i] += 1;
        }
    }
    for (part, owner) in state.parts.iter_mut().zip(owners) {
        let owner = owner.map(|i| state.members[i]);
        if owner != part.owner {
            part.owner = owner;
            for (&offset, pending) in &mut part.pending {
                if pending.holder.take().is_some() {
                    part.ready.insert(offset);
                }
            }
        }
    }
    state.waiters.take()
}

/// A group member: the consumer side of a membership.
pub(crate) struct Member<T> {
    topic: Arc<TopicCore<T>>,
    group: Arc<Group>,
    id: u64,
    turn: usize,
    /// A read from the store that failed, to try again.
    retry: Retry,
}

impl<T: Payload> Member<T> {
    pub(crate) fn join(topic: Arc<TopicCore<T>>, group: Arc<Group>) -> Self {
        let id = topic.context.next_id();
        group.join(id);
        Self {
            topic,
            group,
            id,
            turn: 0,
            retry: Retry::default(),
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

impl<T: Payload> Source<T> for Member<T> {
    fn poll(&mut self, wait: Wait<'_>) -> Poll<T> {
        let group = &self.group;
        let topic = &self.topic;
        let mut state = group.state.lock();
        let n = state.parts.len();
        for i in 0..n {
            let p = (self.turn + i) % n;
            let part = &mut state.parts[p];
            if part.owner != Some(self.id) || self.retry.waiting(p as u32) {
                continue;
            }
            let mut log = topic.partitions[p].lock();
            topic.trim_for_read(&mut log);
            let skipped = part.skip_trimmed(log.base());
            if skipped > 0 {
                let woken = part.settle(&mut log, topic, &group.name, p as u32);
                drop(log);
                drop(state);
                woken.wake();
                topic.context.idle.notify();
                return Poll::Lagged(skipped);
            }
            let offset = match part.ready.pop_first() {
                Some(offset) => offset,
                None if part.next < log.end() => {
                    part.next += 1;
                    part.pending.insert(
                        part.next - 1,
                        Pending {
                            count: 0,
                            holder: None,
                        },
                    );
                    part.next - 1
                }
                None => {
                    log.readers.register(self.id, wait);
                    continue;
                }
            };
            if log.is_gap(offset) {
                // Compacted away (superseded): the group moves past it, and past the gap.
                part.pending.remove(&offset);
                part.next = log.skip_gap(part.next);
                let woken = part.settle(&mut log, topic, &group.name, p as u32);
                drop(log);
                drop(state);
                woken.wake();
                return self.poll(wait);
            }
            let read = if offset < log.hot() {
                log.cold(offset)
            } else {
                match log.stored(offset) {
                    Some(stored) => Cold::Got(stored),
                    None => {
                        // Unreachable after `skip_trimmed`; keep the offset deliverable.
                        part.ready.insert(offset);
                        continue;
                    }
                }
            };
            let stored = match read {
                Cold::Got(stored) => {
                    self.retry.succeeded(p as u32);
                    stored
                }
                Cold::Undecodable(undecodable) => {
                    // Damaged in the store, or not a `T`: delivered as an error the member
                    // settles; the position stays before it until then.
                    self.retry.succeeded(p as u32);
                    let Some(pending) = part.pending.get_mut(&offset) else {
                        continue;
                    };
                    pending.count += 1;
                    pending.holder = Some(self.id);
                    let settle = GroupSettle {
                        topic: Arc::clone(topic),
                        group: Arc::clone(group),
                        member: self.id,
                        partition: p as u32,
                        offset,
                        count: pending.count,
                    };
                    self.turn = (p + 1) % n;
                    let undecodable = undecodable.settled_by(Box::new(settle));
                    return Poll::Error(RecvError::Undecodable(Box::new(undecodable)));
                }
                Cold::Failed(error) => {
                    // The store cannot be read now: keep it deliverable, skip nothing.
                    part.ready.insert(offset);
                    log.readers.register(self.id, wait);
                    let failed = self.retry.failed(&topic.name, p as u32, offset, error);
                    if let Some(failure) = failed {
                        drop(log);
                        drop(state);
                        return Poll::Error(RecvError::Failed(Box::new(failure)));
                    }
                    continue;
                }
            };
            let Some(pending) = part.pending.get_mut(&offset) else {
                continue;
            };
            pending.count += 1;
            pending.holder = Some(self.id);
            let ack = GroupAck {
                topic: Arc::clone(topic),
                group: Arc::clone(group),
                member: self.id,
            };
            let message = Delivery::group(stored, p as u32, pending.count, ack);
            self.turn = (p + 1) % n;
            return Poll::Ready(message);
        }
        state.waiters.register(self.id, wait);
        drop(state);
        self.retry.arm(&topic.context, self.id, wait);
        Poll::Empty
    }

    fn is_closed(&self) -> bool {
        self.topic.has_ended()
    }

    #[inline]
    fn deleted(&self) -> Option<String> {
        self.topic.is_deleted().then(|| self.topic.name.clone())
    }

    fn wake_at(&self) -> Option<std::time::Instant> {
        self.retry.wake_at()
    }
}

/// How an undecodable group record is settled: like a delivery's ack or release.
struct GroupSettle<T> {
    topic: Arc<TopicCore<T>>,
    group: Arc<Group>,
    member: u64,
    partition: u32,
    offset: u64,
    count: u32,
}

impl<T: Payload> Settle for GroupSettle<T> {
    fn ack(self: Box<Self>) -> Result<(), Error> {
        self.group.ack(&self.topic, self.partition, self.offset);
        self.topic.context.store.can_record() // as a delivery's ack
    }

    fn release(self: Box<Self>) {
        self.group
            .release(self.partition, self.offset, self.member, self.count, None);
    }
}

impl<T> Member<T> {
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

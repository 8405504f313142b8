//! Consumer groups: membership, partition assignment, rebalancing, acks, redelivery (backoff
//! and ack timeouts), dead-lettering and group positions.
//!
//! Every redelivery waits out the group's [`Backoff`](crate::Backoff) (or a
//! `nack_after` delay), measured in the broker clock's ticks: a released message waits in its
//! partition's `waiting` set while the partition's other messages keep being delivered. Ack
//! deadlines are kept per partition too. Both are processed under the group's lock whenever a
//! member looks, a delivery settles, or the clock moves (`Control::wake_all`).

mod member;
mod settle;
mod stats;
mod tx;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

pub(crate) use self::member::Member;
pub(crate) use self::settle::Why;
use super::{Log, TopicCore};
use crate::clock::Clock;
use crate::engine::deadlines::Deadlines;
use crate::engine::notify::{Waiters, Woken};
use crate::engine::queue::QueueCore;
use crate::observe;
use crate::options::GroupOptions;
use crate::record::{Headers, Nanos, Payload, duration_nanos};
use crate::store::Progress;

/// A named group on one topic. It outlives its members: a group that everyone left keeps its
/// position (and, under `Block`, keeps producers waiting for it) until it is deleted.
pub(crate) struct Group<T> {
    name: String,
    options: GroupOptions,
    /// The ack timeout in clock ticks.
    ack_timeout: Option<Nanos>,
    /// The dead-letter queue, once declared (by the first join of this run).
    dead_letter: OnceLock<Arc<QueueCore<T>>>,
    /// Copies a message for the dead-letter queue (where `T: Payload` cannot be named: a
    /// release runs in a delivery's drop).
    copier: Copier<T>,
    state: Mutex<GroupState>,
}

pub(crate) struct GroupState {
    /// Member ids in join order (see [`Group::rebalance`]).
    members: Vec<u64>,
    parts: Vec<Part>,
    /// Members waiting for a redelivery or a new assignment.
    waiters: Waiters,
    /// Set by `Topic::delete_group`: members get `RecvError::Deleted`, settles do nothing.
    deleted: bool,
    /// Messages moved to the dead-letter queue so far.
    dead_lettered: u64,
}

/// The group's state in one partition.
struct Part {
    owner: Option<u64>,
    /// The next offset never delivered.
    next: u64,
    /// Delivered but not acked, by offset.
    pending: BTreeMap<u64, Pending>,
    /// Pending offsets released and due for redelivery.
    ready: BTreeSet<u64>,
    /// Pending offsets released and waiting out their backoff: (due tick, offset).
    waiting: BTreeSet<(Nanos, u64)>,
    /// Ack deadlines of the deliveries held, by offset (live while the offset's pending entry
    /// has that deadline).
    timeouts: Deadlines<u64>,
    /// The message at `next` is delayed (`Record::delay`) until this tick, as last seen.
    delayed: Option<Nanos>,
    /// Offsets a transaction acked ahead of the position, kept by the store until the
    /// position passes them (restored on reopen: never delivered again).
    done: BTreeSet<u64>,
    /// This group's cursor slot in the partition's log.
    cursor: usize,
    /// The first unacked offset, as last published to the log's cursor.
    position: u64,
    /// Deliveries that were not a message's first, in this run (stats).
    redelivered: u64,
}

#[derive(Default)]
struct Pending {
    /// Deliveries so far.
    count: u32,
    /// The member holding the current delivery, if any.
    holder: Option<u64>,
    /// The held delivery's ack deadline (its entry in `timeouts`).
    deadline: Option<Nanos>,
    /// When a released message is due again (its entry in `waiting`).
    retry_at: Option<Nanos>,
}

/// A copy of a payload made through the topic's codec, and (for a store that keeps bytes)
/// the dead letter's body with `key` and `headers`.
type Copier<T> = fn(&TopicCore<T>, &T, Option<&[u8]>, &Headers) -> Option<(T, Vec<u8>)>;

fn copy<T: Payload>(
    topic: &TopicCore<T>,
    payload: &T,
    key: Option<&[u8]>,
    headers: &Headers,
) -> Option<(T, Vec<u8>)> {
    let codec = topic.coder.codec();
    let mut bytes = Vec::new();
    codec.encode(payload, &mut bytes).ok()?;
    let copy: T = codec.decode(&bytes).ok()?;
    let body = if topic.context.store.reads_back() {
        topic.coder.encode(&copy, key, headers).ok()?
    } else {
        Vec::new()
    };
    Some((copy, body))
}

/// The clock's ticks, read at most once per operation, and only if needed.
pub(super) struct Ticks<'a> {
    clock: &'a Clock,
    at: Option<Nanos>,
}

impl<'a> Ticks<'a> {
    pub(super) fn new(clock: &'a Clock) -> Self {
        Self { clock, at: None }
    }

    fn get(&mut self) -> Nanos {
        *self.at.get_or_insert_with(|| self.clock.ticks())
    }

    /// The tick at which wall-clock time `due` comes (a delayed record's due time).
    fn of_wall(&mut self, due: Nanos) -> Nanos {
        let wall = self.clock.now();
        self.get().saturating_add(due.saturating_sub(wall))
    }
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

    /// Publishes a moved position to the log (for `Block` and retention by interest) and the
    /// store.
    fn settle<T>(
        &mut self,
        log: &mut Log<T>,
        topic: &TopicCore<T>,
        group: &str,
        partition: u32,
    ) -> Woken {
        let store = &topic.context.store;
        self.settle_with(log, topic, group, partition, &mut |c| store.progress(c))
    }

    /// As [`settle`](Self::settle), telling `record` of the new position instead of the store
    /// (a transaction's commit).
    fn settle_with<T>(
        &mut self,
        log: &mut Log<T>,
        topic: &TopicCore<T>,
        group: &str,
        partition: u32,
        record: &mut dyn FnMut(Progress<'_>),
    ) -> Woken {
        let position = self.first_unacked();
        if position == self.position || topic.is_deleted() {
            return Woken::none(); // a deleted topic's positions are gone with it
        }
        record(Progress::GroupPosition {
            topic: &topic.name,
            group,
            partition,
            offset: position,
        });
        if self.done.first().is_some_and(|&first| first < position) {
            self.done = self.done.split_off(&position);
            record(Progress::GroupAckedBelow {
                topic: &topic.name,
                group,
                partition,
                below: position,
            });
        }
        self.moved_to(log, topic, position)
    }

    /// The position moved to `position` (stored by the caller).
    fn moved_to<T>(&mut self, log: &mut Log<T>, topic: &TopicCore<T>, position: u64) -> Woken {
        self.position = position;
        let mut woken = log.set_cursor(self.cursor, position);
        if topic.limits.interest {
            woken.join(log.trim_acked());
        }
        woken
    }

    /// Forgets `offset`'s pending entry and its timers; `None` if it was not pending.
    fn remove(&mut self, offset: u64) -> Option<Pending> {
        let pending = self.pending.remove(&offset)?;
        self.ready.remove(&offset);
        self.unschedule(offset, &pending);
        Some(pending)
    }

    fn unschedule(&mut self, offset: u64, pending: &Pending) {
        if pending.deadline.is_some() {
            self.timeout_went_stale();
        }
        if let Some(at) = pending.retry_at {
            self.waiting.remove(&(at, offset));
        }
    }

    /// One more ack deadline is stale: its delivery ended (see [`Deadlines`]).
    fn timeout_went_stale(&mut self) {
        let pending = &self.pending;
        let live = |at, offset| pending.get(&offset).is_some_and(|p| p.deadline == Some(at));
        self.timeouts.went_stale(live);
    }

    /// The held deliveries whose ack deadline passed by `now`, oldest first.
    fn timed_out(&self, now: Nanos) -> Vec<u64> {
        let pending = &self.pending;
        let live = |at, offset| pending.get(&offset).is_some_and(|p| p.deadline == Some(at));
        self.timeouts.due(now, live)
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
            self.ready.remove(&offset);
            self.unschedule(offset, &pending);
            if pending.holder.is_none() {
                skipped += 1;
            }
        }
        skipped
    }

    /// The earliest tick at which something of this partition falls due.
    fn next_deadline(&self) -> Option<Nanos> {
        let timeout = self.timeouts.next();
        let waiting = self.waiting.first().map(|(at, _)| *at);
        [timeout, waiting, self.delayed].into_iter().flatten().min()
    }

    /// Starts over at `at` (a reset), forgetting every delivery.
    fn restart(&mut self, at: u64) {
        self.next = at;
        self.done.clear();
        self.pending.clear();
        self.ready.clear();
        self.waiting.clear();
        self.timeouts.clear();
        self.delayed = None;
    }
}

impl<T: Payload> Group<T> {
    /// A group with `options`, at `cursors` (position and log cursor slot per partition).
    pub(crate) fn new(name: &str, options: GroupOptions, cursors: Vec<(u64, usize)>) -> Self {
        let parts = cursors
            .into_iter()
            .map(|(at, cursor)| Part {
                owner: None,
                next: at,
                pending: BTreeMap::new(),
                ready: BTreeSet::new(),
                waiting: BTreeSet::new(),
                timeouts: Deadlines::new(),
                delayed: None,
                done: BTreeSet::new(),
                cursor,
                position: at,
                redelivered: 0,
            })
            .collect();
        let state = GroupState {
            members: Vec::new(),
            parts,
            waiters: Waiters::default(),
            deleted: false,
            dead_lettered: 0,
        };
        Self {
            name: name.to_owned(),
            ack_timeout: options.ack_timeout_duration().map(duration_nanos),
            options,
            dead_letter: OnceLock::new(),
            copier: copy::<T>,
            state: Mutex::new(state),
        }
    }
}

impl<T> Group<T> {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn options(&self) -> &GroupOptions {
        &self.options
    }

    /// Sets the dead-letter queue (declared by a join); the first one set stays.
    pub(crate) fn set_dead_letter(&self, queue: Arc<QueueCore<T>>) {
        let _ = self.dead_letter.set(queue);
    }

    pub(crate) fn has_dead_letter(&self) -> bool {
        self.dead_letter.get().is_some()
    }

    pub(crate) fn positions(&self) -> Vec<u64> {
        self.state
            .lock()
            .parts
            .iter()
            .map(Part::first_unacked)
            .collect()
    }

    /// Messages moved to the dead-letter queue so far (this run).
    pub(crate) fn dead_lettered(&self) -> u64 {
        self.state.lock().dead_lettered
    }

    pub(crate) fn take_waiters(&self) -> Woken {
        self.state.lock().waiters.take()
    }

    /// The earliest tick at which a timeout, a backoff or a delayed message falls due.
    pub(crate) fn next_deadline(&self) -> Option<Nanos> {
        let state = self.state.lock();
        state.parts.iter().filter_map(Part::next_deadline).min()
    }

    fn assigned(&self, member: u64) -> Vec<u32> {
        let state = self.state.lock();
        (0..state.parts.len() as u32)
            .filter(|&p| state.parts[p as usize].owner == Some(member))
            .collect()
    }

    fn join(&self, topic: &TopicCore<T>, member: u64) {
        let mut ticks = Ticks::new(&topic.context.clock);
        let mut state = self.state.lock();
        state.members.push(member);
        let woken = self.rebalance(&mut state, &mut ticks);
        let members = state.members.len();
        drop(state);
        self.rebalanced(topic, member, "join", members);
        woken.wake();
    }

    /// The `rebalance` event: `member` joined or left, and the group has `members` now.
    fn rebalanced(&self, topic: &TopicCore<T>, member: u64, change: &str, members: usize) {
        let _ = (topic, member, change, members);
        observe::event!(
            "embus::topic",
            INFO,
            topic = topic.name.as_str(),
            group = self.name.as_str(),
            member,
            change,
            members,
            "rebalance"
        );
    }

    fn leave(&self, topic: &TopicCore<T>, member: u64) {
        let mut ticks = Ticks::new(&topic.context.clock);
        let mut state = self.state.lock();
        state.members.retain(|&m| m != member);
        state.waiters.remove(member);
        let woken = self.rebalance(&mut state, &mut ticks);
        let members = state.members.len();
        drop(state);
        self.rebalanced(topic, member, "leave", members);
        for log in topic.partitions.iter() {
            log.lock().readers.remove(member);
        }
        woken.wake();
    }

    /// Reassigns partitions stickily: each member gets a fair share (members earlier in join
    /// order take the remainder; members beyond the partition count get none), and a partition
    /// keeps its owner while that owner is still within its share. A partition that changes
    /// owner has its deliveries released, each after its backoff.
    fn rebalance(&self, state: &mut GroupState, ticks: &mut Ticks<'_>) -> Woken {
        let (n, m) = (state.parts.len(), state.members.len());
        let share = |i: usize| n / m.max(1) + usize::from(i < n % m.max(1));
        let mut owned = vec![0; m];
        let index =
            |owner: Option<u64>| owner.and_then(|o| state.members.iter().position(|&x| x == o));
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
            if owner == part.owner {
                continue;
            }
            part.owner = owner;
            let held: Vec<u64> = part
                .pending
                .iter()
                .filter(|(_, p)| p.holder.is_some())
                .map(|(&offset, _)| offset)
                .collect();
            for offset in held {
                self.requeue(part, offset, None, ticks);
            }
        }
        state.waiters.take()
    }

    /// Ends the held delivery of `offset` (if any) and makes it ready again after its backoff
    /// (or `delay`). Never dead-letters (see [`settle`]).
    fn requeue(
        &self,
        part: &mut Part,
        offset: u64,
        delay: Option<std::time::Duration>,
        ticks: &mut Ticks<'_>,
    ) {
        let Some(pending) = part.pending.get_mut(&offset) else {
            return;
        };
        pending.holder = None;
        let timed = pending.deadline.take().is_some();
        let backoff = self.options.redelivery_backoff();
        let wait = match delay {
            Some(delay) => delay,
            None if backoff.is_none() => std::time::Duration::ZERO,
            None => backoff.delay(pending.count),
        };
        if wait.is_zero() {
            part.ready.insert(offset);
        } else {
            let at = ticks.get().saturating_add(duration_nanos(wait));
            pending.retry_at = Some(at);
            part.waiting.insert((at, offset));
        }
        if timed {
            part.timeout_went_stale();
        }
    }

    /// Hands `offset` out to `member`: counts the delivery and starts its ack timeout.
    fn hand_out(&self, part: &mut Part, offset: u64, member: u64, ticks: &mut Ticks<'_>) -> u32 {
        let deadline = self.ack_timeout.map(|t| ticks.get().saturating_add(t));
        let pending = part.pending.entry(offset).or_default();
        pending.count += 1;
        part.redelivered += u64::from(pending.count > 1);
        pending.holder = Some(member);
        pending.deadline = deadline;
        let count = pending.count;
        if let Some(at) = deadline {
            part.timeouts.push(at, offset);
        }
        count
    }
}

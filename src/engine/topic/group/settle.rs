//! How a group's deliveries end: acks, releases (nack, drop), ack timeouts and dead letters;
//! and the admin side (delete, reset, how far behind).

use std::time::Duration;

use super::{Group, GroupState, Part, Ticks};
use crate::engine::notify::Woken;
use crate::engine::topic::TopicCore;
use crate::error::Error;
use crate::observe;
use crate::options::Start;
use crate::record::{Entry, Headers, Meta, Payload, Timing};
use crate::store::Progress;

/// Why a delivery ended without an ack (the dead-letter reason header).
#[derive(Clone, Copy)]
pub(crate) enum Why {
    Nack,
    Dropped,
    Timeout,
}

impl Why {
    fn header(self) -> &'static str {
        match self {
            Self::Nack => "nack",
            Self::Dropped => "dropped",
            Self::Timeout => "ack-timeout",
        }
    }
}

impl<T> Group<T> {
    /// Acks a delivery. Whoever holds it now, the work is done: an ack that comes after the
    /// delivery timed out (or after a nack) still acks the message if the group has not moved
    /// past it; if it was dead-lettered meanwhile, the ack does nothing.
    /// Returns whether it acked anything.
    pub(crate) fn ack(&self, topic: &TopicCore<T>, partition: u32, offset: u64) -> bool {
        let mut state = self.state.lock();
        if state.deleted {
            return false;
        }
        let Some(part) = state.parts.get_mut(partition as usize) else {
            return false;
        };
        if part.remove(offset).is_none() {
            return false;
        }
        let woken = part.settle(
            &mut topic.partitions[partition as usize].lock(),
            topic,
            &self.name,
            partition,
        );
        drop(state);
        woken.wake();
        topic.context.idle.notify();
        true
    }

    /// Ends `member`'s delivery of `offset` (if it still holds that very delivery, the
    /// `count`-th): dead-lettered past `max_deliveries`, else delivered again after `delay`
    /// or the backoff. Returns whether it ended one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn release(
        &self,
        topic: &TopicCore<T>,
        partition: u32,
        offset: u64,
        member: u64,
        count: u32,
        delay: Option<Duration>,
        why: Why,
    ) -> bool {
        let mut ticks = Ticks::new(&topic.context.clock);
        let mut state = self.state.lock();
        if state.deleted {
            return false;
        }
        let Some(part) = state.parts.get_mut(partition as usize) else {
            return false;
        };
        match part.pending.get(&offset) {
            Some(p) if p.holder == Some(member) && p.count == count => {}
            _ => return false,
        }
        let mut woken =
            self.end_delivery(topic, &mut state, partition, offset, delay, why, &mut ticks);
        // Waiting members learn the new deadline (a backoff) or take the message.
        woken.join(state.waiters.take());
        drop(state);
        woken.wake();
        topic.context.idle.notify();
        true
    }

    /// A held delivery ended without an ack: dead-letter it or schedule its redelivery.
    #[allow(clippy::too_many_arguments)]
    fn end_delivery(
        &self,
        topic: &TopicCore<T>,
        state: &mut GroupState,
        partition: u32,
        offset: u64,
        delay: Option<Duration>,
        why: Why,
        ticks: &mut Ticks<'_>,
    ) -> Woken {
        let part = &mut state.parts[partition as usize];
        let count = part.pending.get(&offset).map_or(0, |p| p.count);
        let spent = self
            .options
            .max_delivery_count()
            .is_some_and(|max| count >= max);
        if spent && let Some(woken) = self.dead_letter(topic, part, partition, offset, count, why) {
            state.dead_lettered += 1;
            return woken;
        }
        self.requeue(part, offset, delay, ticks);
        Woken::none()
    }

    /// Fires what fell due by now: held deliveries past their ack timeout end (redelivered
    /// after their backoff, or dead-lettered), released messages past their backoff become
    /// ready. Returns whom to wake (after unlocking), if anything fell due.
    pub(super) fn expire(
        &self,
        topic: &TopicCore<T>,
        state: &mut GroupState,
        ticks: &mut Ticks<'_>,
    ) -> Option<Woken> {
        let mut woken = Woken::none();
        let mut moved = false;
        for p in 0..state.parts.len() {
            let part = &state.parts[p];
            if part.timeouts.next().is_none() && part.waiting.is_empty() && part.delayed.is_none() {
                continue;
            }
            let now = ticks.get();
            let part = &mut state.parts[p];
            if part.delayed.is_some_and(|at| at <= now) {
                part.delayed = None;
                moved = true;
            }
            for offset in state.parts[p].timed_out(now) {
                let part = &mut state.parts[p];
                if let Some(pending) = part.pending.get_mut(&offset) {
                    pending.deadline = None;
                }
                part.timeout_went_stale();
                let partition = p as u32;
                woken.join(self.end_delivery(
                    topic,
                    state,
                    partition,
                    offset,
                    None,
                    Why::Timeout,
                    ticks,
                ));
                moved = true;
            }
            let part = &mut state.parts[p];
            while let Some(&(at, offset)) = part.waiting.first() {
                if at > now {
                    break;
                }
                part.waiting.pop_first();
                if let Some(pending) = part.pending.get_mut(&offset) {
                    pending.retry_at = None;
                    part.ready.insert(offset);
                }
                moved = true;
            }
        }
        if !moved {
            return None;
        }
        woken.join(state.waiters.take());
        Some(woken)
    }

    /// Fires what fell due (a clock advance, a wait for idle), with nobody looking.
    pub(crate) fn expire_now(&self, topic: &TopicCore<T>) {
        let mut ticks = Ticks::new(&topic.context.clock);
        let mut state = self.state.lock();
        if state.deleted {
            return;
        }
        let woken = self.expire(topic, &mut state, &mut ticks);
        drop(state);
        if let Some(woken) = woken {
            woken.wake();
        }
    }

    /// Moves `offset` to the dead-letter queue, and the group past it: the dead letter and
    /// the group's new position ride one commit. `None` (and nothing changed) if there is no
    /// dead-letter queue yet or the message cannot be copied (trimmed, not readable now, or its
    /// payload does not survive the codec): it is then redelivered instead (a trimmed one is
    /// reported skipped).
    fn dead_letter(
        &self,
        topic: &TopicCore<T>,
        part: &mut Part,
        partition: u32,
        offset: u64,
        count: u32,
        why: Why,
    ) -> Option<Woken> {
        let dlq = self.dead_letter.get()?;
        let mut log = topic.partitions[partition as usize].lock();
        // Retained messages only (`stored` checks the base): one that retention trimmed may
        // still be in the store's read cache, but it is gone; it is reported skipped instead.
        let stored = log.stored(offset)?;
        // The copy runs the payload's codec (the user's code): not under the partition's lock,
        // which producers take. The group's lock stays held, so the group cannot change.
        drop(log);
        let original = stored.get();
        let meta = original.entry.meta.as_deref();
        let mut headers = meta.map_or_else(Headers::new, |m| m.headers.clone());
        headers.push_dead_letter(
            &format!("{}/{}", topic.name, self.name),
            why.header(),
            count,
        );
        let key = meta.and_then(|m| m.key.clone());
        // The log keeps its message; the dead letter is a copy, made through the codec (a
        // payload type need not be `Clone`).
        let (payload, body) =
            (self.copier)(topic, &original.entry.payload, key.as_deref(), &headers)?;
        let (ts, size) = (original.ts, original.entry.size);
        let entry = Entry {
            payload,
            meta: Some(Box::new(Meta {
                key,
                headers,
                timing: Timing::default(),
            })),
            size,
        };
        drop(stored);
        part.remove(offset);
        let position = part.first_unacked();
        let moved = position != part.position;
        let stored_position =
            moved.then_some((topic.name.as_str(), self.name.as_str(), partition, position));
        topic.context.idle.moved();
        dlq.push_group_dead_letter(ts, entry, &body, stored_position);
        #[allow(unused_mut)] // an event joins it with the feature `tracing`
        let mut woken = if moved {
            let mut log = topic.partitions[partition as usize].lock();
            part.moved_to(&mut log, topic, position)
        } else {
            Woken::none()
        };
        observe::traced! {
            let names = (topic.name.clone(), self.name.clone(), dlq.name.clone());
            woken.then(move || {
                let (topic, group, dead_letter) = names;
                observe::event!(
                    "embus::topic",
                    INFO,
                    topic = topic.as_str(),
                    group = group.as_str(),
                    partition,
                    offset,
                    delivery_count = count,
                    reason = why.header(),
                    dead_letter = dead_letter.as_str(),
                    "dead_letter"
                );
            });
        }
        Some(woken)
    }
}

impl<T: Payload> Group<T> {
    /// Messages retained or pending that the group has not acked.
    pub(crate) fn behind(&self, topic: &TopicCore<T>) -> u64 {
        let state = self.state.lock();
        state
            .parts
            .iter()
            .zip(topic.partitions.iter())
            .map(|(part, log)| topic.retained_after(log, part.first_unacked()))
            .sum()
    }

    /// Deletes the group: members are told, producers it held are released, and its stored
    /// positions go (the caller forgets its declaration).
    pub(crate) fn delete(&self, topic: &TopicCore<T>) {
        let mut state = self.state.lock();
        state.deleted = true;
        // Before the cursors go: retention may trim what they held only once this is sent
        // (the writer trims the file to floors whose causes it holds; `store::redb::writer`).
        topic.context.store.forget_group(&topic.name, &self.name);
        let mut woken = state.waiters.take();
        for (part, log) in state.parts.iter().zip(topic.partitions.iter()) {
            let mut log = log.lock();
            woken.join(log.remove_group_cursor(part.cursor));
            // Its members may wait on the partition: they must look (and learn).
            woken.join(log.readers.take());
            if topic.limits.interest {
                woken.join(log.trim_acked());
            }
        }
        drop(state);
        woken.wake();
        topic.context.idle.notify();
    }

    /// Moves the group to `start` in every partition, forgetting its deliveries; fails with
    /// [`Error::GroupBusy`] while a member is connected.
    pub(crate) fn reset(&self, topic: &TopicCore<T>, start: Start) -> Result<(), Error> {
        let mut state = self.state.lock();
        if state.deleted {
            // Deleted since it was looked up: its positions are forgotten, and stay so.
            return Err(Error::NoSuchGroup {
                topic: topic.name.clone(),
                group: self.name.clone(),
            });
        }
        if !state.members.is_empty() {
            return Err(Error::GroupBusy {
                topic: topic.name.clone(),
                group: self.name.clone(),
            });
        }
        let mut woken = Woken::none();
        for (p, (part, log)) in state
            .parts
            .iter_mut()
            .zip(topic.partitions.iter())
            .enumerate()
        {
            let mut log = log.lock();
            let at = topic.start_offset(&mut log, start);
            // The kept acks go no later than the position moves back (first: stored in the
            // same commit or an earlier one), so a crash never skips a message the reset
            // replays.
            if !part.done.is_empty() {
                topic.context.store.progress(Progress::GroupAckedBelow {
                    topic: &topic.name,
                    group: &self.name,
                    partition: p as u32,
                    below: u64::MAX,
                });
            }
            part.restart(at);
            topic.context.store.progress(Progress::GroupPosition {
                topic: &topic.name,
                group: &self.name,
                partition: p as u32,
                offset: at,
            });
            woken.join(part.moved_to(&mut log, topic, at));
        }
        drop(state);
        woken.wake();
        topic.context.idle.notify();
        Ok(())
    }
}

//! Retention: what a partition's log may trim (by count, bytes, age or interest), and whether
//! a message has room (`Block`), appending it if it has. Staged records (durable mode) keep
//! their room without trimming until published, so the store never deletes a row that only a
//! record it may still lose justifies.

use super::Log;
use crate::engine::notify::Woken;
use crate::engine::sync::Ordering;
use crate::options::{Overflow, TopicOptions};
use crate::record::{Entry, Nanos};

/// Retention limits in the engine's units.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) messages: Option<u64>,
    pub(crate) bytes: Option<u64>,
    pub(crate) age: Option<Nanos>,
    /// `Overflow::Block`: the topic's default for its plain subscribers (each cursor says
    /// whether it blocks).
    pub(crate) block: bool,
    /// Retention by interest: trim what every group acked.
    pub(crate) interest: bool,
}

impl Limits {
    pub(crate) fn new(options: &TopicOptions) -> Self {
        let r = options.retention_limits();
        Self {
            messages: r.max_messages(),
            bytes: r.max_bytes(),
            age: r
                .max_age()
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            block: options.overflow_policy() == Overflow::Block,
            interest: options.is_retention_by_interest(),
        }
    }
}

/// Whether `held` messages of `bytes` bytes, plus the `incoming` one (of that many bytes), are
/// over `limits`. The incoming message may exceed the byte limit alone (an empty log takes it).
fn over(limits: &Limits, held: u64, bytes: u64, incoming: Option<u32>) -> bool {
    let (count, size) = incoming.map_or((0, 0), |size| (1, u64::from(size)));
    let over_count = limits.messages.is_some_and(|max| held + count > max);
    let over_bytes = limits
        .bytes
        .is_some_and(|max| held > 0 && bytes + size > max);
    over_count || over_bytes
}

impl<T> Log<T> {
    /// Whether the oldest message may be trimmed now.
    fn can_trim(&self) -> bool {
        self.can_trim_at(self.base)
    }

    /// Whether the messages up to `offset` may be trimmed now (every blocking reader is past
    /// it). Reads the cursors only when `offset` reaches the cached floor: a "yes" below it
    /// stays true, and every "no" comes from the cursors themselves, so a producer's re-check
    /// after registering to wait for room sees every move a reader made before it.
    fn can_trim_at(&self, offset: u64) -> bool {
        offset < self.end
            && (self.blocking == 0 || offset < self.floor.get() || {
                let floor = self
                    .cursors
                    .iter()
                    .flatten()
                    .filter(|c| c.blocks)
                    .map(|c| c.at.load(Ordering::SeqCst))
                    .min()
                    .unwrap_or(u64::MAX);
                self.floor.set(floor);
                offset < floor
            })
    }

    /// A blocking cursor is at `position` now (added, or moved under the lock, maybe back).
    pub(super) fn lower_floor(&self, position: u64) {
        self.floor.set(self.floor.get().min(position));
    }

    /// Retention by interest: trims what every group has acked (nothing without a group).
    /// Returns the producers to wake.
    pub(crate) fn trim_acked(&mut self) -> Woken {
        if self.groups == 0 {
            return Woken::none();
        }
        let mut trimmed = false;
        while self.can_trim()
            && self
                .cursors
                .iter()
                .flatten()
                .filter(|c| c.group)
                .all(|c| c.at.load(Ordering::SeqCst) > self.base)
        {
            self.pop();
            trimmed = true;
        }
        if trimmed {
            self.take_writers()
        } else {
            Woken::none()
        }
    }

    /// Trims what retention allows, making room for one more message of `size` bytes when
    /// `incoming` is set (it is pushed next, under this lock). Returns whether that room exists
    /// (it may not under `Block`).
    ///
    /// Staged records (durable mode) trim nothing here: until their commit, nothing they
    /// would push out is trimmed, so the store never deletes a row that only a record it may
    /// still lose justifies. They trim when published; [`has_room`](Self::has_room) keeps
    /// their room under `Block`.
    pub(crate) fn trim(&mut self, limits: &Limits, now: Nanos, incoming: Option<u32>) -> bool {
        if let Some(age) = limits.age {
            while self.can_trim()
                && self
                    .meta(self.base)
                    .is_some_and(|(ts, _)| ts.saturating_add(age) <= now)
            {
                self.pop();
            }
        }
        loop {
            if !over(limits, self.end - self.base, self.bytes, incoming) {
                return true;
            }
            if !self.can_trim() {
                return false;
            }
            self.pop();
        }
    }

    /// Appends `entry` if it has room now (as [`has_room`](Self::has_room) then
    /// [`append`](Self::append)), or hands it back.
    #[inline]
    pub(crate) fn try_append(
        &mut self,
        limits: &Limits,
        now: Nanos,
        entry: Entry<T>,
    ) -> Result<(u64, Woken), Entry<T>> {
        // No byte or age limit and nothing staged (the default retention, on every send): the
        // count alone decides. Under it, push; at it, pop the oldest if every blocking reader
        // is past it (`trim`'s rule), then push; over it (possible only after staged records
        // were published), the general path below.
        let held = self.end - self.base;
        if limits.bytes.is_none() && limits.age.is_none() && self.staged.is_empty() {
            match limits.messages {
                None => return Ok(self.push(now, entry)),
                Some(max) if held < max => return Ok(self.push(now, entry)),
                Some(max) if held == max => {
                    if !self.can_trim() {
                        return Err(entry);
                    }
                    self.pop();
                    return Ok(self.push(now, entry));
                }
                Some(_) => {} // over the limit: the general path trims down to it
            }
        }
        // With an age limit too, still no bytes, held to the count and nothing staged: `trim`
        // drops what expired, then pops at most one for the count, and only if it may, so one
        // pass decides and trims where `has_room` and `append` would run the checks twice.
        if limits.bytes.is_none()
            && self.staged.is_empty()
            && limits.messages.is_none_or(|max| held <= max)
        {
            return if self.trim(limits, now, Some(entry.size)) {
                Ok(self.push(now, entry))
            } else {
                Err(entry)
            };
        }
        if self.has_room(limits, now, entry.size) {
            Ok(self.append(limits, now, entry))
        } else {
            Err(entry)
        }
    }

    /// Trims what retention allows now, then says whether one more message of `size` bytes
    /// would fit beside the staged records (whose room is kept under `Block`) once retention
    /// trims what it may. Trims nothing for them: publishing does (see [`trim`](Self::trim)).
    pub(crate) fn has_room(&mut self, limits: &Limits, now: Nanos, size: u32) -> bool {
        self.trim(limits, now, None);
        // Under `Lag`, staged records take nothing from a newcomer: they trim when published.
        let (staged, staged_bytes) = if self.blocking > 0 {
            (self.staged.len() as u64, self.staged_bytes)
        } else {
            (0, 0)
        };
        let (mut at, mut bytes) = (self.base, self.bytes);
        loop {
            if !over(
                limits,
                self.end - at + staged,
                bytes + staged_bytes,
                Some(size),
            ) {
                return true;
            }
            if !self.can_trim_at(at) {
                return false;
            }
            // Sizes count only under a byte limit (as in `pop`).
            if bytes > 0 {
                let freed = self.meta(at).map_or(0, |(_, size)| size);
                bytes = bytes.saturating_sub(u64::from(freed));
            }
            at += 1;
        }
    }
}

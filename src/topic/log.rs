//! `Log`: one partition's in-memory hot tail — offsets, trimming by retention, `Block` or `Lag`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};

use crate::notify::{Waiters, Woken};
use crate::options::{Overflow, TopicOptions};
use crate::record::{Entry, Nanos};

/// A retained message and its timestamp (kept beside the `Arc` so the log can stay monotone and
/// trim by age without touching the entry).
pub(crate) struct Slot<T> {
    pub(crate) ts: Nanos,
    pub(crate) entry: Arc<Entry<T>>,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Self {
            ts: self.ts,
            entry: Arc::clone(&self.entry),
        }
    }
}

/// Retention limits in the engine's units.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) messages: Option<u64>,
    pub(crate) bytes: Option<u64>,
    pub(crate) age: Option<Nanos>,
    /// `Overflow::Block`: never trim what a cursor still needs.
    pub(crate) block: bool,
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
        }
    }
}

/// What a read found.
pub(crate) enum Read {
    /// Messages were handed to the output.
    Got,
    /// The cursor was below the oldest retained message; it now points there.
    Lagged(u64),
    /// Nothing at or after the cursor.
    Empty,
}

/// A partition: its log behind a lock, and its end offset published for lock-free "anything
/// new?" checks by readers.
pub(crate) struct Partition<T> {
    log: Mutex<Log<T>>,
    end: AtomicU64,
}

impl<T> Partition<T> {
    pub(crate) fn new() -> Self {
        Self {
            log: Mutex::new(Log::new()),
            end: AtomicU64::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Log<T>> {
        self.log.lock()
    }

    /// Whether a message at or after `offset` may exist (false means certainly none). A reader
    /// behind the oldest retained message always sees `true`, since `base <= end`.
    pub(crate) fn has_from(&self, offset: u64) -> bool {
        self.end.load(Ordering::Acquire) > offset
    }

    /// Appends under `log`'s lock (after [`Log::trim`] made room) and publishes the new end.
    pub(crate) fn push(&self, log: &mut Log<T>, now: Nanos, entry: Arc<Entry<T>>) -> (u64, Woken) {
        let pushed = log.push(now, entry);
        self.end.store(log.end(), Ordering::Release);
        pushed
    }
}

/// One partition's log: retained messages `base..base + slots.len()`.
pub(crate) struct Log<T> {
    base: u64,
    slots: VecDeque<Slot<T>>,
    bytes: u64,
    last_ts: Nanos,
    /// Positions of readers that `Block` must wait for: subscribers' next offsets and groups'
    /// first unacked offsets. `None` marks a free slot.
    cursors: Vec<Option<u64>>,
    /// Consumers waiting for a message.
    pub(crate) readers: Waiters,
    /// Producers waiting for room (`Block`).
    pub(crate) writers: Waiters,
}

impl<T> Log<T> {
    pub(crate) fn new() -> Self {
        Self {
            base: 0,
            slots: VecDeque::new(),
            bytes: 0,
            last_ts: 0,
            cursors: Vec::new(),
            readers: Waiters::default(),
            writers: Waiters::default(),
        }
    }

    /// The oldest retained offset.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// The offset the next message will get.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn get(&self, offset: u64) -> Option<&Slot<T>> {
        let index = usize::try_from(offset.checked_sub(self.base)?).ok()?;
        self.slots.get(index)
    }

    /// The first offset whose timestamp is at or after `ts` (timestamps are monotone).
    pub(crate) fn seek(&self, ts: Nanos) -> u64 {
        self.base + self.slots.partition_point(|s| s.ts < ts) as u64
    }

    /// Whether the oldest message may be trimmed now.
    fn can_trim(&self, limits: &Limits) -> bool {
        !self.slots.is_empty()
            && (!limits.block || self.cursors.iter().flatten().all(|&c| c > self.base))
    }

    fn pop(&mut self) {
        if let Some(slot) = self.slots.pop_front() {
            self.base += 1;
            self.bytes -= u64::from(slot.entry.size);
        }
    }

    /// Trims what retention allows, making room for one more message of `size` bytes when
    /// `incoming` is set. Returns whether that room exists (it may not under `Block`).
    pub(crate) fn trim(&mut self, limits: &Limits, now: Nanos, incoming: Option<u32>) -> bool {
        if let Some(age) = limits.age {
            while self
                .slots
                .front()
                .is_some_and(|s| s.ts.saturating_add(age) <= now)
                && self.can_trim(limits)
            {
                self.pop();
            }
        }
        let (count, size) = incoming.map_or((0, 0), |size| (1, u64::from(size)));
        loop {
            let len = self.slots.len() as u64;
            let over_count = limits.messages.is_some_and(|max| len + count > max);
            let over_bytes = limits
                .bytes
                .is_some_and(|max| len > 0 && self.bytes + size > max);
            if !over_count && !over_bytes {
                return true;
            }
            if !self.can_trim(limits) {
                return false;
            }
            self.pop();
        }
    }

    /// Appends a message (after [`trim`](Self::trim) made room) and returns its offset and the
    /// readers to wake.
    fn push(&mut self, now: Nanos, entry: Arc<Entry<T>>) -> (u64, Woken) {
        let offset = self.end();
        self.last_ts = self.last_ts.max(now);
        self.bytes += u64::from(entry.size);
        self.slots.push_back(Slot {
            ts: self.last_ts,
            entry,
        });
        let woken = if self.readers.is_empty() {
            Woken::none()
        } else {
            self.readers.take()
        };
        (offset, woken)
    }

    /// Copies up to `max` messages from `*next` on into `out` and advances `*next`.
    pub(crate) fn read(
        &self,
        next: &mut u64,
        max: usize,
        mut out: impl FnMut(u64, &Slot<T>),
    ) -> Read {
        if *next < self.base {
            let skipped = self.base - *next;
            *next = self.base;
            return Read::Lagged(skipped);
        }
        let Some(start) = self.get(*next).map(|_| (*next - self.base) as usize) else {
            return Read::Empty;
        };
        let n = max.min(self.slots.len() - start);
        for (i, slot) in self.slots.range(start..start + n).enumerate() {
            out(*next + i as u64, slot);
        }
        *next += n as u64;
        Read::Got
    }

    pub(crate) fn add_cursor(&mut self, position: u64) -> usize {
        if let Some(free) = self.cursors.iter().position(Option::is_none) {
            self.cursors[free] = Some(position);
            free
        } else {
            self.cursors.push(Some(position));
            self.cursors.len() - 1
        }
    }

    /// Moves a cursor; returns the producers to wake if one may now have room.
    pub(crate) fn set_cursor(&mut self, cursor: usize, position: u64) -> Woken {
        if let Some(c) = self.cursors.get_mut(cursor) {
            *c = Some(position);
        }
        if self.writers.is_empty() {
            Woken::none()
        } else {
            self.writers.take()
        }
    }

    pub(crate) fn remove_cursor(&mut self, cursor: usize) -> Woken {
        if let Some(c) = self.cursors.get_mut(cursor) {
            *c = None;
        }
        if self.writers.is_empty() {
            Woken::none()
        } else {
            self.writers.take()
        }
    }

    /// Every waiter, for close and clock advances.
    pub(crate) fn take_all_waiters(&mut self) -> Woken {
        let mut woken = self.readers.take();
        woken.join(self.writers.take());
        woken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u32) -> Arc<Entry<u64>> {
        Arc::new(Entry {
            payload: 0,
            meta: None,
            size,
        })
    }

    fn limits(messages: Option<u64>, bytes: Option<u64>, block: bool) -> Limits {
        Limits {
            messages,
            bytes,
            age: None,
            block,
        }
    }

    #[test]
    fn count_retention_trims_oldest_and_keeps_offsets() {
        let mut log = Log::new();
        let l = limits(Some(3), None, false);
        for i in 0..5 {
            assert!(log.trim(&l, 0, Some(0)));
            assert_eq!(log.push(0, entry(0)).0, i);
        }
        assert_eq!((log.base(), log.end(), log.len()), (2, 5, 3));
    }

    #[test]
    fn byte_retention_counts_sizes() {
        let mut log = Log::new();
        let l = limits(None, Some(10), false);
        for _ in 0..3 {
            assert!(log.trim(&l, 0, Some(4)));
            let _ = log.push(0, entry(4));
        }
        // 4 + 4 fit in 10; the third needed the first gone.
        assert_eq!((log.base(), log.len(), log.bytes), (1, 2, 8));
    }

    #[test]
    fn block_keeps_what_a_cursor_needs() {
        let mut log = Log::new();
        let l = limits(Some(2), None, true);
        let c = log.add_cursor(0);
        for _ in 0..2 {
            assert!(log.trim(&l, 0, Some(0)));
            let _ = log.push(0, entry(0));
        }
        assert!(!log.trim(&l, 0, Some(0)), "cursor at 0 holds the log full");
        let _ = log.set_cursor(c, 1);
        assert!(log.trim(&l, 0, Some(0)));
        assert_eq!(log.base(), 1);
    }

    #[test]
    fn read_reports_lag_once_then_continues() {
        let mut log = Log::new();
        let l = limits(Some(2), None, false);
        for _ in 0..4 {
            assert!(log.trim(&l, 0, Some(0)));
            let _ = log.push(0, entry(0));
        }
        let mut next = 0;
        assert!(matches!(
            log.read(&mut next, 10, |_, _| {}),
            Read::Lagged(2)
        ));
        let mut seen = Vec::new();
        assert!(matches!(
            log.read(&mut next, 10, |o, _| seen.push(o)),
            Read::Got
        ));
        assert_eq!(seen, [2, 3]);
        assert!(matches!(log.read(&mut next, 10, |_, _| {}), Read::Empty));
    }

    #[test]
    fn timestamps_stay_monotone_and_seekable() {
        let mut log = Log::new();
        let l = limits(None, None, false);
        for now in [10, 5, 20] {
            assert!(log.trim(&l, now, Some(0)));
            let _ = log.push(now, entry(0));
        }
        assert_eq!(
            log.get(1).map(|s| s.ts),
            Some(10),
            "a clock step back does not reorder"
        );
        assert_eq!(log.seek(11), 2);
        assert_eq!(log.seek(0), 0);
    }
}

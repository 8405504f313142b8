//! `Partition`: one partition's in-memory log — segments of write-once slots that readers follow
//! without the lock, offsets (gap-free unless compacted: see [`compact`]), trimming by
//! retention, `Block` or `Lag`.
//!
//! Producers append under the partition's lock: they write the next slot of the tail segment
//! (through its [`Writer`], with plain stores: [`Slots`]) and then publish the new end offset.
//! A reader needs no lock while there are messages: it checks the slot itself in the segment it
//! holds (a set slot is published; an empty one in a segment being appended to is not appended
//! yet), and follows the segment's `next` link. It loads the end offset only when its segment
//! cannot tell (none held, a link not set yet, or a segment with gaps: read back from the store
//! or rebuilt by compaction), so the line the producer writes on every message is not the one
//! it reads.
//! Trimming moves the published base; a whole segment is freed once every offset in it is
//! below the base and no reader holds it. Segment links are weak, so a stalled reader pins at
//! most one segment, never the chain after it.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use self::cold::ColdStore;
pub(crate) use self::cold::{Cold, Load, Loader, Row};
use crate::engine::notify::{Wait, Waiters, Woken};
use crate::engine::slot::{Slots, Writer};
use crate::engine::sync::{AtomicBool, AtomicU64, Mutex, MutexGuard, OnceLock, Ordering, Padded};
use crate::error::{Error, Undecodable};
use crate::record::{Entry, Nanos};
use crate::store::Restored;

mod cold;
mod compact;
mod retention;

pub(crate) use self::retention::Limits;

/// Slots per segment: one allocation per this many messages (2 in the loom models, so that a
/// few messages cross a segment's `next` link).
const SEGMENT: u64 = if cfg!(embus_loom) { 2 } else { 128 };

/// A retained message and its (monotone) timestamp.
pub(crate) struct Stored<T> {
    pub(crate) ts: Nanos,
    pub(crate) entry: Entry<T>,
}

/// `SEGMENT` consecutive offsets from `start`. On a cache line of its own: readers change the
/// `Arc` counts in front of it on every message they hold, and the producer reads `slots` on
/// every message it appends (128-byte alignment measured no faster, and costs another byte
/// per retained message).
#[repr(align(64))]
pub(crate) struct Segment<T> {
    start: u64,
    slots: Slots<Stored<T>>,
    next: OnceLock<Weak<Segment<T>>>,
    /// Written in order by the log's appends, so a slot not set is one not appended yet;
    /// `false` for segments read back from the store or rebuilt by compaction, which have gaps.
    appended: bool,
}

impl<T> Segment<T> {
    /// A detached segment holding messages read back from the store (in offset order).
    fn cold(start: u64, rows: Vec<(u64, Stored<T>)>) -> Self {
        let (mut segment, mut writer) = Self::new(start);
        segment.appended = false;
        for (offset, stored) in rows {
            if let Some(index) = offset
                .checked_sub(start)
                .and_then(|i| usize::try_from(i).ok())
            {
                let _ = segment.slots.write(&mut writer, index, stored);
            }
        }
        segment
    }

    /// An empty segment and the writer of its slots.
    fn new(start: u64) -> (Self, Writer) {
        let (slots, writer) = Slots::new(SEGMENT as usize);
        let segment = Self {
            start,
            slots,
            next: OnceLock::new(),
            appended: true,
        };
        (segment, writer)
    }

    fn get(&self, offset: u64) -> Option<&Stored<T>> {
        let index = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.slots.get(index)
    }
}

/// A shared handle on one published message (what a topic `Message` holds).
pub(crate) struct StoredRef<T> {
    segment: Arc<Segment<T>>,
    offset: u64,
}

impl<T> StoredRef<T> {
    pub(crate) fn get(&self) -> &Stored<T> {
        match self.segment.get(self.offset) {
            Some(stored) => stored,
            None => unreachable!("a StoredRef points at a published slot"),
        }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }
}

/// What the log publishes for lock-free readers, each on lines of its own: the producer writes
/// `end` on every message (and `base` once per up to 64 trims: see [`Log::pop`]), and readers
/// check `writers_waiting` on every message.
#[derive(Default)]
struct Published {
    /// Offsets below this are set (slots are written before `end` moves past them).
    end: Padded<AtomicU64>,
    /// Offsets below this may be trimmed: at or above the log's base, raised ahead of it (see
    /// [`Log::pop`]), so that this line changes once per many trims, not on every send.
    base: Padded<AtomicU64>,
    /// A producer waits for room (`Block`): readers that move their cursor must wake it.
    writers_waiting: Padded<AtomicBool>,
}

/// One partition: the log behind its lock, and what readers may look at without it. The lock
/// has lines of its own: lock-free readers load `published` on every look, and a producer
/// takes the lock on every send.
pub(crate) struct Partition<T> {
    log: Padded<Mutex<Log<T>>>,
    published: Arc<Published>,
}

/// Trims between two stores of the published base, at most (see [`Log::pop`]).
const BASE_AHEAD: u64 = 64;

/// Durable mode: messages per partition kept in memory (whole segments beyond it are dropped,
/// and read back from the store if a reader needs them).
const HOT_LIMIT: u64 = 64 * SEGMENT;

/// One partition's log: retained offsets `base..end`; those below `hot` are only in the store.
pub(crate) struct Log<T> {
    base: u64,
    hot: u64,
    end: u64,
    cold_store: Option<ColdStore<T>>,
    /// Durable mode: at most about this many messages stay in memory; older retained ones are
    /// read back from the store.
    hot_limit: Option<u64>,
    /// Records stored ahead of publishing (durable mode): offsets `end..end + staged.len()`;
    /// `None` once taken back after a failed commit.
    staged: VecDeque<Option<Stored<T>>>,
    staged_bytes: u64,
    staged_ts: Nanos,
    /// Segments covering at least `base..end`, oldest first.
    segments: VecDeque<Arc<Segment<T>>>,
    /// The writer of the newest segment's slots, and the offset after that segment's last
    /// (kept here, so that appending reads nothing a reader writes). While that offset is past
    /// the end, the newest segment is the last in `segments`; once the end reaches it, the
    /// segment may have left (trimmed or cooled) and the next append starts a new one.
    tail: Option<(Writer, u64)>,
    bytes: u64,
    last_ts: Nanos,
    published: Arc<Published>,
    /// Positions of readers: subscribers' next offsets and groups' first unacked offsets.
    /// `None` marks a free slot.
    cursors: Vec<Option<Cursor>>,
    /// How many cursors block (`Overflow::Block`), and how many are groups'.
    blocking: usize,
    /// No blocking cursor is below this (a cached bound: lock-free readers only move their
    /// cursors forward; cursors moved or added under the lock lower it), so retention reads
    /// the cursors, lines the readers write, only on reaching it.
    floor: std::cell::Cell<u64>,
    groups: usize,
    /// Consumers waiting for a message.
    pub(crate) readers: Waiters,
    /// Producers waiting for room (`Block`).
    pub(crate) writers: Waiters,
    /// Compacted topics: each key's latest offset (see [`compact`]).
    compaction: Option<Box<compact::Compactor>>,
}

/// What a read found.
pub(crate) enum Read<T> {
    Got(StoredRef<T>),
    /// The reader was below the oldest retained message; it now points there.
    Lagged(u64),
    /// Nothing at or after the reader's position.
    Empty,
    /// The record at the reader's position is damaged or not a `T`; the reader moved past it.
    Undecodable(Box<Undecodable>),
    /// The store could not read the reader's next message now; the reader did not move.
    Failed(Error),
    /// The next message is delayed until this wall-clock time; the reader waits there.
    NotYet(Nanos),
}

/// When `stored` is due, if that is later than `now()` (asked only of a delayed record: a
/// plain one costs one branch on its null `meta`).
pub(crate) fn not_due<T>(stored: &Stored<T>, now: impl FnOnce() -> Nanos) -> Option<Nanos> {
    stored.entry.meta.as_ref()?;
    let due = stored.entry.timing().due_at(stored.ts)?;
    (due > now()).then_some(due)
}

/// Whether `stored` waits for a due time (decided under the lock, with the clock).
fn is_delayed<T>(stored: &Stored<T>) -> bool {
    let meta = stored.entry.meta.as_ref();
    meta.is_some_and(|m| m.timing.due.is_some())
}

/// A reader's position as retention sees it.
struct Cursor {
    at: Arc<AtomicU64>,
    /// Retention never trims past it (`Overflow::Block`).
    blocks: bool,
    /// A consumer group's (retention by interest counts these).
    group: bool,
    /// The subscriber it belongs to (its consumer id; 0 for a group's), for stats.
    owner: u64,
}

/// A reader's position in one partition (a subscriber has one per partition).
pub(crate) struct Reader<T> {
    next: u64,
    segment: Option<Arc<Segment<T>>>,
    cursor: Arc<AtomicU64>,
    cursor_slot: usize,
    /// Retention waits for it (`Overflow::Block`).
    blocks: bool,
}

impl<T> Reader<T> {
    pub(crate) fn next(&self) -> u64 {
        self.next
    }
}

impl<T> Partition<T> {
    #[cfg(test)]
    fn new() -> Self {
        Self::restored(&Restored::default(), None, false)
    }

    /// A partition whose retained offsets `base..end` (of `bytes` counted bytes) are in the
    /// store, read back through `load` (durable mode, which keeps only a tail in memory);
    /// `indexed`: retention needs the timestamps and sizes of what leaves memory.
    pub(crate) fn restored(restored: &Restored, load: Option<Loader<T>>, indexed: bool) -> Self {
        let Restored {
            base,
            end,
            bytes,
            last_ts,
        } = *restored;
        let published = Arc::new(Published::default());
        published.base.store(base, Ordering::Relaxed);
        published.end.store(end, Ordering::Relaxed);
        let log = Log {
            base,
            hot: end,
            end,
            hot_limit: load.as_ref().map(|_| HOT_LIMIT),
            cold_store: load.map(|load| ColdStore::new(load, indexed)),
            staged: VecDeque::new(),
            staged_bytes: 0,
            staged_ts: 0,
            segments: VecDeque::new(),
            tail: None,
            bytes,
            last_ts,
            published: Arc::clone(&published),
            cursors: Vec::new(),
            compaction: None,
            blocking: 0,
            floor: std::cell::Cell::new(0),
            groups: 0,
            readers: Waiters::default(),
            writers: Waiters::default(),
        };
        Self {
            log: Padded(Mutex::new(log)),
            published,
        }
    }

    /// Makes this partition's log compacted (a compacted topic: see [`compact`]).
    pub(crate) fn compacted(self, on: bool) -> Self {
        if on {
            let mut log = self.log.lock();
            log.compaction = Some(Box::default());
        }
        self
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Log<T>> {
        self.log.lock()
    }

    /// Registers subscriber `owner`'s reader at `position` (under the lock); retention waits
    /// for it if it `blocks`.
    pub(crate) fn reader(
        &self,
        log: &mut Log<T>,
        position: u64,
        blocks: bool,
        owner: u64,
    ) -> Reader<T> {
        let (cursor_slot, cursor) = log.add_cursor(position, blocks, false, owner);
        Reader {
            next: position,
            segment: None,
            cursor,
            cursor_slot,
            blocks,
        }
    }

    /// Drops a reader's cursor; returns the producers to wake.
    pub(crate) fn remove_reader(&self, log: &mut Log<T>, reader: &Reader<T>) -> Woken {
        log.remove_cursor(reader.cursor_slot)
    }

    /// Reads the next message without the lock, if that can be decided without it: `None`
    /// means take the lock and use [`read_locked`](Self::read_locked).
    #[inline]
    pub(crate) fn read_fast(&self, reader: &mut Reader<T>) -> Option<Read<T>> {
        // Retention may trim past a reader that does not block it (`Overflow::Lag`): near the
        // base, the lock decides.
        if !reader.blocks && reader.next < self.published.base.load(Ordering::Acquire) {
            return None;
        }
        let delayed = match Self::held_slot(reader) {
            Some(Some(stored)) => is_delayed(stored),
            // Not appended yet. Deciding this from the slot alone keeps the reader off the line
            // of `end`, which the producer writes on every message.
            Some(None) => return Some(Read::Empty),
            None => {
                // Nothing known: empty, unless the end is past it now, which makes the segment
                // link and slot visible (`push` sets them before it moves the end).
                if reader.next >= self.published.end.load(Ordering::Acquire) {
                    return Some(Read::Empty);
                }
                is_delayed(Self::held_slot(reader)??)
            }
        };
        if delayed {
            return None; // decided under the lock, with the time
        }
        let got = StoredRef {
            segment: Arc::clone(reader.segment.as_ref()?),
            offset: reader.next,
        };
        self.advance(reader);
        Some(Read::Got(got))
    }

    /// The slot of `reader`'s next offset, if it is in the segment the reader holds or the one
    /// linked after it (which the reader then holds): `Some(Some)` if it is set, `Some(None)`
    /// if it is not appended yet (an appended segment's slot not set), `None` if the reader
    /// cannot tell. A set slot is published: only `push` sets slots, and it publishes them.
    #[inline]
    fn held_slot(reader: &mut Reader<T>) -> Option<Option<&Stored<T>>> {
        let segment = reader.segment.as_ref()?;
        if reader.next >= segment.start + SEGMENT {
            let next = segment.next.get()?.upgrade()?;
            reader.segment = Some(next);
        }
        let segment = reader.segment.as_ref()?;
        match segment.get(reader.next) {
            Some(stored) => Some(Some(stored)),
            None if segment.appended && reader.next >= segment.start => Some(None),
            None => None,
        }
    }

    /// Reads the next message under the lock, registering waiter `id` as `wait` says when there
    /// is none. `now` is the wall-clock time, asked only of a delayed record.
    #[inline]
    pub(crate) fn read_locked(
        &self,
        log: &mut Log<T>,
        reader: &mut Reader<T>,
        id: u64,
        wait: Wait<'_>,
        now: impl FnOnce() -> Nanos,
    ) -> (Read<T>, Woken) {
        if reader.next < log.base {
            let skipped = log.base - reader.next;
            reader.next = log.base;
            reader.segment = None;
            return (
                Read::Lagged(skipped),
                log.set_cursor(reader.cursor_slot, reader.next),
            );
        }
        if log.compaction.is_some() {
            Self::skip_compacted(log, reader);
        }
        if reader.next < log.hot {
            match log.cold(reader.next) {
                Cold::Got(_) => {}
                Cold::Undecodable(undecodable) => {
                    // Damaged in the store, or not a `T`: the reader gets it and moves on.
                    reader.next += 1;
                    reader.segment = None;
                    return (
                        Read::Undecodable(undecodable),
                        log.set_cursor(reader.cursor_slot, reader.next),
                    );
                }
                Cold::Failed(e) => {
                    // The store cannot be read now: skip nothing; the caller retries (and a
                    // send or close wakes it too).
                    log.readers.register(id, wait);
                    return (Read::Failed(e), Woken::none());
                }
            }
        }
        let got = log.stored(reader.next);
        if let Some(due) = got.as_ref().and_then(|got| not_due(got.get(), now)) {
            log.readers.register(id, wait);
            return (Read::NotYet(due), Woken::none());
        }
        match got {
            Some(got) => {
                reader.segment = Some(Arc::clone(&got.segment));
                reader.next += 1;
                (
                    Read::Got(got),
                    log.set_cursor(reader.cursor_slot, reader.next),
                )
            }
            None => {
                log.readers.register(id, wait);
                (Read::Empty, Woken::none())
            }
        }
    }

    /// Compacted away: the reader moves on to the next offset there is. Out of line, so that
    /// the readers of other topics keep their code as it was.
    #[cold]
    #[inline(never)]
    fn skip_compacted(log: &mut Log<T>, reader: &mut Reader<T>) {
        let next = log.skip_gap(reader.next);
        if next != reader.next {
            reader.next = next;
            reader.segment = None;
        }
    }

    /// Moves a lock-free reader's cursor, waking producers that wait for room.
    fn advance(&self, reader: &mut Reader<T>) {
        reader.next += 1;
        reader.cursor.store(reader.next, Ordering::SeqCst);
        // Pairs with `Log::wait_for_room`: either it sees the new cursor or we see its flag.
        if self.published.writers_waiting.load(Ordering::SeqCst) {
            let woken = self.lock().take_writers();
            woken.wake();
        }
    }
}

impl<T> Log<T> {
    /// The oldest retained offset.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// The offset the next message will get.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    pub(crate) fn len(&self) -> usize {
        usize::try_from(self.end - self.base).unwrap_or(usize::MAX)
    }

    /// Retained bytes as byte retention counts them (0 without a byte limit).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Each plain subscriber's position here: (its consumer id, next offset, whether it
    /// blocks retention).
    pub(crate) fn subscriber_positions(&self) -> impl Iterator<Item = (u64, u64, bool)> + '_ {
        self.cursors
            .iter()
            .flatten()
            .filter(|c| !c.group)
            .map(|c| (c.owner, c.at.load(Ordering::Acquire), c.blocks))
    }

    /// The first offset held in memory; `base..hot` are read from the store.
    pub(crate) fn hot(&self) -> u64 {
        self.hot
    }

    /// A handle on the retained message at `offset` (read from the store below `hot`).
    pub(crate) fn stored(&mut self, offset: u64) -> Option<StoredRef<T>> {
        if offset < self.base || offset >= self.end {
            return None;
        }
        if offset < self.hot {
            return match self.cold(offset) {
                Cold::Got(got) => Some(got),
                Cold::Undecodable(_) | Cold::Failed(_) => None,
            };
        }
        let segment = self.segment_of(offset)?;
        segment.get(offset)?;
        Some(StoredRef {
            segment: Arc::clone(segment),
            offset,
        })
    }

    fn get(&self, offset: u64) -> Option<&Stored<T>> {
        self.segment_of(offset)?.get(offset)
    }

    #[inline]
    fn pop(&mut self) {
        // Sizes count only under a byte limit: without one they are all 0.
        if self.bytes > 0 {
            let size = self.meta(self.base).map_or(0, |(_, size)| size);
            self.bytes = self.bytes.saturating_sub(u64::from(size));
        }
        self.base += 1;
        self.hot = self.hot.max(self.base);
        if let Some(cold) = self.cold_store.as_mut() {
            cold.trimmed(self.base);
        }
        while self
            .segments
            .front()
            .is_some_and(|s| s.start + SEGMENT <= self.base)
        {
            self.segments.pop_front();
        }
        // Only this lock's holder stores the published base: its own last store.
        if self.base > self.published.base.load(Ordering::Relaxed) {
            // Announce a bound ahead of the base: readers below it take the lock, which knows
            // the base exactly, and readers past it see this line change once per `ahead`
            // trims. Never more than a quarter of what is retained ahead, so a reader that
            // keeps up stays past it.
            let ahead = ((self.end - self.base) / 4).min(BASE_AHEAD);
            self.published
                .base
                .store(self.base + ahead, Ordering::Release);
        }
    }

    /// Appends a message (after [`trim`](Self::trim) made room) and returns its offset and the
    /// readers to wake.
    #[inline]
    fn push(&mut self, now: Nanos, entry: Entry<T>) -> (u64, Woken) {
        let offset = self.end;
        // Segments leave only once every offset in them is below the end, so the last one
        // holds `offset` while the tail's end is past it.
        if self.tail.as_ref().is_none_or(|(_, end)| offset >= *end) {
            let (segment, writer) = Segment::new(offset);
            let segment = Arc::new(segment);
            if let Some(last) = self.segments.back() {
                let _ = last.next.set(Arc::downgrade(&segment));
            }
            self.segments.push_back(segment);
            self.tail = Some((writer, offset + SEGMENT));
        }
        self.last_ts = self.last_ts.max(now);
        self.bytes += u64::from(entry.size);
        if let Some(compactor) = self.compaction.as_deref_mut() {
            compactor.pushed(&entry, offset);
        }
        let (Some(last), Some((writer, end))) = (self.segments.back(), self.tail.as_mut()) else {
            unreachable!("the last segment holds the end offset");
        };
        let slot = Stored {
            ts: self.last_ts,
            entry,
        };
        // Offsets are handed out once, under the lock, and the last segment is the writer's
        // while its end is past `offset`: the writer is never past it. A slot left empty below
        // the end would stall lock-free readers, so a broken invariant panics here instead.
        let index = (offset + SEGMENT - *end) as usize;
        if last.slots.write(writer, index, slot).is_err() {
            unreachable!("offset {offset} is written once, by the last segment's writer");
        }
        self.end += 1;
        self.published.end.store(self.end, Ordering::Release);
        if let Some(limit) = self.hot_limit {
            self.cool(limit);
        }
        if self.compaction.as_ref().is_some_and(|c| c.due()) {
            self.compact();
        }
        (offset, self.readers.take())
    }

    /// Trims what `entry` pushes out (after [`has_room`](Self::has_room) found its room), then
    /// pushes it.
    pub(crate) fn append(&mut self, limits: &Limits, now: Nanos, entry: Entry<T>) -> (u64, Woken) {
        self.trim(limits, now, Some(entry.size));
        self.push(now, entry)
    }

    /// Drops whole segments beyond the newest `limit` messages from memory (they are stored).
    fn cool(&mut self, limit: u64) {
        while self.end - self.hot > limit + SEGMENT {
            let Some(front) = self.segments.front() else {
                break;
            };
            let next = front.start + SEGMENT;
            if next > self.end {
                break;
            }
            self.hot = self.hot.max(next);
            if let Some(cold) = self.cold_store.as_mut() {
                cold.cooled(front);
            }
            self.segments.pop_front();
        }
    }

    /// Durable mode: keeps a record (whose room [`has_room`](Self::has_room) found) aside until
    /// its commit; returns its offset and timestamp.
    pub(crate) fn stage(&mut self, now: Nanos, entry: Entry<T>) -> (u64, Nanos) {
        let ts = now.max(self.last_ts).max(self.staged_ts);
        self.staged_ts = ts;
        self.staged_bytes += u64::from(entry.size);
        self.staged.push_back(Some(Stored { ts, entry }));
        (self.end + self.staged.len() as u64 - 1, ts)
    }

    /// Whether a staged record may still be published.
    pub(crate) fn has_staged(&self) -> bool {
        self.staged.iter().any(Option::is_some)
    }

    /// Takes a staged record back (its commit failed).
    pub(crate) fn unstage(&mut self, offset: u64) -> Option<Entry<T>> {
        let index = usize::try_from(offset.checked_sub(self.end)?).ok()?;
        let stored = self.staged.get_mut(index)?.take()?;
        self.staged_bytes -= u64::from(stored.entry.size);
        Some(stored.entry)
    }

    /// Takes back the last staged record, `offset`, before anything follows it (a
    /// transaction that did not commit): its offset is handed out again.
    pub(crate) fn retract(&mut self, offset: u64) -> Option<Entry<T>> {
        if offset + 1 != self.end + self.staged.len() as u64 {
            return None;
        }
        let stored = self.staged.pop_back()??;
        self.staged_bytes -= u64::from(stored.entry.size);
        Some(stored.entry)
    }

    /// Publishes the staged records below `upto` (they are committed); returns the readers to
    /// wake.
    pub(crate) fn publish_staged(&mut self, limits: &Limits, upto: u64) -> Woken {
        let mut woken = Woken::none();
        while self.end < upto {
            let Some(Some(stored)) = self.staged.pop_front() else {
                break;
            };
            self.staged_bytes -= u64::from(stored.entry.size);
            // Committed now: it trims what it pushes out (its room was kept when staging).
            let (_, readers) = self.append(limits, stored.ts, stored.entry);
            woken.join(readers);
        }
        // A published record is trimmable now, where a staged one was not: under `Block`, a
        // producer that found only staged records in the way may have room.
        woken.join(self.take_writers());
        woken
    }

    fn add_cursor(
        &mut self,
        position: u64,
        blocks: bool,
        group: bool,
        owner: u64,
    ) -> (usize, Arc<AtomicU64>) {
        let cursor = Arc::new(AtomicU64::new(position));
        if blocks {
            self.lower_floor(position);
        }
        self.blocking += usize::from(blocks);
        self.groups += usize::from(group);
        let slot = match self.cursors.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.cursors.push(None);
                self.cursors.len() - 1
            }
        };
        self.cursors[slot] = Some(Cursor {
            at: Arc::clone(&cursor),
            blocks,
            group,
            owner,
        });
        (slot, cursor)
    }

    /// Registers a group's cursor (moved under the lock); retention waits for it if it
    /// `blocks`.
    pub(crate) fn add_group_cursor(&mut self, position: u64, blocks: bool) -> usize {
        self.add_cursor(position, blocks, true, 0).0
    }

    /// Drops a group's cursor (a deleted group); returns the producers to wake.
    pub(crate) fn remove_group_cursor(&mut self, slot: usize) -> Woken {
        self.remove_cursor(slot)
    }

    /// Moves a cursor; returns the producers to wake if one may now have room.
    pub(crate) fn set_cursor(&mut self, slot: usize, position: u64) -> Woken {
        if let Some(Some(c)) = self.cursors.get(slot) {
            c.at.store(position, Ordering::SeqCst);
            if c.blocks {
                self.lower_floor(position); // it may have moved back
            }
        }
        self.take_writers()
    }

    fn remove_cursor(&mut self, slot: usize) -> Woken {
        if let Some(c) = self.cursors.get_mut(slot).and_then(Option::take) {
            self.blocking -= usize::from(c.blocks);
            self.groups -= usize::from(c.group);
        }
        self.take_writers()
    }

    /// Registers producer `id` as waiting for room: call before re-checking with
    /// [`has_room`](Self::has_room).
    pub(crate) fn wait_for_room(&mut self, id: u64, wait: Wait<'_>) {
        self.writers.register(id, wait);
        self.published.writers_waiting.store(true, Ordering::SeqCst);
    }

    pub(crate) fn take_writers(&mut self) -> Woken {
        self.published
            .writers_waiting
            .store(false, Ordering::SeqCst);
        self.writers.take()
    }

    /// Forgets waiting producer `id`; the flag readers check stays set only while one waits.
    pub(crate) fn remove_writer(&mut self, id: u64) {
        self.writers.remove(id);
        if self.writers.is_empty() {
            self.published
                .writers_waiting
                .store(false, Ordering::SeqCst);
        }
    }

    /// Every waiter, for close and clock advances.
    pub(crate) fn take_all_waiters(&mut self) -> Woken {
        let mut woken = self.readers.take();
        woken.join(self.take_writers());
        woken
    }
}

#[cfg(all(test, embus_loom))]
mod loom_models;
#[cfg(test)]
mod tests;

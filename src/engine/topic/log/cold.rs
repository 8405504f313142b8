//! Retained messages below a partition's in-memory tail (durable mode): read back from the
//! store a chunk at a time, and an index of their timestamps and sizes, so that trimming
//! never reads the store on a producer's path.
//!
//! When whole segments cool (leave memory), the timestamps and counted sizes of their offsets
//! go to the index (12 bytes per offset, at most [`INDEX_LIMIT`] offsets), if retention needs
//! them (a byte or an age limit). Offsets the index lacks (restored by a reopen, or beyond the
//! limit) are read from the stored records' headers, a chunk at a time: no payload is decoded.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Log, SEGMENT, Segment, Stored, StoredRef};
use crate::error::{Error, Undecodable};
use crate::record::Nanos;

/// One stored row read back: the message, or why it cannot be delivered.
pub(crate) type Row<T> = Result<Stored<T>, Box<Undecodable>>;

/// How a partition reads its stored messages back.
pub(crate) trait Load<T>: Send + Sync {
    /// Every offset of `from..to`, in order, with its message or why it cannot be read
    /// (damaged, undecodable, missing). `Err` if the store cannot be read now (closed, I/O,
    /// poisoned): nothing is skipped then.
    fn rows(&self, from: u64, to: u64) -> Result<Vec<(u64, Row<T>)>, Error>;

    /// Timestamps and counted sizes of the offsets of `from..to`, in order, from the records'
    /// headers: no payload is decoded. A damaged record reads as `(0, 0)`: expired and empty,
    /// so it never holds retention up.
    fn heads(&self, from: u64, to: u64) -> Result<Vec<(Nanos, u32)>, Error>;
}

/// A partition's [`Load`].
pub(crate) type Loader<T> = Box<dyn Load<T>>;

/// Offsets whose headers are read at once (trimming, seeking).
const HEAD_CHUNK: u64 = 1024;

/// At most this many offsets in the index (12 bytes each); older ones are read from headers.
const INDEX_LIMIT: usize = 1 << 20;

/// A read below the in-memory tail.
pub(crate) enum Cold<T> {
    Got(StoredRef<T>),
    /// Damaged in the store, or not a `T`: its bytes and where it is.
    Undecodable(Box<Undecodable>),
    /// The store could not be read now (closed, I/O, poisoned).
    Failed(Error),
}

/// Retained messages below the in-memory tail, read from the store in chunks.
pub(super) struct ColdStore<T> {
    load: Loader<T>,
    /// The last chunk read, for readers.
    chunk: Option<Chunk<T>>,
    /// Whether retention needs timestamps and sizes (a byte or an age limit).
    indexed: bool,
    /// Timestamps and sizes of cooled offsets.
    index: Meta,
    /// The last headers read from the store.
    heads: Meta,
}

/// Offsets `segment.start..end` read back: messages in the segment, the others in `bad`.
struct Chunk<T> {
    segment: Arc<Segment<T>>,
    end: u64,
    bad: Vec<Undecodable>,
}

/// Timestamps and sizes of the consecutive offsets from `start`.
#[derive(Default)]
struct Meta {
    start: u64,
    ts: VecDeque<Nanos>,
    sizes: VecDeque<u32>,
}

impl Meta {
    fn get(&self, offset: u64) -> Option<(Nanos, u32)> {
        let i = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        Some((*self.ts.get(i)?, *self.sizes.get(i)?))
    }

    fn end(&self) -> u64 {
        self.start + self.ts.len() as u64
    }

    fn restart(&mut self, start: u64) {
        self.start = start;
        self.ts.clear();
        self.sizes.clear();
    }

    /// Appends `offset` (restarting there if it does not follow on), keeping at most `limit`.
    fn push(&mut self, offset: u64, ts: Nanos, size: u32, limit: usize) {
        if offset != self.end() {
            self.restart(offset);
        }
        self.ts.push_back(ts);
        self.sizes.push_back(size);
        if self.ts.len() > limit {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if self.ts.pop_front().is_some() {
            self.sizes.pop_front();
            self.start += 1;
        }
    }

    /// Forgets offsets below `base` (trimmed).
    fn trim(&mut self, base: u64) {
        while self.start < base && !self.ts.is_empty() {
            self.pop_front();
        }
    }
}

impl<T> ColdStore<T> {
    pub(super) fn new(load: Loader<T>, indexed: bool) -> Self {
        Self {
            load,
            chunk: None,
            indexed,
            index: Meta::default(),
            heads: Meta::default(),
        }
    }

    /// Indexes a segment that leaves memory (every offset in it is set).
    pub(super) fn cooled(&mut self, segment: &Segment<T>) {
        if !self.indexed {
            return;
        }
        for (offset, slot) in (segment.start..).zip(segment.slots.iter()) {
            if let Some(s) = slot {
                self.index.push(offset, s.ts, s.entry.size, INDEX_LIMIT);
            }
        }
    }

    /// Forgets what is below the new `base`.
    pub(super) fn trimmed(&mut self, base: u64) {
        self.index.trim(base);
        self.heads.trim(base);
    }

    /// The chunk's answer for `offset`, if the chunk covers it.
    fn cached(&self, offset: u64) -> Option<Cold<T>> {
        let chunk = self.chunk.as_ref()?;
        if offset < chunk.segment.start || offset >= chunk.end {
            return None;
        }
        if chunk.segment.get(offset).is_some() {
            return Some(Cold::Got(StoredRef {
                segment: Arc::clone(&chunk.segment),
                offset,
            }));
        }
        let bad = chunk.bad.iter().find(|u| u.offset == offset)?;
        Some(Cold::Undecodable(Box::new(bad.clone())))
    }
}

/// The store gave no answer for `offset`.
fn missing(offset: u64) -> Error {
    Error::Storage {
        path: std::path::PathBuf::new(),
        message: format!("the store did not answer for offset {offset}"),
    }
}

impl<T> Log<T> {
    /// A retained offset below `hot`, read back from the store (a chunk at a time).
    pub(crate) fn cold(&mut self, offset: u64) -> Cold<T> {
        let hot = self.hot;
        let Some(cold) = self.cold_store.as_mut() else {
            return Cold::Failed(missing(offset)); // memory mode keeps everything: never here
        };
        if let Some(answer) = cold.cached(offset) {
            return answer;
        }
        let to = (offset + SEGMENT).min(hot);
        let rows = match cold.load.rows(offset, to) {
            Ok(rows) => rows,
            Err(e) => return Cold::Failed(e),
        };
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for (at, row) in rows {
            match row {
                Ok(stored) => good.push((at, stored)),
                Err(undecodable) => bad.push(*undecodable),
            }
        }
        cold.chunk = Some(Chunk {
            segment: Arc::new(Segment::cold(offset, good)),
            end: to,
            bad,
        });
        match cold.cached(offset) {
            Some(answer) => answer,
            // A loader answers for every offset; this one did not: unreadable, not skipped.
            None => Cold::Failed(missing(offset)),
        }
    }

    /// Compacted topics: the first offset at or after `offset` (below `hot`) that the store
    /// holds, read ahead in widening steps (a compacted store has one row per key, so gaps can
    /// be long); `hot` if there is none. The chunk read stays cached for the read that follows.
    /// (A compacted partition's loader answers only for the rows it holds.)
    pub(super) fn cold_present(&mut self, mut offset: u64) -> Result<u64, Error> {
        let hot = self.hot;
        let Some(cold) = self.cold_store.as_mut() else {
            return Ok(hot);
        };
        if let Some(chunk) = cold.chunk.as_ref()
            && chunk.segment.start <= offset
            && offset < chunk.end
        {
            let there = |o: &u64| {
                chunk.segment.get(*o).is_some() || chunk.bad.iter().any(|u| u.offset == *o)
            };
            if let Some(found) = (offset..chunk.end).find(there) {
                return Ok(found);
            }
            offset = chunk.end;
        }
        let mut width = SEGMENT;
        while offset < hot {
            let to = offset.saturating_add(width).min(hot);
            let rows = cold.load.rows(offset, to)?;
            if let Some(first) = rows.first().map(|(at, _)| *at) {
                let end = first.saturating_add(SEGMENT).min(to);
                let (mut good, mut bad) = (Vec::new(), Vec::new());
                for (at, row) in rows.into_iter().take_while(|(at, _)| *at < end) {
                    match row {
                        Ok(stored) => good.push((at, stored)),
                        Err(undecodable) => bad.push(*undecodable),
                    }
                }
                cold.chunk = Some(Chunk {
                    segment: Arc::new(Segment::cold(first, good)),
                    end,
                    bad,
                });
                return Ok(first);
            }
            offset = to;
            width = width.saturating_mul(16);
        }
        Ok(hot)
    }

    /// Timestamp and counted size of a retained offset: from memory at or above `hot`, else
    /// from the index, else from the stored records' headers (no payload is decoded). `None`
    /// if the store cannot be read now.
    pub(super) fn meta(&mut self, offset: u64) -> Option<(Nanos, u32)> {
        if offset >= self.hot {
            return self.get(offset).map(|s| (s.ts, s.entry.size));
        }
        let hot = self.hot;
        let cold = self.cold_store.as_mut()?;
        if let Some(meta) = cold.index.get(offset).or_else(|| cold.heads.get(offset)) {
            return Some(meta);
        }
        let mut to = (offset + HEAD_CHUNK).min(hot);
        if cold.index.start > offset && !cold.index.ts.is_empty() {
            to = to.min(cold.index.start);
        }
        let heads = cold.load.heads(offset, to).ok()?;
        cold.heads.restart(offset);
        for (at, (ts, size)) in (offset..).zip(heads) {
            cold.heads.push(at, ts, size, usize::MAX);
        }
        cold.heads.get(offset)
    }

    /// The first offset whose timestamp is at or after `ts` (timestamps are monotone).
    pub(crate) fn seek(&mut self, ts: Nanos) -> u64 {
        let (mut lo, mut hi) = (self.base, self.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.meta(mid).is_some_and(|(at, _)| at < ts) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

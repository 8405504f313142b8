//! Compaction of a partition's in-memory log (compacted topics): each key's latest offset, and
//! amortized passes that drop superseded messages from sealed segments, leaving gaps that
//! readers skip.
//!
//! A pass runs on the producer that pushes the message making it due, under the partition's
//! lock, once as many messages were superseded as the log has keys (at least a segment's
//! worth): its cost, one look at every slot in memory, is amortized over those pushes. A
//! segment a reader or a held message still shares is left as it is and tried again next pass
//! (the reader sees the older values it holds, as a Kafka reader may see values not compacted
//! yet). A segment left empty is dropped: offsets keep their values, the log just has gaps.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::{Log, SEGMENT, Segment};
use crate::record::Entry;

/// The latest offset of every key, and when the next pass is due.
#[derive(Default)]
pub(super) struct Compactor {
    latest: HashMap<Box<[u8]>, u64>,
    /// Messages superseded since the last pass.
    superseded: u64,
}

/// The key a compacted message is kept by (records without one are refused at send).
fn key_of<T>(entry: &Entry<T>) -> Option<&[u8]> {
    entry.meta.as_ref().and_then(|m| m.key.as_deref())
}

impl Compactor {
    /// Notes that `entry` is the latest message of its key, at `offset`.
    #[inline(never)]
    pub(super) fn pushed<T>(&mut self, entry: &Entry<T>, offset: u64) {
        let Some(key) = key_of(entry) else {
            return;
        };
        match self.latest.get_mut(key) {
            Some(latest) => {
                *latest = offset;
                self.superseded += 1;
            }
            None => {
                self.latest.insert(key.into(), offset);
            }
        }
    }

    /// Whether a pass is due.
    pub(super) fn due(&self) -> bool {
        self.superseded >= SEGMENT.max(self.latest.len() as u64)
    }

    fn is_latest<T>(&self, entry: &Entry<T>, offset: u64) -> bool {
        key_of(entry).is_none_or(|key| self.latest.get(key) == Some(&offset))
    }
}

impl<T> Log<T> {
    /// Drops superseded messages from every sealed segment no reader shares; drops segments
    /// left empty.
    #[cold]
    #[inline(never)]
    pub(super) fn compact(&mut self) {
        let Some(compactor) = self.compaction.as_deref_mut() else {
            return;
        };
        let tail = self.segments.len().saturating_sub(1);
        let mut kept = VecDeque::with_capacity(self.segments.len());
        for (i, segment) in self.segments.drain(..).enumerate() {
            if i == tail {
                kept.push_back(segment); // still being written
                continue;
            }
            // Shared (a reader is in it, or a message from it is held): next pass.
            let mut owned = match Arc::try_unwrap(segment) {
                Ok(owned) => owned,
                Err(shared) => {
                    kept.push_back(shared);
                    continue;
                }
            };
            owned.appended = false; // it has gaps from now on
            let start = owned.start;
            let live = owned
                .slots
                .retain(|i, s| compactor.is_latest(&s.entry, start + i as u64));
            if live {
                // A new allocation: links to the old one (a reader's `next`) no longer
                // upgrade, so such readers find their place again under the lock.
                kept.push_back(Arc::new(owned));
            }
        }
        self.segments = kept;
        compactor.superseded = 0;
    }

    /// The segment holding `offset`, if it is in memory.
    #[inline]
    pub(super) fn segment_of(&self, offset: u64) -> Option<&Arc<Segment<T>>> {
        let first = self.segments.front()?.start;
        let index = usize::try_from(offset.checked_sub(first)? / SEGMENT).ok()?;
        match self.segments.get(index) {
            Some(s) if s.start <= offset => Some(s),
            // Compaction dropped segments before it: search.
            _ if self.compaction.is_some() => self.search(offset),
            _ => None,
        }
    }

    /// [`segment_of`](Self::segment_of) in a compacted log, out of line.
    #[cold]
    #[inline(never)]
    fn search(&self, offset: u64) -> Option<&Arc<Segment<T>>> {
        let i = self
            .segments
            .partition_point(|s| s.start + SEGMENT <= offset);
        self.segments.get(i).filter(|s| s.start <= offset)
    }

    /// The first offset at or after `offset` that compaction left (or `end`); `offset` itself
    /// on a topic that is not compacted. Below the in-memory tail it reads the store; if that
    /// fails, it stops there, for the read to report it.
    #[inline(never)]
    pub(crate) fn skip_gap(&mut self, mut offset: u64) -> u64 {
        if self.compaction.is_none() {
            return offset;
        }
        while offset < self.end {
            if offset < self.hot {
                match self.cold_present(offset) {
                    Ok(found) if found >= self.hot => offset = self.hot,
                    Ok(found) => return found,
                    Err(_) => return offset,
                }
                continue;
            }
            let i = self
                .segments
                .partition_point(|s| s.start + SEGMENT <= offset);
            let Some(segment) = self.segments.get(i) else {
                return self.end;
            };
            let from = offset.max(segment.start);
            let to = segment.start + SEGMENT;
            if let Some(found) = (from..to).find(|&o| segment.get(o).is_some()) {
                return found.min(self.end);
            }
            offset = to;
        }
        self.end
    }

    /// Whether compaction removed `offset` (a retained offset below `end`).
    pub(crate) fn is_gap(&mut self, offset: u64) -> bool {
        self.compaction.is_some() && offset < self.end && self.skip_gap(offset) != offset
    }
}

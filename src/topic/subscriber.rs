//! `Subscriber`: an independent reader of every partition, with a small local buffer.

use std::collections::VecDeque;
use std::sync::Arc;

use super::TopicCore;
use super::log::Read as ReadChunk;
use crate::broker::Payload;
use crate::consumer::{Poll, Source};
use crate::message::Message;
use crate::notify::Woken;
use crate::options::Start;

/// How many messages one lock of a partition hands a subscriber. Bigger batches mean fewer
/// locks; under `Block`, buffered messages count as read.
const CHUNK: usize = 128;

pub(crate) struct Subscriber<T> {
    topic: Arc<TopicCore<T>>,
    id: u64,
    /// Per partition: the next offset to fetch and this reader's cursor slot.
    cursors: Vec<(u64, usize)>,
    buffer: VecDeque<Message<T>>,
    /// The partition to read first next time, for fairness.
    turn: usize,
}

impl<T: Payload> Subscriber<T> {
    pub(crate) fn new(topic: Arc<TopicCore<T>>, start: Start) -> Self {
        let cursors = topic
            .partitions
            .iter()
            .map(|log| topic.add_reader(&mut log.lock(), start))
            .collect();
        let id = topic.shared.next_id();
        Self {
            topic,
            id,
            cursors,
            buffer: VecDeque::with_capacity(CHUNK),
            turn: 0,
        }
    }

    pub(crate) fn partitions(&self) -> Vec<u32> {
        (0..self.cursors.len() as u32).collect()
    }

    /// Messages retained but not yet received.
    pub(crate) fn lag(&self) -> u64 {
        let fetched: u64 = self
            .topic
            .partitions
            .iter()
            .zip(&self.cursors)
            .map(|(log, &(next, _))| self.topic.retained_after(log, next))
            .sum();
        fetched + self.buffer.len() as u64
    }
}

impl<T: Payload> Source<T> for Subscriber<T> {
    fn poll(&mut self, register: bool) -> Poll<T> {
        if let Some(message) = self.buffer.pop_front() {
            return Poll::Ready(message);
        }
        let n = self.cursors.len();
        for i in 0..n {
            let p = (self.turn + i) % n;
            let (next, cursor) = &mut self.cursors[p];
            let partition = &self.topic.partitions[p];
            if !register && !partition.has_from(*next) {
                continue; // nothing new: no need to take the lock
            }
            let mut log = partition.lock();
            self.topic.trim_for_read(&mut log);
            let buffer = &mut self.buffer;
            let read = log.read(next, CHUNK, |offset, slot| {
                buffer.push_back(Message::plain(slot, p as u32, offset));
            });
            let woken = match read {
                ReadChunk::Empty => {
                    if register {
                        log.readers.register(self.id);
                    }
                    continue;
                }
                _ => log.set_cursor(*cursor, *next),
            };
            drop(log);
            woken.wake();
            match read {
                ReadChunk::Lagged(skipped) => {
                    self.turn = p;
                    return Poll::Lagged(skipped);
                }
                _ => {
                    self.turn = (p + 1) % n;
                    if let Some(message) = self.buffer.pop_front() {
                        return Poll::Ready(message);
                    }
                }
            }
        }
        Poll::Empty
    }

    fn is_closed(&self) -> bool {
        self.topic.shared.is_closed()
    }
}

impl<T> Drop for Subscriber<T> {
    fn drop(&mut self) {
        let mut woken = Woken::none();
        for (log, &(_, cursor)) in self.topic.partitions.iter().zip(&self.cursors) {
            let mut log = log.lock();
            log.readers.remove(self.id);
            woken.join(log.remove_cursor(cursor));
        }
        woken.wake();
    }
}

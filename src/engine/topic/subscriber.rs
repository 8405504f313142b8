//! `Subscriber`: an independent reader of every partition, lock-free while it keeps up.

use std::sync::Arc;

use super::retry::Retry;
use super::{Read, Reader, TopicCore};
use crate::engine::notify::{Wait, Woken};
use crate::engine::{Delivery, Poll, Source};
use crate::error::RecvError;
use crate::observe;
use crate::options::{Overflow, Start};
use crate::record::Payload;

pub(crate) struct Subscriber<T> {
    topic: Arc<TopicCore<T>>,
    id: u64,
    /// One position per partition.
    readers: Vec<Reader<T>>,
    /// The partition to read first next time, for fairness.
    turn: usize,
    /// A read from the store that failed, to try again.
    retry: Retry,
    /// When the delayed record this subscriber waits at falls due (real clock only).
    wake: Option<std::time::Instant>,
}

impl<T: Payload> Subscriber<T> {
    /// A subscriber from `start`; retention waits for it under `overflow` `Block` (default:
    /// the topic's policy).
    pub(crate) fn new(topic: Arc<TopicCore<T>>, start: Start, overflow: Option<Overflow>) -> Self {
        let blocks = overflow.map_or(topic.limits.block, |o| o == Overflow::Block);
        let id = topic.context.next_id();
        let readers = topic
            .partitions
            .iter()
            .map(|part| {
                let mut log = part.lock();
                let at = topic.start_offset(&mut log, start);
                part.reader(&mut log, at, blocks, id)
            })
            .collect();
        Self {
            topic,
            id,
            readers,
            turn: 0,
            retry: Retry::default(),
            wake: None,
        }
    }

    pub(crate) fn partitions(&self) -> Vec<u32> {
        (0..self.readers.len() as u32).collect()
    }

    /// Messages retained but not yet received.
    pub(crate) fn lag(&self) -> u64 {
        let topic = &self.topic;
        let behind = |(part, reader): (_, &Reader<T>)| topic.retained_after(part, reader.next());
        topic.partitions.iter().zip(&self.readers).map(behind).sum()
    }
}

impl<T: Payload> Source<T> for Subscriber<T> {
    fn poll(&mut self, wait: Wait<'_>) -> Poll<T> {
        let topic = &self.topic;
        // Age retention is applied under the lock, so age-limited topics always take it.
        let fast = !wait.takes_locks() && topic.limits.age.is_none();
        let n = self.readers.len();
        let clock = &topic.context.clock;
        let mut due: Option<u64> = None;
        for i in 0..n {
            let p = (self.turn + i) % n;
            if self.retry.waiting(p as u32) {
                continue; // its store read failed: the next attempt is due later
            }
            let part = &topic.partitions[p];
            let reader = &mut self.readers[p];
            let read = match fast.then(|| part.read_fast(reader)) {
                Some(Some(read)) => read,
                _ => {
                    let mut log = part.lock();
                    topic.trim_for_read(&mut log);
                    let now = || clock.now();
                    let (read, woken) = part.read_locked(&mut log, reader, self.id, wait, now);
                    drop(log);
                    woken.wake();
                    read
                }
            };
            match read {
                Read::Got(stored) => {
                    self.retry.succeeded(p as u32);
                    self.turn = (p + 1) % n;
                    let delivery = Delivery::plain(stored, p as u32);
                    observe::traced! { delivery.trace_delivered(&topic.name); }
                    return Poll::Ready(delivery);
                }
                Read::Lagged(skipped) => {
                    self.turn = p;
                    observe::event!(
                        "embus::topic",
                        WARN,
                        topic = topic.name.as_str(),
                        partition = p as u32,
                        skipped,
                        "lagged"
                    );
                    return Poll::Lagged(skipped);
                }
                Read::Undecodable(undecodable) => {
                    // The reader moved past it: a subscriber has nothing to settle.
                    self.retry.succeeded(p as u32);
                    self.turn = p;
                    return Poll::Error(RecvError::Undecodable(undecodable));
                }
                Read::Failed(error) => {
                    let offset = reader.next();
                    if let Some(failure) = self.retry.failed(&topic.name, p as u32, offset, error) {
                        self.turn = (p + 1) % n;
                        return Poll::Error(RecvError::Failed(Box::new(failure)));
                    }
                }
                Read::NotYet(at) => due = due.into_iter().chain([at]).min(),
                Read::Empty => {}
            }
        }
        // A delayed record: wake when it falls due (a manual clock's advance wakes us anyway).
        self.wake = due.and_then(|at| {
            let ticks = clock.ticks().saturating_add(at.saturating_sub(clock.now()));
            clock.wake_at(ticks)
        });
        self.retry
            .arm_with(&topic.context, self.id, wait, self.wake);
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
        self.retry.wake_at().into_iter().chain(self.wake).min()
    }
}

impl<T> Subscriber<T> {
    /// The topic's name.
    pub(crate) fn topic_name(&self) -> &str {
        &self.topic.name
    }

    /// Its broker's store instance ([`Store::instance`](crate::store::Store::instance)).
    #[cfg(any(feature = "nats", feature = "amqp"))]
    pub(crate) fn store_instance(&self) -> u64 {
        self.topic.context.store.instance()
    }

    /// After a wait ended with a result: with several partitions, the registrations on the
    /// others are still there (a send only takes its own partition's list).
    pub(crate) fn finish_wait(&mut self) {
        self.retry.disarm(&self.topic.context, self.id);
        if self.readers.len() > 1 {
            self.unregister();
        }
    }

    /// Forgets this consumer's waker registrations.
    pub(crate) fn unregister(&mut self) {
        self.retry.disarm(&self.topic.context, self.id);
        for part in self.topic.partitions.iter() {
            part.lock().readers.remove(self.id);
        }
    }
}

impl<T> Drop for Subscriber<T> {
    fn drop(&mut self) {
        self.retry.disarm(&self.topic.context, self.id);
        let mut woken = Woken::none();
        for (part, reader) in self.topic.partitions.iter().zip(&self.readers) {
            let mut log = part.lock();
            log.readers.remove(self.id);
            woken.join(part.remove_reader(&mut log, reader));
        }
        woken.wake();
    }
}

//! Administration of one queue: purge, peek and redrive.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::QueueCore;
use crate::engine::Delivery;
use crate::error::Error;
use crate::options::invalid;
use crate::record::Headers;
use crate::store::Progress;

impl<T> QueueCore<T> {
    /// Removes every message that is not in flight (ready, delayed, backing off); returns
    /// how many. Durable: the deletes ride the next commit.
    pub(crate) fn purge(&self) -> Result<usize, Error> {
        self.check_live()?;
        self.context.store.can_record()?;
        let now = self.timed_now();
        let mut state = self.state.lock();
        let (dead, mut woken) = self.expire(&mut state, now);
        let purged = state.purge();
        for item in &purged {
            self.context.store.progress(Progress::QueueAck {
                queue: &self.sink,
                id: item.id,
            });
        }
        let count = purged.len();
        if count > 0 {
            self.occupied.fetch_sub(count, Ordering::AcqRel);
            woken.join(state.writers.take());
        }
        self.publish_hints(&mut state);
        drop(state);
        drop(purged);
        self.after_release(dead, woken);
        if count > 0 {
            self.context.idle.notify();
        }
        self.context.store.can_record()?;
        Ok(count)
    }

    /// Copies of the next `n` messages: the ready ones in delivery order, then those waiting
    /// out a delay or backoff in due order. Changes nothing.
    pub(crate) fn peek(&self, n: usize) -> Vec<Delivery<T>> {
        self.with_expired(|s| s.iter().take(n).map(Delivery::look_queue).collect())
    }

    /// Moves up to `limit` ready messages to `to`, keeping key and headers, with delivery
    /// count 0; stops early when this queue has no ready message or `to` is full. Returns
    /// how many moved.
    pub(crate) fn redrive(&self, to: &Arc<Self>, limit: usize) -> Result<usize, Error> {
        if std::ptr::eq(self, Arc::as_ptr(to)) {
            return Err(invalid(
                &self.name,
                "redrive",
                "a queue cannot be redriven into itself",
            ));
        }
        self.check_live()?;
        to.check_live()?;
        self.context.store.can_record()?;
        let mut moved = 0;
        while moved < limit {
            if !to.reserve() {
                break; // `to` is full
            }
            let now = self.timed_now();
            let mut state = self.state.lock();
            let (dead, mut woken) = self.expire(&mut state, now);
            let item = state.take_next();
            if item.is_some() {
                self.context.idle.moved();
                woken.join(self.left(&mut state));
            }
            self.publish_hints(&mut state);
            drop(state);
            self.after_release(dead, woken);
            let Some(item) = item else {
                to.occupied.fetch_sub(1, Ordering::AcqRel);
                let woken = to.state.lock().writers.take();
                woken.wake();
                break;
            };
            let original = item.meta.as_deref().or(item.entry.meta.as_deref());
            let headers = original.map_or_else(Headers::new, |m| m.headers.clone());
            to.push_moved(item, self, headers);
            moved += 1;
        }
        self.context.store.can_record()?;
        Ok(moved)
    }
}

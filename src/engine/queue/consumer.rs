//! A queue's competing consumers: delivering, waiting (with ack-timeout wake-ups) and releasing
//! what a dropped consumer held.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::QueueCore;
use super::state::Reason;
use crate::engine::delivery::QueueAck;
use crate::engine::notify::Wait;
use crate::engine::{Delivery, Poll, Source};
use crate::observe;
use crate::record::Payload;
use crate::store::Progress;

/// A consumer's own handle on its queue: its deliveries clone this `Arc`, not the queue's, so
/// competing consumers do not contend on one reference count.
pub(crate) struct ConsumerLink<T> {
    pub(crate) queue: Arc<QueueCore<T>>,
    /// Set when the consumer is dropped (which releases its deliveries), so a late ack can
    /// say why it did nothing.
    pub(crate) dropped: AtomicBool,
}

/// A competing consumer of a queue.
pub(crate) struct QueueConsumer<T> {
    link: Arc<ConsumerLink<T>>,
    id: u64,
    /// When to wake for the next ack timeout (system clock only).
    wake: Option<std::time::Instant>,
    /// Whether the broker's timer holds an entry for this consumer.
    timed: bool,
}

impl<T: Payload> QueueConsumer<T> {
    pub(crate) fn new(queue: Arc<QueueCore<T>>) -> Self {
        let id = queue.context.next_id();
        queue.consumers.fetch_add(1, Ordering::AcqRel);
        Self {
            link: Arc::new(ConsumerLink {
                queue,
                dropped: AtomicBool::new(false),
            }),
            id,
            wake: None,
            timed: false,
        }
    }

    pub(crate) fn ready(&self) -> u64 {
        self.link.queue.with_expired(|s| s.ready_len() as u64)
    }
}

impl<T: Payload> Source<T> for QueueConsumer<T> {
    fn poll(&mut self, wait: Wait<'_>) -> Poll<T> {
        let queue = &self.link.queue;
        queue.expire_feeders(); // their timed-out deliveries are this queue's dead letters
        if !wait.takes_locks() && queue.nothing_to_deliver() {
            // Nothing ready: don't take the lock (timeouts are processed when registering).
            return Poll::Empty;
        }
        // Before the lock: the index files deadlines in order. One precise clock read per
        // look: a deadline set from a coarse one could come early.
        let now = queue.timed_now();
        let mut own_deadline = None;
        // The delivery's handle, counted before the lock rather than under it.
        let link = Arc::clone(&self.link);
        let mut state = queue.state.lock();
        let (dead, woken) = queue.expire(&mut state, now);
        let deadline = now
            .zip(queue.ack_timeout)
            .map(|(now, t)| now.saturating_add(t));
        let delivered = state.deliver(self.id, queue.options.prefetch_limit(), deadline);
        let poll = match delivered {
            Some((item, delivery)) => {
                let (id, count) = (item.id, item.count);
                queue.context.store.progress(Progress::QueueDelivery {
                    queue: &queue.sink,
                    id,
                    count,
                });
                let ack = QueueAck { link, delivery, id };
                Poll::Ready(Delivery::queue(item, ack))
            }
            None => {
                if wait.takes_locks() {
                    state.readers.register(self.id, wait);
                    own_deadline = state.next_wake();
                }
                Poll::Empty
            }
        };
        // A feeder's first in-flight delivery gives this queue's waiting consumers (it is a
        // dead-letter queue) a deadline they did not know when they registered.
        let wake_dead_letters = poll.is_ready()
            && queue.dead_letter.is_some()
            && queue.earliest.load(Ordering::Acquire) == u64::MAX;
        queue.publish_hints(&mut state);
        drop(state);
        observe::traced! {
            if let Poll::Ready(delivery) = &poll {
                delivery.trace_delivered(&queue.name);
            }
        }
        if wait.takes_locks() && !poll.is_ready() {
            // The feeders' deadlines are read again after registering: a feeder's first
            // delivery from here on wakes us (see `wake_dead_letters`), and one before is seen.
            let feeder_deadline = queue.expire_feeders();
            let next = own_deadline.into_iter().chain(feeder_deadline).min();
            self.wake = next.and_then(|d| queue.context.clock.wake_at(d));
        }
        if let (Poll::Empty, Wait::Task(waker), Some(at)) = (&poll, wait, self.wake) {
            // A task cannot park until the deadline: the timer wakes it (registered after
            // unlocking, since it may drop an older waker).
            queue.context.timer.wake_at(at, self.id, waker);
            self.timed = true;
        }
        if let (true, Some(dlq)) = (wake_dead_letters, &queue.dead_letter) {
            let woken = dlq.state.lock().readers.take();
            woken.wake();
        }
        queue.after_release(dead, woken);
        poll
    }

    fn is_closed(&self) -> bool {
        // Closed, and nothing staged will be published any more.
        let queue = &self.link.queue;
        queue.context.is_closed()
            && (queue.context.has_settled() || !queue.state.lock().has_staged())
    }

    fn wake_at(&self) -> Option<std::time::Instant> {
        self.wake
    }

    fn deleted(&self) -> Option<String> {
        let queue = &self.link.queue;
        queue.is_deleted().then(|| queue.name.clone())
    }
}

impl<T> QueueConsumer<T> {
    /// The queue's name.
    pub(crate) fn queue_name(&self) -> &str {
        &self.link.queue.name
    }

    /// Its broker's store instance ([`Store::instance`](crate::store::Store::instance)).
    #[cfg(any(feature = "nats", feature = "amqp"))]
    pub(crate) fn store_instance(&self) -> u64 {
        self.link.queue.context.store.instance()
    }

    /// Forgets this consumer's waker registrations.
    pub(crate) fn unregister(&mut self) {
        self.link.queue.state.lock().readers.remove(self.id);
        self.finish_wait();
    }

    /// After a wait ended with a result: drops the timer entry (a task that got its message
    /// must not be woken later). The reader registration is already gone: whatever woke it
    /// took the list.
    pub(crate) fn finish_wait(&mut self) {
        if std::mem::take(&mut self.timed) {
            self.link.queue.context.timer.cancel(self.id);
        }
    }
}

impl<T> Drop for QueueConsumer<T> {
    fn drop(&mut self) {
        let queue = &self.link.queue;
        self.link.dropped.store(true, Ordering::Release);
        queue.consumers.fetch_sub(1, Ordering::AcqRel);
        let now = queue.timed_now();
        let mut state = queue.state.lock();
        state.readers.remove(self.id);
        // As in `release`: overdue deliveries end as timed out first.
        let (mut dead, mut woken) = queue.expire(&mut state, now);
        let held = state.held_by(self.id);
        state.forget_consumer(self.id);
        // Newest first, so that requeueing at the front keeps the oldest in front.
        for delivery in held.into_iter().rev() {
            // Live: it is this consumer's, listed under the same lock.
            let _ = queue.release_locked(
                &mut state,
                delivery,
                Reason::Dropped,
                None,
                &mut dead,
                &mut woken,
            );
        }
        drop(state);
        queue.after_release(dead, woken);
    }
}

//! `QueueConsumer`: a competing consumer of a queue, with its own deliveries in flight.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::Mutex;

use super::QueueCore;
use super::flight::{Flight, Reason};
use crate::broker::Payload;
use crate::consumer::{Poll, Source};
use crate::message::{Message, QueueAck};
use crate::notify::Wait;
use crate::store::Progress;

/// A consumer's own handle on its queue: its deliveries in flight, and what its messages use to
/// ack. Competing consumers never share it, so acks do not contend.
pub(crate) struct ConsumerLink<T> {
    pub(crate) queue: Arc<QueueCore<T>>,
    pub(crate) flight: Mutex<Flight<T>>,
}

/// A competing consumer of a queue.
pub(crate) struct QueueConsumer<T> {
    link: Arc<ConsumerLink<T>>,
    id: u64,
    /// When to wake for the next ack timeout (system clock only).
    wake: Option<Instant>,
    /// Whether the broker's timer holds an entry for this consumer.
    timed: bool,
}

impl<T> QueueConsumer<T> {
    pub(crate) fn new(queue: &Arc<QueueCore<T>>) -> Self {
        let link = Arc::new(ConsumerLink {
            queue: Arc::clone(queue),
            flight: Mutex::new(Flight::new()),
        });
        queue.add_link(&link);
        Self {
            link,
            id: queue.shared.next_id(),
            wake: None,
            timed: false,
        }
    }

    /// The queue's ready messages (a queue consumer's lag).
    pub(crate) fn ready(&self) -> u64 {
        self.link.queue.expire_due();
        self.link.queue.ready_len() as u64
    }

    /// Forgets this consumer's waker registrations.
    pub(crate) fn unregister(&mut self) {
        self.link.queue.forget_reader(self.id);
        self.finish_wait();
    }

    /// After a wait ended with a result: drops the timer entry (a task that got its message
    /// must not be woken later).
    pub(crate) fn finish_wait(&mut self) {
        if std::mem::take(&mut self.timed) {
            self.link.queue.shared.timer.cancel(self.id);
        }
    }
}

impl<T: Payload> Source<T> for QueueConsumer<T> {
    fn poll(&mut self, wait: Wait<'_>) -> Poll<T> {
        let queue = &self.link.queue;
        let feeder_deadline = queue.expire_feeders();
        if queue.shared.is_closed() {
            queue.settle_sends();
        }
        queue.expire_due();
        let prefetch = queue.options.prefetch_limit();
        let mut registered = false;
        loop {
            let window_open = prefetch.is_none_or(|limit| self.link.flight.lock().held() < limit);
            if let Some(mut item) = window_open.then(|| queue.take_ready()).flatten() {
                if registered {
                    queue.forget_reader(self.id); // found it on the re-check: leave no waker
                }
                item.count += 1;
                let deadline = queue
                    .timed_now()
                    .zip(queue.ack_timeout)
                    .map(|(now, timeout)| now.saturating_add(timeout));
                let order = queue.delivery_order.fetch_add(1, Ordering::Relaxed);
                let (id, count) = (item.id, item.count);
                let mut flight = self.link.flight.lock();
                queue.in_flight.fetch_add(1, Ordering::AcqRel);
                let delivery = flight.insert(item, deadline, order);
                let Some(item) = flight.get(delivery) else {
                    unreachable!("a delivery just inserted is in flight")
                };
                let ack = QueueAck {
                    link: Arc::clone(&self.link),
                    delivery,
                    id,
                };
                let message = Message::queue(item, ack);
                drop(flight);
                queue.note_deadline(deadline);
                queue.shared.store.progress(Progress::QueueDelivery {
                    queue: &queue.name,
                    id,
                    count,
                });
                return Poll::Ready(message);
            }
            if !wait.registers() || registered {
                break;
            }
            // Register, then look once more: a send after the look above wakes us.
            queue.register_reader(self.id, wait);
            registered = true;
        }
        if registered {
            let next = queue
                .next_deadline()
                .into_iter()
                .chain(feeder_deadline)
                .min();
            self.wake = next.and_then(|d| queue.shared.clock.wake_at(d));
            if let (Wait::Task(waker), Some(at)) = (wait, self.wake) {
                // A task cannot park until the deadline: the timer wakes it.
                queue.shared.timer.wake_at(at, self.id, waker);
                self.timed = true;
            }
        }
        Poll::Empty
    }

    fn is_closed(&self) -> bool {
        self.link.queue.shared.is_closed()
    }

    fn wake_at(&self) -> Option<Instant> {
        self.wake
    }
}

impl<T> Drop for QueueConsumer<T> {
    fn drop(&mut self) {
        self.unregister();
        let ended = self.link.flight.lock().drain();
        self.link.queue.release_all(ended, Reason::Dropped);
    }
}

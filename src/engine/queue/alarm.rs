//! Time on a queue: making delayed and backing-off messages ready when they fall due, moving
//! expired messages on, and the broker's timer waking the queue for both.
//!
//! Everything is processed under the queue's lock whenever someone looks (a delivery, a
//! length, a wait for idle), so an expired message is never delivered and a due one is never
//! missed. Nobody may look, though: with the system clock the broker's timer wakes the queue at
//! the next due time or expiry ([`QueueCore::arm`]), which wakes its blocked consumers and
//! producers and moves expired messages to the dead-letter queue; with a
//! [`ManualClock`](crate::ManualClock), `advance` does the same.

use std::sync::{Arc, Weak};
use std::task::{Wake, Waker};

use super::QueueCore;
use super::state::{Item, QueueState, Reason};
use crate::engine::Context;
use crate::engine::notify::Woken;
use crate::observe;
use crate::record::{Nanos, Payload};
use crate::store::Progress;

/// The broker timer's handle on a queue.
struct Alarm<T> {
    queue: Weak<QueueCore<T>>,
}

impl<T: Payload> Wake for Alarm<T> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(queue) = self.queue.upgrade() {
            queue.ring();
        }
    }
}

/// The queue's alarm and its waiter id, on a system clock (a manual clock needs none).
pub(super) fn alarm<T: Payload>(
    queue: &Weak<QueueCore<T>>,
    context: &Context,
) -> Option<(Waker, u64)> {
    context.clock.wake_at(0)?;
    let alarm = Arc::new(Alarm {
        queue: Weak::clone(queue),
    });
    Some((Waker::from(alarm), context.next_id()))
}

impl<T> QueueCore<T> {
    /// Sets the broker's timer for the next due time or expiry, unless it is set for one no
    /// later (then it rings early, finds nothing, and is set again).
    pub(super) fn arm(&self, state: &mut QueueState<T>) {
        let Some((waker, id)) = &self.alarm else {
            return;
        };
        let Some(next) = state.next_timed() else {
            return;
        };
        if state.armed.is_some_and(|armed| armed <= next) {
            return;
        }
        if let Some(at) = self.context.clock.wake_at(next) {
            state.armed = Some(next);
            self.context.timer.wake_at(at, *id, waker);
        }
    }

    /// The timer rang: process what is due or expired, wake whoever that concerns.
    fn ring(&self) {
        let now = self.context.clock.ticks();
        let mut state = self.state.lock();
        state.armed = None;
        let dropped = state.expired;
        let (dead, woken) =
            self.expire(&mut state, Some(now).filter(|_| self.ack_timeout.is_some()));
        self.publish_hints(&mut state);
        let dropped = state.expired != dropped;
        drop(state);
        self.after_release(dead, woken);
        if dropped {
            self.context.idle.notify();
        }
    }

    /// Makes the messages due by `now` ready (waking consumers) and moves the expired ones
    /// on: to `dead` for the dead-letter queue, or deleted and counted without one.
    pub(super) fn process_timed(
        &self,
        state: &mut QueueState<T>,
        now: Option<Nanos>,
        dead: &mut Vec<(Item<T>, Reason)>,
        woken: &mut Woken,
    ) {
        let now = now.unwrap_or_else(|| self.context.clock.ticks());
        if state.next_timed().is_none_or(|next| next > now) {
            return;
        }
        if state.promote(now) > 0 {
            woken.join(state.readers.take());
        }
        for item in state.take_expired(now) {
            if self.dead_letter.is_some() {
                // As in `release_locked`: a wait for idle sees the work move.
                self.context.idle.moved();
                woken.join(self.left(state));
                dead.push((item, Reason::Expired));
            } else {
                self.drop_expired(state, item, woken);
            }
        }
        self.publish_hints(state);
    }

    /// Deletes an expired message (no dead-letter queue): durably with the next commit, as
    /// an ack does.
    pub(super) fn drop_expired(&self, state: &mut QueueState<T>, item: Item<T>, woken: &mut Woken) {
        observe::traced! {
            let (queue, offset, delivery_count) = (self.name.clone(), item.id, item.count);
            woken.then(move || {
                observe::event!(
                    "embus::queue",
                    DEBUG,
                    queue = queue.as_str(),
                    offset,
                    delivery_count,
                    "expire"
                );
            });
        }
        self.context.store.progress(Progress::QueueAck {
            queue: &self.sink,
            id: item.id,
        });
        woken.join(self.left(state));
    }
}

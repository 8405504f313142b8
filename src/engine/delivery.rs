//! [`Delivery`]: one message handed to a consumer — its stored entry, where it was stored, and
//! how to settle it. The facade's `Message` wraps it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::queue::{ConsumerLink, DeliveryId, QueueItem, ReleaseReason};
use super::topic::{Group, StoredRef, TopicCore, Why};
use crate::error::{Ended, Error};
use crate::observe;
use crate::record::{Entry, Headers, Meta, NO_HEADERS, Nanos, to_system_time};

/// A delivered message. Dropping it unsettled releases it for redelivery, like a nack.
pub(crate) struct Delivery<T> {
    body: Body<T>,
    partition: u32,
    offset: u64,
    delivery_count: u32,
    settle: Settle<T>,
}

/// Where the payload lives: a topic's log segment, or a queue's shared entry.
enum Body<T> {
    Log(StoredRef<T>),
    Queue {
        entry: Arc<Entry<T>>,
        /// Replaces the entry's key and headers (a dead letter's added headers).
        meta: Option<Arc<Meta>>,
        ts: Nanos,
    },
}

/// What a queue said to a settle: `Ok`, or why (if known) the delivery had already ended.
type Outcome = Result<(), Option<ReleaseReason>>;

/// How a delivery settles (`Q`: the queue's part, or after a release, with its outcome).
enum Settle<T, Q = QueueAck<T>> {
    Nothing,
    Group(GroupAck<T>),
    Queue(Q),
}

/// How a group delivery reaches its group.
pub(crate) struct GroupAck<T> {
    pub(crate) topic: Arc<TopicCore<T>>,
    pub(crate) group: Arc<Group<T>>,
    pub(crate) member: u64,
}

/// How a queue delivery reaches its queue.
pub(crate) struct QueueAck<T> {
    pub(crate) link: Arc<ConsumerLink<T>>,
    pub(crate) delivery: DeliveryId,
    pub(crate) id: u64,
}

impl<T> Delivery<T> {
    pub(crate) fn plain(stored: StoredRef<T>, partition: u32) -> Self {
        Self::from_log(stored, partition, 1, Settle::Nothing)
    }

    pub(crate) fn group(
        stored: StoredRef<T>,
        partition: u32,
        count: u32,
        ack: GroupAck<T>,
    ) -> Self {
        Self::from_log(stored, partition, count, Settle::Group(ack))
    }

    fn from_log(
        stored: StoredRef<T>,
        partition: u32,
        delivery_count: u32,
        settle: Settle<T>,
    ) -> Self {
        let offset = stored.offset();
        Self {
            body: Body::Log(stored),
            partition,
            offset,
            delivery_count,
            settle,
        }
    }

    /// A copy of a topic message that settles nothing and counts no delivery (a look).
    pub(crate) fn look(stored: StoredRef<T>, partition: u32) -> Self {
        Self::from_log(stored, partition, 0, Settle::Nothing)
    }

    /// A copy of a waiting queue message that settles nothing (a look).
    pub(crate) fn look_queue(item: &QueueItem<T>) -> Self {
        Self::from_queue(item, Settle::Nothing)
    }

    pub(crate) fn queue(item: &QueueItem<T>, ack: QueueAck<T>) -> Self {
        Self::from_queue(item, Settle::Queue(ack))
    }

    fn from_queue(item: &QueueItem<T>, settle: Settle<T>) -> Self {
        Self {
            body: Body::Queue {
                entry: Arc::clone(&item.entry),
                meta: item.meta.clone(),
                ts: item.ts,
            },
            partition: 0,
            offset: item.id,
            delivery_count: item.count,
            settle,
        }
    }

    fn entry(&self) -> &Entry<T> {
        match &self.body {
            Body::Log(stored) => &stored.get().entry,
            Body::Queue { entry, .. } => entry,
        }
    }

    /// The payload.
    pub(crate) fn payload(&self) -> &T {
        &self.entry().payload
    }

    /// The key, if the record had one.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        self.meta().and_then(|m| m.key.as_deref())
    }

    /// The headers.
    pub(crate) fn headers(&self) -> &Headers {
        self.meta().map_or(&NO_HEADERS, |m| &m.headers)
    }

    /// The partition (0 for a queue).
    pub(crate) fn partition(&self) -> u32 {
        self.partition
    }

    /// The offset in the partition (for a queue, the message's sequence number).
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// When the broker accepted the message, on its clock.
    pub(crate) fn timestamp(&self) -> SystemTime {
        to_system_time(match &self.body {
            Body::Log(stored) => stored.get().ts,
            Body::Queue { ts, .. } => *ts,
        })
    }

    /// How many times this message has been delivered, this time included (1 for a first
    /// delivery; always 1 from a plain subscriber).
    pub(crate) fn delivery_count(&self) -> u32 {
        self.delivery_count
    }

    fn meta(&self) -> Option<&Meta> {
        match &self.body {
            Body::Log(stored) => stored.get().entry.meta.as_deref(),
            Body::Queue { entry, meta, .. } => meta.as_deref().or(entry.meta.as_deref()),
        }
    }

    /// How an ack of this delivery would reach its group, for a transaction: the group's
    /// way, and the delivery count the ack is fenced by.
    pub(crate) fn group_ack(&self) -> Option<(&GroupAck<T>, u32)> {
        match &self.settle {
            Settle::Group(g) => Some((g, self.delivery_count)),
            _ => None,
        }
    }

    /// How an ack of this delivery would reach its queue, for a transaction.
    pub(crate) fn queue_ack(&self) -> Option<&QueueAck<T>> {
        match &self.settle {
            Settle::Queue(q) => Some(q),
            _ => None,
        }
    }

    /// The delivery was settled by a transaction's commit: dropping it does nothing more.
    pub(crate) fn disarm(&mut self) {
        self.settle = Settle::Nothing;
    }

    /// Settles the message as done: a queue deletes it, a group moves its position past it.
    /// Fails if a queue delivery had already ended, or if the store can no longer record it.
    pub(crate) fn ack(mut self) -> Result<(), Error> {
        match std::mem::replace(&mut self.settle, Settle::Nothing) {
            Settle::Nothing => Ok(()),
            Settle::Group(g) => {
                let acked = g.group.ack(&g.topic, self.partition, self.offset);
                observe::traced! {
                    if acked {
                        observe::event!(
                            "embus::topic",
                            TRACE,
                            topic = g.topic.name.as_str(),
                            group = g.group.name(),
                            partition = self.partition,
                            offset = self.offset,
                            delivery_count = self.delivery_count,
                            "ack"
                        );
                    }
                }
                let _ = acked;
                g.topic.context.store.can_record()
            }
            Settle::Queue(q) => {
                let acked = q.link.queue.ack(q.delivery, q.id);
                observe::traced! {
                    if acked.is_ok() {
                        observe::event!(
                            "embus::queue",
                            TRACE,
                            queue = q.link.queue.name.as_str(),
                            offset = self.offset,
                            delivery_count = self.delivery_count,
                            "ack"
                        );
                    }
                }
                q.settled(acked, self.offset)
            }
        }
    }

    /// Releases the message for redelivery, or to the dead-letter queue. Fails as `ack` does.
    pub(crate) fn nack(mut self) -> Result<(), Error> {
        self.release(ReleaseReason::Nack, None)
    }

    /// As [`nack`](Self::nack), but the message is not delivered again before `delay` has
    /// passed (instead of the backoff).
    pub(crate) fn nack_after(mut self, delay: Duration) -> Result<(), Error> {
        self.release(ReleaseReason::Nack, Some(delay))
    }

    /// Restarts a queue delivery's ack timeout. Fails if it had already ended.
    pub(crate) fn in_progress(&self) -> Result<(), Error> {
        match &self.settle {
            Settle::Queue(q) => q.settled(q.link.queue.extend(q.delivery), self.offset),
            Settle::Nothing | Settle::Group(_) => Ok(()),
        }
    }

    fn release(&mut self, reason: ReleaseReason, delay: Option<Duration>) -> Result<(), Error> {
        match self.release_quietly(reason, delay) {
            Settle::Nothing => Ok(()),
            Settle::Group(g) => g.topic.context.store.can_record(),
            Settle::Queue((q, released)) => q.settled(released, self.offset),
        }
    }

    /// Releases the message; returns how it was settled, to check (a drop does not).
    /// `delay`: how long it waits before it is delivered again (`None`: the backoff's wait).
    fn release_quietly(
        &mut self,
        reason: ReleaseReason,
        delay: Option<Duration>,
    ) -> Settle<T, (QueueAck<T>, Outcome)> {
        match std::mem::replace(&mut self.settle, Settle::Nothing) {
            Settle::Nothing => Settle::Nothing,
            Settle::Group(g) => {
                let why = match reason {
                    ReleaseReason::Nack => Why::Nack,
                    _ => Why::Dropped,
                };
                let released = g.group.release(
                    &g.topic,
                    self.partition,
                    self.offset,
                    g.member,
                    self.delivery_count,
                    delay,
                    why,
                );
                observe::traced! {
                    if released {
                        observe::event!(
                            "embus::topic",
                            DEBUG,
                            topic = g.topic.name.as_str(),
                            group = g.group.name(),
                            partition = self.partition,
                            offset = self.offset,
                            delivery_count = self.delivery_count,
                            reason = nack_reason(reason),
                            "nack"
                        );
                    }
                }
                let _ = released;
                Settle::Group(g)
            }
            Settle::Queue(q) => {
                let released = q.link.queue.release(q.delivery, reason, delay);
                observe::traced! {
                    if released.is_ok() {
                        observe::event!(
                            "embus::queue",
                            DEBUG,
                            queue = q.link.queue.name.as_str(),
                            offset = self.offset,
                            delivery_count = self.delivery_count,
                            reason = nack_reason(reason),
                            "nack"
                        );
                    }
                }
                Settle::Queue((q, released))
            }
        }
    }
}

observe::traced! {
    impl<T> Delivery<T> {
        /// Emits the `deliver` event of this delivery, just handed out from topic or queue
        /// `name` (`redeliver` if it was delivered before).
        #[inline]
        pub(crate) fn trace_delivered(&self, name: &str) {
            // Only when a subscriber may want the event (one inlined load otherwise): the
            // header scan is per delivery, and the events' own checks come after it.
            let level = if self.delivery_count > 1 {
                tracing::Level::DEBUG
            } else {
                tracing::Level::TRACE
            };
            if tracing::level_enabled!(level) {
                self.emit_delivered(name);
            }
        }

        /// [`trace_delivered`](Self::trace_delivered)'s event, once it may be wanted.
        fn emit_delivered(&self, name: &str) {
            let (partition, offset) = (self.partition, self.offset);
            let delivery_count = self.delivery_count;
            let again = delivery_count > 1;
            let traceparent = observe::traceparent(self.headers());
            match &self.settle {
                Settle::Queue(_) if again => observe::event!(
                    "embus::queue", DEBUG,
                    queue = name, offset, delivery_count, traceparent, "redeliver"
                ),
                Settle::Queue(_) => observe::event!(
                    "embus::queue", TRACE,
                    queue = name, offset, delivery_count, traceparent, "deliver"
                ),
                Settle::Group(g) if again => observe::event!(
                    "embus::topic", DEBUG,
                    topic = name, group = g.group.name(), partition, offset, delivery_count,
                    traceparent, "redeliver"
                ),
                Settle::Group(g) => observe::event!(
                    "embus::topic", TRACE,
                    topic = name, group = g.group.name(), partition, offset, delivery_count,
                    traceparent, "deliver"
                ),
                Settle::Nothing => observe::event!(
                    "embus::topic", TRACE,
                    topic = name, partition, offset, delivery_count, traceparent, "deliver"
                ),
            }
        }
    }

    /// The `reason` of a `nack` event.
    fn nack_reason(reason: ReleaseReason) -> &'static str {
        match reason {
            ReleaseReason::Nack => "nack",
            _ => "dropped",
        }
    }
}

impl<T> QueueAck<T> {
    /// `Ok` if the delivery was still live and the store can record what was done; else why
    /// the delivery had ended (from the queue when it still knows, else from whether the
    /// consumer is gone).
    fn settled(&self, live: Outcome, offset: u64) -> Result<(), Error> {
        if let Err(why) = live {
            return Err(self.ended(why, offset));
        }
        self.link.queue.context.store.can_record()
    }

    /// [`Error::DeliveryEnded`] for this delivery (message `offset`), which ended for `why`.
    pub(crate) fn ended(&self, why: Option<ReleaseReason>, offset: u64) -> Error {
        let reason = match why {
            Some(ReleaseReason::Timeout) => Ended::AckTimeout,
            Some(ReleaseReason::Dropped) => Ended::ConsumerDropped,
            _ if self.link.dropped.load(Ordering::Acquire) => Ended::ConsumerDropped,
            _ => Ended::AckTimeout,
        };
        Error::DeliveryEnded {
            queue: self.link.queue.name.clone(),
            offset,
            reason,
        }
    }
}

impl<T> Drop for Delivery<T> {
    fn drop(&mut self) {
        // Nobody is told: a dropped delivery that had already ended needs nothing more, and
        // the store is not asked whether it could record the release.
        let _ = self.release_quietly(ReleaseReason::Dropped, None);
    }
}

impl<T> fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("delivery_count", &self.delivery_count)
            .field("key", &self.key())
            .field("headers", self.headers())
            .finish_non_exhaustive()
    }
}

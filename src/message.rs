//! [`Message`]: what a consumer receives — the record, where it was stored, and how to settle it;
//! and [`Peeked`], a look at a stored message that changes nothing.

use std::fmt;
use std::time::SystemTime;

use crate::engine::Delivery;
use crate::error::Error;
use crate::record::Headers;
use crate::trace_context::{TRACEPARENT, TraceContext, TraceParentError};

/// A received message: payload, key, headers, partition, offset, timestamp and delivery count.
///
/// From a queue or a consumer group, settle it with [`ack`](Self::ack) or [`nack`](Self::nack).
/// Dropping it unsettled releases it for redelivery, like a nack (a dropped delivery). From a
/// plain subscriber both are no-ops: a subscriber's position is its own.
///
/// Payloads are shared, not copied, between the subscribers that receive them.
pub struct Message<T> {
    delivery: Delivery<T>,
}

/// The accessors [`Message`] and [`Peeked`] share: both wrap a `Delivery`.
macro_rules! record_accessors {
    () => {
        /// The payload.
        pub fn payload(&self) -> &T {
            self.delivery.payload()
        }

        /// The key, if the record had one.
        pub fn key(&self) -> Option<&[u8]> {
            self.delivery.key()
        }

        /// The headers.
        pub fn headers(&self) -> &Headers {
            self.delivery.headers()
        }

        /// The producer-chosen message id ([`Record::id`](crate::Record::id)), if it has one.
        pub fn id(&self) -> Option<&str> {
            self.delivery.headers().message_id()
        }

        /// The W3C trace context of its [`TRACEPARENT`](crate::TRACEPARENT) header
        /// ([`Record::trace_context`](crate::Record::trace_context)): `None` without one,
        /// `Some(Err(..))` if the header is not a valid `traceparent` (it is still in
        /// [`headers`](Self::headers), untouched).
        pub fn trace_context(&self) -> Option<Result<TraceContext, TraceParentError>> {
            let value = self.delivery.headers().get(TRACEPARENT)?;
            Some(TraceContext::from_header(value))
        }

        /// The partition (0 for a queue).
        pub fn partition(&self) -> u32 {
            self.delivery.partition()
        }

        /// The offset in the partition (for a queue, the message's sequence number).
        pub fn offset(&self) -> u64 {
            self.delivery.offset()
        }

        /// When the broker accepted the message, on its clock (with
        /// [`coarse_timestamps`](crate::BrokerBuilder::coarse_timestamps), usually a few
        /// milliseconds behind, at times tens). In a topic, never
        /// earlier than the message before it in the same partition.
        pub fn timestamp(&self) -> SystemTime {
            self.delivery.timestamp()
        }
    };
}

impl<T> Message<T> {
    pub(crate) fn new(delivery: Delivery<T>) -> Self {
        Self { delivery }
    }

    record_accessors!();

    /// The delivery it wraps, to settle elsewhere (a transaction).
    pub(crate) fn into_delivery(self) -> Delivery<T> {
        self.delivery
    }

    /// The delivery it wraps.
    pub(crate) fn delivery(&self) -> &Delivery<T> {
        &self.delivery
    }

    /// How many times this message has been delivered, this time included (1 for a first
    /// delivery; always 1 from a plain subscriber).
    pub fn delivery_count(&self) -> u32 {
        self.delivery.delivery_count()
    }

    /// Settles the message as done: a queue deletes it, a group moves its position past it.
    /// A no-op for a plain subscriber.
    ///
    /// Acks are stored with the next commit, not waited for: a crash right after may
    /// redeliver the message, never lose it.
    ///
    /// # Errors
    /// - [`Error::DeliveryEnded`]: a queue delivery had already ended, so this did nothing: its
    ///   ack timeout passed ([`Ended::AckTimeout`](crate::Ended::AckTimeout); one that passed
    ///   by less than the coarse clock lags may still be acked, see
    ///   [`ack_timeout`](crate::QueueOptions::ack_timeout)), or the
    ///   [`Consumer`](crate::Consumer) that received it was dropped
    ///   ([`Ended::ConsumerDropped`](crate::Ended::ConsumerDropped)). The message is delivered
    ///   again (or dead-lettered).
    /// - [`Error::Closed`] (durable broker closed) or [`Error::Poisoned`] (a commit failed):
    ///   the ack cannot be stored, so a reopened broker delivers the message again.
    ///
    /// ```
    /// use embus::{Broker, Ended, Error};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Broker::memory();
    /// let jobs = bus.queue::<u32>("jobs")?;
    /// jobs.producer().send(7)?;
    /// // The consumer is a temporary: it is dropped at the `;`, and releases what it held.
    /// let job = jobs.consumer().recv()?;
    /// assert!(matches!(
    ///     job.ack(),
    ///     Err(Error::DeliveryEnded { reason: Ended::ConsumerDropped, .. })
    /// ));
    /// // Keep the consumer while its messages are worked on.
    /// let mut worker = jobs.consumer();
    /// let job = worker.recv()?;
    /// job.ack()?;
    /// # Ok(()) }
    /// ```
    pub fn ack(self) -> Result<(), Error> {
        self.delivery.ack()
    }

    /// Releases the message for redelivery (to any consumer of the queue, or to the partition's
    /// owner in a group), or to the dead-letter queue once `max_deliveries` is reached. A no-op
    /// for a plain subscriber.
    ///
    /// # Errors
    /// As for [`ack`](Self::ack): a nack of an ended delivery did nothing (the message is
    /// already being redelivered), and one that cannot be stored says so.
    pub fn nack(self) -> Result<(), Error> {
        self.delivery.nack()
    }

    /// As [`nack`](Self::nack), but the message is not delivered again before `delay` has
    /// passed on the broker's clock, whatever the backoff says (NATS's `NakWithDelay`). A
    /// no-op for a plain subscriber.
    ///
    /// # Errors
    /// As for [`nack`](Self::nack).
    pub fn nack_after(self, delay: std::time::Duration) -> Result<(), Error> {
        self.delivery.nack_after(delay)
    }

    /// Tells the queue this message is still being worked on: its ack timeout starts again
    /// from now, as with JetStream's `AckProgress`. Call it from long work, more often than the
    /// ack timeout. Nothing to do without an ack timeout, or for a group or subscriber message.
    ///
    /// # Errors
    /// [`Error::DeliveryEnded`] if the delivery had already ended (its timeout passed, or its
    /// consumer was dropped): stop, someone else may be working on it now.
    pub fn in_progress(&self) -> Result<(), Error> {
        self.delivery.in_progress()
    }
}

impl<T> fmt::Debug for Message<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.delivery.fmt(f)
    }
}

/// A copy of a stored message, from [`Queue::peek`](crate::Queue::peek) or
/// [`Topic::get`](crate::Topic::get): looking changes nothing (no delivery, no delivery count,
/// no position moves), so there is nothing to settle.
pub struct Peeked<T> {
    delivery: Delivery<T>,
}

impl<T> Peeked<T> {
    /// Wraps a delivery that settles nothing.
    pub(crate) fn new(delivery: Delivery<T>) -> Self {
        Self { delivery }
    }

    record_accessors!();

    /// How many times the message has been delivered so far (0 if never; always 0 for a
    /// topic message).
    pub fn delivery_count(&self) -> u32 {
        self.delivery.delivery_count()
    }
}

impl<T> fmt::Debug for Peeked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.delivery.fmt(f)
    }
}

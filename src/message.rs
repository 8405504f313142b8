//! [`Message`]: what a consumer receives — the record, where it was stored, and how to settle it.

use std::fmt;
use std::time::SystemTime;

use crate::engine::Delivery;
use crate::error::Error;
use crate::record::Headers;

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

impl<T> Message<T> {
    pub(crate) fn new(delivery: Delivery<T>) -> Self {
        Self { delivery }
    }

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

    /// The partition (0 for a queue).
    pub fn partition(&self) -> u32 {
        self.delivery.partition()
    }

    /// The offset in the partition (for a queue, the message's sequence number).
    pub fn offset(&self) -> u64 {
        self.delivery.offset()
    }

    /// When the broker accepted the message, on its clock.
    pub fn timestamp(&self) -> SystemTime {
        self.delivery.timestamp()
    }

    /// How many times this message has been delivered, this time included (1 for a first
    /// delivery; always 1 from a plain subscriber).
    pub fn delivery_count(&self) -> u32 {
        self.delivery.delivery_count()
    }

    /// Settles the message as done: a queue deletes it, a group moves its position past it.
    /// Acking a queue delivery whose ack timeout already passed does nothing (it is being
    /// redelivered). A no-op for a plain subscriber.
    ///
    /// # Errors
    /// None in memory mode; the `Result` is for the durable store.
    pub fn ack(self) -> Result<(), Error> {
        self.delivery.ack();
        Ok(())
    }

    /// Releases the message for redelivery (to any consumer of the queue, or to the partition's
    /// owner in a group), or to the dead-letter queue once `max_deliveries` is reached. A no-op
    /// for a plain subscriber.
    ///
    /// # Errors
    /// None in memory mode; the `Result` is for the durable store.
    pub fn nack(self) -> Result<(), Error> {
        self.delivery.nack();
        Ok(())
    }
}

impl<T> fmt::Debug for Message<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.delivery.fmt(f)
    }
}

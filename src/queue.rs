//! Point-to-point: [`Queue`], where each message goes to one consumer and is deleted once acked.
//!
//! # Ordering
//!
//! First deliveries go out in send order. A redelivered message goes back to the front of the
//! queue, so it is retried before newer messages, but after whatever was handed out meanwhile.
//!
//! # Redelivery
//!
//! A delivery ends with [`Message::ack`](crate::Message::ack) (the message is deleted) or without
//! one: [`Message::nack`](crate::Message::nack), dropping the message, dropping its consumer, or
//! the ack timeout passing on the broker's clock. Then the message is ready again and its
//! delivery count rises by one on the next delivery. Delivery is at-least-once.
//!
//! # Dead letters
//!
//! With [`QueueOptions::max_deliveries`](crate::QueueOptions::max_deliveries), a message whose
//! delivery number `max_deliveries` ends without an ack moves to the dead-letter queue (an
//! ordinary `Queue<T>`), keeping its payload, key, headers and timestamp, with headers added:
//! [`DEAD_LETTER_QUEUE`], [`DEAD_LETTER_REASON`] (`nack`, `dropped` or `ack-timeout`) and
//! [`DEAD_LETTER_DELIVERIES`].
//!
//! # Capacity
//!
//! A queue holds at most its capacity of unacked messages (ready plus in flight): `send` blocks
//! until an ack makes room and `try_send` hands the message back in
//! [`TrySendError::Full`](crate::TrySendError::Full).

use std::fmt;
use std::sync::Arc;

use crate::consumer::Consumer;
use crate::engine::Life;
use crate::engine::queue::{QueueConsumer, QueueCore};
use crate::error::{Error, Undecodable};
use crate::options::QueueOptions;
use crate::producer::Producer;
use crate::record::Payload;

/// A handle to a queue. Cheap to clone; keeps the broker open.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use embus::{Broker, QueueOptions};
///
/// let bus = Broker::memory();
/// let jobs = bus.queue_with::<String>("jobs", QueueOptions::default().max_deliveries(2).dead_letter("jobs.dead"))?;
/// jobs.producer().send("flaky".to_string())?;
/// let mut worker = jobs.consumer();
/// worker.recv()?.nack()?;
/// worker.recv()?.nack()?; // second delivery fails too: dead-lettered
/// let dead = bus.queue::<String>("jobs.dead")?;
/// let mut letters = dead.consumer(); // keep it while its messages are worked on
/// let d = letters.recv()?;
/// assert_eq!(d.headers().get(embus::DEAD_LETTER_REASON), Some(&b"nack"[..]));
/// d.ack()?;
/// # Ok(()) }
/// ```
pub struct Queue<T> {
    core: Arc<QueueCore<T>>,
    life: Arc<Life>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self {
            core: Arc::clone(&self.core),
            life: Arc::clone(&self.life),
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.core.name)
            .field("options", &self.core.options())
            .finish()
    }
}

impl<T: Payload> Queue<T> {
    pub(crate) fn new(core: Arc<QueueCore<T>>, life: Arc<Life>) -> Self {
        Self { core, life }
    }

    /// A producer for this queue.
    pub fn producer(&self) -> Producer<T> {
        Producer::queue(Arc::clone(&self.core), Arc::clone(&self.life))
    }

    /// A consumer. Consumers of one queue compete: each message goes to one of them.
    pub fn consumer(&self) -> Consumer<T> {
        Consumer::queue(QueueConsumer::new(Arc::clone(&self.core)))
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// The options the queue was created with.
    pub fn options(&self) -> &QueueOptions {
        self.core.options()
    }

    /// Messages ready for delivery (not counting those in flight).
    pub fn len(&self) -> usize {
        self.core.ready_len()
    }

    /// Whether no message is ready (`len() == 0`; some may still be in flight).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages delivered and not yet acked, nacked or timed out.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight()
    }

    /// How many messages this queue has moved to its dead-letter queue so far.
    pub fn dead_lettered(&self) -> u64 {
        self.core.dead_lettered()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.core.options().capacity_limit()
    }

    /// Durable mode: stored messages that failed their checksum or did not decode as `T` when
    /// this run restored the queue, with their raw bytes. They are not delivered and stay in
    /// the file untouched (nothing is deleted on a guess) until
    /// [`dead_letter_undecodable`](Self::dead_letter_undecodable) moves them; the rest of the
    /// queue works.
    pub fn undecodable(&self) -> Vec<Undecodable> {
        self.core.undecodable()
    }

    /// Durable mode: moves every message [`undecodable`](Self::undecodable) lists to this
    /// queue's dead-letter queue, with the reason `undecodable` (key, headers and payload bytes
    /// kept; a message that failed its checksum becomes the payload bytes of the dead letter).
    /// They stay undecodable there (its [`undecodable`](Self::undecodable) lists them from then
    /// on; the dead-letter headers are in the stored record), and are never delivered as a
    /// payload. Returns how many moved.
    ///
    /// # Errors
    /// [`Error::NoDeadLetterQueue`] if the queue has none; [`Error::Closed`];
    /// [`Error::Poisoned`] if the store can no longer record the move.
    pub fn dead_letter_undecodable(&self) -> Result<usize, Error> {
        self.core.check_live()?;
        self.core.dead_letter_undecodable()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use crate::clock::step_wall_clock;
    use crate::{Broker, QueueOptions, TryRecvError};

    const HOUR: i64 = 3_600_000_000_000;

    /// Ack deadlines run on monotonic time: a wall-clock step (NTP, an operator) neither
    /// times out a delivery early nor holds one back; timestamps still follow the wall clock.
    #[test]
    fn a_wall_clock_step_does_not_move_ack_deadlines() {
        let bus = Broker::memory();
        let options = QueueOptions::default().ack_timeout(Duration::from_secs(60));
        let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
        let mut worker = jobs.consumer();
        jobs.producer().send(1).unwrap();
        let held = worker.try_recv().unwrap();

        step_wall_clock(2 * HOUR);
        let stamped_at = SystemTime::now() + Duration::from_secs(2 * 3600);
        jobs.producer().send(2).unwrap();
        let second = worker.try_recv().unwrap();
        assert_eq!(*second.payload(), 2, "the first is still in flight");
        let skew = second
            .timestamp()
            .duration_since(stamped_at)
            .unwrap_or_else(|e| e.duration());
        assert!(
            skew < Duration::from_secs(60),
            "timestamps follow the wall clock"
        );
        assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
        assert_eq!(jobs.in_flight(), 2);

        step_wall_clock(-4 * HOUR);
        held.ack().unwrap();
        second.ack().unwrap();
        step_wall_clock(2 * HOUR);
        assert_eq!((jobs.len(), jobs.in_flight()), (0, 0));
    }
}

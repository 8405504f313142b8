//! Point-to-point: [`Queue`], where each message goes to one consumer and is deleted once acked.
//!
//! # Ordering
//!
//! First deliveries go out in send order. A redelivered message goes back to the front of the
//! queue once its backoff has passed, so it is retried before newer messages, but after
//! whatever was handed out meanwhile. A delayed message
//! ([`Record::delay`](crate::Record::delay), [`Record::deliver_at`](crate::Record::deliver_at))
//! joins the back of the queue when it falls due, as if sent then (due order among delayed
//! messages, send order for equal due times); it holds back nothing sent after it.
//!
//! With [`QueueOptions::priorities`](crate::QueueOptions::priorities), higher priorities go
//! first ([`Record::priority`](crate::Record::priority)); the order above holds within each
//! priority (a redelivery goes in front of its own priority). A queue without priorities keeps
//! one list and pays nothing for them.
//!
//! # Time
//!
//! Delays, backoff and expiry run on the broker's clock
//! ([`ManualClock::advance`](crate::ManualClock::advance) drives them): a due time or expiry
//! given as a wall-clock time is converted to the broker's monotonic time when the message is
//! queued (at the send, and again when a durable queue is restored), so a later step of the
//! system clock does not move it. With the system clock, the broker's timer thread wakes the
//! queue at the next due time or expiry: blocked consumers get the message then, and expired
//! messages move on with nobody looking. Due times, expiry times and priorities are stored with
//! the record, so they survive a reopen (restoring a queue reads its rows anyway: no extra
//! scan); a backoff in progress does not (reopening redelivers at once, as for deliveries in
//! flight).
//!
//! [`Broker::wait_idle`](crate::Broker::wait_idle) counts a message waiting out a delay or a
//! backoff as work still to do (the queue is not idle until it is delivered and acked, expires
//! or is purged): on a [`ManualClock`](crate::ManualClock), advance the clock past it first.
//!
//! # Expiry
//!
//! A message expires [`Record::ttl`](crate::Record::ttl) or
//! [`QueueOptions::message_ttl`](crate::QueueOptions::message_ttl) after its timestamp
//! (whichever is shorter). An expired message is never delivered: it moves to the dead-letter
//! queue with the reason `expired` (counted by [`Queue::dead_lettered`]) or, without one, is
//! deleted and counted by [`Queue::expired`]. A message in flight does not expire (someone is
//! working on it); if its delivery ends without an ack after its expiry time, it expires then
//! instead of being redelivered. A dead letter keeps its original timestamp, so a dead-letter
//! queue's `message_ttl` counts from the original send.
//!
//! # Redelivery
//!
//! A delivery ends with [`Message::ack`](crate::Message::ack) (the message is deleted) or without
//! one: [`Message::nack`](crate::Message::nack), dropping the message, dropping its consumer, or
//! the ack timeout passing on the broker's clock. Then the message waits out the queue's
//! [`backoff`](crate::QueueOptions::backoff) for its delivery count (by default the first retry
//! is immediate, then 10 ms doubling up to 10 s), or the wait given to
//! [`Message::nack_after`](crate::Message::nack_after), and is ready again; its delivery count
//! rises by one on the next delivery. A message waiting out its backoff holds back no other.
//! Delivery is at-least-once.
//!
//! # Dead letters
//!
//! With [`QueueOptions::max_deliveries`](crate::QueueOptions::max_deliveries), a message whose
//! delivery number `max_deliveries` ends without an ack moves to the dead-letter queue (an
//! ordinary `Queue<T>`), keeping its payload, key, headers and timestamp, with headers added:
//! [`DEAD_LETTER_QUEUE`], [`DEAD_LETTER_REASON`] (`nack`, `dropped`, `ack-timeout` or
//! `expired`) and [`DEAD_LETTER_DELIVERIES`]. [`Queue::redrive`] moves them back.
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
use crate::message::Peeked;
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

    /// Messages ready for delivery (not counting those in flight, or those waiting out a
    /// delay or backoff: see [`delayed`](Self::delayed)).
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

    /// Messages waiting out a delay ([`Record::delay`](crate::Record::delay)) or a redelivery
    /// backoff: not ready yet, not in flight.
    pub fn delayed(&self) -> usize {
        self.core.waiting()
    }

    /// How many messages this queue has moved to its dead-letter queue so far (in this run),
    /// whatever the reason: expired messages with a dead-letter queue count here.
    pub fn dead_lettered(&self) -> u64 {
        self.core.dead_lettered()
    }

    /// How many expired messages this queue has dropped so far (in this run), having no
    /// dead-letter queue to move them to. See [`Record::ttl`](crate::Record::ttl) and
    /// [`QueueOptions::message_ttl`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use embus::{Broker, ManualClock, QueueOptions};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let clock = ManualClock::new();
    /// let bus = Broker::builder().clock(clock.clone()).open()?;
    /// let jobs = bus.queue_with::<u32>("jobs", QueueOptions::default().message_ttl(Duration::from_secs(60)))?;
    /// jobs.producer().send(1)?;
    /// clock.advance(Duration::from_secs(61));
    /// assert_eq!((jobs.len(), jobs.expired()), (0, 1));
    /// # Ok(()) }
    /// ```
    pub fn expired(&self) -> u64 {
        self.core.expired()
    }

    /// Removes every message that is not in flight (ready, delayed or waiting out a backoff)
    /// and returns how many; in-flight deliveries stay, as with RabbitMQ's `queue.purge`. Their
    /// capacity is free at once (blocked producers go on). Durable: the deletes ride the next
    /// commit.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = embus::Broker::memory();
    /// let jobs = bus.queue::<u32>("jobs")?;
    /// jobs.producer().send_batch(vec![1, 2, 3])?;
    /// let mut worker = jobs.consumer();
    /// let held = worker.recv()?;
    /// assert_eq!(jobs.purge()?, 2);
    /// assert_eq!((jobs.len(), jobs.in_flight()), (0, 1));
    /// held.ack()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Deleted`] if the queue was deleted; [`Error::Closed`]; [`Error::Poisoned`] if
    /// the store can no longer record the deletes.
    pub fn purge(&self) -> Result<usize, Error> {
        self.core.purge()
    }

    /// Copies of the next `n` messages, changing nothing: the ready ones in delivery order,
    /// then those waiting out a delay or backoff in due order. Messages in flight are not
    /// shown.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = embus::Broker::memory();
    /// let jobs = bus.queue::<u32>("jobs")?;
    /// jobs.producer().send_batch(vec![1, 2, 3])?;
    /// let next: Vec<u32> = jobs.peek(2).iter().map(|p| *p.payload()).collect();
    /// assert_eq!(next, [1, 2]);
    /// assert_eq!(jobs.len(), 3);
    /// # Ok(()) }
    /// ```
    pub fn peek(&self, n: usize) -> Vec<Peeked<T>> {
        let looked = self.core.peek(n);
        looked.into_iter().map(Peeked::new).collect()
    }

    /// Moves up to `limit` ready messages of this queue (usually a dead-letter queue) to
    /// `to`, in delivery order, and returns how many moved. Each keeps its payload, key,
    /// headers (the dead-letter headers included) and timestamp; its delivery count starts
    /// again at 0, and a delay, time-to-live or priority it was sent with is not carried over.
    /// `to`'s own [`message_ttl`](QueueOptions::message_ttl), if any, counts from that kept
    /// timestamp (the original send): a message older than it expires at once there. It stops
    /// early when this queue has no ready message left or `to` is full (`to`'s
    /// capacity holds; a redrive never blocks). Durable: each message's delete here and insert
    /// there are one change of one commit, so a crash leaves it in exactly one of the two.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use embus::{Broker, QueueOptions};
    ///
    /// let bus = Broker::memory();
    /// let jobs = bus.queue_with::<u32>("jobs", QueueOptions::default().max_deliveries(1).dead_letter("jobs.dead"))?;
    /// jobs.producer().send(7)?;
    /// jobs.consumer().recv()?.nack()?; // dead-lettered
    /// let dead = bus.queue::<u32>("jobs.dead")?;
    /// assert_eq!(dead.redrive(&jobs, 100)?, 1);
    /// let mut worker = jobs.consumer();
    /// let again = worker.recv()?;
    /// assert_eq!((again.payload(), again.delivery_count()), (&7, 1));
    /// assert_eq!(again.headers().get(embus::DEAD_LETTER_REASON), Some(&b"nack"[..]));
    /// again.ack()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidOption`] (option `redrive`) if `to` is this queue; [`Error::Deleted`] if
    /// either queue was deleted; [`Error::Closed`]; [`Error::Poisoned`] if the store can no
    /// longer record the moves.
    pub fn redrive(&self, to: &Queue<T>, limit: usize) -> Result<usize, Error> {
        self.core.redrive(&to.core, limit)
    }

    /// Adds a bridge's figures to the broker's snapshots while it lives.
    #[cfg(any(feature = "nats", feature = "amqp"))]
    pub(crate) fn add_reporter(&self, reporter: std::sync::Weak<dyn crate::engine::Reporter>) {
        self.core.context.add_reporter(reporter);
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

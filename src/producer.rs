//! [`Producer`]: sends to a topic or a queue — `send`, `try_send`, `send_timeout`,
//! `send_deadline`, `send_record`, `send_batch`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::notify::{Deadline, Wait};
use crate::engine::queue::QueueCore;
use crate::engine::topic::TopicCore;
use crate::engine::tx::TxCore;
use crate::engine::{Fail, Life, Sent};
use crate::error::{Error, SendError, SendTimeoutError, TrySendError};
use crate::record::{Payload, Receipt, Record};
use crate::store::Ticket;

/// Sends messages to one topic or queue. Cheap to clone; keeps the broker open.
///
/// Every failed send hands the message back inside its error ([`SendError::into_inner`]).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use embus::{Broker, Record, Receipt};
/// let bus = Broker::memory();
/// let p = bus.topic::<String>("orders")?.producer();
/// let r: Receipt = p.send("first".to_string())?;
/// assert_eq!((r.partition, r.offset), (0, 0));
/// let r = p.send_record(Record::new("second".to_string()).key("customer-42").header("trace-id", b"abc"))?;
/// assert_eq!(r.offset, 1);
/// # Ok(()) }
/// ```
pub struct Producer<T> {
    target: Target<T>,
    _life: Arc<Life>,
}

enum Target<T> {
    Topic(Arc<TopicCore<T>>),
    Queue(Arc<QueueCore<T>>),
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        let target = match &self.target {
            Target::Topic(t) => Target::Topic(Arc::clone(t)),
            Target::Queue(q) => Target::Queue(Arc::clone(q)),
        };
        Self {
            target,
            _life: Arc::clone(&self._life),
        }
    }
}

impl<T: Payload> Producer<T> {
    pub(crate) fn topic(core: Arc<TopicCore<T>>, life: Arc<Life>) -> Self {
        Self {
            target: Target::Topic(core),
            _life: life,
        }
    }

    pub(crate) fn queue(core: Arc<QueueCore<T>>, life: Arc<Life>) -> Self {
        Self {
            target: Target::Queue(core),
            _life: life,
        }
    }

    fn publish(&self, record: Record<T>, deadline: Deadline) -> Result<Receipt, (Record<T>, Fail)> {
        match &self.target {
            Target::Topic(t) => t.publish(record, deadline),
            Target::Queue(q) => q.publish(record, deadline),
        }
    }

    /// One attempt to send for [`SendFut`](crate::SendFut): on `Full`, registers waiter `id` as
    /// `wait` says. A topic's partition is picked once and kept in `partition`.
    pub(crate) fn try_send_waiting(
        &self,
        record: Record<T>,
        partition: &mut Option<u32>,
        id: u64,
        wait: Wait<'_>,
    ) -> Result<Sent, (Record<T>, Fail)> {
        match &self.target {
            Target::Topic(t) => {
                let p = *partition.get_or_insert_with(|| t.pick_partition(record.key_ref()));
                t.try_publish(p, record, id, wait)
            }
            Target::Queue(q) => q.try_publish(record, id, wait),
        }
    }

    /// Adds `record` to a transaction of the same broker (sent on its commit).
    pub(crate) fn add_to(
        &self,
        tx: &mut TxCore,
        record: Record<T>,
    ) -> Result<(), SendError<Record<T>>> {
        let (context, name) = match &self.target {
            Target::Topic(t) => (&t.context, &t.name),
            Target::Queue(q) => (&q.context, &q.name),
        };
        if !Arc::ptr_eq(context, &tx.context) {
            let error = Error::ForeignBroker { name: name.clone() };
            return Err(SendError::Failed(record, error));
        }
        let added = match &self.target {
            Target::Topic(t) => t.tx_send(tx, record),
            Target::Queue(q) => q.tx_send(tx, record),
        };
        added.map_err(|(record, fail)| match fail {
            Fail::Disconnected | Fail::Full => SendError::Disconnected(record),
            Fail::Failed(e) => SendError::Failed(record, e),
        })
    }

    /// Whether a staged send is stored ([`SendFut`](crate::SendFut) on a durable store).
    pub(crate) fn poll_stored(
        &self,
        ticket: Ticket,
        waker: &std::task::Waker,
    ) -> std::task::Poll<Result<(), Error>> {
        let context = match &self.target {
            Target::Topic(t) => &t.context,
            Target::Queue(q) => &q.context,
        };
        context.store.poll_stored(ticket, waker)
    }

    /// Takes back a staged record whose commit failed; `None` if it was published after all.
    pub(crate) fn take_back(&self, receipt: Receipt) -> Option<Record<T>> {
        match &self.target {
            Target::Topic(t) => t.take_back(receipt),
            Target::Queue(q) => q.take_back(receipt),
        }
    }

    /// Sends a message, waiting for room if the queue is full or the topic is full under
    /// [`Overflow::Block`](crate::Overflow::Block).
    ///
    /// # Errors
    /// [`SendError::Disconnected`] if the broker is closed, with the message.
    pub fn send(&self, msg: T) -> Result<Receipt, SendError<T>> {
        self.send_record(Record::new(msg))
            .map_err(|e| e.map(Record::into_payload))
    }

    /// Sends a record with a key and headers, waiting for room like [`send`](Self::send).
    ///
    /// # Errors
    /// As [`send`](Self::send); the record is handed back.
    pub fn send_record(&self, record: Record<T>) -> Result<Receipt, SendError<Record<T>>> {
        self.publish(record, Deadline::Never)
            .map_err(|(record, fail)| match fail {
                Fail::Disconnected | Fail::Full => SendError::Disconnected(record),
                Fail::Failed(e) => SendError::Failed(record, e),
            })
    }

    /// Sends a message only if there is room now.
    ///
    /// # Errors
    /// [`TrySendError::Full`] or [`TrySendError::Disconnected`], with the message.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use embus::{Broker, QueueOptions, TrySendError};
    /// let bus = Broker::memory();
    /// let q = bus.queue_with::<u32>("small", QueueOptions::default().capacity(1))?;
    /// let p = q.producer();
    /// p.try_send(1)?;
    /// match p.try_send(2) {
    ///     Err(TrySendError::Full(msg)) => assert_eq!(msg, 2),
    ///     other => panic!("expected Full, got {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_send(&self, msg: T) -> Result<Receipt, TrySendError<T>> {
        self.try_send_record(Record::new(msg))
            .map_err(|e| e.map(Record::into_payload))
    }

    /// Sends a record with a key and headers only if there is room now.
    ///
    /// # Errors
    /// As [`try_send`](Self::try_send); the record is handed back.
    pub fn try_send_record(&self, record: Record<T>) -> Result<Receipt, TrySendError<Record<T>>> {
        self.publish(record, Deadline::Now)
            .map_err(|(record, fail)| match fail {
                Fail::Full => TrySendError::Full(record),
                Fail::Disconnected => TrySendError::Disconnected(record),
                Fail::Failed(e) => TrySendError::Failed(record, e),
            })
    }

    /// Sends a message, waiting at most `timeout` (real time) for room.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] or [`SendTimeoutError::Disconnected`], with the message.
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<Receipt, SendTimeoutError<T>> {
        self.send_record_timeout(Record::new(msg), timeout)
            .map_err(|e| e.map(Record::into_payload))
    }

    /// Sends a message, waiting until `deadline` (real time) for room.
    ///
    /// # Errors
    /// As [`send_timeout`](Self::send_timeout).
    pub fn send_deadline(&self, msg: T, deadline: Instant) -> Result<Receipt, SendTimeoutError<T>> {
        self.send_record_deadline(Record::new(msg), deadline)
            .map_err(|e| e.map(Record::into_payload))
    }

    /// Sends a record, waiting at most `timeout` (real time) for room.
    ///
    /// # Errors
    /// As [`send_timeout`](Self::send_timeout); the record is handed back.
    pub fn send_record_timeout(
        &self,
        record: Record<T>,
        timeout: Duration,
    ) -> Result<Receipt, SendTimeoutError<Record<T>>> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.send_record_deadline(record, deadline),
            None => self.send_record(record).map_err(SendTimeoutError::from),
        }
    }

    /// Sends a record, waiting until `deadline` (real time) for room.
    ///
    /// # Errors
    /// As [`send_timeout`](Self::send_timeout); the record is handed back.
    pub fn send_record_deadline(
        &self,
        record: Record<T>,
        deadline: Instant,
    ) -> Result<Receipt, SendTimeoutError<Record<T>>> {
        self.publish(record, Deadline::At(deadline))
            .map_err(|(record, fail)| match fail {
                Fail::Full => SendTimeoutError::Timeout(record),
                Fail::Disconnected => SendTimeoutError::Disconnected(record),
                Fail::Failed(e) => SendTimeoutError::Failed(record, e),
            })
    }

    /// Sends messages, waiting for room like [`send`](Self::send), and returns one receipt per
    /// message, in order. Messages for one partition keep their order; a topic takes each
    /// partition's share under one lock and one clock read.
    ///
    /// # Errors
    /// If the broker closes part-way, the error holds the messages that were not sent, in
    /// order (the others were).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = embus::Broker::memory();
    /// let receipts = bus.topic::<u32>("t")?.producer().send_batch(vec![1, 2, 3])?;
    /// assert_eq!(receipts.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1, 2]);
    /// # Ok(()) }
    /// ```
    pub fn send_batch(&self, msgs: Vec<T>) -> Result<Vec<Receipt>, SendError<Vec<T>>> {
        let records: Vec<Record<T>> = msgs.into_iter().map(Record::new).collect();
        self.send_record_batch(records)
            .map_err(|e| e.map(|unsent| unsent.into_iter().map(Record::into_payload).collect()))
    }

    /// [`send_batch`](Self::send_batch) of [`Record`]s (keys, headers): one store call per
    /// partition, and for a durable broker one commit.
    ///
    /// # Errors
    /// As [`send_batch`](Self::send_batch), handing the unsent records back; on a compacted
    /// topic, a record without a key refuses the whole batch
    /// ([`Error::KeyRequired`](crate::Error::KeyRequired)).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use embus::Record;
    /// let bus = embus::Broker::memory();
    /// let producer = bus.topic::<u32>("t")?.producer();
    /// let batch = vec![Record::new(1).key("a"), Record::new(2).key("b")];
    /// assert_eq!(producer.send_record_batch(batch)?.len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn send_record_batch(
        &self,
        records: Vec<Record<T>>,
    ) -> Result<Vec<Receipt>, SendError<Vec<Record<T>>>> {
        let result = match &self.target {
            Target::Topic(t) => t.publish_batch(records),
            Target::Queue(q) => q.publish_batch(records),
        };
        result.map_err(|(unsent, fail)| match fail {
            Fail::Failed(e) => SendError::Failed(unsent, e),
            Fail::Full | Fail::Disconnected => SendError::Disconnected(unsent),
        })
    }
}

impl<T> Producer<T> {
    /// The name of the topic or queue this producer sends to.
    pub fn name(&self) -> &str {
        match &self.target {
            Target::Topic(t) => &t.name,
            Target::Queue(q) => &q.name,
        }
    }

    /// Forgets waiter `id` (a dropped [`SendFut`](crate::SendFut)).
    pub(crate) fn forget_waiter(&self, partition: Option<u32>, id: u64) {
        match &self.target {
            Target::Topic(t) => {
                if let Some(p) = partition {
                    t.forget_writer(p, id);
                }
            }
            Target::Queue(q) => q.forget_writer(id),
        }
    }

    pub(crate) fn next_waiter_id(&self) -> u64 {
        match &self.target {
            Target::Topic(t) => t.context.next_id(),
            Target::Queue(q) => q.context.next_id(),
        }
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, name) = match &self.target {
            Target::Topic(t) => ("topic", &t.name),
            Target::Queue(q) => ("queue", &q.name),
        };
        f.debug_struct("Producer").field(kind, name).finish()
    }
}

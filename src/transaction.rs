//! [`Transaction`]: sends to any number of topics and queues, and acks, that take effect
//! together or not at all ([`Broker::transaction`](crate::Broker::transaction)).

use std::fmt;
use std::sync::Arc;

use crate::engine::Life;
use crate::engine::queue::QueuePart;
use crate::engine::topic::TopicPart;
use crate::engine::tx::TxCore;
use crate::error::{Error, SendError};
use crate::message::Message;
use crate::producer::Producer;
use crate::record::{Payload, Receipt, Record};

/// Sends and acks that commit together: either all of them take effect or none does.
///
/// - Nothing sent in a transaction is visible to any consumer before [`commit`](Self::commit),
///   and then all of it is (in a durable broker, once it is stored: one commit for all of it).
///   Each topic partition and queue publishes its share in turn, each as one run, so a
///   consumer of one may see its share a moment before a consumer of another sees theirs,
///   as with Kafka's transaction markers; none sees any of it before the commit.
/// - An ack ([`ack`](Self::ack)) takes effect only with the commit. A group's ack is *fenced*:
///   if the member no longer holds the message when the transaction commits (its partition
///   went to another member, or the delivery timed out and was delivered again), the commit
///   fails with [`Error::Fenced`] and sends nothing, so a consume-transform-produce loop
///   produces each input's outputs exactly once.
/// - Dropping the transaction, or [`abort`](Self::abort), sends nothing and releases the
///   messages it acked for redelivery, as a nack would.
/// - A commit never waits for room: a topic under [`Overflow::Block`](crate::Overflow::Block)
///   or a queue without room fails it at once with [`Error::Full`], as `try_send` does.
///
/// It works the same in memory and durable mode. A commit consumes the transaction, so it
/// cannot be committed twice:
///
/// ```compile_fail
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = embus::Broker::memory();
/// let tx = bus.transaction()?;
/// tx.commit()?;
/// tx.commit()?; // error: use of moved value `tx`
/// # Ok(()) }
/// ```
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use embus::Broker;
/// let bus = Broker::memory();
/// let orders = bus.topic::<String>("orders")?;
/// let mut audit = orders.subscribe(embus::Start::Earliest)?;
/// let emails = bus.queue::<String>("emails")?;
///
/// let mut tx = bus.transaction()?;
/// tx.send(&orders.producer(), "order 1".to_string())?;
/// tx.send(&emails.producer(), "mail for order 1".to_string())?;
/// assert!(audit.try_recv().is_err()); // nothing visible before the commit
/// let receipts = tx.commit()?;
/// assert_eq!(receipts.len(), 2);
/// assert_eq!(audit.recv()?.payload(), "order 1");
/// # Ok(()) }
/// ```
#[must_use = "a transaction does nothing until it is committed"]
pub struct Transaction {
    core: TxCore,
    _life: Arc<Life>,
}

impl Transaction {
    pub(crate) fn new(core: TxCore, life: Arc<Life>) -> Self {
        Self { core, _life: life }
    }

    /// Adds a message for `producer`'s topic or queue, sent on [`commit`](Self::commit).
    ///
    /// # Errors
    /// The message is handed back: [`SendError::Disconnected`] if the broker is closed;
    /// [`SendError::Failed`] with [`Error::ForeignBroker`] for a producer of another broker,
    /// [`Error::Deleted`], [`Error::KeyRequired`] (a compacted topic) or a payload that does
    /// not encode ([`Error::Encode`], [`Error::Unsupported`]).
    pub fn send<T: Payload>(&mut self, producer: &Producer<T>, msg: T) -> Result<(), SendError<T>> {
        self.send_record(producer, Record::new(msg))
            .map_err(|e| e.map(Record::into_payload))
    }

    /// As [`send`](Self::send), with a key, headers or timing.
    ///
    /// # Errors
    /// As [`send`](Self::send), handing the record back.
    pub fn send_record<T: Payload>(
        &mut self,
        producer: &Producer<T>,
        record: Record<T>,
    ) -> Result<(), SendError<Record<T>>> {
        producer.add_to(&mut self.core, record)
    }

    /// Acks `message` with the commit (a group's or a queue's; a plain subscriber's message
    /// needs no ack, and this does nothing with it).
    ///
    /// Whether its delivery may still be acked is checked by the commit: a queue delivery must
    /// not have ended (its ack timeout passed, or its consumer was dropped:
    /// [`Error::DeliveryEnded`]); a group delivery must still be its member's (not moved in a
    /// rebalance, not released after its ack timeout: [`Error::Fenced`]). A group delivery
    /// past its ack timeout that the group has not released yet (no member looked since)
    /// still commits.
    ///
    /// # Errors
    /// [`Error::ForeignBroker`] for a message of another broker, handing it back.
    pub fn ack<T: Payload>(&mut self, message: Message<T>) -> Result<(), AckError<T>> {
        let delivery = message.delivery();
        let (context, name) = if let Some((g, _)) = delivery.group_ack() {
            (&g.topic.context, &g.topic.name)
        } else if let Some(q) = delivery.queue_ack() {
            (&q.link.queue.context, &q.link.queue.name)
        } else {
            return Ok(()); // a plain subscriber's message: nothing to settle
        };
        if !Arc::ptr_eq(context, &self.core.context) {
            let error = Error::ForeignBroker { name: name.clone() };
            return Err(AckError(Box::new((message, error))));
        }
        let delivery = message.into_delivery();
        if let Some((g, _)) = delivery.group_ack() {
            let topic = Arc::clone(&g.topic);
            topic.tx_ack(&mut self.core, delivery);
        } else if let Some(q) = delivery.queue_ack() {
            let queue = Arc::clone(&q.link.queue);
            queue.tx_ack(&mut self.core, delivery);
        }
        Ok(())
    }

    /// The redb write transaction this transaction commits in, for the application's own
    /// tables (the outbox): its rows and the messages become durable in one commit, or neither
    /// does. Needs a durable broker, best one built on the application's database
    /// ([`BrokerBuilder::database`](crate::BrokerBuilder::database)).
    ///
    /// redb has one writer at a time, and this borrows it: from the first call until the
    /// commit or the drop, the broker's own commits (every durable send, ack and group
    /// position) wait, and so does [`Broker::close`](crate::Broker::close). Keep such a
    /// transaction short, and do not wait for a durable send on the same thread meanwhile,
    /// blocking or async (it fails with [`Error::TransactionOpen`] instead of waiting forever):
    /// send in the transaction. The broker knows the thread that called `redb()`: a
    /// transaction moved to another thread while it holds the loan is not covered there, so
    /// keep it on its thread (in async code, do not hold it across an `.await` that waits for
    /// the broker). Tables named `embus.…` are the broker's; never write them.
    ///
    /// # Errors
    /// [`Error::NoDatabase`] on a memory broker; [`Error::Closed`], [`Error::Poisoned`].
    pub fn redb(&mut self) -> Result<&redb::WriteTransaction, Error> {
        self.core.redb()
    }

    /// How many messages the transaction sends.
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// Whether the transaction sends nothing (it may still ack).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends every message and settles every ack, all at once, and returns the receipts in
    /// the order of the sends. In a durable broker it returns once all of it is stored, in one
    /// commit (under [`Durability::Immediate`](crate::Durability::Immediate)).
    ///
    /// # Errors
    /// A [`CommitError`] holding the error and the transaction:
    /// - [`Error::Full`], [`Error::Fenced`], [`Error::DeliveryEnded`] (a queue delivery that
    ///   timed out or whose consumer was dropped), [`Error::Deleted`], [`Error::Closed`]:
    ///   nothing was done, the transaction is as it was;
    /// - [`Error::Poisoned`] (the durable store failed to commit): the acks took effect in
    ///   memory only (reopening the file delivers the messages again), and the transaction
    ///   holds the messages it could not send.
    pub fn commit(mut self) -> Result<Vec<Receipt>, CommitError> {
        match self.core.commit() {
            Ok(receipts) => Ok(receipts),
            Err(error) => Err(CommitError(Box::new((error, self)))),
        }
    }

    /// Sends nothing, and releases the messages it acked for redelivery, as a nack would
    /// (the same as dropping it).
    pub fn abort(self) {
        drop(self);
    }

    /// Takes the messages of payload type `T` out of the transaction, in the order they were
    /// added (those of a failed commit, handed back).
    pub fn take_records<T: Payload>(&mut self) -> Vec<Record<T>> {
        let mut records = Vec::new();
        for part in &mut self.core.parts {
            let part = part.as_any();
            if let Some(topic) = part.downcast_mut::<TopicPart<T>>() {
                topic.take_records(&mut records);
            } else if let Some(queue) = part.downcast_mut::<QueuePart<T>>() {
                queue.take_records(&mut records);
            }
        }
        self.core.parts.retain(|p| !p.is_empty());
        records.sort_unstable_by_key(|(at, _)| *at);
        records.into_iter().map(|(_, r)| r).collect()
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.core.abort();
    }
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("sends", &self.core.len())
            .field("targets", &self.core.parts.len())
            .finish_non_exhaustive()
    }
}

/// Why [`Transaction::commit`] failed, with the transaction (see there for what it still
/// holds). Dropping it aborts the transaction.
pub struct CommitError(Box<(Error, Transaction)>);

impl CommitError {
    /// Why the commit failed.
    pub fn error(&self) -> &Error {
        &self.0.0
    }

    /// The error, aborting the transaction.
    pub fn into_error(self) -> Error {
        self.0.0
    }

    /// The transaction, to commit again (after [`Error::Full`]) or take its messages back
    /// ([`Transaction::take_records`]).
    pub fn into_transaction(self) -> Transaction {
        self.0.1
    }
}

impl fmt::Debug for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitError")
            .field("error", self.error())
            .field("tx", &self.0.1)
            .finish()
    }
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transaction not committed: {}", self.error())
    }
}

impl std::error::Error for CommitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error())
    }
}

/// Why [`Transaction::ack`] refused a message, which it hands back.
pub struct AckError<T>(Box<(Message<T>, Error)>);

impl<T> AckError<T> {
    /// Why the ack was refused.
    pub fn error(&self) -> &Error {
        &self.0.1
    }

    /// The message, still unsettled.
    pub fn into_inner(self) -> Message<T> {
        self.0.0
    }
}

impl<T> fmt::Debug for AckError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckError")
            .field("error", self.error())
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for AckError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not acked in the transaction: {}", self.error())
    }
}

impl<T> std::error::Error for AckError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error())
    }
}

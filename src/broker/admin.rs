//! Listing and deleting topics and queues, and the broker's figures ([`Broker::stats`]).

use super::Broker;
use crate::error::Error;

impl Broker {
    /// A snapshot of the broker's figures: per topic its partitions (offsets, retained
    /// messages and bytes, append rate), groups (members, assignment, position and lag per
    /// partition, in flight, redeliveries, dead letters) and subscribers (lag); per queue its
    /// ready, in-flight, delayed and dead-lettered messages, the age of the oldest ready one and
    /// the ack and nack rates; the durable store's commit figures; and the running bridges.
    ///
    /// It is cheap (no message is read or decoded) and never stalls producers: each topic
    /// partition, group and queue is read under its own lock, briefly, one after the other. So
    /// each object's figures agree with each other, while two objects may be read a moment
    /// apart. Rates are per second of the broker's clock, over the last minute
    /// ([`stats`](crate::stats) explains the window). Only what was declared in this run is
    /// listed ([`topics`](Self::topics) also lists what a durable file holds); a closed broker
    /// lists none.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = embus::Broker::memory();
    /// let orders = bus.topic::<u32>("orders")?;
    /// orders.producer().send_batch(vec![1, 2, 3])?;
    /// let mut billing = orders.join_group("billing")?;
    /// billing.recv()?.ack()?;
    ///
    /// let stats = bus.stats();
    /// let topic = stats.topic("orders").unwrap();
    /// assert_eq!(topic.messages(), 3);
    /// assert_eq!(topic.group("billing").unwrap().lag, 2);
    /// println!("{}", serde_json::to_string_pretty(&stats)?);
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> crate::Stats {
        self.context.stats()
    }

    /// The names of every topic, sorted: those declared in this run, and (durable) those
    /// stored in the file by an earlier run and not declared yet.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if a stored declaration cannot be read; a store read failure.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = embus::Broker::memory();
    /// bus.topic::<u32>("orders")?;
    /// bus.topic::<u32>("audit")?;
    /// bus.queue::<u32>("jobs")?;
    /// assert_eq!(bus.topics()?, ["audit", "orders"]);
    /// # Ok(()) }
    /// ```
    pub fn topics(&self) -> Result<Vec<String>, Error> {
        self.context.names(false)
    }

    /// The names of every queue, sorted (dead-letter queues are queues): those declared in
    /// this run, and (durable) those stored in the file and not declared yet.
    ///
    /// # Errors
    /// As [`topics`](Self::topics).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use embus::QueueOptions;
    /// let bus = embus::Broker::memory();
    /// bus.queue_with::<u32>("jobs", QueueOptions::default().max_deliveries(3).dead_letter("jobs.dead"))?;
    /// assert_eq!(bus.queues()?, ["jobs", "jobs.dead"]);
    /// # Ok(()) }
    /// ```
    pub fn queues(&self) -> Result<Vec<String>, Error> {
        self.context.names(true)
    }

    /// Deletes the topic `name`: its messages, groups and their positions, and its
    /// declaration (durable: in one commit, done when this returns; a topic stored by an
    /// earlier run need not be declared first).
    ///
    /// Live handles then get clear errors: `Topic` methods that return a `Result` and every
    /// producer's send return [`Error::Deleted`] (a send hands its message back inside
    /// [`SendError::Failed`](crate::SendError::Failed)), and subscribers and group members get
    /// [`RecvError::Deleted`](crate::RecvError::Deleted) (blocked ones wake up). Declaring the
    /// name again creates a fresh, empty topic (offsets from 0).
    ///
    /// # Errors
    /// [`Error::NotFound`] if no topic or queue has that name; [`Error::Mismatch`] if it is a
    /// queue; [`Error::Closed`]; a store failure.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use embus::{Error, RecvError, SendError, Start};
    /// let bus = embus::Broker::memory();
    /// let orders = bus.topic::<u32>("orders")?;
    /// let mut reader = orders.subscribe(Start::Earliest)?;
    /// bus.delete_topic("orders")?;
    /// assert!(matches!(reader.recv(), Err(RecvError::Deleted(_))));
    /// let back = orders.producer().send(7).unwrap_err();
    /// assert!(matches!(back, SendError::Failed(7, Error::Deleted { .. })));
    /// assert!(matches!(bus.delete_topic("orders"), Err(Error::NotFound { .. })));
    /// # Ok(()) }
    /// ```
    pub fn delete_topic(&self, name: &str) -> Result<(), Error> {
        self.context.delete(name, false)
    }

    /// Deletes the queue `name`: its messages (ready and in flight), delivery counts and
    /// declaration, like [`delete_topic`](Self::delete_topic); its handles, producers and
    /// consumers get the same errors. Acks of its messages delivered before then do nothing.
    /// Its dead-letter queue stays.
    ///
    /// A queue that another queue, or a consumer group, dead-letters into cannot be deleted
    /// while that one exists ([`Error::InUse`] names it, a group as `topic/group`): delete
    /// the user first, as RabbitMQ users would unbind it first. Messages of the deleted queue
    /// that were in flight go with it: settling them later moves nothing to its dead-letter
    /// queue.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Mismatch`] if it is a topic; [`Error::InUse`];
    /// [`Error::Closed`]; a store failure.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use embus::{Error, QueueOptions};
    /// let bus = embus::Broker::memory();
    /// bus.queue_with::<u32>("jobs", QueueOptions::default().max_deliveries(3).dead_letter("jobs.dead"))?;
    /// assert!(matches!(bus.delete_queue("jobs.dead"), Err(Error::InUse { .. })));
    /// bus.delete_queue("jobs")?;
    /// bus.delete_queue("jobs.dead")?;
    /// assert!(bus.queues()?.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn delete_queue(&self, name: &str) -> Result<(), Error> {
        self.context.delete(name, true)
    }
}

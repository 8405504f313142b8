//! [`Broker`]: the handle to one bus — the name registry (one namespace for topics and queues),
//! the `Mismatch` check, close and `wait_idle`.

mod admin;
mod builder;
#[cfg(feature = "metrics")]
pub mod metrics;

pub use self::builder::BrokerBuilder;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::asynchronous::{CloseFut, WaitIdleFut};
use crate::clock::Clock;
use crate::codec::CodecKind;
use crate::engine::tx::TxCore;
use crate::engine::{Context, IdleWait, Life};
use crate::error::Error;
use crate::options::{IdleOptions, QueueOptions, TopicOptions};
use crate::queue::Queue;
use crate::record::Payload;
use crate::store::{MemoryStore, Store};
use crate::topic::Topic;
use crate::transaction::Transaction;

/// The handle to one bus. Cheap to clone; every clone is the same bus.
///
/// The bus stays open while any [`Broker`], [`Topic`], [`Queue`] or
/// [`Producer`](crate::Producer) handle exists. When the last one is dropped, or on
/// [`close`](Self::close), it closes: blocked producers and consumers wake, sends fail with
/// `Disconnected` (handing the message back), and consumers receive what was already
/// available, then `Disconnected`.
///
/// # Dropping the last handle
///
/// Dropping the last handle runs [`close`](Self::close) in the dropping thread, ignoring its
/// error: a durable broker waits there for its writer to commit what is queued (an fsync) and
/// stop, so the file is released when the drop returns. In async code, call
/// [`close_async`](Self::close_async) first, so no runtime thread blocks on an fsync. A drop
/// on the thread committing (a waker it runs owns the last handle: the writer thread, or a
/// sender committing its own send) cannot wait for itself: the writer then commits what is
/// queued after the waker returns and releases the file when it ends.
///
/// # Threads
///
/// A memory broker runs no thread of its own: all work happens in the calling threads (ack
/// timeouts and age retention are checked whenever a consumer or [`wait_idle`](Self::wait_idle)
/// looks, and a waiting consumer wakes itself at the next ack deadline). The one exception is a
/// timer thread, started the first time an async receive waits for a real-time ack deadline
/// (a task cannot wake itself); it stops when the broker closes. So does the metrics thread
/// that `BrokerBuilder::metrics_every` (feature `metrics`) starts.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = embus::Broker::memory();
/// let orders = bus.topic::<String>("orders")?;
/// let mut sub = orders.subscribe(embus::Start::Earliest)?;
/// orders.producer().send("espresso".to_string())?;
/// assert_eq!(sub.recv()?.payload(), "espresso");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Broker {
    context: Arc<Context>,
    life: Arc<Life>,
}

impl Broker {
    /// A bus that keeps everything in memory: nothing touches the disk, payloads are never
    /// serialized, and it runs no thread.
    ///
    /// ```
    /// let bus = embus::Broker::memory();
    /// assert!(!bus.is_closed());
    /// ```
    pub fn memory() -> Self {
        Self::from_parts(
            Clock::default(),
            Arc::new(MemoryStore::new()),
            CodecKind::default(),
            Default::default(),
        )
    }

    /// Opens (or creates) a durable broker on the redb file at `path`, with
    /// [`Durability::Immediate`](crate::Durability::Immediate): a send returns once its message
    /// is fsynced, and topics, queues, group positions and unacked messages survive restarts
    /// and crashes. A store written by an older embus is upgraded in place; a redb file
    /// without embus's tables (an application's own) gets them next to its own, all named
    /// with the reserved prefix `embus.`. See [`BrokerBuilder`] for the other settings, and
    /// [`BrokerBuilder::database`] to share a database the application keeps open.
    ///
    /// # Errors
    /// [`Error::Storage`] if the file cannot be opened (or another broker has it open);
    /// [`Error::Corrupt`] if it is not a readable embus store; [`Error::Incompatible`] if it is
    /// one of another format version. Each names the path.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = std::env::temp_dir().join(format!("embus-doc-open-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("app.embus");
    /// {
    ///     let bus = embus::Broker::open(&path)?;
    ///     bus.queue::<String>("jobs")?.producer().send("resize".to_string())?;
    ///     bus.close()?;
    /// }
    /// let bus = embus::Broker::open(&path)?; // after a restart
    /// let mut worker = bus.queue::<String>("jobs")?.consumer(); // keep it until the ack
    /// let job = worker.recv()?;
    /// assert_eq!(job.payload(), "resize");
    /// job.ack()?;
    /// # bus.close()?; std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        Self::builder().path(path).open()
    }

    /// A builder: a durable store's path and durability, or a [`ManualClock`](crate::ManualClock).
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::new()
    }

    fn from_parts(
        clock: Clock,
        store: Arc<dyn Store>,
        codec: CodecKind,
        payload_names: std::collections::HashMap<std::any::TypeId, String>,
    ) -> Self {
        let context = Context::new(clock, store, codec, payload_names);
        let life = context.life();
        Self { context, life }
    }

    /// Gets the topic `name`, or creates it with [`TopicOptions::default`].
    ///
    /// # Errors
    /// [`Error::Mismatch`] if `name` is a queue or a topic of another payload type;
    /// [`Error::InvalidName`]; [`Error::Closed`].
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = embus::Broker::memory();
    /// let a = bus.topic::<u64>("ticks")?;
    /// let b = bus.topic::<u64>("ticks")?; // the same topic
    /// assert!(bus.topic::<String>("ticks").is_err()); // another payload type
    /// # drop((a, b)); Ok(()) }
    /// ```
    pub fn topic<T: Payload>(&self, name: &str) -> Result<Topic<T>, Error> {
        let core = self.context.declare_topic(name, None)?;
        Ok(Topic::new(core, Arc::clone(&self.life)))
    }

    /// Gets the topic `name` if it exists with exactly these options, or creates it.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if it exists with other options or another payload type, or is a
    /// queue; [`Error::InvalidOption`]; [`Error::InvalidName`]; [`Error::Closed`].
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use embus::{Broker, TopicOptions};
    /// let bus = Broker::memory();
    /// let t = bus.topic_with::<u64>("ticks", TopicOptions::default().partitions(4))?;
    /// assert_eq!(t.partitions(), 4);
    /// assert!(bus.topic_with::<u64>("ticks", TopicOptions::default().partitions(2)).is_err());
    /// # Ok(()) }
    /// ```
    pub fn topic_with<T: Payload>(
        &self,
        name: &str,
        options: TopicOptions,
    ) -> Result<Topic<T>, Error> {
        let core = self.context.declare_topic(name, Some(options))?;
        Ok(Topic::new(core, Arc::clone(&self.life)))
    }

    /// Gets the queue `name`, or creates it with [`QueueOptions::default`].
    ///
    /// # Errors
    /// As [`topic`](Self::topic).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = embus::Broker::memory();
    /// let jobs = bus.queue::<String>("jobs")?;
    /// jobs.producer().send("resize".to_string())?;
    /// let mut worker = jobs.consumer(); // dropping it releases what it holds
    /// let d = worker.recv()?;
    /// assert_eq!(d.payload(), "resize");
    /// d.ack()?;
    /// # Ok(()) }
    /// ```
    pub fn queue<T: Payload>(&self, name: &str) -> Result<Queue<T>, Error> {
        let core = self.context.declare_queue(name, None)?;
        Ok(Queue::new(core, Arc::clone(&self.life)))
    }

    /// Gets the queue `name` if it exists with exactly these options, or creates it (and its
    /// dead-letter queue, if named and not yet declared).
    ///
    /// # Errors
    /// As [`topic_with`](Self::topic_with); also [`Error::Mismatch`] if the dead-letter queue
    /// exists with another payload type.
    pub fn queue_with<T: Payload>(
        &self,
        name: &str,
        options: QueueOptions,
    ) -> Result<Queue<T>, Error> {
        let core = self.context.declare_queue(name, Some(options))?;
        Ok(Queue::new(core, Arc::clone(&self.life)))
    }

    /// Starts a [`Transaction`]: sends to any number of topics and queues, and acks, that take
    /// effect together at its commit, or not at all.
    ///
    /// # Errors
    /// [`Error::Closed`] once the broker is closed; [`Error::Poisoned`] once its store failed
    /// to commit.
    pub fn transaction(&self) -> Result<Transaction, Error> {
        self.context.check_open()?;
        self.context.store.can_record()?;
        let core = TxCore::new(Arc::clone(&self.context));
        Ok(Transaction::new(core, Arc::clone(&self.life)))
    }

    /// Closes the bus for every handle: blocked calls wake, sends fail with `Disconnected`,
    /// consumers drain what was available and then get `Disconnected`. Closing twice is fine.
    ///
    /// # Errors
    /// None in memory mode. A durable broker flushes and stops its writer thread here, and
    /// reports a failed final commit ([`Error::Poisoned`]).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = embus::Broker::memory();
    /// let jobs = bus.queue::<u32>("jobs")?;
    /// let mut worker = jobs.consumer();
    /// bus.close()?;
    /// assert!(worker.recv().is_err());
    /// assert!(jobs.producer().send(1).is_err());
    /// # Ok(()) }
    /// ```
    pub fn close(self) -> Result<(), Error> {
        self.context.close()
    }

    /// [`close`](Self::close) for async code: the closing (in durable mode, the final commit
    /// and the writer thread's end) runs on a thread of its own, so no executor thread blocks
    /// on an fsync; the future resolves with `close`'s result.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # futures::executor::block_on(async {
    /// let bus = embus::Broker::memory();
    /// let jobs = bus.queue::<u32>("jobs")?;
    /// bus.clone().close_async().await?;
    /// assert!(jobs.producer().send(1).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(()) })
    /// # }
    /// ```
    pub fn close_async(self) -> CloseFut {
        CloseFut::new(self.context, self.life)
    }

    /// Waits until everything sent so far, and every ack, nack and group position recorded so
    /// far, is committed to the file: a durability point under
    /// [`Durability::Interval`](crate::Durability::Interval), where `send` returns before its
    /// commit. Returns at once in memory mode and does nothing more under `Immediate` than
    /// commit pending acks. Consumers waiting for anything committed up to its commit have been
    /// woken by the time it returns. Called on the thread committing (from a waker it runs: the
    /// writer thread, or a sender committing its own send), it cannot wait for its own commit:
    /// it asks for it and returns.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if a commit failed; [`Error::Closed`] is not an error here (close
    /// commits everything itself).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = embus::Broker::memory();
    /// bus.queue::<u8>("q")?.producer().send(1)?;
    /// bus.flush()?;
    /// # Ok(()) }
    /// ```
    pub fn flush(&self) -> Result<(), Error> {
        self.context.store.flush()
    }

    /// Whether the bus is closed.
    pub fn is_closed(&self) -> bool {
        self.context.is_closed()
    }

    /// Waits until the bus is idle: every queue empty with nothing in flight (a queue that serves
    /// as a dead-letter queue only needs nothing in flight: parked dead letters are not work),
    /// and every consumer group caught up (all messages acked). Plain subscribers are not
    /// waited for.
    ///
    /// It is exact: work that moves while it looks (a handler that sends on, then acks what it
    /// consumed) is not missed. A send still in progress on another thread, not yet returned,
    /// may or may not count.
    ///
    /// # Errors
    /// [`Error::NotIdle`] naming what is still busy when `timeout` passes; [`Error::Closed`].
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let bus = embus::Broker::memory();
    /// let jobs = bus.queue::<u32>("jobs")?;
    /// jobs.producer().send(1)?;
    /// assert!(bus.wait_idle(Duration::ZERO).is_err());
    /// let mut worker = jobs.consumer();
    /// worker.recv()?.ack()?;
    /// bus.wait_idle(Duration::from_secs(5))?;
    /// # Ok(()) }
    /// ```
    pub fn wait_idle(&self, timeout: Duration) -> Result<(), Error> {
        self.context.wait_idle(timeout, IdleOptions::default())
    }

    /// [`wait_idle`](Self::wait_idle) with [`IdleOptions`]: for instance, also until every
    /// dead-letter queue that has a consumer is empty.
    ///
    /// # Errors
    /// As [`wait_idle`](Self::wait_idle).
    pub fn wait_idle_with(&self, timeout: Duration, options: IdleOptions) -> Result<(), Error> {
        self.context.wait_idle(timeout, options)
    }

    /// [`wait_idle`](Self::wait_idle) for async code: the future resolves as it would return,
    /// without blocking the executor (a wait that needs a real-time wake-up, for the timeout or
    /// an ack deadline, starts the broker's timer thread).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # futures::executor::block_on(async {
    /// use std::time::Duration;
    /// let bus = embus::Broker::memory();
    /// let jobs = bus.queue::<u32>("jobs")?;
    /// jobs.producer().send(1)?;
    /// let mut worker = jobs.consumer();
    /// worker.recv_async().await?.ack()?;
    /// bus.wait_idle_async(Duration::from_secs(5)).await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(()) })
    /// # }
    /// ```
    pub fn wait_idle_async(&self, timeout: Duration) -> WaitIdleFut {
        self.wait_idle_async_with(timeout, IdleOptions::default())
    }

    /// [`wait_idle_with`](Self::wait_idle_with) for async code. The timeout runs from this
    /// call, not from the first poll; polled again after it resolved, the future is ready
    /// with `Ok(())`.
    pub fn wait_idle_async_with(&self, timeout: Duration, options: IdleOptions) -> WaitIdleFut {
        WaitIdleFut::new(IdleWait::new(Arc::clone(&self.context), timeout, options))
    }
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("closed", &self.is_closed())
            .field("clock", &self.context.clock)
            .finish_non_exhaustive()
    }
}

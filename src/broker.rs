//! [`Broker`]: the handle to one bus — the name registry (one namespace for topics and queues),
//! the `Mismatch` check, close and `wait_idle`.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::builder::BrokerBuilder;
use crate::clock::{Clock, Wake};
use crate::error::Error;
use crate::notify::IdleSignal;
use crate::options::{QueueOptions, TopicOptions};
use crate::queue::{Queue, QueueCore};
use crate::record::Nanos;
use crate::store::Store;
use crate::timer::Timer;
use crate::topic::{Topic, TopicCore};

/// The handle to one bus. Cheap to clone; every clone is the same bus.
///
/// The bus stays open while any [`Broker`], [`Topic`], [`Queue`] or
/// [`Producer`](crate::Producer) handle exists. When the last one is dropped, or on
/// [`close`](Self::close), it closes: blocked producers and consumers wake, sends fail with
/// `Disconnected` (handing the message back), and consumers receive what was already
/// available, then `Disconnected`.
///
/// # Threads
///
/// A memory broker runs no thread of its own: all work happens in the calling threads (ack
/// timeouts and age retention are checked whenever a consumer or [`wait_idle`](Self::wait_idle)
/// looks, and a waiting consumer wakes itself at the next ack deadline). The one exception is a
/// timer thread, started the first time an async receive waits for a real-time ack deadline
/// (a task cannot wake itself); it stops when the broker closes.
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
    shared: Arc<Shared>,
    life: Arc<Life>,
}

/// State every handle and engine part reaches: the registry, the clock, the closed flag.
pub(crate) struct Shared {
    closed: AtomicBool,
    /// Set once close has let the store publish everything it will: from then on, records
    /// still staged (their commit failed) will never be published.
    settled: AtomicBool,
    pub(crate) clock: Clock,
    pub(crate) idle: IdleSignal,
    next_id: AtomicU64,
    registry: Mutex<HashMap<String, Declared>>,
    pub(crate) store: Arc<dyn Store>,
    /// Wakes async receives at real-time ack deadlines (a thread only once one waits).
    pub(crate) timer: Arc<Timer>,
}

/// Keeps the broker open; the last one dropped closes it. Held by `Broker`, `Topic`, `Queue` and
/// `Producer`, never by consumers or by anything the broker itself owns.
pub(crate) struct Life {
    shared: Arc<Shared>,
}

impl Drop for Life {
    fn drop(&mut self) {
        // Nobody is left to report a failed final flush to; every send that failed said so.
        let _ = self.shared.close();
    }
}

/// What the broker needs of a topic or queue without knowing its payload type.
pub(crate) trait Control: Send + Sync {
    /// Wakes every blocked consumer and producer so they re-check (close, clock advance).
    fn wake_all(&self);
    /// `None` when idle; otherwise what is pending, for `Error::NotIdle`.
    fn busy(&self, now: Nanos) -> Option<String>;
    /// The earliest ack deadline, for waits that must re-check when it passes.
    fn next_deadline(&self) -> Option<Nanos>;
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Topic,
    Queue,
}

#[derive(Clone, PartialEq, Eq)]
enum DeclaredOptions {
    Topic(TopicOptions),
    Queue(QueueOptions),
}

struct Declared {
    kind: Kind,
    type_id: TypeId,
    type_name: &'static str,
    options: DeclaredOptions,
    core: Arc<dyn Any + Send + Sync>,
    control: Arc<dyn Control>,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Queue => "queue",
        }
    }
}

impl DeclaredOptions {
    fn describe(&self) -> String {
        match self {
            Self::Topic(o) => format!("{o:?}"),
            Self::Queue(o) => format!("{o:?}"),
        }
    }
}

impl Declared {
    fn describe(&self) -> String {
        format!(
            "a {} of {} with {}",
            self.kind.name(),
            self.type_name,
            self.options.describe()
        )
    }
}

/// The payload bound of every topic and queue: the same in memory and durable mode, so switching
/// modes never breaks a build.
pub trait Payload: Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Payload for T {}

impl Broker {
    /// A bus that keeps everything in memory: nothing touches the disk, payloads are never
    /// serialized, and it runs no thread.
    ///
    /// ```
    /// let bus = embus::Broker::memory();
    /// assert!(!bus.is_closed());
    /// ```
    pub fn memory() -> Self {
        Self::from_parts(Clock::System, Arc::new(crate::store::MemoryStore))
    }

    /// Opens (or creates) a durable broker on the redb file at `path`, with
    /// [`Durability::Immediate`](crate::Durability::Immediate): a send returns once its message
    /// is fsynced, and topics, queues, group positions and unacked messages survive restarts
    /// and crashes. See [`BrokerBuilder`] for the other settings.
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
    /// let job = bus.queue::<String>("jobs")?.consumer().recv()?;
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

    pub(crate) fn from_parts(clock: Clock, store: Arc<dyn Store>) -> Self {
        let shared = Arc::new(Shared {
            closed: AtomicBool::new(false),
            settled: AtomicBool::new(false),
            clock,
            idle: IdleSignal::default(),
            next_id: AtomicU64::new(1),
            registry: Mutex::new(HashMap::new()),
            store,
            timer: Arc::default(),
        });
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        shared.clock.listen(weak);
        let life = Arc::new(Life {
            shared: Arc::clone(&shared),
        });
        Self { shared, life }
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
        self.declare_topic(name, None)
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
        self.declare_topic(name, Some(options))
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
    /// let d = jobs.consumer().recv()?;
    /// assert_eq!(d.payload(), "resize");
    /// d.ack()?;
    /// # Ok(()) }
    /// ```
    pub fn queue<T: Payload>(&self, name: &str) -> Result<Queue<T>, Error> {
        self.declare_queue(name, None)
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
        self.declare_queue(name, Some(options))
    }

    fn declare_topic<T: Payload>(
        &self,
        name: &str,
        options: Option<TopicOptions>,
    ) -> Result<Topic<T>, Error> {
        validate_name(name)?;
        if let Some(o) = &options {
            o.validate(name)?;
        }
        let (options, stored) = self.stored::<T, _>(name, Kind::Topic, options)?;
        let core = self.declare::<TopicCore<T>>(
            name,
            Kind::Topic,
            options.map(DeclaredOptions::Topic),
            || {
                let o = options.unwrap_or_default();
                let core = TopicCore::<T>::create(name, o, Arc::clone(&self.shared))?;
                if !stored {
                    self.remember::<T, _>(name, Kind::Topic, &o);
                }
                Ok((
                    DeclaredOptions::Topic(o),
                    Arc::clone(&core) as Arc<dyn Control>,
                    core,
                ))
            },
        )?;
        Ok(Topic::new(core, Arc::clone(&self.life)))
    }

    fn declare_queue<T: Payload>(
        &self,
        name: &str,
        options: Option<QueueOptions>,
    ) -> Result<Queue<T>, Error> {
        validate_name(name)?;
        if let Some(o) = &options {
            o.validate(name)?;
        }
        let (options, stored) = self.stored::<T, _>(name, Kind::Queue, options)?;
        let declared = options.clone().map(DeclaredOptions::Queue);
        // A mismatch on `name` itself must not leave a new dead-letter queue behind.
        let existing = lookup(
            &self.shared.registry.lock(),
            name,
            Kind::Queue,
            declared.as_ref(),
        )?;
        if let Some(core) = existing {
            return Ok(Queue::new(core, Arc::clone(&self.life)));
        }
        // Then the dead-letter queue, so a type mismatch there fails this declaration.
        let dead_letter = match options.as_ref().and_then(QueueOptions::dead_letter_queue) {
            Some(dlq) => Some(self.declare_queue::<T>(dlq, None)?.core),
            None => None,
        };
        let core = self.declare::<QueueCore<T>>(name, Kind::Queue, declared, || {
            let o = options.clone().unwrap_or_default();
            let core = QueueCore::<T>::create(
                name,
                o.clone(),
                dead_letter.clone(),
                Arc::clone(&self.shared),
            )?;
            if !stored {
                self.remember::<T, _>(name, Kind::Queue, &o);
            }
            Ok((
                DeclaredOptions::Queue(o),
                Arc::clone(&core) as Arc<dyn Control>,
                core,
            ))
        })?;
        if let Some(dlq) = &dead_letter {
            dlq.add_feeder(&core);
        }
        Ok(Queue::new(core, Arc::clone(&self.life)))
    }

    /// Looks `name` up, checking kind, type and (when given) options, or creates it.
    fn declare<C: Any + Send + Sync>(
        &self,
        name: &str,
        kind: Kind,
        options: Option<DeclaredOptions>,
        create: impl FnOnce() -> Result<(DeclaredOptions, Arc<dyn Control>, Arc<C>), Error>,
    ) -> Result<Arc<C>, Error> {
        let mut registry = self.shared.registry.lock();
        if let Some(core) = lookup(&registry, name, kind, options.as_ref())? {
            return Ok(core);
        }
        if self.shared.is_closed() {
            return Err(Error::Closed);
        }
        let (declared_options, control, core) = create()?;
        registry.insert(
            name.to_owned(),
            Declared {
                kind,
                type_id: TypeId::of::<C>(),
                type_name: payload_name::<C>(),
                options: declared_options,
                core: Arc::clone(&core) as Arc<dyn Any + Send + Sync>,
                control,
            },
        );
        Ok(core)
    }

    /// The options `name` was stored with by an earlier run (durable mode), checked against
    /// what this declaration asks: `(options to use, whether they are stored already)`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if the stored declaration has another kind, payload type or options.
    fn stored<T: 'static, O>(
        &self,
        name: &str,
        kind: Kind,
        requested: Option<O>,
    ) -> Result<(Option<O>, bool), Error>
    where
        O: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
    {
        if self.shared.registry.lock().contains_key(name) {
            return Ok((requested, true)); // declared in this run: `lookup` checks it
        }
        let Some(stored) = self.shared.store.declared(name)? else {
            return Ok((requested, false));
        };
        use crate::codec::Codec;
        let options: Option<O> = crate::codec::Bincode::decode(&stored.options).ok();
        let same_kind = stored.queue == (kind == Kind::Queue);
        let same_type = stored.type_name == type_name::<T>();
        let same_options = requested.is_none() || requested == options;
        match options {
            Some(options) if same_kind && same_type && same_options => Ok((Some(options), true)),
            _ => Err(Error::Mismatch {
                name: name.to_owned(),
                existing: format!(
                    "a stored {} of {}",
                    if stored.queue { "queue" } else { "topic" },
                    stored.type_name
                ),
                requested: format!(
                    "a {} of {} with {}",
                    kind.name(),
                    type_name::<T>(),
                    requested.map_or_else(|| "default options".to_owned(), |o| format!("{o:?}"))
                ),
            }),
        }
    }

    /// Stores a new declaration (durable mode), so a reopen knows it.
    fn remember<T: 'static, O: Serialize>(&self, name: &str, kind: Kind, options: &O) {
        use crate::codec::Codec;
        let mut bytes = Vec::new();
        if crate::codec::Bincode::encode(options, &mut bytes).is_ok() {
            let declaration = crate::store::Declaration {
                queue: kind == Kind::Queue,
                type_name: type_name::<T>().to_owned(),
                options: bytes,
            };
            self.shared.store.declare(name, declaration);
        }
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
        self.shared.close()
    }

    /// Waits until everything sent so far, and every ack, nack and group position recorded so
    /// far, is committed to the file: a durability point under
    /// [`Durability::Interval`](crate::Durability::Interval), where `send` returns before its
    /// commit. Returns at once in memory mode and does nothing more under `Immediate` than
    /// commit pending acks.
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
        self.shared.store.flush()
    }

    /// Whether the bus is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Waits until the bus is idle: every queue empty with nothing in flight (a queue that serves
    /// as a dead-letter queue only needs nothing in flight: parked dead letters are not work),
    /// and every consumer group caught up (all messages acked). Plain subscribers are not
    /// waited for.
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
    /// jobs.consumer().recv()?.ack()?;
    /// bus.wait_idle(Duration::from_secs(5))?;
    /// # Ok(()) }
    /// ```
    pub fn wait_idle(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now().checked_add(timeout);
        let shared = &self.shared;
        shared.idle.wait_until(deadline, || {
            if shared.is_closed() {
                return Ok(());
            }
            let controls = shared.controls();
            let now = shared.clock.now();
            match controls.iter().find_map(|c| c.busy(now)) {
                None => Ok(()),
                Some(busy) => {
                    let wake = controls
                        .iter()
                        .filter_map(|c| c.next_deadline())
                        .min()
                        .and_then(|d| shared.clock.wake_at(d));
                    Err((
                        Error::NotIdle {
                            waited: timeout,
                            busy,
                        },
                        wake,
                    ))
                }
            }
        })?;
        if shared.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

/// The existing declaration of `name`, if it matches kind, type and (when given) options.
///
/// # Errors
/// [`Error::Mismatch`].
fn lookup<C: Any + Send + Sync>(
    registry: &HashMap<String, Declared>,
    name: &str,
    kind: Kind,
    options: Option<&DeclaredOptions>,
) -> Result<Option<Arc<C>>, Error> {
    let Some(existing) = registry.get(name) else {
        return Ok(None);
    };
    let type_matches = existing.type_id == TypeId::of::<C>();
    let options_match = options.is_none_or(|o| *o == existing.options);
    match Arc::clone(&existing.core).downcast::<C>() {
        Ok(core) if type_matches && options_match && existing.kind == kind => Ok(Some(core)),
        _ => Err(Error::Mismatch {
            name: name.to_owned(),
            existing: existing.describe(),
            requested: describe_request::<C>(kind, options),
        }),
    }
}

fn payload_name<C: 'static>() -> &'static str {
    // `C` is `TopicCore<T>` or `QueueCore<T>`; show `T`.
    let full = type_name::<C>();
    full.find('<')
        .map_or(full, |i| &full[i + 1..full.len() - 1])
}

fn describe_request<C: 'static>(kind: Kind, options: Option<&DeclaredOptions>) -> String {
    let options = options.map_or(String::new(), |o| format!(" with {}", o.describe()));
    format!("a {} of {}{options}", kind.name(), payload_name::<C>())
}

/// Names are 1 to 249 characters of `[A-Za-z0-9._-]` (Kafka's rule), so they are safe as file
/// and table names later.
pub(crate) fn validate_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        "names cannot be empty"
    } else if name.len() > 249 {
        "names are at most 249 characters"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "names use only ASCII letters, digits, '.', '_' and '-'"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

impl Shared {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn controls(&self) -> Vec<Arc<dyn Control>> {
        self.registry
            .lock()
            .values()
            .map(|d| Arc::clone(&d.control))
            .collect()
    }

    fn close(&self) -> Result<(), Error> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Dropping the registry breaks the cycles core -> Shared -> registry -> core; consumers
        // keep what they use alive until they are dropped.
        let declared: Vec<Declared> = self.registry.lock().drain().map(|(_, d)| d).collect();
        for d in &declared {
            d.control.wake_all();
        }
        self.timer.close();
        // Sends that staged before the flag was set are committed and published here; until
        // then a consumer that sees them staged keeps waiting (`has_settled`).
        let result = self.store.close();
        self.settled.store(true, Ordering::Release);
        for d in &declared {
            d.control.wake_all();
        }
        self.idle.notify();
        result
    }

    /// Whether close has let the store publish all it will (see `settled`).
    pub(crate) fn has_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }
}

impl Wake for Shared {
    fn wake_all(&self) {
        for control in self.controls() {
            control.wake_all();
        }
        self.idle.notify();
    }
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("closed", &self.is_closed())
            .field("clock", &self.shared.clock)
            .finish_non_exhaustive()
    }
}

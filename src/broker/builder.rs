//! [`BrokerBuilder`]: configures a broker before opening it.

use std::any::TypeId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Broker;
use crate::clock::{Clock, ManualClock};
use crate::codec::CodecKind;
use crate::error::Error;
use crate::options::Durability;
use crate::store::{DurableOptions, DurableStore, MemoryStore, OpenWith, Store};

/// How errors name the store of a broker on an application's database
/// ([`BrokerBuilder::database`]), where they would name a file.
const APPLICATION_DATABASE: &str = "<application database>";

/// Configures a [`Broker`]: memory or durable (a path, or an application's database),
/// durability, codec, clock.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = embus::ManualClock::new();
/// let bus = embus::Broker::builder().clock(clock.clone()).open()?; // no path: memory
/// # drop(bus); Ok(()) }
/// ```
#[derive(Default)]
#[must_use]
pub struct BrokerBuilder {
    clock: Clock,
    path: Option<PathBuf>,
    durability: Durability,
    backend: Option<OpenWith>,
    cache_bytes: Option<usize>,
    check_integrity: bool,
    /// `two_phase_commit(false)`, kept inverted so that `Default` gives the default.
    one_phase: bool,
    database: Option<Arc<redb::Database>>,
    codec: CodecKind,
    payload_names: HashMap<TypeId, String>,
    #[cfg(feature = "metrics")]
    metrics_every: Option<std::time::Duration>,
}

impl std::fmt::Debug for BrokerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerBuilder")
            .field("clock", &self.clock)
            .field("path", &self.path)
            .field("durability", &self.durability)
            .field("storage_backend", &self.backend.is_some())
            .field("check_integrity", &self.check_integrity)
            .field("two_phase_commit", &!self.one_phase)
            .field("database", &self.database.is_some())
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl BrokerBuilder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Uses `clock` for timestamps, ack timeouts and age retention instead of the system clock.
    /// Receive and send timeouts (`recv_timeout`, `send_timeout`) stay in real time.
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Clock::Manual(clock);
        self
    }

    /// With `true`, message timestamps are read from the coarse wall clock: a read of about
    /// 3 ns where the precise clock (the default) takes about 23, on every send (a fifth of a
    /// memory topic send). Off by default, because the coarse clock lags.
    ///
    /// A coarse stamp is never ahead of the send, and usually behind it by less than the
    /// kernel's tick (1–10 ms on Linux), but on a loaded machine or in a VM at times by tens of
    /// milliseconds. So that no message sent at or after a time is missed,
    /// [`Start::Time`](crate::Start::Time) on this broker starts a second earlier (not on one
    /// that reopens the store without this option, nor the inspector's `--from`, which may
    /// then miss messages sent just after the time). Age retention may drop a message as much
    /// earlier as its stamp lagged. Timestamps stay monotone within a partition, and a record
    /// with its own [`delay`](crate::Record::delay), [`ttl`](crate::Record::ttl) or
    /// [`id`](crate::Record::id), or sent to a queue with a
    /// [`message_ttl`](crate::QueueOptions::message_ttl), is still stamped precisely, so no
    /// delay is cut short and no expiry or dedupe window ends early. Ignored with a
    /// [`clock`](Self::clock) (a manual clock is exact), and outside Linux and Android (no
    /// coarse clock is read there, and seeks are not widened).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = embus::Broker::builder().coarse_timestamps(true).open()?;
    /// let t = bus.topic::<u32>("metrics")?;
    /// let mut sub = t.subscribe(embus::Start::Earliest)?;
    /// t.producer().send(1)?;
    /// assert!(sub.recv()?.timestamp() <= std::time::SystemTime::now());
    /// # Ok(()) }
    /// ```
    pub fn coarse_timestamps(mut self, on: bool) -> Self {
        if let Clock::System { coarse } = &mut self.clock {
            *coarse = on;
        }
        self
    }

    /// Makes the broker durable on the redb file at `path` (created if missing).
    pub fn path(mut self, path: impl AsRef<Path>) -> Self {
        self.path = Some(path.as_ref().to_owned());
        self
    }

    /// When a durable broker's `send` returns (default [`Durability::Immediate`]). Ignored in
    /// memory mode.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Stores through this redb storage backend instead of the file at `path` (which still
    /// names the store in errors): redb's `InMemoryBackend` for durable semantics without a
    /// file, or a backend of your own that injects faults or power cuts in tests (embus's own
    /// fault and power-loss suites do). This is why [`redb`](crate::redb) is re-exported: the
    /// backend trait is redb's, of the exact version embus stores with.
    pub fn storage_backend(mut self, backend: impl redb::StorageBackend) -> Self {
        self.backend = Some(Box::new(move |builder: &redb::Builder| {
            builder.create_with_backend(backend)
        }));
        self
    }

    /// redb's page cache size (redb's default: 1 GiB, allocated as it fills).
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_bytes = Some(bytes);
        self
    }

    /// With `true`, [`open`](Self::open) has redb check the integrity of the file (every
    /// page's checksum) as it opens it, even a store that was closed cleanly, before redb trusts
    /// its own saved state or embus reads anything: a damaged file is [`Error::Corrupt`] there.
    /// Off by default: a store that was not closed cleanly is always checked, and a clean one
    /// is not, so that opening stays fast however long the log is (the check reads the whole
    /// file). Turn it on where a file may have been damaged at rest (a failing disk, a copy
    /// from elsewhere) and a damaged page must not reach redb: redb panics on some of them
    /// (embus catches those panics, unless the build uses `panic = "abort"`), and a few abort
    /// the process whatever the build (see RELIABILITY.md, "Known limits"). Ignored by a
    /// memory broker.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("embus-doc-check-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let bus = embus::Broker::builder()
    ///     .path(dir.join("orders.embus"))
    ///     .check_integrity(true)
    ///     .open()?;
    /// # drop(bus); std::fs::remove_dir_all(&dir)?; Ok(()) }
    /// ```
    pub fn check_integrity(mut self, always: bool) -> Self {
        self.check_integrity = always;
        self
    }

    /// With `false`, each commit fsyncs once instead of twice: redb's one-phase commit with
    /// checksums instead of its two-phase commit with quick repair (the default); a commit
    /// that grows the file still syncs once more. This takes about 40 % off the latency of
    /// a single `send` under [`Durability::Immediate`] and nearly doubles one producer's rate
    /// of single sends (a `send_batch`, or producers sharing commits, gain less: they share
    /// the fsync). Every send that returned `Ok` still survives a crash or a power cut.
    /// Ignored by a memory broker.
    ///
    /// What it gives up:
    /// - After a crash, redb cannot tell a last commit whose pages were damaged on the disk
    ///   since (a failing disk, or one that acknowledged writes it had not made) from one a
    ///   power cut interrupted before its fsync returned. It rolls such a commit back, and
    ///   its sends are lost without an error; with two phases the open fails with
    ///   [`Error::Corrupt`]. Damage to anything older is found either way.
    /// - redb's checksums are not cryptographic. Its documentation describes a theoretical
    ///   attack on one-phase commits by someone who controls the data written, the order
    ///   pages reach the disk and when the machine crashes: a commit left half-written that
    ///   still verifies. Keep two phases where payloads may come from such an attacker.
    ///
    /// Opening after a crash checks the whole file in both modes (redb's repair does it for
    /// a one-phase store, see [`check_integrity`](Self::check_integrity)), and the `embus`
    /// tool's read-only commands cannot open a store that one-phase commits left unclean
    /// until a broker (or `embus dlq --redrive`) has opened it once.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("embus-doc-1pc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let bus = embus::Broker::builder()
    ///     .path(dir.join("clicks.embus"))
    ///     .two_phase_commit(false)
    ///     .open()?;
    /// bus.topic::<u64>("clicks")?.producer().send(7)?; // one fsync
    /// # drop(bus); std::fs::remove_dir_all(&dir)?; Ok(()) }
    /// ```
    pub fn two_phase_commit(mut self, on: bool) -> Self {
        self.one_phase = !on;
        self
    }

    /// Makes the broker durable in `db`, a redb database the application also uses for its own
    /// tables (the outbox pattern: the application's rows and embus's messages in one file).
    ///
    /// embus keeps to tables named with its reserved prefix `embus.`; name yours anything
    /// else, and embus never opens, lists or changes them. A database without embus's tables
    /// gets them on first open; one with them is checked (and, written by an older embus,
    /// upgraded in place) as [`Broker::open`] checks a file. Errors name the store
    /// `<application database>` where they would name a path. One broker at a time per
    /// database.
    ///
    /// The broker's writer commits to `db` as it commits to its own file, so your write
    /// transactions on `db` take turns with its group commits (redb has one writer at a
    /// time): a write transaction the application holds open delays the broker's commits,
    /// and so every durable send, until it ends. Reads are not held up.
    ///
    /// Closing (or dropping) the broker releases only embus's handle: `db` stays open for
    /// the application, which closes it by dropping its last `Arc`. redb's integrity check
    /// after an unclean shutdown, which embus runs when it opens a file itself, needs the
    /// database to itself: for a shared database it is the application's own open that is
    /// responsible for it (for example [`redb::Database::check_integrity`] before sharing
    /// it).
    ///
    /// Cannot be combined with [`path`](Self::path), [`storage_backend`](Self::storage_backend),
    /// [`cache_size`](Self::cache_size) or [`check_integrity`](Self::check_integrity): the
    /// application opened the database, with its own file, backend, cache and checks.
    /// [`open`](Self::open) says which with [`Error::InvalidOption`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use embus::redb::{ReadableDatabase, TableDefinition};
    ///
    /// const ORDERS: TableDefinition<u64, &str> = TableDefinition::new("orders");
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let path = std::env::temp_dir().join(format!("app-{}.redb", std::process::id()));
    /// let db = Arc::new(embus::redb::Database::create(&path)?);
    /// let txn = db.begin_write()?;
    /// txn.open_table(ORDERS)?.insert(1, "socks")?;
    /// txn.commit()?;
    ///
    /// let bus = embus::Broker::builder().database(Arc::clone(&db)).open()?;
    /// bus.topic::<String>("placed")?.producer().send("order 1".to_owned())?;
    /// bus.close()?;
    ///
    /// // The application's table is untouched, and its database still open.
    /// let read = db.begin_read()?;
    /// let socks = read.open_table(ORDERS)?.get(1)?.map(|v| v.value().to_owned());
    /// assert_eq!(socks.as_deref(), Some("socks"));
    /// # drop(read);
    /// drop(db); // closes the database
    /// # std::fs::remove_file(&path)?;
    /// # Ok(()) }
    /// ```
    pub fn database(mut self, db: Arc<redb::Database>) -> Self {
        self.database = Some(db);
        self
    }

    /// How payloads are stored in a durable broker (default [`CodecKind::Bincode`]). The choice
    /// is kept in the file: reopening it with another codec is
    /// [`Error::CodecMismatch`]. Use [`CodecKind::Json`] for payload types the binary codec
    /// cannot carry (see [`codec`](crate::codec)), or that must evolve. Ignored in memory mode,
    /// which never encodes.
    pub fn codec(mut self, codec: CodecKind) -> Self {
        self.codec = codec;
        self
    }

    /// The name under which payload type `T` is stored in a durable broker's declarations,
    /// checked when a topic or queue is declared again after a restart. By default it is the
    /// type's own name without its module path (`my_app::orders::Order` is `Order`), so moving
    /// a type between modules, or upgrading the compiler, keeps it. Set a name when two types
    /// share a name, or to keep the stored name when you rename the type.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct OrderV2 { id: u64 }
    /// let bus = embus::Broker::builder().payload_name::<OrderV2>("Order").open()?;
    /// # drop(bus); Ok(()) }
    /// ```
    pub fn payload_name<T: 'static>(mut self, name: impl Into<String>) -> Self {
        self.payload_names.insert(TypeId::of::<T>(), name.into());
        self
    }

    /// Records the broker's figures into the installed `metrics` recorder every `every` (real
    /// time, whatever the [`clock`](Self::clock)), on a thread of its own (`embus-metrics`),
    /// from the moment the broker opens until it closes: what
    /// [`Broker::record_metrics`] does, called for you. The thread uses the global recorder
    /// (`metrics::set_global_recorder`; a thread-local one is not seen there). It does not keep
    /// the broker open, and closing the broker wakes it to stop at once (without waiting for
    /// a recording in progress). See [`metrics`](crate::metrics) for the names.
    ///
    /// Off by default. [`open`](Self::open) refuses a zero interval
    /// ([`Error::InvalidOption`]).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// // With a recorder installed (e.g. metrics-exporter-prometheus), the figures are there
    /// // within 10 s of any change.
    /// let bus = embus::Broker::builder().metrics_every(Duration::from_secs(10)).open()?;
    /// bus.close()?; // the thread stops
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics_every(mut self, every: std::time::Duration) -> Self {
        self.metrics_every = Some(every);
        self
    }

    /// Opens the broker.
    ///
    /// # Errors
    /// None for a memory broker; for a durable one, as [`Broker::open`].
    /// [`Error::InvalidOption`] (option `database`) if [`database`](Self::database) is
    /// combined with [`path`](Self::path), [`storage_backend`](Self::storage_backend),
    /// [`cache_size`](Self::cache_size) or [`check_integrity`](Self::check_integrity). With
    /// feature `metrics`: [`Error::InvalidOption`] (option `metrics_every`) for a zero
    /// interval, [`Error::Storage`] if the metrics thread cannot be started.
    pub fn open(self) -> Result<Broker, Error> {
        #[cfg(feature = "metrics")]
        let metrics = match self.metrics_every {
            Some(every) if every.is_zero() => {
                return Err(Error::InvalidOption {
                    name: self.store_name(),
                    option: "metrics_every",
                    reason: "must be more than zero",
                });
            }
            Some(every) => Some((every, self.store_name())),
            None => None,
        };
        let store: Arc<dyn Store> = match (self.path, self.backend, self.database) {
            (None, None, None) => Arc::new(MemoryStore::new()),
            (path, backend, Some(db)) => {
                let conflict = if path.is_some() {
                    Some("cannot be combined with `path` (the database is the file)")
                } else if backend.is_some() {
                    Some("cannot be combined with `storage_backend` (the database has its own)")
                } else if self.cache_bytes.is_some() {
                    Some("cannot be combined with `cache_size` (the database has its own cache)")
                } else if self.check_integrity {
                    Some(
                        "cannot be combined with `check_integrity` (the application opened the \
                         database; run `Database::check_integrity` before sharing it)",
                    )
                } else {
                    None
                };
                if let Some(reason) = conflict {
                    return Err(Error::InvalidOption {
                        name: APPLICATION_DATABASE.to_owned(),
                        option: "database",
                        reason,
                    });
                }
                let options = DurableOptions {
                    durability: self.durability,
                    backend: None,
                    cache_bytes: None,
                    database: Some(db),
                    codec: self.codec.name(),
                    check_integrity: false,
                    two_phase: !self.one_phase,
                };
                Arc::new(DurableStore::open(
                    Path::new(APPLICATION_DATABASE),
                    options,
                )?)
            }
            (path, backend, None) => {
                let path = path.unwrap_or_else(|| PathBuf::from("<storage backend>"));
                let options = DurableOptions {
                    durability: self.durability,
                    backend,
                    cache_bytes: self.cache_bytes,
                    database: None,
                    codec: self.codec.name(),
                    check_integrity: self.check_integrity,
                    two_phase: !self.one_phase,
                };
                Arc::new(DurableStore::open(&path, options)?)
            }
        };
        let broker = Broker::from_parts(self.clock, store, self.codec, self.payload_names);
        #[cfg(feature = "metrics")]
        if let Some((every, store)) = metrics {
            broker.start_metrics(every, &store)?;
        }
        Ok(broker)
    }

    /// What errors call the store: its path, the application's database, or `<memory>`.
    #[cfg(feature = "metrics")]
    fn store_name(&self) -> String {
        match (&self.path, &self.database, &self.backend) {
            (_, Some(_), _) => APPLICATION_DATABASE.to_owned(),
            (Some(path), ..) => path.display().to_string(),
            (None, None, Some(_)) => "<storage backend>".to_owned(),
            (None, None, None) => "<memory>".to_owned(),
        }
    }
}

//! The engine: one delivery path for every mode — topic logs, groups, subscribers, queue
//! state, waiting and the timer — and the [`Context`] every part of it shares.
//!
//! Everything here is `pub(crate)` and names no facade type: consumers' sources hand back
//! [`Delivery`] values that the facade wraps into `Message`s, and producers' appends answer
//! with a [`Sent`] receipt or a [`Fail`]. The engine reaches storage only through the
//! [`Store`] trait, with payloads encoded at the seam ([`seam`]).

mod deadlines;
pub(crate) mod dedupe;
pub(crate) mod delivery;
mod idle;
pub(crate) mod notify;
pub(crate) mod queue;
mod registry;
pub(crate) mod seam;
mod slot;
pub(crate) mod sync;
pub(crate) mod timer;
pub(crate) mod topic;
pub(crate) mod tx;

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::clock::{Clock, Wake};
use crate::codec::CodecKind;
use crate::error::Error;
use crate::options::IdleOptions;
use crate::record::{Nanos, Receipt};
use crate::store::{Append, Commit, Store, Ticket};

pub(crate) use self::delivery::Delivery;
pub(crate) use self::idle::IdleWait;
use self::notify::{IdleSignal, Wait};
use self::registry::Registry;
use self::timer::Timer;

/// State every handle and engine part reaches: the registry, the clock, the store, the closed
/// flag.
pub(crate) struct Context {
    closed: AtomicBool,
    /// Set once close has let the store publish everything it will: from then on, records
    /// still staged (their commit failed) will never be published.
    settled: AtomicBool,
    pub(crate) clock: Clock,
    pub(crate) idle: IdleSignal,
    next_id: AtomicU64,
    registry: Registry,
    pub(crate) store: Arc<dyn Store>,
    /// How payloads become bytes in the store.
    pub(crate) codec: CodecKind,
    /// Wakes async receives at real-time ack deadlines (a thread only once one waits).
    pub(crate) timer: Arc<Timer>,
    /// Bridges relaying to or from this broker, for stats (dropped ones are skipped).
    reporters: parking_lot::Mutex<Vec<std::sync::Weak<dyn Reporter>>>,
    /// Run once by [`close`](Self::close) (stops the metrics thread).
    on_close: parking_lot::Mutex<Vec<OnClose>>,
}

/// Something to run when the broker closes ([`Context::on_close`]).
pub(crate) type OnClose = Box<dyn FnOnce() + Send>;

/// Something outside the engine that reports its figures in [`Context::stats`] (a bridge).
pub(crate) trait Reporter: Send + Sync {
    fn report(&self) -> crate::stats::BridgeStats;
}

/// Keeps the broker open; the last one dropped closes it. Held by the facade's `Broker`,
/// `Topic`, `Queue` and `Producer` handles, never by consumers or by anything the broker
/// itself owns.
pub(crate) struct Life {
    context: Arc<Context>,
}

impl Drop for Life {
    fn drop(&mut self) {
        // Nobody is left to report a failed final flush to; every send that failed said so.
        let _ = self.context.close();
    }
}

/// Set once a topic or queue is deleted ([`Control::delete`]): its handles, producers and
/// consumers then fail with `Error::Deleted` / `RecvError::Deleted`.
#[derive(Default)]
pub(crate) struct Gone(AtomicBool);

impl Gone {
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What the broker needs of a topic or queue without knowing its payload type.
pub(crate) trait Control: Send + Sync {
    /// Its deleted flag.
    fn gone(&self) -> &Gone;
    /// What the store's writer knows it by (its partitions, or the queue).
    fn sinks(&self) -> Vec<Arc<dyn crate::store::Sink>>;
    /// Marks it deleted and wakes everyone blocked on it, so they see it: waiting under its
    /// locks, so a send that staged before the flag was set has handed its records to the
    /// store before this returns.
    fn delete(&self) {
        self.gone().0.store(true, Ordering::Release);
        self.wake_all();
    }
    /// Its consumer groups that dead-letter into queue `queue`, as `topic/group`.
    fn dead_letter_users(&self, _queue: &str) -> Vec<String> {
        Vec::new()
    }
    /// Wakes every blocked consumer and producer so they re-check (close, clock advance).
    fn wake_all(&self);
    /// `None` when idle; otherwise what is pending, for `Error::NotIdle`.
    fn busy(&self, options: IdleOptions) -> Option<String>;
    /// The earliest ack deadline, for waits that must re-check when it passes.
    fn next_deadline(&self) -> Option<Nanos>;
    /// Adds its figures to a snapshot, taking its own locks one at a time.
    fn stats(&self, into: &mut crate::stats::Stats);
}

/// One attempt of a consumer's source to take a message.
pub(crate) enum Poll<T> {
    Ready(Delivery<T>),
    Lagged(u64),
    /// Not a message and not the end: damaged data, or a read the store keeps failing.
    Error(crate::error::RecvError),
    Empty,
}

impl<T> Poll<T> {
    pub(crate) fn is_ready(&self) -> bool {
        matches!(self, Self::Ready(_))
    }
}

/// What a flavor of consumer reads from. A `poll` whose `wait` registers also registers the
/// caller (thread or task) to be woken when its answer might change, under the same locks it
/// checked; one that does not may answer from lock-free state.
pub(crate) trait Source<T> {
    fn poll(&mut self, wait: Wait<'_>) -> Poll<T>;
    fn is_closed(&self) -> bool;
    /// The name of its topic or queue once that is deleted.
    fn deleted(&self) -> Option<String>;
    /// A moment to re-check even if nobody wakes us (the next ack timeout).
    fn wake_at(&self) -> Option<Instant> {
        None
    }
}

/// A record taken by the engine: its receipt, and for `send_async` on a durable store the
/// commit to wait for.
pub(crate) type Sent = (Receipt, Option<Ticket>);

/// Why the engine did not take a record.
pub(crate) enum Fail {
    /// No room before the deadline.
    Full,
    Disconnected,
    Failed(Error),
}

impl Context {
    /// A context over `store`, listening to `clock`'s advances.
    pub(crate) fn new(
        clock: Clock,
        store: Arc<dyn Store>,
        codec: CodecKind,
        payload_names: HashMap<TypeId, String>,
    ) -> Arc<Self> {
        let context = Arc::new(Self {
            closed: AtomicBool::new(false),
            settled: AtomicBool::new(false),
            clock,
            idle: IdleSignal::default(),
            next_id: AtomicU64::new(1),
            registry: Registry::new(payload_names),
            store,
            codec,
            timer: Arc::default(),
            reporters: parking_lot::Mutex::default(),
            on_close: parking_lot::Mutex::default(),
        });
        let weak = Arc::downgrade(&context);
        context.clock.listen(weak);
        context
    }

    /// The handle that keeps the broker open while it lives.
    pub(crate) fn life(self: &Arc<Self>) -> Arc<Life> {
        Arc::new(Life {
            context: Arc::clone(self),
        })
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Closed, or else `Ok`.
    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if self.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Closes the bus for every handle; closing twice is fine.
    pub(crate) fn close(&self) -> Result<(), Error> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Dropping the registry breaks the cycles core -> Context -> registry -> core;
        // consumers keep what they use alive until they are dropped.
        let controls = self.registry.drain();
        for control in &controls {
            control.wake_all();
        }
        self.timer.close();
        let on_close = std::mem::take(&mut *self.on_close.lock());
        for f in on_close {
            f();
        }
        // Sends that staged before the flag was set are committed and published here; until
        // then a consumer that sees them staged keeps waiting (`has_settled`).
        let result = self.store.close();
        self.settled.store(true, Ordering::Release);
        for control in &controls {
            control.wake_all();
        }
        self.idle.notify();
        result
    }

    /// A snapshot of every declared topic and queue, the store and the reporters: each read
    /// under its own locks, one after the other (the registry's lock only to list them).
    pub(crate) fn stats(&self) -> crate::stats::Stats {
        let mut stats = crate::stats::Stats {
            at: self.clock.now(),
            topics: Vec::new(),
            queues: Vec::new(),
            store: self.store.stats(),
            bridges: Vec::new(),
        };
        for control in self.registry.controls() {
            control.stats(&mut stats);
        }
        stats.topics.sort_by(|a, b| a.name.cmp(&b.name));
        stats.queues.sort_by(|a, b| a.name.cmp(&b.name));
        let reporters: Vec<_> = {
            let mut reporters = self.reporters.lock();
            reporters.retain(|r| r.strong_count() > 0);
            reporters
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .collect()
        };
        stats.bridges = reporters.iter().map(|r| r.report()).collect();
        stats
    }

    /// Adds `reporter` to the snapshots while it lives.
    #[cfg(any(feature = "nats", feature = "amqp"))]
    pub(crate) fn add_reporter(&self, reporter: std::sync::Weak<dyn Reporter>) {
        self.reporters.lock().push(reporter);
    }

    /// Runs `f` when the broker closes, after the closed flag is set and blocked calls are
    /// woken (at once if it is closed already). `f` runs on the closing thread, holding no
    /// engine lock.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn on_close(&self, f: OnClose) {
        let mut on_close = self.on_close.lock();
        // `close` sets the flag before it takes the list: a hook pushed while the flag is
        // clear is in the list it takes.
        if self.is_closed() {
            drop(on_close);
            f();
        } else {
            on_close.push(f);
        }
    }

    /// Whether close has let the store publish all it will (see `settled`).
    pub(crate) fn has_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// Stores and publishes a send ([`Store::append`]), then tells a wait for idle that work
    /// moved (before the sender can go on to ack what it consumed).
    #[inline]
    pub(crate) fn append(
        &self,
        job: &mut dyn Append,
        commit: Commit,
    ) -> Result<Option<Ticket>, Error> {
        let stored = self.store.append(job, commit);
        self.idle.moved();
        stored
    }

    /// Waits for the commit of a send staged with [`Commit::Staged`], as a plain send would
    /// ([`Store::settle`]); `None` (memory mode, or nothing staged) waits for nothing. Call
    /// it holding no engine lock.
    pub(crate) fn settle(&self, ticket: Option<Ticket>) -> Result<(), Error> {
        ticket.map_or(Ok(()), |ticket| self.store.settle(ticket))
    }
}

impl Wake for Context {
    fn wake_all(&self) {
        for control in self.registry.controls() {
            control.wake_all();
        }
        self.idle.notify();
    }
}

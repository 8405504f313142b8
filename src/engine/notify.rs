//! Waking blocked consumers and producers: waiter lists, deadlines and the idle signal.
//!
//! A thread that finds nothing to do registers itself (under the lock of what it waits on) and
//! parks; whoever changes that state takes the list and unparks it after unlocking. Registering
//! and checking under the same lock means no wakeup is lost; a stale unpark only causes one extra
//! check. Before parking, a waiter re-checks a few times with `yield_now` (a bounded backoff, as in
//! crossbeam-channel and parking_lot): a consumer that keeps pace with its producer then rarely
//! needs a futex wake per message. Nothing ever busy-waits unboundedly or sleeps to poll.

use std::task::Waker;
use std::thread;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

// Loom's threads under `--cfg embus_loom`, so that the partition models park and unpark them.
use crate::engine::sync::{Thread, current};

/// How long an operation may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// Do not wait at all (`try_*`).
    Now,
    /// Wait until this instant (`*_timeout`, `*_deadline`).
    At(Instant),
    /// Wait as long as it takes.
    Never,
}

impl Deadline {
    pub(crate) fn passed(self) -> bool {
        match self {
            Self::Now => true,
            Self::At(at) => Instant::now() >= at,
            Self::Never => false,
        }
    }

    /// Parks the current thread until unparked, this deadline, or `wake` (whichever is first).
    pub(crate) fn park(self, wake: Option<Instant>) {
        let until = match (self, wake) {
            (Self::Now, _) => return,
            (Self::At(at), Some(w)) => Some(at.min(w)),
            (Self::At(at), None) => Some(at),
            (Self::Never, w) => w,
        };
        match until {
            Some(at) => thread::park_timeout(at.saturating_duration_since(Instant::now())),
            None => thread::park(),
        }
    }
}

/// How a caller that finds nothing to do waits: not at all, by parking its thread, or through an
/// async task's waker. Blocking and async calls share every engine path; only this differs.
#[derive(Clone, Copy)]
pub(crate) enum Wait<'a> {
    /// Don't register (a first, cheap look; `try_*`).
    No,
    /// Look under the locks, but register nothing (the last look after close).
    Locked,
    /// Park the current thread until woken.
    Thread,
    /// Wake this task.
    Task(&'a Waker),
}

impl Wait<'_> {
    /// Whether the caller looks under the locks (lock-free shortcuts are for `No` only).
    pub(crate) fn takes_locks(self) -> bool {
        !matches!(self, Wait::No)
    }
}

/// Something to wake: a parked thread or a task.
#[derive(Debug)]
enum Signal {
    Thread(Thread),
    Task(Waker),
}

impl Signal {
    fn wake(self) {
        match self {
            Self::Thread(thread) => thread.unpark(),
            Self::Task(waker) => waker.wake(),
        }
    }
}

/// The threads and tasks waiting on one thing (a partition, a queue, a group), each id once.
#[derive(Debug, Default)]
pub(crate) struct Waiters(Vec<(u64, Signal)>);

impl Waiters {
    /// Registers waiter `id` (a consumer, producer or future) the way `wait` says.
    pub(crate) fn register(&mut self, id: u64, wait: Wait<'_>) {
        let signal = match wait {
            Wait::No | Wait::Locked => return,
            Wait::Thread => Signal::Thread(current()),
            Wait::Task(waker) => Signal::Task(waker.clone()),
        };
        // The same id may come back from another thread, or with another waker.
        match self.0.iter_mut().find(|(i, _)| *i == id) {
            Some(waiter) => waiter.1 = signal,
            None => self.0.push((id, signal)),
        }
    }

    pub(crate) fn remove(&mut self, id: u64) {
        self.0.retain(|(i, _)| *i != id);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes every waiter; call [`Woken::wake`] after releasing the lock. An empty list keeps
    /// its capacity (most sends find nobody waiting).
    #[inline]
    pub(crate) fn take(&mut self) -> Woken {
        if self.0.is_empty() {
            return Woken::none();
        }
        Woken::of(std::mem::take(&mut self.0))
    }
}

/// Waiters taken from a list, to be woken outside the lock; and (feature `tracing`) events
/// that happened under it, emitted then too, since a subscriber may call back into the broker.
/// Nothing to wake is a null pointer, so that the common case (every send that finds nobody
/// waiting) costs one branch to wake and nothing to drop.
#[must_use]
pub(crate) struct Woken(Option<Box<Taken>>);

/// What a [`Woken`] holds when it is not empty.
#[derive(Default)]
struct Taken {
    signals: Vec<(u64, Signal)>,
    #[cfg(feature = "tracing")]
    events: Vec<Box<dyn FnOnce() + Send + Sync>>,
}

impl Woken {
    #[inline]
    pub(crate) fn none() -> Self {
        Self(None)
    }

    fn of(signals: Vec<(u64, Signal)>) -> Self {
        if signals.is_empty() {
            return Self::none();
        }
        Self(Some(Box::new(Taken {
            signals,
            #[cfg(feature = "tracing")]
            events: Vec::new(),
        })))
    }

    /// Wakes them all (nothing to do, without a call, when there are none: the common case).
    #[inline]
    pub(crate) fn wake(self) {
        if let Some(taken) = self.0 {
            (*taken).wake_all();
        }
    }

    /// Adds `other`'s waiters and events (taking them as they are when this one has none).
    pub(crate) fn join(&mut self, other: Woken) {
        let Some(other) = other.0 else {
            return;
        };
        let Some(taken) = self.0.as_mut() else {
            self.0 = Some(other);
            return;
        };
        let Taken {
            signals,
            #[cfg(feature = "tracing")]
            events,
        } = *other;
        taken.signals.extend(signals);
        #[cfg(feature = "tracing")]
        taken.events.extend(events);
    }

    /// Emits `event` (a `tracing` event) once the locks are released, in [`wake`](Self::wake).
    #[cfg(feature = "tracing")]
    pub(crate) fn then(&mut self, event: impl FnOnce() + Send + Sync + 'static) {
        let taken = self.0.get_or_insert_with(Box::default);
        taken.events.push(Box::new(event));
    }
}

impl Taken {
    /// Wakes every waiter even if a task's waker (the application's code) panics: the first
    /// panic goes on once all are woken, so one bad waker strands no other waiter.
    #[inline(never)]
    fn wake_all(self) {
        let Taken {
            signals,
            #[cfg(feature = "tracing")]
            events,
        } = self;
        let mut panicked = None;
        for (_, signal) in signals {
            let woke = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| signal.wake()));
            if let (Err(panic), None) = (woke, &panicked) {
                panicked = Some(panic);
            }
        }
        #[cfg(feature = "tracing")]
        for event in events {
            event();
        }
        if let Some(panic) = panicked {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Bounded re-checking before parking: a few spins, then a few yields.
pub(crate) struct Backoff(u32);

impl Backoff {
    const SPIN: u32 = 4;
    const YIELD: u32 = 10;

    pub(crate) fn new() -> Self {
        Self(0)
    }

    /// Waits a little; `false` once it is time to park instead.
    pub(crate) fn snooze(&mut self) -> bool {
        if self.0 < Self::SPIN {
            for _ in 0..1 << self.0 {
                std::hint::spin_loop();
            }
        } else if self.0 < Self::YIELD {
            thread::yield_now();
        } else {
            return false;
        }
        self.0 += 1;
        true
    }
}

/// Lets [`Broker::wait_idle`](crate::Broker::wait_idle) sleep until something that could make the
/// bus idle happens (an ack, a drain, a clock advance, close), and tell whether work moved
/// while it looked.
#[derive(Debug, Default)]
pub(crate) struct IdleSignal {
    /// Waits in progress (blocking and async): while there are none, sends skip the bump.
    waiting: AtomicUsize,
    /// Bumped by every send and dead-letter while someone waits (see [`moved`](Self::moved)).
    moved: AtomicU64,
    generation: Mutex<u64>,
    changed: Condvar,
    /// Async waits to wake, by id.
    tasks: Mutex<Vec<(u64, Waker)>>,
}

impl IdleSignal {
    /// Cheap when nobody waits: one atomic load.
    pub(crate) fn notify(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            *self.generation.lock() += 1;
            self.changed.notify_all();
            let tasks = std::mem::take(&mut *self.tasks.lock());
            for (_, waker) in tasks {
                waker.wake();
            }
        }
    }

    /// Work moved: a send was published, or a message left for a dead-letter queue. Called
    /// after a send is visible and before the sender can go on (to ack what it consumed), and
    /// before a dead letter leaves its queue: so a check that missed the work where it went
    /// sees the bump when it finds where it came from idle. Cheap when nobody waits.
    pub(crate) fn moved(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.moved.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The count [`moved`](Self::moved) bumps: equal before and after a check, nothing moved.
    pub(crate) fn epoch(&self) -> u64 {
        self.moved.load(Ordering::SeqCst)
    }

    /// Counts a wait in (sends bump [`moved`](Self::moved) from now on) or out.
    pub(crate) fn count_waiter(&self, waits: bool) {
        if waits {
            self.waiting.fetch_add(1, Ordering::SeqCst);
        } else {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The notification count, to tell whether one came between a check and a registration.
    pub(crate) fn generation(&self) -> u64 {
        *self.generation.lock()
    }

    /// Registers (or replaces) async wait `id`'s waker for the next notification.
    pub(crate) fn register_task(&self, id: u64, waker: &Waker) {
        let mut tasks = self.tasks.lock();
        match tasks.iter_mut().find(|(at, _)| *at == id) {
            Some((_, w)) => w.clone_from(waker),
            None => tasks.push((id, waker.clone())),
        }
    }

    /// Forgets async wait `id`.
    pub(crate) fn remove_task(&self, id: u64) {
        let removed = {
            let mut tasks = self.tasks.lock();
            tasks
                .iter()
                .position(|(at, _)| *at == id)
                .map(|i| tasks.swap_remove(i))
        };
        drop(removed); // after unlocking: dropping a waker may run task code
    }

    /// Runs `check` until it returns `Ok`, or `deadline` passes (then the last `Err`; `None`
    /// waits as long as it takes). `check` also says when to re-check even without a
    /// notification (the next ack timeout).
    pub(crate) fn wait_until<E>(
        &self,
        deadline: Option<Instant>,
        mut check: impl FnMut() -> Result<(), (E, Option<Instant>)>,
    ) -> Result<(), E> {
        self.count_waiter(true);
        let result = loop {
            let seen = *self.generation.lock();
            match check() {
                Ok(()) => break Ok(()),
                Err((err, _)) if deadline.is_some_and(|d| Instant::now() >= d) => break Err(err),
                Err((_, wake)) => {
                    let mut generation = self.generation.lock();
                    if *generation == seen {
                        match wake.into_iter().chain(deadline).min() {
                            Some(at) => {
                                let _timed_out = self.changed.wait_until(&mut generation, at);
                            }
                            None => self.changed.wait(&mut generation),
                        }
                    }
                }
            }
        };
        self.count_waiter(false);
        result
    }
}

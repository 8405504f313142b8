//! Time for timestamps, ack timeouts and age retention: the system clock or a [`ManualClock`].
//!
//! Two readings: wall-clock time ([`Clock::now`]) ages messages for retention, and stamps them
//! ([`Clock::stamp`], from the coarse wall clock if asked for); monotonic time
//! ([`Clock::ticks`]) times ack deadlines, so a step of the system clock (NTP,
//! a suspended laptop, an operator) redelivers nothing early and holds nothing back. A
//! [`ManualClock`] drives both.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::record::{Nanos, to_nanos};

/// A clock that moves only when told to, for tests: ack timeouts and age retention fire when
/// [`advance`](Self::advance) passes them, with no sleeping.
///
/// Cloning gives another handle to the same clock. Give one to
/// [`BrokerBuilder::clock`](crate::BrokerBuilder::clock) and keep one to advance. It starts at
/// 2026-01-01T00:00:00Z, so message timestamps are stable across runs.
///
/// ```
/// use std::time::Duration;
/// use embus::{Broker, ManualClock, QueueOptions};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = ManualClock::new();
/// let bus = Broker::builder().clock(clock.clone()).open()?;
/// let jobs = bus.queue_with::<u32>("jobs", QueueOptions::default().ack_timeout(Duration::from_secs(30)))?;
/// jobs.producer().send(7)?;
/// let mut worker = jobs.consumer();
/// let first = worker.recv()?;
/// clock.advance(Duration::from_secs(31)); // the delivery times out
/// let again = worker.recv()?;
/// assert_eq!((again.payload(), again.delivery_count()), (&7, 2));
/// # drop(first); Ok(()) }
/// ```
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

struct ManualInner {
    state: Mutex<ManualState>,
}

struct ManualState {
    now: Nanos,
    listeners: Vec<Weak<dyn Wake>>,
}

/// Woken when a manual clock moves, so waits on virtual deadlines re-check.
pub(crate) trait Wake: Send + Sync {
    fn wake_all(&self);
}

impl ManualClock {
    /// 2026-01-01T00:00:00Z in nanoseconds since the Unix epoch.
    const START: Nanos = 1_767_225_600_000_000_000;

    /// A clock at 2026-01-01T00:00:00Z.
    pub fn new() -> Self {
        Self::starting_at(crate::record::to_system_time(Self::START))
    }

    /// A clock at `time`.
    pub fn starting_at(time: SystemTime) -> Self {
        let state = ManualState {
            now: to_nanos(time),
            listeners: Vec::new(),
        };
        Self {
            inner: Arc::new(ManualInner {
                state: Mutex::new(state),
            }),
        }
    }

    /// The clock's current time.
    pub fn now(&self) -> SystemTime {
        crate::record::to_system_time(self.inner.state.lock().now)
    }

    /// Moves the clock forward by `by`, then wakes every broker using it so that expired ack
    /// timeouts and age retention take effect before this returns to a waiting consumer.
    pub fn advance(&self, by: Duration) {
        let listeners = {
            let mut state = self.inner.state.lock();
            state.now = state
                .now
                .saturating_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX));
            state.listeners.retain(|l| l.strong_count() > 0);
            state.listeners.clone()
        };
        for listener in listeners.iter().filter_map(Weak::upgrade) {
            listener.wake_all();
        }
    }

    fn nanos(&self) -> Nanos {
        self.inner.state.lock().now
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

/// The broker's time source.
#[derive(Clone, Debug)]
pub(crate) enum Clock {
    /// The system's clocks; message stamps from the coarse wall clock if `coarse`
    /// ([`BrokerBuilder::coarse_timestamps`](crate::BrokerBuilder::coarse_timestamps)).
    System {
        coarse: bool,
    },
    Manual(ManualClock),
}

impl Default for Clock {
    fn default() -> Self {
        Self::System { coarse: false }
    }
}

impl Clock {
    /// A new message's timestamp: wall-clock time as [`now`](Self::now) reads it. From the
    /// coarse wall clock (about 3 ns where the precise one takes 23, on every send) if the
    /// broker was asked for coarse stamps, unless `exact` says so: a record's delay,
    /// time-to-live or dedupe window counts from its stamp, which must not lag. `exact` is
    /// asked only then, so a broker with precise stamps looks at no record for it.
    pub(crate) fn stamp(&self, exact: impl FnOnce() -> bool) -> Nanos {
        match self {
            Self::System { coarse: true } if !exact() => wall_coarse(),
            _ => self.now(),
        }
    }

    /// How much earlier a seek by time starts: [`COARSE_SEEK_MARGIN`] with coarse stamps, so
    /// that a message sent at or after the time is not missed for a stamp that lagged.
    pub(crate) fn seek_margin(&self) -> Nanos {
        match self {
            Self::System { coarse: true } if system::HAS_COARSE => COARSE_SEEK_MARGIN,
            _ => 0,
        }
    }

    /// Wall-clock time: message timestamps and retention by age.
    pub(crate) fn now(&self) -> Nanos {
        match self {
            Self::System { .. } => wall(),
            Self::Manual(clock) => clock.nanos(),
        }
    }

    /// Monotonic time, for deadlines: nanoseconds since the process first asked (a manual
    /// clock's own time).
    pub(crate) fn ticks(&self) -> Nanos {
        match self {
            Self::System { .. } => system::monotonic().saturating_sub(base().ticks),
            Self::Manual(clock) => clock.nanos(),
        }
    }

    /// [`ticks`](Self::ticks) from the coarse monotonic clock: about 3 ns a read where the
    /// precise one takes 23, never ahead, but behind by up to a kernel tick and, on a loaded
    /// machine or a VM, at times by tens of milliseconds. Only for a check that may see a
    /// deadline late: never to set a deadline (it would come early), nor before parking until
    /// one (the look would find it not yet passed, wake at once, and spin).
    pub(crate) fn ticks_coarse(&self) -> Nanos {
        match self {
            Self::System { .. } => system::monotonic_coarse().saturating_sub(base().ticks),
            Self::Manual(clock) => clock.nanos(),
        }
    }

    /// Registers a broker to be woken when a manual clock moves.
    pub(crate) fn listen(&self, listener: Weak<dyn Wake>) {
        if let Self::Manual(clock) = self {
            clock.inner.state.lock().listeners.push(listener);
        }
    }

    /// The real instant to wake at for a deadline in [`ticks`](Self::ticks): `None` for a
    /// manual clock, whose deadlines pass only through `advance` (which wakes waiters itself).
    pub(crate) fn wake_at(&self, deadline: Nanos) -> Option<Instant> {
        match self {
            Self::System { .. } => base().instant.checked_add(Duration::from_nanos(deadline)),
            Self::Manual(_) => None,
        }
    }
}

/// How much earlier a seek by time starts with coarse stamps: far more than the coarse clock
/// lags (a kernel tick, 1–10 ms, and at times tens of milliseconds on a loaded machine or in a
/// VM, as measured here), so that a miss would take the kernel's clock to stall for a second.
const COARSE_SEEK_MARGIN: Nanos = 1_000_000_000;

/// Where monotonic ticks count from: one moment, as an `Instant` (to park until a deadline) and
/// as a monotonic reading (to count ticks from).
struct Base {
    instant: Instant,
    ticks: Nanos,
}

fn base() -> &'static Base {
    static BASE: std::sync::OnceLock<Base> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        // Ticks first: the instant is then a little later, so a wake at `instant + d` comes
        // when the ticks are at or just past `d`, never before.
        let ticks = system::monotonic();
        Base {
            instant: Instant::now(),
            ticks,
        }
    })
}

/// Reads of the system clocks, in nanoseconds. On Linux they go through rustix's vDSO call:
/// about 23 ns for the precise wall clock where `SystemTime::now` takes about 34 (libc's
/// wrapper and a checked conversion on top of the same vDSO read), on every topic send and
/// several times per queue message. Elsewhere, std's clocks.
mod system {
    use crate::record::Nanos;

    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn realtime() -> Nanos {
        nanos(rustix::time::clock_gettime(rustix::time::ClockId::Realtime))
    }

    /// Whether the coarse clocks below are read (else they are the precise ones).
    pub(super) const HAS_COARSE: bool = cfg!(any(target_os = "linux", target_os = "android"));

    /// `CLOCK_REALTIME_COARSE`: the wall clock as of the last kernel tick, read without the
    /// time counter.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn realtime_coarse() -> Nanos {
        nanos(rustix::time::clock_gettime(
            rustix::time::ClockId::RealtimeCoarse,
        ))
    }

    /// `CLOCK_MONOTONIC_COARSE`: the monotonic clock as of the last kernel tick.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn monotonic_coarse() -> Nanos {
        nanos(rustix::time::clock_gettime(
            rustix::time::ClockId::MonotonicCoarse,
        ))
    }

    /// `CLOCK_MONOTONIC`, the clock `Instant` reads on Linux.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn monotonic() -> Nanos {
        nanos(rustix::time::clock_gettime(
            rustix::time::ClockId::Monotonic,
        ))
    }

    /// A reading as nanoseconds: 0 before the epoch (as `to_nanos`), `u64::MAX` past 2554.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn nanos(at: rustix::time::Timespec) -> Nanos {
        let (Ok(secs), Ok(subsec)) = (u64::try_from(at.tv_sec), u64::try_from(at.tv_nsec)) else {
            return 0;
        };
        secs.checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(subsec))
            .unwrap_or(u64::MAX)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) fn realtime() -> Nanos {
        crate::record::to_nanos(std::time::SystemTime::now())
    }

    /// No coarse clock to read here: the precise one.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) fn realtime_coarse() -> Nanos {
        realtime()
    }

    /// No coarse clock here: the precise one.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) fn monotonic_coarse() -> Nanos {
        monotonic()
    }

    /// Nanoseconds since the first call.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) fn monotonic() -> Nanos {
        static FIRST: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let first = *FIRST.get_or_init(std::time::Instant::now);
        u64::try_from(first.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The system's wall-clock time (in unit tests, stepped by [`step_wall_clock`] on this thread).
fn wall() -> Nanos {
    stepped(system::realtime())
}

/// As [`wall`], from the coarse clock.
fn wall_coarse() -> Nanos {
    stepped(system::realtime_coarse())
}

/// A wall-clock reading as this thread sees it: in unit tests, stepped by [`step_wall_clock`].
#[cfg_attr(not(test), inline(always))]
fn stepped(now: Nanos) -> Nanos {
    #[cfg(test)]
    let now = now.saturating_add_signed(WALL_STEP.get());
    now
}

#[cfg(test)]
thread_local! {
    static WALL_STEP: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// Steps the system clock as this thread sees it, as NTP or an operator may.
#[cfg(test)]
pub(crate) fn step_wall_clock(by: i64) {
    WALL_STEP.set(WALL_STEP.get() + by);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_reads_what_std_reads() {
        for _ in 0..1000 {
            let before = to_nanos(SystemTime::now());
            let ours = system::realtime();
            let after = to_nanos(SystemTime::now());
            assert!(
                before <= ours && ours <= after,
                "{before} <= {ours} <= {after}"
            );
        }
    }

    #[test]
    fn stamps_are_precise_unless_coarse_ones_are_asked_for() {
        let coarse = Clock::System { coarse: true };
        let precise = [(Clock::default(), false), (coarse.clone(), true)];
        let mut behind = 0;
        for _ in 0..1000 {
            let before = to_nanos(SystemTime::now());
            let lagging = coarse.stamp(|| false);
            let exact = precise.iter().map(|(clock, exact)| clock.stamp(|| *exact));
            let exact: Vec<Nanos> = exact.collect();
            let after = to_nanos(SystemTime::now());
            // Never ahead; behind by far less than the seek margin.
            assert!(
                before - COARSE_SEEK_MARGIN < lagging && lagging <= after,
                "{before} {lagging} {after}"
            );
            behind += usize::from(lagging < before);
            for at in exact {
                assert!(before <= at && at <= after, "{before} <= {at} <= {after}");
            }
        }
        // The coarse clock is what was read: a precise stamp is never behind `before`.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        assert!(behind > 0, "no coarse stamp of 1000 was behind");
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = behind;
    }

    #[test]
    fn ticks_move_with_instants_and_map_back_to_them() {
        let clock = Clock::default();
        let (a0, t0, b0) = (Instant::now(), clock.ticks(), Instant::now());
        while b0.elapsed() < Duration::from_millis(2) {
            std::hint::spin_loop();
        }
        let (a1, t1, b1) = (Instant::now(), clock.ticks(), Instant::now());
        let moved = u128::from(t1 - t0);
        assert!(moved <= (b1 - a0).as_nanos(), "ticks ran ahead of Instant");
        assert!(moved >= (a1 - b0).as_nanos(), "ticks fell behind Instant");
        // The instant a deadline maps to is where the ticks were (the base's two readings are
        // nanoseconds apart).
        let at = clock.wake_at(t1).expect("the system clock wakes");
        let slack = Duration::from_millis(1);
        assert!(a1 - slack <= at && at <= b1 + slack);
    }
}

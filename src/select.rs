//! [`Select`]: blocking code waiting on several consumers at once (crossbeam's `Select`).

use std::fmt;
use std::time::{Duration, Instant};

use crate::consumer::Consumer;
use crate::engine::notify::{Backoff, Deadline, Wait};
use crate::record::Payload;

/// Waits until one of several consumers — of any payload types — has something to receive.
///
/// [`ready`](Self::ready) returns the index (in the order added) of a consumer whose next
/// receive will not wait: it returns a message, an error (`Lagged`, `Undecodable`, `Failed`) or
/// `Disconnected`. The result is held by that consumer, so nothing is lost if you receive from
/// another one first.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use embus::{Broker, Select, Start};
///
/// let bus = Broker::memory();
/// let orders = bus.topic::<String>("orders")?;
/// let jobs = bus.queue::<u32>("jobs")?;
/// let mut order_feed = orders.subscribe(Start::Earliest)?;
/// let mut worker = jobs.consumer();
/// jobs.producer().send(7)?;
///
/// match Select::new().recv(&mut order_feed).recv(&mut worker).ready() {
///     0 => println!("order {}", order_feed.try_recv()?.payload()),
///     _ => assert_eq!(worker.try_recv()?.payload(), &7),
/// }
/// # Ok(()) }
/// ```
pub struct Select<'a> {
    consumers: Vec<&'a mut dyn Selectable>,
}

/// A consumer as `Select` sees it, whatever its payload type.
pub(crate) trait Selectable {
    /// Looks (registering as `wait` says); `true` once the next receive will not wait, with
    /// its result kept for that receive.
    fn select_poll(&mut self, wait: Wait<'_>) -> bool;
    fn wake_at(&self) -> Option<Instant>;
}

impl<T: Payload> Selectable for Consumer<T> {
    fn select_poll(&mut self, wait: Wait<'_>) -> bool {
        Consumer::select_poll(self, wait)
    }

    fn wake_at(&self) -> Option<Instant> {
        Consumer::wake_at(self)
    }
}

/// [`Select::ready_timeout`] found nothing before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyTimeoutError;

impl fmt::Display for ReadyTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out waiting for a consumer to be ready")
    }
}

impl std::error::Error for ReadyTimeoutError {}

impl<'a> Select<'a> {
    /// An empty selection.
    pub fn new() -> Self {
        Self {
            consumers: Vec::new(),
        }
    }

    /// Adds a consumer; its index is the number of consumers added before it.
    #[must_use]
    pub fn recv<T: Payload>(mut self, consumer: &'a mut Consumer<T>) -> Self {
        self.consumers.push(consumer);
        self
    }

    /// Blocks until one consumer's next receive will not wait, and returns its index.
    ///
    /// # Panics
    /// If no consumer was added (it would wait forever), like crossbeam's `Select`.
    pub fn ready(self) -> usize {
        match self.wait(Deadline::Never) {
            Some(index) => index,
            None => unreachable!("waiting without a deadline returns an index"),
        }
    }

    /// Returns the index of a consumer whose next receive will not wait, if one is ready now
    /// (`None` with no consumers).
    pub fn try_ready(self) -> Option<usize> {
        self.wait(Deadline::Now)
    }

    /// Like [`ready`](Self::ready), waiting at most `timeout` (real time).
    ///
    /// # Errors
    /// [`ReadyTimeoutError`] if no consumer became ready in time (at once with no consumers).
    pub fn ready_timeout(self, timeout: Duration) -> Result<usize, ReadyTimeoutError> {
        let deadline = match Instant::now().checked_add(timeout) {
            Some(at) => Deadline::At(at),
            None => Deadline::Never,
        };
        self.wait(deadline).ok_or(ReadyTimeoutError)
    }

    fn wait(mut self, deadline: Deadline) -> Option<usize> {
        if self.consumers.is_empty() {
            assert!(
                deadline != Deadline::Never,
                "Select::ready with no consumers would wait forever"
            );
            return None;
        }
        let mut backoff = Backoff::new();
        let mut register = false;
        loop {
            let wait = if register { Wait::Thread } else { Wait::No };
            if let Some(index) = self.consumers.iter_mut().position(|c| c.select_poll(wait)) {
                return Some(index);
            }
            if deadline.passed() {
                return None;
            }
            if register {
                let wake = self.consumers.iter().filter_map(|c| c.wake_at()).min();
                deadline.park(wake);
            } else {
                register = !backoff.snooze();
            }
        }
    }
}

impl Default for Select<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Select<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Select")
            .field("consumers", &self.consumers.len())
            .finish()
    }
}

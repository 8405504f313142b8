//! [`Backoff`]: how long a released message waits before it is delivered again.

use std::time::Duration;

/// How long a message released without an ack (nacked, dropped, or held past its ack
/// timeout) waits before it is delivered again, by how many times it was delivered so far.
///
/// Like NATS JetStream's `BackOff`: an explicit schedule, or an exponential one with a cap.
/// The wait is measured on the broker's clock, so [`ManualClock`](crate::ManualClock) drives
/// it. A message waiting out its backoff does not hold back the others.
///
/// The default redelivers at once the first time (a consumer that crashed mid-message loses
/// no time), then waits 10 ms, doubling up to 10 s: a consumer that drops everything costs a
/// few wakeups a second, never a hot loop.
///
/// ```
/// use std::time::Duration;
/// use embus::Backoff;
///
/// let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5));
/// assert_eq!(b.delay(1), Duration::ZERO); // after the first delivery: at once
/// assert_eq!(b.delay(2), Duration::from_millis(100));
/// assert_eq!(b.delay(3), Duration::from_millis(200));
/// assert_eq!(b.delay(30), Duration::from_secs(5));
///
/// let s = Backoff::schedule([Duration::from_secs(1), Duration::from_secs(10)]);
/// assert_eq!(s.delay(1), Duration::from_secs(1));
/// assert_eq!(s.delay(9), Duration::from_secs(10)); // the last step repeats
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Backoff {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Kind {
    /// Immediate the first time, then `initial` doubling up to `max`.
    Exponential { initial: Duration, max: Duration },
    /// `steps[n - 1]` after the n-th delivery; the last step repeats.
    Schedule(Vec<Duration>),
}

impl Backoff {
    /// The default's first wait after the immediate retry.
    pub const DEFAULT_INITIAL: Duration = Duration::from_millis(10);
    /// The default's longest wait.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(10);

    /// Redeliver at once the first time, then wait `initial`, doubling each time up to `max`.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Self {
            kind: Kind::Exponential { initial, max },
        }
    }

    /// Wait `steps[n - 1]` after the n-th delivery ended without an ack; the last step
    /// repeats. An empty schedule never waits.
    pub fn schedule(steps: impl IntoIterator<Item = Duration>) -> Self {
        Self {
            kind: Kind::Schedule(steps.into_iter().collect()),
        }
    }

    /// Always wait `delay`.
    pub fn fixed(delay: Duration) -> Self {
        Self::schedule([delay])
    }

    /// Never wait: redeliver at once, every time (RabbitMQ's requeue). A consumer that always
    /// fails then spins on its message; prefer a backoff with `max_deliveries`.
    pub fn none() -> Self {
        Self::schedule([])
    }

    /// How long to wait after the `deliveries`-th delivery ended without an ack (1 for the
    /// first).
    pub fn delay(&self, deliveries: u32) -> Duration {
        match &self.kind {
            Kind::Exponential { initial, max } => {
                if deliveries <= 1 {
                    return Duration::ZERO;
                }
                let doublings = (deliveries - 2).min(63);
                initial
                    .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
                    .map_or(*max, |d| d.min(*max))
            }
            Kind::Schedule(steps) => {
                let index = (deliveries.max(1) - 1) as usize;
                steps
                    .get(index)
                    .or(steps.last())
                    .copied()
                    .unwrap_or(Duration::ZERO)
            }
        }
    }

    /// Whether this backoff never waits.
    pub(crate) fn is_none(&self) -> bool {
        match &self.kind {
            Kind::Exponential { initial, .. } => initial.is_zero(),
            Kind::Schedule(steps) => steps.iter().all(Duration::is_zero),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        match &self.kind {
            Kind::Exponential { initial, max } if initial > max => {
                Err("the initial wait must not exceed the longest")
            }
            _ => Ok(()),
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::exponential(Self::DEFAULT_INITIAL, Self::DEFAULT_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_saturates_at_its_cap() {
        let b = Backoff::default();
        assert_eq!(b.delay(0), Duration::ZERO);
        assert_eq!(b.delay(1), Duration::ZERO);
        assert_eq!(b.delay(2), Duration::from_millis(10));
        assert_eq!(b.delay(5), Duration::from_millis(80));
        assert_eq!(b.delay(u32::MAX), Backoff::DEFAULT_MAX);
        assert!(!b.is_none());
        assert!(Backoff::none().is_none());
        assert_eq!(Backoff::none().delay(7), Duration::ZERO);
    }
}

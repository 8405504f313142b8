//! The dedupe window of a topic or queue ([`Dedupe`]): how long, or for how many messages, a
//! producer-chosen message id ([`Record::id`](crate::Record::id)) is remembered.

use std::fmt;
use std::time::Duration;

/// A dedupe window: a send whose [message id](crate::Record::id) was already sent to the same
/// topic or queue within the window stores nothing and returns the original
/// [`Receipt`](crate::Receipt), as NATS JetStream's `Msg-Id` duplicate window does.
///
/// The window is a time ([`within`](Self::within), on the broker's clock), a count of the
/// latest ids ([`last`](Self::last)), or both ([`and_last`](Self::and_last),
/// [`and_within`](Self::and_within)): an id is forgotten as soon as either limit drops it.
/// Sends without an id are never deduplicated. Set it with
/// [`TopicOptions::dedupe`](crate::TopicOptions::dedupe) or
/// [`QueueOptions::dedupe`](crate::QueueOptions::dedupe).
///
/// ```
/// use std::time::Duration;
/// use embus::Dedupe;
///
/// let window = Dedupe::within(Duration::from_secs(120)).and_last(10_000);
/// assert_eq!(window.max_age(), Some(Duration::from_secs(120)));
/// assert_eq!(window.max_ids(), Some(10_000));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Dedupe {
    within: Option<Duration>,
    last: Option<u64>,
}

impl Dedupe {
    /// Remembers an id for `window` after its send, on the broker's clock. Must be longer than
    /// zero.
    pub fn within(window: Duration) -> Self {
        Self {
            within: Some(window),
            last: None,
        }
    }

    /// Remembers the ids of the last `n` sends that carried one. At least 1.
    pub fn last(n: u64) -> Self {
        Self {
            within: None,
            last: Some(n),
        }
    }

    /// Also forgets an id once `n` later ids were sent.
    #[must_use]
    pub fn and_last(mut self, n: u64) -> Self {
        self.last = Some(n);
        self
    }

    /// Also forgets an id `window` after its send.
    #[must_use]
    pub fn and_within(mut self, window: Duration) -> Self {
        self.within = Some(window);
        self
    }

    /// The time window, if set.
    pub fn max_age(&self) -> Option<Duration> {
        self.within
    }

    /// The count window, if set.
    pub fn max_ids(&self) -> Option<u64> {
        self.last
    }

    /// Why the window is not acceptable, if it is not.
    pub(crate) fn invalid(&self) -> Option<&'static str> {
        match (self.within, self.last) {
            (None, None) => Some("a dedupe window needs a time or a count"),
            (Some(Duration::ZERO), _) => Some("Dedupe::within must be longer than zero"),
            (_, Some(0)) => Some("Dedupe::last must be at least 1"),
            _ => None,
        }
    }
}

impl fmt::Debug for Dedupe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Dedupe");
        if let Some(within) = self.within {
            d.field("within", &within);
        }
        if let Some(last) = self.last {
            d.field("last", &last);
        }
        d.finish()
    }
}

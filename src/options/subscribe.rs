//! [`SubscribeOptions`]: how one plain subscriber reads a topic.

use super::Overflow;

/// Options of one plain subscriber, given to
/// [`Topic::subscribe_with`](crate::Topic::subscribe_with).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use embus::{Broker, Overflow, Retention, Start, SubscribeOptions, TopicOptions};
///
/// let bus = Broker::memory();
/// let opts = TopicOptions::default().retention(Retention::messages(2)).overflow(Overflow::Block);
/// let t = bus.topic_with::<u32>("t", opts)?;
/// // A slow audit reader that must never stall producers, on a `Block` topic.
/// let mut audit = t.subscribe_with(Start::Earliest, SubscribeOptions::default().overflow(Overflow::Lag))?;
/// for i in 0..5 {
///     t.producer().send(i)?; // never waits for `audit`
/// }
/// assert!(audit.recv().is_err()); // Lagged: it lost what retention trimmed
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SubscribeOptions {
    overflow: Option<Overflow>,
}

impl SubscribeOptions {
    /// This subscriber's overflow policy: under [`Overflow::Block`] producers wait for it,
    /// under [`Overflow::Lag`] it is skipped and gets
    /// [`RecvError::Lagged`](crate::RecvError::Lagged). Default: the topic's
    /// ([`TopicOptions::overflow`](crate::TopicOptions::overflow)).
    #[must_use]
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = Some(overflow);
        self
    }

    /// The overflow policy asked for, if any (`None`: the topic's).
    pub fn overflow_policy(&self) -> Option<Overflow> {
        self.overflow
    }
}

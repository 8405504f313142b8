//! [`BrokerBuilder`]: configures a broker before opening it.

use std::sync::Arc;

use crate::broker::Broker;
use crate::clock::{Clock, ManualClock};
use crate::error::Error;

/// Configures a [`Broker`]. Today it sets the clock; the durable store's path and durability
/// arrive with it.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = embus::ManualClock::new();
/// let bus = embus::Broker::builder().clock(clock.clone()).open()?; // no path: memory
/// # drop(bus); Ok(()) }
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct BrokerBuilder {
    clock: Clock,
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

    /// Opens the broker.
    ///
    /// # Errors
    /// None for a memory broker; the `Result` is for the durable store.
    pub fn open(self) -> Result<Broker, Error> {
        Ok(Broker::from_parts(
            self.clock,
            Arc::new(crate::store::MemoryStore),
        ))
    }
}

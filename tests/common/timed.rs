//! Queues on a manual clock with an ack timeout: shared by the queue and settle tests.

use std::time::Duration;

use embus::{Broker, ManualClock, Message, Queue, QueueOptions};

use super::{Backend, Bus};

/// The ack timeout of [`timed_queue`].
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Just past [`ACK_TIMEOUT`].
pub const PAST_TIMEOUT: Duration = Duration::from_secs(31);

/// A broker on `backend` on a manual clock, and the clock.
pub fn manual_bus(backend: Backend) -> (ManualClock, Bus) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    (clock, bus)
}

/// A queue with a 30 s ack timeout (on the broker's clock).
pub fn timed_queue(bus: &Broker) -> Queue<u32> {
    bus.queue_with("jobs", QueueOptions::default().ack_timeout(ACK_TIMEOUT))
        .unwrap()
}

/// A message's payload and delivery count.
pub fn payload_and_count(m: &Message<u32>) -> (u32, u32) {
    (*m.payload(), m.delivery_count())
}

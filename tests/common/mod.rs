//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use embus::{Consumer, Payload};

/// How long a test waits for something that should happen promptly. Generous, because CI
/// machines are shared; a passing test never waits this long.
pub const WAIT: Duration = Duration::from_secs(10);

/// A short wait for something that should *not* happen (a negative check).
pub const BRIEF: Duration = Duration::from_millis(50);

/// Receives `n` messages (each within `WAIT`), acks them, and returns their payloads.
pub fn take<T: Payload + Clone>(consumer: &mut Consumer<T>, n: usize) -> Vec<T> {
    (0..n)
        .map(|i| {
            let m = consumer
                .recv_timeout(WAIT)
                .unwrap_or_else(|e| panic!("message {i} of {n}: {e}"));
            let payload = m.payload().clone();
            m.ack().unwrap();
            payload
        })
        .collect()
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fmt::Debug;
use std::time::Duration;

use embus::{Consumer, Error, Payload};

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

/// Asserts `result` is `Error::Mismatch` for `name`, and that its message names it; returns
/// the message.
#[track_caller]
pub fn expect_mismatch<T: Debug>(result: Result<T, Error>, name: &str) -> String {
    match result {
        Err(err @ Error::Mismatch { .. }) => {
            let Error::Mismatch { name: n, .. } = &err else {
                unreachable!()
            };
            assert_eq!(n, name);
            let message = err.to_string();
            assert!(
                message.contains(&format!("`{name}`")),
                "the message should name `{name}`: {message}"
            );
            message
        }
        other => panic!("expected Error::Mismatch for `{name}`, got {other:?}"),
    }
}

/// Asserts `result` is `Error::InvalidOption` for `name` and `option`, with a reason, and that
/// its message names both.
#[track_caller]
pub fn expect_invalid_option<T: Debug>(result: Result<T, Error>, name: &str, option: &str) {
    match result {
        Err(err @ Error::InvalidOption { .. }) => {
            let Error::InvalidOption {
                name: n,
                option: o,
                reason,
            } = &err
            else {
                unreachable!()
            };
            assert_eq!((n.as_str(), *o), (name, option));
            assert!(!reason.is_empty());
            let message = err.to_string();
            assert!(
                message.contains(name) && message.contains(option),
                "the message should name `{name}` and `{option}`: {message}"
            );
        }
        other => panic!("expected InvalidOption `{option}` for `{name}`, got {other:?}"),
    }
}

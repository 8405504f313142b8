//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod amqp_admin;
pub mod bridge_server;
pub mod faulty;
pub mod nats_admin;
pub mod power;
pub mod process;
pub mod services;
pub mod timed;
pub mod waiting;

use std::fmt::Debug;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use embus::{Broker, BrokerBuilder, Consumer, Error, ManualClock, Message, Payload};

/// How long a test waits for something that should happen promptly. Generous, because CI
/// machines are shared; a passing test never waits this long.
pub const WAIT: Duration = Duration::from_secs(10);

/// A short wait for something that should *not* happen (a negative check).
pub const BRIEF: Duration = Duration::from_millis(50);

/// A fresh, empty directory for one test's files, named after the test and this process.
pub fn fresh_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("embus-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh directory for one test's store file, and a function that opens (and reopens) a
/// durable broker on it, on `clock`.
pub fn reopenable(test: &str, clock: &ManualClock) -> (PathBuf, impl Fn() -> Broker) {
    let dir = fresh_dir(test);
    let path = dir.join("bus.embus");
    let clock = clock.clone();
    let open = move || {
        Broker::builder()
            .path(&path)
            .clock(clock.clone())
            .open()
            .unwrap()
    };
    (dir, open)
}

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

/// Messages received and held unsettled by [`hold`].
pub struct Held<T> {
    pub consumer: Consumer<T>,
    /// Released when dropped.
    pub messages: Vec<Message<T>>,
    /// Each one's payload and delivery count, in order.
    pub seen: Vec<(T, u32)>,
}

/// Receives `n` messages from queue `name` of `bus` (each within `WAIT`) and holds them
/// unsettled.
pub fn hold<T: Payload + Clone>(bus: &Broker, name: &str, n: usize) -> Held<T> {
    let mut consumer = bus.queue::<T>(name).unwrap().consumer();
    let held: Vec<Message<T>> = (0..n)
        .map(|i| {
            consumer
                .recv_timeout(WAIT)
                .unwrap_or_else(|e| panic!("message {i} of {n} from {name}: {e}"))
        })
        .collect();
    let seen = held
        .iter()
        .map(|m| (m.payload().clone(), m.delivery_count()))
        .collect();
    Held {
        consumer,
        messages: held,
        seen,
    }
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

// ---------------------------------------------------------------------------------------------
// Backends: one test body, run on a memory broker and on a durable one
// ---------------------------------------------------------------------------------------------

/// Which store a test's broker uses. Semantic tests take one and run on both, through
/// [`both_backends!`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// [`Broker::memory`] (or the builder without a path).
    Memory,
    /// [`Broker::open`] (or the builder with a path) on a fresh file in a temporary directory
    /// of its own, removed when the [`Bus`] is dropped.
    Durable,
}

impl Backend {
    /// A new broker on this backend, on the system clock.
    pub fn bus(self) -> Bus {
        self.bus_with(Broker::builder())
    }

    /// A new broker on this backend, on `clock`.
    pub fn bus_with_clock(self, clock: ManualClock) -> Bus {
        self.bus_with(Broker::builder().clock(clock))
    }

    /// A new broker on this backend, as `builder` configures it (given no path).
    pub fn bus_with(self, builder: BrokerBuilder) -> Bus {
        match self {
            Self::Memory => Bus {
                broker: Some(builder.open().unwrap()),
                dir: None,
            },
            Self::Durable => {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let dir = std::env::temp_dir().join(format!(
                    "embus-both-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&dir); // a stale one from a reused process id
                std::fs::create_dir_all(&dir).unwrap();
                let broker = builder.path(dir.join("bus.embus")).open().unwrap();
                Bus {
                    broker: Some(broker),
                    dir: Some(dir),
                }
            }
        }
    }

    /// Whether this is [`Backend::Durable`].
    pub fn is_durable(self) -> bool {
        self == Self::Durable
    }

    /// Checks what settling (an ack or nack's `result`) after `close` returns: a memory
    /// broker's state takes it; a durable broker can no longer store it, and says so (a
    /// reopen delivers the message again).
    #[track_caller]
    pub fn settled_after_close(self, result: Result<(), Error>) {
        match self {
            Self::Memory => result.unwrap(),
            Self::Durable => assert!(
                matches!(result, Err(Error::Closed)),
                "a durable broker cannot store a settle after close: {result:?}"
            ),
        }
    }

    /// `n` for a memory broker; a tenth of it (at least 1) for a durable one, whose every
    /// `send` waits for an fsync. For the counts of tests that send many messages one by one;
    /// a test's semantics must not depend on the exact count.
    pub fn scale<N>(self, n: N) -> N
    where
        N: Copy + Ord + From<u8> + std::ops::Div<Output = N>,
    {
        match self {
            Self::Memory => n,
            Self::Durable => (n / N::from(10)).max(N::from(1)),
        }
    }
}

/// A broker made by [`Backend::bus`]: derefs to [`Broker`] (so `&bus` is a `&Broker` and
/// `bus.clone()` a `Broker`), and removes a durable broker's directory when dropped. Clones
/// and handles may outlive it: the open file stays usable after its directory entry is gone.
#[derive(Debug)]
pub struct Bus {
    broker: Option<Broker>,
    dir: Option<PathBuf>,
}

impl Bus {
    /// [`Broker::close`] (which takes the handle), then removes the directory.
    pub fn close(mut self) -> Result<(), Error> {
        self.broker.take().unwrap().close()
    }
}

impl Deref for Bus {
    type Target = Broker;

    fn deref(&self) -> &Broker {
        self.broker.as_ref().unwrap()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        // Drops this handle first: when it is the last one, the broker closes and releases the
        // file before its directory goes.
        drop(self.broker.take());
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Turns one test body into a test per backend.
///
/// Write the test as a plain function taking a [`Backend`] (it makes its broker with
/// `backend.bus()` or `backend.bus_with_clock(clock)`), and name it in `both_backends!`, just
/// above it:
///
/// ```ignore
/// both_backends!(acked_message_is_not_redelivered);
/// fn acked_message_is_not_redelivered(backend: Backend) {
///     let bus = backend.bus();
///     // ...
/// }
/// ```
///
/// This generates a module of the same name (modules and functions live in different
/// namespaces) holding two `#[test]`s, `acked_message_is_not_redelivered::memory` and
/// `acked_message_is_not_redelivered::durable`, which call the function with
/// [`Backend::Memory`] and [`Backend::Durable`]. So `cargo test some_name` runs both, and
/// `cargo test ::durable` every durable variant.
///
/// Forms:
///
/// - `both_backends!(#[should_panic(expected = "...")] name);`: attributes before the name go
///   on both tests, after `#[test]`.
/// - `both_backends!(name, ignore_durable = "durable: why");`: the durable test is
///   `#[ignore]`d with that reason (a known durable-only failure; the memory test still runs).
/// - `both_backends!(#[tokio::test] async name);`: for an `async fn name(backend: Backend)`;
///   the attributes before `async` replace `#[test]` (so they must include the test attribute,
///   e.g. `#[tokio::test(flavor = "multi_thread")]`), and the test awaits the function.
///   `ignore_durable` works here too.
#[allow(unused_macros)] // not every test file uses it
macro_rules! both_backends {
    ($(#[$attr:meta])* async $name:ident $(, ignore_durable = $reason:literal)? $(,)?) => {
        mod $name {
            $(#[$attr])*
            async fn memory() {
                super::$name($crate::common::Backend::Memory).await
            }

            $(#[$attr])*
            $(#[ignore = $reason])?
            async fn durable() {
                super::$name($crate::common::Backend::Durable).await
            }
        }
    };
    ($(#[$attr:meta])* $name:ident $(, ignore_durable = $reason:literal)? $(,)?) => {
        mod $name {
            #[test]
            $(#[$attr])*
            fn memory() {
                super::$name($crate::common::Backend::Memory)
            }

            #[test]
            $(#[$attr])*
            $(#[ignore = $reason])?
            fn durable() {
                super::$name($crate::common::Backend::Durable)
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both_backends;

//! An embeddable, in-process message bus: durable-by-design publish/subscribe and point-to-point
//! messaging between the threads and modules of one application, with no network hop and no
//! server to run.
//!
//! - A [`Topic`] is a partitioned, retained log. Every [`subscribe`](Topic::subscribe)r sees every
//!   message; a consumer group ([`join_group`](Topic::join_group)) splits the partitions among its
//!   members with at-least-once delivery; messages stay until [`Retention`] trims them and can be
//!   replayed from an offset or a time.
//! - A [`Queue`] delivers each message to exactly one consumer, deletes it once acked, redelivers
//!   it on nack, drop, consumer drop or ack timeout, and moves it to a dead-letter queue after
//!   too many deliveries.
//! - [`Producer`] and [`Consumer`] serve both, with crossbeam-channel's method families
//!   (`send`/`try_send`/`send_timeout`, `recv`/`try_recv`/`recv_timeout`/`iter`), and async
//!   ones on the same engine ([`Producer::send_async`], [`Consumer::recv_async`],
//!   [`Consumer::stream`]) that need no particular runtime. [`Select`] waits on several
//!   consumers at once from blocking code.
//! - A [`Transaction`] ([`Broker::transaction`]) sends to any number of topics and queues and
//!   acks what it consumed, all at once or not at all; in a durable broker it can lend you its
//!   redb write transaction ([`Transaction::redb`]) so that your own tables commit with the
//!   messages (the outbox). [`Record::id`] with a dedupe window drops duplicate sends.
//!
//! # Quickstart
//!
//! ```
//! use embus::{Broker, Start, TopicOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Broker::memory();
//!
//! // Publish/subscribe: every subscriber sees every message.
//! let orders = bus.topic_with::<String>("orders", TopicOptions::default().partitions(2))?;
//! let mut audit = orders.subscribe(Start::Earliest)?;
//! let mut billing = orders.join_group("billing")?; // shares partitions with other members
//! orders.producer().send("espresso".to_string())?;
//! assert_eq!(audit.recv()?.payload(), "espresso");
//! let order = billing.recv()?;
//! order.ack()?; // the group moves past it
//!
//! // Point-to-point: each job goes to one worker, and is gone once acked.
//! let jobs = bus.queue::<String>("jobs")?;
//! jobs.producer().send("resize".to_string())?;
//! let mut worker = jobs.consumer();
//! let job = worker.recv()?;
//! assert_eq!(job.payload(), "resize");
//! job.ack()?;
//! assert!(jobs.is_empty());
//! # Ok(()) }
//! ```
//!
//! # Testing with embus
//!
//! [`Broker::memory`] is cheap. A [`ManualClock`] drives ack timeouts and age retention without
//! sleeping, and [`Broker::wait_idle`] waits (with a deadline) until queues are drained and groups
//! have caught up.
//!
//! # Durable mode
//!
//! [`Broker::open`] (or [`Broker::builder`]`.path(..)`) runs the same API on a redb file:
//! topics with their options and retained messages, group positions, and queues with their
//! messages and delivery counts survive restarts and `kill -9`. What "acknowledged" means:
//!
//! - [`Durability::Immediate`] (the default): `send` returns `Ok` once the commit holding the
//!   message is fsynced. Concurrent sends share one commit; `send_batch` is one commit.
//! - [`Durability::Interval`]: `send` returns once the store's writer thread has the message;
//!   it commits at most once per interval, so a crash loses at most that window of sends.
//!
//! Payloads are stored with bincode, or JSON with
//! [`BrokerBuilder::codec`]`(`[`codec::CodecKind::Json`]`)` for serde shapes bincode cannot
//! carry (tagged enums, `flatten`, `skip_serializing_if`); a payload the codec could not read
//! back is refused at `send` ([`Error::Unsupported`]), see [`codec`].
//!
//! In both modes a consumer sees a message only after it is stored, and acks, delivery counts
//! and group positions ride the next commit without waiting for it (a crash can redeliver a
//! message whose ack was not yet stored, never lose one).
//!
//! # Looking inside
//!
//! [`Broker::stats`] is one cheap, `Serialize` snapshot of a running broker: partitions, groups
//! with lag, subscribers, queues, the store's commits and the bridges ([`stats`]). With the
//! `tracing` feature the engine emits `tracing` events ([`observe`] lists them); a
//! [`TraceContext`] carries a W3C `traceparent` across the bus. With the `metrics` feature,
//! `Broker::record_metrics` feeds the snapshot to the `metrics` facade (`embus::metrics`).
//!
//! [`inspect`] reads a store file without a broker (read-only; a file a running broker holds is
//! refused with an error that says so): topics, groups, queues and their figures, and the
//! stored messages. The `embus` command-line tool (feature `cli`:
//! `cargo install embus --features cli`) prints them: `embus inspect app.embus`,
//! `embus tail app.embus orders --from 2026-12-06T10:00:00Z`, `embus dlq app.embus jobs.dead`,
//! and moves dead letters back with `embus dlq app.embus jobs.dead --redrive jobs`.
//!
//! # It is not
//!
//! - a network broker: producers and consumers live in one process (one process at a time
//!   opens a store file);
//! - a database: messages are retained by count, size and age, not queried.
//!
//! # Async
//!
//! The futures work on any executor (tokio, smol, async-std, `futures::executor`): a task that
//! finds nothing registers its `Waker` exactly where a blocking call would park its thread.
//! Receives are cancel safe (a dropped `recv_async` loses no message) and a dropped
//! `send_async` either sent or did not; see [`RecvFut`] and [`SendFut`].
//!
//! # Tracing
//!
//! A trace continues across the bus: [`Record::trace_context`] puts a W3C `traceparent`
//! header ([`TraceContext`]) into a record and [`Message::trace_context`] reads it back; a
//! bridge carries it on as it carries every header. With the `tracing` feature, embus also
//! emits `tracing` events for send, deliver, ack, nack, redeliver, dead-letter, expiry,
//! rebalance and durable commits, and warnings when a reader lags or the store is poisoned:
//! [`observe`] lists them with their levels and fields.
//!
//! # Features
//!
//! - `tracing`: the events of [`observe`].
//! - `nats`, `amqp`: the bridges, `bridge::nats` and `bridge::amqp`.
//!
//! # Threads
//!
//! A memory broker starts no thread; everything runs in the threads that call it. A durable
//! broker starts one writer thread (`embus-writer`) that commits to the redb file; it stops
//! when the broker closes ([`Broker::close`] or dropping the last handle), after committing
//! what was queued. Under [`Durability::Immediate`], a blocking call that waits for its
//! commit while nothing else is committing and senders come one at a time (`send`, `flush`)
//! commits on the calling thread instead, saving two thread wake-ups; that thread then also
//! wakes the consumers waiting for what it committed (their wakers run there, as they would on
//! the writer thread). Either kind starts a timer thread the first time an async receive waits
//! for a real-time ack deadline; it stops on close. A bridge (`bridge::nats`, `bridge::amqp`,
//! features `nats` and `amqp`) runs on threads of its own (`embus-bridge`, and
//! `embus-bridge-writer` inbound) until it is stopped.
//! `BrokerBuilder::metrics_every` (feature `metrics`) starts one thread (`embus-metrics`)
//! that records the broker's figures into the `metrics` recorder on an interval; it does not
//! keep the broker open, and stops when the broker closes.

#![deny(unsafe_code)] // allowed in `engine::slot` alone
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Leaves: plain data and policies, used by every layer.
mod clock;
pub mod codec;
mod error;
pub mod observe;
mod options;
mod record;
pub mod stats;
mod trace_context;
// Storage: bytes and ids (memory and redb backends).
mod store;
// The engine (`pub(crate)`): registry, topic logs, groups, queues, waiting.
mod engine;
// The facade: the public handles.
mod asynchronous;
#[cfg(any(feature = "nats", feature = "amqp"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "nats", feature = "amqp"))))]
pub mod bridge;
mod broker;
mod consumer;
pub mod inspect;
mod message;
mod producer;
mod queue;
mod select;
mod topic;
mod transaction;

pub use crate::asynchronous::{CloseFut, RecvFut, RecvStream, SendFut, WaitIdleFut};
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use crate::broker::metrics;
pub use crate::broker::{Broker, BrokerBuilder};
pub use crate::clock::ManualClock;
pub use crate::consumer::{Consumer, IntoIter, Iter, TryIter};
pub use crate::error::{
    Deleted, Ended, Error, ReadFailure, RecvError, RecvTimeoutError, Result, SendError,
    SendTimeoutError, TryRecvError, TrySendError, Undecodable,
};
pub use crate::message::{Message, Peeked};
pub use crate::options::{
    Backoff, Dedupe, Durability, GroupOptions, IdleOptions, Overflow, QueueOptions, Retention,
    Start, SubscribeOptions, TopicOptions,
};
pub use crate::producer::Producer;
pub use crate::queue::Queue;
pub use crate::record::{
    DEAD_LETTER_DELIVERIES, DEAD_LETTER_QUEUE, DEAD_LETTER_REASON, Headers, MAX_MESSAGE_ID_LEN,
    MESSAGE_ID, Payload, Receipt, Record,
};
pub use crate::select::{ReadyTimeoutError, Select};
pub use crate::stats::Stats;
pub use crate::topic::Topic;
pub use crate::trace_context::{TRACEPARENT, TraceContext, TraceParentError};
pub use crate::transaction::{AckError, CommitError, Transaction};
/// The redb version embus stores with, for [`BrokerBuilder::storage_backend`].
pub use redb;

/// Hooks for the fuzz targets (`fuzz/`); only in builds with `--cfg fuzzing`.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::fuzz::record;
}
#[cfg(fuzzing)]
mod fuzz;

/// The README's examples, compiled and run as doctests so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

//! The `tracing` events embus emits (feature `tracing`): what happens to each message, and
//! warnings when something goes wrong.
//!
//! With the feature, embus emits [`tracing`](https://docs.rs/tracing) events; install any
//! subscriber (`tracing-subscriber`, an OpenTelemetry layer) to see them. Without it nothing
//! is compiled in. With it, an event nobody listens to costs one atomic load (tracing's
//! per-callsite interest cache); fields are borrowed values, never formatted up front.
//!
//! Every event's message is its name below; its target is `embus::topic`, `embus::queue` or
//! `embus::store`, so a filter such as `embus=debug` or `embus::queue=trace` picks them.
//!
//! | event | target | level | fields |
//! |---|---|---|---|
//! | `send` | `embus::topic` | TRACE | `topic`, `partition`, `offset` |
//! | `send` | `embus::queue` | TRACE | `queue`, `offset` |
//! | `deliver` | `embus::topic` | TRACE | `topic`, `group` (members only), `partition`, `offset`, `delivery_count`, `traceparent` |
//! | `deliver` | `embus::queue` | TRACE | `queue`, `offset`, `delivery_count`, `traceparent` |
//! | `redeliver` | as `deliver` | DEBUG | as `deliver`: a delivery whose `delivery_count` is over 1 |
//! | `ack` | `embus::topic` | TRACE | `topic`, `group`, `partition`, `offset`, `delivery_count` |
//! | `ack` | `embus::queue` | TRACE | `queue`, `offset`, `delivery_count` |
//! | `nack` | `embus::topic` | DEBUG | `topic`, `group`, `partition`, `offset`, `delivery_count`, `reason` |
//! | `nack` | `embus::queue` | DEBUG | `queue`, `offset`, `delivery_count`, `reason` |
//! | `dead_letter` | `embus::topic` | INFO | `topic`, `group`, `partition`, `offset`, `delivery_count`, `reason`, `dead_letter` |
//! | `dead_letter` | `embus::queue` | INFO | `queue`, `offset`, `delivery_count`, `reason`, `dead_letter` |
//! | `expire` | `embus::queue` | DEBUG | `queue`, `offset`, `delivery_count` |
//! | `rebalance` | `embus::topic` | INFO | `topic`, `group`, `member`, `change`, `members` |
//! | `lagged` | `embus::topic` | WARN | `topic`, `group` (members only), `partition`, `skipped` |
//! | `commit` | `embus::store` | DEBUG | `requests`, `micros` |
//! | `poisoned` | `embus::store` | ERROR | `requests`, `micros`, `error` |
//!
//! The fields:
//! - `topic`, `queue`: the name; `group`: the consumer group's name.
//! - `partition`, `offset`: where the message is stored (for a queue, `offset` is the message's
//!   sequence number, as [`Message::offset`](crate::Message::offset)).
//! - `delivery_count`: how many times the message has been delivered, this time included.
//! - `traceparent`: the message's [`TRACEPARENT`](crate::TRACEPARENT) header, when it has one
//!   (text), so a consumer's events join the producer's trace.
//! - `reason`: `nack` (a nack), `dropped` (a delivery dropped unsettled), `ack-timeout`,
//!   `expired` (a message ttl passed) or `undecodable`, as the dead-letter reason header.
//! - `dead_letter`: the dead-letter queue's name.
//! - `member`: the member's id (unique in the broker); `change`: `join` or `leave`;
//!   `members`: how many members the group has after it.
//! - `skipped`: how many messages a reader lost to retention ([`RecvError::Lagged`]).
//! - `requests`: the sends, acks and other changes one commit of a durable store carried;
//!   `micros`: how long the commit took; `error`: why a commit failed (the store is then
//!   poisoned: every later send fails with [`Error::Poisoned`]).
//!
//! What each event means:
//! - `send`: a message was stored (durable mode with `send_async`: staged, its commit may be
//!   pending). Sends in a [`Transaction`](crate::Transaction) emit none.
//! - `deliver` / `redeliver`: a consumer received a message (a subscriber, a group member or
//!   a queue consumer).
//! - `ack`, `nack`: a consumer settled a delivery with [`Message::ack`](crate::Message::ack),
//!   [`nack`](crate::Message::nack) (reason `nack`) or by dropping it (reason `dropped`); the
//!   redelivery shows as a later `redeliver`. Acks in a transaction emit none.
//! - `dead_letter`: a message moved to a dead-letter queue. `expire`: a queue message's ttl
//!   passed before it was delivered (with a dead-letter queue, `dead_letter` follows with
//!   reason `expired`).
//! - `rebalance`: a member joined or left a group; partitions that changed owner have their
//!   deliveries redelivered.
//! - `lagged`: a reader under [`Overflow::Lag`](crate::Overflow::Lag), or a group reading
//!   what retention trimmed, skipped messages.
//!
//! # Locks
//!
//! Every event is emitted once the engine let go of its locks (an event that happens under
//! one waits for it to be released), so a subscriber may call back into the broker, even
//! `Broker::stats` or a send. `commit` and `poisoned` run on a durable store's writer thread,
//! between commits: a subscriber that blocks there stalls the store's commits; keep
//! subscribers quick (or let them hand events to another thread, as `tracing-appender` does).
//!
//! [`RecvError::Lagged`]: crate::RecvError::Lagged
//! [`Error::Poisoned`]: crate::Error::Poisoned

#[cfg(feature = "tracing")]
use crate::record::Headers;

/// `event!("embus::queue", DEBUG, field = value, ..., "name")`: a `tracing` event with that
/// target and level, with the feature; nothing at all (the arguments are not even evaluated)
/// without it.
#[cfg(feature = "tracing")]
macro_rules! event {
    ($target:literal, $level:ident, $($fields:tt)+) => {
        ::tracing::event!(target: $target, ::tracing::Level::$level, $($fields)+)
    };
}

#[cfg(not(feature = "tracing"))]
macro_rules! event {
    ($($anything:tt)*) => {};
}

/// `traced! { statements }`: the statements with the feature, nothing without it. For an
/// event that needs bindings of its own (a `match` on what was delivered).
#[cfg(feature = "tracing")]
macro_rules! traced {
    ($($code:tt)*) => { $($code)* };
}

#[cfg(not(feature = "tracing"))]
macro_rules! traced {
    ($($code:tt)*) => {};
}

pub(crate) use {event, traced};

/// A message's `traceparent` header as text (borrowed), for the `deliver` events.
#[cfg(feature = "tracing")]
pub(crate) fn traceparent(headers: &Headers) -> Option<&str> {
    headers
        .get(crate::trace_context::TRACEPARENT)
        .and_then(|v| std::str::from_utf8(v).ok())
}

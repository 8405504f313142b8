//! Model-based property tests: random sequences of operations run against embus and, side by
//! side, against a plain model (`VecDeque`/`BTreeMap`); every observable is compared after every
//! step.
//!
//! - `queue_matches_model`: one queue (small capacity, 30 s ack timeout, a backoff of 0, 2 then
//!   5 s, optional prefetch, 3 priority levels or none, a message time-to-live or none; with
//!   3 deliveries then the dead-letter queue `dlq`, or without one) and 2-3 competing
//!   consumers. Ops: `try_send`, `try_send_record` with a priority, a delay and a time-to-live,
//!   `try_recv`, ack / nack / `nack_after` / drop of a held delivery, drop (and recreate) a
//!   consumer, advance the [`ManualClock`], `purge`, `peek`, and `redrive` from the dead-letter
//!   queue. Checked: `Ok` vs `Full`, `Empty` vs exactly which message (payload, sequence number,
//!   delivery count, timestamp, dead-letter headers), `len`, `delayed`, `in_flight`,
//!   `dead_lettered`, `expired`, what `purge`, `peek` and `redrive` return, the dead-letter
//!   queue's length and, at the end, its contents and headers; and `Broker::stats` (ready,
//!   delayed, in flight, dead-lettered, expired, acks, nacks, consumers) after every step.
//! - `topic_and_group_match_model`: a topic with 2-3 partitions, `Retention::messages(3..=6)`,
//!   `Overflow::Lag`, one subscriber from `Earliest` and a group `g` of 1-4 members (`Lag`, no
//!   backoff, 3 deliveries then the dead-letter queue `g.dead`). Ops: keyed and keyless sends
//!   (one, or a burst of up to 60 to cross the log's 128-slot segments), subscriber `try_recv`,
//!   join / leave, member `try_recv`, ack / nack / drop of a group delivery, `Topic::get`, and
//!   `reset_group` (every member leaves first). Checked: receipts (contiguous offsets, stable
//!   key placement, keyless round-robin), retained offsets, the subscriber's messages,
//!   `Lagged { skipped }` and `lag()`, the group's assignment (one owner per partition, fair
//!   shares), each member's messages and `lag()`, `group_position`, `groups()`, what `get`
//!   returns, the group's dead letters, and `Broker::stats` (partitions, subscriber lag, group
//!   positions, lag, in flight, redeliveries, dead letters, assignment) after every step; at the end, after draining, every
//!   retained message reached the group (or a reset skipped it), the subscriber accounted for
//!   every offset, and the dead letters carry the right payloads and headers.
//!
//! - `transactions_and_dedupe_match_model`: a source queue consumed in transactions that send to
//!   a queue `jobs` (capacity 1-6) and a 2-partition topic `events`, both under the same kind
//!   of dedupe window (none, `Dedupe::last(1..=4)` or `Dedupe::within(1..=10 s)`). Ops: plain
//!   sends to the source, `try_recv` on it, sends with and without ids and acks into the open
//!   transaction, commit (a `Full` one is kept and retried later), abort, plain `try_send`s
//!   with ids, consuming `jobs`, advancing the clock. Checked: every receipt (a duplicate's is
//!   the original's, within the transaction too), `Full` exactly when the non-duplicates do
//!   not fit, nothing of an open or aborted transaction visible (`len`, `in_flight`, the
//!   topic's ends), aborted acks redelivered in nack order with their counts, and at the end
//!   every committed event in order.
//!
//! Single-threaded and deterministic: time is a [`ManualClock`]; nothing sleeps.
//!
//! # Durable modes
//!
//! Each property runs half its cases in memory, a quarter on a durable store and a quarter on
//! a durable store that can lose power (`model/durable.rs`, on the simulated disk of
//! `tests/common/power.rs`). Two more ops:
//!
//! - `Reopen` closes the broker and opens the store again, checked exactly (what came back,
//!   and everything after). In the transaction model the open transaction (a `Full` one
//!   kept for later too) and the held source deliveries end with the old broker: the source
//!   queue comes back in sequence order with its delivery counts, `jobs` and `events` as
//!   committed, and both dedupe windows as the store's id rows restore them.
//! - `Kill { torn, .. }` cuts the power at that step (a plain reopen in the durable mode),
//!   checked against what must have been stored and what may have been
//!   (`model/queue_durable.rs`, `model/topic_durable.rs`, `model/tx_durable.rs`). With
//!   `torn: Some(seed)` (half the kills) the store reopens a variant of the disk with some of
//!   the writes since the last sync: torn (`torn_image`) or all of them whole, chosen and drawn
//!   by the seed, so a shrunk case replays it; the promises are the same. So that there is
//!   something to tear, half the kills cut the power during a commit, after `n` (0-2) of its
//!   syncs (redb syncs a commit's data, then its header): the queue and topic models'
//!   `mid_send: Some(n)` sends one more message, which must come back or not, and the
//!   transaction model's `mid_commit: Some(n)` commits the open transaction, which must come
//!   back whole or not at all, never in part. In the transaction model every commit
//!   that returned before is there whole, nothing of an open or aborted one is, and held
//!   source deliveries come back ready.
//!
//! Clock advances run in every mode. Each property prints its figures to stderr
//! (`--nocapture` shows them): cases, durable cases, steps, reopens, kills (torn ones, and
//! how many had unsynced writes to tear; kills during a commit, and how many kept it), and
//! messages checked after a reopen or kill.
//!
//! # Cases
//!
//! Each property runs 256 cases by default. Set `EMBUS_MODEL_CASES` to change that, e.g.
//! `EMBUS_MODEL_CASES=10000 cargo test --release --test model -- --nocapture`.
//!
//! # Regressions
//!
//! Every shrunk failure is replayed op by op as a named test in `model/regressions.rs`, with
//! its postmortem.
//!
//! # What the model takes from the implementation
//!
//! The contract leaves some choices open; where a choice changes what is observable later, the
//! model follows `src/` and says so: a released queue delivery goes to the front of the ready
//! list, timed-out deliveries are requeued so that the oldest ends in front
//! (`src/engine/queue/state.rs`); a group member scans its partitions round-robin from the one after
//! its last delivery and, within a partition, redelivers the lowest released offset before new
//! ones, and only notices trimmed messages of a partition when it scans it
//! (`src/engine/topic/group.rs`). The group's assignment is read from `Consumer::partitions` and
//! checked for fairness, not predicted. Which partition the subscriber reads next is not
//! predicted either: it may be any partition with something unread, but there it must be the
//! next offset (or the lag, reported first), and `Empty` only when nothing is unread; a
//! `Lagged { skipped }` is matched to a partition by its count (ties: round-robin order).
//!
//! A reopened durable dedupe window holds what `Ids::restore` (`src/engine/dedupe.rs`) makes
//! of the store's id rows: the ids in the order they were remembered (each row keeps its
//! sequence number in the window), then pruned, oldest first (`Win::restore` in
//! `model/tx.rs`). Ids of one time in both partitions of `events` (a transaction, or sends
//! under an unmoved clock) are the case that needs the sequence number: ordered by time,
//! partition and offset, as up to format version 5, a count window kept other ids than the
//! last ones (`regressions::tx_count_window_across_a_reopen_keeps_the_last_ids`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;
use std::time::{Duration, SystemTime};

use embus::{
    Backoff, Broker, Consumer, DEAD_LETTER_DELIVERIES, DEAD_LETTER_QUEUE, DEAD_LETTER_REASON,
    Ended, Error, GroupOptions, Headers, ManualClock, Message, Overflow, Queue, QueueOptions,
    Record, Retention, Start, Topic, TopicOptions, TryRecvError, TrySendError,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

#[path = "common/power.rs"]
#[allow(dead_code)]
mod power;

#[path = "model/durable.rs"]
mod durable;
#[path = "model/queue.rs"]
mod queue;
#[path = "model/regressions.rs"]
mod regressions;
#[path = "model/topic.rs"]
mod topic;
#[path = "model/tx.rs"]
mod tx;

use self::queue::{q_op, q_setup, run_queue};
use self::topic::{run_topic, t_op, t_setup};
use self::tx::{run_tx, tx_op, tx_setup};

/// Picks one item of a collection whose length is known only when the op runs, as
/// `proptest::sample::Index` does (same values, same shrinking), but written down as a plain
/// `usize`, so that a shrunk failure replays as a named test (`model/regressions.rs`).
#[derive(Debug, Clone, Copy)]
struct Pick(usize);

impl Pick {
    /// The index in a collection of `len` items (`len > 0`): `len * self.0 / 2^64`.
    fn index(self, len: usize) -> usize {
        ((len as u128 * self.0 as u128) >> usize::BITS) as usize
    }
}

/// Any [`Pick`].
fn pick() -> impl Strategy<Value = Pick> {
    any::<usize>().prop_map(Pick)
}

/// The default number of cases per property.
const DEFAULT_CASES: u32 = 256;

/// The proptest configuration: `DEFAULT_CASES`, or `EMBUS_MODEL_CASES` when set.
fn config() -> ProptestConfig {
    let cases = match std::env::var("EMBUS_MODEL_CASES") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("EMBUS_MODEL_CASES must be a number of cases, not {v:?}")),
        Err(_) => DEFAULT_CASES,
    };
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Fails the case unless `got == want`, naming the step.
fn same<A: PartialEq + Debug>(
    got: A,
    want: A,
    what: &str,
    step: usize,
    op: &dyn Debug,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got, want, "{} after step {} ({:?})", what, step, op);
    Ok(())
}

/// Compares a settle's result with the model's.
fn same_settle(
    got: Result<(), Error>,
    want: Result<(), Vec<Ended>>,
    what: &str,
    step: usize,
    op: &dyn Debug,
) -> Result<(), TestCaseError> {
    match (&got, &want) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(Error::DeliveryEnded { reason, .. }), Err(want)) if want.contains(reason) => Ok(()),
        _ => Err(TestCaseError::fail(format!(
            "step {step} ({op:?}): {what} returned {got:?}, model expects {want:?}"
        ))),
    }
}

/// Runs one property with [`config`] (failures persist to `tests/model.proptest-regressions`,
/// as with `proptest!`), then prints what it did.
fn check<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut config = config();
    config.source_file = Some(file!());
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, test);
    let f = durable::figures();
    eprintln!(
        "{name}: {} cases ({} durable), {} steps, {} reopens, {} kills ({} torn, {} of them with \
         unsynced writes; {} during a commit, {} of them kept it), {} messages checked after a \
         reopen or kill, in {:?}",
        f.cases,
        f.durable,
        f.steps,
        f.reopens,
        f.kills,
        f.torn,
        f.torn_writes,
        f.mid_commit,
        f.mid_commit_kept,
        f.checked,
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{e}\n{runner}");
    }
}

#[test]
fn queue_matches_model() {
    check(
        "queue",
        (q_setup(), prop::collection::vec(q_op(), 1..150)),
        |(setup, ops)| run_queue(setup, ops),
    );
}

#[test]
fn topic_and_group_match_model() {
    check(
        "topic",
        (t_setup(), prop::collection::vec(t_op(), 1..150)),
        |(setup, ops)| run_topic(setup, ops),
    );
}

#[test]
fn transactions_and_dedupe_match_model() {
    check(
        "transactions",
        (tx_setup(), prop::collection::vec(tx_op(), 1..150)),
        |(setup, ops)| run_tx(setup, ops),
    );
}

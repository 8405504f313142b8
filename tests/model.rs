//! Model-based property tests: random sequences of operations run against embus and, side by
//! side, against a plain model (`VecDeque`/`BTreeMap`); every observable is compared after every
//! step.
//!
//! - `queue_matches_model`: one queue (small capacity, 30 s ack timeout, 3 deliveries then the
//!   dead-letter queue `dlq`, optional prefetch) and 2-3 competing consumers. Ops: `try_send`,
//!   `try_recv`, ack / nack / drop of a held delivery, drop (and recreate) a consumer, advance
//!   the [`ManualClock`]. Checked: `Ok` vs `Full`, `Empty` vs exactly which message (payload,
//!   sequence number, delivery count, timestamp), `len`, `in_flight`, `dead_lettered`, the
//!   dead-letter queue's length and, at the end, its contents and headers.
//! - `topic_and_group_match_model`: a topic with 2-3 partitions, `Retention::messages(3..=6)`,
//!   `Overflow::Lag`, one subscriber from `Earliest` and a group `g` of 1-4 members. Ops: keyed
//!   and keyless sends (one, or a burst of up to 60 to cross the log's 128-slot segments),
//!   subscriber `try_recv`, join / leave, member `try_recv`, ack / nack / drop of a group
//!   delivery. Checked: receipts (contiguous offsets, stable key placement,
//!   keyless round-robin), retained offsets, the subscriber's messages, `Lagged { skipped }` and
//!   `lag()`, the group's assignment (one owner per partition, fair shares), each member's
//!   messages and `lag()`, `group_position` after every step; at the end, after draining, every
//!   retained message reached the group and the subscriber accounted for every offset.
//!
//! Single-threaded and deterministic: time is a [`ManualClock`]; nothing sleeps.
//!
//! # Cases
//!
//! Each property runs 256 cases by default. Set `EMBUS_MODEL_CASES` to change that, e.g.
//! `EMBUS_MODEL_CASES=2000 cargo test --test model`.
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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;
use std::time::{Duration, SystemTime};

use embus::{
    Broker, Consumer, DEAD_LETTER_DELIVERIES, DEAD_LETTER_QUEUE, DEAD_LETTER_REASON, Ended, Error,
    ManualClock, Message, Overflow, Queue, QueueOptions, Record, Retention, Start, Topic,
    TopicOptions, TryRecvError, TrySendError,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

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

// ---------------------------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------------------------

const ACK_TIMEOUT_SECS: u64 = 30;
const MAX_DELIVERIES: u32 = 3;

#[derive(Debug, Clone)]
enum QOp {
    /// `try_send(v)`.
    Send(u32),
    /// `try_recv` on consumer `c % consumers`.
    Recv(usize),
    /// Acks a held delivery.
    Ack(Index),
    /// Nacks a held delivery.
    Nack(Index),
    /// Drops a held delivery unsettled.
    DropMessage(Index),
    /// Drops consumer `c % consumers` (its deliveries are released) and makes a new one.
    DropConsumer(usize),
    /// Advances the clock by this many seconds.
    AdvanceClock(u64),
}

#[derive(Debug, Clone)]
struct QSetup {
    capacity: usize,
    prefetch: Option<u32>,
    consumers: usize,
}

fn q_setup() -> impl Strategy<Value = QSetup> {
    (
        prop_oneof![Just(8usize), 1..=8usize],
        prop_oneof![Just(None), Just(Some(1u32)), Just(Some(2u32))],
        2..=3usize,
    )
        .prop_map(|(capacity, prefetch, consumers)| QSetup {
            capacity,
            prefetch,
            consumers,
        })
}

fn q_op() -> impl Strategy<Value = QOp> {
    prop_oneof![
        5 => any::<u32>().prop_map(QOp::Send),
        6 => (0..3usize).prop_map(QOp::Recv),
        3 => any::<Index>().prop_map(QOp::Ack),
        2 => any::<Index>().prop_map(QOp::Nack),
        1 => any::<Index>().prop_map(QOp::DropMessage),
        1 => (0..3usize).prop_map(QOp::DropConsumer),
        2 => prop_oneof![Just(1u64), Just(29), Just(30), Just(31), 0..=45u64]
            .prop_map(QOp::AdvanceClock),
    ]
}

/// Why a delivery ended without an ack (the dead-letter reason header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Nack,
    Dropped,
    Timeout,
}

impl Why {
    fn header(self) -> &'static str {
        match self {
            Self::Nack => "nack",
            Self::Dropped => "dropped",
            Self::Timeout => "ack-timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct QItem {
    /// The queue's sequence number (`Message::offset`).
    id: u64,
    payload: u32,
    /// Clock seconds at send.
    sent_at: u64,
    /// Deliveries so far.
    count: u32,
}

#[derive(Debug)]
struct QDelivery {
    item: QItem,
    consumer: u64,
    deadline: u64,
    live: bool,
    /// How it ended, if not by an ack.
    why: Option<Why>,
}

/// The queue as the contract and `src/engine/queue/state.rs` describe it.
#[derive(Debug)]
struct QueueModel {
    capacity: usize,
    prefetch: Option<u32>,
    now: u64,
    next_id: u64,
    ready: VecDeque<QItem>,
    /// Every delivery, by delivery number.
    deliveries: Vec<QDelivery>,
    /// What went to the dead-letter queue, in order.
    dead: Vec<(QItem, Why)>,
    acked: usize,
    sent: usize,
    /// Consumers dropped so far (a late settle of what they held says so).
    dropped: BTreeSet<u64>,
}

impl QueueModel {
    fn new(setup: &QSetup) -> Self {
        Self {
            capacity: setup.capacity,
            prefetch: setup.prefetch,
            now: 0,
            next_id: 0,
            ready: VecDeque::new(),
            deliveries: Vec::new(),
            dead: Vec::new(),
            acked: 0,
            sent: 0,
            dropped: BTreeSet::new(),
        }
    }

    /// What a settle of delivery `d` returns: `Ok` while it is live, else why it ended.
    /// (`Err`: the reasons the engine may give: one, except for a delivery that timed out and
    /// whose consumer was dropped since, which the queue may no longer tell apart.)
    fn settle_result(&self, d: usize) -> Result<(), Vec<Ended>> {
        let delivery = &self.deliveries[d];
        let dropped = self.dropped.contains(&delivery.consumer);
        match (delivery.live, delivery.why, dropped) {
            (true, ..) => Ok(()),
            (false, Some(Why::Timeout), true) => {
                Err(vec![Ended::AckTimeout, Ended::ConsumerDropped])
            }
            (false, Some(Why::Timeout), false) => Err(vec![Ended::AckTimeout]),
            (false, _, _) => Err(vec![Ended::ConsumerDropped]),
        }
    }

    fn in_flight(&self) -> usize {
        self.deliveries.iter().filter(|d| d.live).count()
    }

    /// `Some(sequence number)` if there is room.
    fn send(&mut self, payload: u32) -> Option<u64> {
        if self.ready.len() + self.in_flight() >= self.capacity {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.sent += 1;
        self.ready.push_back(QItem {
            id,
            payload,
            sent_at: self.now,
            count: 0,
        });
        Some(id)
    }

    /// Ends delivery `d` without an ack (nothing if it already ended).
    fn release(&mut self, d: usize, why: Why) {
        let delivery = &mut self.deliveries[d];
        if !delivery.live {
            return;
        }
        delivery.live = false;
        delivery.why = Some(why);
        let item = delivery.item.clone();
        if item.count >= MAX_DELIVERIES {
            self.dead.push((item, why));
        } else {
            self.ready.push_front(item);
        }
    }

    /// Releases deliveries past their deadline, newest first (so the oldest ends in front).
    fn expire(&mut self) {
        let expired: Vec<usize> = (0..self.deliveries.len())
            .filter(|&d| self.deliveries[d].live && self.deliveries[d].deadline <= self.now)
            .collect();
        for d in expired.into_iter().rev() {
            self.release(d, Why::Timeout);
        }
    }

    /// The delivery `consumer`'s `try_recv` gets, if any.
    fn recv(&mut self, consumer: u64) -> Option<(usize, QItem)> {
        self.expire();
        if self.ready.is_empty() {
            return None;
        }
        if let Some(limit) = self.prefetch {
            let held = self
                .deliveries
                .iter()
                .filter(|d| d.live && d.consumer == consumer)
                .count();
            if held >= limit as usize {
                return None;
            }
        }
        let mut item = self.ready.pop_front()?;
        item.count += 1;
        self.deliveries.push(QDelivery {
            item: item.clone(),
            consumer,
            deadline: self.now + ACK_TIMEOUT_SECS,
            live: true,
            why: None,
        });
        Some((self.deliveries.len() - 1, item))
    }

    fn ack(&mut self, d: usize) {
        self.expire();
        let delivery = &mut self.deliveries[d];
        if delivery.live {
            delivery.live = false;
            self.acked += 1;
        }
    }

    /// A dropped consumer's deliveries are released, newest first.
    fn drop_consumer(&mut self, consumer: u64) {
        self.dropped.insert(consumer);
        let held: Vec<usize> = (0..self.deliveries.len())
            .filter(|&d| self.deliveries[d].live && self.deliveries[d].consumer == consumer)
            .collect();
        for d in held.into_iter().rev() {
            self.release(d, Why::Dropped);
        }
    }

    fn advance(&mut self, secs: u64) {
        self.now += secs;
        self.expire();
    }
}

/// The system under test, next to its model.
struct QueueRig {
    clock: ManualClock,
    start: SystemTime,
    _bus: Broker,
    queue: Queue<u32>,
    dlq: Queue<u32>,
    consumers: Vec<(u64, Consumer<u32>)>,
    next_consumer: u64,
    /// Deliveries the test holds, with their delivery numbers in the model.
    held: Vec<(Message<u32>, usize)>,
    model: QueueModel,
}

impl QueueRig {
    fn new(setup: &QSetup) -> Self {
        let clock = ManualClock::new();
        let start = clock.now();
        let bus = Broker::builder().clock(clock.clone()).open().unwrap();
        let mut options = QueueOptions::default()
            .capacity(setup.capacity)
            .ack_timeout(Duration::from_secs(ACK_TIMEOUT_SECS))
            .max_deliveries(MAX_DELIVERIES)
            .dead_letter("dlq");
        if let Some(n) = setup.prefetch {
            options = options.prefetch(n);
        }
        let queue = bus.queue_with::<u32>("jobs", options).unwrap();
        let dlq = bus.queue::<u32>("dlq").unwrap();
        let consumers = (0..setup.consumers as u64)
            .map(|id| (id, queue.consumer()))
            .collect();
        Self {
            clock,
            start,
            _bus: bus,
            queue,
            dlq,
            consumers,
            next_consumer: setup.consumers as u64,
            held: Vec::new(),
            model: QueueModel::new(setup),
        }
    }

    /// Checks a received message against the model's delivery.
    fn check_message(
        &self,
        msg: &Message<u32>,
        item: &QItem,
        step: usize,
        op: &dyn Debug,
    ) -> Result<(), TestCaseError> {
        same(
            (*msg.payload(), msg.offset(), msg.delivery_count()),
            (item.payload, item.id, item.count),
            "(payload, sequence number, delivery count)",
            step,
            op,
        )?;
        same(
            msg.timestamp(),
            self.start + Duration::from_secs(item.sent_at),
            "timestamp",
            step,
            op,
        )
    }

    /// One `try_recv` on consumer `c`, checked against the model; the delivery is held.
    fn recv(&mut self, c: usize, step: usize, op: &dyn Debug) -> Result<bool, TestCaseError> {
        let id = self.consumers[c].0;
        let want = self.model.recv(id);
        let got = self.consumers[c].1.try_recv();
        match (got, want) {
            (Ok(msg), Some((d, item))) => {
                self.check_message(&msg, &item, step, op)?;
                self.held.push((msg, d));
                Ok(true)
            }
            (Err(TryRecvError::Empty), None) => Ok(false),
            (got, want) => Err(TestCaseError::fail(format!(
                "step {step} ({op:?}), consumer {c}: got {got:?}, model expects {want:?}"
            ))),
        }
    }

    fn apply(&mut self, op: &QOp, step: usize) -> Result<(), TestCaseError> {
        match *op {
            QOp::Send(v) => {
                let want = self.model.send(v);
                match (self.queue.producer().try_send(v), want) {
                    (Ok(receipt), Some(id)) => {
                        same(
                            (receipt.partition, receipt.offset),
                            (0, id),
                            "receipt",
                            step,
                            op,
                        )?;
                    }
                    (Err(TrySendError::Full(back)), None) => {
                        same(back, v, "payload handed back", step, op)?;
                    }
                    (got, want) => {
                        return Err(TestCaseError::fail(format!(
                            "step {step} ({op:?}): got {got:?}, model expects {want:?}"
                        )));
                    }
                }
            }
            QOp::Recv(c) => {
                self.recv(c % self.consumers.len(), step, op)?;
            }
            QOp::Ack(i) => {
                if !self.held.is_empty() {
                    let (msg, d) = self.held.remove(i.index(self.held.len()));
                    let got = msg.ack();
                    self.model.expire(); // the ack sees timeouts first
                    same_settle(got, self.model.settle_result(d), "ack", step, op)?;
                    self.model.ack(d);
                }
            }
            QOp::Nack(i) => {
                if !self.held.is_empty() {
                    let (msg, d) = self.held.remove(i.index(self.held.len()));
                    let got = msg.nack();
                    self.model.expire(); // the nack sees timeouts first
                    same_settle(got, self.model.settle_result(d), "nack", step, op)?;
                    self.model.release(d, Why::Nack);
                }
            }
            QOp::DropMessage(i) => {
                if !self.held.is_empty() {
                    let (msg, d) = self.held.remove(i.index(self.held.len()));
                    drop(msg);
                    self.model.release(d, Why::Dropped);
                }
            }
            QOp::DropConsumer(c) => {
                let c = c % self.consumers.len();
                let id = self.next_consumer;
                self.next_consumer += 1;
                let (old, consumer) =
                    std::mem::replace(&mut self.consumers[c], (id, self.queue.consumer()));
                drop(consumer);
                self.model.drop_consumer(old);
            }
            QOp::AdvanceClock(secs) => {
                self.clock.advance(Duration::from_secs(secs));
                self.model.advance(secs);
            }
        }
        Ok(())
    }

    /// Compares every observable with the model.
    fn check(&self, step: usize, op: &dyn Debug) -> Result<(), TestCaseError> {
        let m = &self.model;
        same(self.queue.len(), m.ready.len(), "queue.len()", step, op)?;
        same(
            self.queue.is_empty(),
            m.ready.is_empty(),
            "is_empty",
            step,
            op,
        )?;
        same(
            self.queue.in_flight(),
            m.in_flight(),
            "in_flight()",
            step,
            op,
        )?;
        same(
            self.queue.dead_lettered(),
            m.dead.len() as u64,
            "dead_lettered()",
            step,
            op,
        )?;
        same(self.dlq.len(), m.dead.len(), "dlq.len()", step, op)?;
        same(self.dlq.in_flight(), 0, "dlq.in_flight()", step, op)?;
        for (_, consumer) in &self.consumers {
            same(
                consumer.lag(),
                m.ready.len() as u64,
                "consumer.lag()",
                step,
                op,
            )?;
        }
        Ok(())
    }

    /// Settles everything, drains the queue and checks the dead-letter queue's contents.
    fn finish(mut self) -> Result<(), TestCaseError> {
        let op = &"final drain";
        for (msg, d) in std::mem::take(&mut self.held) {
            let got = msg.ack();
            self.model.expire();
            same_settle(got, self.model.settle_result(d), "ack", usize::MAX, op)?;
            self.model.ack(d);
        }
        self.check(usize::MAX, op)?;
        while self.recv(0, usize::MAX, op)? {
            let (msg, d) = self.held.pop().unwrap();
            msg.ack().unwrap();
            self.model.ack(d);
        }
        self.check(usize::MAX, op)?;
        prop_assert_eq!(self.queue.len() + self.queue.in_flight(), 0);
        prop_assert_eq!(
            self.model.sent,
            self.model.acked + self.model.dead.len(),
            "every message sent was acked or dead-lettered"
        );
        let mut dead = self.dlq.consumer();
        for (i, (item, why)) in self.model.dead.iter().enumerate() {
            let msg = dead.try_recv();
            prop_assert!(msg.is_ok(), "dead letter {} ({:?}): {:?}", i, item, msg);
            let msg = msg.unwrap();
            prop_assert_eq!(
                (*msg.payload(), msg.offset(), msg.delivery_count()),
                (item.payload, i as u64, 1),
                "dead letter {}",
                i
            );
            prop_assert_eq!(
                msg.timestamp(),
                self.start + Duration::from_secs(item.sent_at),
                "dead letter {} keeps its timestamp",
                i
            );
            let headers = msg.headers();
            prop_assert_eq!(headers.get(DEAD_LETTER_QUEUE), Some(&b"jobs"[..]));
            prop_assert_eq!(
                headers.get(DEAD_LETTER_REASON),
                Some(why.header().as_bytes()),
                "dead letter {} ({:?})",
                i,
                item
            );
            let deliveries = item.count.to_string();
            prop_assert_eq!(
                headers.get(DEAD_LETTER_DELIVERIES),
                Some(deliveries.as_bytes())
            );
            msg.ack().unwrap();
        }
        let rest = dead.try_recv();
        prop_assert!(
            matches!(rest, Err(TryRecvError::Empty)),
            "dlq beyond the model: {:?}",
            rest
        );
        Ok(())
    }
}

fn run_queue(setup: QSetup, ops: Vec<QOp>) -> Result<(), TestCaseError> {
    let mut rig = QueueRig::new(&setup);
    rig.check(0, &"start")?;
    for (step, op) in ops.iter().enumerate() {
        rig.apply(op, step)?;
        rig.check(step, op)?;
    }
    rig.finish()
}

// ---------------------------------------------------------------------------------------------
// Topic, subscriber and consumer group
// ---------------------------------------------------------------------------------------------

const KEYS: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];
const GROUP: &str = "g";
/// More members than partitions, so that some stay idle.
const MAX_MEMBERS: usize = 4;

#[derive(Debug, Clone)]
enum TOp {
    /// Sends the next payload, with key `KEYS[k]` or none.
    Send(Option<usize>),
    /// Sends this many payloads (to cross the log's 128-slot segments), with one key or none.
    SendBurst(Option<usize>, u8),
    /// `try_recv` on the subscriber.
    SubRecv,
    /// A new member joins the group (up to `MAX_MEMBERS`).
    Join,
    /// A member leaves (is dropped).
    Leave(Index),
    /// `try_recv` on a member.
    MemberRecv(Index),
    /// Acks a held group delivery.
    Ack(Index),
    /// Nacks a held group delivery.
    Nack(Index),
    /// Drops a held group delivery unsettled.
    DropMessage(Index),
}

#[derive(Debug, Clone)]
struct TSetup {
    partitions: u32,
    retention: u64,
    members: usize,
}

fn t_setup() -> impl Strategy<Value = TSetup> {
    (2..=3u32, prop_oneof![Just(5u64), 3..=6u64], 1..=3usize).prop_map(
        |(partitions, retention, members)| TSetup {
            partitions,
            retention,
            members,
        },
    )
}

fn t_op() -> impl Strategy<Value = TOp> {
    prop_oneof![
        6 => prop_oneof![Just(None), (0..KEYS.len()).prop_map(Some)].prop_map(TOp::Send),
        1 => (prop_oneof![Just(None), (0..KEYS.len()).prop_map(Some)], 1..=60u8)
            .prop_map(|(key, n)| TOp::SendBurst(key, n)),
        3 => Just(TOp::SubRecv),
        2 => Just(TOp::Join),
        2 => any::<Index>().prop_map(TOp::Leave),
        5 => any::<Index>().prop_map(TOp::MemberRecv),
        3 => any::<Index>().prop_map(TOp::Ack),
        1 => any::<Index>().prop_map(TOp::Nack),
        1 => any::<Index>().prop_map(TOp::DropMessage),
    ]
}

/// One partition's log: every payload ever sent (index = offset) and the oldest retained offset.
#[derive(Debug, Default)]
struct PLog {
    payloads: Vec<u64>,
    base: u64,
}

impl PLog {
    fn end(&self) -> u64 {
        self.payloads.len() as u64
    }
}

/// A pending group delivery: deliveries so far, and the member holding it.
#[derive(Debug, Clone, Copy)]
struct Pending {
    count: u32,
    holder: Option<u64>,
}

/// The group's state in one partition.
#[derive(Debug, Default)]
struct GPart {
    owner: Option<u64>,
    next: u64,
    pending: BTreeMap<u64, Pending>,
    /// Released pending offsets, redelivered lowest first.
    ready: BTreeSet<u64>,
}

impl GPart {
    fn first_unacked(&self) -> u64 {
        self.pending
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next)
            .min(self.next)
    }
}

/// What a receive should give.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Msg {
        partition: u32,
        offset: u64,
        count: u32,
    },
    Lagged(u64),
    Empty,
}

#[derive(Debug)]
struct TopicModel {
    retention: u64,
    logs: Vec<PLog>,
    keyless: u32,
    key_partition: BTreeMap<usize, u32>,
    next_payload: u64,
    // The subscriber.
    sub_next: Vec<u64>,
    sub_turn: usize,
    sub_received: Vec<Vec<u64>>,
    sub_skipped: Vec<u64>,
    // The group.
    parts: Vec<GPart>,
    turns: BTreeMap<u64, usize>,
    /// Offsets the library delivered to some member, per partition.
    delivered: Vec<BTreeSet<u64>>,
    /// Offsets reported skipped to the group, per partition.
    group_skipped: Vec<BTreeSet<u64>>,
}

impl TopicModel {
    fn new(setup: &TSetup) -> Self {
        let n = setup.partitions as usize;
        Self {
            retention: setup.retention,
            logs: (0..n).map(|_| PLog::default()).collect(),
            keyless: 0,
            key_partition: BTreeMap::new(),
            next_payload: 0,
            sub_next: vec![0; n],
            sub_turn: 0,
            sub_received: vec![Vec::new(); n],
            sub_skipped: vec![0; n],
            parts: (0..n).map(|_| GPart::default()).collect(),
            turns: BTreeMap::new(),
            delivered: vec![BTreeSet::new(); n],
            group_skipped: vec![BTreeSet::new(); n],
        }
    }

    fn n(&self) -> usize {
        self.logs.len()
    }

    /// Appends to partition `p` and trims to the retention; returns the offset.
    fn push(&mut self, p: usize, payload: u64) -> u64 {
        let log = &mut self.logs[p];
        let offset = log.end();
        log.payloads.push(payload);
        log.base = log.base.max(log.end().saturating_sub(self.retention));
        offset
    }

    /// What the subscriber's `try_recv` may give: `Empty` only if nothing is unread anywhere.
    /// Returns the partitions with a lag to report and those with a message to read.
    fn sub_available(&self) -> (Vec<usize>, Vec<usize>) {
        let lagged = (0..self.n())
            .filter(|&p| self.sub_next[p] < self.logs[p].base)
            .collect();
        let unread = (0..self.n())
            .filter(|&p| self.sub_next[p] < self.logs[p].end())
            .collect();
        (lagged, unread)
    }

    fn sub_lag(&self) -> u64 {
        (0..self.n())
            .map(|p| self.logs[p].end() - self.sub_next[p].max(self.logs[p].base))
            .sum()
    }

    /// A member's `try_recv`, as `Member::poll` does it.
    fn member_recv(&mut self, member: u64) -> Expect {
        let n = self.n();
        let turn = self.turns[&member];
        for i in 0..n {
            let p = (turn + i) % n;
            let (base, end) = (self.logs[p].base, self.logs[p].end());
            let part = &mut self.parts[p];
            if part.owner != Some(member) {
                continue;
            }
            // Drop what retention trimmed; undelivered or released messages are skipped.
            let mut skipped = Vec::new();
            if part.next < base {
                skipped.extend(part.next..base);
                part.next = base;
            }
            let trimmed: Vec<u64> = part.pending.range(..base).map(|(&o, _)| o).collect();
            for offset in trimmed {
                let pending = part.pending.remove(&offset);
                if pending.is_some_and(|p| p.holder.is_none()) {
                    part.ready.remove(&offset);
                    skipped.push(offset);
                }
            }
            if !skipped.is_empty() {
                let count = skipped.len() as u64;
                self.group_skipped[p].extend(skipped);
                return Expect::Lagged(count);
            }
            let offset = match part.ready.pop_first() {
                Some(offset) => offset,
                None if part.next < end => {
                    part.next += 1;
                    part.pending.insert(
                        part.next - 1,
                        Pending {
                            count: 0,
                            holder: None,
                        },
                    );
                    part.next - 1
                }
                None => continue,
            };
            let pending = part
                .pending
                .get_mut(&offset)
                .expect("a ready offset is pending");
            pending.count += 1;
            pending.holder = Some(member);
            self.turns.insert(member, (p + 1) % n);
            return Expect::Msg {
                partition: p as u32,
                offset,
                count: pending.count,
            };
        }
        Expect::Empty
    }

    fn group_ack(&mut self, p: usize, offset: u64) {
        let part = &mut self.parts[p];
        if part.pending.remove(&offset).is_some() {
            part.ready.remove(&offset);
        }
    }

    fn group_release(&mut self, p: usize, offset: u64, member: u64, count: u32) {
        let part = &mut self.parts[p];
        if let Some(pending) = part.pending.get_mut(&offset)
            && pending.holder == Some(member)
            && pending.count == count
        {
            pending.holder = None;
            part.ready.insert(offset);
        }
    }

    fn positions(&self) -> Vec<u64> {
        self.parts.iter().map(GPart::first_unacked).collect()
    }

    /// Unacked retained messages of `member`'s partitions (`Consumer::lag`).
    fn member_lag(&self, member: u64) -> u64 {
        (0..self.n())
            .filter(|&p| self.parts[p].owner == Some(member))
            .map(|p| {
                let (base, end) = (self.logs[p].base, self.logs[p].end());
                end - self.parts[p].first_unacked().clamp(base, end)
            })
            .sum()
    }
}

struct TopicRig {
    _bus: Broker,
    topic: Topic<u64>,
    sub: Consumer<u64>,
    members: Vec<(u64, Consumer<u64>)>,
    next_member: u64,
    /// Group deliveries the test holds, with the member that received them.
    held: Vec<(Message<u64>, u64)>,
    model: TopicModel,
}

impl TopicRig {
    fn new(setup: &TSetup) -> Result<Self, TestCaseError> {
        let clock = ManualClock::new();
        let bus = Broker::builder().clock(clock).open().unwrap();
        let options = TopicOptions::default()
            .partitions(setup.partitions)
            .retention(Retention::messages(setup.retention))
            .overflow(Overflow::Lag);
        let topic = bus.topic_with::<u64>("events", options).unwrap();
        let sub = topic.subscribe(Start::Earliest).unwrap();
        let mut rig = Self {
            _bus: bus,
            topic,
            sub,
            members: Vec::new(),
            next_member: 0,
            held: Vec::new(),
            model: TopicModel::new(setup),
        };
        for _ in 0..setup.members {
            rig.join(0, &"setup")?;
        }
        Ok(rig)
    }

    fn join(&mut self, step: usize, op: &dyn Debug) -> Result<(), TestCaseError> {
        let id = self.next_member;
        self.next_member += 1;
        self.members
            .push((id, self.topic.join_group(GROUP).unwrap()));
        self.model.turns.insert(id, 0);
        self.assignment(true, step, op)
    }

    /// Reads the group's assignment, checks it is complete and fair, and applies a change of
    /// owner to the model (its held deliveries become ready). Without `may_change`, checks that
    /// it did not change.
    fn assignment(
        &mut self,
        may_change: bool,
        step: usize,
        op: &dyn Debug,
    ) -> Result<(), TestCaseError> {
        let n = self.model.n();
        let mut owners: Vec<Option<u64>> = vec![None; n];
        let mut shares = Vec::new();
        for (id, member) in &self.members {
            let parts = member.partitions();
            shares.push(parts.len());
            for p in parts {
                let p = p as usize;
                prop_assert!(p < n, "step {} ({:?}): partition {} assigned", step, op, p);
                prop_assert!(
                    owners[p].is_none(),
                    "step {} ({:?}): partition {} has two owners",
                    step,
                    op,
                    p
                );
                owners[p] = Some(*id);
            }
        }
        if !self.members.is_empty() {
            prop_assert!(
                owners.iter().all(Option::is_some),
                "step {} ({:?}): unowned partition with live members: {:?}",
                step,
                op,
                owners
            );
            let (min, max) = (
                shares.iter().min().copied().unwrap_or(0),
                shares.iter().max().copied().unwrap_or(0),
            );
            prop_assert!(
                max - min <= 1,
                "step {} ({:?}): unfair shares {:?}",
                step,
                op,
                shares
            );
        }
        for (p, owner) in owners.into_iter().enumerate() {
            let part = &mut self.model.parts[p];
            if owner == part.owner {
                continue;
            }
            prop_assert!(
                may_change,
                "step {} ({:?}): partition {} moved from {:?} to {:?} without a join or leave",
                step,
                op,
                p,
                part.owner,
                owner
            );
            part.owner = owner;
            for (&offset, pending) in part.pending.iter_mut() {
                if pending.holder.take().is_some() {
                    part.ready.insert(offset);
                }
            }
        }
        Ok(())
    }

    fn sub_recv(&mut self, step: usize, op: &dyn Debug) -> Result<bool, TestCaseError> {
        let m = &mut self.model;
        let n = m.n();
        let (lagged, unread) = m.sub_available();
        match self.sub.try_recv() {
            Ok(msg) => {
                let p = msg.partition() as usize;
                prop_assert!(p < n, "step {} ({:?}): partition {}", step, op, p);
                prop_assert!(
                    !lagged.contains(&p),
                    "step {} ({:?}): read partition {} at {} without reporting the lag (base {})",
                    step,
                    op,
                    p,
                    msg.offset(),
                    m.logs[p].base
                );
                let want = m.sub_next[p];
                same(
                    (msg.offset(), msg.delivery_count()),
                    (want, 1),
                    "subscriber (offset, delivery count)",
                    step,
                    op,
                )?;
                prop_assert!(want < m.logs[p].end(), "read past the end");
                same(
                    *msg.payload(),
                    m.logs[p].payloads[want as usize],
                    "subscriber payload",
                    step,
                    op,
                )?;
                msg.ack().unwrap(); // a no-op for a subscriber
                m.sub_received[p].push(want);
                m.sub_next[p] += 1;
                m.sub_turn = (p + 1) % n;
                Ok(true)
            }
            Err(TryRecvError::Lagged { skipped }) => {
                // Which partition: one that fell behind by `skipped`; on a tie, the first in the
                // subscriber's round-robin turn.
                let p = (0..n)
                    .map(|i| (m.sub_turn + i) % n)
                    .find(|&p| lagged.contains(&p) && m.logs[p].base - m.sub_next[p] == skipped);
                prop_assert!(
                    p.is_some(),
                    "step {} ({:?}): Lagged {{ skipped: {} }} matches no partition (next {:?}, \
                     bases {:?})",
                    step,
                    op,
                    skipped,
                    m.sub_next,
                    m.logs.iter().map(|l| l.base).collect::<Vec<_>>()
                );
                let p = p.unwrap_or_default();
                m.sub_skipped[p] += skipped;
                m.sub_next[p] = m.logs[p].base;
                m.sub_turn = p;
                Ok(true)
            }
            Err(TryRecvError::Empty) => {
                prop_assert!(
                    unread.is_empty(),
                    "step {} ({:?}): Empty, but partitions {:?} have unread messages",
                    step,
                    op,
                    unread
                );
                Ok(false)
            }
            Err(e) => Err(TestCaseError::fail(format!(
                "step {step} ({op:?}): subscriber: {e:?}"
            ))),
        }
    }

    /// One `try_recv` on member `i`; returns what it got (the message is held).
    fn member_recv(
        &mut self,
        i: usize,
        step: usize,
        op: &dyn Debug,
    ) -> Result<Expect, TestCaseError> {
        let id = self.members[i].0;
        let want = self.model.member_recv(id);
        let got = match self.members[i].1.try_recv() {
            Ok(msg) => {
                let got = Expect::Msg {
                    partition: msg.partition(),
                    offset: msg.offset(),
                    count: msg.delivery_count(),
                };
                if got == want {
                    let (p, offset) = (msg.partition() as usize, msg.offset());
                    same(
                        *msg.payload(),
                        self.model.logs[p].payloads[offset as usize],
                        "member payload",
                        step,
                        op,
                    )?;
                    self.model.delivered[p].insert(offset);
                    self.held.push((msg, id));
                }
                got
            }
            Err(TryRecvError::Lagged { skipped }) => Expect::Lagged(skipped),
            Err(TryRecvError::Empty) => Expect::Empty,
            Err(e) => {
                return Err(TestCaseError::fail(format!(
                    "step {step} ({op:?}): member: {e:?}"
                )));
            }
        };
        prop_assert_eq!(
            &got,
            &want,
            "step {} ({:?}): member {} (model {:?})",
            step,
            op,
            id,
            self.model.parts
        );
        Ok(got)
    }

    fn take_held(&mut self, i: Index) -> Option<(Message<u64>, u64)> {
        (!self.held.is_empty()).then(|| self.held.remove(i.index(self.held.len())))
    }

    /// Sends the next payload, with key `KEYS[k]` or none, and checks the receipt.
    fn send(
        &mut self,
        key: Option<usize>,
        step: usize,
        op: &dyn Debug,
    ) -> Result<(), TestCaseError> {
        let m = &mut self.model;
        let payload = m.next_payload;
        m.next_payload += 1;
        let producer = self.topic.producer();
        let receipt = match key {
            Some(k) => producer
                .send_record(Record::new(payload).key(KEYS[k]))
                .unwrap(),
            None => producer.send(payload).unwrap(),
        };
        let p = receipt.partition;
        prop_assert!((p as usize) < m.n(), "receipt partition {}", p);
        match key {
            Some(k) => {
                let first = *m.key_partition.entry(k).or_insert(p);
                same(p, first, "a key's partition", step, op)?;
            }
            None => {
                same(p, m.keyless % m.n() as u32, "round-robin", step, op)?;
                m.keyless += 1;
            }
        }
        let offset = m.push(p as usize, payload);
        same(receipt.offset, offset, "receipt offset", step, op)?;
        Ok(())
    }

    fn apply(&mut self, op: &TOp, step: usize) -> Result<(), TestCaseError> {
        match *op {
            TOp::Send(key) => self.send(key, step, op)?,
            TOp::SendBurst(key, n) => {
                for _ in 0..n {
                    self.send(key, step, op)?;
                }
            }
            TOp::SubRecv => {
                self.sub_recv(step, op)?;
            }
            TOp::Join => {
                if self.members.len() < MAX_MEMBERS {
                    self.join(step, op)?;
                }
            }
            TOp::Leave(i) => {
                if !self.members.is_empty() {
                    let (id, member) = self.members.remove(i.index(self.members.len()));
                    drop(member);
                    self.model.turns.remove(&id);
                    self.assignment(true, step, op)?;
                }
            }
            TOp::MemberRecv(i) => {
                if !self.members.is_empty() {
                    self.member_recv(i.index(self.members.len()), step, op)?;
                }
            }
            TOp::Ack(i) => {
                if let Some((msg, _)) = self.take_held(i) {
                    let (p, offset) = (msg.partition() as usize, msg.offset());
                    msg.ack().unwrap();
                    self.model.group_ack(p, offset);
                }
            }
            TOp::Nack(i) => {
                if let Some((msg, member)) = self.take_held(i) {
                    let (p, offset, count) =
                        (msg.partition() as usize, msg.offset(), msg.delivery_count());
                    msg.nack().unwrap();
                    self.model.group_release(p, offset, member, count);
                }
            }
            TOp::DropMessage(i) => {
                if let Some((msg, member)) = self.take_held(i) {
                    let (p, offset, count) =
                        (msg.partition() as usize, msg.offset(), msg.delivery_count());
                    drop(msg);
                    self.model.group_release(p, offset, member, count);
                }
            }
        }
        Ok(())
    }

    /// Compares every observable with the model.
    fn check(&mut self, step: usize, op: &dyn Debug) -> Result<(), TestCaseError> {
        self.assignment(false, step, op)?;
        let m = &self.model;
        for (p, log) in m.logs.iter().enumerate() {
            same(
                self.topic.offsets(p as u32),
                Some(log.base..log.end()),
                "offsets",
                step,
                op,
            )?;
        }
        same(
            self.topic.retained(),
            m.logs.iter().map(|l| l.end() - l.base).sum(),
            "retained()",
            step,
            op,
        )?;
        same(self.sub.lag(), m.sub_lag(), "subscriber lag()", step, op)?;
        same(
            self.topic.group_position(GROUP),
            Some(m.positions()),
            "group_position",
            step,
            op,
        )?;
        for (id, member) in &self.members {
            same(member.lag(), m.member_lag(*id), "member lag()", step, op)?;
        }
        Ok(())
    }

    /// Drains the subscriber and the group, then checks positions and delivery guarantees.
    fn finish(mut self) -> Result<(), TestCaseError> {
        let op = &"final drain";
        let step = usize::MAX;
        while self.sub_recv(step, op)? {}
        for (msg, _) in std::mem::take(&mut self.held) {
            let (p, offset) = (msg.partition() as usize, msg.offset());
            msg.ack().unwrap();
            self.model.group_ack(p, offset);
        }
        if self.members.is_empty() {
            self.join(step, op)?;
        }
        loop {
            let mut progress = false;
            for i in 0..self.members.len() {
                loop {
                    match self.member_recv(i, step, op)? {
                        Expect::Msg { .. } => {
                            let (msg, _) = self.held.pop().unwrap();
                            let (p, offset) = (msg.partition() as usize, msg.offset());
                            msg.ack().unwrap();
                            self.model.group_ack(p, offset);
                        }
                        Expect::Lagged(_) => {}
                        Expect::Empty => break,
                    }
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        self.check(step, op)?;
        let m = &self.model;
        let ends: Vec<u64> = m.logs.iter().map(PLog::end).collect();
        prop_assert_eq!(
            self.topic.group_position(GROUP),
            Some(ends.clone()),
            "drained group position"
        );
        for (p, log) in m.logs.iter().enumerate() {
            // At-least-once: every retained message reached a member.
            for offset in log.base..log.end() {
                prop_assert!(
                    m.delivered[p].contains(&offset),
                    "partition {} offset {} retained but never delivered to the group",
                    p,
                    offset
                );
            }
            // Every offset was delivered or reported skipped.
            for offset in 0..log.end() {
                prop_assert!(
                    m.delivered[p].contains(&offset) || m.group_skipped[p].contains(&offset),
                    "partition {} offset {} neither delivered to the group nor skipped",
                    p,
                    offset
                );
            }
            // The subscriber: offsets strictly increase; received + skipped = sent.
            let got = &m.sub_received[p];
            prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "{:?}", got);
            prop_assert_eq!(
                got.len() as u64 + m.sub_skipped[p],
                log.end(),
                "partition {}: subscriber received {:?}, skipped {}",
                p,
                got,
                m.sub_skipped[p]
            );
            prop_assert!(
                (log.base..log.end()).all(|o| got.contains(&o)),
                "partition {}: the subscriber missed a retained message",
                p
            );
        }
        Ok(())
    }
}

fn run_topic(setup: TSetup, ops: Vec<TOp>) -> Result<(), TestCaseError> {
    let mut rig = TopicRig::new(&setup)?;
    rig.check(0, &"start")?;
    for (step, op) in ops.iter().enumerate() {
        rig.apply(op, step)?;
        rig.check(step, op)?;
    }
    rig.finish()
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

proptest! {
    #![proptest_config(config())]

    #[test]
    fn queue_matches_model(setup in q_setup(), ops in prop::collection::vec(q_op(), 1..150)) {
        run_queue(setup, ops)?;
    }

    #[test]
    fn topic_and_group_match_model(
        setup in t_setup(),
        ops in prop::collection::vec(t_op(), 1..150),
    ) {
        run_topic(setup, ops)?;
    }
}

//! The topic model: partitions, a subscriber from `Earliest`, and a consumer group.

use super::durable::{Mode, Storage, bump, mode};
use super::*;

#[path = "topic_durable.rs"]
mod topic_durable;

// ---------------------------------------------------------------------------------------------
// Topic, subscriber and consumer group
// ---------------------------------------------------------------------------------------------

const KEYS: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];
const GROUP: &str = "g";
/// The group's dead-letter queue, and its delivery limit.
const GROUP_DLQ: &str = "g.dead";
const GROUP_MAX_DELIVERIES: u32 = 3;
/// More members than partitions, so that some stay idle.
const MAX_MEMBERS: usize = 4;

#[derive(Debug, Clone)]
pub(super) enum TOp {
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
    /// `Topic::get(p, end - back)`, for partition `p` (an index) and `back` in `0..8`.
    Get(Index, u64),
    /// Every member leaves (what they held is dropped), then `reset_group` to `Earliest`
    /// (`true`) or `Latest`.
    ResetGroup(bool),
    /// Closes the broker and opens the store again (durable modes).
    Reopen,
    /// Cuts the power and opens what the disk kept (crash mode; a reopen in durable mode).
    Kill,
}

#[derive(Debug, Clone)]
pub(super) struct TSetup {
    partitions: u32,
    retention: u64,
    members: usize,
    mode: Mode,
}

pub(super) fn t_setup() -> impl Strategy<Value = TSetup> {
    (
        2..=3u32,
        prop_oneof![Just(5u64), 3..=6u64],
        1..=3usize,
        mode(),
    )
        .prop_map(|(partitions, retention, members, mode)| TSetup {
            partitions,
            retention,
            members,
            mode,
        })
}

pub(super) fn t_op() -> impl Strategy<Value = TOp> {
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
        1 => (any::<Index>(), 0..8u64).prop_map(|(p, back)| TOp::Get(p, back)),
        1 => any::<bool>().prop_map(TOp::ResetGroup),
        1 => Just(TOp::Reopen),
        1 => Just(TOp::Kill),
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
    /// Offsets reported skipped to the group (or skipped by a reset), per partition.
    group_skipped: Vec<BTreeSet<u64>>,
    /// The group's dead letters, in order: payload, reason header, deliveries.
    dead: Vec<(u64, &'static str, u32)>,
    /// Deliveries that were not a message's first (stats).
    redelivered: u64,
    /// Dead letters moved in this run (stats).
    dead_run: u64,
    /// Since the last commit: the group's positions it held, per partition, and how many
    /// dead letters there were (see `topic_durable.rs`).
    since_commit: Vec<BTreeSet<u64>>,
    dead_at_commit: usize,
    /// Whether the group's declaration is surely stored.
    group_stored: bool,
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
            dead: Vec::new(),
            redelivered: 0,
            dead_run: 0,
            since_commit: vec![BTreeSet::from([0]); n],
            dead_at_commit: 0,
            group_stored: false,
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
            self.redelivered += u64::from(pending.count > 1);
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

    /// Releases a held delivery (`why`: the dead-letter reason): ready again at once (no
    /// backoff), or past the delivery limit to the dead-letter queue, the group moving past it
    /// (`src/engine/topic/group/settle.rs`).
    fn group_release(&mut self, p: usize, offset: u64, member: u64, count: u32, why: &'static str) {
        let part = &mut self.parts[p];
        if let Some(pending) = part.pending.get_mut(&offset)
            && pending.holder == Some(member)
            && pending.count == count
        {
            // A message retention trimmed (under `Lag`) is not copied to the dead-letter queue:
            // it is ready again, and reported skipped (`Lagged`) like any trimmed message.
            if count >= GROUP_MAX_DELIVERIES && offset >= self.logs[p].base {
                part.pending.remove(&offset);
                self.dead
                    .push((self.logs[p].payloads[offset as usize], why, count));
                self.dead_run += 1;
            } else {
                pending.holder = None;
                part.ready.insert(offset);
            }
        }
    }

    /// `reset_group` with no member: every partition starts again at `Earliest` (the oldest
    /// retained message) or `Latest` (its end), its deliveries forgotten.
    fn reset(&mut self, earliest: bool) {
        for p in 0..self.n() {
            let (base, end) = (self.logs[p].base, self.logs[p].end());
            let part = &mut self.parts[p];
            let to = if earliest { base } else { end };
            let from = part.first_unacked();
            self.group_skipped[p].extend(from..to);
            part.pending.clear();
            part.ready.clear();
            part.next = to;
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
    setup: TSetup,
    storage: Storage,
    bus: Broker,
    topic: Topic<u64>,
    dlq: Queue<u64>,
    sub: Consumer<u64>,
    members: Vec<(u64, Consumer<u64>)>,
    next_member: u64,
    /// Group deliveries the test holds, with the member that received them.
    held: Vec<(Message<u64>, u64)>,
    model: TopicModel,
}

impl TopicRig {
    fn new(setup: &TSetup) -> Result<Self, TestCaseError> {
        let storage = Storage::new(setup.mode, ManualClock::new());
        let (bus, topic, sub, dlq) = Self::attach(&storage, setup);
        let mut rig = Self {
            setup: setup.clone(),
            storage,
            bus,
            topic,
            dlq,
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

    /// Opens a broker on the storage; declares the topic, a subscriber and the group's
    /// dead-letter queue.
    fn attach(
        storage: &Storage,
        setup: &TSetup,
    ) -> (Broker, Topic<u64>, Consumer<u64>, Queue<u64>) {
        let bus = storage.open();
        let options = TopicOptions::default()
            .partitions(setup.partitions)
            .retention(Retention::messages(setup.retention))
            .overflow(Overflow::Lag);
        let topic = bus.topic_with::<u64>("events", options).unwrap();
        let sub = topic.subscribe(Start::Earliest).unwrap();
        let dlq = bus.queue::<u64>(GROUP_DLQ).unwrap();
        (bus, topic, sub, dlq)
    }

    fn join(&mut self, step: usize, op: &dyn Debug) -> Result<(), TestCaseError> {
        let id = self.next_member;
        self.next_member += 1;
        // Lag, as the topic's subscriber: the model follows retention trimming the group; no
        // backoff: releases come back at once, as the model predicts without a clock.
        let options = GroupOptions::default()
            .overflow(Overflow::Lag)
            .backoff(Backoff::none())
            .max_deliveries(GROUP_MAX_DELIVERIES)
            .dead_letter(GROUP_DLQ);
        let member = self.topic.join_group_with(GROUP, options).unwrap();
        self.members.push((id, member));
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
        // The send returned after its commit, which carried every position recorded before.
        m.commit_point();
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
                    self.model.group_release(p, offset, member, count, "nack");
                }
            }
            TOp::DropMessage(i) => {
                if let Some((msg, member)) = self.take_held(i) {
                    let (p, offset, count) =
                        (msg.partition() as usize, msg.offset(), msg.delivery_count());
                    drop(msg);
                    self.model
                        .group_release(p, offset, member, count, "dropped");
                }
            }
            TOp::Get(p, back) => {
                let p = p.index(self.model.n());
                let log = &self.model.logs[p];
                let offset = log.end().saturating_sub(back);
                let want = (offset >= log.base && offset < log.end())
                    .then(|| log.payloads[offset as usize]);
                let got = self.topic.get(p as u32, offset).unwrap();
                same(got.map(|m| *m.payload()), want, "get(p, offset)", step, op)?;
            }
            TOp::ResetGroup(earliest) => {
                for (msg, member) in std::mem::take(&mut self.held) {
                    let (p, offset, count) =
                        (msg.partition() as usize, msg.offset(), msg.delivery_count());
                    drop(msg);
                    self.model
                        .group_release(p, offset, member, count, "dropped");
                }
                for (id, member) in std::mem::take(&mut self.members) {
                    drop(member);
                    self.model.turns.remove(&id);
                }
                self.assignment(true, step, op)?;
                let start = if earliest {
                    Start::Earliest
                } else {
                    Start::Latest
                };
                self.topic.reset_group(GROUP, start).unwrap();
                self.model.reset(earliest);
            }
            TOp::Reopen => self.reopen(false, step, op)?,
            TOp::Kill => self.reopen(self.setup.mode == Mode::Crash, step, op)?,
        }
        self.model.note_positions();
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
        same(self.dlq.len(), m.dead.len(), "group dead letters", step, op)?;
        self.check_stats(step, op)?;
        same(
            self.topic.groups(),
            vec![GROUP.to_owned()],
            "groups()",
            step,
            op,
        )?;
        Ok(())
    }

    /// `Broker::stats` agrees with the model: partitions, the subscriber's lag, the group's
    /// positions, lag, in-flight deliveries, redeliveries, dead letters and assignment.
    fn check_stats(&self, step: usize, op: &dyn Debug) -> Result<(), TestCaseError> {
        let m = &self.model;
        let stats = self.bus.stats();
        let topic = stats.topic("events").expect("the topic is in the snapshot");
        let bounds: Vec<(u64, u64)> = m.logs.iter().map(|l| (l.base, l.end())).collect();
        let got: Vec<(u64, u64, u64)> = (topic.partitions.iter())
            .map(|p| (p.earliest, p.next, p.messages))
            .collect();
        let want: Vec<(u64, u64, u64)> = bounds.iter().map(|&(b, e)| (b, e, e - b)).collect();
        same(got, want, "stats: partitions", step, op)?;
        let lags: Vec<u64> = topic.subscribers.iter().map(|s| s.lag).collect();
        same(lags, vec![m.sub_lag()], "stats: subscriber lag", step, op)?;
        let group = topic.group(GROUP).expect("the group is in the snapshot");
        let positions: Vec<u64> = group.partitions.iter().map(|p| p.position).collect();
        same(positions, m.positions(), "stats: positions", step, op)?;
        let lag = |(part, &(base, end)): (&GPart, &(u64, u64))| {
            end - part.first_unacked().clamp(base, end)
        };
        let want: Vec<u64> = m.parts.iter().zip(&bounds).map(lag).collect();
        let got: Vec<u64> = group.partitions.iter().map(|p| p.lag).collect();
        same(got, want.clone(), "stats: lag per partition", step, op)?;
        same(group.lag, want.iter().sum(), "stats: group lag", step, op)?;
        let held = |part: &GPart| part.pending.values().filter(|p| p.holder.is_some()).count();
        let want: Vec<u64> = m.parts.iter().map(|p| held(p) as u64).collect();
        let got: Vec<u64> = group.partitions.iter().map(|p| p.in_flight).collect();
        same(got, want, "stats: in flight per partition", step, op)?;
        same(
            group.redelivered,
            m.redelivered,
            "stats: redelivered",
            step,
            op,
        )?;
        same(
            group.dead_lettered,
            m.dead_run,
            "stats: dead_lettered",
            step,
            op,
        )?;
        same(
            group.members.len(),
            self.members.len(),
            "stats: members",
            step,
            op,
        )?;
        // Each member's partitions, as the snapshot assigns them and as the member says.
        let mut by_owner: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for p in group.partitions.iter() {
            if let Some(owner) = p.owner {
                by_owner.entry(owner).or_default().push(p.partition);
            }
        }
        let mut got: Vec<Vec<u32>> = by_owner.into_values().collect();
        let mut want: Vec<Vec<u32>> = (self.members.iter())
            .map(|(_, c)| c.partitions())
            .filter(|p| !p.is_empty())
            .collect();
        got.sort();
        want.sort();
        same(got, want, "stats: assignment", step, op)?;
        let dead = stats.queue(GROUP_DLQ).expect("the dead-letter queue");
        same(
            dead.ready,
            self.dlq.len() as u64,
            "stats: dlq ready",
            step,
            op,
        )
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
            // At-least-once: every retained message reached a member (unless a reset to
            // `Latest` skipped it).
            for offset in log.base..log.end() {
                prop_assert!(
                    m.delivered[p].contains(&offset) || m.group_skipped[p].contains(&offset),
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
        // The group's dead letters: in order, with the same headers as a queue's.
        let mut dead = self.dlq.consumer();
        for (i, &(payload, why, count)) in self.model.dead.iter().enumerate() {
            let msg = dead.try_recv();
            prop_assert!(msg.is_ok(), "group dead letter {}: {:?}", i, msg);
            let msg = msg.unwrap();
            prop_assert_eq!(*msg.payload(), payload, "group dead letter {}", i);
            let headers = msg.headers();
            prop_assert_eq!(headers.get(DEAD_LETTER_QUEUE), Some(&b"events/g"[..]));
            prop_assert_eq!(headers.get(DEAD_LETTER_REASON), Some(why.as_bytes()));
            let deliveries = count.to_string();
            prop_assert_eq!(
                headers.get(DEAD_LETTER_DELIVERIES),
                Some(deliveries.as_bytes())
            );
            msg.ack().unwrap();
        }
        let rest = dead.try_recv();
        prop_assert!(
            matches!(rest, Err(TryRecvError::Empty)),
            "group dead letters beyond the model: {:?}",
            rest
        );
        Ok(())
    }
}

pub(super) fn run_topic(setup: TSetup, ops: Vec<TOp>) -> Result<(), TestCaseError> {
    bump(|f| {
        f.cases += 1;
        f.durable += u64::from(setup.mode != Mode::Memory);
        f.steps += ops.len() as u64;
    });
    let mut rig = TopicRig::new(&setup)?;
    rig.check(0, &"start")?;
    for (step, op) in ops.iter().enumerate() {
        rig.apply(op, step)?;
        rig.check(step, op)?;
    }
    rig.finish()
}

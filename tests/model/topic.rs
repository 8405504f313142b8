//! The topic model: partitions, a subscriber from `Earliest`, and a consumer group.

use super::durable::{Mode, Storage, bump, mode, torn};
use super::*;

#[path = "topic_durable.rs"]
mod topic_durable;
#[path = "topic_rig.rs"]
mod topic_rig;

use self::topic_rig::TopicRig;
pub(super) use self::topic_rig::run_topic;

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
    Leave(Pick),
    /// `try_recv` on a member.
    MemberRecv(Pick),
    /// Acks a held group delivery.
    Ack(Pick),
    /// Nacks a held group delivery.
    Nack(Pick),
    /// Drops a held group delivery unsettled.
    DropMessage(Pick),
    /// `Topic::get(p, end - back)`, for partition `p` (an index) and `back` in `0..8`.
    Get(Pick, u64),
    /// Every member leaves (what they held is dropped), then `reset_group` to `Earliest`
    /// (`true`) or `Latest`.
    ResetGroup(bool),
    /// Closes the broker and opens the store again (durable modes).
    Reopen,
    /// Cuts the power and opens what the disk kept, or a torn variant of it drawn with seed
    /// `torn` (crash mode; a reopen in durable mode). With `mid_send: Some(n)`, one more
    /// (keyless) message is sent as the power goes, after `n` of its commit's syncs.
    Kill {
        torn: Option<u64>,
        mid_send: Option<u8>,
    },
}

#[derive(Debug, Clone)]
pub(super) struct TSetup {
    pub(super) partitions: u32,
    pub(super) retention: u64,
    pub(super) members: usize,
    pub(super) mode: Mode,
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
        2 => pick().prop_map(TOp::Leave),
        5 => pick().prop_map(TOp::MemberRecv),
        3 => pick().prop_map(TOp::Ack),
        1 => pick().prop_map(TOp::Nack),
        1 => pick().prop_map(TOp::DropMessage),
        1 => (pick(), 0..8u64).prop_map(|(p, back)| TOp::Get(p, back)),
        1 => any::<bool>().prop_map(TOp::ResetGroup),
        1 => Just(TOp::Reopen),
        1 => (torn(), prop_oneof![Just(None), (0..=2u8).prop_map(Some)])
            .prop_map(|(torn, mid_send)| TOp::Kill { torn, mid_send }),
    ]
}

/// One partition's log: every payload ever sent (index = offset) and the oldest retained offset.
#[derive(Debug, Clone, Default)]
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
#[derive(Debug, Clone, Default)]
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

#[derive(Debug, Clone)]
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

//! The queue model: one queue, its dead-letter queue, competing consumers, a manual clock.

use super::durable::{Mode, Storage, bump, mode, torn};
use super::*;

#[path = "queue_durable.rs"]
mod queue_durable;
#[path = "queue_rig.rs"]
mod queue_rig;

use self::queue_rig::QueueRig;
pub(super) use self::queue_rig::run_queue;

use self::queue_durable::{Ev, Journal};

// ---------------------------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------------------------

const ACK_TIMEOUT_SECS: u64 = 30;
const MAX_DELIVERIES: u32 = 3;
/// The redelivery backoff, in seconds, by deliveries so far (1-based; the last repeats).
const BACKOFF_SECS: [u64; 3] = [0, 2, 5];

fn backoff_secs(count: u32) -> u64 {
    BACKOFF_SECS[(count.max(1) as usize - 1).min(BACKOFF_SECS.len() - 1)]
}

#[derive(Debug, Clone)]
pub(super) enum QOp {
    /// `try_send(v)`.
    Send(u32),
    /// `try_send_record` with a priority, and maybe a delay and a time-to-live (seconds).
    SendTimed {
        payload: u32,
        priority: u8,
        delay: Option<u64>,
        ttl: Option<u64>,
    },
    /// `try_recv` on consumer `c % consumers`.
    Recv(usize),
    /// Acks a held delivery.
    Ack(Pick),
    /// Nacks a held delivery.
    Nack(Pick),
    /// `nack_after` this many seconds.
    NackAfter(Pick, u64),
    /// Drops a held delivery unsettled.
    DropMessage(Pick),
    /// Drops consumer `c % consumers` (its deliveries are released) and makes a new one.
    DropConsumer(usize),
    /// Advances the clock by this many seconds.
    AdvanceClock(u64),
    /// `purge()`.
    Purge,
    /// `peek(n)`.
    Peek(usize),
    /// `dlq.redrive(&queue, n)`.
    Redrive(usize),
    /// Closes the broker and opens the store again (durable modes).
    Reopen,
    /// Cuts the power and opens what the disk kept, or a torn variant of it drawn with seed
    /// `torn` (crash mode; a reopen in durable mode). With `mid_send: Some(n)`, one more
    /// message is sent as the power goes, after `n` of its commit's syncs.
    Kill {
        torn: Option<u64>,
        mid_send: Option<u8>,
    },
}

#[derive(Debug, Clone)]
pub(super) struct QSetup {
    pub(super) capacity: usize,
    pub(super) prefetch: Option<u32>,
    pub(super) consumers: usize,
    /// Priority levels, if any.
    pub(super) priorities: Option<u8>,
    /// The queue's message time-to-live in seconds, if any.
    pub(super) ttl: Option<u64>,
    /// With a dead-letter queue and `max_deliveries`; without, expired messages are dropped.
    pub(super) dead_letters: bool,
    pub(super) mode: Mode,
}

pub(super) fn q_setup() -> impl Strategy<Value = QSetup> {
    (
        prop_oneof![Just(8usize), 1..=8usize],
        prop_oneof![Just(None), Just(Some(1u32)), Just(Some(2u32))],
        2..=3usize,
        prop_oneof![Just(None), Just(Some(3u8))],
        prop_oneof![Just(None), Just(Some(20u64)), (5..60u64).prop_map(Some)],
        prop_oneof![3 => Just(true), 1 => Just(false)],
        mode(),
    )
        .prop_map(
            |(capacity, prefetch, consumers, priorities, ttl, dead_letters, mode)| QSetup {
                capacity,
                prefetch,
                consumers,
                priorities,
                // No expiry in crash cases (see `queue_durable.rs`).
                ttl: ttl.filter(|_| mode != Mode::Crash),
                dead_letters,
                mode,
            },
        )
}

pub(super) fn q_op() -> impl Strategy<Value = QOp> {
    prop_oneof![
        4 => any::<u32>().prop_map(QOp::Send),
        2 => (
            any::<u32>(),
            0..5u8,
            prop_oneof![Just(None), (0..=8u64).prop_map(Some)],
            prop_oneof![Just(None), (1..=40u64).prop_map(Some)],
        )
            .prop_map(|(payload, priority, delay, ttl)| QOp::SendTimed {
                payload,
                priority,
                delay,
                ttl
            }),
        6 => (0..3usize).prop_map(QOp::Recv),
        3 => pick().prop_map(QOp::Ack),
        2 => pick().prop_map(QOp::Nack),
        1 => (pick(), 0..=6u64).prop_map(|(i, s)| QOp::NackAfter(i, s)),
        1 => pick().prop_map(QOp::DropMessage),
        1 => (0..3usize).prop_map(QOp::DropConsumer),
        3 => prop_oneof![Just(1u64), Just(2), Just(5), Just(29), Just(30), Just(31), 0..=45u64]
            .prop_map(QOp::AdvanceClock),
        1 => Just(QOp::Purge),
        1 => (0..=5usize).prop_map(QOp::Peek),
        1 => (1..=3usize).prop_map(QOp::Redrive),
        1 => Just(QOp::Reopen),
        1 => (torn(), prop_oneof![Just(None), (0..=2u8).prop_map(Some)])
            .prop_map(|(torn, mid_send)| QOp::Kill { torn, mid_send }),
    ]
}

/// Why a message left without an ack (the dead-letter reason header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Nack,
    Dropped,
    Timeout,
    Expired,
}

impl Why {
    fn header(self) -> &'static str {
        match self {
            Self::Nack => "nack",
            Self::Dropped => "dropped",
            Self::Timeout => "ack-timeout",
            Self::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct QItem {
    /// The queue's sequence number (`Message::offset`).
    id: u64,
    payload: u32,
    /// Clock seconds at the original send (kept by dead letters and redrives).
    sent_at: u64,
    /// Deliveries so far.
    count: u32,
    /// Its priority level.
    level: usize,
    /// Clock seconds at which it expires, if ever.
    expires: Option<u64>,
    /// Clock seconds at which its delay (`Record::delay`) ends, if it has one: stored with it.
    due: Option<u64>,
    /// The dead-letter headers it carries, oldest first: (reason, deliveries).
    letters: Vec<(Why, u32)>,
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

/// The queue as the contract and `src/engine/queue/` describe it.
#[derive(Debug)]
struct QueueModel {
    capacity: usize,
    prefetch: Option<u32>,
    ttl: Option<u64>,
    dead_letters: bool,
    now: u64,
    next_id: u64,
    /// Ready messages by priority level (index = level), each in delivery order.
    ready: Vec<VecDeque<QItem>>,
    /// Messages waiting out a delay or a backoff, by (due, id).
    waiting: BTreeMap<(u64, u64), QItem>,
    /// Every delivery, by delivery number.
    deliveries: Vec<QDelivery>,
    /// The dead-letter queue's ready messages, with its sequence numbers, in order.
    dead: VecDeque<(u64, QItem)>,
    dead_next_id: u64,
    /// Messages this queue moved to the dead-letter queue (`dead_lettered()`).
    dead_lettered: u64,
    /// Expired messages dropped (no dead-letter queue: `expired()`).
    expired: u64,
    acked: usize,
    /// Nacks of live deliveries (stats).
    nacked: u64,
    purged: usize,
    /// Messages sent, plus those the queue held when this run opened it.
    sent: usize,
    redriven: usize,
    /// What the store holds for sure, and what it may hold since (durable modes).
    journal: Journal,
    /// Consumers dropped so far (a late settle of what they held says so).
    dropped: BTreeSet<u64>,
}

impl QueueModel {
    fn new(setup: &QSetup) -> Self {
        let levels = setup.priorities.unwrap_or(1) as usize;
        Self {
            capacity: setup.capacity,
            prefetch: setup.prefetch,
            ttl: setup.ttl,
            dead_letters: setup.dead_letters,
            now: 0,
            next_id: 0,
            ready: (0..levels).map(|_| VecDeque::new()).collect(),
            waiting: BTreeMap::new(),
            deliveries: Vec::new(),
            dead: VecDeque::new(),
            dead_next_id: 0,
            dead_lettered: 0,
            expired: 0,
            acked: 0,
            nacked: 0,
            purged: 0,
            sent: 0,
            redriven: 0,
            dropped: BTreeSet::new(),
            journal: Journal::default(),
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

    fn ready_len(&self) -> usize {
        self.ready.iter().map(VecDeque::len).sum()
    }

    fn in_flight(&self) -> usize {
        self.deliveries.iter().filter(|d| d.live).count()
    }

    fn occupied(&self) -> usize {
        self.ready_len() + self.waiting.len() + self.in_flight()
    }

    /// Ready messages in delivery order, then waiting ones in due order.
    fn in_order(&self) -> Vec<&QItem> {
        let ready = self.ready.iter().rev().flatten();
        ready.chain(self.waiting.values()).collect()
    }

    fn level(&self, priority: u8) -> usize {
        (priority as usize).min(self.ready.len() - 1)
    }

    /// Queues a message that is not in flight: what fell due goes ahead of it; it waits if
    /// it is not due yet.
    /// An expiry time already past counts from now (the engine files it on its monotonic
    /// clock, measured from the enqueue), so it orders with those expiring now.
    fn enqueue(&mut self, mut item: QItem, due: Option<u64>) {
        self.promote();
        item.expires = item.expires.map(|at| at.max(self.now));
        match due {
            Some(due) if due > self.now => {
                self.waiting.insert((due, item.id), item);
            }
            _ => self.ready[item.level].push_back(item),
        }
    }

    /// `Some(sequence number)` if there is room.
    fn send(
        &mut self,
        payload: u32,
        priority: u8,
        delay: Option<u64>,
        ttl: Option<u64>,
    ) -> Option<u64> {
        if self.occupied() >= self.capacity {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.sent += 1;
        let expires = ttl.into_iter().chain(self.ttl).min().map(|t| self.now + t);
        let item = QItem {
            id,
            payload,
            sent_at: self.now,
            count: 0,
            level: self.level(priority),
            expires,
            due: delay.map(|d| self.now + d),
            letters: Vec::new(),
        };
        let due = item.due;
        self.enqueue(item, due);
        // The send returned after its commit, which carried everything recorded before it.
        self.journal.barrier(self.stored_now());
        Some(id)
    }

    /// Moves a message to the dead-letter queue.
    fn dead_letter(&mut self, mut item: QItem, why: Why) {
        let (id, count) = (item.id, item.count);
        item.letters.push((why, item.count));
        item.due = None;
        self.journal.log(Ev::Move {
            to_dlq: true,
            id,
            to_id: self.dead_next_id,
            item: item.clone(),
            count,
        });
        self.dead.push_back((self.dead_next_id, item));
        self.dead_next_id += 1;
    }

    /// An expired message: to the dead-letter queue, or dropped and counted.
    fn expire_item(&mut self, item: QItem) {
        if self.dead_letters {
            self.dead_lettered += 1;
            self.dead_letter(item, Why::Expired);
        } else {
            self.expired += 1;
            self.journal.log(Ev::Remove {
                id: item.id,
                count: item.count,
            });
        }
    }

    /// Ends delivery `d` without an ack (nothing if it already ended): it expires, is
    /// dead-lettered, or is ready again after `wait` seconds (the backoff's, if `None`).
    fn release(&mut self, d: usize, why: Why, wait: Option<u64>) {
        let delivery = &mut self.deliveries[d];
        if !delivery.live {
            return;
        }
        delivery.live = false;
        delivery.why = Some(why);
        self.nacked += u64::from(why == Why::Nack);
        let item = delivery.item.clone();
        if item.expires.is_some_and(|at| at <= self.now) {
            self.expire_item(item);
            return;
        }
        if self.dead_letters && item.count >= MAX_DELIVERIES {
            self.dead_lettered += 1;
            self.dead_letter(item, why);
            return;
        }
        let wait = wait.unwrap_or_else(|| backoff_secs(item.count));
        if wait == 0 {
            self.ready[item.level].push_front(item);
        } else {
            self.waiting.insert((self.now + wait, item.id), item);
        }
    }

    /// Makes what is due ready: first deliveries at the back of their level in due order,
    /// redeliveries in front, the earliest due first.
    fn promote(&mut self) {
        let due: Vec<(u64, u64)> = self
            .waiting
            .range(..(self.now + 1, 0))
            .map(|(k, _)| *k)
            .collect();
        let mut again = Vec::new();
        for key in due {
            let item = self.waiting.remove(&key).unwrap();
            if item.count > 0 {
                again.push(item);
            } else {
                self.ready[item.level].push_back(item);
            }
        }
        for item in again.into_iter().rev() {
            self.ready[item.level].push_front(item);
        }
    }

    /// What time does by itself: due messages become ready, expired ones leave (in expiry
    /// order), then deliveries past their ack deadline are released, newest first (so the
    /// oldest ends in front).
    fn expire(&mut self) {
        self.promote();
        let mut gone: Vec<(u64, u64)> = self
            .in_order()
            .into_iter()
            .filter_map(|i| i.expires.filter(|&at| at <= self.now).map(|at| (at, i.id)))
            .collect();
        gone.sort_unstable();
        for (_, id) in gone {
            let item = self.take(id);
            self.expire_item(item);
        }
        let timed_out: Vec<usize> = (0..self.deliveries.len())
            .filter(|&d| self.deliveries[d].live && self.deliveries[d].deadline <= self.now)
            .collect();
        for d in timed_out.into_iter().rev() {
            self.release(d, Why::Timeout, None);
        }
    }

    /// Takes message `id` out of the ready lists or the waiting ones.
    fn take(&mut self, id: u64) -> QItem {
        if let Some(key) = self.waiting.keys().find(|k| k.1 == id).copied() {
            return self.waiting.remove(&key).unwrap();
        }
        for level in &mut self.ready {
            if let Some(at) = level.iter().position(|i| i.id == id) {
                return level.remove(at).unwrap();
            }
        }
        unreachable!("message {id} is neither ready nor waiting")
    }

    /// The delivery `consumer`'s `try_recv` gets, if any.
    fn recv(&mut self, consumer: u64) -> Option<(usize, QItem)> {
        self.expire();
        if self.ready_len() == 0 {
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
        let mut item = self.ready.iter_mut().rev().find_map(VecDeque::pop_front)?;
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
            let (id, count) = (delivery.item.id, delivery.item.count);
            self.journal.log(Ev::Remove { id, count });
        }
    }

    /// A dropped consumer's deliveries are released, newest first.
    fn drop_consumer(&mut self, consumer: u64) {
        self.expire();
        self.dropped.insert(consumer);
        let held: Vec<usize> = (0..self.deliveries.len())
            .filter(|&d| self.deliveries[d].live && self.deliveries[d].consumer == consumer)
            .collect();
        for d in held.into_iter().rev() {
            self.release(d, Why::Dropped, None);
        }
    }

    fn advance(&mut self, secs: u64) {
        self.now += secs;
        self.expire();
    }

    /// Removes every message that is not in flight; returns how many.
    fn purge(&mut self) -> usize {
        self.expire();
        let n = self.ready_len() + self.waiting.len();
        let gone: Vec<(u64, u32)> = self.in_order().iter().map(|i| (i.id, i.count)).collect();
        for (id, count) in gone {
            self.journal.log(Ev::Remove { id, count });
        }
        self.ready.iter_mut().for_each(VecDeque::clear);
        self.waiting.clear();
        self.purged += n;
        n
    }

    /// Moves up to `limit` dead letters back, while there is room; returns how many.
    fn redrive(&mut self, limit: usize) -> usize {
        let mut moved = 0;
        while moved < limit && self.occupied() < self.capacity {
            let Some((from, letter)) = self.dead.pop_front() else {
                break;
            };
            let id = self.next_id;
            self.next_id += 1;
            let item = QItem {
                id,
                count: 0,
                level: 0,
                expires: self.ttl.map(|t| letter.sent_at + t),
                due: None,
                ..letter
            };
            self.journal.log(Ev::Move {
                to_dlq: false,
                id: from,
                to_id: id,
                item: item.clone(),
                count: 0,
            });
            self.enqueue(item, None);
            self.redriven += 1;
            moved += 1;
        }
        moved
    }
}

//! The queue model: one queue, its dead-letter queue, competing consumers, a manual clock.

use super::*;

// ---------------------------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------------------------

const ACK_TIMEOUT_SECS: u64 = 30;
const MAX_DELIVERIES: u32 = 3;

#[derive(Debug, Clone)]
pub(super) enum QOp {
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
pub(super) struct QSetup {
    capacity: usize,
    prefetch: Option<u32>,
    consumers: usize,
}

pub(super) fn q_setup() -> impl Strategy<Value = QSetup> {
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

pub(super) fn q_op() -> impl Strategy<Value = QOp> {
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

pub(super) fn run_queue(setup: QSetup, ops: Vec<QOp>) -> Result<(), TestCaseError> {
    let mut rig = QueueRig::new(&setup);
    rig.check(0, &"start")?;
    for (step, op) in ops.iter().enumerate() {
        rig.apply(op, step)?;
        rig.check(step, op)?;
    }
    rig.finish()
}

//! The queue rig: a broker, its queue, dead-letter queue and consumers, driven op by op next
//! to the model, every observable compared after every step.

use super::*;

/// The system under test, next to its model.
pub(super) struct QueueRig {
    pub(super) setup: QSetup,
    pub(super) storage: Storage,
    pub(super) clock: ManualClock,
    pub(super) start: SystemTime,
    pub(super) bus: Broker,
    pub(super) queue: Queue<u32>,
    pub(super) dlq: Queue<u32>,
    pub(super) consumers: Vec<(u64, Consumer<u32>)>,
    pub(super) next_consumer: u64,
    /// Deliveries the test holds, with their delivery numbers in the model.
    pub(super) held: Vec<(Message<u32>, usize)>,
    pub(super) model: QueueModel,
}

impl QueueRig {
    pub(super) fn new(setup: &QSetup) -> Self {
        let clock = ManualClock::new();
        let start = clock.now();
        let storage = Storage::new(setup.mode, clock.clone());
        let (bus, queue, dlq) = Self::attach(&storage, setup);
        let consumers = (0..setup.consumers as u64)
            .map(|id| (id, queue.consumer()))
            .collect();
        let mut model = QueueModel::new(setup);
        model.journal.on = setup.mode == Mode::Crash;
        Self {
            setup: setup.clone(),
            storage,
            clock,
            start,
            bus,
            queue,
            dlq,
            consumers,
            next_consumer: setup.consumers as u64,
            held: Vec::new(),
            model,
        }
    }

    /// Opens a broker on the storage and declares the queue and its dead-letter queue.
    pub(super) fn attach(storage: &Storage, setup: &QSetup) -> (Broker, Queue<u32>, Queue<u32>) {
        let bus = storage.open();
        let mut options = QueueOptions::default()
            .capacity(setup.capacity)
            .ack_timeout(Duration::from_secs(ACK_TIMEOUT_SECS))
            .backoff(Backoff::schedule(BACKOFF_SECS.map(Duration::from_secs)));
        if setup.dead_letters {
            options = options.max_deliveries(MAX_DELIVERIES).dead_letter("dlq");
        }
        if let Some(n) = setup.prefetch {
            options = options.prefetch(n);
        }
        if let Some(n) = setup.priorities {
            options = options.priorities(n);
        }
        if let Some(secs) = setup.ttl {
            options = options.message_ttl(Duration::from_secs(secs));
        }
        let queue = bus.queue_with::<u32>("jobs", options).unwrap();
        let dlq = bus.queue::<u32>("dlq").unwrap();
        (bus, queue, dlq)
    }

    /// Drops every handle of the old broker (what they held ends with it) and opens the
    /// storage again, with new consumers.
    pub(super) fn replace_broker(&mut self) {
        let (bus, queue, dlq) = Self::attach(&self.storage, &self.setup);
        let old_bus = std::mem::replace(&mut self.bus, bus);
        let old_queue = std::mem::replace(&mut self.queue, queue);
        let old_dlq = std::mem::replace(&mut self.dlq, dlq);
        drop(std::mem::take(&mut self.held));
        let mut fresh = Vec::new();
        for _ in 0..self.consumers.len() {
            fresh.push((self.next_consumer, self.queue.consumer()));
            self.next_consumer += 1;
        }
        drop(std::mem::replace(&mut self.consumers, fresh));
        drop((old_queue, old_dlq, old_bus));
    }

    /// Checks a received message against the model's delivery.
    pub(super) fn check_message(
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
        )?;
        check_letters(msg.headers(), &item.letters, step, op)
    }

    /// One `try_recv` on consumer `c`, checked against the model; the delivery is held.
    pub(super) fn recv(
        &mut self,
        c: usize,
        step: usize,
        op: &dyn Debug,
    ) -> Result<bool, TestCaseError> {
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

    pub(super) fn send(
        &mut self,
        record: Record<u32>,
        want: Option<u64>,
        step: usize,
        op: &QOp,
    ) -> Result<(), TestCaseError> {
        let v = *record.payload();
        match (self.queue.producer().try_send_record(record), want) {
            (Ok(receipt), Some(id)) => same(
                (receipt.partition, receipt.offset),
                (0, id),
                "receipt",
                step,
                op,
            ),
            (Err(TrySendError::Full(back)), None) => {
                same(*back.payload(), v, "payload handed back", step, op)
            }
            (got, want) => Err(TestCaseError::fail(format!(
                "step {step} ({op:?}): got {got:?}, model expects {want:?}"
            ))),
        }
    }

    pub(super) fn apply(&mut self, op: &QOp, step: usize) -> Result<(), TestCaseError> {
        self.model.journal.begin();
        match *op {
            QOp::Send(v) => {
                let want = self.model.send(v, 0, None, None);
                self.send(Record::new(v), want, step, op)?;
            }
            QOp::SendTimed {
                payload,
                priority,
                delay,
                ttl,
            } => {
                // No expiry in crash cases (see `queue_durable.rs`).
                let ttl = ttl.filter(|_| self.setup.mode != Mode::Crash);
                let want = self.model.send(payload, priority, delay, ttl);
                let mut record = Record::new(payload).priority(priority);
                if let Some(secs) = delay {
                    record = record.delay(Duration::from_secs(secs));
                }
                if let Some(secs) = ttl {
                    record = record.ttl(Duration::from_secs(secs));
                }
                self.send(record, want, step, op)?;
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
            QOp::Nack(i) | QOp::NackAfter(i, _) => {
                if !self.held.is_empty() {
                    let (msg, d) = self.held.remove(i.index(self.held.len()));
                    let (got, wait) = match *op {
                        QOp::NackAfter(_, secs) => {
                            (msg.nack_after(Duration::from_secs(secs)), Some(secs))
                        }
                        _ => (msg.nack(), None),
                    };
                    self.model.expire(); // the nack sees timeouts first
                    same_settle(got, self.model.settle_result(d), "nack", step, op)?;
                    self.model.release(d, Why::Nack, wait);
                }
            }
            QOp::DropMessage(i) => {
                if !self.held.is_empty() {
                    let (msg, d) = self.held.remove(i.index(self.held.len()));
                    drop(msg);
                    self.model.expire();
                    self.model.release(d, Why::Dropped, None);
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
            QOp::Purge => {
                let got = self.queue.purge().unwrap();
                same(got, self.model.purge(), "purge()", step, op)?;
            }
            QOp::Peek(n) => {
                let got: Vec<(u32, u64, u32)> = self
                    .queue
                    .peek(n)
                    .iter()
                    .map(|m| (*m.payload(), m.offset(), m.delivery_count()))
                    .collect();
                self.model.expire();
                let want: Vec<(u32, u64, u32)> = self
                    .model
                    .in_order()
                    .into_iter()
                    .take(n)
                    .map(|i| (i.payload, i.id, i.count))
                    .collect();
                same(got, want, "peek(n)", step, op)?;
            }
            QOp::Reopen => self.reopen(step, op)?,
            QOp::Kill { torn, mid_send } => match self.setup.mode {
                Mode::Memory => {}
                Mode::Durable => self.reopen(step, op)?,
                Mode::Crash => self.kill(torn, mid_send, step, op)?,
            },
            QOp::Redrive(n) => {
                if self.model.dead_letters {
                    let got = self.dlq.redrive(&self.queue, n).unwrap();
                    self.model.expire();
                    same(got, self.model.redrive(n), "redrive()", step, op)?;
                }
            }
        }
        Ok(())
    }

    /// Compares every observable with the model.
    pub(super) fn check(&mut self, step: usize, op: &dyn Debug) -> Result<(), TestCaseError> {
        let len = self.queue.len(); // processes what time did, as the model now does
        self.model.expire();
        let m = &self.model;
        same(len, m.ready_len(), "queue.len()", step, op)?;
        same(
            self.queue.is_empty(),
            m.ready_len() == 0,
            "is_empty",
            step,
            op,
        )?;
        same(self.queue.delayed(), m.waiting.len(), "delayed()", step, op)?;
        same(
            self.queue.in_flight(),
            m.in_flight(),
            "in_flight()",
            step,
            op,
        )?;
        same(
            self.queue.dead_lettered(),
            m.dead_lettered,
            "dead_lettered()",
            step,
            op,
        )?;
        same(self.queue.expired(), m.expired, "expired()", step, op)?;
        same(self.dlq.len(), m.dead.len(), "dlq.len()", step, op)?;
        same(self.dlq.in_flight(), 0, "dlq.in_flight()", step, op)?;
        let stats = self.bus.stats();
        let q = stats.queue("jobs").expect("the queue is in the snapshot");
        let got = (q.ready, q.delayed, q.in_flight, q.dead_lettered, q.expired);
        let want = (
            m.ready_len() as u64,
            m.waiting.len() as u64,
            m.in_flight() as u64,
            m.dead_lettered,
            m.expired,
        );
        same(
            got,
            want,
            "stats: ready, delayed, in flight, dead, expired",
            step,
            op,
        )?;
        let got = (q.acked, q.nacked, q.consumers);
        let want = (m.acked as u64, m.nacked, self.consumers.len() as u64);
        same(got, want, "stats: acked, nacked, consumers", step, op)?;
        let dlq = stats.queue("dlq").expect("the dead-letter queue");
        same(dlq.ready, m.dead.len() as u64, "stats: dlq ready", step, op)?;
        for (_, consumer) in &self.consumers {
            same(
                consumer.lag(),
                m.ready_len() as u64,
                "consumer.lag()",
                step,
                op,
            )?;
        }
        Ok(())
    }

    /// Settles everything, drains the queue and checks the dead-letter queue's contents.
    pub(super) fn finish(mut self) -> Result<(), TestCaseError> {
        let op = &"final drain";
        for (msg, d) in std::mem::take(&mut self.held) {
            let got = msg.ack();
            self.model.expire();
            same_settle(got, self.model.settle_result(d), "ack", usize::MAX, op)?;
            self.model.ack(d);
        }
        self.check(usize::MAX, op)?;
        // Whatever waits comes due (and what has a time-to-live expires) within a minute.
        self.clock.advance(Duration::from_secs(60));
        self.model.advance(60);
        self.check(usize::MAX, op)?;
        while self.recv(0, usize::MAX, op)? {
            let (msg, d) = self.held.pop().unwrap();
            msg.ack().unwrap();
            self.model.ack(d);
        }
        self.check(usize::MAX, op)?;
        prop_assert_eq!(
            self.queue.len() + self.queue.in_flight() + self.queue.delayed(),
            0
        );
        let m = &self.model;
        prop_assert_eq!(
            m.sent + m.redriven,
            m.acked + m.purged + m.expired as usize + m.dead_lettered as usize,
            "every message sent or redriven was acked, purged, dropped as expired or \
             dead-lettered"
        );
        let mut dead = self.dlq.consumer();
        for (i, (id, item)) in self.model.dead.iter().enumerate() {
            let msg = dead.try_recv();
            prop_assert!(msg.is_ok(), "dead letter {} ({:?}): {:?}", i, item, msg);
            let msg = msg.unwrap();
            prop_assert_eq!(
                (*msg.payload(), msg.offset(), msg.delivery_count()),
                (item.payload, *id, 1),
                "dead letter {}",
                i
            );
            prop_assert_eq!(
                msg.timestamp(),
                self.start + Duration::from_secs(item.sent_at),
                "dead letter {} keeps its timestamp",
                i
            );
            check_letters(msg.headers(), &item.letters, i, op)?;
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

/// Checks the dead-letter headers a message carries, oldest first.
fn check_letters(
    headers: &Headers,
    letters: &[(Why, u32)],
    step: usize,
    op: &dyn Debug,
) -> Result<(), TestCaseError> {
    let values = |name: &str| -> Vec<Vec<u8>> {
        headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.to_vec())
            .collect()
    };
    same(
        values(DEAD_LETTER_QUEUE),
        vec![b"jobs".to_vec(); letters.len()],
        "dead-letter queue headers",
        step,
        op,
    )?;
    same(
        values(DEAD_LETTER_REASON),
        letters
            .iter()
            .map(|(why, _)| why.header().as_bytes().to_vec())
            .collect(),
        "dead-letter reason headers",
        step,
        op,
    )?;
    same(
        values(DEAD_LETTER_DELIVERIES),
        letters
            .iter()
            .map(|(_, n)| n.to_string().into_bytes())
            .collect(),
        "dead-letter delivery headers",
        step,
        op,
    )
}

pub(crate) fn run_queue(setup: QSetup, ops: Vec<QOp>) -> Result<(), TestCaseError> {
    bump(|f| {
        f.cases += 1;
        f.durable += u64::from(setup.mode != Mode::Memory);
        f.steps += ops.len() as u64;
    });
    let mut rig = QueueRig::new(&setup);
    rig.check(0, &"start")?;
    for (step, op) in ops.iter().enumerate() {
        rig.apply(op, step)?;
        rig.check(step, op)?;
    }
    rig.finish()
}

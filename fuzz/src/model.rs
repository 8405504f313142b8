//! The model operations: a sequence of queue operations (send, receive, ack, nack, drop a
//! delivery or a consumer, advance the clock, close and reopen) on a durable broker whose file
//! is redb's in-memory backend, with a queue of capacity 8, a 30 s ack timeout and 3
//! deliveries before the dead-letter queue. After every step the counts must add up; at the
//! end every message sent and not acked is still there, exactly once.

use std::collections::BTreeSet;
use std::time::Duration;

use arbitrary::Arbitrary;
use embus::{Broker, Consumer, Error, ManualClock, Message, Queue, QueueOptions, TrySendError};

use crate::Shared;

const ACK_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_DELIVERIES: u32 = 3;
const CAPACITY: usize = 8;

/// One step.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `try_send` 1 to 3 messages.
    Send(u8),
    /// `try_recv` on consumer 0 or 1.
    Recv(bool),
    /// Ack the held delivery at this index (modulo how many are held).
    Ack(u8),
    /// Nack it.
    Nack(u8),
    /// Drop it.
    Drop(u8),
    /// Drop consumer 0 or 1 (it comes back empty).
    DropConsumer(bool),
    /// Advance the clock by this many seconds (modulo 40).
    Advance(u8),
    /// Close the broker and open the store again.
    Reopen,
}

/// A delivery this test holds, with the clock's time when it was received.
struct Held {
    id: u64,
    message: Message<u64>,
    at: Duration,
    consumer: usize,
}

struct World {
    clock: ManualClock,
    now: Duration,
    backend: Shared,
    bus: Broker,
    queue: Queue<u64>,
    dead: Queue<u64>,
    consumers: [Option<Consumer<u64>>; 2],
    held: Vec<Held>,
    next_id: u64,
    /// Sent and not acked (in the queue, in flight, waiting, or dead-lettered).
    outstanding: BTreeSet<u64>,
}

fn open(clock: &ManualClock, backend: &Shared) -> (Broker, Queue<u64>, Queue<u64>) {
    let bus = Broker::builder()
        .path("model.embus")
        .clock(clock.clone())
        .storage_backend(backend.clone())
        .cache_size(1 << 20)
        .open()
        .expect("open the store");
    let queue = bus
        .queue_with::<u64>(
            "q",
            QueueOptions::default()
                .capacity(CAPACITY)
                .ack_timeout(ACK_TIMEOUT)
                .max_deliveries(MAX_DELIVERIES)
                .dead_letter("dlq"),
        )
        .expect("declare q");
    let dead = bus.queue::<u64>("dlq").expect("declare dlq");
    (bus, queue, dead)
}

/// Runs `ops`, panicking on the first broken promise.
pub fn run(ops: &[Op]) {
    let clock = ManualClock::new();
    let backend = Shared::default();
    let (bus, queue, dead) = open(&clock, &backend);
    let consumers = [Some(queue.consumer()), Some(queue.consumer())];
    let mut w = World {
        clock,
        now: Duration::ZERO,
        backend,
        bus,
        queue,
        dead,
        consumers,
        held: Vec::new(),
        next_id: 0,
        outstanding: BTreeSet::new(),
    };
    for (step, op) in ops.iter().take(200).enumerate() {
        w.apply(*op);
        w.check(step, op);
    }
    w.finish();
}

impl World {
    /// Whether the held delivery received at `at` is past its ack timeout (`Some(true)`),
    /// inside it (`Some(false)`), or exactly on it (`None`: either is right).
    fn expired(&self, at: Duration) -> Option<bool> {
        let age = self.now - at;
        (age != ACK_TIMEOUT).then_some(age > ACK_TIMEOUT)
    }

    fn take(&mut self, index: u8) -> Option<Held> {
        (!self.held.is_empty()).then(|| self.held.swap_remove(usize::from(index) % self.held.len()))
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Send(n) => {
                let producer = self.queue.producer();
                for _ in 0..=n % 3 {
                    let id = self.next_id;
                    match producer.try_send(id) {
                        Ok(_) => {
                            self.next_id += 1;
                            self.outstanding.insert(id);
                        }
                        Err(TrySendError::Full(back)) => {
                            assert_eq!(back, id, "Full gave back another message")
                        }
                        Err(e) => panic!("try_send failed: {e}"),
                    }
                }
            }
            Op::Recv(which) => {
                let which = usize::from(which);
                let Some(consumer) = self.consumers[which].as_mut() else {
                    return;
                };
                match consumer.try_recv() {
                    Ok(message) => {
                        let id = *message.payload();
                        assert!(
                            self.outstanding.contains(&id),
                            "received {id}, which was acked or never sent"
                        );
                        let count = message.delivery_count();
                        assert!(
                            (1..=MAX_DELIVERIES).contains(&count),
                            "delivery count {count} of {id}"
                        );
                        for h in self.held.iter().filter(|h| h.id == id) {
                            assert_ne!(
                                self.expired(h.at),
                                Some(false),
                                "{id} delivered twice while its first delivery is live"
                            );
                        }
                        self.held.push(Held {
                            id,
                            message,
                            at: self.now,
                            consumer: which,
                        });
                    }
                    Err(embus::TryRecvError::Empty) => {}
                    Err(e) => panic!("try_recv failed: {e}"),
                }
            }
            Op::Ack(i) => {
                let Some(h) = self.take(i) else { return };
                let expired = self.expired(h.at);
                match h.message.ack() {
                    Ok(()) => {
                        assert_ne!(
                            expired,
                            Some(true),
                            "ack of {} past its timeout succeeded",
                            h.id
                        );
                        assert!(self.outstanding.remove(&h.id), "{} acked twice", h.id);
                    }
                    Err(Error::DeliveryEnded { .. }) => {
                        assert_ne!(expired, Some(false), "ack of live delivery {} ended", h.id);
                    }
                    Err(e) => panic!("ack failed: {e}"),
                }
            }
            Op::Nack(i) => {
                let Some(h) = self.take(i) else { return };
                let expired = self.expired(h.at);
                match h.message.nack() {
                    Ok(()) => assert_ne!(
                        expired,
                        Some(true),
                        "nack of {} past its timeout succeeded",
                        h.id
                    ),
                    Err(Error::DeliveryEnded { .. }) => {
                        assert_ne!(expired, Some(false), "nack of live delivery {} ended", h.id);
                    }
                    Err(e) => panic!("nack failed: {e}"),
                }
            }
            Op::Drop(i) => drop(self.take(i)),
            Op::DropConsumer(which) => {
                // Deliveries of a dropped consumer end: forget them.
                let which = usize::from(which);
                self.consumers[which] = None;
                self.held.retain(|h| h.consumer != which);
                self.consumers[which] = Some(self.queue.consumer());
            }
            Op::Advance(secs) => {
                let by = Duration::from_secs(u64::from(secs % 40));
                self.clock.advance(by);
                self.now += by;
            }
            Op::Reopen => self.reopen(),
        }
    }

    fn reopen(&mut self) {
        self.held.clear();
        self.consumers = [None, None];
        // Close first: two brokers on one backend would share the file.
        let placeholder = Broker::memory();
        let old = std::mem::replace(&mut self.bus, placeholder.clone());
        self.queue = placeholder.queue("q").expect("placeholder");
        self.dead = placeholder.queue("dlq").expect("placeholder");
        old.close().expect("close the store");
        let (bus, queue, dead) = open(&self.clock, &self.backend);
        (self.bus, self.queue, self.dead) = (bus, queue, dead);
        self.consumers = [Some(self.queue.consumer()), Some(self.queue.consumer())];
    }

    /// The counts after a step.
    fn check(&self, step: usize, op: &Op) {
        let (q, d) = (&self.queue, &self.dead);
        let total = q.len() + q.in_flight() + q.delayed() + d.len() + d.in_flight() + d.delayed();
        assert_eq!(
            total,
            self.outstanding.len(),
            "step {step} ({op:?}): ready {} + in flight {} + waiting {} + dead letters {} != {} \
             sent and not acked",
            q.len(),
            q.in_flight(),
            q.delayed(),
            d.len(),
            self.outstanding.len()
        );
        let live = self
            .held
            .iter()
            .filter(|h| self.expired(h.at) == Some(false))
            .count();
        let edge = self
            .held
            .iter()
            .filter(|h| self.expired(h.at).is_none())
            .count();
        assert!(
            (live..=live + edge).contains(&q.in_flight()),
            "step {step} ({op:?}): in flight {}, held live {live} (+{edge} on the timeout)",
            q.in_flight()
        );
        let stats = self.bus.stats();
        let s = stats.queue("q").expect("q in stats");
        assert_eq!(
            (s.ready, s.in_flight, s.delayed, s.dead_lettered),
            (
                q.len() as u64,
                q.in_flight() as u64,
                q.delayed() as u64,
                q.dead_lettered()
            ),
            "step {step} ({op:?}): stats disagree with the queue"
        );
        let s = stats.queue("dlq").expect("dlq in stats");
        assert_eq!(
            s.ready,
            d.len() as u64,
            "step {step}: stats disagree with the dead letters"
        );
    }

    /// Closes and reopens, then drains both queues: every outstanding message is there once.
    fn finish(mut self) {
        self.reopen();
        self.clock.advance(Duration::from_secs(3_600));
        let mut seen = BTreeSet::new();
        for queue in [self.queue.clone(), self.dead.clone()] {
            let mut consumer = queue.consumer();
            loop {
                match consumer.try_recv() {
                    Ok(message) => {
                        let id = *message.payload();
                        assert!(seen.insert(id), "{id} delivered twice while draining");
                        message.ack().expect("ack while draining");
                    }
                    Err(embus::TryRecvError::Empty) => break,
                    Err(e) => panic!("draining {}: {e}", queue.name()),
                }
            }
        }
        assert_eq!(
            seen, self.outstanding,
            "after a reopen: what is left is not what was sent and not acked"
        );
        self.bus.close().expect("close");
    }
}

//! The end-to-end run: a producer thread sends batches for a window while a consumer thread
//! receives and acks each message, until it has acked all that was sent. [`e2e`] drives any
//! system's pair of threads (`benches/peers.rs` runs its peers through it); [`embus_queue`] and
//! [`embus_group`] are embus's two, the e2e sides of `benches/peers.rs` and `benches/durable.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use embus::{Broker, Consumer, Producer, QueueOptions};

use super::{BATCH, payload, unlimited_topic};

/// How long an e2e consumer waits for a message before it looks whether the producer has
/// stopped (what it adds to a run's end, at most).
pub const POLL: Duration = Duration::from_millis(2);
/// How long a run may wait for its consumer before the bench gives up.
pub const LIMIT: Duration = Duration::from_secs(120);

/// The two threads of an end-to-end run: they start together, the producer stops at the
/// deadline, and the consumer stops once it has acked all the producer sent.
pub struct Flow {
    barrier: Barrier,
    window: Duration,
    start: OnceLock<Instant>,
    /// What the producer sent, once it has stopped (`u64::MAX` until then).
    total: AtomicU64,
}

impl Flow {
    /// Waits until both threads are connected; returns when the producer stops sending.
    pub fn go(&self) -> Instant {
        self.barrier.wait();
        let now = Instant::now();
        *self.start.get_or_init(|| now) + self.window
    }

    /// Whether a consumer that has acked `acked` messages is done.
    pub fn done(&self, acked: u64) -> bool {
        acked >= self.total.load(Ordering::Acquire)
    }

    /// Panics once a consumer has waited too long (a lost message).
    pub fn check(&self, acked: u64) {
        let start = self.start.get().copied().unwrap_or_else(Instant::now);
        assert!(
            start.elapsed() < LIMIT,
            "the consumer acked {acked} of {} in {LIMIT:?}",
            self.total.load(Ordering::Acquire)
        );
    }
}

/// What an end-to-end run did.
pub struct Tally {
    /// Messages sent, all of them acked.
    pub sent: u64,
    /// When both threads started.
    pub start: Instant,
    /// When the consumer acked the last one.
    pub end: Instant,
}

impl Tally {
    /// Messages per second from the start to the last ack.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.end.duration_since(self.start).as_secs_f64()
    }
}

/// Runs `produce` and `consume` on two threads; each connects, calls [`Flow::go`], then sends
/// until the deadline (returning how many it sent) or receives and acks until [`Flow::done`]
/// (returning how many it acked).
pub fn e2e(
    window: Duration,
    produce: impl FnOnce(&Flow) -> u64 + Send,
    consume: impl FnOnce(&Flow) -> u64 + Send,
) -> Tally {
    let flow = Flow {
        barrier: Barrier::new(2),
        window,
        start: OnceLock::new(),
        total: AtomicU64::new(u64::MAX),
    };
    let (sent, (acked, end)) = std::thread::scope(|s| {
        let consumer = s.spawn(|| (consume(&flow), Instant::now()));
        let producer = s.spawn(|| {
            let sent = produce(&flow);
            flow.total.store(sent, Ordering::Release);
            sent
        });
        let sent = producer.join().expect("the producer thread");
        (sent, consumer.join().expect("the consumer thread"))
    });
    assert_eq!(acked, sent, "the consumer acked what the producer sent");
    let start = *flow.start.get().expect("started");
    Tally { sent, start, end }
}

/// Sends batches of [`BATCH`] from `from` until `deadline`; returns how many it sent.
pub fn send_until(producer: &Producer<Vec<u8>>, from: u64, deadline: Instant) -> u64 {
    let mut n = from;
    loop {
        let batch: Vec<Vec<u8>> = (n..n + BATCH as u64).map(payload).collect();
        if producer.send_batch(batch).is_err() {
            panic!("send_batch failed");
        }
        n += BATCH as u64;
        if Instant::now() >= deadline {
            return n - from;
        }
    }
}

/// Receives and acks until the flow is done; returns how many it acked.
fn ack_until(consumer: &mut Consumer<Vec<u8>>, flow: &Flow) -> u64 {
    let mut acked = 0;
    while !flow.done(acked) {
        match consumer.recv_timeout(POLL) {
            Ok(m) => {
                m.ack().expect("ack");
                acked += 1;
            }
            Err(embus::RecvTimeoutError::Timeout) => flow.check(acked),
            Err(e) => panic!("recv: {e}"),
        }
    }
    acked
}

/// One message sent, received and acked (untimed: the declarations ride its commit), then an
/// end-to-end run: `send_until` on one thread, `ack_until` on the other. The handles are
/// dropped on return; the broker stays open.
fn embus_run(
    producer: Producer<Vec<u8>>,
    mut consumer: Consumer<Vec<u8>>,
    window: Duration,
) -> Tally {
    producer.send(payload(0)).expect("warm send");
    consumer.recv().expect("warm recv").ack().expect("warm ack");
    e2e(
        window,
        |flow| send_until(&producer, 0, flow.go()),
        |flow| {
            flow.go();
            ack_until(&mut consumer, flow)
        },
    )
}

/// End to end through queue `bench` on `bus`, declared with room for the whole window's
/// backlog (the producer is not held back by the consumer).
pub fn embus_queue(bus: &Broker, window: Duration) -> Tally {
    let options = QueueOptions::default().capacity(4_000_000);
    let queue = bus
        .queue_with::<Vec<u8>>("bench", options)
        .expect("declare the queue");
    embus_run(queue.producer(), queue.consumer(), window)
}

/// End to end through topic `bench` on `bus` (an [`unlimited_topic`]), the consumer a member
/// of group `bench`.
pub fn embus_group(bus: &Broker, window: Duration) -> Tally {
    let topic = unlimited_topic(bus, "bench");
    let member = topic.join_group("bench").expect("join the group");
    embus_run(topic.producer(), member, window)
}

//! Point-to-point: [`Queue`], where each message goes to one consumer and is deleted once acked.
//!
//! # Ordering
//!
//! First deliveries go out in send order. A redelivered message goes back to the front of the
//! queue, so it is retried before newer messages, but after whatever was handed out meanwhile.
//!
//! # Redelivery
//!
//! A delivery ends with [`Message::ack`](crate::Message::ack) (the message is deleted) or without
//! one: [`Message::nack`](crate::Message::nack), dropping the message, dropping its consumer, or
//! the ack timeout passing on the broker's clock. Then the message is ready again and its
//! delivery count rises by one on the next delivery. Delivery is at-least-once.
//!
//! # Dead letters
//!
//! With [`QueueOptions::max_deliveries`](crate::QueueOptions::max_deliveries), a message whose
//! delivery number `max_deliveries` ends without an ack moves to the dead-letter queue (an
//! ordinary `Queue<T>`), keeping its payload, key, headers and timestamp, with headers added:
//! [`DEAD_LETTER_QUEUE`], [`DEAD_LETTER_REASON`] (`nack`, `dropped` or `ack-timeout`) and
//! [`DEAD_LETTER_DELIVERIES`].
//!
//! # Capacity
//!
//! A queue holds at most its capacity of unacked messages (ready plus in flight): `send` blocks
//! until an ack makes room and `try_send` hands the message back in
//! [`TrySendError::Full`](crate::TrySendError::Full).

mod consumer;
mod flight;

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Weak};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

pub(crate) use self::consumer::{ConsumerLink, QueueConsumer};
use self::flight::Ended;
pub(crate) use self::flight::{Item as QueueItem, Reason as ReleaseReason};
use self::flight::{Item, Reason};
use crate::broker::{Control, Life, Payload, Shared};
use crate::consumer::Consumer;
use crate::notify::{Backoff, Deadline, Wait, Waiters};
use crate::options::QueueOptions;
use crate::producer::{Fail, Producer};
use crate::record::{Entry, Headers, Meta, Nanos, Receipt, Record};
use crate::store::Progress;

/// Header naming the queue a dead letter came from.
pub const DEAD_LETTER_QUEUE: &str = "embus-dead-letter-queue";
/// Header saying why a message was dead-lettered: `nack`, `dropped` or `ack-timeout`.
pub const DEAD_LETTER_REASON: &str = "embus-dead-letter-reason";
/// Header with how many times the message was delivered before it was dead-lettered (decimal).
pub const DEAD_LETTER_DELIVERIES: &str = "embus-dead-letter-deliveries";

/// A handle to a queue. Cheap to clone; keeps the broker open.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use embus::{Broker, QueueOptions};
///
/// let bus = Broker::memory();
/// let jobs = bus.queue_with::<String>("jobs", QueueOptions::default().max_deliveries(2).dead_letter("jobs.dead"))?;
/// jobs.producer().send("flaky".to_string())?;
/// let mut worker = jobs.consumer();
/// worker.recv()?.nack()?;
/// worker.recv()?.nack()?; // second delivery fails too: dead-lettered
/// let dead = bus.queue::<String>("jobs.dead")?;
/// let d = dead.consumer().recv()?;
/// assert_eq!(d.headers().get(embus::DEAD_LETTER_REASON), Some(&b"nack"[..]));
/// # Ok(()) }
/// ```
pub struct Queue<T> {
    pub(crate) core: Arc<QueueCore<T>>,
    life: Arc<Life>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self {
            core: Arc::clone(&self.core),
            life: Arc::clone(&self.life),
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.core.name)
            .field("options", &self.core.options)
            .finish()
    }
}

impl<T: Payload> Queue<T> {
    pub(crate) fn new(core: Arc<QueueCore<T>>, life: Arc<Life>) -> Self {
        Self { core, life }
    }

    /// A producer for this queue.
    pub fn producer(&self) -> Producer<T> {
        Producer::queue(Arc::clone(&self.core), Arc::clone(&self.life))
    }

    /// A consumer. Consumers of one queue compete: each message goes to one of them.
    pub fn consumer(&self) -> Consumer<T> {
        Consumer::queue(QueueConsumer::new(&self.core))
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// The options the queue was created with.
    pub fn options(&self) -> &QueueOptions {
        &self.core.options
    }

    /// Messages ready for delivery (not counting those in flight).
    pub fn len(&self) -> usize {
        self.core.expire_due();
        self.core.ready_len()
    }

    /// Whether no message is ready (`len() == 0`; some may still be in flight).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages delivered and not yet acked, nacked or timed out.
    pub fn in_flight(&self) -> usize {
        self.core.expire_due();
        self.core.in_flight.load(Ordering::Acquire)
    }

    /// How many messages this queue has moved to its dead-letter queue so far.
    pub fn dead_lettered(&self) -> u64 {
        self.core.expire_due();
        self.core.dead_lettered.load(Ordering::Acquire)
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.core.options.capacity_limit()
    }
}

/// The outcome of asking for capacity.
enum Room {
    Reserved,
    Registered,
    Closed,
}

/// The engine of one queue.
///
/// First deliveries wait in a lock-free channel (crossbeam-channel), redeliveries in a short
/// `retry` list served first; each consumer keeps its own deliveries in flight behind a lock no
/// other consumer takes, so a send, a receive and an ack rarely meet on one lock. Counts are
/// atomics.
pub(crate) struct QueueCore<T> {
    pub(crate) name: String,
    pub(crate) options: QueueOptions,
    pub(crate) ack_timeout: Option<Nanos>,
    ready_tx: Sender<Item<T>>,
    ready_rx: Receiver<Item<T>>,
    /// Redeliveries, served before `ready`; front first.
    retry: Mutex<VecDeque<Item<T>>>,
    retry_len: AtomicUsize,
    next_id: AtomicU64,
    /// Queue-wide delivery order, so releases from several consumers requeue in order.
    pub(crate) delivery_order: AtomicU64,
    /// Unacked messages (ready + in flight), reserved before a message is stored.
    occupied: AtomicUsize,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) dead_lettered: AtomicU64,
    /// Producers between their closed check and their push (see `append`).
    sending: AtomicUsize,
    /// Every consumer's link, for ack timeouts (whoever looks expires everyone's).
    links: Mutex<Vec<Weak<ConsumerLink<T>>>>,
    /// The earliest ack deadline in flight (`u64::MAX`: none); never later than the truth.
    earliest: AtomicU64,
    waiters: Mutex<QueueWaiters>,
    readers_waiting: AtomicBool,
    writers_waiting: AtomicBool,
    dead_letter: Option<Arc<QueueCore<T>>>,
    /// The queues dead-lettering into this one: their ack timeouts are this queue's arrivals.
    feeders: Mutex<Vec<Weak<QueueCore<T>>>>,
    has_feeders: AtomicBool,
    pub(crate) shared: Arc<Shared>,
}

#[derive(Default)]
struct QueueWaiters {
    /// Consumers waiting for a message (or for their prefetch window).
    readers: Waiters,
    /// Producers waiting for capacity.
    writers: Waiters,
}

impl<T> QueueCore<T> {
    pub(crate) fn new(
        name: &str,
        options: QueueOptions,
        dead_letter: Option<Arc<Self>>,
        shared: Arc<Shared>,
    ) -> Self {
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        Self {
            name: name.to_owned(),
            ack_timeout: options
                .ack_timeout_duration()
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            options,
            ready_tx,
            ready_rx,
            retry: Mutex::new(VecDeque::new()),
            retry_len: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            delivery_order: AtomicU64::new(0),
            occupied: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            dead_lettered: AtomicU64::new(0),
            sending: AtomicUsize::new(0),
            links: Mutex::new(Vec::new()),
            earliest: AtomicU64::new(u64::MAX),
            waiters: Mutex::new(QueueWaiters::default()),
            readers_waiting: AtomicBool::new(false),
            writers_waiting: AtomicBool::new(false),
            dead_letter,
            feeders: Mutex::new(Vec::new()),
            has_feeders: AtomicBool::new(false),
            shared,
        }
    }

    /// Records that `source` dead-letters into this queue.
    pub(crate) fn add_feeder(&self, source: &Arc<Self>) {
        let mut feeders = self.feeders.lock();
        feeders.retain(|f| f.strong_count() > 0 && !std::ptr::eq(f.as_ptr(), Arc::as_ptr(source)));
        feeders.push(Arc::downgrade(source));
        self.has_feeders.store(true, Ordering::Release);
    }

    /// Processes the feeders' ack timeouts, so their dead letters arrive here without anyone
    /// looking at the feeders; returns their earliest next deadline.
    pub(crate) fn expire_feeders(&self) -> Option<Nanos> {
        if !self.has_feeders.load(Ordering::Acquire) {
            return None;
        }
        let feeders: Vec<Arc<Self>> = self
            .feeders
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        feeders
            .iter()
            .filter_map(|f| {
                f.expire_due();
                f.next_deadline()
            })
            .min()
    }

    pub(crate) fn ready_len(&self) -> usize {
        self.retry_len.load(Ordering::Acquire) + self.ready_rx.len()
    }

    pub(crate) fn next_deadline(&self) -> Option<Nanos> {
        let earliest = self.earliest.load(Ordering::Acquire);
        (earliest != u64::MAX).then_some(earliest)
    }

    /// The time, if this queue has ack timeouts to check (a clock read costs ~30 ns).
    pub(crate) fn timed_now(&self) -> Option<Nanos> {
        self.ack_timeout.map(|_| self.shared.clock.now())
    }

    // ===== capacity =====

    /// Takes one unit of capacity, if there is one.
    fn reserve(&self) -> bool {
        let capacity = self.options.capacity_limit();
        self.occupied
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// Returns the capacity of a message that left (acked or dead-lettered), waking producers
    /// that wait for it, and consumers too when one may wait for its prefetch window.
    fn left(&self) {
        self.occupied.fetch_sub(1, Ordering::AcqRel);
        fence(Ordering::SeqCst);
        if self.writers_waiting.load(Ordering::SeqCst) {
            let woken = {
                let mut waiters = self.waiters.lock();
                self.writers_waiting.store(false, Ordering::SeqCst);
                waiters.writers.take()
            };
            woken.wake();
        }
        if self.options.prefetch_limit().is_some() {
            self.wake_readers();
        }
    }

    /// Wakes waiting consumers, if any (one atomic load when none wait).
    fn wake_readers(&self) {
        fence(Ordering::SeqCst);
        if self.readers_waiting.load(Ordering::SeqCst) {
            let woken = {
                let mut waiters = self.waiters.lock();
                self.readers_waiting.store(false, Ordering::SeqCst);
                waiters.readers.take()
            };
            woken.wake();
        }
    }

    /// Registers consumer `id` to be woken; the caller re-checks afterwards.
    pub(crate) fn register_reader(&self, id: u64, wait: Wait<'_>) {
        let mut waiters = self.waiters.lock();
        waiters.readers.register(id, wait);
        self.readers_waiting.store(true, Ordering::SeqCst);
        drop(waiters);
        fence(Ordering::SeqCst);
    }

    pub(crate) fn forget_reader(&self, id: u64) {
        self.waiters.lock().readers.remove(id);
    }

    // ===== sending =====

    /// Stores and enqueues one record, waiting for capacity until `deadline`.
    pub(crate) fn publish(
        &self,
        record: Record<T>,
        deadline: Deadline,
    ) -> Result<Receipt, (Record<T>, Fail)> {
        match self.wait_for_room(deadline) {
            Ok(()) => self.append(record),
            Err(fail) => Err((record, fail)),
        }
    }

    /// One attempt to enqueue; on [`Fail::Full`] registers waiter `id` as `wait` says
    /// (re-checking afterwards, so no wakeup is lost). For `send_async`.
    pub(crate) fn try_publish(
        &self,
        record: Record<T>,
        id: u64,
        wait: Wait<'_>,
    ) -> Result<Receipt, (Record<T>, Fail)> {
        if self.shared.is_closed() {
            return Err((record, Fail::Disconnected));
        }
        if !self.reserve() {
            let room = match wait {
                Wait::No => Room::Registered,
                wait => self.register_writer(id, wait),
            };
            match room {
                Room::Reserved => {}
                Room::Registered => return Err((record, Fail::Full)),
                Room::Closed => return Err((record, Fail::Disconnected)),
            }
        }
        self.append(record)
    }

    /// Stores and enqueues a record whose capacity is reserved.
    fn append(&self, record: Record<T>) -> Result<Receipt, (Record<T>, Fail)> {
        // A consumer's last look after close waits until no send is between its closed check
        // and its push, so every message that returned a receipt is seen.
        self.sending.fetch_add(1, Ordering::SeqCst);
        let result = if self.shared.is_closed() {
            Err((record, Fail::Disconnected))
        } else {
            let mut record = Some(record);
            let mut id = None;
            let stored = self.shared.store.append(&mut || {
                let Some(r) = record.take() else { return };
                let ts = self.shared.clock.now();
                let n = self.next_id.fetch_add(1, Ordering::Relaxed);
                let entry = Arc::new(Entry::new(r, 0));
                // An unbounded channel we hold both ends of: sending cannot fail.
                let _ = self.ready_tx.send(Item {
                    id: n,
                    ts,
                    entry,
                    meta: None,
                    count: 0,
                });
                id = Some(n);
            });
            match (stored, id, record) {
                (Ok(()), Some(offset), _) => Ok(Receipt {
                    partition: 0,
                    offset,
                }),
                (Err(e), None, Some(record)) => Err((record, Fail::Failed(e))),
                _ => unreachable!("a store ran `publish` if and only if it returned Ok"),
            }
        };
        self.sending.fetch_sub(1, Ordering::SeqCst);
        match result {
            Ok(receipt) => {
                self.wake_readers();
                Ok(receipt)
            }
            Err(failed) => {
                self.occupied.fetch_sub(1, Ordering::AcqRel);
                Err(failed)
            }
        }
    }

    /// Registers waiter `id` for capacity, then re-checks.
    fn register_writer(&self, id: u64, wait: Wait<'_>) -> Room {
        let mut waiters = self.waiters.lock();
        if self.shared.is_closed() {
            return Room::Closed;
        }
        waiters.writers.register(id, wait);
        self.writers_waiting.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.reserve() {
            waiters.writers.remove(id);
            return Room::Reserved;
        }
        Room::Registered
    }

    /// Forgets waiter `id` (a dropped `send_async` future).
    pub(crate) fn forget_writer(&self, id: u64) {
        self.waiters.lock().writers.remove(id);
    }

    fn wait_for_room(&self, deadline: Deadline) -> Result<(), Fail> {
        let mut id = None;
        let mut backoff = Backoff::new();
        let result = loop {
            if self.shared.is_closed() {
                break Err(Fail::Disconnected);
            }
            if self.reserve() {
                break Ok(());
            }
            if deadline.passed() {
                break Err(Fail::Full);
            }
            if backoff.snooze() {
                continue; // consumers usually ack within a few yields
            }
            let waiter = *id.get_or_insert_with(|| self.shared.next_id());
            match self.register_writer(waiter, Wait::Thread) {
                Room::Reserved => return Ok(()),
                Room::Closed => return Err(Fail::Disconnected),
                Room::Registered => deadline.park(None),
            }
        };
        if let Some(waiter) = id {
            self.forget_writer(waiter);
        }
        result
    }

    /// Waits until no producer is between its closed check and its push (a consumer's last
    /// look after close). Sends are short and never block here.
    pub(crate) fn settle_sends(&self) {
        while self.sending.load(Ordering::SeqCst) > 0 {
            std::thread::yield_now();
        }
    }

    // ===== delivering and settling =====

    /// Takes the next message to deliver: redeliveries first, then first deliveries.
    pub(crate) fn take_ready(&self) -> Option<Item<T>> {
        if self.retry_len.load(Ordering::Acquire) > 0 {
            let mut retry = self.retry.lock();
            if let Some(item) = retry.pop_front() {
                self.retry_len.store(retry.len(), Ordering::Release);
                return Some(item);
            }
        }
        self.ready_rx.try_recv().ok()
    }

    /// Records a new delivery's deadline; the first one in flight wakes the dead-letter queue's
    /// waiting consumers so they learn it.
    pub(crate) fn note_deadline(&self, deadline: Option<Nanos>) {
        if let Some(at) = deadline {
            let before = self.earliest.fetch_min(at, Ordering::AcqRel);
            if before == u64::MAX {
                if let Some(dlq) = &self.dead_letter {
                    dlq.wake_readers();
                }
            }
        }
    }

    /// Puts ended deliveries back (newest first at the front, so the oldest is next), or
    /// moves those past `max_deliveries` to the dead-letter queue.
    pub(crate) fn release_all(&self, mut ended: Vec<Ended<T>>, reason: Reason) {
        if ended.is_empty() {
            return;
        }
        self.in_flight.fetch_sub(ended.len(), Ordering::AcqRel);
        ended.sort_by_key(|e| e.order);
        let max = self.options.max_delivery_count();
        let (dead, requeue): (Vec<_>, Vec<_>) = ended
            .into_iter()
            .partition(|e| max.is_some_and(|max| e.item.count >= max));
        if !requeue.is_empty() {
            let mut retry = self.retry.lock();
            for e in requeue.into_iter().rev() {
                retry.push_front(e.item);
            }
            self.retry_len.store(retry.len(), Ordering::Release);
            drop(retry);
            self.wake_readers();
        }
        // Newest first, as the requeue above (and as releasing one by one would).
        for e in dead.into_iter().rev() {
            self.dead_lettered.fetch_add(1, Ordering::AcqRel);
            self.left();
            if let Some(dlq) = &self.dead_letter {
                dlq.push_dead_letter(e.item, &self.name, reason);
            }
        }
        self.shared.idle.notify();
    }

    /// Accepts a dead letter from another queue, beyond capacity if need be.
    fn push_dead_letter(&self, item: Item<T>, from: &str, reason: Reason) {
        let original = item.meta.as_deref().or(item.entry.meta.as_deref());
        let mut headers = original.map_or_else(Headers::new, |m| m.headers.clone());
        headers.push(DEAD_LETTER_QUEUE, from);
        headers.push(
            DEAD_LETTER_REASON,
            match reason {
                Reason::Nack => "nack",
                Reason::Dropped => "dropped",
                Reason::Timeout => "ack-timeout",
            },
        );
        headers.push(DEAD_LETTER_DELIVERIES, item.count.to_string());
        let meta = Meta {
            key: original.and_then(|m| m.key.clone()),
            headers,
        };
        self.occupied.fetch_add(1, Ordering::AcqRel);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let dead = Item {
            id,
            ts: item.ts,
            entry: item.entry,
            meta: Some(Arc::new(meta)),
            count: 0,
        };
        let _ = self.ready_tx.send(dead);
        self.wake_readers();
    }

    /// Acks a delivery of `link`'s consumer. A delivery whose ack timeout already passed is
    /// released as timed out instead (the message is redelivered), even if nobody looked yet.
    pub(crate) fn ack(&self, link: &ConsumerLink<T>, delivery: u64, id: u64) {
        let now = self.timed_now();
        let mut flight = link.flight.lock();
        let expired = match (flight.deadline(delivery), now) {
            (None, _) => return, // already ended
            (Some(Some(at)), Some(now)) => at <= now,
            _ => false,
        };
        let Some(ended) = flight.end(delivery) else {
            return;
        };
        drop(flight);
        if expired {
            self.release_all(vec![ended], Reason::Timeout);
            return;
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.left();
        self.shared.store.progress(Progress::QueueAck {
            queue: &self.name,
            id,
        });
        self.shared.idle.notify();
    }

    /// Ends a delivery of `link`'s consumer without an ack.
    pub(crate) fn release(&self, link: &ConsumerLink<T>, delivery: u64, reason: Reason) {
        let ended = link.flight.lock().end(delivery);
        self.release_all(ended.into_iter().collect(), reason);
    }

    /// Processes ack timeouts if one may have passed (a clock read only when some delivery has
    /// a deadline).
    pub(crate) fn expire_due(&self) {
        if self.earliest.load(Ordering::Acquire) == u64::MAX {
            return;
        }
        if let Some(now) = self.timed_now() {
            if now >= self.earliest.load(Ordering::Acquire) {
                self.expire(now);
            }
        }
    }

    /// Releases every delivery, of every consumer, whose ack deadline is at or before `now`.
    fn expire(&self, now: Nanos) {
        let mut links = self.links.lock();
        links.retain(|l| l.strong_count() > 0);
        // Reset, then lower again from every table: a delivery made meanwhile lowers it
        // after its insert, which this scan (or its own fetch_min) sees.
        self.earliest.store(u64::MAX, Ordering::SeqCst);
        let mut expired = Vec::new();
        for link in links.iter().filter_map(Weak::upgrade) {
            let mut flight = link.flight.lock();
            expired.extend(flight.expire(now));
            if let Some(at) = flight.next_deadline() {
                self.earliest.fetch_min(at, Ordering::AcqRel);
            }
        }
        drop(links);
        self.release_all(expired, Reason::Timeout);
    }

    pub(crate) fn add_link(&self, link: &Arc<ConsumerLink<T>>) {
        self.links.lock().push(Arc::downgrade(link));
    }
}

impl<T: Payload> Control for QueueCore<T> {
    fn wake_all(&self) {
        // A clock advance fires ack timeouts here, even if no consumer is looking.
        if let Some(now) = self.timed_now() {
            self.expire(now);
        }
        let woken = {
            let mut waiters = self.waiters.lock();
            let mut woken = waiters.readers.take();
            woken.join(waiters.writers.take());
            woken
        };
        woken.wake();
    }

    fn busy(&self, _now: Nanos) -> Option<String> {
        self.expire_due();
        let parked_only = self.has_feeders.load(Ordering::Acquire);
        let in_flight = self.in_flight.load(Ordering::Acquire);
        let ready = self.ready_len();
        let busy = if parked_only {
            in_flight > 0
        } else {
            self.occupied.load(Ordering::Acquire) > 0
        };
        busy.then(|| {
            format!(
                "queue `{}`: {ready} ready, {in_flight} in flight",
                self.name
            )
        })
    }

    fn next_deadline(&self) -> Option<Nanos> {
        QueueCore::next_deadline(self)
    }
}

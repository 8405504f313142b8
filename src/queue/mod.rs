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

mod state;

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, MutexGuard};

use self::state::{Item, QueueState, Reason, Released};
use crate::broker::{Control, Life, Payload, Shared};
use crate::consumer::{Consumer, Poll, Source};
use crate::error::Error;
use crate::message::{Message, QueueAck};
use crate::notify::{Backoff, Deadline, Wait, Woken};
use crate::options::QueueOptions;
use crate::producer::{Fail, Producer, Sent};
use crate::record::{Entry, Headers, Meta, Nanos, Receipt, Record};
use crate::store::{self, Append, Progress, Sink, Stager};

pub(crate) use self::state::{Item as QueueItem, Reason as ReleaseReason};

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
        let id = self.core.shared.next_id();
        Consumer::queue(QueueConsumer {
            link: Arc::new(ConsumerLink {
                queue: Arc::clone(&self.core),
            }),
            id,
            wake: None,
            timed: false,
        })
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
        self.core.with_expired(|s| s.ready_len())
    }

    /// Whether no message is ready (`len() == 0`; some may still be in flight).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages delivered and not yet acked, nacked or timed out.
    pub fn in_flight(&self) -> usize {
        self.core.with_expired(|s| s.in_flight())
    }

    /// How many messages this queue has moved to its dead-letter queue so far.
    pub fn dead_lettered(&self) -> u64 {
        self.core.with_expired(|s| s.dead_lettered)
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.core.options.capacity_limit()
    }

    /// Durable mode: stored messages that failed their checksum or did not decode as `T` when
    /// this run restored the queue, with their raw bytes. They are not delivered and stay in
    /// the file untouched (nothing is deleted on a guess); the rest of the queue works.
    pub fn undecodable(&self) -> &[crate::Undecodable] {
        &self.core.undecodable
    }
}

/// The outcome of asking for capacity.
enum Room {
    Reserved,
    Registered,
    Closed,
}

/// The engine of one queue.
pub(crate) struct QueueCore<T> {
    pub(crate) name: String,
    options: QueueOptions,
    ack_timeout: Option<Nanos>,
    state: Mutex<QueueState<T>>,
    /// Unacked messages (ready + in flight), reserved before a message is stored.
    occupied: AtomicUsize,
    /// Ready messages, published under the lock so consumers can skip it when there are none.
    ready: AtomicUsize,
    /// The earliest ack deadline (`u64::MAX`: none), so a lock-free look knows when a
    /// timed-out delivery may be waiting to be redelivered.
    earliest: AtomicU64,
    dead_letter: Option<Arc<QueueCore<T>>>,
    /// What the durable store's writer publishes into.
    sink: Arc<dyn Sink>,
    /// Stored messages that did not decode as `T` when the queue was restored.
    undecodable: Vec<crate::error::Undecodable>,
    /// The queues dead-lettering into this one: their ack timeouts are this queue's arrivals.
    feeders: Mutex<Vec<Weak<QueueCore<T>>>>,
    has_feeders: AtomicBool,
    pub(crate) shared: Arc<Shared>,
}

/// A queue as the store's writer sees it.
struct QueueSink<T> {
    queue: Weak<QueueCore<T>>,
    table: String,
    counts: String,
}

impl<T: Payload> Sink for QueueSink<T> {
    fn table(&self) -> &str {
        &self.table
    }

    fn publish(&self, upto: u64) {
        let Some(queue) = self.queue.upgrade() else {
            return;
        };
        let mut state = queue.state.lock();
        state.publish_staged(upto);
        queue.publish_hints(&state);
        let woken = state.readers.take();
        drop(state);
        woken.wake();
    }

    fn floor(&self) -> Option<u64> {
        None
    }

    fn counts_table(&self) -> &str {
        &self.counts
    }
}

impl<T: Payload> QueueCore<T> {
    /// Creates the queue, restoring its messages (with their delivery counts) from the store.
    pub(crate) fn create(
        name: &str,
        options: QueueOptions,
        dead_letter: Option<Arc<Self>>,
        shared: Arc<Shared>,
    ) -> Result<Arc<Self>, Error> {
        let table = store::queue_table(name);
        let restored = shared.store.restore(&table)?;
        let mut state = QueueState::new();
        let mut occupied = 0;
        let mut undecodable = Vec::new();
        if restored.base < restored.end {
            for row in shared.store.load(&table, restored.base, u64::MAX)? {
                match store::decode_row::<T>(name, 0, &row) {
                    Ok((ts, entry)) => {
                        state.restore(row.key, ts, Arc::new(entry), row.deliveries);
                        occupied += 1;
                    }
                    Err(Error::Decode(bad)) => undecodable.push(*bad),
                    Err(e) => return Err(e),
                }
            }
        }
        state.start_ids_at(restored.end);
        let core = Arc::new_cyclic(|me: &Weak<Self>| Self {
            name: name.to_owned(),
            ack_timeout: options
                .ack_timeout_duration()
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            options,
            state: Mutex::new(state),
            occupied: AtomicUsize::new(occupied),
            ready: AtomicUsize::new(occupied),
            earliest: AtomicU64::new(u64::MAX),
            dead_letter,
            sink: Arc::new(QueueSink {
                queue: Weak::clone(me),
                table,
                counts: store::counts_table(name),
            }),
            feeders: Mutex::new(Vec::new()),
            has_feeders: AtomicBool::new(false),
            undecodable,
            shared,
        });
        Ok(core)
    }

    /// Stores and enqueues one record, waiting for capacity until `deadline`.
    pub(crate) fn publish(
        &self,
        record: Record<T>,
        deadline: Deadline,
    ) -> Result<Receipt, (Record<T>, Fail)> {
        match self.wait_for_room(deadline) {
            Ok(()) => self.append(record, false).map(|(receipt, _)| receipt),
            Err(fail) => Err((record, fail)),
        }
    }

    /// Stores and enqueues records in order, waiting for capacity for each; on failure hands
    /// back the records not sent.
    pub(crate) fn publish_batch(
        &self,
        records: Vec<Record<T>>,
    ) -> Result<Vec<Receipt>, (Vec<Record<T>>, Fail)> {
        let mut receipts = Vec::with_capacity(records.len());
        let mut rest: VecDeque<Record<T>> = records.into();
        while !rest.is_empty() {
            // Room for the first, then as many more as are free now: one store call (one
            // commit in durable mode) per run.
            if let Err(fail) = self.wait_for_room(Deadline::Never) {
                return Err((rest.into(), fail));
            }
            let mut take = 1;
            while take < rest.len() && self.reserve() {
                take += 1;
            }
            let run: Vec<Record<T>> = rest.drain(..take).collect();
            match self.append_run(run) {
                Ok(mut sent) => receipts.append(&mut sent),
                Err((mut back, fail)) => {
                    back.extend(rest);
                    return Err((back, fail));
                }
            }
        }
        Ok(receipts)
    }

    /// Stores and enqueues records whose capacity is reserved, in one store call.
    fn append_run(&self, run: Vec<Record<T>>) -> Result<Vec<Receipt>, (Vec<Record<T>>, Fail)> {
        let mut job = QueueRunJob {
            queue: self,
            entries: run
                .into_iter()
                .map(|r| Arc::new(Entry::new(r, 0)))
                .collect(),
            ids: Vec::new(),
        };
        let stored = self.shared.store.append(&mut job, false);
        let fail = match stored {
            Ok(_) if !job.ids.is_empty() => {
                let receipt = |offset| Receipt {
                    partition: 0,
                    offset,
                };
                return Ok(job.ids.into_iter().map(receipt).collect());
            }
            Ok(_) => Fail::Disconnected,
            Err(e) => Fail::Failed(e),
        };
        let back: Vec<Record<T>> = job
            .entries
            .into_iter()
            .filter_map(|e| Arc::try_unwrap(e).ok().map(Entry::into_record))
            .collect();
        self.occupied.fetch_sub(back.len(), Ordering::AcqRel);
        self.state.lock().writers.take().wake();
        Err((back, fail))
    }

    /// One attempt to enqueue; on [`Fail::Full`] registers waiter `id` as `wait` says
    /// (re-checking under the lock, so no wakeup is lost). For `send_async`: a durable store's
    /// commit is not waited for (poll the ticket).
    pub(crate) fn try_publish(
        &self,
        record: Record<T>,
        id: u64,
        wait: Wait<'_>,
    ) -> Result<Sent, (Record<T>, Fail)> {
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
        self.append(record, true)
    }

    /// Stores and enqueues a record whose capacity is reserved (with `defer`, a durable
    /// store's commit may still be pending: the ticket).
    fn append(&self, record: Record<T>, defer: bool) -> Result<Sent, (Record<T>, Fail)> {
        let mut job = QueueJob {
            queue: self,
            entry: Some(Arc::new(Entry::new(record, 0))),
            id: None,
        };
        let stored = self.shared.store.append(&mut job, defer);
        let fail = match (stored, job.id) {
            (Ok(ticket), Some(offset)) => {
                let receipt = Receipt {
                    partition: 0,
                    offset,
                };
                return Ok((receipt, ticket));
            }
            (Ok(_), None) => Fail::Disconnected,
            (Err(e), None) => Fail::Failed(e),
            (Err(_), Some(_)) => unreachable!("a store that published returns Ok"),
        };
        self.occupied.fetch_sub(1, Ordering::AcqRel);
        self.state.lock().writers.take().wake();
        match job.entry.map(Arc::try_unwrap) {
            Some(Ok(entry)) => Err((entry.into_record(), fail)),
            _ => unreachable!("a record that was not published is handed back"),
        }
    }
}

impl<T> QueueCore<T> {
    /// Records that `source` dead-letters into this queue.
    pub(crate) fn add_feeder(&self, source: &Arc<Self>) {
        let mut feeders = self.feeders.lock();
        feeders.retain(|f| f.strong_count() > 0 && !std::ptr::eq(f.as_ptr(), Arc::as_ptr(source)));
        feeders.push(Arc::downgrade(source));
        self.has_feeders.store(true, Ordering::Release);
    }

    fn feeders(&self) -> Vec<Arc<Self>> {
        self.feeders
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Processes the feeders' ack timeouts, so their dead letters arrive here without anyone
    /// looking at the feeders; returns their earliest next deadline.
    fn expire_feeders(&self) -> Option<Nanos> {
        if !self.has_feeders.load(Ordering::Acquire) {
            return None;
        }
        let feeders = self.feeders();
        feeders
            .iter()
            .filter_map(|f| f.with_expired(|s| s.next_deadline()))
            .min()
    }

    /// Takes one unit of capacity, if there is one.
    fn reserve(&self) -> bool {
        let capacity = self.options.capacity_limit();
        self.occupied
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// Returns the capacity of a message that left (acked or dead-lettered) and takes the
    /// producers to wake, and the consumers too when one may be waiting for its prefetch window.
    fn left(&self, state: &mut QueueState<T>) -> Woken {
        self.occupied.fetch_sub(1, Ordering::AcqRel);
        let mut woken = state.writers.take();
        if self.options.prefetch_limit().is_some() {
            woken.join(state.readers.take());
        }
        woken
    }

    /// Registers waiter `id` for capacity, then re-checks under the lock that acks release
    /// capacity and close wakes waiters under.
    fn register_writer(&self, id: u64, wait: Wait<'_>) -> Room {
        let mut state = self.state.lock();
        if self.shared.is_closed() {
            return Room::Closed;
        }
        state.writers.register(id, wait);
        if self.reserve() {
            state.writers.remove(id);
            return Room::Reserved;
        }
        Room::Registered
    }

    /// Takes back a staged message whose commit failed (`send_async`), returning its
    /// capacity; `None` if it was published after all.
    pub(crate) fn take_back(&self, receipt: Receipt) -> Option<Record<T>> {
        let mut state = self.state.lock();
        let entry = state.unstage(receipt.offset)?;
        self.occupied.fetch_sub(1, Ordering::AcqRel);
        let woken = state.writers.take();
        drop(state);
        woken.wake();
        Arc::try_unwrap(entry).ok().map(Entry::into_record)
    }

    /// Forgets waiter `id` (a dropped `send_async` future).
    pub(crate) fn forget_writer(&self, id: u64) {
        self.state.lock().writers.remove(id);
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

    /// Publishes what lock-free looks need: the ready count and the earliest ack deadline.
    fn publish_hints(&self, state: &QueueState<T>) {
        self.ready.store(state.ready_len(), Ordering::Release);
        let earliest = state.next_deadline().unwrap_or(u64::MAX);
        self.earliest.store(earliest, Ordering::Release);
    }

    /// Whether a lock-free look may skip the lock: nothing ready and no ack deadline passed.
    fn nothing_to_deliver(&self) -> bool {
        if self.ready.load(Ordering::Acquire) > 0 {
            return false;
        }
        let earliest = self.earliest.load(Ordering::Acquire);
        earliest == u64::MAX || self.shared.clock.now() < earliest
    }

    /// The time, if this queue has ack timeouts to check (a clock read costs ~30 ns).
    fn timed_now(&self) -> Option<Nanos> {
        self.ack_timeout.map(|_| self.shared.clock.now())
    }

    /// Runs `f` after processing expired ack timeouts.
    fn with_expired<R>(&self, f: impl FnOnce(&mut QueueState<T>) -> R) -> R {
        let now = self.timed_now();
        let mut state = self.state.lock();
        let (dead, woken) = self.expire(&mut state, now);
        let result = f(&mut state);
        drop(state);
        self.after_release(dead, woken);
        result
    }

    /// Releases every delivery whose ack timeout has passed by `now` (`None`: no timeouts).
    fn expire(
        &self,
        state: &mut QueueState<T>,
        now: Option<Nanos>,
    ) -> (Vec<(Item<T>, Reason)>, Woken) {
        let Some(now) = now else {
            return (Vec::new(), Woken::none());
        };
        let expired = state.expired(now);
        let mut dead = Vec::new();
        let mut woken = Woken::none();
        // Newest first, so that requeueing at the front keeps the oldest in front.
        for delivery in expired.into_iter().rev() {
            self.release_locked(state, delivery, Reason::Timeout, &mut dead, &mut woken);
        }
        (dead, woken)
    }

    fn release_locked(
        &self,
        state: &mut QueueState<T>,
        delivery: u64,
        reason: Reason,
        dead: &mut Vec<(Item<T>, Reason)>,
        woken: &mut Woken,
    ) {
        match state.release(delivery, reason, self.options.max_delivery_count()) {
            Released::Requeued => {
                self.publish_hints(state);
                woken.join(state.readers.take());
            }
            Released::Dead(item, reason) => {
                woken.join(self.left(state));
                dead.push((item, reason));
            }
            Released::Stale => {}
        }
    }

    /// Moves dead letters on and wakes whoever a release freed, outside the lock.
    fn after_release(&self, dead: Vec<(Item<T>, Reason)>, woken: Woken) {
        woken.wake();
        if dead.is_empty() {
            return;
        }
        if let Some(dlq) = &self.dead_letter {
            for (item, reason) in dead {
                dlq.push_dead_letter(item, self, reason);
            }
        }
        self.shared.idle.notify();
    }

    /// Accepts a dead letter from another queue, beyond capacity if need be.
    fn push_dead_letter(&self, item: Item<T>, from: &Self, reason: Reason) {
        let original = item.meta.as_deref().or(item.entry.meta.as_deref());
        let mut headers = original.map_or_else(Headers::new, |m| m.headers.clone());
        headers.push(DEAD_LETTER_QUEUE, &from.name);
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
        let mut state = self.state.lock();
        let to_id = state.push(item.ts, item.entry, Some(Arc::new(meta.clone())));
        self.shared.store.progress(Progress::DeadLetter {
            queue: &from.sink,
            id: item.id,
            to: &self.sink,
            to_id,
            headers: &meta.headers,
        });
        self.publish_hints(&state);
        let woken = state.readers.take();
        drop(state);
        woken.wake();
    }

    pub(crate) fn ack(&self, delivery: u64, id: u64) {
        let now = self.timed_now();
        let mut state = self.state.lock();
        // A delivery whose timeout passed is no longer acked, even if nobody looked yet.
        let (dead, mut woken) = self.expire(&mut state, now);
        let acked = state.ack(delivery);
        if acked {
            woken.join(self.left(&mut state));
        }
        drop(state);
        if acked {
            self.shared.store.progress(Progress::QueueAck {
                queue: &self.sink,
                id,
            });
            self.shared.idle.notify();
        }
        self.after_release(dead, woken);
    }

    pub(crate) fn release(&self, delivery: u64, reason: Reason) {
        let now = self.timed_now();
        let mut state = self.state.lock();
        // A delivery whose timeout passed ends as timed out (its dead letter says so), even if
        // nobody looked yet; it is then stale here.
        let (mut dead, mut woken) = self.expire(&mut state, now);
        self.release_locked(&mut state, delivery, reason, &mut dead, &mut woken);
        drop(state);
        self.after_release(dead, woken);
    }
}

/// A consumer's own handle on its queue: its deliveries clone this `Arc`, not the queue's, so
/// competing consumers do not contend on one reference count.
pub(crate) struct ConsumerLink<T> {
    pub(crate) queue: Arc<QueueCore<T>>,
}

/// A competing consumer of a queue.
pub(crate) struct QueueConsumer<T> {
    link: Arc<ConsumerLink<T>>,
    id: u64,
    /// When to wake for the next ack timeout (system clock only).
    wake: Option<std::time::Instant>,
    /// Whether the broker's timer holds an entry for this consumer.
    timed: bool,
}

impl<T: Payload> QueueConsumer<T> {
    pub(crate) fn ready(&self) -> u64 {
        self.link.queue.with_expired(|s| s.ready_len() as u64)
    }
}

impl<T: Payload> Source<T> for QueueConsumer<T> {
    fn poll(&mut self, wait: Wait<'_>) -> Poll<T> {
        let queue = &self.link.queue;
        queue.expire_feeders(); // their timed-out deliveries are this queue's dead letters
        if !wait.takes_locks() && queue.nothing_to_deliver() {
            // Nothing ready: don't take the lock (timeouts are processed when registering).
            return Poll::Empty;
        }
        let now = queue.timed_now();
        let mut own_deadline = None;
        let mut state = queue.state.lock();
        let (dead, woken) = queue.expire(&mut state, now);
        let deadline = now
            .zip(queue.ack_timeout)
            .map(|(now, t)| now.saturating_add(t));
        let delivered = state.deliver(self.id, queue.options.prefetch_limit(), deadline);
        let poll = match delivered {
            Some((item, delivery)) => {
                let (id, count) = (item.id, item.count);
                queue.shared.store.progress(Progress::QueueDelivery {
                    queue: &queue.sink,
                    id,
                    count,
                });
                let ack = QueueAck {
                    link: Arc::clone(&self.link),
                    delivery,
                    id,
                };
                Poll::Ready(Message::queue(item, ack))
            }
            None => {
                if wait.takes_locks() {
                    state.readers.register(self.id, wait);
                    own_deadline = state.next_deadline();
                }
                Poll::Empty
            }
        };
        // A feeder's first in-flight delivery gives this queue's waiting consumers (it is a
        // dead-letter queue) a deadline they did not know when they registered.
        let wake_dead_letters = poll.is_ready()
            && queue.dead_letter.is_some()
            && queue.earliest.load(Ordering::Acquire) == u64::MAX;
        queue.publish_hints(&state);
        drop(state);
        if wait.takes_locks() && !poll.is_ready() {
            // The feeders' deadlines are read again after registering: a feeder's first
            // delivery from here on wakes us (see `wake_dead_letters`), and one before is seen.
            let feeder_deadline = queue.expire_feeders();
            let next = own_deadline.into_iter().chain(feeder_deadline).min();
            self.wake = next.and_then(|d| queue.shared.clock.wake_at(d));
        }
        if let (Poll::Empty, Wait::Task(waker), Some(at)) = (&poll, wait, self.wake) {
            // A task cannot park until the deadline: the timer wakes it (registered after
            // unlocking, since it may drop an older waker).
            queue.shared.timer.wake_at(at, self.id, waker);
            self.timed = true;
        }
        if let (true, Some(dlq)) = (wake_dead_letters, &queue.dead_letter) {
            let woken = dlq.state.lock().readers.take();
            woken.wake();
        }
        queue.after_release(dead, woken);
        poll
    }

    fn is_closed(&self) -> bool {
        // Closed, and nothing staged will be published any more.
        let queue = &self.link.queue;
        queue.shared.is_closed() && (queue.shared.has_settled() || !queue.state.lock().has_staged())
    }

    fn wake_at(&self) -> Option<std::time::Instant> {
        self.wake
    }
}

impl<T> QueueConsumer<T> {
    /// Forgets this consumer's waker registrations.
    pub(crate) fn unregister(&mut self) {
        self.link.queue.state.lock().readers.remove(self.id);
        self.finish_wait();
    }

    /// After a wait ended with a result: drops the timer entry (a task that got its message
    /// must not be woken later). The reader registration is already gone: whatever woke it
    /// took the list.
    pub(crate) fn finish_wait(&mut self) {
        if std::mem::take(&mut self.timed) {
            self.link.queue.shared.timer.cancel(self.id);
        }
    }
}

impl<T> Drop for QueueConsumer<T> {
    fn drop(&mut self) {
        let queue = &self.link.queue;
        let now = queue.timed_now();
        let mut state = queue.state.lock();
        state.readers.remove(self.id);
        // As in `release`: overdue deliveries end as timed out first.
        let (mut dead, mut woken) = queue.expire(&mut state, now);
        let held = state.held_by(self.id);
        state.forget_consumer(self.id);
        // Newest first, so that requeueing at the front keeps the oldest in front.
        for delivery in held.into_iter().rev() {
            queue.release_locked(&mut state, delivery, Reason::Dropped, &mut dead, &mut woken);
        }
        drop(state);
        queue.after_release(dead, woken);
    }
}

impl<T: Payload> Control for QueueCore<T> {
    fn wake_all(&self) {
        // A clock advance fires ack timeouts here, even if no consumer is looking.
        self.with_expired(|_| ());
        let mut state = self.state.lock();
        let mut woken = state.readers.take();
        woken.join(state.writers.take());
        drop(state);
        woken.wake();
    }

    fn busy(&self, _now: Nanos) -> Option<String> {
        let parked_only = self.has_feeders.load(Ordering::Acquire);
        self.with_expired(|s| {
            if !parked_only && s.has_staged() {
                return Some(format!("queue `{}`: sends not yet stored", self.name));
            }
            let ready = if parked_only { 0 } else { s.ready_len() };
            (ready + s.in_flight() > 0).then(|| {
                format!(
                    "queue `{}`: {} ready, {} in flight",
                    self.name,
                    s.ready_len(),
                    s.in_flight()
                )
            })
        })
    }

    fn next_deadline(&self) -> Option<Nanos> {
        self.state.lock().next_deadline()
    }
}

/// One record to a queue, as the store sees it.
struct QueueJob<'a, T> {
    queue: &'a QueueCore<T>,
    /// The entry, until published or staged (and again if handed back).
    entry: Option<Arc<Entry<T>>>,
    id: Option<u64>,
}

/// A run of records to a queue (`send_batch`), as the store sees it: all or nothing.
struct QueueRunJob<'a, T> {
    queue: &'a QueueCore<T>,
    /// The entries, until published or staged (and again if handed back).
    entries: Vec<Arc<Entry<T>>>,
    ids: Vec<u64>,
}

impl<T: Payload> Append for QueueRunJob<'_, T> {
    fn publish(&mut self) {
        let queue = self.queue;
        let Some((now, mut state)) = queue.lock_open() else {
            return;
        };
        let ids = self.entries.drain(..).map(|e| state.push(now, e, None));
        let ids: Vec<u64> = ids.collect();
        queue.publish_hints(&state);
        let woken = state.readers.take();
        drop(state);
        woken.wake();
        self.ids = ids;
    }

    fn encode(&mut self) -> Result<Vec<Vec<u8>>, Error> {
        let name = &self.queue.name;
        self.entries
            .iter()
            .map(|e| store::encode_entry(name, e))
            .collect()
    }

    fn stage(&mut self, stager: &mut dyn Stager) {
        let queue = self.queue;
        let Some((now, mut state)) = queue.lock_open() else {
            return;
        };
        let mut ids = Vec::with_capacity(self.entries.len());
        for entry in std::mem::take(&mut self.entries) {
            let id = state.stage(now, entry);
            stager.record(&queue.sink, id, now, 0);
            ids.push(id);
        }
        stager.end();
        drop(state);
        self.ids = ids;
    }

    fn unstage(&mut self) {
        let mut state = self.queue.state.lock();
        for id in self.ids.drain(..) {
            if let Some(entry) = state.unstage(id) {
                self.entries.push(entry);
            }
        }
    }
}

impl<T> QueueCore<T> {
    /// The time and the queue's lock, unless the broker is closed: checked under the lock
    /// that close's wake-up takes, so a consumer's last look after close sees every message
    /// that returned a receipt.
    fn lock_open(&self) -> Option<(Nanos, MutexGuard<'_, QueueState<T>>)> {
        let now = self.shared.clock.now();
        let state = self.state.lock();
        (!self.shared.is_closed()).then_some((now, state))
    }
}

impl<T: Payload> Append for QueueJob<'_, T> {
    fn publish(&mut self) {
        let queue = self.queue;
        let Some((now, mut state)) = queue.lock_open() else {
            return;
        };
        let Some(entry) = self.entry.take() else {
            return;
        };
        self.id = Some(state.push(now, entry, None));
        queue.publish_hints(&state);
        let woken = state.readers.take();
        drop(state);
        woken.wake();
    }

    fn encode(&mut self) -> Result<Vec<Vec<u8>>, Error> {
        let body = self
            .entry
            .as_ref()
            .map(|e| store::encode_entry(&self.queue.name, e));
        body.into_iter().collect()
    }

    fn stage(&mut self, stager: &mut dyn Stager) {
        let queue = self.queue;
        let Some((now, mut state)) = queue.lock_open() else {
            return;
        };
        let Some(entry) = self.entry.take() else {
            return;
        };
        let id = state.stage(now, entry);
        stager.record(&queue.sink, id, now, 0);
        self.id = Some(id);
        stager.end();
    }

    fn unstage(&mut self) {
        if let Some(id) = self.id.take() {
            self.entry = self.queue.state.lock().unstage(id);
        }
    }
}

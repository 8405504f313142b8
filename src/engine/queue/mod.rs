//! The engine of one queue: capacity, deliveries, ack timeouts and dead-lettering; delays,
//! backoff and expiry ([`alarm`]); purge, peek and redrive ([`admin`]).

mod admin;
mod alarm;
mod append;
mod consumer;
mod deduped;
mod feeders;
mod from_group;
mod hints;
mod item;
mod ready;
mod state;
mod stats;
mod timed;
mod tx;
mod undecodable;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use self::append::{QueueJob, QueueRunJob};
use self::state::{Item, QueueState, Reason, Released};
use self::undecodable::SetAside;
use crate::engine::dedupe::Ids;
use crate::engine::notify::{Deadline, Wait, Woken};
use crate::engine::seam;
use crate::engine::sync::Padded;
use crate::engine::{Context, Control, Fail, Gone, Sent};
use crate::error::Error;
use crate::observe;
use crate::options::{IdleOptions, QueueOptions};
use crate::record::{Entry, Headers, Meta, Nanos, Payload, Receipt, Record, Timing};
use crate::store::{Commit, LogId, Progress, Sink};

pub(crate) use self::consumer::{ConsumerLink, QueueConsumer};
pub(crate) use self::state::{DeliveryId, Item as QueueItem, Reason as ReleaseReason};
pub(crate) use self::tx::QueuePart;

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
    /// The lock and each atomic below that every thread writes sit on cache lines of their
    /// own, apart from the fields that are only read ([`Padded`]).
    state: Padded<Mutex<QueueState<T>>>,
    /// Unacked messages (ready + in flight), reserved before a message is stored.
    occupied: Padded<AtomicUsize>,
    /// Whether any message is ready, published under the lock so consumers can skip it when
    /// none is.
    ready: Padded<AtomicBool>,
    /// No later than the earliest ack deadline, due time or expiry (`u64::MAX`: none), so a
    /// lock-free look knows when a message may be ready without anyone having sent it.
    earliest: Padded<AtomicU64>,
    /// Wakes this queue from the broker's timer when a due time or expiry passes (system
    /// clock only: a manual clock's advance wakes it), under this waiter id.
    alarm: Option<(std::task::Waker, u64)>,
    dead_letter: Option<Arc<QueueCore<T>>>,
    /// The message ids of the dedupe window, if the queue has one: locked before the state
    /// ([`dedupe`](crate::engine::dedupe) has the order).
    dedupe: Option<Mutex<Ids>>,
    /// What the durable store's writer publishes into.
    sink: Arc<dyn Sink>,
    /// Payloads to and from the store's bytes.
    coder: seam::Coder<T>,
    /// Stored messages that did not decode as `T` when the queue was restored.
    undecodable: Mutex<Vec<SetAside>>,
    /// The queues dead-lettering into this one: their ack timeouts are this queue's arrivals.
    feeders: Mutex<Vec<Weak<QueueCore<T>>>>,
    has_feeders: AtomicBool,
    /// Live consumers (a dead-letter queue with one is worked on, see `IdleOptions`).
    consumers: AtomicUsize,
    pub(crate) context: Arc<Context>,
    /// Set once the queue is deleted.
    gone: Gone,
    /// Acks and nacks, as rates for stats.
    meters: Mutex<[crate::stats::Meter; 2]>,
}

/// A queue as the store's writer sees it.
struct QueueSink<T> {
    queue: Weak<QueueCore<T>>,
    log: LogId,
}

impl<T: Payload> Sink for QueueSink<T> {
    fn log(&self) -> &LogId {
        &self.log
    }

    fn publish(&self, upto: u64) {
        let Some(queue) = self.queue.upgrade() else {
            return;
        };
        let mut state = queue.state.lock();
        state.publish_staged(upto);
        queue.publish_hints(&mut state);
        let woken = state.readers.take();
        drop(state);
        woken.wake();
    }

    fn floor(&self) -> Option<u64> {
        None
    }
}

impl<T: Payload> QueueCore<T> {
    /// Creates the queue, restoring its messages (with their delivery counts) from the store.
    pub(crate) fn create(
        name: &str,
        options: QueueOptions,
        dead_letter: Option<Arc<Self>>,
        context: Arc<Context>,
    ) -> Result<Arc<Self>, Error> {
        let log = LogId::queue(name);
        let restored = context.store.restore(&log)?;
        let mut state = QueueState::new(&options, context.clock.clone());
        let mut occupied = 0;
        let mut undecodable = Vec::new();
        if restored.base < restored.end {
            for row in context.store.load(&log, restored.base, u64::MAX)? {
                match seam::decode_row::<T>(context.codec, name, 0, &row) {
                    // A message dead-lettered as undecodable may carry a damaged record whole
                    // as its payload: never delivered, whatever it happens to decode as.
                    Ok((_, entry)) if undecodable::is_undecodable_letter(&entry) => {
                        undecodable.push(undecodable::set_aside_letter(name, row));
                    }
                    Ok((ts, entry)) => {
                        state.restore(row.key, ts, Arc::new(entry), row.deliveries);
                        occupied += 1;
                    }
                    Err(Error::Decode(bad)) => undecodable.push(SetAside { report: *bad, row }),
                    Err(e) => return Err(e),
                }
            }
        }
        state.start_ids_at(restored.end);
        let dedupe = deduped::restore(&log, options.dedupe_window(), &context)?;
        let ready = state.ready_len();
        let meters = stats::meters(&context);
        let core = Arc::new_cyclic(|me: &Weak<Self>| Self {
            alarm: alarm::alarm(me, &context),
            name: name.to_owned(),
            ack_timeout: options
                .ack_timeout_duration()
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            options,
            state: Padded(Mutex::new(state)),
            occupied: Padded(AtomicUsize::new(occupied)),
            ready: Padded(AtomicBool::new(ready > 0)),
            earliest: Padded(AtomicU64::new(u64::MAX)),
            dead_letter,
            dedupe,
            sink: Arc::new(QueueSink {
                queue: Weak::clone(me),
                log,
            }),
            coder: seam::Coder::new(name, context.codec),
            feeders: Mutex::new(Vec::new()),
            has_feeders: AtomicBool::new(false),
            consumers: AtomicUsize::new(0),
            undecodable: Mutex::new(undecodable),
            context,
            gone: Gone::default(),
            meters,
        });
        let mut state = core.state.lock();
        core.publish_hints(&mut state);
        drop(state);
        Ok(core)
    }

    /// Stores and enqueues one record without a message id (or without a window), waiting
    /// for capacity until `deadline`.
    pub(crate) fn publish_with(
        &self,
        record: Record<T>,
        deadline: Deadline,
    ) -> Result<Receipt, (Record<T>, Fail)> {
        match self.wait_for_room(deadline) {
            Ok(()) => self
                .append(record, Commit::Wait, None)
                .map(|(receipt, _)| receipt),
            Err(fail) => Err((record, fail)),
        }
    }

    /// Stores and enqueues records without message ids (or without a window) in order,
    /// waiting for capacity for each; on failure hands back the records not sent.
    pub(crate) fn publish_batch_with(
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
        let stored = self.context.append(&mut job, Commit::Wait);
        let fail = match stored {
            Ok(_) if !job.ids.is_empty() => {
                observe::traced! {
                    for &offset in &job.ids {
                        let queue = self.name.as_str();
                        observe::event!("embus::queue", TRACE, queue, offset, "send");
                    }
                }
                let receipt = |offset| Receipt {
                    partition: 0,
                    offset,
                };
                return Ok(job.ids.into_iter().map(receipt).collect());
            }
            Ok(_) => self.closed(),
            Err(e) => Fail::Failed(e),
        };
        let back: Vec<Record<T>> = job.entries.into_iter().map(unshared).collect();
        self.occupied.fetch_sub(back.len(), Ordering::AcqRel);
        self.state.lock().writers.take().wake();
        Err((back, fail))
    }

    /// One attempt to enqueue; on [`Fail::Full`] registers waiter `id` as `wait` says
    /// (re-checking under the lock, so no wakeup is lost). For `send_async`: a durable store's
    /// commit is not waited for (poll the ticket). With the dedupe window's ids locked if the
    /// record has an id.
    fn try_publish_with(
        &self,
        record: Record<T>,
        id: u64,
        wait: Wait<'_>,
        ids: Option<&mut Ids>,
    ) -> Result<Sent, (Record<T>, Fail)> {
        if self.is_shut() {
            return Err((record, self.closed()));
        }
        if !self.reserve() {
            let room = match wait {
                Wait::No => Room::Registered,
                wait => self.register_writer(id, wait),
            };
            match room {
                Room::Reserved => {}
                Room::Registered => return Err((record, Fail::Full)),
                Room::Closed => return Err((record, self.closed())),
            }
        }
        self.append(record, Commit::Poll, ids)
    }

    /// Stores and enqueues a record whose capacity is reserved, with the dedupe window's ids
    /// locked if it has an id (they are written with it); unless `commit` is
    /// [`Commit::Wait`], a durable store's commit may still be pending (the ticket).
    fn append(
        &self,
        record: Record<T>,
        commit: Commit,
        dedupe: Option<&mut Ids>,
    ) -> Result<Sent, (Record<T>, Fail)> {
        let mut job = QueueJob {
            queue: self,
            entry: Some(Arc::new(Entry::new(record, 0))),
            id: None,
            dedupe,
        };
        let stored = self.context.append(&mut job, commit);
        let fail = match (stored, job.id) {
            (Ok(ticket), Some(offset)) => {
                observe::event!(
                    "embus::queue",
                    TRACE,
                    queue = self.name.as_str(),
                    offset,
                    "send"
                );
                let receipt = Receipt {
                    partition: 0,
                    offset,
                };
                return Ok((receipt, ticket));
            }
            (Ok(_), None) => self.closed(),
            (Err(e), None) => Fail::Failed(e),
            (Err(_), Some(_)) => unreachable!("a store that published returns Ok"),
        };
        self.occupied.fetch_sub(1, Ordering::AcqRel);
        self.state.lock().writers.take().wake();
        match job.entry {
            Some(entry) => Err((unshared(entry), fail)),
            None => unreachable!("a record that was not published is handed back"),
        }
    }
}

impl<T> QueueCore<T> {
    /// Messages ready for delivery.
    pub(crate) fn ready_len(&self) -> usize {
        self.with_expired(|s| s.ready_len())
    }

    /// Messages delivered and not yet settled.
    pub(crate) fn in_flight(&self) -> usize {
        self.with_expired(|s| s.in_flight())
    }

    /// Messages moved to the dead-letter queue so far.
    pub(crate) fn dead_lettered(&self) -> u64 {
        self.with_expired(|s| s.dead_lettered)
    }

    /// Messages dropped because they expired (no dead-letter queue).
    pub(crate) fn expired(&self) -> u64 {
        self.with_expired(|s| s.expired)
    }

    /// Messages waiting out a delay or a backoff.
    pub(crate) fn waiting(&self) -> usize {
        self.with_expired(|s| s.waiting_len())
    }

    pub(crate) fn options(&self) -> &QueueOptions {
        &self.options
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
        if self.is_shut() {
            return Room::Closed;
        }
        state.writers.register(id, wait);
        if self.reserve() {
            state.writers.remove(id);
            return Room::Reserved;
        }
        Room::Registered
    }

    /// Takes back a staged message whose commit failed (`send_async`, a send with a message
    /// id), returning its capacity and forgetting its id; `None` if it was published after
    /// all.
    pub(crate) fn take_back(&self, receipt: Receipt) -> Option<Record<T>> {
        let mut state = self.state.lock();
        let entry = state.unstage(receipt.offset)?;
        self.occupied.fetch_sub(1, Ordering::AcqRel);
        let woken = state.writers.take();
        drop(state);
        woken.wake();
        if let (Some(ids), Some(id)) = (&self.dedupe, entry.message_id()) {
            ids.lock().forget(id, receipt);
        }
        Some(unshared(entry))
    }

    /// Forgets waiter `id` (a dropped `send_async` future).
    pub(crate) fn forget_writer(&self, id: u64) {
        self.state.lock().writers.remove(id);
    }

    /// The monotonic time, if this queue has ack timeouts to check (a clock read costs
    /// ~23 ns).
    fn timed_now(&self) -> Option<Nanos> {
        self.ack_timeout.map(|_| self.context.clock.ticks())
    }

    /// As [`timed_now`](Self::timed_now), from the coarse clock (~3 ns, not ~23): for a check
    /// that may see a timeout late, never early
    /// ([`Clock::ticks_coarse`](crate::clock::Clock::ticks_coarse)).
    fn timed_now_coarse(&self) -> Option<Nanos> {
        self.ack_timeout.map(|_| self.context.clock.ticks_coarse())
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

    /// Releases every delivery whose ack timeout has passed by `now` (`None`: no timeouts),
    /// makes due messages ready and moves expired ones on.
    #[inline]
    fn expire(
        &self,
        state: &mut QueueState<T>,
        now: Option<Nanos>,
    ) -> (Vec<(Item<T>, Reason)>, Woken) {
        // Stale entries never stay in front: no ack deadline passed before the front's. The
        // common case, decided without a call.
        let due = now.is_some_and(|now| state.next_deadline().is_some_and(|at| at <= now));
        if !due && !state.has_timed() {
            return (Vec::new(), Woken::none());
        }
        self.expire_slow(state, now)
    }

    /// [`expire`](Self::expire) when something may be due.
    #[inline(never)]
    fn expire_slow(
        &self,
        state: &mut QueueState<T>,
        now: Option<Nanos>,
    ) -> (Vec<(Item<T>, Reason)>, Woken) {
        let mut dead = Vec::new();
        let mut woken = Woken::none();
        if state.has_timed() {
            self.process_timed(state, now, &mut dead, &mut woken);
        }
        let Some(now) = now else {
            return (dead, woken);
        };
        let expired = state.expired(now);
        // Newest first, so that requeueing at the front keeps the oldest in front.
        for delivery in expired.into_iter().rev() {
            // Live: the deadline index lists live deliveries only.
            let _ = self.release_locked(
                state,
                delivery,
                Reason::Timeout,
                None,
                &mut dead,
                &mut woken,
            );
        }
        (dead, woken)
    }

    /// Releases a delivery; fails with why, if known, if it had already ended.
    fn release_locked(
        &self,
        state: &mut QueueState<T>,
        delivery: DeliveryId,
        reason: Reason,
        wait: Option<std::time::Duration>,
        dead: &mut Vec<(Item<T>, Reason)>,
        woken: &mut Woken,
    ) -> Result<(), Option<Reason>> {
        match state.release(delivery, reason, self.options.max_delivery_count(), wait) {
            Released::Requeued => {
                self.publish_hints(state);
                woken.join(state.readers.take());
            }
            // Its consumers learn the new due time from the hints (a lock-free look), the
            // broker's timer or a manual clock's advance; one waiting for its prefetch window
            // may go on now.
            Released::Waiting => {
                self.publish_hints(state);
                if self.options.prefetch_limit().is_some() {
                    woken.join(state.readers.take());
                }
            }
            Released::Dropped(item) => self.drop_expired(state, item, woken),
            Released::Dead(item, reason) => {
                // Before the lock is let go: a wait for idle that sees this queue idle also
                // sees that work moved (to the dead-letter queue, pushed after unlocking).
                self.context.idle.moved();
                woken.join(self.left(state));
                dead.push((item, reason));
            }
            Released::Stale(why) => return Err(why),
        }
        Ok(())
    }

    /// Moves dead letters on and wakes whoever a release freed, outside the lock.
    #[inline]
    fn after_release(&self, dead: Vec<(Item<T>, Reason)>, woken: Woken) {
        woken.wake();
        if dead.is_empty() {
            return;
        }
        self.move_dead(dead);
    }

    /// Moves dead letters on (see [`after_release`](Self::after_release)).
    #[inline(never)]
    fn move_dead(&self, dead: Vec<(Item<T>, Reason)>) {
        // A deleted queue's messages went with it, those in flight too: none is moved on (a
        // durable store would not record the move, so memory and file would disagree).
        if let Some(dlq) = self.dead_letter.as_ref().filter(|_| !self.is_deleted()) {
            for (item, reason) in dead {
                dlq.push_dead_letter(item, self, reason);
            }
        }
        self.context.idle.notify();
    }

    /// Accepts a dead letter from another queue, beyond capacity if need be.
    fn push_dead_letter(&self, item: Item<T>, from: &Self, reason: Reason) {
        let original = item.meta.as_deref().or(item.entry.meta.as_deref());
        let mut headers = original.map_or_else(Headers::new, |m| m.headers.clone());
        let reason = match reason {
            Reason::Nack => "nack",
            Reason::Dropped => "dropped",
            Reason::Timeout => "ack-timeout",
            Reason::Expired => "expired",
        };
        headers.push_dead_letter(&from.name, reason, item.count);
        observe::traced! {
            let (queue, offset, delivery_count) = (from.name.as_str(), item.id, item.count);
            if reason == "expired" {
                observe::event!("embus::queue", DEBUG, queue, offset, delivery_count, "expire");
            }
            let dead_letter = self.name.as_str();
            observe::event!(
                "embus::queue", INFO,
                queue, offset, delivery_count, reason, dead_letter, "dead_letter"
            );
        }
        self.occupied.fetch_add(1, Ordering::AcqRel);
        self.push_moved(item, from, headers);
    }

    /// Accepts a message moved from another queue (its capacity taken), with these headers,
    /// its key and timestamp, no timing, delivery count 0: the source's row is deleted and
    /// this one inserted in one commit.
    fn push_moved(&self, item: Item<T>, from: &Self, headers: Headers) {
        let original = item.meta.as_deref().or(item.entry.meta.as_deref());
        let meta = Meta {
            key: original.and_then(|m| m.key.clone()),
            headers,
            timing: Timing::default(),
        };
        let (ts, size) = (item.ts, item.entry.size);
        // Only a store that keeps bytes encodes: the dead letter as memory holds it, before
        // the lock (the payload's `Serialize` is the user's code).
        let encoded = self.context.store.reads_back().then(|| {
            self.coder
                .encode_any(&item.entry.payload, meta.key.as_deref(), &meta.headers)
        });
        let body = || match &encoded {
            Some(Ok(bytes)) => Ok(bytes.clone()),
            Some(Err(e)) => Err(Error::Encode {
                name: self.name.clone(),
                message: e.to_string(),
            }),
            None => unreachable!("a store that keeps no bytes asks for none"),
        };
        let mut state = self.state.lock();
        let to_id = state.push(item.ts, item.entry, Some(Arc::new(meta.clone())));
        self.context.store.progress(Progress::DeadLetter {
            queue: &from.sink,
            id: item.id,
            to: &self.sink,
            to_id,
            headers: &meta.headers,
            body: &body,
            ts,
            size,
        });
        self.publish_hints(&mut state);
        let woken = state.readers.take();
        drop(state);
        woken.wake();
    }

    /// Acks a delivery; fails with why, if known, if it had already ended (timed out, or its
    /// consumer dropped).
    pub(crate) fn ack(&self, delivery: DeliveryId, id: u64) -> Result<(), Option<Reason>> {
        let now = self.timed_now_coarse(); // outside the lock
        let mut state = self.state.lock();
        // A delivery whose timeout passed (by the coarse clock) is no longer acked, even if
        // nobody looked yet.
        let (dead, mut woken) = self.expire(&mut state, now);
        let acked = state.ack(delivery);
        if acked.is_ok() {
            woken.join(self.left(&mut state));
        }
        drop(state);
        // The message goes after unlocking (the lock is not held across its reference count).
        let acked = acked.map(drop);
        if acked.is_ok() {
            self.context.store.progress(Progress::QueueAck {
                queue: &self.sink,
                id,
            });
            self.context.idle.notify();
        }
        self.after_release(dead, woken);
        acked
    }

    /// Releases a delivery for redelivery or dead-lettering; fails as [`ack`](Self::ack).
    pub(crate) fn release(
        &self,
        delivery: DeliveryId,
        reason: Reason,
        delay: Option<std::time::Duration>,
    ) -> Result<(), Option<Reason>> {
        let now = self.timed_now();
        let mut state = self.state.lock();
        // A delivery whose timeout passed ends as timed out (its dead letter says so), even if
        // nobody looked yet; it is then stale here.
        let (mut dead, mut woken) = self.expire(&mut state, now);
        let released =
            self.release_locked(&mut state, delivery, reason, delay, &mut dead, &mut woken);
        drop(state);
        self.after_release(dead, woken);
        released
    }

    /// Restarts a live delivery's ack timeout (work in progress); fails as [`ack`](Self::ack).
    /// Without an ack timeout there is nothing to restart.
    pub(crate) fn extend(&self, delivery: DeliveryId) -> Result<(), Option<Reason>> {
        let Some(now) = self.timed_now() else {
            return self.state.lock().check(delivery);
        };
        let mut state = self.state.lock();
        let deadline = now.saturating_add(self.ack_timeout.unwrap_or(0));
        // One whose timeout already passed has ended, even if nobody looked yet.
        let (dead, woken) = self.expire(&mut state, Some(now));
        let extended = state.extend(delivery, deadline);
        self.publish_hints(&mut state);
        drop(state);
        self.after_release(dead, woken);
        extended
    }
}

/// The record of an entry that was never published, so nothing else holds it. Asserted: a
/// shared entry here would shrink a failed send's hand-back, losing a message silently.
fn unshared<T>(entry: Arc<Entry<T>>) -> Record<T> {
    match Arc::try_unwrap(entry) {
        Ok(entry) => entry.into_record(),
        Err(_) => unreachable!("an unpublished record is held only by its send"),
    }
}

/// Deleting: a deleted queue refuses sends like a closed broker, with its own error.
impl<T> QueueCore<T> {
    /// The broker closed or the queue deleted: no more sends.
    fn is_shut(&self) -> bool {
        self.context.is_closed() || self.gone.is_set()
    }

    /// Whether the queue was deleted.
    pub(crate) fn is_deleted(&self) -> bool {
        self.gone.is_set()
    }

    /// `Error::Deleted` once the queue is deleted, else whether the broker is open.
    pub(crate) fn check_live(&self) -> Result<(), Error> {
        if self.gone.is_set() {
            return Err(Error::Deleted {
                name: self.name.clone(),
            });
        }
        self.context.check_open()
    }

    /// Why a send declined as closed failed: the queue deleted, or the broker closed.
    fn closed(&self) -> Fail {
        match self.check_live() {
            Err(e @ Error::Deleted { .. }) => Fail::Failed(e),
            _ => Fail::Disconnected,
        }
    }
}

impl<T: Payload> Control for QueueCore<T> {
    fn gone(&self) -> &Gone {
        &self.gone
    }

    fn sinks(&self) -> Vec<Arc<dyn Sink>> {
        vec![Arc::clone(&self.sink)]
    }

    fn wake_all(&self) {
        // A clock advance fires ack timeouts here, even if no consumer is looking.
        self.with_expired(|_| ());
        let mut state = self.state.lock();
        let mut woken = state.readers.take();
        woken.join(state.writers.take());
        drop(state);
        woken.wake();
    }

    fn busy(&self, options: IdleOptions) -> Option<String> {
        // Dead letters parked in a dead-letter queue are not work, unless asked and someone
        // consumes them.
        let parked_only = self.has_feeders.load(Ordering::Acquire)
            && !(options.waits_for_dead_letters() && self.consumers.load(Ordering::Acquire) > 0);
        self.with_expired(|s| {
            if !parked_only && s.has_staged() {
                return Some(format!("queue `{}`: sends not yet stored", self.name));
            }
            // A message waiting out its delay or backoff is work still to do.
            let ready = if parked_only {
                0
            } else {
                s.ready_len() + s.waiting_len()
            };
            (ready + s.in_flight() > 0).then(|| {
                format!(
                    "queue `{}`: {} ready, {} waiting, {} in flight",
                    self.name,
                    s.ready_len(),
                    s.waiting_len(),
                    s.in_flight()
                )
            })
        })
    }

    fn next_deadline(&self) -> Option<Nanos> {
        self.state.lock().next_wake()
    }

    fn stats(&self, into: &mut crate::stats::Stats) {
        into.queues.push(QueueCore::stats(self));
    }
}

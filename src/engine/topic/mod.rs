//! The engine of one topic: partitions, producers' appends, groups and waiting for room.

mod deduped;
mod group;
mod groups;
mod load;
mod log;
mod partition;
mod retry;
mod stats;
mod subscriber;
mod tx;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, MutexGuard};

pub(crate) use self::group::{Group, Member, Why};
pub(crate) use self::groups::{is_group_declaration, stored_dead_letter};
pub(crate) use self::log::{
    Cold, Limits, Loader, Log, Partition, Read, Reader, StoredRef, not_due,
};
pub(crate) use self::subscriber::Subscriber;
pub(crate) use self::tx::TopicPart;

use crate::engine::dedupe::Ids;
use crate::engine::notify::{Backoff, Deadline, Wait, Woken};
use crate::engine::seam;
use crate::engine::{Context, Control, Fail, Gone, Sent};
use crate::error::Error;
use crate::observe;
use crate::options::{IdleOptions, Start, TopicOptions};
use crate::record::{Entry, Nanos, Payload, Receipt, Record, to_nanos};
use crate::stats::Meter;
use crate::store::{Append, Commit, LogId, Sink, Stager};

/// The engine of one topic, shared by its handles, producers and consumers.
pub(crate) struct TopicCore<T> {
    pub(crate) name: String,
    pub(crate) options: TopicOptions,
    pub(crate) limits: Limits,
    pub(crate) partitions: Box<[Partition<T>]>,
    /// What the durable store's writer publishes into, per partition.
    sinks: Box<[Arc<dyn Sink>]>,
    round_robin: AtomicU32,
    groups: Mutex<HashMap<String, Arc<Group<T>>>>,
    /// The message ids of the dedupe window, if the topic has one: locked before any
    /// partition ([`dedupe`](crate::engine::dedupe) has the order).
    dedupe: Option<Mutex<Ids>>,
    /// Payloads to and from the store's bytes.
    coder: seam::Coder<T>,
    pub(crate) context: Arc<Context>,
    /// Set once the topic is deleted.
    gone: Gone,
    /// Per partition: appends, as rates for stats.
    meters: Mutex<Vec<Meter>>,
}

/// A partition as the store's writer sees it.
struct PartitionSink<T> {
    topic: Weak<TopicCore<T>>,
    partition: u32,
    log: LogId,
}

impl<T: Payload> Sink for PartitionSink<T> {
    fn log(&self) -> &LogId {
        &self.log
    }

    fn publish(&self, upto: u64) {
        let Some(topic) = self.topic.upgrade() else {
            return;
        };
        let mut log = topic.partitions[self.partition as usize].lock();
        let woken = log.publish_staged(&topic.limits, upto);
        drop(log);
        woken.wake();
    }

    fn floor(&self) -> Option<u64> {
        let topic = self.topic.upgrade()?;
        let base = topic.partitions[self.partition as usize].lock().base();
        Some(base)
    }
}

impl<T: Payload> TopicCore<T> {
    /// Creates the topic, restoring its partitions and groups from the store.
    pub(crate) fn create(
        name: &str,
        options: TopicOptions,
        context: Arc<Context>,
    ) -> Result<Arc<Self>, Error> {
        let limits = Limits::new(&options);
        // Trimming needs timestamps and sizes only under an age or a byte limit.
        let indexed = limits.age.is_some() || limits.bytes.is_some();
        let mut partitions = Vec::new();
        for p in 0..options.partition_count() {
            let log = LogId::partition(name, p);
            let restored = context.store.restore(&log)?;
            let load = context.store.reads_back().then(|| {
                Box::new(load::PartitionLoad {
                    store: Arc::clone(&context.store),
                    log,
                    codec: context.codec,
                    name: name.to_owned(),
                    partition: p,
                    compacted: options.is_compacted(),
                }) as Loader<T>
            });
            let partition = Partition::restored(&restored, load, indexed);
            partitions.push(partition.compacted(options.is_compacted()));
        }
        // Retention as of now: a crash may have left the file one commit behind the trims.
        let now = context.clock.now();
        for part in &partitions {
            part.lock().trim(&limits, now, None);
        }
        let meters = stats::meters(&partitions, &context);
        let dedupe = deduped::restore(name, options.dedupe_window(), &context)?;
        let stored_groups = context.store.groups(name)?;
        let mut names: Vec<&str> = stored_groups.iter().map(|(g, _, _)| g.as_str()).collect();
        names.dedup();
        let mut restored = Vec::new();
        for group in names {
            restored.push((group, groups::stored_options(&context, name, group)?));
        }
        let core = Arc::new_cyclic(|me: &Weak<Self>| Self {
            name: name.to_owned(),
            options,
            limits: Limits::new(&options),
            partitions: partitions.into(),
            sinks: (0..options.partition_count())
                .map(|partition| {
                    Arc::new(PartitionSink {
                        topic: Weak::clone(me),
                        partition,
                        log: LogId::partition(name, partition).compacted(options.is_compacted()),
                    }) as Arc<dyn Sink>
                })
                .collect(),
            round_robin: AtomicU32::new(0),
            groups: Mutex::new(HashMap::new()),
            dedupe,
            coder: seam::Coder::new(name, context.codec),
            context,
            gone: Gone::default(),
            meters,
        });
        let acked = if stored_groups.is_empty() {
            Vec::new()
        } else {
            core.context.store.acked(name)?
        };
        for (group, options) in restored {
            let at = |p: u32| {
                stored_groups
                    .iter()
                    .find(|(g, q, _)| g == group && *q == p)
                    .map(|(_, _, offset)| *offset)
            };
            core.restore_group(group, options, at);
            let restored = core.groups.lock().get(group).cloned();
            for (_, partition, offset) in acked.iter().filter(|(g, _, _)| g == group) {
                if let Some(restored) = &restored {
                    restored.restore_acked(*partition, [*offset]);
                }
            }
        }
        Ok(core)
    }

    pub(crate) fn pick_partition(&self, key: Option<&[u8]>) -> u32 {
        let n = self.options.partition_count();
        match key {
            _ if n == 1 => 0,
            Some(key) => partition::for_key(key, n),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        }
    }

    /// The size byte retention counts; 0 (and no work) without a byte limit.
    fn size_of(&self, record: &Record<T>) -> u32 {
        if self.limits.bytes.is_none() {
            return 0;
        }
        let len = self.coder.codec().encoded_len(&record.payload)
            + record.key_ref().map_or(0, <[u8]>::len)
            + record.headers().byte_len();
        u32::try_from(len).unwrap_or(u32::MAX)
    }

    /// Where a reader starting at `start` begins (after dropping expired messages, so a new
    /// reader never starts on one).
    pub(crate) fn start_offset(&self, log: &mut Log<T>, start: Start) -> u64 {
        self.trim_for_read(log);
        match start {
            Start::Earliest => log.base(),
            Start::Latest => log.end(),
            Start::Offset(offset) => offset.min(log.end()),
            // A message sent at or after `time` may have a coarse stamp that lags it.
            Start::Time(time) => {
                log.seek(to_nanos(time).saturating_sub(self.context.clock.seek_margin()))
            }
        }
    }

    /// Retained messages at or after `position` in `log`.
    pub(crate) fn retained_after(&self, log: &Partition<T>, position: u64) -> u64 {
        let mut log = log.lock();
        self.trim_for_read(&mut log);
        log.end() - position.clamp(log.base(), log.end())
    }

    /// [`publish`](Self::publish) of a record without a message id (or without a window).
    pub(crate) fn publish_with(
        &self,
        mut record: Record<T>,
        deadline: Deadline,
    ) -> Result<Receipt, (Record<T>, Fail)> {
        let partition = self.pick_partition(record.key_ref());
        let size = self.size_of(&record);
        loop {
            match self.publish_once(partition, record, size, Commit::Wait, None) {
                Err((declined, Fail::Full)) => record = declined,
                done => return done.map(|(receipt, _)| receipt),
            }
            if let Err(fail) = self.wait_for_room(partition, size, deadline) {
                return Err((record, fail));
            }
        }
    }

    /// [`publish_batch`](Self::publish_batch) of records without message ids (or without a
    /// window).
    pub(crate) fn publish_batch_with(
        &self,
        records: Vec<Record<T>>,
    ) -> Result<Vec<Receipt>, (Vec<Record<T>>, Fail)> {
        if let Err(fail) = self.refuses(records.iter()) {
            return Err((records, fail));
        }
        let len = records.len();
        let mut runs: Vec<Vec<(usize, Record<T>)>> =
            (0..self.partitions.len()).map(|_| Vec::new()).collect();
        for (index, record) in records.into_iter().enumerate() {
            let partition = self.pick_partition(record.key_ref());
            runs[partition as usize].push((index, record));
        }
        let mut receipts = vec![None; len];
        let mut returned = Vec::new();
        let mut runs = runs.into_iter().enumerate();
        while let Some((partition, run)) = runs.next() {
            let partition = partition as u32;
            let mut pending: VecDeque<(usize, Record<T>)> = run.into();
            while !pending.is_empty() {
                let result = self.append_run(partition, &mut pending, &mut receipts, &mut returned);
                let size = pending.front().map(|(_, r)| self.size_of(r));
                let fail = match (result, size) {
                    (Ok(()), None) => break,
                    (Ok(()), Some(size)) => {
                        match self.wait_for_room(partition, size, Deadline::Never) {
                            Ok(()) => continue,
                            Err(fail) => fail,
                        }
                    }
                    (Err(fail), _) => fail,
                };
                let mut unsent: Vec<(usize, Record<T>)> = returned;
                unsent.extend(pending);
                unsent.extend(runs.flat_map(|(_, run)| run));
                unsent.sort_by_key(|(index, _)| *index);
                return Err((unsent.into_iter().map(|(_, r)| r).collect(), fail));
            }
        }
        let receipts: Vec<Receipt> = receipts.into_iter().flatten().collect();
        observe::traced! { receipts.iter().for_each(|r| self.trace_send(r.partition, r.offset)); }
        Ok(receipts)
    }

    /// Appends records from `pending` to `partition` under one lock while they have room;
    /// `Err` only if the store failed or the broker closed (records the store handed back are
    /// pushed to `returned`).
    fn append_run(
        &self,
        partition: u32,
        pending: &mut VecDeque<(usize, Record<T>)>,
        receipts: &mut [Option<Receipt>],
        returned: &mut Vec<(usize, Record<T>)>,
    ) -> Result<(), Fail> {
        let mut job = RunJob {
            topic: self,
            partition,
            pending,
            receipts,
            staged: Vec::new(),
            returned,
            closed: false,
        };
        let stored = self.context.append(&mut job, Commit::Wait);
        match (stored, job.closed) {
            (Err(e), _) => Err(Fail::Failed(e)),
            (Ok(_), true) => Err(self.closed()),
            (Ok(_), false) => Ok(()),
        }
    }

    /// [`try_publish`](Self::try_publish), with the dedupe window's ids locked if the record
    /// has one.
    fn try_publish_with(
        &self,
        partition: u32,
        mut record: Record<T>,
        id: u64,
        wait: Wait<'_>,
        mut ids: Option<&mut Ids>,
    ) -> Result<Sent, (Record<T>, Fail)> {
        let size = self.size_of(&record);
        loop {
            match self.publish_once(partition, record, size, Commit::Poll, ids.as_deref_mut()) {
                Err((declined, Fail::Full)) if wait.takes_locks() => record = declined,
                done => return done,
            }
            match self.register_writer(partition, size, id, wait) {
                Ok(true) => continue, // room appeared meanwhile
                Ok(false) => return Err((record, Fail::Full)),
                Err(fail) => return Err((record, fail)),
            }
        }
    }

    /// Stores and appends `record` if there is room now ([`Fail::Full`] otherwise), with the
    /// dedupe window's ids locked if it has an id (they are written with it); unless `commit`
    /// is [`Commit::Wait`], a durable store's commit may still be pending (the ticket).
    #[inline]
    fn publish_once(
        &self,
        partition: u32,
        record: Record<T>,
        size: u32,
        commit: Commit,
        ids: Option<&mut Ids>,
    ) -> Result<Sent, (Record<T>, Fail)> {
        if self.context.is_closed() {
            return Err((record, Fail::Disconnected));
        }
        if let Err(fail) = self.refuses(std::iter::once(&record)) {
            return Err((record, fail));
        }
        let mut job = OneJob {
            topic: self,
            partition,
            entry: Some(Entry::new(record, size)),
            offset: None,
            closed: false,
            ids,
        };
        let stored = self.context.append(&mut job, commit);
        let fail = match (stored, job.offset) {
            (Ok(ticket), Some(offset)) => {
                observe::traced! { self.trace_send(partition, offset); }
                return Ok((Receipt { partition, offset }, ticket));
            }
            (Ok(_), None) if job.closed => self.closed(),
            (Ok(_), None) => Fail::Full,
            (Err(e), None) => Fail::Failed(e),
            (Err(_), Some(_)) => unreachable!("a store that published returns Ok"),
        };
        match job.entry {
            Some(entry) => Err((entry.into_record(), fail)),
            None => unreachable!("an entry that was not published is handed back"),
        }
    }

    /// Closed or deleted: asked under a partition's lock, the lock that close's wake-up takes,
    /// so a consumer's last look after close sees every push that returned a receipt. So does
    /// delete's: a send that got past the flag has handed its records to the store before the
    /// delete is.
    fn ended_for_sends(&self) -> bool {
        self.context.is_closed() || self.gone.is_set()
    }

    /// Room for `size` more bytes in `log` now, under its lock: `Err(closed)` if none.
    fn room(&self, log: &mut Log<T>, now: Nanos, size: u32) -> Result<(), bool> {
        if self.ended_for_sends() {
            return Err(true);
        }
        if log.has_room(&self.limits, now, size) {
            Ok(())
        } else {
            Err(false) // no room under `Block`: declined
        }
    }

    /// Whether `log` has room for one more message of `size` bytes (trimming what retention
    /// allows now, nothing on the message's behalf).
    fn has_room(&self, log: &mut Log<T>, size: u32) -> bool {
        // Only age retention needs the time to make room.
        let now = self.limits.age.map_or(0, |_| self.context.clock.now());
        log.has_room(&self.limits, now, size)
    }

    /// Registers waiter `id` for room in `partition`, then re-checks under the same lock:
    /// `Ok(true)` if there is room after all (and the waiter is removed again).
    fn register_writer(
        &self,
        partition: u32,
        size: u32,
        id: u64,
        wait: Wait<'_>,
    ) -> Result<bool, Fail> {
        let mut log = self.partitions[partition as usize].lock();
        if self.ended_for_sends() {
            return Err(self.closed());
        }
        log.wait_for_room(id, wait);
        let room = self.has_room(&mut log, size);
        if room {
            log.remove_writer(id);
        }
        Ok(room)
    }

    /// Waits until `partition` has room for one more message of `size` bytes (`Block`).
    fn wait_for_room(&self, partition: u32, size: u32, deadline: Deadline) -> Result<(), Fail> {
        self.wait_for_room_or(partition, size, deadline, &|| false)
    }

    /// As [`wait_for_room`](Self::wait_for_room), but returns `Ok` (to look again) as soon as
    /// `stop` says so, asked each time the waiter is registered, before it parks.
    fn wait_for_room_or(
        &self,
        partition: u32,
        size: u32,
        deadline: Deadline,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), Fail> {
        let id = self.context.next_id();
        let mut backoff = Backoff::new();
        loop {
            let mut log = self.partitions[partition as usize].lock();
            if self.ended_for_sends() {
                return Err(self.closed());
            }
            if self.has_room(&mut log, size) {
                log.remove_writer(id);
                return Ok(());
            }
            if deadline.passed() {
                log.remove_writer(id);
                return Err(Fail::Full);
            }
            drop(log);
            if backoff.snooze() {
                continue; // readers usually make room within a few yields
            }
            if self.register_writer(partition, size, id, Wait::Thread)? {
                return Ok(());
            }
            if stop() {
                self.forget_writer(partition, id);
                return Ok(());
            }
            deadline.park(None);
        }
    }

    /// Trims by age (when set) before a read, so readers never see expired messages.
    pub(crate) fn trim_for_read(&self, log: &mut Log<T>) {
        if self.limits.age.is_some() {
            log.trim(&self.limits, self.context.clock.now(), None);
        }
    }
}

impl<T> TopicCore<T> {
    /// Closed, and nothing staged will be published any more: a consumer's end.
    pub(crate) fn has_ended(&self) -> bool {
        let context = &self.context;
        context.is_closed()
            && (context.has_settled() || !self.partitions.iter().any(|p| p.lock().has_staged()))
    }

    /// Takes back a staged record whose commit failed (`send_async`, a send with a message
    /// id), forgetting its id; `None` if it was published after all.
    pub(crate) fn take_back(&self, receipt: Receipt) -> Option<Record<T>> {
        let part = self.partitions.get(receipt.partition as usize)?;
        let entry = part.lock().unstage(receipt.offset)?;
        if let (Some(ids), Some(id)) = (&self.dedupe, entry.message_id()) {
            ids.lock().forget(id, receipt);
        }
        Some(entry.into_record())
    }

    /// The dedupe window's ids, locked; `None` if the topic has no window. Take it before any
    /// partition lock, and never hold it across a wait (see [`dedupe`](crate::engine::dedupe)).
    pub(crate) fn dedupe(&self) -> Option<MutexGuard<'_, Ids>> {
        self.dedupe.as_ref().map(|ids| ids.lock())
    }

    /// Forgets waiter `id` (a dropped `send_async` future).
    pub(crate) fn forget_writer(&self, partition: u32, id: u64) {
        if let Some(part) = self.partitions.get(partition as usize) {
            part.lock().remove_writer(id);
        }
    }
}

/// Deleting and compaction: what a send is refused for before it is tried.
impl<T> TopicCore<T> {
    /// `Error::Deleted` once the topic is deleted, else whether the broker is open.
    pub(crate) fn check_live(&self) -> Result<(), Error> {
        if self.gone.is_set() {
            return Err(self.deleted());
        }
        self.context.check_open()
    }

    /// Whether the topic was deleted.
    #[inline]
    pub(crate) fn is_deleted(&self) -> bool {
        self.gone.is_set()
    }

    fn deleted(&self) -> Error {
        Error::Deleted {
            name: self.name.clone(),
        }
    }

    /// Why a send the engine declined as closed failed: the topic deleted, or the broker.
    fn closed(&self) -> Fail {
        if self.gone.is_set() {
            Fail::Failed(self.deleted())
        } else {
            Fail::Disconnected
        }
    }

    /// A deleted topic refuses sends; a compacted one, records without a key; every topic,
    /// records with an invalid message id.
    fn refuses<'a>(&self, mut records: impl Iterator<Item = &'a Record<T>>) -> Result<(), Fail>
    where
        T: 'a,
    {
        if self.gone.is_set() {
            return Err(Fail::Failed(self.deleted()));
        }
        let compacted = self.options.is_compacted();
        records.try_for_each(|r| {
            if compacted && r.key_ref().is_none() {
                return Err(Fail::Failed(Error::KeyRequired {
                    topic: self.name.clone(),
                }));
            }
            crate::engine::dedupe::id_of(r, &self.name).map_err(Fail::Failed)?;
            Ok(())
        })
    }
}

impl<T: Payload> Control for TopicCore<T> {
    fn gone(&self) -> &Gone {
        &self.gone
    }

    fn dead_letter_users(&self, queue: &str) -> Vec<String> {
        TopicCore::dead_letter_users(self, queue)
    }

    fn sinks(&self) -> Vec<Arc<dyn Sink>> {
        self.sinks.to_vec()
    }

    fn wake_all(&self) {
        let groups: Vec<Arc<Group<T>>> = self.groups.lock().values().cloned().collect();
        // A clock advance fires the groups' ack timeouts (and dead letters) even if no member
        // is looking.
        for group in &groups {
            group.expire_now(self);
        }
        let mut woken = Woken::none();
        for log in self.partitions.iter() {
            woken.join(log.lock().take_all_waiters());
        }
        for group in &groups {
            woken.join(group.take_waiters());
        }
        woken.wake();
    }

    fn busy(&self, _options: IdleOptions) -> Option<String> {
        let groups: Vec<Arc<Group<T>>> = self.groups.lock().values().cloned().collect();
        for group in &groups {
            group.expire_now(self);
        }
        if !groups.is_empty() && self.partitions.iter().any(|p| p.lock().has_staged()) {
            // Sent, not yet committed (durable mode): the groups will have them to read.
            return Some(format!("topic `{}`: sends not yet stored", self.name));
        }
        groups.iter().find_map(|group| {
            let behind = group.behind(self);
            (behind > 0).then(|| {
                format!(
                    "group `{}` on topic `{}`: {behind} messages not acked",
                    group.name(),
                    self.name
                )
            })
        })
    }

    fn next_deadline(&self) -> Option<Nanos> {
        let groups: Vec<Arc<Group<T>>> = self.groups.lock().values().cloned().collect();
        groups.iter().filter_map(|g| g.next_deadline()).min()
    }

    fn stats(&self, into: &mut crate::stats::Stats) {
        into.topics.push(TopicCore::stats(self));
    }
}

/// One record to one partition, as the store sees it.
struct OneJob<'a, T> {
    topic: &'a TopicCore<T>,
    partition: u32,
    /// The entry, until published or staged (and again if handed back).
    entry: Option<Entry<T>>,
    offset: Option<u64>,
    closed: bool,
    /// The dedupe window's ids, locked, if the record has an id.
    ids: Option<&'a mut Ids>,
}

impl<T: Payload> Append for OneJob<'_, T> {
    fn publish(&mut self) {
        let Some(entry) = self.entry.take() else {
            return;
        };
        let now = self.topic.context.clock.stamp(|| entry.counts_from_stamp());
        let mut log = self.topic.partitions[self.partition as usize].lock();
        if self.topic.ended_for_sends() {
            self.closed = true;
            self.entry = Some(entry);
            return;
        }
        match log.try_append(&self.topic.limits, now, entry) {
            Ok((at, woken)) => {
                drop(log);
                woken.wake();
                self.offset = Some(at);
            }
            Err(entry) => self.entry = Some(entry), // no room under `Block`: declined
        }
    }

    fn encode(&mut self) -> Result<Vec<Vec<u8>>, Error> {
        let body = self
            .entry
            .as_ref()
            .map(|e| self.topic.coder.encode_entry(e));
        body.into_iter().collect()
    }

    fn stage(&mut self, stager: &mut dyn Stager) {
        let Some(entry) = self.entry.take() else {
            return;
        };
        let now = self.topic.context.clock.stamp(|| entry.counts_from_stamp());
        let p = self.partition as usize;
        let mut log = self.topic.partitions[p].lock();
        match self.topic.room(&mut log, now, entry.size) {
            Ok(()) => {
                let size = entry.size;
                let row = self.ids.as_deref_mut().and_then(|ids| {
                    let id = entry.message_id()?;
                    ids.row(id, self.partition)
                });
                let (offset, ts) = log.stage(now, entry);
                stager.record(&self.topic.sinks[p], offset, ts, size, row);
                self.offset = Some(offset);
            }
            Err(closed) => {
                self.closed = closed;
                self.entry = Some(entry);
            }
        }
        stager.end();
    }

    fn unstage(&mut self) {
        if let Some(offset) = self.offset.take() {
            let mut log = self.topic.partitions[self.partition as usize].lock();
            self.entry = log.unstage(offset);
        }
    }
}

/// A run of records to one partition (`send_batch`), as the store sees it.
struct RunJob<'a, 'b, T> {
    topic: &'a TopicCore<T>,
    partition: u32,
    pending: &'b mut VecDeque<(usize, Record<T>)>,
    receipts: &'b mut [Option<Receipt>],
    /// Staged records: input index and offset.
    staged: Vec<(usize, u64)>,
    returned: &'b mut Vec<(usize, Record<T>)>,
    closed: bool,
}

impl<T: Payload> RunJob<'_, '_, T> {
    /// The stamp for the run: precise if something of a record's counts from it.
    fn stamp(&self) -> Nanos {
        let exact = || self.pending.iter().any(|(_, r)| r.counts_from_stamp());
        self.topic.context.clock.stamp(exact)
    }

    /// Under the partition lock: moves records that have room out of `pending`, in order.
    fn take(
        &mut self,
        log: &mut Log<T>,
        now: Nanos,
        mut put: impl FnMut(&mut Log<T>, usize, Entry<T>) -> u64,
    ) {
        while let Some((_, record)) = self.pending.front() {
            let size = self.topic.size_of(record);
            match self.topic.room(log, now, size) {
                Ok(()) => {}
                Err(closed) => {
                    self.closed = closed;
                    break;
                }
            }
            let Some((index, record)) = self.pending.pop_front() else {
                break;
            };
            let offset = put(log, index, Entry::new(record, size));
            self.receipts[index] = Some(Receipt {
                partition: self.partition,
                offset,
            });
        }
    }
}

impl<T: Payload> Append for RunJob<'_, '_, T> {
    fn publish(&mut self) {
        let now = self.stamp();
        let mut log = self.topic.partitions[self.partition as usize].lock();
        let mut woken = Woken::none();
        self.take(&mut log, now, |log, _, entry| {
            let (offset, readers) = log.append(&self.topic.limits, now, entry);
            woken.join(readers);
            offset
        });
        drop(log);
        woken.wake();
    }

    fn encode(&mut self) -> Result<Vec<Vec<u8>>, Error> {
        let coder = &self.topic.coder;
        let encode =
            |(_, r): &(usize, Record<T>)| coder.encode(&r.payload, r.key_ref(), r.headers());
        self.pending.iter().map(encode).collect()
    }

    fn stage(&mut self, stager: &mut dyn Stager) {
        let p = self.partition as usize;
        let sink = &self.topic.sinks[p];
        let now = self.stamp();
        let mut log = self.topic.partitions[p].lock();
        let mut staged = std::mem::take(&mut self.staged);
        self.take(&mut log, now, |log, index, entry| {
            let size = entry.size;
            let (offset, ts) = log.stage(now, entry);
            stager.record(sink, offset, ts, size, None);
            staged.push((index, offset));
            offset
        });
        self.staged = staged;
        stager.end();
    }

    fn unstage(&mut self) {
        let mut log = self.topic.partitions[self.partition as usize].lock();
        for (index, offset) in self.staged.drain(..) {
            self.receipts[index] = None;
            if let Some(entry) = log.unstage(offset) {
                self.returned.push((index, entry.into_record()));
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! The transaction model: a source queue consumed in transactions that send to a bounded
//! queue and a 2-partition topic, both under the same kind of dedupe window; commits (that fit,
//! or fail `Full` and are kept to retry), aborts, plain sends with ids, consumption, a manual
//! clock; in the durable modes, reopens and power cuts (`tx_durable.rs`).

use std::collections::HashMap;

use embus::{Dedupe, Receipt, Transaction};

use super::durable::{Mode, Storage, bump, mode, torn};
use super::*;

#[path = "tx_durable.rs"]
mod tx_durable;

/// The dedupe window of both targets.
#[derive(Debug, Clone, Copy)]
pub(super) enum Window {
    None,
    /// `Dedupe::last(n)`.
    Last(usize),
    /// `Dedupe::within(secs)`.
    Within(u64),
}

#[derive(Debug, Clone)]
pub(super) struct TxSetup {
    pub(super) capacity: usize,
    pub(super) window: Window,
    pub(super) mode: Mode,
}

#[derive(Debug, Clone)]
pub(super) enum TxOp {
    /// A plain send to the source queue.
    Produce(u32),
    /// `try_recv` on the source queue's worker.
    Take,
    /// In the open transaction (one is begun if none is open): a record for `jobs`.
    SendJob {
        payload: u32,
        id: Option<u8>,
    },
    /// In the open transaction: a keyed record for `events`.
    SendEvent {
        payload: u32,
        key: u8,
        id: Option<u8>,
    },
    /// In the open transaction: the ack of a held source delivery.
    Ack(Pick),
    Commit,
    Abort,
    /// `try_send_record` to `jobs`, outside any transaction.
    PlainJob {
        payload: u32,
        id: Option<u8>,
    },
    /// `try_send_record` to `events`, outside any transaction.
    PlainEvent {
        payload: u32,
        key: u8,
        id: Option<u8>,
    },
    /// Takes and acks one message of `jobs`.
    ConsumeJob,
    /// Advances the clock by this many seconds.
    Advance(u64),
    /// Closes the broker and opens the store again (durable modes): the open transaction and
    /// the held source deliveries end with the old broker.
    Reopen,
    /// Cuts the power and opens what the disk kept, or a torn variant of it drawn with seed
    /// `torn` (crash mode; a reopen in durable mode). With `mid_commit: Some(n)`, the open
    /// transaction commits as the power goes: the disk keeps nothing synced after the
    /// commit's `n`th sync (redb syncs twice per commit: its data, then its header).
    Kill {
        torn: Option<u64>,
        mid_commit: Option<u8>,
    },
}

pub(super) fn tx_setup() -> impl Strategy<Value = TxSetup> {
    (
        1..=6usize,
        prop_oneof![
            Just(Window::None),
            (1..=4usize).prop_map(Window::Last),
            (1..=10u64).prop_map(Window::Within),
        ],
        mode(),
    )
        .prop_map(|(capacity, window, mode)| TxSetup {
            capacity,
            window,
            mode,
        })
}

fn an_id() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![Just(None), (0..5u8).prop_map(Some)]
}

pub(super) fn tx_op() -> impl Strategy<Value = TxOp> {
    prop_oneof![
        3 => any::<u32>().prop_map(TxOp::Produce),
        3 => Just(TxOp::Take),
        4 => (any::<u32>(), an_id()).prop_map(|(payload, id)| TxOp::SendJob { payload, id }),
        3 => (any::<u32>(), 0..4u8, an_id())
            .prop_map(|(payload, key, id)| TxOp::SendEvent { payload, key, id }),
        3 => pick().prop_map(TxOp::Ack),
        3 => Just(TxOp::Commit),
        1 => Just(TxOp::Abort),
        2 => (any::<u32>(), an_id()).prop_map(|(payload, id)| TxOp::PlainJob { payload, id }),
        1 => (any::<u32>(), 0..4u8, an_id())
            .prop_map(|(payload, key, id)| TxOp::PlainEvent { payload, key, id }),
        2 => Just(TxOp::ConsumeJob),
        1 => prop_oneof![Just(1u64), Just(5), Just(10), 0..=12u64].prop_map(TxOp::Advance),
        1 => Just(TxOp::Reopen),
        1 => (torn(), prop_oneof![Just(None), (0..=2u8).prop_map(Some)])
            .prop_map(|(torn, mid_commit)| TxOp::Kill { torn, mid_commit }),
    ]
}

/// One target's dedupe window, as `src/engine/dedupe.rs` keeps it, and in durable mode the
/// rows its store holds (`src/store/redb/ids.rs`).
#[derive(Debug, Clone, Default)]
struct Win {
    /// Ids in the order remembered, with their sequence numbers.
    order: VecDeque<(u8, u64)>,
    /// Id -> receipt, when, and sequence number.
    by_id: BTreeMap<u8, (Receipt, u64, u64)>,
    /// The sequence number of the next id remembered.
    next: u64,
    /// Durable: the store's rows, id -> receipt, when and sequence number. A row is written
    /// with its record's commit, after deleting the rows of the ids that left the window since
    /// the last one (`forgotten`); so the rows are the window plus what left it since.
    rows: Option<BTreeMap<u8, (Receipt, u64, u64)>>,
    forgotten: Vec<u8>,
}

impl Win {
    /// An empty window; `durable`: its store keeps rows.
    fn new(durable: bool) -> Self {
        Self {
            rows: durable.then(BTreeMap::new),
            ..Self::default()
        }
    }

    fn prune(&mut self, window: Window, now: u64) {
        while let Some(&(id, seq)) = self.order.front() {
            let live = self.by_id.get(&id).filter(|&&(_, _, s)| s == seq);
            if let Some(&(_, ts, _)) = live {
                let too_many = matches!(window, Window::Last(n) if self.by_id.len() > n);
                let too_old = matches!(window, Window::Within(w) if ts < now - w);
                if !(too_many || too_old) {
                    break;
                }
            }
            let live = live.is_some();
            self.order.pop_front();
            if live {
                self.by_id.remove(&id);
                if self.rows.is_some() {
                    self.forgotten.push(id);
                }
            }
        }
    }

    fn seen(&mut self, window: Window, id: u8, now: u64) -> Option<Receipt> {
        if matches!(window, Window::None) {
            return None;
        }
        self.prune(window, now);
        self.by_id.get(&id).map(|(r, _, _)| *r)
    }

    /// The message of `id` is stored as `receipt` at `now` (its row written first).
    fn remember(&mut self, window: Window, id: u8, receipt: Receipt, now: u64) {
        if matches!(window, Window::None) {
            return;
        }
        let seq = self.next;
        self.next += 1;
        if let Some(rows) = self.rows.as_mut() {
            for gone in self.forgotten.drain(..) {
                rows.remove(&gone);
            }
            rows.insert(id, (receipt, now, seq));
        }
        self.order.push_back((id, seq));
        self.by_id.insert(id, (receipt, now, seq));
        self.prune(window, now);
    }

    /// The window as a reopened store restores it (`Ids::restore`): every row, in the order
    /// remembered (each row keeps its sequence number, whatever its time and partition), then
    /// what the window drops as of `now`, oldest first; later ids are numbered on. (Up to
    /// format version 5 the rows kept no order and were restored by time, partition and
    /// offset: with ids of one time in both partitions, a count window kept other ids than
    /// the last ones; `regressions::tx_count_window_across_a_reopen_keeps_the_last_ids`.)
    fn restore(&mut self, window: Window, now: u64) {
        let Some(rows) = &self.rows else {
            return;
        };
        let mut stored: Vec<(u64, u8, Receipt, u64)> = (rows.iter())
            .map(|(&id, &(r, ts, seq))| (seq, id, r, ts))
            .collect();
        stored.sort_unstable_by_key(|&(seq, ..)| seq);
        self.order = stored.iter().map(|&(seq, id, ..)| (id, seq)).collect();
        self.by_id = (stored.iter())
            .map(|&(seq, id, r, ts)| (id, (r, ts, seq)))
            .collect();
        self.forgotten.clear();
        self.prune(window, now);
    }
}

/// A record of the open transaction.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pending {
    Job {
        payload: u32,
        id: Option<u8>,
    },
    Event {
        payload: u32,
        key: u8,
        id: Option<u8>,
    },
}

/// A source delivery: payload, sequence number, deliveries so far.
type Src = (u32, u64, u32);

#[derive(Debug, Clone)]
struct Model {
    window: Window,
    capacity: usize,
    /// Seconds on the model's clock (started high, so a window never reaches before zero).
    now: u64,
    src_ready: VecDeque<Src>,
    src_next: u64,
    /// Payload and id of each `jobs` message, in delivery order.
    jobs: VecDeque<(u32, u64)>,
    jobs_next: u64,
    events: [Vec<u32>; 2],
    /// Where each key's events go, as first seen.
    key_partition: HashMap<u8, u32>,
    jobs_ids: Win,
    events_ids: Win,
    /// The open transaction: its records in send order, and the deliveries it acks.
    tx: Option<(Vec<Pending>, Vec<Src>)>,
    /// Durable: each source message's deliveries as of the last commit a call waited for
    /// (delivery counts ride the next commit), by sequence number.
    floor: BTreeMap<u64, u32>,
    /// Durable: the jobs consumed since that commit (their acks ride the next one), in order.
    consumed: Vec<(u32, u64)>,
}

impl Model {
    /// Every source message not acked: sequence number -> payload and deliveries so far
    /// (ready, held (`held`), or acked in the open transaction).
    fn src_all(&self, held: &[Src]) -> BTreeMap<u64, (u32, u32)> {
        let acked = self.tx.iter().flat_map(|(_, acks)| acks);
        (self.src_ready.iter().chain(held).chain(acked))
            .map(|&(payload, seq, count)| (seq, (payload, count)))
            .collect()
    }

    /// A call just waited for its commit: everything recorded so far is stored.
    fn barrier(&mut self, held: &[Src]) {
        self.floor = (self.src_all(held).into_iter())
            .map(|(seq, (_, count))| (seq, count))
            .collect();
        self.consumed.clear();
    }
}

/// What the model expects of one record's receipt.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// Exactly this (a job's; a duplicate's original).
    Is(Receipt),
    /// The same as the receipt of the transaction's record at this index.
    SameAs(usize),
    /// A new event: where its key goes, at the partition's next offset.
    NewEvent,
}

/// What a commit does in the model: what each receipt must be, or `None` if it does not fit.
fn model_commit(m: &mut Model, records: &[Pending]) -> Option<Vec<Want>> {
    let (window, now) = (m.window, m.now);
    // Jobs first (the engine stages each part in turn; only jobs can be full).
    let mut receipts = vec![Want::NewEvent; records.len()];
    let mut staged_jobs = Vec::new();
    let mut earlier: Vec<(u8, Receipt)> = Vec::new();
    for (at, record) in records.iter().enumerate() {
        let Pending::Job { payload, id } = *record else {
            continue;
        };
        let id = id.filter(|_| !matches!(window, Window::None));
        if let Some(id) = id {
            let dup = earlier.iter().find(|(e, _)| *e == id).map(|(_, r)| *r);
            if let Some(r) = dup.or_else(|| m.jobs_ids.seen(window, id, now)) {
                receipts[at] = Want::Is(r);
                continue;
            }
        }
        if m.jobs.len() + staged_jobs.len() >= m.capacity {
            return None;
        }
        let receipt = Receipt {
            partition: 0,
            offset: m.jobs_next + staged_jobs.len() as u64,
        };
        if let Some(id) = id {
            earlier.push((id, receipt));
        }
        staged_jobs.push((payload, receipt.offset, id));
        receipts[at] = Want::Is(receipt);
    }
    for (payload, offset, id) in staged_jobs {
        if let Some(id) = id {
            let receipt = Receipt {
                partition: 0,
                offset,
            };
            m.jobs_ids.remember(window, id, receipt, now);
        }
        m.jobs.push_back((payload, offset));
        m.jobs_next = offset + 1;
    }
    // Events: partitions are learnt from the broker (`None` where a key is new).
    let mut earlier: Vec<(u8, usize)> = Vec::new();
    for (at, record) in records.iter().enumerate() {
        let Pending::Event { id, .. } = *record else {
            continue;
        };
        let id = id.filter(|_| !matches!(window, Window::None));
        if let Some(id) = id {
            if let Some(&(_, first)) = earlier.iter().find(|(e, _)| *e == id) {
                receipts[at] = Want::SameAs(first);
                continue;
            }
            if let Some(r) = m.events_ids.seen(window, id, now) {
                receipts[at] = Want::Is(r);
                continue;
            }
            earlier.push((id, at));
        }
    }
    Some(receipts)
}

/// The broker's handles and what the test holds of them.
struct Handles {
    bus: Broker,
    src: Queue<u32>,
    jobs: Queue<u32>,
    events: Topic<u32>,
    /// The source queue's consumer.
    worker: Consumer<u32>,
    /// The consumer of `jobs`.
    job_reader: Consumer<u32>,
}

/// The broker under test, side by side with the model.
struct TxRig {
    setup: TxSetup,
    storage: Storage,
    clock: ManualClock,
    h: Handles,
    /// Source deliveries held, not (yet) acked in a transaction.
    held: Vec<(Message<u32>, Src)>,
    tx: Option<Transaction>,
    m: Model,
}

/// A record for `jobs` (no key) or `events`.
fn record(payload: u32, key: Option<u8>, id: Option<u8>) -> Record<u32> {
    let mut record = Record::new(payload);
    if let Some(key) = key {
        record = record.key(vec![key]);
    }
    if let Some(id) = id {
        record = record.id(format!("id-{id}"));
    }
    record
}

impl TxRig {
    fn new(setup: TxSetup) -> Self {
        let clock = ManualClock::new();
        let storage = Storage::new(setup.mode, clock.clone());
        let h = Self::attach(&storage, &setup);
        let durable = storage.durable();
        let m = Model {
            window: setup.window,
            capacity: setup.capacity,
            now: 1_000_000,
            src_ready: VecDeque::new(),
            src_next: 0,
            jobs: VecDeque::new(),
            jobs_next: 0,
            events: [Vec::new(), Vec::new()],
            key_partition: HashMap::new(),
            jobs_ids: Win::new(durable),
            events_ids: Win::new(durable),
            tx: None,
            floor: BTreeMap::new(),
            consumed: Vec::new(),
        };
        Self {
            setup,
            storage,
            clock,
            h,
            held: Vec::new(),
            tx: None,
            m,
        }
    }

    /// Opens the storage and declares the source queue, `jobs` and `events`.
    fn attach(storage: &Storage, setup: &TxSetup) -> Handles {
        let bus = storage.open();
        let dedupe = match setup.window {
            Window::None => None,
            Window::Last(n) => Some(Dedupe::last(n as u64)),
            Window::Within(secs) => Some(Dedupe::within(Duration::from_secs(secs))),
        };
        let src = bus
            .queue_with::<u32>(
                "src",
                QueueOptions::default()
                    .no_ack_timeout()
                    .backoff(Backoff::none()),
            )
            .unwrap();
        let mut jobs_options = QueueOptions::default().capacity(setup.capacity);
        let mut events_options = TopicOptions::default().partitions(2);
        if let Some(window) = dedupe {
            jobs_options = jobs_options.dedupe(window);
            events_options = events_options.dedupe(window);
        }
        let jobs = bus.queue_with::<u32>("jobs", jobs_options).unwrap();
        let events = bus.topic_with::<u32>("events", events_options).unwrap();
        let worker = src.consumer();
        let job_reader = jobs.consumer();
        Handles {
            bus,
            src,
            jobs,
            events,
            worker,
            job_reader,
        }
    }

    /// The source deliveries held, as the model has them.
    fn held(&self) -> Vec<Src> {
        self.held.iter().map(|(_, src)| *src).collect()
    }

    /// Opens the storage again, then drops every handle of the old broker: the open
    /// transaction (which releases its acks, in the old broker) and the held deliveries.
    fn replace_broker(&mut self) {
        let h = Self::attach(&self.storage, &self.setup);
        let old = std::mem::replace(&mut self.h, h);
        drop(self.tx.take());
        drop(std::mem::take(&mut self.held));
        drop(old);
    }

    /// Commits the open transaction, if any, and checks it against the model: its receipts,
    /// or `Full` exactly when the model says it does not fit (then it stays open). Returns
    /// whether the commit stored anything (records or acks: a call that waits for its
    /// commit, a barrier if `barrier`).
    fn commit(&mut self, barrier: bool, step: usize, op: &TxOp) -> Result<bool, TestCaseError> {
        let Some(open) = self.tx.take() else {
            return Ok(false);
        };
        let m = &mut self.m;
        let (records, acks) = m.tx.take().unwrap_or_default();
        let jobs_next = m.jobs_next;
        let stored = match (open.commit(), model_commit(m, &records)) {
            (Ok(receipts), Some(want)) => {
                same(receipts.len(), records.len(), "receipts", step, op)?;
                let has_window = !matches!(m.window, Window::None);
                let mut new_events = 0;
                for (at, (record, want)) in records.iter().zip(&want).enumerate() {
                    let got = receipts[at];
                    match (*record, *want) {
                        (_, Want::Is(want)) => same(got, want, "receipt", step, op)?,
                        (_, Want::SameAs(first)) => {
                            same(got, receipts[first], "duplicate's receipt", step, op)?;
                        }
                        (Pending::Event { payload, key, id }, Want::NewEvent) => {
                            let p = *m.key_partition.entry(key).or_insert(got.partition);
                            same(got.partition, p, "key's partition", step, op)?;
                            let offset = m.events[p as usize].len() as u64;
                            same(got.offset, offset, "event offset", step, op)?;
                            m.events[p as usize].push(payload);
                            new_events += 1;
                            if let Some(id) = id.filter(|_| has_window) {
                                m.events_ids.remember(m.window, id, got, m.now);
                            }
                        }
                        (Pending::Job { .. }, Want::NewEvent) => {
                            unreachable!("the model names every job's receipt")
                        }
                    }
                }
                // The acks took effect: nothing to put back. A commit of duplicates only and
                // no acks stores nothing (it waits for the originals' commits).
                new_events > 0 || m.jobs_next > jobs_next || !acks.is_empty()
            }
            (Err(err), None) => {
                prop_assert!(
                    matches!(err.error(), Error::Full { name } if name == "jobs"),
                    "step {step}: {err}"
                );
                // Kept, to commit later.
                self.tx = Some(err.into_transaction());
                m.tx = Some((records, acks));
                false
            }
            (got, want) => {
                return Err(TestCaseError::fail(format!(
                    "step {step} ({op:?}): commit {:?}, model {want:?}",
                    got.map_err(|e| e.to_string())
                )));
            }
        };
        if stored && barrier {
            let held = self.held();
            self.m.barrier(&held);
        }
        Ok(stored)
    }

    /// Runs one op on both sides.
    fn step(&mut self, step: usize, op: &TxOp) -> Result<(), TestCaseError> {
        match *op {
            TxOp::Commit => {
                self.commit(true, step, op)?;
            }
            TxOp::Advance(secs) => {
                self.clock.advance(Duration::from_secs(secs));
                self.m.now += secs;
            }
            TxOp::Reopen => self.reopen(step, op)?,
            TxOp::Kill { torn, mid_commit } => match self.setup.mode {
                Mode::Memory => {}
                Mode::Durable => self.reopen(step, op)?,
                Mode::Crash => self.kill(torn, mid_commit, step, op)?,
            },
            _ => {
                if self.send_or_take(step, op)? {
                    let held = self.held();
                    self.m.barrier(&held);
                }
            }
        }
        Ok(())
    }

    /// Runs an op that sends, takes or settles outside a commit; `true` if it waited for a
    /// commit of its own (a barrier).
    fn send_or_take(&mut self, step: usize, op: &TxOp) -> Result<bool, TestCaseError> {
        let has_window = !matches!(self.setup.window, Window::None);
        let Self { h, m, held, tx, .. } = self;
        let mut barrier = false;
        match *op {
            TxOp::Produce(v) => {
                h.src.producer().send(v).unwrap();
                m.src_ready.push_back((v, m.src_next, 0));
                m.src_next += 1;
                barrier = true;
            }
            TxOp::Take => match (h.worker.try_recv(), m.src_ready.pop_front()) {
                (Ok(msg), Some((v, seq, count))) => {
                    let want = (v, seq, count + 1);
                    let got = (*msg.payload(), msg.offset(), msg.delivery_count());
                    same(got, want, "taken", step, op)?;
                    held.push((msg, want));
                }
                (Err(TryRecvError::Empty), None) => {}
                (got, want) => {
                    let got = got.map(|m| *m.payload());
                    return Err(TestCaseError::fail(format!(
                        "step {step} ({op:?}): took {got:?}, model {want:?}"
                    )));
                }
            },
            TxOp::SendJob { payload, id } => {
                let open = tx.get_or_insert_with(|| h.bus.transaction().unwrap());
                open.send_record(&h.jobs.producer(), record(payload, None, id))
                    .unwrap();
                let (records, _) = m.tx.get_or_insert_with(Default::default);
                records.push(Pending::Job { payload, id });
            }
            TxOp::SendEvent { payload, key, id } => {
                let open = tx.get_or_insert_with(|| h.bus.transaction().unwrap());
                open.send_record(&h.events.producer(), record(payload, Some(key), id))
                    .unwrap();
                let (records, _) = m.tx.get_or_insert_with(Default::default);
                records.push(Pending::Event { payload, key, id });
            }
            TxOp::Ack(index) => {
                if held.is_empty() {
                    return Ok(false);
                }
                let (msg, src_model) = held.remove(index.index(held.len()));
                let open = tx.get_or_insert_with(|| h.bus.transaction().unwrap());
                open.ack(msg).unwrap();
                let (_, acks) = m.tx.get_or_insert_with(Default::default);
                acks.push(src_model);
            }
            TxOp::Abort => {
                let Some(open) = tx.take() else {
                    return Ok(false);
                };
                open.abort();
                let (_, acks) = m.tx.take().unwrap_or_default();
                // Released as a nack: each to the front of the ready list, at once.
                for src_model in acks {
                    m.src_ready.push_front(src_model);
                }
            }
            TxOp::PlainJob { payload, id } => {
                let got = h.jobs.producer().try_send_record(record(payload, None, id));
                let dup = id.and_then(|id| m.jobs_ids.seen(m.window, id, m.now));
                match (got, dup) {
                    (Ok(r), Some(want)) => same(r, want, "duplicate's receipt", step, op)?,
                    (Ok(r), None) => {
                        prop_assert!(m.jobs.len() < m.capacity, "step {step}: sent when full");
                        same(r.offset, m.jobs_next, "job id", step, op)?;
                        m.jobs.push_back((payload, r.offset));
                        m.jobs_next += 1;
                        if let Some(id) = id {
                            m.jobs_ids.remember(m.window, id, r, m.now);
                        }
                        barrier = true;
                    }
                    (Err(TrySendError::Full(_)), None) => {
                        same(m.jobs.len(), m.capacity, "full at", step, op)?;
                    }
                    (got, want) => {
                        return Err(TestCaseError::fail(format!(
                            "step {step} ({op:?}): {:?}, model {want:?}",
                            got.map_err(|e| e.to_string())
                        )));
                    }
                }
            }
            TxOp::PlainEvent { payload, key, id } => {
                let got = h
                    .events
                    .producer()
                    .try_send_record(record(payload, Some(key), id))
                    .unwrap();
                match id.and_then(|id| m.events_ids.seen(m.window, id, m.now)) {
                    Some(want) => same(got, want, "duplicate's receipt", step, op)?,
                    None => {
                        let p = *m.key_partition.entry(key).or_insert(got.partition);
                        same(got.partition, p, "key's partition", step, op)?;
                        let offset = m.events[p as usize].len() as u64;
                        same(got.offset, offset, "event offset", step, op)?;
                        m.events[p as usize].push(payload);
                        if let Some(id) = id.filter(|_| has_window) {
                            m.events_ids.remember(m.window, id, got, m.now);
                        }
                        barrier = true;
                    }
                }
            }
            TxOp::ConsumeJob => match (h.job_reader.try_recv(), m.jobs.pop_front()) {
                (Ok(msg), Some(want)) => {
                    same((*msg.payload(), msg.offset()), want, "job", step, op)?;
                    msg.ack().unwrap();
                    m.consumed.push(want);
                }
                (Err(TryRecvError::Empty), None) => {}
                (got, want) => {
                    let got = got.map(|m| *m.payload());
                    return Err(TestCaseError::fail(format!(
                        "step {step} ({op:?}): job {got:?}, model {want:?}"
                    )));
                }
            },
            TxOp::Commit | TxOp::Advance(_) | TxOp::Reopen | TxOp::Kill { .. } => {
                unreachable!("run by `step`")
            }
        }
        Ok(barrier)
    }

    /// Nothing of an open transaction shows; everything committed does.
    fn check(&self, step: usize, op: &TxOp) -> Result<(), TestCaseError> {
        let (h, m) = (&self.h, &self.m);
        same(h.jobs.len(), m.jobs.len(), "jobs.len()", step, op)?;
        same(h.src.len(), m.src_ready.len(), "src.len()", step, op)?;
        let acked = m.tx.as_ref().map_or(0, |(_, acks)| acks.len());
        let in_flight = self.held.len() + acked;
        same(h.src.in_flight(), in_flight, "src.in_flight()", step, op)?;
        for p in 0..2u32 {
            let end = h.events.offsets(p).unwrap().end;
            let want = m.events[p as usize].len() as u64;
            same(end, want, "events' end", step, op)?;
        }
        Ok(())
    }

    /// Every committed event, in order, per partition.
    fn finish(mut self) -> Result<(), TestCaseError> {
        drop(self.tx.take());
        let mut reader = self.h.events.subscribe(Start::Earliest).unwrap();
        let mut got: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        while let Ok(msg) = reader.try_recv() {
            got[msg.partition() as usize].push(*msg.payload());
        }
        prop_assert_eq!(got, self.m.events);
        Ok(())
    }
}

pub(super) fn run_tx(setup: TxSetup, ops: Vec<TxOp>) -> Result<(), TestCaseError> {
    bump(|f| {
        f.cases += 1;
        f.durable += u64::from(setup.mode != Mode::Memory);
        f.steps += ops.len() as u64;
    });
    let mut rig = TxRig::new(setup);
    for (step, op) in ops.iter().enumerate() {
        rig.step(step, op)?;
        rig.check(step, op)?;
    }
    rig.finish()
}

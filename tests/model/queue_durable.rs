//! The queue model across a reopen and a power cut: what the store holds for sure, what it may
//! hold, and how the model takes up what the reopened queue shows.
//!
//! A clean reopen ([`QueueRig::reopen`]) keeps everything: every message not acked (ready,
//! waiting out a delay, in flight or waiting out a backoff) is back in sequence order within
//! its priority, with its delivery count; a delay still running runs on, a backoff does not
//! (ready at once); the dead letters are back; the run's counters start again.
//!
//! After a power cut ([`QueueRig::kill`]) the model knows a floor and the steps above it:
//! - The floor ([`Journal::barrier`]): each `try_send` that returned `Ok` returned after its
//!   commit, and acks, delivery counts and dead-letter moves ride the next commit (the writer
//!   takes requests in order), so everything recorded before that send is stored.
//! - Since the floor, the engine sent the writer requests in the model's order, op by op:
//!   removals (ack, purge) and moves (dead letter, redrive: one commit, source row deleted with
//!   the copy stored). Commits are atomic and in order, so the store holds the floor plus the
//!   requests of the first `j` ops, plus some of op `j + 1`'s (the model does not claim an
//!   order within one op). The queue and the dead-letter queue must show exactly one such
//!   state, with each message's payload and sequence number: nothing unsent, nothing lost.
//! - A message sent as the power goes (`Kill { mid_send: Some(n) }`: after `n` of its commit's
//!   syncs) is one more request of the last op ([`Ev::Add`]): there or not.
//! - A delivery count is at least what it was at the floor and at most what was handed out.
//! - The next sequence numbers are those of that state (a move that was not stored leaves its
//!   number to be handed out again).
//!
//! Crash cases have no expiry (no `message_ttl`, no `Record::ttl`): a message past its expiry
//! time while in flight would be dead-lettered as the reopened queue is restored, before the
//! model could see what the store held. Clean reopens cover expiry.

use super::*;

/// A change of what the store holds, requested by one op (a floor resets them).
#[derive(Debug, Clone)]
pub(super) enum Ev {
    /// A message is sent, and the power goes as it commits (`Kill { mid_send }`): its send
    /// did return, but the model does not count on it.
    Add { id: u64, item: QItem },
    /// A message leaves the queue (ack, purge, expiry without a dead-letter queue).
    Remove { id: u64, count: u32 },
    /// A message moves between the queue and the dead-letter queue (`to_dlq`), in one commit;
    /// `count`: its deliveries when it left.
    Move {
        to_dlq: bool,
        id: u64,
        to_id: u64,
        item: QItem,
        count: u32,
    },
}

/// What the store holds: the queue's messages and the dead letters by sequence number, and
/// the next sequence numbers.
#[derive(Debug, Clone, Default)]
pub(super) struct Stored {
    jobs: BTreeMap<u64, QItem>,
    dlq: BTreeMap<u64, QItem>,
    jobs_next: u64,
    dlq_next: u64,
}

impl Stored {
    fn apply(&mut self, ev: &Ev) {
        match ev {
            Ev::Add { id, item } => {
                self.jobs.insert(*id, item.clone());
                self.jobs_next = self.jobs_next.max(id + 1);
            }
            Ev::Remove { id, .. } => {
                self.jobs.remove(id);
            }
            Ev::Move {
                to_dlq,
                id,
                to_id,
                item,
                ..
            } => {
                let (from, to, next) = if *to_dlq {
                    (&mut self.jobs, &mut self.dlq, &mut self.dlq_next)
                } else {
                    (&mut self.dlq, &mut self.jobs, &mut self.jobs_next)
                };
                from.remove(id);
                to.insert(*to_id, item.clone());
                *next = (*next).max(to_id + 1);
            }
        }
    }
}

/// The floor and the ops since (crash mode only).
#[derive(Debug, Clone, Default)]
pub(super) struct Journal {
    pub(super) on: bool,
    floor: Stored,
    /// Per op since the floor, its requests in the model's order.
    ops: Vec<Vec<Ev>>,
}

impl Journal {
    /// A new op begins.
    pub(super) fn begin(&mut self) {
        if self.on {
            self.ops.push(Vec::new());
        }
    }

    pub(super) fn log(&mut self, ev: Ev) {
        if self.on {
            if self.ops.is_empty() {
                self.ops.push(Vec::new());
            }
            self.ops.last_mut().expect("an op").push(ev);
        }
    }

    /// Everything so far is stored: `now` is the floor.
    pub(super) fn barrier(&mut self, now: Stored) {
        if self.on {
            self.floor = now;
            self.ops.clear();
        }
    }

    /// The stored state the reopened queue shows (`jobs`: sequence numbers and payloads,
    /// `dlq`: the same), or why none fits.
    fn find(&self, jobs: &BTreeMap<u64, u32>, dlq: &BTreeMap<u64, u32>) -> Result<Stored, String> {
        let shows = |s: &Stored| {
            s.jobs.len() == jobs.len()
                && s.dlq.len() == dlq.len()
                && s.jobs
                    .iter()
                    .all(|(id, i)| jobs.get(id) == Some(&i.payload))
                && s.dlq.iter().all(|(id, i)| dlq.get(id) == Some(&i.payload))
        };
        let mut state = self.floor.clone();
        for evs in &self.ops {
            // Some of this op's requests are in: each one's own rows say which.
            let mut partial = state.clone();
            for ev in evs {
                let stored = match ev {
                    Ev::Add { id, .. } => jobs.contains_key(id),
                    Ev::Remove { id, .. } => !jobs.contains_key(id),
                    Ev::Move {
                        to_dlq, id, to_id, ..
                    } => {
                        let (from, to) = if *to_dlq { (jobs, dlq) } else { (dlq, jobs) };
                        !from.contains_key(id) && to.contains_key(to_id)
                    }
                };
                if stored {
                    partial.apply(ev);
                }
            }
            if shows(&partial) {
                return Ok(partial);
            }
            evs.iter().for_each(|ev| state.apply(ev));
        }
        if shows(&state) {
            return Ok(state);
        }
        Err(format!(
            "after the power cut the queue holds {jobs:?} and the dead-letter queue {dlq:?}: no \
             state between the last commit ({:?}, {:?}) and now ({} ops since) is that",
            self.floor.jobs.keys().collect::<Vec<_>>(),
            self.floor.dlq.keys().collect::<Vec<_>>(),
            self.ops.len()
        ))
    }

    /// The most deliveries message `id` of the queue had (a ceiling for its stored count).
    fn most_deliveries(&self, id: u64, now: &Stored) -> u32 {
        let mut most = now.jobs.get(&id).map_or(0, |i| i.count);
        for ev in self.ops.iter().flatten() {
            match ev {
                Ev::Remove { id: gone, count }
                | Ev::Move {
                    to_dlq: true,
                    id: gone,
                    count,
                    ..
                } if *gone == id => most = most.max(*count),
                _ => {}
            }
        }
        most
    }
}

impl QueueModel {
    /// What the store holds once everything recorded is committed.
    pub(super) fn stored_now(&self) -> Stored {
        let live = self.deliveries.iter().filter(|d| d.live).map(|d| &d.item);
        let jobs = self.in_order().into_iter().chain(live);
        Stored {
            jobs: jobs.map(|i| (i.id, i.clone())).collect(),
            dlq: self.dead.iter().cloned().collect(),
            jobs_next: self.next_id,
            dlq_next: self.dead_next_id,
        }
    }

    /// The queue as a broker opening `stored` restores it: every message in sequence order
    /// (a delay still running waits on; a backoff is forgotten), nothing in flight, this run's
    /// counters at zero; then what time does (expiry).
    fn restore(&mut self, stored: Stored) {
        for d in &mut self.deliveries {
            d.live = false;
        }
        self.ready.iter_mut().for_each(VecDeque::clear);
        self.waiting.clear();
        self.dead = stored.dlq.clone().into_iter().collect();
        self.next_id = stored.jobs_next;
        self.dead_next_id = stored.dlq_next;
        (self.acked, self.nacked, self.purged, self.redriven) = (0, 0, 0, 0);
        (self.dead_lettered, self.expired) = (0, 0);
        self.sent = stored.jobs.len();
        self.journal.barrier(stored.clone());
        for item in stored.jobs.into_values() {
            let due = item.due;
            self.enqueue(item, due);
        }
        self.journal.begin();
        self.expire();
    }
}

impl QueueRig {
    /// Closes the broker (everything recorded is committed) and opens the store again.
    pub(super) fn reopen(&mut self, step: usize, op: &QOp) -> Result<(), TestCaseError> {
        if !self.storage.durable() {
            return Ok(());
        }
        bump(|f| f.reopens += 1);
        self.bus.clone().close().unwrap();
        self.replace_broker();
        let stored = self.model.stored_now();
        self.model.restore(stored);
        self.compare_all(step, op)
    }

    /// Sends one more message as the power goes, after `syncs` of its commit's syncs: the
    /// model takes it as sent, but not stored for sure (no floor: [`Ev::Add`]). Its id, if it
    /// was sent.
    fn send_as_the_power_goes(
        &mut self,
        syncs: u8,
        step: usize,
        op: &QOp,
    ) -> Result<Option<u64>, TestCaseError> {
        let journal = self.model.journal.clone();
        self.storage.freeze_in(syncs);
        let payload = u32::MAX - self.model.next_id as u32;
        let want = self.model.send(payload, 0, None, None);
        self.send(Record::new(payload), want, step, op)?;
        let Some(id) = want else {
            return Ok(None);
        };
        let item = self.model.stored_now().jobs[&id].clone();
        self.model.journal = journal;
        self.model.journal.log(Ev::Add { id, item });
        bump(|f| f.mid_commit += 1);
        Ok(Some(id))
    }

    /// Cuts the power (as one more message is sent, after `mid_send` of its commit's syncs),
    /// opens what the disk kept (or a torn variant of it, `torn`), finds which state it is and
    /// takes it up.
    pub(super) fn kill(
        &mut self,
        torn: Option<u64>,
        mid_send: Option<u8>,
        step: usize,
        op: &QOp,
    ) -> Result<(), TestCaseError> {
        let sent = match mid_send {
            Some(syncs) => self.send_as_the_power_goes(syncs, step, op)?,
            None => None,
        };
        self.storage.cut_power(torn);
        self.replace_broker();
        let jobs = self.queue.peek(1 << 16);
        let dlq = self.dlq.peek(1 << 16);
        let ids = |peeked: &[embus::Peeked<u32>]| -> BTreeMap<u64, u32> {
            peeked.iter().map(|m| (m.offset(), *m.payload())).collect()
        };
        let found = self
            .model
            .journal
            .find(&ids(&jobs), &ids(&dlq))
            .map_err(|e| TestCaseError::fail(format!("step {step} ({op:?}): {e}")))?;
        if sent.is_some_and(|id| found.jobs.contains_key(&id)) {
            bump(|f| f.mid_commit_kept += 1);
        }
        let now = self.model.stored_now();
        let mut stored = found;
        for m in &jobs {
            let id = m.offset();
            let floor = self
                .model
                .journal
                .floor
                .jobs
                .get(&id)
                .map_or(0, |i| i.count);
            let most = self.model.journal.most_deliveries(id, &now);
            let count = m.delivery_count();
            prop_assert!(
                (floor..=most).contains(&count),
                "step {} ({:?}): message {} came back with {} deliveries; it had {} at the \
                 last commit and {} at most",
                step,
                op,
                id,
                count,
                floor,
                most
            );
            if let Some(item) = stored.jobs.get_mut(&id) {
                item.count = count;
            }
        }
        self.model.restore(stored);
        self.compare_all(step, op)
    }

    /// After a reopen: every message of both queues, in order, with its delivery count.
    fn compare_all(&self, step: usize, op: &QOp) -> Result<(), TestCaseError> {
        let got: Vec<(u32, u64, u32)> = (self.queue.peek(1 << 16).iter())
            .map(|m| (*m.payload(), m.offset(), m.delivery_count()))
            .collect();
        let want: Vec<(u32, u64, u32)> = (self.model.in_order().into_iter())
            .map(|i| (i.payload, i.id, i.count))
            .collect();
        same(got, want, "the reopened queue", step, op)?;
        let got: Vec<(u32, u64)> = (self.dlq.peek(1 << 16).iter())
            .map(|m| (*m.payload(), m.offset()))
            .collect();
        let want: Vec<(u32, u64)> = (self.model.dead.iter())
            .map(|(id, i)| (i.payload, *id))
            .collect();
        same(got, want, "the reopened dead-letter queue", step, op)?;
        let checked =
            (self.model.ready_len() + self.model.waiting.len() + self.model.dead.len()) as u64;
        bump(|f| f.checked += checked);
        Ok(())
    }
}

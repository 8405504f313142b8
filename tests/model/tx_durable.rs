//! The transaction model across a reopen and a power cut: what the reopened store must hold,
//! and how the model takes it up.
//!
//! A clean reopen ([`TxRig::reopen`]) closes the broker with the transaction still open (it is
//! dropped once the store is open again: an open transaction is never stored) and its acks and
//! the held deliveries not settled. Back come, exactly:
//! - the source queue: every message not acked by a committed transaction, in sequence order,
//!   with its delivery count (held and transaction-acked ones ready again);
//! - `jobs`: every message not consumed, in order, with its sequence number; the next one
//!   goes on from the last one handed out;
//! - `events`: every committed event, per partition, in order;
//! - both dedupe windows, as `Ids::restore` rebuilds them from the store's rows (the window and
//!   the ids that left it since the last id written, in the order remembered, which each row
//!   keeps as a sequence number, then pruned as of now; [`Win::restore`]); later sends with
//!   ids check them.
//!
//! After a power cut ([`TxRig::kill`]) every call that waited for its commit returned after it
//! (a plain send, a commit with records or acks): its records, acks and ids are stored, whole.
//! Delivery counts and the acks of consumed jobs ride the next commit ([`Model::barrier`]):
//! a source message comes back with a count between its count at the last such commit and
//! its count now; the last few jobs consumed since may come back, in front. Nothing of an open
//! or aborted transaction is stored. With `mid_commit: Some(n)`, the power goes as the open
//! transaction commits, after `n` of its syncs (0, 1 or 2: redb syncs its data, then its
//! header): its records, acks and ids are all there or none of them is, never part. A torn
//! variant (`Kill { torn: Some(seed) }`) changes none of this.

use super::*;

/// What a reopened store holds, as read through the new broker.
#[derive(Debug)]
struct Found {
    /// The source queue: sequence number -> payload and delivery count.
    src: BTreeMap<u64, (u32, u32)>,
    /// `jobs`: payload and sequence number, in order.
    jobs: Vec<(u32, u64)>,
    /// `events`, per partition: offset and payload, in order.
    events: [Vec<(u64, u32)>; 2],
}

impl Found {
    fn messages(&self) -> u64 {
        (self.src.len() + self.jobs.len() + self.events.iter().map(Vec::len).sum::<usize>()) as u64
    }
}

/// Why the store cannot be model `c` (`held`: the source deliveries held when it was left;
/// `exact`: a clean close, which stores every count and ack), or `Ok`.
fn fits(c: &Model, held: &[Src], exact: bool, got: &Found) -> Result<(), String> {
    let all = c.src_all(held);
    let payloads = |m: &BTreeMap<u64, (u32, u32)>| -> Vec<(u64, u32)> {
        m.iter()
            .map(|(&seq, &(payload, _))| (seq, payload))
            .collect()
    };
    if payloads(&got.src) != payloads(&all) {
        return Err(format!(
            "the source queue holds {:?}, model {:?}",
            got.src, all
        ));
    }
    for (seq, &(_, count)) in &got.src {
        let now = all[seq].1;
        let floor = if exact {
            now
        } else {
            c.floor.get(seq).copied().unwrap_or(0)
        };
        if !(floor..=now).contains(&count) {
            return Err(format!(
                "source message {seq} came back with {count} deliveries; it had {floor} at the \
                 last commit and {now} now"
            ));
        }
    }
    // The model's jobs, behind the last `back` consumed since the last commit.
    let back = got.jobs.len().checked_sub(c.jobs.len());
    let want = back
        .filter(|&back| back <= c.consumed.len() && (back == 0 || !exact))
        .map(|back| {
            let consumed = &c.consumed[c.consumed.len() - back..];
            consumed.iter().chain(&c.jobs).copied().collect::<Vec<_>>()
        });
    if want.as_ref() != Some(&got.jobs) {
        return Err(format!(
            "jobs holds {:?}, model {:?} (consumed since the last commit: {:?})",
            got.jobs, c.jobs, c.consumed
        ));
    }
    for (p, events) in got.events.iter().enumerate() {
        let want: Vec<(u64, u32)> = (c.events[p].iter().enumerate())
            .map(|(offset, &payload)| (offset as u64, payload))
            .collect();
        if *events != want {
            return Err(format!(
                "events' partition {p} holds {events:?}, model {want:?}"
            ));
        }
    }
    Ok(())
}

impl TxRig {
    /// What the (reopened) broker holds.
    fn found(&self) -> Found {
        let src = (self.h.src.peek(1 << 16).iter())
            .map(|m| (m.offset(), (*m.payload(), m.delivery_count())))
            .collect();
        let jobs = (self.h.jobs.peek(1 << 16).iter())
            .map(|m| (*m.payload(), m.offset()))
            .collect();
        let mut events: [Vec<(u64, u32)>; 2] = [Vec::new(), Vec::new()];
        let mut reader = self.h.events.subscribe(Start::Earliest).unwrap();
        while let Ok(msg) = reader.try_recv() {
            events[msg.partition() as usize].push((msg.offset(), *msg.payload()));
        }
        Found { src, jobs, events }
    }

    /// Takes up what the reopened store holds (it fits the model): nothing in flight, no
    /// transaction open, the windows as restored, everything stored.
    fn restore(&mut self, got: Found) {
        bump(|f| f.checked += got.messages());
        let m = &mut self.m;
        m.src_ready = (got.src.into_iter())
            .map(|(seq, (payload, count))| (payload, seq, count))
            .collect();
        m.tx = None;
        m.jobs = got.jobs.into();
        m.jobs_ids.restore(m.window, m.now);
        m.events_ids.restore(m.window, m.now);
        m.barrier(&[]);
    }

    /// Closes the broker, the transaction still open, and opens the store again: checks that
    /// exactly what the model says came back, and takes it up.
    pub(super) fn reopen(&mut self, step: usize, op: &TxOp) -> Result<(), TestCaseError> {
        if !self.storage.durable() {
            return Ok(());
        }
        bump(|f| f.reopens += 1);
        let held = self.held();
        self.h.bus.clone().close().unwrap();
        self.replace_broker();
        let got = self.found();
        fits(&self.m, &held, true, &got)
            .map_err(|e| TestCaseError::fail(format!("step {step} ({op:?}): reopened, {e}")))?;
        self.restore(got);
        Ok(())
    }

    /// Cuts the power (as the open transaction commits, after `mid_commit` of its syncs), opens
    /// what the disk kept (or a torn variant, `torn`), checks that it is one of the states the
    /// model allows, and takes it up.
    pub(super) fn kill(
        &mut self,
        torn: Option<u64>,
        mid_commit: Option<u8>,
        step: usize,
        op: &TxOp,
    ) -> Result<(), TestCaseError> {
        let held = self.held();
        // The states the store may be in: the model's, or the one before the commit.
        let mut before = None;
        if let Some(syncs) = mid_commit.filter(|_| self.tx.is_some()) {
            let model = self.m.clone();
            self.storage.freeze_in(syncs);
            if self.commit(false, step, op)? {
                bump(|f| f.mid_commit += 1);
                before = Some(model);
            }
        }
        self.storage.cut_power(torn);
        self.replace_broker();
        let got = self.found();
        let whole = fits(&self.m, &held, false, &got);
        if whole.is_ok() {
            if before.is_some() {
                bump(|f| f.mid_commit_kept += 1);
            }
            self.restore(got);
            return Ok(());
        }
        if let Some(before) = before {
            let absent = fits(&before, &held, false, &got);
            if absent.is_ok() {
                self.m = before;
                self.restore(got);
                return Ok(());
            }
            return Err(TestCaseError::fail(format!(
                "step {step} ({op:?}): after a power cut during a commit, the store holds the \
                 commit neither whole ({}) nor not at all ({})",
                whole.unwrap_err(),
                absent.unwrap_err()
            )));
        }
        Err(TestCaseError::fail(format!(
            "step {step} ({op:?}): after the power cut, {}",
            whole.unwrap_err()
        )))
    }
}

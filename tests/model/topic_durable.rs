//! The topic model across a reopen and a power cut.
//!
//! A clean reopen keeps the partitions (offsets, payloads, retention) and the group's
//! positions (its first unacked offset per partition, at least the oldest retained one);
//! what members held, acks above a position and delivery counts are not stored: the group
//! delivers again from its positions, first deliveries again. Subscribers and members do not
//! survive, nor does the keyless round-robin turn (it starts again at partition 0: the rig subscribes again from `Earliest` and joins as many members as before);
//! the dead letters do; the run's counters start again.
//!
//! After a power cut every send that returned `Ok` is there (each returned after its commit),
//! so the partitions are exact; but for one more message sent as the power goes
//! (`Kill { mid_send: Some(n) }`, after `n` of its commit's syncs): there or not, and the
//! model takes up which. Positions and group dead letters ride the next commit: each
//! partition's stored position is one the group held since the last send returned (or then),
//! never one it did not hold, and the dead letters are those of then plus some of the later
//! ones, in order (the final drain checks their payloads and headers). The group's declaration
//! rides the next commit as well: a power cut before one may forget the group (its members
//! declare it again).

use super::*;

impl TopicModel {
    /// A send returned: everything recorded so far is stored.
    pub(super) fn commit_point(&mut self) {
        self.since_commit = self
            .positions()
            .into_iter()
            .map(|p| BTreeSet::from([p]))
            .collect();
        self.dead_at_commit = self.dead.len();
        self.group_stored = true;
    }

    /// After each op: the positions the group held.
    pub(super) fn note_positions(&mut self) {
        for (p, at) in self.positions().into_iter().enumerate() {
            self.since_commit[p].insert(at);
        }
    }

    /// The topic as a broker restores it with the group at `stored` (clamped to what is
    /// retained) and `dead` dead letters: nothing pending, nobody subscribed or joined.
    fn restore(&mut self, stored: &[u64], dead: usize) {
        self.dead.truncate(dead);
        for (p, &stored) in stored.iter().enumerate() {
            let (base, end) = (self.logs[p].base, self.logs[p].end());
            let at = stored.clamp(base, end);
            // The group is past what is below its position: acked, dead-lettered, or
            // trimmed while nobody read it.
            let passed: Vec<u64> = (0..at).filter(|o| !self.delivered[p].contains(o)).collect();
            self.group_skipped[p].extend(passed);
            self.parts[p] = GPart {
                owner: None,
                next: at,
                ..GPart::default()
            };
            self.sub_next[p] = base;
            self.sub_received[p].clear();
            self.sub_skipped[p] = base;
        }
        self.sub_turn = 0;
        self.turns.clear();
        // Keyless round-robin starts again at partition 0 (the counter is not stored).
        self.keyless = 0;
        (self.redelivered, self.dead_run) = (0, 0);
        self.commit_point();
    }
}

impl TopicRig {
    /// Closes the broker (or cuts the power, `kill`: `Some` with the torn variant's seed, if
    /// any, and the syncs after which the power goes as one more message is sent, if any) and
    /// opens the store again: checks what came back and takes it up.
    pub(super) fn reopen(
        &mut self,
        kill: Option<(Option<u64>, Option<u8>)>,
        step: usize,
        op: &TOp,
    ) -> Result<(), TestCaseError> {
        if !self.storage.durable() {
            return Ok(());
        }
        let killed = kill.is_some();
        // The model before a send the power cut, and its partition.
        let mut before = None;
        if let Some((torn, mid_send)) = kill {
            if let Some(syncs) = mid_send {
                let model = self.model.clone();
                self.storage.freeze_in(syncs);
                self.send(None, step, op)?;
                let p = (0..model.n())
                    .find(|&p| self.model.logs[p].end() > model.logs[p].end())
                    .expect("the send went somewhere");
                bump(|f| f.mid_commit += 1);
                before = Some((model, p));
            }
            self.storage.cut_power(torn);
        } else {
            bump(|f| f.reopens += 1);
            self.bus.clone().close().unwrap();
        }
        let (bus, topic, sub, dlq) = Self::attach(&self.storage, &self.setup);
        drop(std::mem::take(&mut self.held));
        drop(std::mem::take(&mut self.members));
        self.sub = sub;
        self.dlq = dlq;
        self.topic = topic;
        self.bus = bus;
        if let Some((model, p)) = before {
            // The message sent as the power went is there, or not.
            let end = self.topic.offsets(p as u32).unwrap().end;
            if end == self.model.logs[p].end() {
                bump(|f| f.mid_commit_kept += 1);
            } else {
                prop_assert_eq!(
                    end,
                    model.logs[p].end(),
                    "step {} ({:?}): partition {}'s end after a power cut as a message was sent \
                     there",
                    step,
                    op,
                    p
                );
                self.model = model;
            }
        }
        let m = &self.model;
        let got = self.topic.group_position(GROUP);
        // A group's declaration rides the next commit too: before one, a power cut forgets
        // it, and the rig's members declare it again (from `Earliest`, as before).
        prop_assert!(
            got.is_some() || (killed && !m.group_stored),
            "step {} ({:?}): the group is gone",
            step,
            op
        );
        let stored = got.is_some();
        let got = got.unwrap_or_else(|| vec![0; m.n()]);
        let dead = self.dlq.len();
        if killed {
            for (p, &at) in got.iter().enumerate() {
                let (base, end) = (m.logs[p].base, m.logs[p].end());
                prop_assert!(
                    m.since_commit[p]
                        .iter()
                        .any(|h| h.clamp(&base, &end) == &at),
                    "step {} ({:?}): partition {}'s position after the power cut is {}; since \
                     the last commit it held {:?} (retained {}..{})",
                    step,
                    op,
                    p,
                    at,
                    m.since_commit[p],
                    base,
                    end
                );
            }
            prop_assert!(
                (m.dead_at_commit..=m.dead.len()).contains(&dead),
                "step {} ({:?}): {} group dead letters after the power cut; {} at the last \
                 commit, {} since",
                step,
                op,
                dead,
                m.dead_at_commit,
                m.dead.len()
            );
        } else {
            let want: Vec<u64> = (m.positions().into_iter().enumerate())
                .map(|(p, at)| at.clamp(m.logs[p].base, m.logs[p].end()))
                .collect();
            same(
                got.clone(),
                want,
                "the reopened group's positions",
                step,
                op,
            )?;
            same(
                dead,
                m.dead.len(),
                "the reopened group dead letters",
                step,
                op,
            )?;
        }
        let checked = m.logs.iter().map(|l| l.end() - l.base).sum::<u64>() + dead as u64;
        bump(|f| f.checked += checked);
        self.model.restore(&got, dead);
        self.model.group_stored = stored;
        for _ in 0..self.setup.members {
            self.join(step, op)?;
        }
        Ok(())
    }
}

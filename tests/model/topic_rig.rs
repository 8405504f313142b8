//! The topic rig: a broker, its topic, a subscriber and the group's members, driven op by op
//! next to the model, every observable compared after every step.

use super::*;

pub(super) struct TopicRig {
    pub(super) setup: TSetup,
    pub(super) storage: Storage,
    pub(super) bus: Broker,
    pub(super) topic: Topic<u64>,
    pub(super) dlq: Queue<u64>,
    pub(super) sub: Consumer<u64>,
    pub(super) members: Vec<(u64, Consumer<u64>)>,
    pub(super) next_member: u64,
    /// Group deliveries the test holds, with the member that received them.
    pub(super) held: Vec<(Message<u64>, u64)>,
    pub(super) model: TopicModel,
}

impl TopicRig {
    pub(super) fn new(setup: &TSetup) -> Result<Self, TestCaseError> {
        let storage = Storage::new(setup.mode, ManualClock::new());
        let (bus, topic, sub, dlq) = Self::attach(&storage, setup);
        let mut rig = Self {
            setup: setup.clone(),
            storage,
            bus,
            topic,
            dlq,
            sub,
            members: Vec::new(),
            next_member: 0,
            held: Vec::new(),
            model: TopicModel::new(setup),
        };
        for _ in 0..setup.members {
            rig.join(0, &"setup")?;
        }
        Ok(rig)
    }

    /// Opens a broker on the storage; declares the topic, a subscriber and the group's
    /// dead-letter queue.
    pub(super) fn attach(
        storage: &Storage,
        setup: &TSetup,
    ) -> (Broker, Topic<u64>, Consumer<u64>, Queue<u64>) {
        let bus = storage.open();
        let options = TopicOptions::default()
            .partitions(setup.partitions)
            .retention(Retention::messages(setup.retention))
            .overflow(Overflow::Lag);
        let topic = bus.topic_with::<u64>("events", options).unwrap();
        let sub = topic.subscribe(Start::Earliest).unwrap();
        let dlq = bus.queue::<u64>(GROUP_DLQ).unwrap();
        (bus, topic, sub, dlq)
    }

    pub(super) fn join(&mut self, step: usize, op: &dyn Debug) -> Result<(), TestCaseError> {
        let id = self.next_member;
        self.next_member += 1;
        // Lag, as the topic's subscriber: the model follows retention trimming the group; no
        // backoff: releases come back at once, as the model predicts without a clock.
        let options = GroupOptions::default()
            .overflow(Overflow::Lag)
            .backoff(Backoff::none())
            .max_deliveries(GROUP_MAX_DELIVERIES)
            .dead_letter(GROUP_DLQ);
        let member = self.topic.join_group_with(GROUP, options).unwrap();
        self.members.push((id, member));
        self.model.turns.insert(id, 0);
        self.assignment(true, step, op)
    }

    /// Reads the group's assignment, checks it is complete and fair, and applies a change of
    /// owner to the model (its held deliveries become ready). Without `may_change`, checks that
    /// it did not change.
    pub(super) fn assignment(
        &mut self,
        may_change: bool,
        step: usize,
        op: &dyn Debug,
    ) -> Result<(), TestCaseError> {
        let n = self.model.n();
        let mut owners: Vec<Option<u64>> = vec![None; n];
        let mut shares = Vec::new();
        for (id, member) in &self.members {
            let parts = member.partitions();
            shares.push(parts.len());
            for p in parts {
                let p = p as usize;
                prop_assert!(p < n, "step {} ({:?}): partition {} assigned", step, op, p);
                prop_assert!(
                    owners[p].is_none(),
                    "step {} ({:?}): partition {} has two owners",
                    step,
                    op,
                    p
                );
                owners[p] = Some(*id);
            }
        }
        if !self.members.is_empty() {
            prop_assert!(
                owners.iter().all(Option::is_some),
                "step {} ({:?}): unowned partition with live members: {:?}",
                step,
                op,
                owners
            );
            let (min, max) = (
                shares.iter().min().copied().unwrap_or(0),
                shares.iter().max().copied().unwrap_or(0),
            );
            prop_assert!(
                max - min <= 1,
                "step {} ({:?}): unfair shares {:?}",
                step,
                op,
                shares
            );
        }
        for (p, owner) in owners.into_iter().enumerate() {
            let part = &mut self.model.parts[p];
            if owner == part.owner {
                continue;
            }
            prop_assert!(
                may_change,
                "step {} ({:?}): partition {} moved from {:?} to {:?} without a join or leave",
                step,
                op,
                p,
                part.owner,
                owner
            );
            part.owner = owner;
            for (&offset, pending) in part.pending.iter_mut() {
                if pending.holder.take().is_some() {
                    part.ready.insert(offset);
                }
            }
        }
        Ok(())
    }

    pub(super) fn sub_recv(&mut self, step: usize, op: &dyn Debug) -> Result<bool, TestCaseError> {
        let m = &mut self.model;
        let n = m.n();
        let (lagged, unread) = m.sub_available();
        match self.sub.try_recv() {
            Ok(msg) => {
                let p = msg.partition() as usize;
                prop_assert!(p < n, "step {} ({:?}): partition {}", step, op, p);
                prop_assert!(
                    !lagged.contains(&p),
                    "step {} ({:?}): read partition {} at {} without reporting the lag (base {})",
                    step,
                    op,
                    p,
                    msg.offset(),
                    m.logs[p].base
                );
                let want = m.sub_next[p];
                same(
                    (msg.offset(), msg.delivery_count()),
                    (want, 1),
                    "subscriber (offset, delivery count)",
                    step,
                    op,
                )?;
                prop_assert!(want < m.logs[p].end(), "read past the end");
                same(
                    *msg.payload(),
                    m.logs[p].payloads[want as usize],
                    "subscriber payload",
                    step,
                    op,
                )?;
                msg.ack().unwrap(); // a no-op for a subscriber
                m.sub_received[p].push(want);
                m.sub_next[p] += 1;
                m.sub_turn = (p + 1) % n;
                Ok(true)
            }
            Err(TryRecvError::Lagged { skipped }) => {
                // Which partition: one that fell behind by `skipped`; on a tie, the first in the
                // subscriber's round-robin turn.
                let p = (0..n)
                    .map(|i| (m.sub_turn + i) % n)
                    .find(|&p| lagged.contains(&p) && m.logs[p].base - m.sub_next[p] == skipped);
                prop_assert!(
                    p.is_some(),
                    "step {} ({:?}): Lagged {{ skipped: {} }} matches no partition (next {:?}, \
                     bases {:?})",
                    step,
                    op,
                    skipped,
                    m.sub_next,
                    m.logs.iter().map(|l| l.base).collect::<Vec<_>>()
                );
                let p = p.unwrap_or_default();
                m.sub_skipped[p] += skipped;
                m.sub_next[p] = m.logs[p].base;
                m.sub_turn = p;
                Ok(true)
            }
            Err(TryRecvError::Empty) => {
                prop_assert!(
                    unread.is_empty(),
                    "step {} ({:?}): Empty, but partitions {:?} have unread messages",
                    step,
                    op,
                    unread
                );
                Ok(false)
            }
            Err(e) => Err(TestCaseError::fail(format!(
                "step {step} ({op:?}): subscriber: {e:?}"
            ))),
        }
    }

    /// One `try_recv` on member `i`; returns what it got (the message is held).
    pub(super) fn member_recv(
        &mut self,
        i: usize,
        step: usize,
        op: &dyn Debug,
    ) -> Result<Expect, TestCaseError> {
        let id = self.members[i].0;
        let want = self.model.member_recv(id);
        let got = match self.members[i].1.try_recv() {
            Ok(msg) => {
                let got = Expect::Msg {
                    partition: msg.partition(),
                    offset: msg.offset(),
                    count: msg.delivery_count(),
                };
                if got == want {
                    let (p, offset) = (msg.partition() as usize, msg.offset());
                    same(
                        *msg.payload(),
                        self.model.logs[p].payloads[offset as usize],
                        "member payload",
                        step,
                        op,
                    )?;
                    self.model.delivered[p].insert(offset);
                    self.held.push((msg, id));
                }
                got
            }
            Err(TryRecvError::Lagged { skipped }) => Expect::Lagged(skipped),
            Err(TryRecvError::Empty) => Expect::Empty,
            Err(e) => {
                return Err(TestCaseError::fail(format!(
                    "step {step} ({op:?}): member: {e:?}"
                )));
            }
        };
        prop_assert_eq!(
            &got,
            &want,
            "step {} ({:?}): member {} (model {:?})",
            step,
            op,
            id,
            self.model.parts
        );
        Ok(got)
    }

    pub(super) fn take_held(&mut self, i: Pick) -> Option<(Message<u64>, u64)> {
        (!self.held.is_empty()).then(|| self.held.remove(i.index(self.held.len())))
    }

    /// Sends the next payload, with key `KEYS[k]` or none, and checks the receipt.
    pub(super) fn send(
        &mut self,
        key: Option<usize>,
        step: usize,
        op: &dyn Debug,
    ) -> Result<(), TestCaseError> {
        let m = &mut self.model;
        let payload = m.next_payload;
        m.next_payload += 1;
        let producer = self.topic.producer();
        let receipt = match key {
            Some(k) => producer
                .send_record(Record::new(payload).key(KEYS[k]))
                .unwrap(),
            None => producer.send(payload).unwrap(),
        };
        let p = receipt.partition;
        prop_assert!((p as usize) < m.n(), "receipt partition {}", p);
        match key {
            Some(k) => {
                let first = *m.key_partition.entry(k).or_insert(p);
                same(p, first, "a key's partition", step, op)?;
            }
            None => {
                same(p, m.keyless % m.n() as u32, "round-robin", step, op)?;
                m.keyless += 1;
            }
        }
        let offset = m.push(p as usize, payload);
        same(receipt.offset, offset, "receipt offset", step, op)?;
        // The send returned after its commit, which carried every position recorded before.
        m.commit_point();
        Ok(())
    }

    pub(super) fn apply(&mut self, op: &TOp, step: usize) -> Result<(), TestCaseError> {
        match *op {
            TOp::Send(key) => self.send(key, step, op)?,
            TOp::SendBurst(key, n) => {
                for _ in 0..n {
                    self.send(key, step, op)?;
                }
            }
            TOp::SubRecv => {
                self.sub_recv(step, op)?;
            }
            TOp::Join => {
                if self.members.len() < MAX_MEMBERS {
                    self.join(step, op)?;
                }
            }
            TOp::Leave(i) => {
                if !self.members.is_empty() {
                    let (id, member) = self.members.remove(i.index(self.members.len()));
                    drop(member);
                    self.model.turns.remove(&id);
                    self.assignment(true, step, op)?;
                }
            }
            TOp::MemberRecv(i) => {
                if !self.members.is_empty() {
                    self.member_recv(i.index(self.members.len()), step, op)?;
                }
            }
            TOp::Ack(i) => {
                if let Some((msg, _)) = self.take_held(i) {
                    let (p, offset) = (msg.partition() as usize, msg.offset());
                    msg.ack().unwrap();
                    self.model.group_ack(p, offset);
                }
            }
            TOp::Nack(i) => {
                if let Some((msg, member)) = self.take_held(i) {
                    let (p, offset, count) =
                        (msg.partition() as usize, msg.offset(), msg.delivery_count());
                    msg.nack().unwrap();
                    self.model.group_release(p, offset, member, count, "nack");
                }
            }
            TOp::DropMessage(i) => {
                if let Some((msg, member)) = self.take_held(i) {
                    let (p, offset, count) =
                        (msg.partition() as usize, msg.offset(), msg.delivery_count());
                    drop(msg);
                    self.model
                        .group_release(p, offset, member, count, "dropped");
                }
            }
            TOp::Get(p, back) => {
                let p = p.index(self.model.n());
                let log = &self.model.logs[p];
                let offset = log.end().saturating_sub(back);
                let want = (offset >= log.base && offset < log.end())
                    .then(|| log.payloads[offset as usize]);
                let got = self.topic.get(p as u32, offset).unwrap();
                same(got.map(|m| *m.payload()), want, "get(p, offset)", step, op)?;
            }
            TOp::ResetGroup(earliest) => {
                for (msg, member) in std::mem::take(&mut self.held) {
                    let (p, offset, count) =
                        (msg.partition() as usize, msg.offset(), msg.delivery_count());
                    drop(msg);
                    self.model
                        .group_release(p, offset, member, count, "dropped");
                }
                for (id, member) in std::mem::take(&mut self.members) {
                    drop(member);
                    self.model.turns.remove(&id);
                }
                self.assignment(true, step, op)?;
                let start = if earliest {
                    Start::Earliest
                } else {
                    Start::Latest
                };
                self.topic.reset_group(GROUP, start).unwrap();
                self.model.reset(earliest);
            }
            TOp::Reopen => self.reopen(None, step, op)?,
            TOp::Kill { torn, mid_send } => {
                let kill = (self.setup.mode == Mode::Crash).then_some((torn, mid_send));
                self.reopen(kill, step, op)?;
            }
        }
        self.model.note_positions();
        Ok(())
    }

    /// Compares every observable with the model.
    pub(super) fn check(&mut self, step: usize, op: &dyn Debug) -> Result<(), TestCaseError> {
        self.assignment(false, step, op)?;
        let m = &self.model;
        for (p, log) in m.logs.iter().enumerate() {
            same(
                self.topic.offsets(p as u32),
                Some(log.base..log.end()),
                "offsets",
                step,
                op,
            )?;
        }
        same(
            self.topic.retained(),
            m.logs.iter().map(|l| l.end() - l.base).sum(),
            "retained()",
            step,
            op,
        )?;
        same(self.sub.lag(), m.sub_lag(), "subscriber lag()", step, op)?;
        same(
            self.topic.group_position(GROUP),
            Some(m.positions()),
            "group_position",
            step,
            op,
        )?;
        for (id, member) in &self.members {
            same(member.lag(), m.member_lag(*id), "member lag()", step, op)?;
        }
        same(self.dlq.len(), m.dead.len(), "group dead letters", step, op)?;
        self.check_stats(step, op)?;
        same(
            self.topic.groups(),
            vec![GROUP.to_owned()],
            "groups()",
            step,
            op,
        )?;
        Ok(())
    }

    /// `Broker::stats` agrees with the model: partitions, the subscriber's lag, the group's
    /// positions, lag, in-flight deliveries, redeliveries, dead letters and assignment.
    pub(super) fn check_stats(&self, step: usize, op: &dyn Debug) -> Result<(), TestCaseError> {
        let m = &self.model;
        let stats = self.bus.stats();
        let topic = stats.topic("events").expect("the topic is in the snapshot");
        let bounds: Vec<(u64, u64)> = m.logs.iter().map(|l| (l.base, l.end())).collect();
        let got: Vec<(u64, u64, u64)> = (topic.partitions.iter())
            .map(|p| (p.earliest, p.next, p.messages))
            .collect();
        let want: Vec<(u64, u64, u64)> = bounds.iter().map(|&(b, e)| (b, e, e - b)).collect();
        same(got, want, "stats: partitions", step, op)?;
        let lags: Vec<u64> = topic.subscribers.iter().map(|s| s.lag).collect();
        same(lags, vec![m.sub_lag()], "stats: subscriber lag", step, op)?;
        let group = topic.group(GROUP).expect("the group is in the snapshot");
        let positions: Vec<u64> = group.partitions.iter().map(|p| p.position).collect();
        same(positions, m.positions(), "stats: positions", step, op)?;
        let lag = |(part, &(base, end)): (&GPart, &(u64, u64))| {
            end - part.first_unacked().clamp(base, end)
        };
        let want: Vec<u64> = m.parts.iter().zip(&bounds).map(lag).collect();
        let got: Vec<u64> = group.partitions.iter().map(|p| p.lag).collect();
        same(got, want.clone(), "stats: lag per partition", step, op)?;
        same(group.lag, want.iter().sum(), "stats: group lag", step, op)?;
        let held = |part: &GPart| part.pending.values().filter(|p| p.holder.is_some()).count();
        let want: Vec<u64> = m.parts.iter().map(|p| held(p) as u64).collect();
        let got: Vec<u64> = group.partitions.iter().map(|p| p.in_flight).collect();
        same(got, want, "stats: in flight per partition", step, op)?;
        same(
            group.redelivered,
            m.redelivered,
            "stats: redelivered",
            step,
            op,
        )?;
        same(
            group.dead_lettered,
            m.dead_run,
            "stats: dead_lettered",
            step,
            op,
        )?;
        same(
            group.members.len(),
            self.members.len(),
            "stats: members",
            step,
            op,
        )?;
        // Each member's partitions, as the snapshot assigns them and as the member says.
        let mut by_owner: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for p in group.partitions.iter() {
            if let Some(owner) = p.owner {
                by_owner.entry(owner).or_default().push(p.partition);
            }
        }
        let mut got: Vec<Vec<u32>> = by_owner.into_values().collect();
        let mut want: Vec<Vec<u32>> = (self.members.iter())
            .map(|(_, c)| c.partitions())
            .filter(|p| !p.is_empty())
            .collect();
        got.sort();
        want.sort();
        same(got, want, "stats: assignment", step, op)?;
        let dead = stats.queue(GROUP_DLQ).expect("the dead-letter queue");
        same(
            dead.ready,
            self.dlq.len() as u64,
            "stats: dlq ready",
            step,
            op,
        )
    }

    /// Drains the subscriber and the group, then checks positions and delivery guarantees.
    pub(super) fn finish(mut self) -> Result<(), TestCaseError> {
        let op = &"final drain";
        let step = usize::MAX;
        while self.sub_recv(step, op)? {}
        for (msg, _) in std::mem::take(&mut self.held) {
            let (p, offset) = (msg.partition() as usize, msg.offset());
            msg.ack().unwrap();
            self.model.group_ack(p, offset);
        }
        if self.members.is_empty() {
            self.join(step, op)?;
        }
        loop {
            let mut progress = false;
            for i in 0..self.members.len() {
                loop {
                    match self.member_recv(i, step, op)? {
                        Expect::Msg { .. } => {
                            let (msg, _) = self.held.pop().unwrap();
                            let (p, offset) = (msg.partition() as usize, msg.offset());
                            msg.ack().unwrap();
                            self.model.group_ack(p, offset);
                        }
                        Expect::Lagged(_) => {}
                        Expect::Empty => break,
                    }
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        self.check(step, op)?;
        let m = &self.model;
        let ends: Vec<u64> = m.logs.iter().map(PLog::end).collect();
        prop_assert_eq!(
            self.topic.group_position(GROUP),
            Some(ends.clone()),
            "drained group position"
        );
        for (p, log) in m.logs.iter().enumerate() {
            // At-least-once: every retained message reached a member (unless a reset to
            // `Latest` skipped it).
            for offset in log.base..log.end() {
                prop_assert!(
                    m.delivered[p].contains(&offset) || m.group_skipped[p].contains(&offset),
                    "partition {} offset {} retained but never delivered to the group",
                    p,
                    offset
                );
            }
            // Every offset was delivered or reported skipped.
            for offset in 0..log.end() {
                prop_assert!(
                    m.delivered[p].contains(&offset) || m.group_skipped[p].contains(&offset),
                    "partition {} offset {} neither delivered to the group nor skipped",
                    p,
                    offset
                );
            }
            // The subscriber: offsets strictly increase; received + skipped = sent.
            let got = &m.sub_received[p];
            prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "{:?}", got);
            prop_assert_eq!(
                got.len() as u64 + m.sub_skipped[p],
                log.end(),
                "partition {}: subscriber received {:?}, skipped {}",
                p,
                got,
                m.sub_skipped[p]
            );
            prop_assert!(
                (log.base..log.end()).all(|o| got.contains(&o)),
                "partition {}: the subscriber missed a retained message",
                p
            );
        }
        // The group's dead letters: in order, with the same headers as a queue's.
        let mut dead = self.dlq.consumer();
        for (i, &(payload, why, count)) in self.model.dead.iter().enumerate() {
            let msg = dead.try_recv();
            prop_assert!(msg.is_ok(), "group dead letter {}: {:?}", i, msg);
            let msg = msg.unwrap();
            prop_assert_eq!(*msg.payload(), payload, "group dead letter {}", i);
            let headers = msg.headers();
            prop_assert_eq!(headers.get(DEAD_LETTER_QUEUE), Some(&b"events/g"[..]));
            prop_assert_eq!(headers.get(DEAD_LETTER_REASON), Some(why.as_bytes()));
            let deliveries = count.to_string();
            prop_assert_eq!(
                headers.get(DEAD_LETTER_DELIVERIES),
                Some(deliveries.as_bytes())
            );
            msg.ack().unwrap();
        }
        let rest = dead.try_recv();
        prop_assert!(
            matches!(rest, Err(TryRecvError::Empty)),
            "group dead letters beyond the model: {:?}",
            rest
        );
        Ok(())
    }
}

pub(crate) fn run_topic(setup: TSetup, ops: Vec<TOp>) -> Result<(), TestCaseError> {
    bump(|f| {
        f.cases += 1;
        f.durable += u64::from(setup.mode != Mode::Memory);
        f.steps += ops.len() as u64;
    });
    let mut rig = TopicRig::new(&setup)?;
    rig.check(0, &"start")?;
    for (step, op) in ops.iter().enumerate() {
        rig.apply(op, step)?;
        rig.check(step, op)?;
    }
    rig.finish()
}

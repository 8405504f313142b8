//! [`Deadlines`]: ack deadlines in deadline order, for queues and consumer groups.
//!
//! Entries are never removed when their delivery ends (an ack costs no search): such an entry
//! is stale. Stale entries in front are dropped as deliveries end, and all of them at once when
//! they outnumber the live ones, so the index stays proportional to what is in flight. Whether
//! an entry is live is the owner's to say (`live(deadline, key)`).

use std::collections::VecDeque;

use crate::record::Nanos;

pub(crate) struct Deadlines<K> {
    entries: VecDeque<(Nanos, K)>,
    stale: usize,
}

impl<K: Copy> Deadlines<K> {
    pub(crate) fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            stale: 0,
        }
    }

    /// Files a deadline in order: almost always at the back (one monotonic clock plus one
    /// timeout), but a clock read just before another thread's can arrive second.
    pub(crate) fn push(&mut self, at: Nanos, key: K) {
        if self.entries.back().is_none_or(|&(last, _)| last <= at) {
            self.entries.push_back((at, key));
        } else {
            let index = self.entries.partition_point(|&(d, _)| d <= at);
            self.entries.insert(index, (at, key));
        }
    }

    /// One more entry went stale (its delivery ended, or its deadline moved): drops the stale
    /// ones in front, and all of them once they outnumber the live ones.
    pub(crate) fn went_stale(&mut self, live: impl Fn(Nanos, K) -> bool) {
        self.stale += 1;
        while let Some(&(at, key)) = self.entries.front() {
            if live(at, key) {
                break;
            }
            self.entries.pop_front();
            self.stale = self.stale.saturating_sub(1);
        }
        if self.stale > 64 && self.stale > self.entries.len() / 2 {
            self.entries.retain(|&(at, key)| live(at, key));
            self.stale = 0;
        }
    }

    /// The live entries due by `now`, oldest first.
    pub(crate) fn due(&self, now: Nanos, live: impl Fn(Nanos, K) -> bool) -> Vec<K> {
        self.entries
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter(|&&(at, key)| live(at, key))
            .map(|&(_, key)| key)
            .collect()
    }

    /// The earliest deadline (stale entries never stay in front).
    pub(crate) fn next(&self) -> Option<Nanos> {
        self.entries.front().map(|&(at, _)| at)
    }

    /// Forgets every entry.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.stale = 0;
    }

    /// How many entries it holds, stale ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// One held entry while 100,000 others come and go: the index keeps a handful, not all.
    #[test]
    fn a_held_deadline_pins_one_entry_not_every_later_one() {
        let mut d = Deadlines::new();
        let mut live: BTreeSet<u64> = BTreeSet::new();
        d.push(0, 0u64);
        live.insert(0);
        for key in 1..100_000u64 {
            d.push(key, key);
            live.insert(key);
            live.remove(&key); // acked at once
            d.went_stale(|_, k| live.contains(&k));
        }
        assert!(d.len() <= 130, "{} entries for 1 live deadline", d.len());
        assert_eq!(d.next(), Some(0));
        assert_eq!(d.due(u64::MAX, |_, k| live.contains(&k)), vec![0]);
    }

    #[test]
    fn a_late_filed_earlier_deadline_still_comes_first() {
        let mut d = Deadlines::new();
        d.push(20, 'b');
        d.push(10, 'a');
        assert_eq!(d.next(), Some(10));
        assert_eq!(d.due(15, |_, _| true), vec!['a']);
        assert_eq!(d.due(20, |_, _| true), vec!['a', 'b']);
    }
}

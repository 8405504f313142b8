//! `Timed`: the messages a queue keeps out of the ready list for a while, and the expiry index.
//!
//! Waiting messages (a delay not yet due, or a backoff after a failed delivery) are kept in due
//! order, so the next one is found without a scan and none holds back the others. Expiry
//! times of messages that are ready or waiting are kept in order beside them; a message in
//! flight is not in the index (in-flight messages do not expire: its consumer carries the time
//! and checks it when the delivery ends without an ack). All times are the broker's monotonic
//! ticks ([`Clock::ticks`](crate::clock::Clock::ticks)); a record's wall-clock due and expiry
//! times are converted when the message is queued.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::item::Item;
use crate::record::Nanos;

pub(crate) struct Timed<T> {
    /// Waiting messages by (due, id): FIFO for equal due times.
    waiting: BTreeMap<(Nanos, u64), Item<T>>,
    /// Expiry times by (expiry, id), and by id.
    expiry: BTreeSet<(Nanos, u64)>,
    expires: HashMap<u64, Nanos>,
}

impl<T> Timed<T> {
    pub(crate) fn new() -> Self {
        Self {
            waiting: BTreeMap::new(),
            expiry: BTreeSet::new(),
            expires: HashMap::new(),
        }
    }

    /// Whether nothing waits and nothing can expire.
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.expiry.is_empty()
    }

    pub(crate) fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// The next moment something is due or expires.
    pub(crate) fn next(&self) -> Option<Nanos> {
        let due = self.waiting.keys().next().map(|k| k.0);
        let expiry = self.expiry.first().map(|k| k.0);
        due.into_iter().chain(expiry).min()
    }

    /// The next moment a waiting message is due.
    pub(crate) fn next_due(&self) -> Option<Nanos> {
        self.waiting.keys().next().map(|k| k.0)
    }

    /// Keeps `item` until `due`.
    pub(crate) fn wait(&mut self, due: Nanos, item: Item<T>) {
        self.waiting.insert((due, item.id), item);
    }

    /// Takes the waiting messages due by `now`, in due order.
    pub(crate) fn take_due(&mut self, now: Nanos) -> Vec<Item<T>> {
        let mut out = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            if entry.key().0 > now {
                break;
            }
            out.push(entry.remove());
        }
        out
    }

    /// Whether any message has an expiry time.
    pub(crate) fn tracks_expiry(&self) -> bool {
        !self.expires.is_empty()
    }

    /// Notes that message `id` expires at `at`.
    pub(crate) fn track(&mut self, id: u64, at: Nanos) {
        if let Some(old) = self.expires.insert(id, at) {
            self.expiry.remove(&(old, id));
        }
        self.expiry.insert((at, id));
    }

    /// Forgets message `id`'s expiry time (it is delivered or gone), returning it.
    pub(crate) fn untrack(&mut self, id: u64) -> Option<Nanos> {
        let at = self.expires.remove(&id)?;
        self.expiry.remove(&(at, id));
        Some(at)
    }

    /// The ids of messages expired by `now`, forgotten here, by rank: in expiry order (then
    /// id order).
    pub(crate) fn take_expired(&mut self, now: Nanos) -> HashMap<u64, usize> {
        let mut out = HashMap::new();
        while self.expiry.first().is_some_and(|&(at, _)| at <= now) {
            if let Some((_, id)) = self.expiry.pop_first() {
                self.expires.remove(&id);
                let rank = out.len();
                out.insert(id, rank);
            }
        }
        out
    }

    /// Takes the waiting messages with these ids.
    pub(crate) fn take_waiting(&mut self, ids: &HashMap<u64, usize>) -> Vec<Item<T>> {
        if self.waiting.is_empty() {
            return Vec::new();
        }
        let keys: Vec<(Nanos, u64)> = self
            .waiting
            .keys()
            .filter(|(_, id)| ids.contains_key(id))
            .copied()
            .collect();
        keys.iter().filter_map(|k| self.waiting.remove(k)).collect()
    }

    /// Takes every waiting message (in due order) and forgets every expiry time.
    pub(crate) fn take_all(&mut self) -> Vec<Item<T>> {
        self.expiry.clear();
        self.expires.clear();
        std::mem::take(&mut self.waiting).into_values().collect()
    }

    /// The waiting messages in due order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Item<T>> {
        self.waiting.values()
    }
}

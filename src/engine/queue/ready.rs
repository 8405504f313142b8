//! `Ready`: the messages ready for delivery, in delivery order. One list for a queue without
//! priorities (as cheap as a plain deque); one list per level, highest first, for a queue with
//! them. Within a level, redeliveries go in front and first deliveries at the back.

use std::collections::{HashMap, VecDeque};

use super::item::Item;

pub(crate) enum Ready<T> {
    One(VecDeque<Item<T>>),
    Levels {
        /// Index = priority level.
        levels: Vec<VecDeque<Item<T>>>,
        len: usize,
    },
}

impl<T> Ready<T> {
    /// A ready list for `levels` priority levels (1: no priorities).
    pub(crate) fn new(levels: u8) -> Self {
        if levels <= 1 {
            return Self::One(VecDeque::new());
        }
        Self::Levels {
            levels: (0..levels).map(|_| VecDeque::new()).collect(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::One(list) => list.len(),
            Self::Levels { len, .. } => *len,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The list `item` belongs in: its record's priority, capped at the top level.
    fn level(levels: &mut [VecDeque<Item<T>>], item: &Item<T>) -> usize {
        let priority = item.timing().map_or(0, |t| t.priority);
        usize::from(priority).min(levels.len() - 1)
    }

    /// Appends a first delivery.
    pub(crate) fn push_back(&mut self, item: Item<T>) {
        match self {
            Self::One(list) => list.push_back(item),
            Self::Levels { levels, len } => {
                let level = Self::level(levels, &item);
                levels[level].push_back(item);
                *len += 1;
            }
        }
    }

    /// Puts a redelivery in front of its level.
    pub(crate) fn push_front(&mut self, item: Item<T>) {
        match self {
            Self::One(list) => list.push_front(item),
            Self::Levels { levels, len } => {
                let level = Self::level(levels, &item);
                levels[level].push_front(item);
                *len += 1;
            }
        }
    }

    /// The next message to deliver.
    pub(crate) fn pop_front(&mut self) -> Option<Item<T>> {
        match self {
            Self::One(list) => list.pop_front(),
            Self::Levels { levels, len } => {
                let item = levels.iter_mut().rev().find_map(VecDeque::pop_front)?;
                *len -= 1;
                Some(item)
            }
        }
    }

    /// The messages in delivery order.
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = &Item<T>> + '_> {
        match self {
            Self::One(list) => Box::new(list.iter()),
            Self::Levels { levels, .. } => Box::new(levels.iter().rev().flatten()),
        }
    }

    /// The message at the front of each level.
    pub(crate) fn heads(&self) -> impl Iterator<Item = &Item<T>> {
        let lists: &[VecDeque<Item<T>>] = match self {
            Self::One(list) => std::slice::from_ref(list),
            Self::Levels { levels, .. } => levels,
        };
        lists.iter().filter_map(VecDeque::front)
    }

    fn lists(&mut self) -> &mut [VecDeque<Item<T>>] {
        match self {
            Self::One(list) => std::slice::from_mut(list),
            Self::Levels { levels, .. } => levels,
        }
    }

    fn recount(&mut self) {
        if let Self::Levels { levels, len } = self {
            *len = levels.iter().map(VecDeque::len).sum();
        }
    }

    /// Takes out the messages with these ids: from the fronts first (where a queue-wide
    /// time-to-live finds them), with one pass over the rest only if some are elsewhere.
    pub(crate) fn take(&mut self, ids: &HashMap<u64, usize>) -> Vec<Item<T>> {
        let mut out = Vec::new();
        for list in self.lists() {
            while list.front().is_some_and(|i| ids.contains_key(&i.id)) {
                out.extend(list.pop_front());
            }
        }
        if out.len() < ids.len() {
            for list in self.lists() {
                let mut kept = VecDeque::with_capacity(list.len());
                for item in list.drain(..) {
                    if ids.contains_key(&item.id) {
                        out.push(item);
                    } else {
                        kept.push_back(item);
                    }
                }
                *list = kept;
            }
        }
        self.recount();
        out
    }

    /// Takes every message out, in delivery order.
    pub(crate) fn take_all(&mut self) -> Vec<Item<T>> {
        let mut out = Vec::with_capacity(self.len());
        for list in self.lists().iter_mut().rev() {
            out.extend(list.drain(..));
        }
        self.recount();
        out
    }

    /// Direct access to the one list (unit tests).
    #[cfg(test)]
    pub(crate) fn first_mut(&mut self) -> Option<&mut Item<T>> {
        self.lists().iter_mut().rev().find_map(|l| l.front_mut())
    }
}

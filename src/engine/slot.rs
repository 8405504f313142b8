//! `Slots`: cells written once, in order, by one [`Writer`], and then read by any thread, for
//! the partition log's messages. The crate's only `unsafe` code is here.
//!
//! `std::sync::OnceLock` does the same safely, but its `set` takes two read-modify-writes and
//! an out-of-line call through `Once` (about a tenth of a memory topic send, measured with
//! perf). A compare-exchange per slot, which an earlier version took, still stalls the
//! producer: the reader that waits for the message has the slot's line, and a locked
//! instruction must own it before it retires, where plain stores queue in the store buffer
//! (half the time of a memory topic's `append`, measured with perf). So a slot is written with
//! plain stores, and the [`Writer`] proves that nobody else writes it:
//! - each `Slots` has a [`Writer`] made with it, matched by a process-unique id, and not
//!   `Clone`; it only moves forward, so each slot is written at most once, and only while no
//!   reader may look at it (its state is `EMPTY`);
//! - the writer writes the value and then stores `READY` with Release;
//! - `get` reads the value only after loading `READY` with Acquire, which makes the write
//!   visible, and nothing writes it after that;
//! - `take` and drop (with `&mut`, so alone) take or drop the value only if it was written;
//!   a taken slot is `EMPTY` again, but the writer is past it, so it is never written again.
//!
//! Loom models check the writer against `get` (`loom_models` at the bottom, and the partition
//! models in `topic::log`, which run on it through [`sync`](super::sync)'s loom cell); `take`
//! and drop need `&mut`, which loom cannot trace through a std `Arc`, so Miri checks those, with
//! the rest: `cargo +nightly miri test --lib engine::slot` (and `engine::topic::log`).

#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::sync::atomic::AtomicU64 as IdCounter;

use super::sync::{AtomicU8, Ordering, UnsafeCell};

const EMPTY: u8 = 0;
const READY: u8 = 2;

/// A value set at most once (by the [`Writer`] of the [`Slots`] it is in), then shared.
struct Slot<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: a slot hands out `&T` to any thread that sees it ready (so `T: Sync`), and the value
// written on one thread is dropped on whichever drops the slot (so `T: Send`): what
// `OnceLock<T>` requires for the same sharing.
unsafe impl<T: Send + Sync> Sync for Slot<T> {}

/// A fixed run of write-once slots, written in order by their one [`Writer`].
pub(crate) struct Slots<T> {
    /// Matches the writer made with these slots (ids are never reused).
    id: u64,
    slots: Box<[Slot<T>]>,
}

/// The only writer of one [`Slots`]: the next index it may write (it never goes back).
#[derive(Debug)]
pub(crate) struct Writer {
    id: u64,
    next: usize,
}

/// Where slot ids come from: one per [`Slots`], never reused (a `u64` does not wrap).
static NEXT_ID: IdCounter = IdCounter::new(0);

impl<T> Slots<T> {
    /// `len` empty slots and their writer.
    pub(crate) fn new(len: usize) -> (Self, Writer) {
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slots = (0..len)
            .map(|_| Slot {
                state: AtomicU8::new(EMPTY),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        (Self { id, slots }, Writer { id, next: 0 })
    }

    /// The value at `index`, once written.
    #[inline]
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.slots.get(index)?.get()
    }

    /// Each slot's value, in order (`None` where none is written).
    pub(crate) fn iter(&self) -> impl Iterator<Item = Option<&T>> {
        self.slots.iter().map(Slot::get)
    }

    /// Writes `value` at `index` through `writer`, or hands it back if `writer` is not these
    /// slots' writer, `index` is out of range, or the writer is already past it. The writer
    /// moves past `index` (the slots it skipped stay empty for good).
    #[inline]
    pub(crate) fn write(&self, writer: &mut Writer, index: usize, value: T) -> Result<(), T> {
        let Some(slot) = self.slots.get(index) else {
            return Err(value);
        };
        if writer.id != self.id || index < writer.next {
            return Err(value);
        }
        writer.next = index + 1;
        // SAFETY: only this writer writes these slots (the ids match, and a writer is made
        // once, with its slots), and it has never been at `index` (it only moves forward), so
        // this is the slot's only write, and no reader looks at the value before `READY`,
        // stored below. `take` (with `&mut`) may have emptied the slot since, but the writer
        // was past it by then.
        slot.value.with_mut(|cell| unsafe {
            (*cell).write(value);
        });
        slot.state.store(READY, Ordering::Release);
        Ok(())
    }

    /// Takes each value that `keep` refuses out (compaction), leaving those slots empty;
    /// returns whether any value stays.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(usize, &T) -> bool) -> bool {
        let mut kept = false;
        for (index, slot) in self.slots.iter_mut().enumerate() {
            match slot.get().map(|value| keep(index, value)) {
                Some(false) => drop(slot.take()),
                Some(true) => kept = true,
                None => {}
            }
        }
        kept
    }
}

impl<T> Slot<T> {
    /// The value, once set.
    #[inline]
    fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) != READY {
            return None;
        }
        // SAFETY: `READY` was stored (Release) after the value was written, and this load
        // (Acquire) saw it, so the write is visible; nothing writes the value after `READY`,
        // and it lives as long as `self`.
        Some(
            self.value
                .with(|value| unsafe { (*value).assume_init_ref() }),
        )
    }

    /// Takes the value out (compaction), leaving the slot empty.
    fn take(&mut self) -> Option<T> {
        if self.state.load(Ordering::Acquire) != READY {
            return None;
        }
        self.state.store(EMPTY, Ordering::Relaxed);
        // SAFETY: `READY`: the value was written; the state says `EMPTY` now, so neither `get`
        // nor drop reads it again.
        Some(unsafe { self.take_cell().assume_init() })
    }

    /// Moves the cell's contents out, leaving it uninitialised. `&mut self` makes this the
    /// only access; it is a plain move, not one of the cell's tracked accesses, because loom
    /// cannot see how that `&mut` came about (the last drop of a std `Arc`).
    fn take_cell(&mut self) -> MaybeUninit<T> {
        let empty = UnsafeCell::new(MaybeUninit::uninit());
        std::mem::replace(&mut self.value, empty).into_inner()
    }
}

impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        // `&mut self`: no other thread looks any more, and whatever set it is seen.
        if self.state.load(Ordering::Acquire) == READY {
            // SAFETY: `READY`: the value was written, and is dropped only here, once.
            unsafe { self.take_cell().assume_init_drop() };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};

    use super::Slots;

    /// Counts its drops.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, StdOrdering::SeqCst);
        }
    }

    #[test]
    fn a_writer_writes_each_slot_once_in_order_and_hands_the_rest_back() {
        let (slots, mut writer) = Slots::new(3);
        assert_eq!(slots.get(0), None);
        assert_eq!(slots.write(&mut writer, 0, "first"), Ok(()));
        assert_eq!(slots.write(&mut writer, 0, "again"), Err("again"));
        assert_eq!(slots.write(&mut writer, 2, "skips one"), Ok(()));
        assert_eq!(slots.write(&mut writer, 1, "back"), Err("back"));
        assert_eq!(
            slots.write(&mut writer, 3, "past the end"),
            Err("past the end")
        );
        let seen: Vec<_> = slots.iter().collect();
        assert_eq!(seen, [Some(&"first"), None, Some(&"skips one")]);
    }

    #[test]
    fn another_slots_writer_is_refused() {
        let (slots, _writer) = Slots::new(2);
        let (_other, mut other_writer) = Slots::<u32>::new(2);
        assert_eq!(slots.write(&mut other_writer, 0, 7), Err(7));
        assert_eq!(slots.get(0), None);
    }

    #[test]
    fn retain_takes_refused_values_and_the_writer_never_writes_them_again() {
        let (mut slots, mut writer) = Slots::new(3);
        for (i, value) in [10, 11, 12].into_iter().enumerate() {
            assert!(slots.write(&mut writer, i, Box::new(value)).is_ok());
        }
        assert!(slots.retain(|i, v| i == 1 && **v == 11));
        let seen: Vec<_> = slots.iter().map(|v| v.map(|v| **v)).collect();
        assert_eq!(seen, [None, Some(11), None]);
        assert_eq!(slots.write(&mut writer, 0, Box::new(1)), Err(Box::new(1)));
        assert!(!slots.retain(|_, _| false), "nothing left");
    }

    #[test]
    fn a_written_value_is_dropped_once_and_an_empty_slot_drops_nothing() {
        let drops = Arc::new(AtomicUsize::new(0));
        drop(Slots::<Counted>::new(2));
        assert_eq!(drops.load(StdOrdering::SeqCst), 0);
        let (slots, mut writer) = Slots::new(2);
        assert!(
            slots
                .write(&mut writer, 0, Counted(Arc::clone(&drops)))
                .is_ok()
        );
        let Err(refused) = slots.write(&mut writer, 0, Counted(Arc::clone(&drops))) else {
            panic!("written twice");
        };
        drop(refused);
        assert_eq!(drops.load(StdOrdering::SeqCst), 1, "the refused value");
        drop(slots);
        assert_eq!(
            drops.load(StdOrdering::SeqCst),
            2,
            "the written value, once"
        );
        let (mut slots, mut writer) = Slots::new(1);
        assert!(
            slots
                .write(&mut writer, 0, Counted(Arc::clone(&drops)))
                .is_ok()
        );
        slots.retain(|_, _| false);
        assert_eq!(drops.load(StdOrdering::SeqCst), 3, "taken by retain");
        drop(slots);
        assert_eq!(drops.load(StdOrdering::SeqCst), 3, "not dropped again");
    }

    /// A reader on another thread sees the whole value once it sees it at all (Miri checks
    /// the accesses for data races).
    #[test]
    fn a_reader_sees_the_value_written_on_another_thread() {
        let (slots, mut writer) = Slots::new(1);
        let slots = Arc::new(slots);
        let written = {
            let slots = Arc::clone(&slots);
            std::thread::spawn(move || slots.write(&mut writer, 0, vec![1u64, 2, 3]).is_ok())
        };
        let seen = loop {
            if let Some(value) = slots.get(0) {
                break value.clone();
            }
            std::thread::yield_now();
        };
        assert_eq!(seen, [1, 2, 3]);
        assert!(written.join().unwrap());
    }
}

#[cfg(all(test, embus_loom))]
mod loom_models {
    use loom::sync::Arc;
    use loom::thread;

    use super::Slots;

    /// A reader racing the writer sees nothing or the whole value of each slot (loom checks
    /// the cell's accesses and leaks), and once it sees the second it sees the first.
    #[test]
    fn loom_slots_write_get_race() {
        loom::model(|| {
            let (slots, mut writer) = Slots::new(2);
            let slots = Arc::new(slots);
            let written = Arc::clone(&slots);
            let writing = thread::spawn(move || {
                assert!(written.write(&mut writer, 0, Arc::new(1u64)).is_ok());
                assert!(written.write(&mut writer, 1, Arc::new(2u64)).is_ok());
            });
            let second = slots.get(1).map(|v| **v);
            let first = slots.get(0).map(|v| **v);
            assert!(matches!(second, None | Some(2)));
            if second.is_some() {
                assert_eq!(first, Some(1), "the second slot was seen before the first");
            }
            writing.join().unwrap();
            assert_eq!(slots.get(0).map(|v| **v), Some(1));
        });
    }
}

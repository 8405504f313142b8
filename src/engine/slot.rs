//! `Slot`: a cell written once and then read by any thread, for the partition log's messages.
//! The crate's only `unsafe` code is here.
//!
//! `std::sync::OnceLock` does the same safely, but its `set` takes two read-modify-writes and
//! an out-of-line call through `Once` (about a tenth of a memory topic send, measured with
//! perf). A slot takes one compare-exchange, on the cache line it is about to write anyway.
//!
//! The state goes `EMPTY → WRITING → READY`, each step once:
//! - `set` wins the exchange `EMPTY → WRITING` (Acquire), or hands the value back: so at most
//!   one thread ever writes the value, and only while no reader may look at it;
//! - it then writes the value and stores `READY` with Release;
//! - `get` reads the value only after loading `READY` with Acquire, which makes the write
//!   visible, and nothing writes it after that;
//! - drop (with `&mut`, so alone) drops the value only if it was written.
//!
//! Loom models check `set` against `get` (`loom_models` at the bottom, and the partition models
//! in `topic::log`, which run on it through [`sync`](super::sync)'s loom cell); `take` and drop
//! need `&mut`, which loom cannot trace through a std `Arc`, so Miri checks those, with the
//! rest: `cargo +nightly miri test --lib engine::slot` (and `engine::topic::log`).

#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use super::sync::{AtomicU8, Ordering, UnsafeCell};

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

/// A value set at most once, then shared.
pub(crate) struct Slot<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: a slot hands out `&T` to any thread that sees it ready (so `T: Sync`), and the value
// written on one thread is dropped on whichever drops the slot (so `T: Send`): what
// `OnceLock<T>` requires for the same sharing.
unsafe impl<T: Send + Sync> Sync for Slot<T> {}

impl<T> Slot<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// The value, once set.
    #[inline]
    pub(crate) fn get(&self) -> Option<&T> {
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

    /// Sets the value, or hands it back if the slot was set already, or is being set by
    /// another thread right now (unlike `OnceLock`, it does not wait for that one: the log
    /// sets each slot once, under the partition lock). Nothing between the exchange and the
    /// `READY` store can unwind, so a slot never stays half-written.
    #[inline]
    pub(crate) fn set(&self, value: T) -> Result<(), T> {
        if self
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(value);
        }
        // SAFETY: winning `EMPTY → WRITING` makes this the only write the slot will ever have,
        // and no reader looks at the value before `READY`, stored below.
        self.value.with_mut(|slot| unsafe {
            (*slot).write(value);
        });
        self.state.store(READY, Ordering::Release);
        Ok(())
    }
}

impl<T> Slot<T> {
    /// Takes the value out (compaction), leaving the slot empty.
    pub(crate) fn take(&mut self) -> Option<T> {
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

    use super::Slot;

    /// Counts its drops.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, StdOrdering::SeqCst);
        }
    }

    #[test]
    fn a_slot_is_set_once_and_hands_a_second_value_back() {
        let slot = Slot::new();
        assert_eq!(slot.get(), None);
        assert_eq!(slot.set(String::from("first")), Ok(()));
        assert_eq!(
            slot.set(String::from("second")),
            Err(String::from("second"))
        );
        assert_eq!(slot.get().map(String::as_str), Some("first"));
    }

    #[test]
    fn a_taken_value_leaves_the_slot_empty() {
        let mut slot = Slot::new();
        assert_eq!(slot.take(), None);
        assert!(slot.set(Box::new(7)).is_ok());
        assert_eq!(slot.take(), Some(Box::new(7)));
        assert_eq!(slot.get(), None);
        assert_eq!(slot.take(), None);
    }

    #[test]
    fn a_set_value_is_dropped_once_and_an_empty_slot_drops_nothing() {
        let drops = Arc::new(AtomicUsize::new(0));
        drop(Slot::<Counted>::new());
        assert_eq!(drops.load(StdOrdering::SeqCst), 0);
        let slot = Slot::new();
        assert!(slot.set(Counted(Arc::clone(&drops))).is_ok());
        let Err(refused) = slot.set(Counted(Arc::clone(&drops))) else {
            panic!("set twice");
        };
        drop(refused);
        assert_eq!(drops.load(StdOrdering::SeqCst), 1, "the refused value");
        drop(slot);
        assert_eq!(drops.load(StdOrdering::SeqCst), 2, "the set value, once");
    }

    /// A reader on another thread sees the whole value once it sees it at all (Miri checks
    /// the accesses for data races).
    #[test]
    fn a_reader_sees_the_value_written_on_another_thread() {
        let slot = Arc::new(Slot::new());
        let writer = {
            let slot = Arc::clone(&slot);
            std::thread::spawn(move || slot.set(vec![1u64, 2, 3]).is_ok())
        };
        let seen = loop {
            if let Some(value) = slot.get() {
                break value.clone();
            }
            std::thread::yield_now();
        };
        assert_eq!(seen, [1, 2, 3]);
        assert!(writer.join().unwrap());
    }

    /// Two threads race to set: exactly one wins, and the other gets its value back.
    #[test]
    fn racing_setters_have_one_winner() {
        let slot = Arc::new(Slot::new());
        let setters: Vec<_> = (0..2u32)
            .map(|i| {
                let slot = Arc::clone(&slot);
                std::thread::spawn(move || slot.set(i).is_ok())
            })
            .collect();
        let won: Vec<bool> = setters.into_iter().map(|s| s.join().unwrap()).collect();
        assert_eq!(won.iter().filter(|&&w| w).count(), 1);
        let winner = u32::from(won[1]);
        assert_eq!(slot.get(), Some(&winner));
    }
}

#[cfg(all(test, embus_loom))]
mod loom_models {
    use loom::sync::Arc;
    use loom::thread;

    use super::Slot;

    /// A reader racing the write sees nothing or the whole value; a second setter racing the
    /// first gets its value back; every value is dropped once (loom checks the cell's
    /// accesses and leaks).
    #[test]
    fn loom_slot_set_get_race() {
        loom::model(|| {
            let slot = Arc::new(Slot::new());
            let (a, b) = (Arc::clone(&slot), Arc::clone(&slot));
            let first = thread::spawn(move || a.set(Arc::new(1u64)).is_ok());
            let second = thread::spawn(move || b.set(Arc::new(2u64)).is_ok());
            let seen = slot.get().map(|v| **v);
            assert!(matches!(seen, None | Some(1 | 2)));
            let (first, second) = (first.join().unwrap(), second.join().unwrap());
            assert!(first ^ second, "exactly one setter wins");
            let value = **slot.get().expect("set by now");
            assert_eq!(value, if first { 1 } else { 2 });
            if let Some(seen) = seen {
                assert_eq!(seen, value, "a reader saw a value other than the one set");
            }
        });
    }
}

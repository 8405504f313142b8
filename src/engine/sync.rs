//! The synchronization under the lock-free partition reads — atomics, the partition lock,
//! write-once links and slots, and thread parking — routed through loom under `--cfg embus_loom`, the way
//! tokio's `loom` facade is, so that the loom models in `topic::log` check the real code.
//!
//! Normal builds re-export `std` and `parking_lot` unchanged: nothing here costs anything
//! outside a loom build. The cfg is `embus_loom` rather than `loom` because `RUSTFLAGS` reach
//! every crate, and tokio built with `cfg(loom)` drops `tokio::net`, which the AMQP bridge needs.
//!
//! Under loom:
//! - A `SeqCst` load that follows a `SeqCst` store on the same thread is preceded by a `SeqCst`
//!   fence. Loom treats `SeqCst` accesses as `AcqRel` (its README, "Unsupported features"), so
//!   it would report the store-then-load handshakes (`writers_waiting` against a reader's
//!   cursor) as lost wakeups that the C++ total order on `SeqCst` accesses rules out; fences it
//!   does model. Only that pair gets one: weakening either the store or the load of a side to
//!   `Release`/`Acquire` drops the fence, and the models catch the lost wakeup.
//! - `OnceLock` (a segment's `next` link) is std's behind a loom flag set with `Release` after
//!   the value and read with `Acquire` before it: what std's `OnceLock` promises, made visible
//!   to loom, so a reader that could see a link before it is published finds it empty.
//! - `UnsafeCell` and `AtomicU8` are loom's, so that loom checks the accesses of the
//!   write-once slots ([`Slots`](super::slot::Slots)) that hold the messages.
//! - `Mutex` is loom's (parking_lot's cannot be modelled); `Thread` and `current` are loom's, so
//!   that waiters park and unpark loom threads.

#[cfg(not(embus_loom))]
pub(crate) use parking_lot::{Mutex, MutexGuard};
#[cfg(not(embus_loom))]
pub(crate) use std::sync::OnceLock;
#[cfg(not(embus_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64};
#[cfg(not(embus_loom))]
pub(crate) use std::thread::{Thread, current};

pub(crate) use std::sync::atomic::Ordering;

/// A value alone on its cache lines (128 bytes: adjacent-line prefetchers pull lines in pairs),
/// so that a line one thread writes on every message is not one another thread reads.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(embus_loom)]
pub(crate) use self::modelled::{AtomicBool, AtomicU64, Mutex, MutexGuard, OnceLock};
#[cfg(embus_loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(embus_loom)]
pub(crate) use loom::sync::atomic::AtomicU8;
#[cfg(embus_loom)]
pub(crate) use loom::thread::{Thread, current};

/// std's `UnsafeCell` with loom's closure API, so that [`Slots`](super::slot::Slots)' accesses
/// are checked under loom and cost nothing otherwise.
#[cfg(not(embus_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(embus_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    pub(crate) fn into_inner(self) -> T {
        self.0.into_inner()
    }

    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(embus_loom)]
mod modelled {
    use std::sync::PoisonError;
    use std::sync::atomic::Ordering;

    use std::cell::Cell;

    use loom::sync::atomic::fence;

    loom::thread_local! {
        /// This thread made a `SeqCst` store that no `SeqCst` fence follows yet.
        static STORED: Cell<bool> = Cell::new(false);
    }

    /// Before a load: a `SeqCst` fence if it is `SeqCst` and a `SeqCst` store came before it
    /// (see the module docs).
    fn before_load(order: Ordering) {
        if order == Ordering::SeqCst && STORED.with(|stored| stored.replace(false)) {
            fence(Ordering::SeqCst);
        }
    }

    /// After a store: remembers a `SeqCst` one for the next `SeqCst` load.
    fn after_store(order: Ordering) {
        if order == Ordering::SeqCst {
            STORED.with(|stored| stored.set(true));
        }
    }

    macro_rules! atomic {
        ($name:ident, $int:ty) => {
            /// Loom's atomic, with `SeqCst` accesses fenced (see the module docs).
            #[derive(Debug, Default)]
            pub(crate) struct $name(loom::sync::atomic::$name);

            impl $name {
                #[allow(dead_code, reason = "AtomicBool's is not used")]
                pub(crate) fn new(value: $int) -> Self {
                    Self(loom::sync::atomic::$name::new(value))
                }

                pub(crate) fn load(&self, order: Ordering) -> $int {
                    before_load(order);
                    self.0.load(order)
                }

                pub(crate) fn store(&self, value: $int, order: Ordering) {
                    self.0.store(value, order);
                    after_store(order);
                }
            }
        };
    }

    atomic!(AtomicU64, u64);
    atomic!(AtomicBool, bool);

    /// Loom's mutex with parking_lot's signature (a poisoned lock is only a panicking model).
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    /// std's `OnceLock` whose publication loom sees (see the module docs).
    #[derive(Debug, Default)]
    pub(crate) struct OnceLock<T> {
        set: loom::sync::atomic::AtomicBool,
        value: std::sync::OnceLock<T>,
    }

    impl<T> OnceLock<T> {
        pub(crate) fn new() -> Self {
            Self {
                set: loom::sync::atomic::AtomicBool::new(false),
                value: std::sync::OnceLock::new(),
            }
        }

        pub(crate) fn get(&self) -> Option<&T> {
            if self.set.load(Ordering::Acquire) {
                self.value.get()
            } else {
                None
            }
        }

        pub(crate) fn set(&self, value: T) -> Result<(), T> {
            self.value.set(value)?;
            self.set.store(true, Ordering::Release);
            Ok(())
        }
    }
}

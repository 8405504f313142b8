//! What the writer's [`Line`](super::line::Line) parks with under loom (`--cfg embus_loom`):
//! loom's mutex and condition variable with parking_lot's signatures, for the models of its
//! handshake ([`loom_models`](super::loom_models)).
//!
//! Loom has no time, so a wait with a deadline is a plain wait here (the models use none),
//! and the backoff before parking is done at once: the models check the parking itself.

use std::ops::{Deref, DerefMut};
use std::sync::PoisonError;
use std::time::Instant;

/// Loom's mutex with parking_lot's signature (a poisoned lock is only a panicking model).
pub(super) struct Mutex<T>(loom::sync::Mutex<T>);

impl<T> Mutex<T> {
    pub(super) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, T> {
        MutexGuard {
            guard: Some(self.0.lock().unwrap_or_else(PoisonError::into_inner)),
            mutex: &self.0,
        }
    }
}

/// A held lock, with parking_lot's `unlocked`.
pub(super) struct MutexGuard<'a, T> {
    /// `None` only inside [`unlocked`](Self::unlocked) and a wait.
    guard: Option<loom::sync::MutexGuard<'a, T>>,
    mutex: &'a loom::sync::Mutex<T>,
}

impl<T> MutexGuard<'_, T> {
    /// Runs `f` with the lock let go, then takes it again.
    pub(super) fn unlocked<U>(this: &mut Self, f: impl FnOnce() -> U) -> U {
        this.guard = None;
        let result = f();
        this.guard = Some(this.mutex.lock().unwrap_or_else(PoisonError::into_inner));
        result
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.guard.as_deref().expect("held")
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_deref_mut().expect("held")
    }
}

/// Loom's condition variable with parking_lot's signatures.
pub(super) struct Condvar(loom::sync::Condvar);

/// What a wait with a deadline says: never timed out, under loom.
pub(super) struct WaitTimeoutResult;

impl WaitTimeoutResult {
    pub(super) fn timed_out(&self) -> bool {
        false
    }
}

impl Condvar {
    pub(super) fn new() -> Self {
        Self(loom::sync::Condvar::new())
    }

    pub(super) fn notify_one(&self) {
        self.0.notify_one();
    }

    pub(super) fn wait<T>(&self, held: &mut MutexGuard<'_, T>) {
        let guard = held.guard.take().expect("held");
        held.guard = Some(self.0.wait(guard).unwrap_or_else(PoisonError::into_inner));
    }

    pub(super) fn wait_until<T>(
        &self,
        held: &mut MutexGuard<'_, T>,
        _until: Instant,
    ) -> WaitTimeoutResult {
        self.wait(held);
        WaitTimeoutResult
    }
}

/// A backoff that is over at once.
pub(super) struct Backoff;

impl Backoff {
    pub(super) fn new() -> Self {
        Self
    }

    pub(super) fn is_completed(&self) -> bool {
        true
    }

    pub(super) fn snooze(&self) {}
}

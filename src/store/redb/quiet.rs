//! Catching redb's panics on damaged pages without printing them.
//!
//! redb may panic (`unreachable!`, failed assertions) on a page it reads that was damaged
//! outside it. The store catches those panics where it calls redb and reports
//! [`Error::Corrupt`](crate::Error::Corrupt) instead; but the standard library prints every
//! panic through the process-wide panic hook before unwinding, so a caught panic would still
//! spray a message and a backtrace on stderr.
//!
//! Rust has no scoped panic hook, so the first [`catch`] installs one wrapper around whatever
//! hook is installed then (taken with `take_hook`, kept and called for every other panic).
//! The wrapper stays silent only for a panic raised on a thread while that thread runs inside
//! [`catch`] (a thread-local depth counter), and only for code of ours: user code that the
//! guarded sections call (wakers) runs under [`loud`], whose panics are printed as usual.
//! A hook the application sets later replaces the wrapper (its panics then print again,
//! nothing else changes). Under `panic = "abort"` nothing can be caught: see RELIABILITY.md.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    /// How deep this thread is inside [`catch`] (0: not inside, or inside [`loud`]).
    static QUIET: Cell<u32> = const { Cell::new(0) };
}

static HOOK: Once = Once::new();

/// Runs `f`, catching a panic silently; returns the panic's message if it panicked.
pub(super) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    HOOK.call_once(install);
    let depth = QUIET.with(|q| q.replace(q.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(depth));
    result.map_err(|payload| message(payload.as_ref()))
}

/// Wraps the panic hook installed now in one that is silent inside [`catch`].
fn install() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if QUIET.with(Cell::get) == 0 {
            previous(info);
        }
    }));
}

/// Runs `f` (user code, inside a [`catch`]) with its panics printed as usual.
pub(super) fn loud<R>(f: impl FnOnce() -> R) -> R {
    let depth = QUIET.with(|q| q.replace(0));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(depth));
    result.unwrap_or_else(|payload| std::panic::resume_unwind(payload))
}

fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static PRINTED: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn only_panics_inside_catch_are_silenced() {
        // The hook the wrapper finds and keeps: counts this test's panics, passes on any
        // other. Another unit test may have reached `catch` first (the wrapper then wraps the
        // hook of that time, which this one replaces), so this test wraps its own hook.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if message(info.payload()).starts_with("quiet-test") {
                PRINTED.fetch_add(1, Ordering::SeqCst);
            } else {
                previous(info);
            }
        }));
        install();
        assert_eq!(catch(|| 7), Ok(7));
        let caught = catch(|| -> u32 { panic!("quiet-test: damaged page") });
        assert_eq!(caught, Err("quiet-test: damaged page".to_owned()));
        assert_eq!(PRINTED.load(Ordering::SeqCst), 0, "a caught panic printed");
        // User code inside: printed (and still caught by the outer catch).
        let user = catch(|| loud(|| -> u32 { panic!("quiet-test: a waker") }));
        assert!(user.is_err());
        assert_eq!(PRINTED.load(Ordering::SeqCst), 1);
        // Another thread's panic outside any catch: printed.
        let _ = std::thread::spawn(|| panic!("quiet-test: elsewhere")).join();
        assert_eq!(PRINTED.load(Ordering::SeqCst), 2);
    }
}

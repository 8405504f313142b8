//! `Timer`: wakes async tasks at real-time ack deadlines. Its one thread starts the first time
//! an async receive waits for a deadline on the system clock, and stops when the broker closes.
//!
//! Blocking waits need no timer (a parked thread wakes itself at its deadline), and a
//! `ManualClock` needs none (`advance` wakes every waiter), so most brokers never start it.

use std::fmt;
use std::sync::Arc;
use std::task::Waker;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

#[derive(Default)]
pub(crate) struct Timer {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// When to wake which waiter (one entry per waiter id).
    entries: Vec<(Instant, u64, Waker)>,
    thread: Option<JoinHandle<()>>,
    closed: bool,
}

impl Timer {
    /// Wakes `waker` at `at` (replacing waiter `id`'s earlier entry).
    pub(crate) fn wake_at(self: &Arc<Self>, at: Instant, id: u64, waker: &Waker) {
        let mut state = self.state.lock();
        if state.closed {
            return;
        }
        // Dropped after unlocking: dropping a waker may drop a task whose future unregisters.
        let _replaced = take_entry(&mut state.entries, id);
        state.entries.push((at, id, waker.clone()));
        if state.thread.is_none() {
            let timer = Arc::clone(self);
            let spawned = thread::Builder::new()
                .name("embus-timer".into())
                .spawn(move || timer.run());
            // Without a thread the task still wakes on any other activity; nothing is lost.
            state.thread = spawned.ok();
        }
        drop(state);
        self.changed.notify_one();
    }

    /// Forgets waiter `id`'s entry.
    pub(crate) fn cancel(&self, id: u64) {
        let removed = take_entry(&mut self.state.lock().entries, id);
        drop(removed); // after unlocking, as in `wake_at`
    }

    /// Stops the thread (and waits for it, unless called from it).
    pub(crate) fn close(&self) {
        let (thread, _entries) = {
            let mut state = self.state.lock();
            state.closed = true;
            (state.thread.take(), std::mem::take(&mut state.entries))
        };
        self.changed.notify_one();
        if let Some(thread) = thread
            && thread.thread().id() != thread::current().id()
        {
            let _ = thread.join();
        }
    }

    fn run(&self) {
        let mut state = self.state.lock();
        while !state.closed {
            let now = Instant::now();
            let (due, waiting): (Vec<_>, Vec<_>) =
                state.entries.drain(..).partition(|(at, _, _)| *at <= now);
            state.entries = waiting;
            if !due.is_empty() {
                drop(state);
                for (_, _, waker) in due {
                    waker.wake();
                }
                state = self.state.lock();
                continue;
            }
            match state.entries.iter().map(|(at, _, _)| *at).min() {
                Some(at) => {
                    let _timed_out = self.changed.wait_until(&mut state, at);
                }
                None => self.changed.wait(&mut state),
            }
        }
    }
}

/// Removes waiter `id`'s entry, returning it so the caller drops it outside the lock.
fn take_entry(entries: &mut Vec<(Instant, u64, Waker)>, id: u64) -> Option<(Instant, u64, Waker)> {
    let index = entries.iter().position(|(_, i, _)| *i == id)?;
    Some(entries.swap_remove(index))
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Timer { .. }")
    }
}

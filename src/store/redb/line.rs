//! The line of requests to the writer, and its baton: the writer's state, which one thread at
//! a time holds to take requests and commit them.
//!
//! A sender about to wait for its commit ([`Durability::Immediate`]) takes the baton itself
//! when nobody holds it and commits on its own thread ([`DurableStore::wait`]): its send then
//! costs no wake of the writer thread and no wake back, two thread wake-ups that cost about a
//! third of a one-phase commit on a 2-core VM. The writer thread takes the baton for everything
//! else: async and `Interval` sends, consumer progress, loans, and whatever queued while a
//! sender committed (a sender commits once, then hands over). So requests still commit one
//! batch at a time, in the order of their numbers, and concurrent senders still share commits.
//!
//! [`Durability::Immediate`]: crate::Durability::Immediate
//! [`DurableStore::wait`]: super::DurableStore

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::ThreadId;
use std::time::Instant;

#[cfg(not(embus_loom))]
use crossbeam_utils::Backoff;
#[cfg(not(embus_loom))]
use parking_lot::{Condvar, Mutex, MutexGuard};

#[cfg(embus_loom)]
use super::line_loom::{Backoff, Condvar, Mutex, MutexGuard};
use super::request::Request;

/// The baton's state: the writer's ([`Writer`](super::writer::Writer)), or a model's
/// ([`loom_models`](super::loom_models)).
pub(super) trait Alone {
    /// Whether recent commits carried one request each: a single sender at a time.
    fn alone(&self) -> bool;
}

/// The requests waiting for the writer, numbered in order, and who may take them.
pub(super) struct Line<W> {
    state: Mutex<State<W>>,
    /// The last request number handed out: stored under the state's lock once its request is
    /// queued, and read without it ([`sent`](Self::sent)).
    sent: AtomicU64,
    /// Rung for the writer thread when there is something only it will do.
    bell: Condvar,
}

struct State<W> {
    requests: VecDeque<(u64, Request)>,
    /// `false` once the store closes: nothing more is queued, and the writer thread ends once
    /// the line is empty.
    open: bool,
    /// The writer's state while nobody commits.
    baton: Option<Box<W>>,
    /// The thread holding the baton, and whether it is the writer thread.
    holder: Option<(ThreadId, bool)>,
    /// Whether the writer thread waits for the bell (idle, lingering for more, or waiting for
    /// a loan's return).
    listening: bool,
}

impl<W: Alone> State<W> {
    /// Whether a sender about to wait takes the baton: if nobody holds it, the line starts
    /// with something a sender commits (not a loan, which the writer thread serves), and
    /// recent commits carried one request each. Concurrent senders leave it to the writer
    /// thread, which lingers to group them (`Writer::round`): a sender committing whatever
    /// queued before it would split each group in two.
    ///
    /// A sender that pushed, seeing this, and rang no bell asks it again in `lead`: it says
    /// the same unless a round ran in between, which took the sender's request or rang the
    /// bell for it as it gave the baton back.
    fn leads(&self) -> bool {
        let first = self.requests.front();
        let lend = matches!(first, Some((_, Request::Lend(_))));
        first.is_some() && !lend && self.baton.as_ref().is_some_and(|w| w.alone())
    }
}

/// Whether whoever pushes a request will take the baton for it if it can.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Then {
    /// The sender waits for the commit next and commits itself if nobody holds the baton.
    Lead,
    /// The writer thread commits it.
    Ring,
}

impl<W: Alone> Line<W> {
    /// A line whose baton nobody may take until it is [`install`](Self::install)ed.
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                requests: VecDeque::new(),
                open: true,
                baton: None,
                holder: None,
                listening: false,
            }),
            bell: Condvar::new(),
            sent: AtomicU64::new(0),
        }
    }

    /// The last request number handed out (Acquire): a queue ack needs a number at least that
    /// of every request its message depends on, and the writer's trim floors one at least that
    /// of every request behind them.
    pub(super) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    /// Hands the line the writer's state, before anything is queued.
    pub(super) fn install(&self, writer: W) {
        self.state.lock().baton = Some(Box::new(writer));
    }

    /// Queues `request` with the next number, or `None` once closed.
    pub(super) fn push(&self, request: Request, then: Then) -> Option<u64> {
        let mut state = self.state.lock();
        if !state.open {
            return None;
        }
        let seq = self.sent.load(Ordering::Relaxed) + 1; // only written under this lock
        state.requests.push_back((seq, request));
        self.sent.store(seq, Ordering::Release);
        // A sender holding the baton hands over what it leaves when done; one about to take
        // it ([`lead`](Self::lead)) commits this too.
        let ring = match state.holder {
            None => then == Then::Ring || !state.leads(),
            Some((_, by_writer)) => by_writer,
        };
        let ring = ring && state.listening;
        drop(state);
        if ring {
            self.bell.notify_one();
        }
        Some(seq)
    }

    /// Closes the line: the writer thread commits what is queued, then ends.
    pub(super) fn close(&self) {
        let mut state = self.state.lock();
        state.open = false;
        if state.listening {
            self.bell.notify_one();
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.state.lock().open
    }

    /// Whether the writer thread is parked, with nothing queued and nobody holding the baton.
    #[cfg(test)]
    pub(super) fn writer_parked(&self) -> bool {
        let state = self.state.lock();
        state.listening && state.baton.is_some() && state.requests.is_empty()
    }

    /// Whether this thread holds the baton (a waker it runs must not wait for a commit).
    pub(super) fn held_here(&self) -> bool {
        let current = std::thread::current().id();
        self.state.lock().holder.is_some_and(|(t, _)| t == current)
    }

    /// The baton for a sender, if it [`leads`](State::leads).
    pub(super) fn lead(&self) -> Option<Box<W>> {
        let mut state = self.state.lock();
        if !state.leads() {
            return None;
        }
        state.holder = Some((std::thread::current().id(), false));
        state.baton.take()
    }

    /// The baton for the writer thread, once there is something to commit; `None` once the
    /// line is closed and empty, with the writer's state dropped (the file released).
    pub(super) fn wait_for_work(&self) -> Option<Box<W>> {
        let mut state = self.state.lock();
        let backoff = Backoff::new();
        loop {
            if state.baton.is_some() {
                if !state.requests.is_empty() {
                    state.holder = Some((std::thread::current().id(), true));
                    return state.baton.take();
                }
                if !state.open {
                    let writer = state.baton.take();
                    drop(state);
                    drop(writer);
                    return None;
                }
            }
            self.listen(&mut state, &backoff, None);
        }
    }

    /// For the writer thread: waits a little (`backoff`), then parks until rung or `until`
    /// passes; returns whether it has.
    fn listen(
        &self,
        state: &mut MutexGuard<'_, State<W>>,
        backoff: &Backoff,
        until: Option<Instant>,
    ) -> bool {
        if !backoff.is_completed() && until.is_none_or(|until| Instant::now() < until) {
            MutexGuard::unlocked(state, || backoff.snooze());
            return false;
        }
        state.listening = true;
        let timed_out = match until {
            Some(until) => self.bell.wait_until(state, until).timed_out(),
            None => {
                self.bell.wait(state);
                false
            }
        };
        state.listening = false;
        timed_out
    }

    /// Ends the line after the writer thread died: what is queued is dropped (a borrower
    /// waiting for a loan learns the store is closed; the store is poisoned, so no sender
    /// waits for the rest), and so is the writer's state, which releases the file.
    pub(super) fn abandon(&self) {
        let mut state = self.state.lock();
        state.open = false;
        let requests = std::mem::take(&mut state.requests);
        let writer = state.baton.take();
        drop(state);
        drop(requests);
        drop(writer);
    }

    /// Puts the baton back; the writer thread takes what is left.
    pub(super) fn give_back(&self, writer: Box<W>) {
        let mut state = self.state.lock();
        state.baton = Some(writer);
        state.holder = None;
        let ring = (!state.requests.is_empty() || !state.open) && state.listening;
        drop(state);
        if ring {
            self.bell.notify_one();
        }
    }

    /// For the baton's holder: up to `max` requests from the front, stopping before a loan if
    /// `lends` is false.
    pub(super) fn take(&self, max: usize, lends: bool) -> Vec<(u64, Request)> {
        let mut state = self.state.lock();
        let mut n = state.requests.len().min(max);
        if !lends {
            let lend = state.requests.iter().take(n);
            n = lend
                .take_while(|(_, r)| !matches!(r, Request::Lend(_)))
                .count();
        }
        state.requests.drain(..n).collect()
    }

    /// For the writer thread holding the baton: the next request, waiting until `until`
    /// (`None`: for as long as the line is open); `None` if none came, or the line is closed
    /// and empty.
    pub(super) fn next(&self, until: Option<Instant>) -> Option<(u64, Request)> {
        let mut state = self.state.lock();
        let backoff = Backoff::new();
        loop {
            if let Some(request) = state.requests.pop_front() {
                return Some(request);
            }
            if !state.open {
                return None;
            }
            if self.listen(&mut state, &backoff, until) {
                return state.requests.pop_front();
            }
        }
    }
}

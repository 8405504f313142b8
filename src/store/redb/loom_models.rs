//! Loom models of the writer's [`Line`] (`--cfg embus_loom`, with the shim of
//! [`line_loom`](super::line_loom)). A writer thread and two senders on one line: every
//! request commits once, in number order, and no thread stays parked while there is work
//! (loom fails a model in which every thread is blocked). A committer stands for the writer:
//! it takes what is queued, "commits" it, and wakes the senders waiting for their numbers.

use std::sync::Arc;

use loom::sync::{Condvar, Mutex};

use super::line::{Alone, Line, Then};
use super::request::Request;

/// The baton: whether the committer says recent commits carried one request each.
struct Baton {
    alone: bool,
}

impl Alone for Baton {
    fn alone(&self) -> bool {
        self.alone
    }
}

/// The line, and what has been committed (in commit order).
struct Bus {
    line: Line<Baton>,
    /// Request numbers in the order they were done, and whether each was a loan answered
    /// (not a commit).
    committed: Mutex<Vec<(u64, bool)>>,
    changed: Condvar,
}

impl Bus {
    fn new(alone: bool) -> Arc<Self> {
        let line = Line::new();
        line.install(Baton { alone });
        Arc::new(Self {
            line,
            committed: Mutex::new(Vec::new()),
            changed: Condvar::new(),
        })
    }

    /// One round with the baton in hand, as `Writer::round` takes its batch: it commits what
    /// it took but the loans, then serves each loan as `Writer::lend_once` does: it lends
    /// (the borrower is answered), then takes what comes next ([`Line::next`]) until the
    /// borrower's return, which commits with what came meanwhile.
    fn round(&self, baton: Box<Baton>, by_writer: bool) {
        let (lends, batch): (Vec<_>, Vec<_>) = self
            .line
            .take(usize::MAX, by_writer)
            .into_iter()
            .partition(|(_, r)| matches!(r, Request::Lend(_)));
        self.commit(batch.iter().map(|(seq, _)| *seq), false);
        for (seq, _) in lends {
            self.commit([seq], true);
            let mut held = Vec::new();
            while let Some((seq, request)) = self.line.next(None) {
                held.push(seq);
                if matches!(request, Request::Declare(..)) {
                    break; // the return
                }
            }
            self.commit(held, false);
        }
        self.line.give_back(baton);
    }

    /// Marks `seqs` done: committed, or (`lent`) a loan answered.
    fn commit(&self, seqs: impl IntoIterator<Item = u64>, lent: bool) {
        let mut done = self.committed.lock().unwrap();
        done.extend(seqs.into_iter().map(|seq| (seq, lent)));
        drop(done);
        self.changed.notify_all();
    }

    /// A send: queued, then (`Then::Lead`) committed here if this sender leads, then
    /// waited for.
    fn send(&self, request: Request, then: Then) {
        let seq = self.line.push(request, then).expect("open");
        if then == Then::Lead
            && let Some(baton) = self.line.lead()
        {
            self.round(baton, false);
        }
        self.wait(seq);
    }

    /// A transaction's loan: asked for, received, and given back (the return stands in as a
    /// declaration).
    fn borrow(&self) {
        let (reply, _) = crossbeam_channel::bounded(1); // the committer only counts it
        let lend = Request::Lend(reply);
        self.wait(self.line.push(lend, Then::Ring).expect("open"));
        let back = Request::Declare("return".to_owned(), Vec::new());
        self.wait(self.line.push(back, Then::Ring).expect("open"));
    }

    fn wait(&self, seq: u64) {
        let mut committed = self.committed.lock().unwrap();
        while !committed.iter().any(|(done, _)| *done == seq) {
            committed = self.changed.wait(committed).unwrap();
        }
    }
}

/// Runs the writer thread and senders `a` and `b` to the end, in every interleaving up to
/// `LOOM_MAX_PREEMPTIONS` preemptions (3 unless set); checks that every request committed
/// once, in number order.
fn model(alone: bool, a: fn(&Bus), b: fn(&Bus)) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = builder.preemption_bound.or(Some(3));
    builder.check(move || {
        let bus = Bus::new(alone);
        let writer = {
            let bus = Arc::clone(&bus);
            loom::thread::spawn(move || {
                while let Some(baton) = bus.line.wait_for_work() {
                    bus.round(baton, true);
                }
            })
        };
        let other = {
            let bus = Arc::clone(&bus);
            loom::thread::spawn(move || b(&bus))
        };
        a(&bus);
        other.join().unwrap();
        bus.line.close();
        writer.join().unwrap();
        let sent = bus.line.sent();
        let done = bus.committed.lock().unwrap();
        let commits: Vec<u64> = done.iter().filter(|(_, lent)| !lent).map(|d| d.0).collect();
        assert!(commits.is_sorted(), "committed out of order: {done:?}");
        let mut every: Vec<u64> = done.iter().map(|d| d.0).collect();
        every.sort_unstable();
        assert_eq!(every, (1..=sent).collect::<Vec<_>>(), "each once: {done:?}");
    });
}

fn lead(bus: &Bus) {
    bus.send(Request::Sync, Then::Lead);
}

#[test]
fn two_leading_senders_alone() {
    model(true, lead, lead);
}

#[test]
fn a_leading_sender_and_an_async_one() {
    model(true, lead, |bus| bus.send(Request::Pending, Then::Ring));
}

#[test]
fn leading_senders_while_commits_carry_several() {
    model(false, lead, lead);
}

/// A loan is the writer thread's: a sender behind one leaves it, and is committed with its
/// return or after; the writer thread waiting for the return is rung for it.
#[test]
fn a_leading_sender_and_a_loan() {
    model(true, lead, Bus::borrow);
}

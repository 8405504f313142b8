//! Loom models of the writer's [`Line`] (`--cfg embus_loom`, with the shim of
//! [`line_loom`](super::line_loom)). A writer thread and two senders on one line: every request commits once, in number
//! order, and no thread stays parked while there is work (loom fails a model in which
//! every thread is blocked). A committer stands for the writer: it takes what is queued,
//! "commits" it, and wakes the senders waiting for their numbers.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

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
    sent: AtomicU64,
    committed: Mutex<Vec<u64>>,
    changed: Condvar,
}

impl Bus {
    fn new(alone: bool) -> Arc<Self> {
        let line = Line::new();
        line.install(Baton { alone });
        Arc::new(Self {
            line,
            sent: AtomicU64::new(0),
            committed: Mutex::new(Vec::new()),
            changed: Condvar::new(),
        })
    }

    /// One round with the baton in hand, as `Writer::round` takes its batch.
    fn round(&self, baton: Box<Baton>, by_writer: bool) {
        let batch = self.line.take(usize::MAX, by_writer);
        let mut committed = self.committed.lock().unwrap();
        committed.extend(batch.iter().map(|(seq, _)| *seq));
        drop(committed);
        self.changed.notify_all();
        self.line.give_back(baton);
    }

    /// A send: queued, then (`Then::Lead`) committed here if this sender leads, then
    /// waited for.
    fn send(&self, request: Request, then: Then) {
        let seq = self.line.push(request, &self.sent, then).expect("open");
        if then == Then::Lead
            && let Some(baton) = self.line.lead()
        {
            self.round(baton, false);
        }
        let mut committed = self.committed.lock().unwrap();
        while !committed.contains(&seq) {
            committed = self.changed.wait(committed).unwrap();
        }
    }
}

/// Runs the writer thread and senders `a` and `b` to the end, in every interleaving up to
/// `LOOM_MAX_PREEMPTIONS` preemptions (3 unless set); checks the commits.
fn model(alone: bool, a: (fn() -> Request, Then), b: (fn() -> Request, Then)) {
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
            loom::thread::spawn(move || bus.send(b.0(), b.1))
        };
        bus.send(a.0(), a.1);
        other.join().unwrap();
        bus.line.close();
        writer.join().unwrap();
        assert_eq!(*bus.committed.lock().unwrap(), [1, 2]);
    });
}

#[test]
fn two_leading_senders_alone() {
    model(
        true,
        (|| Request::Sync, Then::Lead),
        (|| Request::Sync, Then::Lead),
    );
}

#[test]
fn a_leading_sender_and_an_async_one() {
    model(
        true,
        (|| Request::Sync, Then::Lead),
        (|| Request::Pending, Then::Ring),
    );
}

#[test]
fn leading_senders_while_commits_carry_several() {
    model(
        false,
        (|| Request::Sync, Then::Lead),
        (|| Request::Sync, Then::Lead),
    );
}

/// A loan is the writer thread's: a sender behind one leaves it, and is committed after.
#[test]
fn a_leading_sender_behind_a_loan() {
    fn lend() -> Request {
        let (reply, _) = crossbeam_channel::bounded(1); // the committer only counts it
        Request::Lend(reply)
    }
    model(true, (|| Request::Sync, Then::Lead), (lend, Then::Ring));
}

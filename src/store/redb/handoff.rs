//! What senders hand the writer: a send's staged run ([`Collect`]), a transaction
//! ([`TxCollect`]) and consumer progress ([`DurableStore::request`]); and the loan of the
//! writer's redb write transaction to a transaction's `redb()`, with the check that keeps the
//! borrowing thread from waiting for a commit that waits for it.

use std::sync::Arc;

use super::DurableStore;
use super::request::{Request, Staged};
use crate::error::Error;
use crate::options::Durability;
use crate::record::Nanos;
use crate::store::{IdRow, Lent, Progress, Sink, Stager, Store, Ticket, TxJob, TxLog, TxRecord};

/// Collects what a job stages and hands it to the writer as one request.
pub(super) struct Collect<'a> {
    pub(super) store: &'a DurableStore,
    /// Whether the sender waits for the commit next ([`DurableStore::send_to_wait`]).
    pub(super) waits: bool,
    pub(super) bodies: std::vec::IntoIter<Vec<u8>>,
    pub(super) sink: Option<Arc<dyn Sink>>,
    pub(super) run: Vec<Staged>,
    /// The number of the last request sent.
    pub(super) last: Option<u64>,
    /// The writer had stopped.
    pub(super) refused: bool,
}

impl Stager for Collect<'_> {
    fn record(&mut self, sink: &Arc<dyn Sink>, key: u64, ts: Nanos, size: u32, id: Option<IdRow>) {
        if self.sink.is_none() {
            self.sink = Some(Arc::clone(sink));
        }
        if self.run.is_empty() {
            self.run.reserve(self.bodies.len()); // at most one record per body
        }
        // `Append::stage` stages at most the records `encode` returned: asserted, since an
        // empty value here would store an empty record.
        let Some(value) = self.bodies.next() else {
            unreachable!("an encoded body for every staged record");
        };
        self.run.push(Staged {
            key,
            ts,
            size,
            value,
            id,
        });
    }

    fn end(&mut self) {
        let Some(sink) = self.sink.take() else {
            return;
        };
        let records = std::mem::take(&mut self.run);
        let request = Request::Append { sink, records };
        let sent = if self.waits {
            self.store.send_to_wait(request)
        } else {
            self.store.send(request)
        };
        match sent {
            Some(seq) => self.last = Some(seq),
            None => self.refused = true,
        }
    }
}

/// Collects a transaction and hands it to the writer as one request.
pub(super) struct TxCollect<'a> {
    store: &'a DurableStore,
    requests: Vec<Request>,
    /// The lent write transaction the requests go back in, if any.
    lent: &'a mut Option<Lent>,
    /// `None` until sealed; then the request's number, or `None` if the writer had stopped.
    sealed: Option<Option<u64>>,
}

impl TxLog for TxCollect<'_> {
    fn record(&mut self, record: TxRecord<'_>) {
        let TxRecord {
            sink,
            key,
            ts,
            size,
            body,
            id,
        } = record;
        let staged = Staged {
            key,
            ts,
            size,
            value: body,
            id,
        };
        match self.requests.last_mut() {
            Some(Request::Append {
                sink: last,
                records,
            }) if Arc::ptr_eq(last, sink) => {
                records.push(staged);
            }
            _ => self.requests.push(Request::Append {
                sink: Arc::clone(sink),
                records: vec![staged],
            }),
        }
    }

    fn progress(&mut self, change: Progress<'_>) {
        let request = self.store.request(change);
        self.requests.push(request);
    }

    fn seal(&mut self) -> Option<Ticket> {
        let requests = std::mem::take(&mut self.requests);
        let request = match self.lent.take() {
            // Even with nothing of ours: the application's rows commit.
            Some(Lent(txn)) => {
                self.store.inner.done.lock().lent_to = None;
                Request::Return {
                    txn,
                    requests: Some(requests),
                }
            }
            None if requests.is_empty() => return None,
            None => Request::Many(requests),
        };
        let seq = self.store.send(request);
        self.sealed = Some(seq);
        seq.map(Ticket)
    }
}

impl DurableStore {
    /// The writer's request for a change of consumer progress (a delivery count is coalesced
    /// by [`Store::progress`] instead).
    pub(super) fn request(&self, change: Progress<'_>) -> Request {
        match change {
            Progress::QueueAck { queue, id } => {
                // The ack deletes the row: a count still waiting is moot.
                self.inner.pending.lock().forget(queue, id);
                Request::Ack {
                    queue: Arc::clone(queue),
                    id,
                }
            }
            // Coalesced by `progress`, never part of a transaction.
            Progress::QueueDelivery { .. } => Request::Pending,
            Progress::DeadLetter {
                queue,
                id,
                to,
                to_id,
                headers,
                body,
                ts,
                size,
            } => {
                self.inner.pending.lock().forget(queue, id);
                Request::DeadLetter {
                    queue: Arc::clone(queue),
                    id,
                    to: Arc::clone(to),
                    to_id,
                    // Encoding a payload that was encoded before cannot fail in practice; if it
                    // did, the writer copies the source row as before.
                    record: body().ok().map(|value| Staged {
                        key: to_id,
                        ts,
                        size,
                        value,
                        id: None,
                    }),
                    headers: headers.clone(),
                }
            }
            Progress::GroupDeadLetter {
                to,
                to_id,
                body,
                ts,
                size,
                position,
            } => Request::GroupDeadLetter {
                to: Arc::clone(to),
                record: Staged {
                    key: to_id,
                    ts,
                    size,
                    value: body.to_vec(),
                    id: None,
                },
                position: position.map(|(t, g, p, o)| (t.to_owned(), g.to_owned(), p, o)),
            },
            Progress::GroupPosition {
                topic,
                group,
                partition,
                offset,
            } => Request::Position {
                topic: topic.to_owned(),
                group: group.to_owned(),
                partition,
                offset,
            },
            Progress::GroupAcked {
                topic,
                group,
                partition,
                offset,
            } => Request::Acked {
                topic: topic.to_owned(),
                group: group.to_owned(),
                partition,
                offset,
            },
            Progress::GroupAckedBelow {
                topic,
                group,
                partition,
                below,
            } => Request::AckedBelow {
                topic: topic.to_owned(),
                group: group.to_owned(),
                partition,
                below,
            },
        }
    }

    /// [`check_healthy`](Self::check_healthy), and for a call that will wait for a commit,
    /// whether this thread holds the lent write transaction that commit waits for.
    pub(super) fn check_can_wait(&self, waits: bool) -> Result<(), Error> {
        let done = self.inner.done.lock();
        if let Some((_, cause)) = &done.failed {
            return Err(self.poisoned(cause));
        }
        if waits
            && done
                .lent_to
                .is_some_and(|t| t == std::thread::current().id())
        {
            return Err(Error::TransactionOpen);
        }
        Ok(())
    }

    /// Whether this thread holds the lent write transaction.
    pub(super) fn is_borrower(&self) -> bool {
        let done = self.inner.done.lock();
        done.lent_to
            .is_some_and(|t| t == std::thread::current().id())
    }

    /// [`Store::transact`].
    pub(super) fn run_transaction(
        &self,
        job: &mut dyn TxJob,
        lent: &mut Option<Lent>,
    ) -> Result<(), Error> {
        // Another transaction of this thread holds the writer (this one's own loan it gives
        // back when it seals).
        let waits = matches!(self.inner.durability, Durability::Immediate);
        self.check_can_wait(waits && lent.is_none())?;
        let mut collect = TxCollect {
            store: self,
            requests: Vec::new(),
            lent,
            sealed: None,
        };
        job.run(Some(&mut collect))?;
        let last = match collect.sealed {
            // Nothing to store; but a duplicate returns once its original is stored.
            None => return job.originals().map_or(Ok(()), |t| Store::settle(self, t)),
            Some(None) => {
                // The writer stopped (the broker closed meanwhile): nothing of ours is stored.
                job.unstage();
                return Err(Error::Closed);
            }
            Some(Some(seq)) => seq,
        };
        let result = match self.inner.durability {
            Durability::Immediate => self.wait(last),
            Durability::Interval(_) => Ok(()),
        };
        if result.is_err() && self.inner.done.lock().committed < last {
            job.unstage();
        }
        result
    }

    /// [`Store::lend`].
    pub(super) fn lend_writer(&self) -> Result<Lent, Error> {
        // A second loan to this thread would wait for the first, which waits for this thread;
        // the writer cannot lend to itself (a waker it runs).
        self.check_can_wait(true)?;
        if self.on_writer_thread() {
            return Err(Error::TransactionOpen);
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.send(Request::Lend(reply)).ok_or(Error::Closed)?;
        match answer.recv() {
            Ok(Ok(txn)) => {
                self.inner.done.lock().lent_to = Some(std::thread::current().id());
                Ok(Lent(Box::new(txn)))
            }
            Ok(Err(cause)) => Err(self.poisoned(&cause)),
            Err(_) => Err(Error::Closed), // the writer stopped
        }
    }

    /// [`Store::give_back`].
    pub(super) fn give_back_writer(&self, Lent(txn): Lent) {
        self.inner.done.lock().lent_to = None;
        // After close the writer is gone: the write transaction aborts as it drops.
        let _ = self.send(Request::Return {
            txn,
            requests: None,
        });
    }
}

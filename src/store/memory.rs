//! `MemoryStore`: persistence that keeps nothing; the in-memory logs are the truth.

use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Poll, Waker};

use super::{Append, Commit, Lent, Loaded, LogId, Progress, Restored, Sink, Store, Ticket, TxJob};
use crate::error::Error;

/// The store of [`Broker::memory`](crate::Broker::memory).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemoryStore {
    /// [`Store::instance`] (read by bridges only).
    #[cfg_attr(not(any(feature = "nats", feature = "amqp")), allow(dead_code))]
    instance: u64,
}

impl MemoryStore {
    pub(crate) fn new() -> Self {
        Self {
            instance: crate::trace_context::random_u64(),
        }
    }
}

impl Store for MemoryStore {
    fn instance(&self) -> u64 {
        self.instance
    }

    fn append(&self, job: &mut dyn Append, _commit: Commit) -> Result<Option<Ticket>, Error> {
        job.publish();
        Ok(None)
    }

    fn transact(&self, job: &mut dyn TxJob, _lent: &mut Option<Lent>) -> Result<(), Error> {
        job.run(None) // nothing is ever lent: there is no database
    }

    fn poll_stored(&self, _ticket: Ticket, _waker: &Waker) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn progress(&self, _change: Progress<'_>) {}

    fn can_record(&self) -> Result<(), Error> {
        Ok(()) // nothing to store: the in-memory state is all there is
    }

    fn declared(&self, _name: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(None)
    }

    fn declare(&self, _name: &str, _declaration: Vec<u8>) {}

    fn declarations(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        Ok(Vec::new())
    }

    fn delete(
        &self,
        _name: &str,
        _tables: Vec<String>,
        _sinks: Vec<Arc<dyn Sink>>,
        _topic: bool,
    ) -> Result<(), Error> {
        Ok(())
    }

    fn restore(&self, _log: &LogId) -> Result<Restored, Error> {
        Ok(Restored::default())
    }

    fn forget_group(&self, _topic: &str, _group: &str) {}

    fn undeclare(&self, _name: &str) {}

    fn groups(&self, _topic: &str) -> Result<Vec<(String, u32, u64)>, Error> {
        Ok(Vec::new())
    }

    fn reads_back(&self) -> bool {
        false
    }

    fn load(&self, _log: &LogId, _from: u64, _to: u64) -> Result<Vec<Loaded>, Error> {
        Ok(Vec::new())
    }

    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    fn close(&self) -> Result<(), Error> {
        Ok(())
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("<memory>")
    }
}

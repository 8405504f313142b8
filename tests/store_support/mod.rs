//! Storage backends for the store-hardening tests: one that damages what redb reads back
//! (while the broker runs), one that fails writes after it is armed (disk full).
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use embus::redb::backends::FileBackend;
use embus::redb::{BackendError, StorageBackend};

/// What the test controls in a [`TestBackend`].
#[derive(Debug, Default)]
pub struct Switches {
    /// The next read holding `pattern.0` has it replaced by `pattern.1` (same length) while
    /// set; that disarms it (a page redb copies on write would keep the damage otherwise).
    pub tamper: AtomicBool,
    pub pattern: (Vec<u8>, Vec<u8>),
    /// Writes, `set_len` and fsyncs fail while set (a full disk).
    pub full: AtomicBool,
}

impl Switches {
    pub fn new(from: &[u8], to: &[u8]) -> Arc<Self> {
        assert_eq!(from.len(), to.len());
        Arc::new(Self {
            pattern: (from.to_vec(), to.to_vec()),
            ..Self::default()
        })
    }
}

/// A file backend the test can damage reads of, or fill up.
#[derive(Debug)]
pub struct TestBackend {
    inner: FileBackend,
    switches: Arc<Switches>,
}

impl TestBackend {
    pub fn new(path: &Path, switches: &Arc<Switches>) -> Self {
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        Self {
            inner: FileBackend::new(file).unwrap(),
            switches: Arc::clone(switches),
        }
    }

    fn full(&self) -> Result<(), io::Error> {
        if self.switches.full.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected fault: disk full",
            ));
        }
        Ok(())
    }
}

impl StorageBackend for TestBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)?;
        let (from, to) = &self.switches.pattern;
        let found = || out.windows(from.len()).any(|w| w == from);
        if self.switches.tamper.load(Ordering::SeqCst)
            && found()
            && self.switches.tamper.swap(false, Ordering::SeqCst)
        {
            let mut at = 0;
            while let Some(i) = out[at..].windows(from.len()).position(|w| w == from) {
                out[at + i..at + i + to.len()].copy_from_slice(to);
                at += i + to.len();
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.full()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.full()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.full()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

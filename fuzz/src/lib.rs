//! The fuzz targets' bodies (the `fuzz_targets/` files only call them), and what they share:
//! a store on redb's in-memory backend that a test can open again.

pub mod model;
pub mod open_file;
pub mod read_through;

use std::sync::Arc;

use embus::redb::StorageBackend;
use embus::redb::backends::InMemoryBackend;
use std::io::Error as BackendIoError;

/// An in-memory backend shared between successive brokers, so that a store can be closed and
/// opened again (redb takes its backend by value).
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<InMemoryBackend>);

impl Shared {
    /// A backend holding `bytes` as its file.
    pub fn with_bytes(bytes: &[u8]) -> Self {
        let backend = InMemoryBackend::new();
        backend
            .set_len(bytes.len() as u64)
            .expect("in-memory set_len");
        backend.write(0, bytes).expect("in-memory write");
        Self(Arc::new(backend))
    }

    /// The file's bytes now.
    pub fn bytes(&self) -> Vec<u8> {
        let len = self.0.len().expect("in-memory len");
        let mut out = vec![0; usize::try_from(len).expect("fits")];
        self.0.read(0, &mut out).expect("in-memory read");
        out
    }
}

impl StorageBackend for Shared {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), BackendIoError> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        self.0.write(offset, data)
    }
}

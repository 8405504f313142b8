//! The file under a broker's store: redb's file backend, with zeros written ahead of redb's
//! first writes into the space it grew the file by.
//!
//! redb grows its file with `set_len`, which leaves a hole: the file system allocates each block
//! of it when a commit first writes there, and the commit's `fdatasync` then persists that
//! allocation too (on ext4 here, about a third more per fsync than an overwrite). A store that
//! keeps growing (sixteen senders sharing commits, large batches) wrote into the hole on most
//! commits. [`ZeroAhead`] writes zeros over the next [`AHEAD`] bytes of the hole when a write
//! first reaches into it, so the commits after it overwrite blocks the file system has.
//!
//! The zeros only ever cover bytes redb has not written since it grew the file (which read as
//! zeros already), and never extend the file, so what redb reads, and what a crash leaves of
//! its writes, are as without them. They are best effort: a zero write that fails (a full disk)
//! is skipped, and redb's own write goes ahead as it would have.

use std::fs::File;
use std::ops::Bound;

use parking_lot::Mutex;
use redb::backends::FileBackend;
use redb::{BackendError, DatabaseError, StorageBackend};

/// Bytes of a hole written with zeros at a time, ahead of redb's first write into it.
const AHEAD: u64 = 1 << 20;

/// Zeros to write from.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// redb's file backend, writing zeros ahead of redb's writes into space it grew the file by.
#[derive(Debug)]
pub(super) struct ZeroAhead {
    file: FileBackend,
    /// Read from the file at redb's first write or resize, which come after redb has locked
    /// the file (a length read before could be stale).
    frontier: Mutex<Option<Frontier>>,
}

/// Where the space redb has not written starts. Nothing at or past `written` has been written
/// by redb since the file last grew (bytes below it may be holes too: a file grown by an older
/// build, or a gap a write far past the frontier left).
#[derive(Debug)]
struct Frontier {
    /// The file's length, as redb set it (or wrote it to).
    len: u64,
    /// At most `len`: everything before the file's length at the first write or resize counts
    /// as written.
    written: u64,
}

impl ZeroAhead {
    /// redb's backend of `file` (which `Builder::create` would make), the frontier unread.
    pub(super) fn new(file: File) -> Result<Self, DatabaseError> {
        Ok(Self {
            file: FileBackend::new(file)?,
            frontier: Mutex::new(None),
        })
    }

    /// The frontier, read from the file the first time (an error leaves it unread: the zeros
    /// are best effort, and redb's own call goes ahead).
    fn frontier<'a>(
        &self,
        frontier: &'a mut Option<Frontier>,
    ) -> Result<&'a mut Frontier, std::io::Error> {
        match frontier {
            Some(frontier) => Ok(frontier),
            None => {
                let len = self.file.len()?;
                Ok(frontier.insert(Frontier { len, written: len }))
            }
        }
    }

    /// Writes zeros over `[from, to)`, as far as it can.
    fn zero(&self, from: u64, to: u64) {
        let mut at = from;
        while at < to {
            let n = usize::try_from(to - at).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
            if self.file.write(at, &ZEROS[..n]).is_err() {
                return; // best effort: the hole stays a hole
            }
            at += n as u64;
        }
    }
}

impl StorageBackend for ZeroAhead {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut guard = self.frontier.lock();
        let _ = self.frontier(&mut guard); // unread (a failed stat): no zeros, nothing else
        self.file.set_len(len)?;
        if let Some(frontier) = guard.as_mut() {
            frontier.len = len;
            frontier.written = frontier.written.min(len);
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.file.sync_data()
    }

    /// A write reaching past the frontier first fills the gap below it (if it starts within
    /// [`AHEAD`] of the frontier; a gap further away is left a hole) and the next `AHEAD`
    /// bytes after it with zeros, within the file's length, and moves the frontier past them.
    /// The zeros are written under the frontier's lock, which only writes take (redb writes from
    /// the committing thread, and from a reader flushing its cache), so they never land on a
    /// concurrent write past the old frontier.
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let end = offset.saturating_add(data.len() as u64);
        let mut guard = self.frontier.lock();
        if let Ok(frontier) = self.frontier(&mut guard)
            && end > frontier.written
        {
            if offset > frontier.written && offset - frontier.written <= AHEAD {
                self.zero(frontier.written, offset.min(frontier.len));
            }
            frontier.len = frontier.len.max(end); // a write past the end extends the file
            let ahead = end.saturating_add(AHEAD).min(frontier.len);
            self.zero(end, ahead);
            frontier.written = ahead.max(end);
        }
        drop(guard);
        self.file.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

/// Opens (or creates) the redb database in the file at `path` as `builder.create` does, on
/// [`ZeroAhead`]. The frontier is this process's: right for redb's default concurrency mode
/// (one writer, the file locked for it), which embus keeps.
pub(super) fn create(
    builder: &redb::Builder,
    path: &std::path::Path,
) -> Result<redb::Database, DatabaseError> {
    builder.create_with_backend(ZeroAhead::new(open(path)?)?)
}

/// Opens the file at `path` for reading and writing, creating it if need be, as
/// `redb::Builder::create` does.
fn open(path: &std::path::Path) -> Result<File, std::io::Error> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;

    /// A fresh directory of this test's own, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new(test: &str) -> Self {
            Self(crate::store::redb::scratch_dir(test))
        }

        fn file(&self, name: &str) -> (PathBuf, File) {
            let path = self.0.join(name);
            let file = open(&path).expect("file");
            (path, file)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn contents(backend: &ZeroAhead) -> Vec<u8> {
        let len = usize::try_from(backend.len().expect("len")).expect("small");
        let mut out = vec![0xAA; len];
        backend.read(0, &mut out).expect("read");
        out
    }

    fn at(offset: u64) -> usize {
        usize::try_from(offset).expect("small")
    }

    /// One call redb makes, its numbers reduced against the file's pages when it runs.
    #[derive(Debug, Clone)]
    enum Call {
        /// Grow or shrink to this many pages (up to 4 MiB: writes land near the frontier and
        /// far past it).
        SetLen(u64),
        /// A page this many pages past the end, which extends the file.
        PastEnd(u64),
        /// Nothing, at a page within the file or at its end.
        Empty(u64),
        /// Up to four pages from a page within the file.
        Within(u64, u64),
    }

    fn call() -> impl Strategy<Value = Call> {
        prop_oneof![
            1 => (1..=1024u64).prop_map(Call::SetLen),
            1 => (0..64u64).prop_map(Call::PastEnd),
            1 => any::<u64>().prop_map(Call::Empty),
            7 => (any::<u64>(), 1..=4u64).prop_map(|(at, n)| Call::Within(at, n)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

        /// Whatever redb writes (within the file, past its end, nothing), grows and shrinks,
        /// the file reads back as a plain file would: its writes, and zeros everywhere else.
        #[test]
        fn the_file_reads_back_as_written_whatever_the_zeros(
            calls in prop::collection::vec(call(), 1..150),
        ) {
            let dir = Dir::new("file-model");
            let (_, file) = dir.file("model");
            let backend = ZeroAhead::new(file).expect("backend");
            let page = 4096;
            let mut model: Vec<u8> = Vec::new();
            for (step, call) in calls.iter().enumerate() {
                let byte = u8::try_from(step % 255 + 1).expect("fits");
                let pages = model.len() as u64 / page;
                match *call {
                    Call::SetLen(len) => {
                        backend.set_len(len * page).expect("set_len");
                        model.resize(at(len * page), 0);
                    }
                    Call::PastEnd(gap) => {
                        let offset = (pages + gap) * page;
                        backend.write(offset, &[byte; 4096]).expect("write");
                        model.resize(at(offset), 0);
                        model.extend_from_slice(&[byte; 4096]);
                    }
                    Call::Empty(to) => backend.write(to % (pages + 1) * page, &[]).expect("write"),
                    Call::Within(from, n) if pages > 0 => {
                        let offset = from % pages * page;
                        let n = n.min(pages - offset / page) * page;
                        let data = vec![byte; at(n)];
                        backend.write(offset, &data).expect("write");
                        model[at(offset)..at(offset + n)].copy_from_slice(&data);
                    }
                    Call::Within(..) => {}
                }
                let read = contents(&backend);
                prop_assert_eq!(read.len(), model.len(), "length at step {}", step);
                prop_assert!(read == model, "contents at step {}", step);
            }
        }
    }

    /// The frontier starts where the file ends when redb first writes, not when it was opened:
    /// what another handle wrote in between is never zeroed over.
    #[cfg(unix)]
    #[test]
    fn what_the_file_held_at_the_first_write_is_never_zeroed() {
        let dir = Dir::new("file-late");
        let (path, file) = dir.file("late");
        let backend = ZeroAhead::new(file).expect("backend");
        let other = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        other.set_len(2 * AHEAD).expect("grow");
        std::os::unix::fs::FileExt::write_all_at(&other, &[5; 4096], 4096).expect("write");
        drop(other);
        // Within reach of the start, where a frontier read at open would have been.
        backend.write(AHEAD / 2, &[6; 4096]).expect("write");
        let read = contents(&backend);
        assert!(read[4096..8192] == [5; 4096], "zeroed over");
        assert!(read[at(AHEAD / 2)..at(AHEAD / 2 + 4096)] == [6; 4096]);
    }

    /// Bytes the file system has allocated for `path`.
    #[cfg(unix)]
    fn allocated(path: &std::path::Path) -> u64 {
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).expect("metadata")) * 512
    }

    /// The first write into grown space allocates a megabyte past it on disk, so the commits
    /// after it overwrite blocks the file system has; a write far past the frontier leaves the
    /// gap below it a hole rather than zero megabytes.
    #[cfg(unix)]
    #[test]
    fn space_grown_is_written_ahead_of_the_first_write_into_it() {
        let dir = Dir::new("file-ahead");
        // A file system that keeps holes and allocates what is written, block by block (not
        // ZFS compressing zeros away, nor tmpfs in huge pages), or this cannot be seen.
        let (probe, file) = dir.file("probe");
        file.set_len(8 * AHEAD).expect("set_len");
        std::os::unix::fs::FileExt::write_all_at(&file, &[1; 4096], 0).expect("write");
        file.sync_data().expect("sync");
        if allocated(&probe) >= AHEAD / 2 {
            eprintln!(
                "skipped: {} does not keep holes block by block",
                dir.0.display()
            );
            return;
        }
        let (path, file) = dir.file("ahead");
        let backend = ZeroAhead::new(file).expect("backend");
        backend.set_len(8 * AHEAD).expect("set_len");
        assert!(
            allocated(&path) < AHEAD / 2,
            "a new hole: {}",
            allocated(&path)
        );
        backend.write(4096, &[7; 4096]).expect("write");
        backend.sync_data().expect("sync");
        assert!(
            allocated(&path) >= AHEAD,
            "allocated {} bytes",
            allocated(&path)
        );
        backend.write(6 * AHEAD, &[9; 4096]).expect("write");
        backend.sync_data().expect("sync");
        assert!(
            allocated(&path) < 4 * AHEAD,
            "allocated {} bytes",
            allocated(&path)
        );
    }
}

//! The floors embus is measured against, on the same disk in the same rounds: raw `fdatasync`
//! (F0) and raw redb commits of one row (F1) and of 1,000 (F2).

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Instant;

use embus::redb::{self, TableDefinition};

use super::common::{BATCH, payload};
use super::{Ctx, Figure, Side, rate, remove, side};

/// The raw redb rows' table.
const ROWS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("rows");

/// A file of 256 preallocated 4 KiB blocks, overwritten in turn, each write followed by
/// `sync_data`: the disk's fsync floor. Overwriting (as redb mostly does) rather than
/// appending keeps a size change out of each `fdatasync`.
pub(super) struct FsyncFile {
    path: PathBuf,
    file: std::fs::File,
    next: u64,
}

impl FsyncFile {
    const BLOCKS: u64 = 256;
    const BLOCK: [u8; 4096] = [0x5A; 4096];

    /// Creates, fills and syncs the file (untimed).
    pub(super) fn create(ctx: &Ctx, label: &str) -> Self {
        let path = ctx.file(label);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .expect("create the F0 file");
        for _ in 0..Self::BLOCKS {
            file.write_all(&Self::BLOCK).expect("fill the F0 file");
        }
        file.sync_all().expect("sync the F0 file");
        Self {
            path,
            file,
            next: 0,
        }
    }

    /// Overwrites the next block and syncs it.
    pub(super) fn sync_block(&mut self) {
        let at = (self.next % Self::BLOCKS) * Self::BLOCK.len() as u64;
        self.next += 1;
        self.file.seek(SeekFrom::Start(at)).expect("seek");
        self.file.write_all(&Self::BLOCK).expect("write");
        self.file.sync_data().expect("sync_data");
    }

    pub(super) fn remove(self) {
        drop(self.file);
        remove(&self.path);
    }
}

/// F0: [`FsyncFile`] blocks back to back.
pub(super) fn fsync_floor(ctx: &Ctx, warm: bool) -> Vec<Figure> {
    let mut file = FsyncFile::create(ctx, "f0");
    let window = ctx.window(warm);
    let mut n = 0u64;
    let start = Instant::now();
    loop {
        file.sync_block();
        n += 1;
        if start.elapsed() >= window {
            break;
        }
    }
    let elapsed = start.elapsed();
    file.remove();
    vec![rate("F0", n, elapsed)]
}

/// The F2 side (of the batch and the e2e sections).
pub(super) fn f2() -> Side {
    side(
        "F2",
        "redb 1000 rows/txn, Immediate, quick repair",
        |c, w| raw_redb(c, w, "F2", BATCH, true),
    )
}

/// A fresh redb file with the rows table (created by an untimed first commit), committing
/// rows of sequential keys and 100-byte values in `Immediate` transactions, with or without
/// quick repair.
pub(super) struct RawRedb {
    path: PathBuf,
    db: redb::Database,
    value: Vec<u8>,
    next: u64,
    quick_repair: bool,
}

impl RawRedb {
    pub(super) fn create(ctx: &Ctx, key: &str, quick_repair: bool) -> Self {
        let path = ctx.file(key);
        let db = redb::Database::create(&path).expect("create the redb file");
        let mut raw = Self {
            path,
            db,
            value: payload(0),
            next: 0,
            quick_repair,
        };
        raw.commit(1);
        raw
    }

    /// Commits `rows` rows in one transaction.
    pub(super) fn commit(&mut self, rows: usize) {
        let mut txn = self.db.begin_write().expect("begin_write");
        txn.set_durability(redb::Durability::Immediate)
            .expect("Immediate");
        txn.set_quick_repair(self.quick_repair);
        {
            let mut table = txn.open_table(ROWS).expect("open_table");
            for _ in 0..rows {
                table
                    .insert(self.next, self.value.as_slice())
                    .expect("insert");
                self.next += 1;
            }
        }
        txn.commit().expect("commit");
    }

    /// Closes the database (redb's last commit) and removes the file.
    pub(super) fn remove(self) {
        drop(self.db);
        remove(&self.path);
    }
}

/// F1 / F2: raw redb, `per_txn` rows per commit for the window (the close on the clock).
pub(super) fn raw_redb(
    ctx: &Ctx,
    warm: bool,
    key: &'static str,
    per_txn: usize,
    quick_repair: bool,
) -> Vec<Figure> {
    let mut raw = RawRedb::create(ctx, key, quick_repair);
    let first = raw.next;
    let window = ctx.window(warm);
    let start = Instant::now();
    loop {
        raw.commit(per_txn);
        if start.elapsed() >= window {
            break;
        }
    }
    let rows = raw.next - first;
    raw.remove();
    vec![rate(key, rows, start.elapsed())]
}

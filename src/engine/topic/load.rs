//! Reading a partition's stored records back (durable mode): decoding them at the seam,
//! reporting each damaged or undecodable record with its bytes, and splitting a read that
//! meets a damaged page so that the damage costs only the records on it.

use std::sync::Arc;

use super::log::{Load, Row, Stored};
use crate::codec::CodecKind;
use crate::engine::seam;
use crate::error::{Error, Undecodable};
use crate::record::{Nanos, Payload};
use crate::store::{LogId, Store};

/// Reads one partition's stored records back (durable mode).
pub(super) struct PartitionLoad {
    pub(super) store: Arc<dyn Store>,
    pub(super) log: LogId,
    pub(super) codec: CodecKind,
    pub(super) name: String,
    pub(super) partition: u32,
}

impl PartitionLoad {
    fn undecodable(&self, offset: u64, message: String, bytes: Vec<u8>) -> Box<Undecodable> {
        let u = Undecodable::new(&self.name, self.partition, offset, message, bytes);
        Box::new(u)
    }

    /// Appends every offset of `from..to` to `out`. A range the store reports as corrupt (a
    /// damaged page; redb may panic on one) is split in halves, down to single records, so
    /// that damage costs only the records it hit.
    fn read<T: Payload>(
        &self,
        from: u64,
        to: u64,
        out: &mut Vec<(u64, Row<T>)>,
    ) -> Result<(), Error> {
        let rows = match self.store.load(&self.log, from, to) {
            Ok(rows) => rows,
            Err(Error::Corrupt { .. }) if to - from > 1 => {
                let mid = from + (to - from) / 2;
                self.read(from, mid, out)?;
                return self.read(mid, to, out);
            }
            Err(Error::Corrupt { detail, .. }) => {
                let message = format!("the store cannot read it: {detail}");
                out.push((from, Err(self.undecodable(from, message, Vec::new()))));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut rows = rows.into_iter().peekable();
        for at in from..to {
            let row = match rows.next_if(|row| row.key == at) {
                None => Err(self.undecodable(at, "missing from the store".to_owned(), Vec::new())),
                Some(row) => {
                    match seam::decode_row::<T>(self.codec, &self.name, self.partition, &row) {
                        Ok((ts, entry)) => Ok(Stored { ts, entry }),
                        Err(Error::Decode(undecodable)) => Err(undecodable),
                        Err(e) => Err(self.undecodable(at, e.to_string(), row.value)),
                    }
                }
            };
            out.push((at, row));
        }
        Ok(())
    }
}

impl<T: Payload> Load<T> for PartitionLoad {
    fn rows(&self, from: u64, to: u64) -> Result<Vec<(u64, Row<T>)>, Error> {
        let mut out = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
        self.read(from, to, &mut out)?;
        Ok(out)
    }

    fn heads(&self, from: u64, to: u64) -> Result<Vec<(Nanos, u32)>, Error> {
        let rows = match self.store.load(&self.log, from, to) {
            Ok(rows) => rows,
            Err(Error::Corrupt { .. }) => Vec::new(), // damaged: expired and empty
            Err(e) => return Err(e),
        };
        let mut rows = rows.into_iter().peekable();
        let head = |at: u64| {
            let row = rows.next_if(|row| row.key == at)?;
            let opened = row.open().ok()?;
            Some((opened.ts, opened.size))
        };
        Ok((from..to).map(head).map(|h| h.unwrap_or((0, 0))).collect())
    }
}

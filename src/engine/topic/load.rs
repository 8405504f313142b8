//! Reading a partition's stored records back (durable mode): decoding them at the seam,
//! reporting each damaged or undecodable record with its bytes, and splitting a read that
//! meets a damaged page so that the damage costs only the records on it.

use std::sync::Arc;

use super::log::{Load, Row, Stored};
use crate::codec::CodecKind;
use crate::engine::seam;
use crate::error::{Error, Undecodable};
use crate::record::{Nanos, Payload};
use crate::store::{Loaded, LogId, Store};

/// Reads one partition's stored records back (durable mode).
pub(super) struct PartitionLoad {
    pub(super) store: Arc<dyn Store>,
    pub(super) log: LogId,
    pub(super) codec: CodecKind,
    pub(super) name: String,
    pub(super) partition: u32,
    /// A compacted topic: offsets without a row were compacted away, not lost, so
    /// [`rows`](Load::rows) answers only for the rows there are.
    pub(super) compacted: bool,
}

impl PartitionLoad {
    fn undecodable(&self, offset: u64, message: String, bytes: Vec<u8>) -> Box<Undecodable> {
        let u = Undecodable::new(&self.name, self.partition, offset, message, bytes);
        Box::new(u)
    }

    /// Visits every offset of `from..to` with its stored row, or why there is none. A range
    /// the store reports as corrupt (a damaged page; redb may panic on one) is split in halves,
    /// down to single records, so that damage costs only the records it hit.
    /// With `sparse`, offsets without a row are not visited.
    fn visit(
        &self,
        from: u64,
        to: u64,
        sparse: bool,
        visit: &mut dyn FnMut(u64, Result<Loaded, String>),
    ) -> Result<(), Error> {
        let rows = match self.store.load(&self.log, from, to) {
            Ok(rows) => rows,
            Err(Error::Corrupt { .. }) if to - from > 1 => {
                let mid = from + (to - from) / 2;
                self.visit(from, mid, sparse, visit)?;
                return self.visit(mid, to, sparse, visit);
            }
            Err(Error::Corrupt { detail, .. }) => {
                visit(from, Err(format!("the store cannot read it: {detail}")));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if sparse {
            for row in rows {
                visit(row.key, Ok(row));
            }
            return Ok(());
        }
        let mut rows = rows.into_iter().peekable();
        for at in from..to {
            match rows.next_if(|row| row.key == at) {
                Some(row) => visit(at, Ok(row)),
                None => visit(at, Err("missing from the store".to_owned())),
            }
        }
        Ok(())
    }
}

impl<T: Payload> Load<T> for PartitionLoad {
    fn rows(&self, from: u64, to: u64) -> Result<Vec<(u64, Row<T>)>, Error> {
        let dense = if self.compacted { 0 } else { to - from };
        let mut out = Vec::with_capacity(usize::try_from(dense).unwrap_or(0));
        self.visit(from, to, self.compacted, &mut |at, row| {
            let row = match row {
                Err(message) => Err(self.undecodable(at, message, Vec::new())),
                Ok(row) => {
                    match seam::decode_row::<T>(self.codec, &self.name, self.partition, &row) {
                        Ok((ts, entry)) => Ok(Stored { ts, entry }),
                        Err(Error::Decode(undecodable)) => Err(undecodable),
                        Err(e) => Err(self.undecodable(at, e.to_string(), row.value)),
                    }
                }
            };
            out.push((at, row));
        })?;
        Ok(out)
    }

    fn heads(&self, from: u64, to: u64) -> Result<Vec<(Nanos, u32)>, Error> {
        let mut out = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
        self.visit(from, to, false, &mut |_, row| {
            // A damaged record counts as expired and empty; its neighbours keep their heads.
            let head = row
                .ok()
                .and_then(|row| row.open().ok().map(|r| (r.ts, r.size)));
            out.push(head.unwrap_or((0, 0)));
        })?;
        Ok(out)
    }
}

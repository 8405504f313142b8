//! Typed encode and decode at the store seam: payloads become bytes here, in the codec the
//! broker was built with, and stored rows become entries again. The store never sees a `T`.
//!
//! # The round-trip check
//!
//! A payload type the codec can write but not read back (with bincode: `#[serde(tag)]`,
//! `untagged`, `flatten`, `skip_serializing_if`) would be sent and delivered live, then be
//! unreadable after a restart. So before a payload of a topic or queue is first stored, it is
//! decoded again and re-encoded; a failure refuses that send with [`Error::Unsupported`] and
//! hands the message back. Release builds check each topic's or queue's first stored payload;
//! debug builds check every one.

use std::any::{Any, type_name};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::codec::{self, CodecKind};
use crate::error::{Error, Undecodable};
use crate::record::{Entry, Headers, NO_HEADERS, Nanos, Payload, Timing};
use crate::store::{Loaded, format};

/// Encodes and decodes one topic's or queue's payloads.
pub(crate) struct Coder<T> {
    name: String,
    codec: CodecKind,
    /// Whether a payload has passed the round-trip check.
    checked: AtomicBool,
    /// The payload bytes of the last encode (at most [`ROOM_LIMIT`]): the room the next
    /// body is allocated with, so the codec's writes do not reallocate it.
    room: AtomicUsize,
    /// [`encode`](Self::encode), for code that cannot name `T: Payload` ([`Self::encode_any`]).
    erased: Encode<T>,
    _payload: PhantomData<fn(T) -> T>,
}

/// The most room a body is allocated with for its payload ahead of encoding it (small: one
/// large payload must not make every later small one allocate as much; a larger one grows
/// its body as it is written).
const ROOM_LIMIT: usize = 4 << 10;

type Encode<T> = fn(&Coder<T>, &T, Option<&[u8]>, &Headers) -> Result<Vec<u8>, Error>;

impl<T> Coder<T> {
    /// [`encode`](Self::encode) where `T: Payload` cannot be named (a queue's release paths,
    /// which also run in drops).
    pub(crate) fn encode_any(
        &self,
        payload: &T,
        key: Option<&[u8]>,
        headers: &Headers,
    ) -> Result<Vec<u8>, Error> {
        (self.erased)(self, payload, key, headers)
    }
}

impl<T: Payload> Coder<T> {
    pub(crate) fn new(name: &str, codec: CodecKind) -> Self {
        Self {
            name: name.to_owned(),
            codec,
            checked: AtomicBool::new(false),
            room: AtomicUsize::new(0),
            erased: Self::encode,
            _payload: PhantomData,
        }
    }

    pub(crate) fn codec(&self) -> CodecKind {
        self.codec
    }

    /// A record's body for the store (see [`format`]).
    pub(crate) fn encode(
        &self,
        payload: &T,
        key: Option<&[u8]>,
        headers: &Headers,
    ) -> Result<Vec<u8>, Error> {
        self.encode_timed(payload, key, headers, &Timing::default())
    }

    /// A record's body with its timing (see [`format::body_timed`]).
    fn encode_timed(
        &self,
        payload: &T,
        key: Option<&[u8]>,
        headers: &Headers,
        timing: &Timing,
    ) -> Result<Vec<u8>, Error> {
        let room = self.room.load(Ordering::Relaxed);
        let mut out = format::body_with_room(key, headers, timing, room);
        let start = out.len();
        // Raw bytes skip serde's byte-by-byte path (the same bytes: see `bincode_bytes`).
        let bytes = (payload as &dyn Any).downcast_ref::<Vec<u8>>();
        match (self.codec, bytes) {
            (CodecKind::Bincode, Some(bytes)) => codec::bincode_bytes(bytes, &mut out),
            (codec, _) => codec.encode(payload, &mut out),
        }
        .map_err(|e| Error::Encode {
            name: self.name.clone(),
            message: e.0,
        })?;
        let used = (out.len() - start).min(ROOM_LIMIT);
        if used != room {
            self.room.store(used, Ordering::Relaxed);
        }
        if cfg!(debug_assertions) || !self.checked.load(Ordering::Relaxed) {
            self.check(&out[start..])?;
            self.checked.store(true, Ordering::Relaxed);
        }
        Ok(out)
    }

    /// An entry's body for the store.
    pub(crate) fn encode_entry(&self, entry: &Entry<T>) -> Result<Vec<u8>, Error> {
        let meta = entry.meta.as_deref();
        let Some(meta) = meta else {
            return self.encode(&entry.payload, None, &NO_HEADERS);
        };
        let key = meta.key.as_deref();
        self.encode_timed(&entry.payload, key, &meta.headers, &meta.timing)
    }

    /// Decodes `bytes` as `T` and encodes the result again: it must decode, and to a value of
    /// the same encoded length (a map's order may differ, its length cannot).
    fn check(&self, bytes: &[u8]) -> Result<(), Error> {
        let unsupported = |message: String| {
            let hint = match self.codec {
                CodecKind::Bincode => {
                    "; the bincode codec cannot carry #[serde(tag)], #[serde(untagged)], \
                     #[serde(flatten)] or skip_serializing_if: build the broker with \
                     BrokerBuilder::codec(CodecKind::Json)"
                }
                CodecKind::Json => "",
            };
            Error::Unsupported {
                name: self.name.clone(),
                type_name: type_name::<T>().to_owned(),
                message: format!("the {} codec {message}{hint}", self.codec.name()),
            }
        };
        let back: T = self
            .codec
            .decode(bytes)
            .map_err(|e| unsupported(format!("cannot read it back: {}", e.0)))?;
        let mut again = Vec::with_capacity(bytes.len());
        self.codec.encode(&back, &mut again).map_err(|e| {
            unsupported(format!("reads it back as a value it cannot write: {}", e.0))
        })?;
        if again.len() == bytes.len() {
            Ok(())
        } else {
            Err(unsupported(format!(
                "reads it back as another value ({} bytes written, {} after a round trip)",
                bytes.len(),
                again.len()
            )))
        }
    }
}

/// Decodes one stored row of `name` (partition 0 for a queue), with a typed error naming
/// where it was.
pub(crate) fn decode_row<T: Payload>(
    codec: CodecKind,
    name: &str,
    partition: u32,
    row: &Loaded,
) -> Result<(Nanos, Entry<T>), Error> {
    let fail = |message: String, bytes: &[u8]| {
        Error::Decode(Box::new(Undecodable::new(
            name,
            partition,
            row.key,
            message,
            bytes.to_vec(),
        )))
    };
    let opened = row
        .open()
        .map_err(|bad| fail(bad.to_string(), &row.value))?;
    let payload = codec
        .decode(opened.payload)
        .map_err(|e| fail(e.to_string(), opened.payload))?;
    let entry = Entry {
        payload,
        meta: opened.meta(),
        size: opened.size,
    };
    Ok((opened.ts, entry))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::Record;

    /// A record's timing (delay, ttl, priority) is stored with it and read back, for queue and
    /// topic records alike; a record without timing reads back without any.
    #[test]
    fn timing_round_trips_through_the_stored_row() {
        let coder = Coder::<u64>::new("t", CodecKind::Bincode);
        let seed = format::seed("t.t.0");
        for record in [
            Record::new(7)
                .delay(Duration::from_secs(3))
                .ttl(Duration::from_secs(9)),
            Record::new(7).priority(4).key("k"),
            Record::new(7),
        ] {
            let entry = Entry::new(record, 0);
            let mut value = coder.encode_entry(&entry).unwrap();
            format::seal(&mut value, seed, 5, 11, 0);
            let row = Loaded {
                key: 5,
                value,
                deliveries: 0,
                seed,
            };
            let (ts, back) = decode_row::<u64>(CodecKind::Bincode, "t", 0, &row).unwrap();
            assert_eq!((ts, back.payload), (11, 7));
            assert_eq!(back.timing(), entry.timing());
            assert_eq!(back.meta.is_some(), entry.meta.is_some());
        }
    }
}

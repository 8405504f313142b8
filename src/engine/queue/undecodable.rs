//! Stored queue messages that did not decode when the queue was restored: set aside (never
//! delivered, never counted against capacity), listed with their bytes, and moved whole to the
//! dead-letter queue on request.

use super::QueueCore;
use crate::error::{Error, Undecodable};
use crate::record::{DEAD_LETTER_REASON, Entry, Headers};
use crate::store::{Loaded, Progress, format};

/// One set-aside message: what the user is shown, and the row as stored.
pub(super) struct SetAside {
    pub(super) report: Undecodable,
    pub(super) row: Loaded,
}

impl<T> QueueCore<T> {
    /// The set-aside messages, with their raw bytes.
    pub(crate) fn undecodable(&self) -> Vec<Undecodable> {
        let set_aside = self.undecodable.lock();
        set_aside.iter().map(|s| s.report.clone()).collect()
    }

    /// Moves every set-aside message to the dead-letter queue, with the reason `undecodable`;
    /// returns how many. They stay undecodable there (listed by its `undecodable`).
    pub(crate) fn dead_letter_undecodable(&self) -> Result<usize, Error> {
        let Some(dlq) = &self.dead_letter else {
            return Err(Error::NoDeadLetterQueue {
                queue: self.name.clone(),
            });
        };
        self.context.check_open()?;
        self.context.store.can_record()?; // nothing moves in memory that the file cannot
        let moved = std::mem::take(&mut *self.undecodable.lock());
        let count = moved.len();
        for SetAside { report, row } in moved {
            let to_id = dlq.state.lock().take_id();
            let (body, headers, ts, size) = dead_letter_of(&row, &self.name);
            let ts = ts.unwrap_or_else(|| self.context.clock.now());
            self.context.store.progress(Progress::DeadLetter {
                queue: &self.sink,
                id: row.key,
                to: &dlq.sink,
                to_id,
                headers: &headers,
                body: &|| Ok(body.clone()),
                ts,
                size,
            });
            let report = Undecodable::new(
                &dlq.name,
                0,
                to_id,
                report.message.clone(),
                report.bytes.clone(),
            );
            // The row as the writer stores it, should it move on again.
            let seed = dlq.sink.log().seed();
            let mut value = body;
            format::seal(&mut value, seed, to_id, ts, size);
            let row = Loaded {
                key: to_id,
                value,
                deliveries: row.deliveries,
                seed,
            };
            dlq.undecodable.lock().push(SetAside { report, row });
        }
        self.context.store.can_record()?;
        Ok(count)
    }
}

/// A set-aside row as a dead letter: its body (unsealed), headers, timestamp and size. A row
/// that opens keeps its key, headers and payload bytes; one that does not (its checksum
/// failed) becomes the payload of a dead letter with only the dead-letter headers.
fn dead_letter_of(row: &Loaded, from: &str) -> (Vec<u8>, Headers, Option<u64>, u32) {
    let add = |headers: &mut Headers| {
        headers.push_dead_letter(from, UNDECODABLE, row.deliveries);
    };
    match row.open() {
        Ok(opened) => {
            let mut headers = opened.headers.clone();
            add(&mut headers);
            let mut body = format::body(opened.key, &headers);
            body.extend_from_slice(opened.payload);
            (body, headers, Some(opened.ts), opened.size)
        }
        Err(_) => {
            let mut headers = Headers::new();
            add(&mut headers);
            let mut body = format::body(None, &headers);
            body.extend_from_slice(&row.value);
            let size = u32::try_from(row.value.len()).unwrap_or(u32::MAX);
            (body, headers, None, size)
        }
    }
}

/// The reason header of a message dead-lettered as undecodable.
const UNDECODABLE: &str = "undecodable";

/// Whether a restored message is a dead letter moved as undecodable.
pub(super) fn is_undecodable_letter<T>(entry: &Entry<T>) -> bool {
    let reason = entry
        .meta
        .as_deref()
        .and_then(|m| m.headers.get(DEAD_LETTER_REASON));
    reason == Some(UNDECODABLE.as_bytes())
}

/// Sets aside a restored undecodable dead letter, with its payload bytes.
pub(super) fn set_aside_letter(name: &str, row: Loaded) -> SetAside {
    let payload = row.open().map(|r| r.payload.to_vec()).unwrap_or_default();
    let message = "dead-lettered as undecodable: its payload is the record as it was".to_owned();
    SetAside {
        report: Undecodable::new(name, 0, row.key, message, payload),
        row,
    }
}

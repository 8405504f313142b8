//! Reads an opened store through, as the `open_file` target and `tests/fuzz_regressions.rs`
//! (which includes this file) do: every stored topic from its start, its groups, every queue,
//! and a snapshot. Errors are fine; a panic reaching the caller or a reader that stalls is not.
//! It names only `embus`, so the test can include it.

use std::time::Duration;

use embus::{Broker, RecvTimeoutError, Start, TryRecvError};

/// Most messages read from one topic or queue (a damaged count may claim billions).
const MOST: usize = 2_000;
/// How long a reader may wait for a retained message before it counts as stalled.
const WAIT: Duration = Duration::from_secs(5);

/// Declares every stored topic and queue and reads them through; panics only on a stall.
pub fn read_through(bus: &Broker) {
    let _ = bus.stats();
    for name in bus.topics().unwrap_or_default() {
        let Ok(topic) = bus.topic::<String>(&name) else {
            continue;
        };
        let Ok(mut reader) = topic.subscribe(Start::Earliest) else {
            continue;
        };
        // Every retained offset is accounted for: a message, a lag, a damaged record; or
        // the store says it cannot read on. Waiting longer than `WAIT` is a stall.
        let retained: u64 = (0..topic.partitions())
            .filter_map(|p| topic.offsets(p))
            .map(|r| r.end.saturating_sub(r.start))
            .sum();
        let mut accounted = 0u64;
        while accounted < retained.min(MOST as u64) {
            match reader.recv_timeout(WAIT) {
                Ok(_) | Err(RecvTimeoutError::Undecodable(_)) => accounted += 1,
                Err(RecvTimeoutError::Lagged { skipped }) => accounted += skipped.max(1),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "topic {name}: the reader stalls after {accounted} of {retained} retained"
                ),
                Err(_) => break,
            }
        }
        // Groups stored in the file: join each and read what it has.
        for group in topic.groups() {
            if let Ok(mut member) = topic.join_group(&group) {
                drain(|| member.try_recv().map(|m| drop(m.ack())));
            }
        }
    }
    for name in bus.queues().unwrap_or_default() {
        let Ok(queue) = bus.queue::<String>(&name) else {
            continue;
        };
        let _ = queue.peek(8);
        let mut worker = queue.consumer();
        drain(|| worker.try_recv().map(|m| drop(m.nack())));
    }
    let _ = bus.stats();
}

/// Calls `next` until it says `Empty` or fails, at most [`MOST`] times.
fn drain(mut next: impl FnMut() -> Result<(), TryRecvError>) {
    for _ in 0..MOST {
        match next() {
            Ok(()) | Err(TryRecvError::Lagged { .. } | TryRecvError::Undecodable(_)) => {}
            Err(_) => break,
        }
    }
}

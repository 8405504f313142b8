//! Loom models of the lock-free partition reads: the `writers_waiting` handshake between a
//! producer waiting for room (`Block`) and a reader moving its cursor, and the published
//! `end` and `base` that readers follow without the lock.
//!
//! Run with `RUSTFLAGS="--cfg embus_loom" cargo test --lib loom_models` (add `--release` and
//! `LOOM_MAX_PREEMPTIONS=5` for a deeper run; `.ci/run` runs the default bound of 3).
//! `crate::engine::sync` swaps in loom's atomics, lock and threads, so these drive the real
//! `Partition` and `Log`; segments hold 2 slots under loom, so readers cross `next` links.
//! What stands in for the topic and the subscriber is a copy of their loops, minus backoff,
//! deadlines and close: [`send`] follows `TopicCore::publish_with` and `wait_for_room_or`
//! (src/engine/topic/mod.rs), [`recv`] follows `receive` (src/consumer.rs) over
//! `Subscriber::poll` (src/engine/topic/subscriber.rs). Keep them in step.
//!
//! Each model asserts that nobody stays parked while there is work (loom fails a model whose
//! threads all block: a lost wakeup), and that a reader that sees `end > n` finds slot `n`
//! set ([`assert_published`]; and, where nothing is trimmed or delayed, that a lock-free read
//! never has to fall back to the lock).
//!
//! Each of these changes to `mod.rs` (and `retention.rs`) makes at least one model fail
//! (checked by hand before room checks moved to `has_room`): the flag's store in
//! `wait_for_room` or its load in `advance` weakened to `Release`/`Acquire`, or the store
//! dropped; the cursor's store in `advance` or its load in `can_trim_at` weakened;
//! `advance` not waking the writers it took; `remove_writer` clearing the flag while another
//! writer waits; `push` not waking readers; `end` stored `Relaxed`, loaded `Relaxed`, or
//! stored before the slot is set; a segment's `next` link set after `end`. (`end` loaded or
//! stored `Relaxed` re-checked after readers began deciding "empty" from an empty slot.)

use std::sync::Arc;

use loom::thread;

use super::*;

fn entry(payload: u64) -> Entry<u64> {
    Entry {
        payload,
        meta: None,
        size: 0,
    }
}

fn limits(messages: Option<u64>, block: bool) -> Limits {
    Limits {
        messages,
        bytes: None,
        age: None,
        block,
        interest: false,
    }
}

/// Explores every interleaving up to `LOOM_MAX_PREEMPTIONS` preemptions (3 unless set), and
/// prints how many it ran.
fn model(name: &str, f: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = builder.preemption_bound.or(Some(3));
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let started = std::time::Instant::now();
    builder.check(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
    println!("{name}: {runs} interleavings in {:.1?}", started.elapsed());
    assert!(runs > 1, "the model explored a single interleaving");
}

/// The invariant lock-free reads rely on: a reader that sees `end > n` finds slot `n` set, in
/// the segment it holds or the one that segment's `next` link leads to. (A link that is not
/// there — not set because retention had freed the tail before the push that made the next
/// segment, or pointing at a freed segment — sends the read to the lock instead.)
fn assert_published(p: &Partition<u64>, reader: &Reader<u64>) {
    let n = reader.next;
    if n >= p.published.end.load(Ordering::Acquire) {
        return;
    }
    let Some(segment) = reader.segment.as_ref() else {
        return;
    };
    let segment = if n >= segment.start + SEGMENT {
        match segment.next.get().and_then(Weak::upgrade) {
            Some(next) => next,
            None => return,
        }
    } else {
        Arc::clone(segment)
    };
    assert!(
        segment.get(n).is_some(),
        "a reader saw the end past {n} but not slot {n}"
    );
}

/// Sends `payload` as a blocking producer does: append if there is room; otherwise wait for
/// room (look under the lock; register as a waiting writer and look again under that same
/// lock; park only if that look found none), then try the append again.
fn send(p: &Partition<u64>, l: &Limits, id: u64, payload: u64) -> u64 {
    loop {
        // `publish_once`: `try_append` under one lock; readers woken after it.
        let mut log = p.lock();
        if let Ok((offset, readers)) = log.try_append(l, 0, entry(payload)) {
            drop(log);
            readers.wake();
            return offset;
        }
        drop(log);
        // `wait_for_room_or`.
        loop {
            let mut log = p.lock();
            if log.has_room(l, 0, 0) {
                log.remove_writer(id);
                break;
            }
            drop(log);
            // `register_writer`.
            let mut log = p.lock();
            log.wait_for_room(id, Wait::Thread);
            let room = log.has_room(l, 0, 0);
            if room {
                log.remove_writer(id);
            }
            drop(log);
            if room {
                break;
            }
            thread::park();
        }
    }
}

/// What a read gave a subscriber.
#[derive(Debug, PartialEq)]
enum Got {
    Message { offset: u64, payload: u64 },
    Lagged(u64),
}

/// Receives as a blocking subscriber does: one look without registering (lock-free if it
/// can), then looks under the lock that register the reader, parking after each empty one.
/// `strict`: nothing is trimmed or delayed, so a lock-free read of a reader that holds its
/// segment must decide without the lock (every `next` link is set before the end moves).
fn recv(p: &Partition<u64>, reader: &mut Reader<u64>, id: u64, strict: bool) -> Got {
    assert_published(p, reader);
    let primed = reader.segment.is_some();
    let read = match p.read_fast(reader) {
        Some(read) => read,
        None => {
            assert!(
                !(strict && primed),
                "a lock-free read at {} saw the end past it but not its slot",
                reader.next
            );
            let mut log = p.lock();
            let (read, woken) = p.read_locked(&mut log, reader, id, Wait::No, || 0);
            drop(log);
            woken.wake();
            read
        }
    };
    let mut read = read;
    loop {
        match read {
            Read::Got(got) => {
                return Got::Message {
                    offset: got.offset(),
                    payload: got.get().entry.payload,
                };
            }
            Read::Lagged(skipped) => return Got::Lagged(skipped),
            Read::Empty => {}
            Read::Undecodable(_) | Read::Failed(_) | Read::NotYet(_) => {
                panic!("memory mode, nothing delayed")
            }
        }
        let mut log = p.lock();
        let (next, woken) = p.read_locked(&mut log, reader, id, Wait::Thread, || 0);
        drop(log);
        woken.wake();
        if matches!(next, Read::Empty) {
            thread::park();
        }
        read = next;
    }
}

/// [`send`] on a thread of its own.
fn spawn_send(
    p: &Arc<Partition<u64>>,
    l: Limits,
    id: u64,
    payload: u64,
) -> thread::JoinHandle<u64> {
    let p = Arc::clone(p);
    thread::spawn(move || send(&p, &l, id, payload))
}

/// A partition holding offsets `0..=upto` under `l`, and a reader at 1 that read 0 under the
/// lock (so it holds its segment and reads lock-free from then on).
fn primed(l: &Limits, blocks: bool, upto: u64) -> (Arc<Partition<u64>>, Reader<u64>) {
    let p = Arc::new(Partition::new());
    let mut log = p.lock();
    let mut reader = p.reader(&mut log, 0, blocks, 1);
    assert!(log.has_room(l, 0, 0));
    let _ = log.append(l, 0, entry(0));
    let (read, _) = p.read_locked(&mut log, &mut reader, 1, Wait::No, || 0);
    assert!(matches!(read, Read::Got(ref got) if got.offset() == 0));
    for payload in 1..=upto {
        assert!(log.has_room(l, 0, 0));
        let _ = log.append(l, 0, entry(payload));
    }
    drop(log);
    assert!(reader.segment.is_some());
    (p, reader)
}

/// The reader receives `offsets` in order, each message its own payload or one of
/// `producers`'; returns those it got from the producers.
fn drain(
    p: &Partition<u64>,
    reader: &mut Reader<u64>,
    offsets: std::ops::RangeInclusive<u64>,
    strict: bool,
) -> Vec<u64> {
    let from = *offsets.start();
    let mut sent = Vec::new();
    for offset in offsets {
        match recv(p, reader, 1, strict) {
            Got::Message {
                offset: at,
                payload,
            } if at == offset => {
                if payload >= 100 {
                    sent.push(payload);
                } else {
                    assert!(payload == offset && offset >= from, "{offset}: {payload}");
                }
            }
            got => panic!("offset {offset}: {got:?}"),
        }
    }
    sent
}

/// `Block`, room for two messages, a reader two behind: the producer of offset 3 must wait
/// until the reader's lock-free read of 1 moves its cursor; then the reader reads 2 and
/// waits for 3, all without the lock (crossing a segment's `next` link at 2).
#[test]
fn loom_a_blocked_producer_is_woken_by_a_lock_free_read() {
    model("a_blocked_producer_is_woken_by_a_lock_free_read", || {
        let l = limits(Some(2), true);
        let (p, mut reader) = primed(&l, true, 2);
        let producer = spawn_send(&p, l, 100, 100);
        assert_eq!(drain(&p, &mut reader, 1..=3, true), [100]);
        assert_eq!(producer.join().unwrap(), 3);
        let log = p.lock();
        assert_eq!((log.base(), log.end()), (2, 4));
        assert!(!p.published.writers_waiting.load(Ordering::SeqCst));
    });
}

/// As above with room for one: the trim before each push empties the log and frees the tail
/// segment, so the next segment is not linked from the reader's and it finds offset 2 under
/// the lock (whose cursor move wakes the writers too).
#[test]
fn loom_a_blocked_producer_is_woken_when_the_reader_takes_the_lock() {
    model(
        "a_blocked_producer_is_woken_when_the_reader_takes_the_lock",
        || {
            let l = limits(Some(1), true);
            let (p, mut reader) = primed(&l, true, 1);
            let producer = spawn_send(&p, l, 100, 100);
            assert_eq!(drain(&p, &mut reader, 1..=2, false), [100]);
            assert_eq!(producer.join().unwrap(), 2);
            assert!(!p.published.writers_waiting.load(Ordering::SeqCst));
        },
    );
}

/// Two producers wait for room, which the reader makes one message at a time: a writer that
/// finds room on its re-check (and so removes itself) must leave the other one registered
/// with the flag still set, or woken.
#[test]
fn loom_two_blocked_producers_and_a_reader_drain() {
    model("two_blocked_producers_and_a_reader_drain", || {
        let l = limits(Some(2), true);
        let (p, mut reader) = primed(&l, true, 2);
        let producers: Vec<_> = [100, 200]
            .into_iter()
            .map(|id| spawn_send(&p, l, id, id))
            .collect();
        let mut sent = drain(&p, &mut reader, 1..=4, true);
        sent.sort_unstable();
        assert_eq!(sent, [100, 200]);
        let mut offsets: Vec<u64> = producers.into_iter().map(|h| h.join().unwrap()).collect();
        offsets.sort_unstable();
        assert_eq!(offsets, [3, 4]);
    });
}

/// No retention: a producer appends offsets 2 and 3 (crossing into a new segment at 2), each
/// under its own lock, while a reader follows without the lock: it must find every slot it
/// sees the end move past, and be woken by each push it waits for.
#[test]
fn loom_a_reader_that_sees_the_end_finds_the_slot() {
    model("a_reader_that_sees_the_end_finds_the_slot", || {
        let l = limits(None, false);
        let (p, mut reader) = primed(&l, false, 1);
        let producer = {
            let p = Arc::clone(&p);
            thread::spawn(move || {
                for payload in 2..=3 {
                    assert_eq!(send(&p, &l, 100, payload), payload);
                }
            })
        };
        assert!(drain(&p, &mut reader, 1..=3, true).is_empty());
        producer.join().unwrap();
    });
}

/// `Lag`, one message kept: the producer trims as it appends (moving the published base and
/// freeing whole segments) while a reader that does not block retention follows. Every offset
/// reaches the reader once, as a message with its own payload or counted in a `Lagged`.
#[test]
fn loom_a_lagging_reader_accounts_for_every_offset() {
    model("a_lagging_reader_accounts_for_every_offset", || {
        lagging_reader(1, 1);
    });
}

/// As above with five kept, so that the published base runs ahead of the log's (by a quarter
/// of what is retained): the reader starts between the two, where the lock decides.
#[test]
fn loom_a_lagging_reader_below_the_published_base_accounts_for_every_offset() {
    model(
        "a_lagging_reader_below_the_published_base_accounts_for_every_offset",
        || lagging_reader(5, 5),
    );
}

/// A `Lag` partition keeping `kept` messages, primed up to `upto`, and a producer sending the
/// next two while the reader at 1 follows: every offset once, as a message or in a lag.
fn lagging_reader(kept: u64, upto: u64) {
    let l = limits(Some(kept), false);
    let (p, mut reader) = primed(&l, false, upto);
    let producer = {
        let p = Arc::clone(&p);
        thread::spawn(move || {
            for payload in upto + 1..=upto + 2 {
                assert_eq!(send(&p, &l, 100, payload), payload);
            }
        })
    };
    let mut next = 1;
    while next <= upto + 2 {
        match recv(&p, &mut reader, 1, false) {
            Got::Message { offset, payload } => {
                assert_eq!((offset, payload), (next, next), "in order, its own slot");
                next += 1;
            }
            Got::Lagged(skipped) => {
                assert!(
                    skipped > 0 && next + skipped <= upto + 2,
                    "skipped {skipped} at {next}"
                );
                next += skipped;
            }
        }
    }
    producer.join().unwrap();
    let log = p.lock();
    assert!(p.published.base.load(Ordering::SeqCst) >= log.base());
}

/// A reader that knows a send finished (it joined the producer: any happens-before will do)
/// reads it lock-free: an empty slot in the segment it holds means "not appended yet" only
/// until the slot's write is visible, never after. Two sends cross a segment's `next` link.
#[test]
fn loom_a_send_that_happened_before_is_read_lock_free() {
    model("a_send_that_happened_before_is_read_lock_free", || {
        let l = limits(None, false);
        let (p, mut reader) = primed(&l, false, 0);
        let first = spawn_send(&p, l, 100, 100);
        // Racing the append: empty, or the message; never a fall back to the lock.
        let raced = p.read_fast(&mut reader);
        assert!(
            matches!(raced, Some(Read::Empty | Read::Got(_))),
            "an appended segment decides without the lock"
        );
        let had = usize::from(matches!(raced, Some(Read::Got(_))));
        assert_eq!(first.join().unwrap(), 1);
        let second = spawn_send(&p, l, 101, 101);
        assert_eq!(second.join().unwrap(), 2);
        for offset in 1 + had as u64..=2 {
            match p.read_fast(&mut reader) {
                Some(Read::Got(got)) => assert_eq!(got.offset(), offset),
                Some(Read::Empty) => panic!("offset {offset} was sent before but read empty"),
                _ => {
                    // Crossing to the next segment may need the lock (its link is weak).
                    let (read, _) = p.read_locked(&mut p.lock(), &mut reader, 1, Wait::No, || 0);
                    assert!(matches!(read, Read::Got(ref got) if got.offset() == offset));
                }
            }
        }
    });
}

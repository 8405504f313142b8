//! File opening: the input is a store file (raw bytes), or patches and a truncation applied to
//! a small valid store built once per process. The store is opened through `Broker` (on an
//! in-memory backend), every stored topic and queue is declared and read through; errors are
//! fine, a panic reaching the caller or a reader that stalls is not.

use std::sync::OnceLock;
use std::time::Duration;

use embus::{Broker, QueueOptions, Record, TopicOptions};

use crate::Shared;


/// Runs one input: its first byte picks raw bytes (bit 0 clear) or patches (bit 0 set).
pub fn run(input: &[u8]) {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        patched(base(), rest)
    };
    open_and_read(&bytes);
}

/// `base` with the patches of `input`: each is a little-endian `u32` offset (modulo the
/// length), a length byte and that many bytes; an offset with its top bit set truncates the
/// file there instead.
pub fn patched(base: &[u8], mut input: &[u8]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    while let Some((head, rest)) = input.split_first_chunk::<5>() {
        let at = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = usize::from(head[4]);
        if bytes.is_empty() {
            break;
        }
        if at & 0x8000_0000 != 0 {
            bytes.truncate((at & 0x7fff_ffff) as usize % bytes.len());
            input = rest;
            continue;
        }
        let at = at as usize % bytes.len();
        let take = len.min(rest.len()).min(bytes.len() - at);
        bytes[at..at + take].copy_from_slice(&rest[..take]);
        input = &rest[len.min(rest.len())..];
    }
    bytes
}

/// Opens `bytes` as a store and reads all of it; panics only on a broken promise.
pub fn open_and_read(bytes: &[u8]) {
    let backend = Shared::with_bytes(bytes);
    let Ok(bus) = Broker::builder()
        .path("fuzz.embus")
        .storage_backend(backend)
        .cache_size(1 << 20)
        .open()
    else {
        return;
    };
    crate::read_through::read_through(&bus);
    let _ = bus.close();
}

/// A small valid store: a keyed, headed topic with a group part way through, a queue with
/// dead letters, and a priority queue holding a delayed record; built once per process.
pub fn base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let backend = Shared::default();
        let bus = Broker::builder()
            .path("fuzz.embus")
            .storage_backend(backend.clone())
            .open()
            .expect("open the base store");
        let topic = bus
            .topic_with::<String>("t", TopicOptions::default().partitions(2))
            .expect("topic");
        let events = topic.producer();
        for i in 0..12 {
            let record = Record::new(format!("event {i}"))
                .key(format!("k{}", i % 3))
                .header("h", [i as u8]);
            events.send_record(record).expect("send");
        }
        let mut member = topic.join_group("g").expect("group");
        for _ in 0..5 {
            member.try_recv().expect("group recv").ack().expect("ack");
        }
        drop(member);
        let queue = bus
            .queue_with::<String>(
                "q",
                QueueOptions::default()
                    .max_deliveries(1)
                    .dead_letter("q.dead"),
            )
            .expect("queue");
        let jobs = queue.producer();
        for i in 0..8 {
            jobs.send(format!("job {i}")).expect("send job");
        }
        let mut worker = queue.consumer();
        for _ in 0..3 {
            worker.try_recv().expect("job").nack().expect("nack");
        }
        worker.try_recv().expect("job").ack().expect("ack");
        drop(worker);
        let urgent = bus
            .queue_with::<String>("p", QueueOptions::default().priorities(3))
            .expect("priority queue");
        urgent
            .producer()
            .send_record(
                Record::new("urgent".to_owned())
                    .priority(2)
                    .ttl(Duration::from_secs(9)),
            )
            .expect("send urgent");
        urgent
            .producer()
            .send_record(Record::new("later".to_owned()).delay(Duration::from_secs(60)))
            .expect("send delayed");
        drop((events, topic, jobs, queue, urgent));
        bus.close().expect("close the base store");
        backend.bytes()
    })
}

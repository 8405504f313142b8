//! Message timestamps: precise by default; from the coarse wall clock with
//! `coarse_timestamps(true)` (never ahead of the send, and mostly behind it), except for a
//! record whose delay, time-to-live or dedupe window counts from its stamp; and a seek by time
//! that misses no message sent at or after its time either way. On topics and queues, in
//! memory and durable.

mod common;

use std::time::{Duration, SystemTime};

use common::{Backend, WAIT, both_backends};
use embus::{Broker, GroupOptions, QueueOptions, Record, Start};

/// How much earlier a seek by time starts with coarse stamps (`Start::Time`'s docs).
const SEEK_MARGIN: Duration = Duration::from_secs(1);

/// Where a message's stamp fell against two reads of the precise clock around its send.
#[derive(Debug)]
struct Stamp {
    before: SystemTime,
    at: SystemTime,
    after: SystemTime,
}

impl Stamp {
    /// Read at the send, never ahead of the time.
    fn within(&self, lag: Duration) -> bool {
        self.before - lag <= self.at && self.at <= self.after
    }
}

/// Sends `n` records made by `record` to a topic and to a queue (with `queue_options`) of
/// `bus`, each between two reads of the precise clock, and receives them.
fn stamps(
    bus: &Broker,
    queue_options: QueueOptions,
    n: u32,
    record: impl Fn(u32) -> Record<u32>,
) -> Vec<Stamp> {
    let topic = bus.topic::<u32>("t").unwrap();
    let queue = bus.queue_with::<u32>("q", queue_options).unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let mut worker = queue.consumer();
    let mut stamps = Vec::new();
    for i in 0..n {
        let before = SystemTime::now();
        topic.producer().send_record(record(i)).unwrap();
        queue.producer().send_record(record(i)).unwrap();
        let after = SystemTime::now();
        let from_topic = sub.recv_timeout(WAIT).unwrap();
        let from_queue = worker.recv_timeout(WAIT).unwrap();
        for at in [from_topic.timestamp(), from_queue.timestamp()] {
            stamps.push(Stamp { before, at, after });
        }
        from_queue.ack().unwrap();
    }
    stamps
}

both_backends!(by_default_a_stamp_is_precise);
fn by_default_a_stamp_is_precise(backend: Backend) {
    let bus = backend.bus();
    for stamp in stamps(&bus, QueueOptions::default(), 100, Record::new) {
        assert!(stamp.within(Duration::ZERO), "{stamp:?}");
    }
}

both_backends!(coarse_timestamps_are_read_from_the_coarse_clock);
fn coarse_timestamps_are_read_from_the_coarse_clock(backend: Backend) {
    let bus = backend.bus_with(Broker::builder().coarse_timestamps(true));
    let stamps = stamps(&bus, QueueOptions::default(), 100, Record::new);
    for stamp in &stamps {
        assert!(stamp.within(SEEK_MARGIN), "{stamp:?}");
    }
    // The coarse clock is what was read: a precise stamp is never behind `before`.
    let behind = stamps.iter().filter(|s| s.at < s.before).count();
    if cfg!(target_os = "linux") {
        assert!(behind > 0, "none of {} behind", stamps.len());
    }
}

both_backends!(a_delay_time_to_live_or_dedupe_window_counts_from_a_precise_stamp);
fn a_delay_time_to_live_or_dedupe_window_counts_from_a_precise_stamp(backend: Backend) {
    let coarse = || backend.bus_with(Broker::builder().coarse_timestamps(true));
    let hour = Duration::from_secs(3600);
    let timed = |i: u32| match i % 3 {
        0 => Record::new(i).delay(Duration::ZERO),
        1 => Record::new(i).ttl(hour),
        _ => Record::new(i).id(format!("m{i}")),
    };
    for stamp in stamps(&coarse(), QueueOptions::default(), 99, timed) {
        assert!(stamp.within(Duration::ZERO), "{stamp:?}");
    }
    // A queue with a time-to-live counts it from every message's stamp.
    let with_ttl = QueueOptions::default().message_ttl(hour);
    let stamps = stamps(&coarse(), with_ttl, 100, Record::new);
    let queued = stamps.iter().skip(1).step_by(2);
    for stamp in queued {
        assert!(stamp.within(Duration::ZERO), "{stamp:?}");
    }
}

both_backends!(a_seek_by_time_misses_no_message_sent_at_or_after_it);
fn a_seek_by_time_misses_no_message_sent_at_or_after_it(backend: Backend) {
    for coarse in [false, true] {
        let bus = backend.bus_with(Broker::builder().coarse_timestamps(coarse));
        let topic = bus.topic::<u32>("t").unwrap();
        let producer = topic.producer();
        for i in 0..backend.scale(200) {
            let time = SystemTime::now();
            producer.send(i).unwrap();
            // A subscriber, or a new group (every other round), starting at the time.
            let mut sub = match i % 2 {
                0 => topic.subscribe(Start::Time(time)).unwrap(),
                _ => {
                    let options = GroupOptions::default().start(Start::Time(time));
                    topic.join_group_with(&format!("g{i}"), options).unwrap()
                }
            };
            let first = sub.try_recv().expect("the message sent after the time");
            if coarse {
                // Earlier ones too, from up to the margin before the time.
                assert!(*first.payload() <= i);
                assert!(first.timestamp() >= time - SEEK_MARGIN, "{i}");
            } else {
                assert_eq!(*first.payload(), i);
            }
        }
    }
}

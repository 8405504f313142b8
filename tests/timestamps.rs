//! Message timestamps: from the coarse wall clock by default (never ahead of the time, behind
//! by less than a kernel tick), to the nanosecond with `precise_timestamps(true)`, and to the
//! nanosecond for a record whose delay or time-to-live counts from its stamp; on topics and
//! queues, in memory and durable.

mod common;

use std::time::{Duration, SystemTime};

use common::{Backend, WAIT, both_backends};
use embus::{Broker, QueueOptions, Record, Start};

/// A kernel tick at 100 Hz, the coarsest Linux runs at: a coarse stamp lags by less.
const TICK: Duration = Duration::from_millis(10);

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

both_backends!(by_default_a_stamp_is_read_from_the_coarse_clock);
fn by_default_a_stamp_is_read_from_the_coarse_clock(backend: Backend) {
    let bus = backend.bus();
    let stamps = stamps(&bus, QueueOptions::default(), 100, Record::new);
    for stamp in &stamps {
        assert!(stamp.within(TICK), "{stamp:?}");
    }
    // The coarse clock is what was read: it lags the precise time except at a tick's instant.
    let behind = stamps.iter().filter(|s| s.at < s.before).count();
    if cfg!(target_os = "linux") {
        assert!(
            behind > stamps.len() / 2,
            "{behind} of {} behind",
            stamps.len()
        );
    }
}

both_backends!(precise_timestamps_stamps_to_the_nanosecond);
fn precise_timestamps_stamps_to_the_nanosecond(backend: Backend) {
    let bus = backend.bus_with(Broker::builder().precise_timestamps(true));
    for stamp in stamps(&bus, QueueOptions::default(), 100, Record::new) {
        assert!(stamp.within(Duration::ZERO), "{stamp:?}");
    }
}

both_backends!(a_delay_or_time_to_live_counts_from_a_precise_stamp);
fn a_delay_or_time_to_live_counts_from_a_precise_stamp(backend: Backend) {
    let bus = backend.bus();
    let hour = Duration::from_secs(3600);
    let timed = |i: u32| match i % 2 {
        0 => Record::new(i).delay(Duration::ZERO),
        _ => Record::new(i).ttl(hour),
    };
    for stamp in stamps(&bus, QueueOptions::default(), 100, timed) {
        assert!(stamp.within(Duration::ZERO), "{stamp:?}");
    }
    // A queue with a time-to-live counts it from every message's stamp.
    let bus = backend.bus();
    let with_ttl = QueueOptions::default().message_ttl(hour);
    let stamps = stamps(&bus, with_ttl, 100, Record::new);
    let queued = stamps.iter().skip(1).step_by(2);
    for stamp in queued {
        assert!(stamp.within(Duration::ZERO), "{stamp:?}");
    }
}

both_backends!(a_seek_by_time_misses_no_message_sent_at_or_after_it);
fn a_seek_by_time_misses_no_message_sent_at_or_after_it(backend: Backend) {
    for precise in [false, true] {
        let bus = backend.bus_with(Broker::builder().precise_timestamps(precise));
        let topic = bus.topic::<u32>("t").unwrap();
        let producer = topic.producer();
        for i in 0..backend.scale(200) {
            let time = SystemTime::now();
            producer.send(i).unwrap();
            let mut sub = topic.subscribe(Start::Time(time)).unwrap();
            let first = sub.try_recv().expect("the message sent after the time");
            // Earlier ones only from within a tick before the time, and none when precise.
            assert!(*first.payload() <= i);
            assert!(first.timestamp() >= time - TICK, "{i}");
            if precise {
                assert_eq!(*first.payload(), i);
            }
        }
    }
}

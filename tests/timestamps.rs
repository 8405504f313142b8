//! Message timestamps on the system clock: coarse by default (the kernel's tick, never ahead of
//! the precise clock), precise on request, and monotone within a partition either way.

mod common;

use std::time::{Duration, SystemTime};

use common::WAIT;
use embus::{Broker, Start};

/// How far behind the precise clock a coarse stamp may be: one kernel tick is 1–10 ms; the
/// bound leaves room for a loaded machine between the two readings.
const SLACK: Duration = Duration::from_secs(1);

#[test]
fn coarse_stamps_are_never_ahead_of_the_clock_and_stay_monotone() {
    let bus = Broker::memory();
    let t = bus.topic::<u32>("t").unwrap();
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    let p = t.producer();
    let mut last = SystemTime::UNIX_EPOCH;
    for i in 0..2_000 {
        let before = SystemTime::now();
        p.send(i).unwrap();
        let after = SystemTime::now();
        let stamp = sub.recv_timeout(WAIT).unwrap().timestamp();
        assert!(
            stamp <= after,
            "stamped {stamp:?}, after the send {after:?}"
        );
        assert!(
            stamp + SLACK >= before,
            "stamped {stamp:?}, before the send {before:?}"
        );
        assert!(
            stamp >= last,
            "timestamps went back: {last:?} then {stamp:?}"
        );
        last = stamp;
    }
}

#[test]
fn precise_timestamps_fall_between_the_readings_around_the_send() {
    let bus = Broker::builder().precise_timestamps(true).open().unwrap();
    let t = bus.topic::<u32>("t").unwrap();
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    for i in 0..100 {
        let before = SystemTime::now();
        t.producer().send(i).unwrap();
        let after = SystemTime::now();
        let stamp = sub.recv_timeout(WAIT).unwrap().timestamp();
        assert!(
            before <= stamp && stamp <= after,
            "stamped {stamp:?}, not within {before:?}..={after:?}"
        );
    }
}

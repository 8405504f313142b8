//! Stored topic records that cannot be read back as the payload type (or fail their checksum)
//! are not lag: the reader gets `RecvError::Undecodable` with the raw bytes and where they
//! are; a subscriber moves past it; a group's position stays before it until the member acks
//! it (dropped unsettled, it comes again), also across a reopen.
//!
//! The store is written with one payload type and read with another that shares its stored
//! name (`BrokerBuilder::payload_name`), in the JSON codec: `Wire::Num(n)` is stored as `n`,
//! which reads back as a `u64`; `Wire::Text("oops")` as `"oops"`, which does not.

mod common;

use std::path::Path;

use embus::codec::CodecKind;
use embus::{Broker, RecvError, RecvTimeoutError, Start, TryRecvError};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Wire {
    Num(u64),
    Text(String),
}

/// Offsets 0..5 of topic `t`: numbers, except offset 1, which is text.
fn write(path: &Path) {
    let bus = Broker::builder()
        .path(path)
        .codec(CodecKind::Json)
        .payload_name::<Wire>("Num")
        .open()
        .unwrap();
    let topic = bus.topic::<Wire>("t").unwrap();
    let sends = [
        Wire::Num(10),
        Wire::Text("oops".to_owned()),
        Wire::Num(12),
        Wire::Num(13),
        Wire::Num(14),
    ];
    topic.producer().send_batch(sends.into()).unwrap();
    drop(topic);
    bus.close().unwrap();
}

fn reopen(path: &Path) -> Broker {
    Broker::builder()
        .path(path)
        .codec(CodecKind::Json)
        .payload_name::<u64>("Num")
        .open()
        .unwrap()
}

#[test]
fn a_subscriber_gets_the_undecodable_record_and_moves_past_it() {
    let dir = common::fresh_dir("undecodable-subscriber");
    let path = dir.join("bus.embus");
    write(&path);
    let bus = reopen(&path);
    let topic = bus.topic::<u64>("t").unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    assert_eq!(*sub.try_recv().unwrap().payload(), 10);
    let u = match sub.try_recv() {
        Err(TryRecvError::Undecodable(u)) => u,
        other => panic!("expected Undecodable, got {other:?}"),
    };
    assert_eq!((u.name.as_str(), u.partition, u.offset), ("t", 0, 1));
    assert_eq!(u.bytes, b"\"oops\"", "the raw payload");
    let text = TryRecvError::Undecodable(u.clone()).to_string();
    assert!(text.contains("`t`") && text.contains("0/1"), "{text}");
    let as_recv = RecvError::Undecodable(u.clone());
    assert_eq!(
        RecvTimeoutError::from(as_recv.clone()),
        RecvTimeoutError::Undecodable(u.clone())
    );
    assert_eq!(
        TryRecvError::from(as_recv),
        TryRecvError::Undecodable(u.clone())
    );
    u.ack().unwrap(); // a no-op for a subscriber
    // `iter` yields it as an error and goes on (here, from a second subscriber).
    let mut again = topic.subscribe(Start::Earliest).unwrap();
    let seen: Vec<Result<u64, u64>> = again
        .try_iter()
        .map(|r| match r {
            Ok(m) => Ok(*m.payload()),
            Err(RecvError::Undecodable(u)) => Err(u.offset),
            Err(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(seen, [Ok(10), Err(1), Ok(12), Ok(13), Ok(14)]);
    let rest: Vec<u64> = sub.try_iter().map(|m| *m.unwrap().payload()).collect();
    assert_eq!(rest, [12, 13, 14]);
    // And so does the blocking `iter`.
    let mut third = topic.subscribe(Start::Earliest).unwrap();
    let seen: Vec<bool> = third.iter().take(5).map(|r| r.is_ok()).collect();
    assert_eq!(seen, [true, false, true, true, true]);
    drop((sub, again, third, topic));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_group_holds_its_position_before_an_undecodable_record_until_it_is_acked() {
    let dir = common::fresh_dir("undecodable-group");
    let path = dir.join("bus.embus");
    write(&path);
    let bus = reopen(&path);
    let topic = bus.topic::<u64>("t").unwrap();
    let mut member = topic.join_group("g").unwrap();
    member.recv_timeout(common::WAIT).unwrap().ack().unwrap();
    let u = match member.recv_timeout(common::WAIT) {
        Err(RecvTimeoutError::Undecodable(u)) => u,
        other => panic!("expected Undecodable, got {other:?}"),
    };
    assert_eq!((u.offset, u.bytes.as_slice()), (1, &b"\"oops\""[..]));
    // Held, it is pending like a delivery: the member goes on, the position stays at 1.
    let m = member.recv_timeout(common::WAIT).unwrap();
    assert_eq!(*m.payload(), 12);
    m.ack().unwrap();
    assert_eq!(topic.group_position("g"), Some(vec![1]));
    // A clone cannot settle it; dropping the original unsettled releases it: it comes again.
    let copy = (*u).clone();
    assert_eq!(copy, *u);
    copy.ack().unwrap();
    assert_eq!(topic.group_position("g"), Some(vec![1]));
    drop(u);
    let u = match member.recv_timeout(common::WAIT) {
        Err(RecvTimeoutError::Undecodable(u)) => u,
        other => panic!("expected Undecodable again, got {other:?}"),
    };
    assert_eq!(u.offset, 1);
    // Still unsettled when the broker closes: a reopened group starts before it.
    drop((u, member, topic));
    bus.close().unwrap();

    let bus = reopen(&path);
    let topic = bus.topic::<u64>("t").unwrap();
    assert_eq!(topic.group_position("g"), Some(vec![1]));
    let mut member = topic.join_group("g").unwrap();
    let u = match member.recv_timeout(common::WAIT) {
        Err(RecvTimeoutError::Undecodable(u)) => u,
        other => panic!("expected Undecodable after the reopen, got {other:?}"),
    };
    // Acked, it is skipped: the position moves past it (to 12: a group stores only its first
    // unacked offset, so 12 comes again after the reopen, at least once).
    u.ack().unwrap();
    assert_eq!(topic.group_position("g"), Some(vec![2]));
    let m = member.recv_timeout(common::WAIT).unwrap();
    assert_eq!(*m.payload(), 12);
    m.ack().unwrap();
    assert_eq!(topic.group_position("g"), Some(vec![3]));
    assert_eq!(*member.recv_timeout(common::WAIT).unwrap().payload(), 13);
    drop((member, topic));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

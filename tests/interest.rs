//! Retention and groups: a group is never skipped by default (producers wait instead), a
//! subscriber can choose its own overflow policy, and retention by interest trims what every
//! group acked.

mod common;

use std::thread;
use std::time::Duration;

use common::waiting::Polled;
use common::{BRIEF, Backend, WAIT, both_backends};
use embus::{
    GroupOptions, Overflow, Retention, SendTimeoutError, Start, SubscribeOptions, TopicOptions,
};

// The scenario: with the default topic options (65,536 messages, `Lag`), a group
// acking each message behind a 100k burst got `Lagged { skipped: 417 }`.
both_backends!(a_group_behind_a_burst_gets_every_message_by_default);
fn a_group_behind_a_burst_gets_every_message_by_default(backend: Backend) {
    let bus = backend.bus();
    let t = bus.topic::<u64>("t").unwrap();
    let n: u64 = backend
        .scale(100_000)
        .max(Retention::DEFAULT_MESSAGES + 1_000);
    let mut member = t.join_group("g").unwrap();
    let producer = t.producer();
    let burst = thread::spawn(move || {
        for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
            producer.send_batch(chunk.to_vec()).unwrap();
        }
    });
    // The group falls a whole retention behind before it reads (without the fix, retention
    // trims past it here).
    let deadline = std::time::Instant::now() + WAIT;
    while t.retained() < Retention::DEFAULT_MESSAGES && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    assert!(
        t.retained() >= Retention::DEFAULT_MESSAGES,
        "the group never fell a retention behind: the test would prove nothing"
    );
    for expected in 0..n {
        match member.recv_timeout(WAIT) {
            Ok(m) => {
                assert_eq!(*m.payload(), expected);
                m.ack().unwrap();
            }
            Err(e) => panic!("message {expected} of {n}: {e:?}"),
        }
    }
    burst.join().unwrap();
    assert!(
        t.retained() <= Retention::DEFAULT_MESSAGES,
        "memory stays bounded"
    );
}

both_backends!(a_group_that_opts_into_lag_is_skipped);
fn a_group_that_opts_into_lag_is_skipped(backend: Backend) {
    let bus = backend.bus();
    let opts = TopicOptions::default().retention(Retention::messages(4));
    let t = bus.topic_with::<u32>("t", opts).unwrap();
    let lag = GroupOptions::default().overflow(Overflow::Lag);
    let mut member = t.join_group_with("g", lag).unwrap();
    t.producer().send_batch((0..10).collect()).unwrap(); // never waits for `g`
    match member.recv_timeout(WAIT) {
        Err(embus::RecvTimeoutError::Lagged { skipped }) => assert_eq!(skipped, 6),
        other => panic!("expected Lagged, got {other:?}"),
    }
}

both_backends!(a_memberless_group_holds_producers_until_it_is_deleted);
fn a_memberless_group_holds_producers_until_it_is_deleted(backend: Backend) {
    let bus = backend.bus();
    let opts = TopicOptions::default().retention(Retention::messages(3));
    let t = bus.topic_with::<u32>("t", opts).unwrap();
    drop(t.join_group("forgotten").unwrap());
    let p = t.producer();
    p.send_batch(vec![0, 1, 2]).unwrap();
    assert!(matches!(
        p.send_timeout(3, BRIEF),
        Err(SendTimeoutError::Timeout(3))
    ));
    let blocked = Polled::waiting(p.send_async(3));
    t.delete_group("forgotten").unwrap();
    blocked.woken().unwrap();
}

both_backends!(a_lag_subscriber_on_a_block_topic_does_not_stall_producers);
fn a_lag_subscriber_on_a_block_topic_does_not_stall_producers(backend: Backend) {
    let bus = backend.bus();
    let opts = TopicOptions::default()
        .retention(Retention::messages(2))
        .overflow(Overflow::Block);
    let t = bus.topic_with::<u32>("t", opts).unwrap();
    let lag = SubscribeOptions::default().overflow(Overflow::Lag);
    let mut audit = t.subscribe_with(Start::Earliest, lag).unwrap();
    let p = t.producer();
    for i in 0..5 {
        p.send_timeout(i, WAIT).unwrap();
    }
    assert!(matches!(
        audit.recv_timeout(WAIT),
        Err(embus::RecvTimeoutError::Lagged { skipped: 3 })
    ));
    // A default subscriber on the same topic blocks producers.
    let mut strict = t.subscribe(Start::Latest).unwrap();
    p.send_batch(vec![5, 6]).unwrap();
    assert!(matches!(
        p.send_timeout(7, BRIEF),
        Err(SendTimeoutError::Timeout(7))
    ));
    assert_eq!(*strict.recv_timeout(WAIT).unwrap().payload(), 5);
    p.send_timeout(7, WAIT).unwrap();
    // And a `Block` subscriber on a `Lag` topic holds it.
    let lag_topic = bus
        .topic_with::<u32>(
            "l",
            TopicOptions::default().retention(Retention::messages(2)),
        )
        .unwrap();
    let block = SubscribeOptions::default().overflow(Overflow::Block);
    let _strict = lag_topic.subscribe_with(Start::Earliest, block).unwrap();
    lag_topic.producer().send_batch(vec![0, 1]).unwrap();
    assert!(lag_topic.producer().send_timeout(2, BRIEF).is_err());
}

both_backends!(retention_by_interest_trims_what_every_group_acked);
fn retention_by_interest_trims_what_every_group_acked(backend: Backend) {
    let bus = backend.bus();
    let opts = TopicOptions::default().retention_by_interest(true);
    let t = bus.topic_with::<u32>("t", opts).unwrap();
    t.producer().send_batch(vec![0, 1]).unwrap();
    assert_eq!(
        t.retained(),
        2,
        "without a group, nothing is trimmed by interest"
    );
    let mut a = t.join_group("a").unwrap();
    let mut b = t.join_group("b").unwrap();
    common::take(&mut a, 2);
    assert_eq!(t.retained(), 2, "`b` has not acked them");
    common::take(&mut b, 1);
    assert_eq!(t.offsets(0), Some(1..2));
    common::take(&mut b, 1);
    assert_eq!(t.retained(), 0);
    // A plain subscriber expresses no interest: it lags.
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    t.producer().send(2).unwrap();
    common::take(&mut a, 1);
    common::take(&mut b, 1);
    assert!(matches!(
        sub.recv_timeout(WAIT),
        Err(embus::RecvTimeoutError::Lagged { skipped: 1 })
    ));
    // Deleting the last group that held a message lets it go.
    t.producer().send(3).unwrap();
    common::take(&mut a, 1);
    drop(b);
    assert_eq!(t.retained(), 1);
    t.delete_group("b").unwrap();
    assert_eq!(t.retained(), 0);
}

#[test]
fn retention_by_interest_survives_a_reopen() {
    let path = common::fresh_dir("interest-reopen").join("bus.embus");
    let opts = TopicOptions::default().retention_by_interest(true);
    {
        let bus = embus::Broker::open(&path).unwrap();
        let t = bus.topic_with::<u32>("t", opts).unwrap();
        let mut g = t.join_group("g").unwrap();
        t.producer().send_batch(vec![0, 1, 2]).unwrap();
        common::take(&mut g, 2);
        assert_eq!(t.retained(), 1);
        bus.close().unwrap();
    }
    let bus = embus::Broker::open(&path).unwrap();
    let t = bus.topic::<u32>("t").unwrap();
    assert!(t.options().is_retention_by_interest());
    assert_eq!(t.offsets(0), Some(2..3));
    let mut g = t.join_group("g").unwrap();
    assert_eq!(common::take(&mut g, 1), [2]);
    assert_eq!(t.retained(), 0);
    bus.close().unwrap();
}

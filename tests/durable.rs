//! Durable mode: what survives a reopen, integrity errors, poisoning.

mod common;

use std::time::Duration;

use embus::{Broker, Error, GroupOptions, Overflow, QueueOptions, Retention, Start, TopicOptions};

#[test]
fn topic_messages_options_and_group_positions_survive_a_reopen() {
    let path = common::fresh_dir("topic-reopen").join("bus.embus");
    let options = TopicOptions::default()
        .partitions(2)
        .retention(Retention::messages(1000));
    {
        let bus = Broker::open(&path).unwrap();
        let t = bus.topic_with::<String>("orders", options).unwrap();
        let p = t.producer();
        for i in 0..10 {
            p.send_record(embus::Record::new(format!("o{i}")).key(format!("k{}", i % 3)))
                .unwrap();
        }
        let mut g = t.join_group("billing").unwrap();
        common::take(&mut g, 4);
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let t = bus.topic::<String>("orders").unwrap();
    assert_eq!(t.options(), options, "options come back with `topic`");
    assert_eq!(t.retained(), 10);
    let mut all = t.subscribe(Start::Earliest).unwrap();
    let mut seen = common::take(&mut all, 10);
    seen.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("o{i}")).collect();
    expected.sort();
    assert_eq!(seen, expected);
    let positions = t.group_position("billing").unwrap();
    assert_eq!(
        positions.iter().sum::<u64>(),
        4,
        "4 acked before the reopen"
    );
    let mut g = t.join_group("billing").unwrap();
    common::take(&mut g, 6);
    let extra = g
        .try_recv()
        .map(|m| (m.partition(), m.offset(), m.payload().clone()));
    assert!(
        extra.is_err(),
        "the acked 4 are not redelivered: {extra:?} {:?}",
        t.group_position("billing")
    );
    // New sends continue the offsets.
    let ends: Vec<u64> = (0..2).map(|p| t.offsets(p).unwrap().end).collect();
    assert_eq!(ends.iter().sum::<u64>(), 10);
    let r = t.producer().send("new".to_string()).unwrap();
    assert_eq!(r.offset, ends[r.partition as usize]);
    bus.close().unwrap();
}

#[test]
fn queue_contents_delivery_counts_and_dead_letters_survive_a_reopen() {
    let path = common::fresh_dir("queue-reopen").join("bus.embus");
    let options = QueueOptions::default()
        .max_deliveries(2)
        .dead_letter("jobs.dead");
    {
        let bus = Broker::open(&path).unwrap();
        let q = bus.queue_with::<u32>("jobs", options.clone()).unwrap();
        let p = q.producer();
        for i in 0..5 {
            p.send(i).unwrap();
        }
        let mut c = q.consumer();
        c.recv_timeout(common::WAIT).unwrap().ack().unwrap(); // 0 done
        c.recv_timeout(common::WAIT).unwrap().nack().unwrap(); // 1: first delivery failed
        c.recv_timeout(common::WAIT).unwrap().nack().unwrap(); // 1 again: dead
        let in_flight = c.recv_timeout(common::WAIT).unwrap(); // 2, held at the crash
        assert_eq!(*in_flight.payload(), 2);
        std::mem::forget(in_flight);
        std::mem::forget(c); // as if the process died: nothing released
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let q = bus.queue::<u32>("jobs").unwrap();
    assert_eq!(q.options(), &options);
    assert_eq!(q.len(), 3, "2 (was in flight), 3 and 4");
    let mut c = q.consumer();
    let first = c.recv_timeout(common::WAIT).unwrap();
    assert_eq!((*first.payload(), first.delivery_count()), (2, 2));
    first.ack().unwrap();
    let dead = bus.queue::<u32>("jobs.dead").unwrap();
    let mut letters = dead.consumer();
    let d = letters.recv_timeout(common::WAIT).unwrap();
    assert_eq!(*d.payload(), 1);
    assert_eq!(
        d.headers().get(embus::DEAD_LETTER_REASON),
        Some(&b"nack"[..])
    );
    d.ack().unwrap();
    bus.close().unwrap();
}

#[test]
fn a_stored_declaration_is_checked_on_reopen() {
    let path = common::fresh_dir("declaration").join("bus.embus");
    {
        let bus = Broker::open(&path).unwrap();
        bus.topic::<u64>("ticks").unwrap();
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    assert!(matches!(
        bus.topic::<String>("ticks"),
        Err(Error::Mismatch { .. })
    ));
    assert!(matches!(
        bus.queue::<u64>("ticks"),
        Err(Error::Mismatch { .. })
    ));
    let other = TopicOptions::default().partitions(3);
    assert!(matches!(
        bus.topic_with::<u64>("ticks", other),
        Err(Error::Mismatch { .. })
    ));
    bus.topic::<u64>("ticks").unwrap();
}

#[test]
fn retention_trims_the_file_and_it_stops_growing() {
    let path = common::fresh_dir("retention").join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    let t = bus
        .topic_with::<Vec<u8>>(
            "t",
            TopicOptions::default().retention(Retention::messages(100)),
        )
        .unwrap();
    let p = t.producer();
    let mut sizes = Vec::new();
    for round in 0..6 {
        p.send_batch((0..2000).map(|_| vec![round as u8; 200]).collect())
            .unwrap();
        bus.topic::<Vec<u8>>("t").unwrap();
        sizes.push(std::fs::metadata(&path).unwrap().len());
    }
    assert_eq!(t.retained(), 100);
    assert!(
        sizes[5] <= sizes[1] + sizes[1] / 5,
        "the file keeps growing under steady churn: {sizes:?}"
    );
    bus.close().unwrap();
    let bus = Broker::open(&path).unwrap();
    assert_eq!(bus.topic::<Vec<u8>>("t").unwrap().retained(), 100);
}

#[test]
fn a_garbage_file_is_a_clear_error_naming_the_path() {
    let path = common::fresh_dir("garbage").join("bus.embus");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    let err = Broker::open(&path).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { .. } | Error::Storage { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("bus.embus"), "{err}");
}

#[test]
fn a_second_broker_on_the_same_file_is_refused() {
    let path = common::fresh_dir("twice").join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    let err = Broker::open(&path).unwrap_err();
    assert!(err.to_string().contains("bus.embus"), "{err}");
    bus.close().unwrap();
    Broker::open(&path).unwrap().close().unwrap();
}

#[test]
fn interval_mode_acknowledges_before_the_commit_and_consumers_see_it_after() {
    let path = common::fresh_dir("interval").join("bus.embus");
    let bus = Broker::builder()
        .path(&path)
        .durability(embus::Durability::Interval(Duration::from_millis(5)))
        .open()
        .unwrap();
    let q = bus.queue::<u32>("q").unwrap();
    for i in 0..100 {
        q.producer().send(i).unwrap();
    }
    let mut c = q.consumer();
    assert_eq!(common::take(&mut c, 100), (0..100).collect::<Vec<_>>());
    bus.close().unwrap();
}

#[test]
fn a_slow_reader_far_behind_the_memory_tail_reads_from_the_store_without_lag() {
    let path = common::fresh_dir("cold-reader").join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    let t = bus
        .topic_with::<u64>(
            "t",
            TopicOptions::default().retention(Retention::messages(1 << 20)),
        )
        .unwrap();
    let mut slow = t.subscribe(Start::Earliest).unwrap();
    let mut group = t.join_group("g").unwrap();
    let n = 30_000u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        t.producer().send_batch(chunk.to_vec()).unwrap();
    }
    for expected in 0..n {
        let m = slow.recv_timeout(common::WAIT).unwrap();
        assert_eq!((m.offset(), *m.payload()), (expected, expected));
    }
    // Without waiting, from an offset that is not a chunk's first: the last chunk read back
    // ends where memory begins, short, and a reader holding it must not take its empty slots
    // for the end of the log.
    let mut polled = t.subscribe(Start::Offset(5)).unwrap();
    for expected in 5..n {
        let m = polled.try_recv().unwrap();
        assert_eq!((m.offset(), *m.payload()), (expected, expected));
    }
    assert!(polled.try_recv().is_err(), "all {n} read");
    for expected in 0..n {
        let m = group.recv_timeout(common::WAIT).unwrap();
        assert_eq!((m.offset(), *m.payload()), (expected, expected));
        m.ack().unwrap();
    }
    // A reader from a time or offset in the stored part finds its place too.
    let mut late = t.subscribe(Start::Offset(123)).unwrap();
    assert_eq!(*late.recv_timeout(common::WAIT).unwrap().payload(), 123);
    bus.close().unwrap();
}

#[test]
fn send_async_waits_for_the_commit_without_blocking_and_survives_a_reopen() {
    let path = common::fresh_dir("async").join("bus.embus");
    {
        let bus = Broker::open(&path).unwrap();
        let t = bus.topic::<u32>("t").unwrap();
        let q = bus.queue::<u32>("q").unwrap();
        let (tp, qp) = (t.producer(), q.producer());
        futures::executor::block_on(async {
            for i in 0..20 {
                let (a, b) = futures::join!(tp.send_async(i), qp.send_async(i));
                assert_eq!(a.unwrap().offset, u64::from(i));
                assert_eq!(b.unwrap().offset, u64::from(i));
            }
        });
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    assert_eq!(bus.topic::<u32>("t").unwrap().retained(), 20);
    assert_eq!(bus.queue::<u32>("q").unwrap().len(), 20);
}

#[test]
fn a_send_async_dropped_while_its_commit_is_pending_is_still_delivered() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let path = common::fresh_dir("async-drop").join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    let q = bus.queue::<u32>("q").unwrap();
    let producer = q.producer();
    let mut fut = producer.send_async(7);
    let mut cx = Context::from_waker(Waker::noop());
    // Usually `Pending` (staged, the fsync still running); a fast disk may finish first.
    if let Poll::Ready(sent) = std::pin::Pin::new(&mut fut).poll(&mut cx) {
        sent.unwrap();
    }
    drop(fut);
    let mut consumer = q.consumer();
    let m = consumer.recv_timeout(common::WAIT).unwrap();
    assert_eq!(*m.payload(), 7);
    m.ack().unwrap();
    bus.close().unwrap();
}

#[test]
fn a_new_store_appears_only_once_created_and_a_crashed_creation_is_ignored() {
    let dir = common::fresh_dir("creating");
    let path = dir.join("bus.embus");
    // What a crash in the middle of creating leaves behind: a partial file under the
    // temporary name, never at `path`.
    std::fs::write(dir.join("bus.embus.creating"), b"half a header").unwrap();
    let bus = Broker::open(&path).unwrap();
    assert!(path.exists());
    assert!(!dir.join("bus.embus.creating").exists());
    bus.queue::<u8>("q").unwrap().producer().send(1).unwrap();
    bus.close().unwrap();
    let bus = Broker::open(&path).unwrap();
    assert_eq!(bus.queue::<u8>("q").unwrap().len(), 1);
}

#[test]
fn a_new_group_position_is_stored_before_it_moves() {
    let path = common::fresh_dir("group-latest").join("bus.embus");
    let options = TopicOptions::default().partitions(2);
    {
        let bus = Broker::open(&path).unwrap();
        let t = bus.topic_with::<u32>("t", options).unwrap();
        t.producer().send_batch((0..10).collect()).unwrap(); // history
        let g = t
            .join_group_with("g", GroupOptions::default().start(Start::Latest))
            .unwrap();
        t.producer().send_batch((10..16).collect()).unwrap();
        drop(g); // left before reading anything
        bus.close().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let t = bus.topic_with::<u32>("t", options).unwrap();
    let mut g = t
        .join_group_with("g", GroupOptions::default().start(Start::Latest))
        .unwrap();
    let mut got = common::take(&mut g, 6);
    got.sort_unstable();
    assert_eq!(
        got,
        (10..16).collect::<Vec<_>>(),
        "the sends after joining, not history"
    );
    assert!(g.try_recv().is_err());
}

#[test]
fn wait_idle_waits_for_sends_not_yet_stored() {
    let path = common::fresh_dir("idle-staged").join("bus.embus");
    let bus = Broker::builder()
        .path(&path)
        .durability(embus::Durability::Interval(Duration::from_secs(3600)))
        .open()
        .unwrap();
    let q = bus.queue::<u32>("q").unwrap();
    q.producer().send(1).unwrap(); // acknowledged, committed within the hour
    assert!(matches!(
        bus.wait_idle(Duration::ZERO),
        Err(Error::NotIdle { .. })
    ));
    bus.close().unwrap();
    let bus = Broker::open(&path).unwrap();
    assert_eq!(
        bus.queue::<u32>("q").unwrap().len(),
        1,
        "close committed it"
    );
}

#[test]
fn a_damaged_queue_message_is_reported_and_the_rest_delivered() {
    use embus::redb::{ReadableTable, TableDefinition};
    let path = common::fresh_dir("queue-damage").join("bus.embus");
    {
        let bus = Broker::open(&path).unwrap();
        let q = bus.queue::<String>("q").unwrap();
        for i in 0..5 {
            q.producer().send(format!("job-{i}")).unwrap();
        }
        bus.close().unwrap();
    }
    {
        let db = embus::redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn
                .open_table(TableDefinition::<u64, &[u8]>::new("embus.q.q"))
                .unwrap();
            let mut value = table.get(2).unwrap().unwrap().value().to_vec();
            let last = value.len() - 1;
            value[last] ^= 0x01; // one bit of the payload
            table.insert(2, value.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let bus = Broker::open(&path).unwrap();
    let q = bus.queue::<String>("q").unwrap();
    assert_eq!(q.undecodable().len(), 1);
    assert_eq!(q.undecodable()[0].offset, 2);
    assert!(!q.undecodable()[0].bytes.is_empty());
    let mut c = q.consumer();
    let got = common::take(&mut c, 4);
    assert_eq!(got, ["job-0", "job-1", "job-3", "job-4"]);
    assert!(c.try_recv().is_err());
}

#[test]
fn seeking_by_time_into_the_stored_part_keeps_byte_retention_exact() {
    let path = common::fresh_dir("seek-bytes").join("bus.embus");
    let clock = embus::ManualClock::new();
    // 99 bytes encode to 100 (a one-byte length): 20 fit in 2000.
    let options = TopicOptions::default().retention(Retention::bytes(2000));
    let mut times = Vec::new();
    {
        let bus = Broker::builder()
            .path(&path)
            .clock(clock.clone())
            .open()
            .unwrap();
        let t = bus.topic_with::<Vec<u8>>("t", options).unwrap();
        for i in 0..20u8 {
            clock.advance(Duration::from_secs(1));
            times.push(clock.now());
            t.producer().send(vec![i; 99]).unwrap();
        }
        assert_eq!(t.retained(), 20);
        bus.close().unwrap();
    }
    let bus = Broker::builder()
        .path(&path)
        .clock(clock.clone())
        .open()
        .unwrap();
    let t = bus.topic_with::<Vec<u8>>("t", options).unwrap();
    let mut mid = t.subscribe(Start::Time(times[10])).unwrap();
    assert_eq!(mid.recv_timeout(common::WAIT).unwrap().payload()[0], 10);
    clock.advance(Duration::from_secs(1));
    t.producer().send(vec![20; 99]).unwrap();
    assert_eq!(t.retained(), 20, "one in, one out");
    assert_eq!(t.offsets(0), Some(1..21));
}

/// Found by the model (`tests/model/regressions.rs`): when retention trimmed only messages a
/// member held, the group moved past them (nothing to report skipped) but the new position
/// was not stored, so a clean reopen went back and redelivered an acked message.
#[test]
fn a_position_moved_past_held_trimmed_messages_survives_a_reopen() {
    let dir = common::fresh_dir("durable-held-trimmed");
    let path = dir.join("store.embus");
    let options = TopicOptions::default()
        .partitions(1)
        .retention(Retention::messages(2))
        .overflow(Overflow::Lag);
    let bus = Broker::open(&path).unwrap();
    let topic = bus.topic_with::<u64>("events", options).unwrap();
    let group = GroupOptions::default().overflow(Overflow::Lag);
    let mut member = topic.join_group_with("g", group.clone()).unwrap();
    topic.producer().send_batch(vec![0, 1]).unwrap();
    let held = member.try_recv().unwrap();
    member.try_recv().unwrap().ack().unwrap(); // offset 1; the group stays at 0
    topic.producer().send(2).unwrap(); // trims offset 0, still held
    let next = member.try_recv().unwrap();
    assert_eq!(
        next.offset(),
        2,
        "the held trimmed message is not reported skipped"
    );
    assert_eq!(topic.group_position("g"), Some(vec![2]));
    drop((held, next, member));
    bus.close().unwrap();

    let bus = Broker::open(&path).unwrap();
    let topic = bus.topic_with::<u64>("events", options).unwrap();
    assert_eq!(
        topic.group_position("g"),
        Some(vec![2]),
        "the reopened group went back before an acked message"
    );
    let mut member = topic.join_group_with("g", group).unwrap();
    assert_eq!(member.try_recv().unwrap().offset(), 2);
    drop(member);
    bus.close().unwrap();
}

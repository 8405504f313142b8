//! `Broker::stats`: every figure against what the test did, on a manual clock (rates, ages),
//! in memory and durable mode, and a poisoned store.

mod common;

use std::time::Duration;

use common::faulty::{Faults, Mode, faulty_builder};
use embus::{
    Broker, GroupOptions, ManualClock, QueueOptions, Record, Retention, Start, SubscribeOptions,
    TopicOptions,
};

fn on_clock() -> (ManualClock, Broker) {
    let clock = ManualClock::new();
    let bus = Broker::builder().clock(clock.clone()).open().unwrap();
    (clock, bus)
}

#[test]
fn partitions_show_offsets_messages_and_append_rate() {
    let (clock, bus) = on_clock();
    let topic = bus
        .topic_with::<u32>(
            "orders",
            TopicOptions::default()
                .partitions(2)
                .retention(Retention::messages(30)),
        )
        .unwrap();
    let producer = topic.producer();
    for i in 0..40 {
        producer
            .send_record(Record::new(i).key(if i % 2 == 0 { "a" } else { "b" }))
            .unwrap();
    }
    clock.advance(Duration::from_secs(10));
    let stats = bus.stats();
    let orders = stats.topic("orders").unwrap();
    assert_eq!(orders.partitions.len(), 2);
    let mut appended = 0;
    for (p, partition) in orders.partitions.iter().enumerate() {
        let range = topic.offsets(p as u32).unwrap();
        assert_eq!(partition.partition, p as u32);
        assert_eq!(partition.earliest..partition.next, range);
        assert_eq!(partition.messages, range.end - range.start);
        assert_eq!(partition.appended, range.end, "appended since declared");
        assert_eq!(
            partition.bytes, None,
            "no byte limit: bytes are not counted"
        );
        let rate = partition.next as f64 / 10.0;
        assert!((partition.append_rate - rate).abs() < 1e-9, "{partition:?}");
        appended += partition.appended;
    }
    assert_eq!(appended, 40);
    assert_eq!(orders.messages(), topic.retained());
    assert_eq!(stats.at, clock_now(&clock));
    assert!(stats.store.is_none(), "memory mode has no store figures");
}

fn clock_now(clock: &ManualClock) -> u64 {
    let since = clock.now().duration_since(std::time::UNIX_EPOCH).unwrap();
    u64::try_from(since.as_nanos()).unwrap()
}

#[test]
fn bytes_are_counted_under_a_byte_limit() {
    let bus = Broker::memory();
    let topic = bus
        .topic_with::<String>(
            "logs",
            TopicOptions::default().retention(Retention::bytes(1 << 20)),
        )
        .unwrap();
    topic
        .producer()
        .send_record(Record::new("hello".to_owned()).key("k").header("h", b"vv"))
        .unwrap();
    let stats = bus.stats();
    let bytes = stats.topic("logs").unwrap().partitions[0].bytes.unwrap();
    // The payload as encoded (a length byte and five), the key, the header's name and value.
    assert_eq!(bytes, 6 + 1 + 1 + 2);
}

#[test]
fn groups_show_members_assignment_positions_lag_and_redeliveries() {
    let (_clock, bus) = on_clock();
    let topic = bus
        .topic_with::<u32>("orders", TopicOptions::default().partitions(2))
        .unwrap();
    let producer = topic.producer();
    for i in 0..10 {
        producer
            .send_record(Record::new(i).key(if i < 6 { "a" } else { "b" }))
            .unwrap();
    }
    let mut one = topic.join_group("billing").unwrap();
    // Alone, it owns both partitions: take three, ack one, nack one, hold one.
    let first = one.recv().unwrap();
    let second = one.recv().unwrap();
    let third = one.recv().unwrap();
    first.ack().unwrap();
    second.nack().unwrap();
    let again = one.recv().unwrap();
    assert_eq!(again.delivery_count(), 2);

    let stats = bus.stats();
    let group = stats.topic("orders").unwrap().group("billing").unwrap();
    assert_eq!(group.members.len(), 1);
    let member = group.members[0];
    let positions = topic.group_position("billing").unwrap();
    for (p, part) in group.partitions.iter().enumerate() {
        assert_eq!(part.partition, p as u32);
        assert_eq!(part.owner, Some(member));
        assert_eq!(part.position, positions[p]);
        let next = topic.offsets(p as u32).unwrap().end;
        assert_eq!(part.lag, next - positions[p]);
    }
    assert_eq!(group.lag, 9, "ten sent, one acked");
    assert_eq!(group.in_flight, 2, "the third and the redelivered second");
    assert_eq!(group.redelivered, 1);
    assert_eq!(group.dead_lettered, 0);

    // A second member takes one partition over.
    let two = topic.join_group("billing").unwrap();
    let stats = bus.stats();
    let group = stats.topic("orders").unwrap().group("billing").unwrap();
    assert_eq!(group.members.len(), 2);
    let mut owners: Vec<u64> = group.partitions.iter().filter_map(|p| p.owner).collect();
    owners.sort_unstable();
    let mut members = group.members.clone();
    members.sort_unstable();
    assert_eq!(owners, members, "each member owns one partition");
    drop((third, again, two));
}

#[test]
fn a_group_counts_its_dead_letters() {
    let (clock, bus) = on_clock();
    let topic = bus.topic::<u32>("orders").unwrap();
    topic.producer().send(1).unwrap();
    let options = GroupOptions::default()
        .max_deliveries(1)
        .dead_letter("orders.dead");
    let mut member = topic.join_group_with("billing", options).unwrap();
    member.recv().unwrap().nack().unwrap();
    clock.advance(Duration::from_secs(1));
    let stats = bus.stats();
    let group = stats.topic("orders").unwrap().group("billing").unwrap();
    assert_eq!((group.dead_lettered, group.lag, group.in_flight), (1, 0, 0));
    assert_eq!(stats.queue("orders.dead").unwrap().ready, 1);
}

#[test]
fn subscribers_show_their_lag() {
    let bus = Broker::memory();
    let topic = bus
        .topic_with::<u32>("orders", TopicOptions::default().partitions(3))
        .unwrap();
    let producer = topic.producer();
    producer.send_batch((0..12).collect()).unwrap();
    let mut early = topic.subscribe(Start::Earliest).unwrap();
    let late = topic
        .subscribe_with(
            Start::Latest,
            SubscribeOptions::default().overflow(embus::Overflow::Block),
        )
        .unwrap();
    for _ in 0..5 {
        early.recv().unwrap();
    }
    producer.send(99).unwrap();
    let stats = bus.stats();
    let subscribers = &stats.topic("orders").unwrap().subscribers;
    assert_eq!(subscribers.len(), 2);
    assert!(subscribers[0].id < subscribers[1].id, "oldest first");
    assert_eq!(subscribers[0].lag, 13 - 5);
    assert_eq!(subscribers[0].lag, early.lag());
    assert_eq!(subscribers[1].lag, 1);
    assert!(!subscribers[0].blocks && subscribers[1].blocks);
    drop(early);
    assert_eq!(bus.stats().topic("orders").unwrap().subscribers.len(), 1);
    drop(late);
}

#[test]
fn queues_show_depth_in_flight_delays_dead_letters_age_and_rates() {
    let (clock, bus) = on_clock();
    let jobs = bus
        .queue_with::<u32>(
            "jobs",
            QueueOptions::default()
                .max_deliveries(2)
                .dead_letter("jobs.dead")
                .capacity(100),
        )
        .unwrap();
    let producer = jobs.producer();
    producer.send_batch((0..6).collect()).unwrap();
    producer
        .send_record(Record::new(50).delay(Duration::from_secs(60)))
        .unwrap();
    clock.advance(Duration::from_secs(4));
    let mut worker = jobs.consumer();
    worker.recv().unwrap().ack().unwrap();
    worker.recv().unwrap().ack().unwrap();
    worker.recv().unwrap().nack().unwrap(); // back in front
    let held = worker.recv().unwrap(); // the nacked one, again
    assert_eq!(held.delivery_count(), 2);
    held.nack().unwrap(); // its second delivery: dead-lettered
    let holding = worker.recv().unwrap();
    clock.advance(Duration::from_secs(6));

    let stats = bus.stats();
    let q = stats.queue("jobs").unwrap();
    assert_eq!(q.ready, 2, "{q:?}");
    assert_eq!(q.in_flight, 1);
    assert_eq!(q.delayed, 1);
    assert_eq!(q.dead_lettered, 1);
    assert_eq!((q.acked, q.nacked), (2, 2));
    assert_eq!(q.oldest_ready_age, Some(Duration::from_secs(10)));
    assert!((q.ack_rate - 0.2).abs() < 1e-9, "{}", q.ack_rate);
    assert!((q.nack_rate - 0.2).abs() < 1e-9, "{}", q.nack_rate);
    assert_eq!((q.consumers, q.capacity), (1, 100));
    assert_eq!(q.ready, jobs.len() as u64);
    assert_eq!(q.in_flight, jobs.in_flight() as u64);
    let dead = stats.queue("jobs.dead").unwrap();
    assert_eq!((dead.ready, dead.consumers), (1, 0));
    assert_eq!(
        stats
            .queues
            .iter()
            .map(|q| q.name.as_str())
            .collect::<Vec<_>>(),
        ["jobs", "jobs.dead"],
        "sorted by name"
    );
    holding.ack().unwrap();
    worker.recv().unwrap().ack().unwrap();
    worker.recv().unwrap().ack().unwrap();
    let q = bus.stats().queue("jobs").unwrap().clone();
    assert_eq!((q.ready, q.in_flight, q.oldest_ready_age), (0, 0, None));
}

#[test]
fn a_snapshot_prints_as_json() {
    let bus = Broker::memory();
    bus.topic::<u32>("orders")
        .unwrap()
        .producer()
        .send(1)
        .unwrap();
    bus.queue::<u32>("jobs").unwrap();
    let json: serde_json::Value = serde_json::to_value(bus.stats()).unwrap();
    assert_eq!(json["topics"][0]["name"], "orders");
    assert_eq!(json["topics"][0]["partitions"][0]["next"], 1);
    assert_eq!(json["queues"][0]["name"], "jobs");
    assert!(json["queues"][0]["oldest_ready_age"].is_null());
    assert!(json["store"].is_null());
}

#[test]
fn a_durable_store_shows_its_commits() {
    let dir = common::fresh_dir("stats-durable");
    let path = dir.join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    let topic = bus.topic::<u32>("orders").unwrap();
    let producer = topic.producer();
    for i in 0..5 {
        producer.send(i).unwrap();
    }
    producer.send_batch((0..10).collect()).unwrap();
    let store = bus.stats().store.unwrap();
    assert_eq!(store.path, path);
    assert!(store.file_bytes.unwrap() > 0);
    assert_eq!(store.records, 15);
    // The declaration may ride a commit of its own; every send waited for its own.
    assert!((6..=7).contains(&store.commits), "{store:?}");
    assert!(store.records_per_commit > 2.0, "{store:?}");
    let (p50, p99) = (store.commit_p50.unwrap(), store.commit_p99.unwrap());
    assert!(p50 <= p99 && p99 > Duration::ZERO, "{p50:?} {p99:?}");
    assert_eq!(store.poisoned, None);
    drop((topic, producer));
    bus.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_poisoned_store_says_why() {
    let dir = common::fresh_dir("stats-poisoned");
    let path = dir.join("bus.embus");
    let faults = Faults::new(Mode::Sticky);
    let bus = faulty_builder(&path, &faults).open().unwrap();
    let producer = bus.queue::<u32>("jobs").unwrap().producer();
    producer.send(1).unwrap();
    faults.arm(1);
    assert!(producer.send(2).is_err());
    let store = bus.stats().store.unwrap();
    let why = store.poisoned.unwrap();
    assert!(why.contains("injected"), "{why}");
    assert_eq!(store.records, 1, "the failed commit is not counted");
    drop(producer);
    let _ = bus.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_closed_broker_lists_nothing() {
    let bus = Broker::memory();
    bus.topic::<u32>("orders").unwrap();
    let handle = bus.clone();
    bus.close().unwrap();
    let stats = handle.stats();
    assert!(stats.topics.is_empty() && stats.queues.is_empty());
}

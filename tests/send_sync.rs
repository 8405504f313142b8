//! Handles are `Clone + Send + Sync`, consumers and messages are `Send`, and memory mode shares payloads (one allocation, never serialized or cloned) between subscribers.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::WAIT;
use embus::{
    Broker, Consumer, ManualClock, Message, Overflow, Producer, Queue, QueueOptions, Record,
    Retention, Start, Topic, TopicOptions,
};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

fn assert_clone_send_sync<T: Clone + Send + Sync + 'static>() {}
fn assert_send<T: Send + 'static>() {}
fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}

// Checked at compile time: the test binary does not build if a bound is lost.
const _: () = {
    let _ = assert_clone_send_sync::<Broker>;
    let _ = assert_clone_send_sync::<Topic<u64>>;
    let _ = assert_clone_send_sync::<Queue<u64>>;
    let _ = assert_clone_send_sync::<Producer<u64>>;
    let _ = assert_send::<Consumer<u64>>;
    let _ = assert_send::<Message<u64>>;
    let _ = assert_send::<Record<u64>>;
    let _ = assert_send::<embus::Transaction>;
    // Errors go into `Box<dyn Error + Send + Sync>` (and `anyhow::Error`).
    let _ = assert_error::<embus::CommitError>;
    let _ = assert_error::<embus::AckError<u64>>;
    let _ = assert_clone_send_sync::<ManualClock>;
};

#[test]
fn handles_cross_threads() {
    let bus = Broker::memory();
    let topic = bus.topic::<u64>("t").unwrap();
    let queue = bus.queue::<u64>("q").unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let mut worker = queue.consumer();
    std::thread::scope(|s| {
        // Shared by reference (Sync) and moved as clones (Send).
        s.spawn(|| topic.producer().send(1).unwrap());
        let (b, q) = (bus.clone(), queue.clone());
        s.spawn(move || {
            assert!(!b.is_closed());
            q.producer().send(2).unwrap();
        });
    });
    let (sub_got, worker_got) = std::thread::spawn(move || {
        // A consumer and its messages move to another thread.
        let m = sub.recv_timeout(WAIT).unwrap();
        let w = worker.recv_timeout(WAIT).unwrap();
        // Acked on a third thread while its consumer is still alive.
        let acked = std::thread::spawn(move || (*w.payload(), w.ack())).join();
        (*m.payload(), acked.unwrap())
    })
    .join()
    .unwrap();
    assert_eq!(sub_got, 1);
    assert_eq!(worker_got.0, 2);
    worker_got.1.unwrap();
    assert!(queue.is_empty());
}

/// Counts calls to `Serialize`. It has no `Clone` impl, so the broker cannot copy it either.
macro_rules! counted_payload {
    ($name:ident, $counter:ident) => {
        static $counter: AtomicUsize = AtomicUsize::new(0);

        #[derive(Deserialize, Debug, PartialEq)]
        struct $name {
            id: u64,
            data: Vec<u8>,
        }

        impl $name {
            fn new(id: u64) -> Self {
                Self {
                    id,
                    data: vec![7; 64],
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                $counter.fetch_add(1, Ordering::SeqCst);
                let mut s = serializer.serialize_struct(stringify!($name), 2)?;
                s.serialize_field("id", &self.id)?;
                s.serialize_field("data", &self.data)?;
                s.end()
            }
        }
    };
}

// One type per counter: tests in this binary run in parallel.
counted_payload!(Unserialized, UNSERIALIZED_CALLS);
counted_payload!(ByteCounted, BYTE_COUNTED_CALLS);

#[test]
fn memory_mode_never_serializes_and_shares_payloads_between_subscribers() {
    let clock = ManualClock::new();
    let bus = Broker::builder().clock(clock.clone()).open().unwrap();
    let topic = bus
        .topic_with::<Unserialized>("t", TopicOptions::default().partitions(2))
        .unwrap();
    let mut subs: Vec<Consumer<Unserialized>> = (0..3)
        .map(|_| topic.subscribe(Start::Earliest).unwrap())
        .collect();
    let mut member = topic.join_group("g").unwrap();
    let producer = topic.producer();
    producer.send(Unserialized::new(1)).unwrap();
    producer
        .send_record(Record::new(Unserialized::new(2)).key("k").header("h", "v"))
        .unwrap();
    producer
        .send_batch(vec![Unserialized::new(3), Unserialized::new(4)])
        .unwrap();

    // Each subscriber's four messages, in id order (partitions interleave).
    let mut streams: Vec<Vec<Message<Unserialized>>> = subs
        .iter_mut()
        .map(|s| {
            let mut got: Vec<_> = (0..4).map(|_| s.recv_timeout(WAIT).unwrap()).collect();
            got.sort_by_key(|m| m.payload().id);
            got
        })
        .collect();
    let first = streams.remove(0);
    for (i, m) in first.iter().enumerate() {
        assert_eq!(*m.payload(), Unserialized::new(i as u64 + 1));
        for other in &streams {
            assert!(
                std::ptr::eq(m.payload(), other[i].payload()),
                "message {}: subscribers got copies, not one shared payload",
                i + 1
            );
        }
    }
    // Dropping the others' messages does not free what they shared.
    drop(streams);
    assert!(first.iter().all(|m| m.payload().data.len() == 64));
    // The group member sees the same allocations.
    let mut from_group: Vec<Message<Unserialized>> =
        (0..4).map(|_| member.recv_timeout(WAIT).unwrap()).collect();
    from_group.sort_by_key(|m| m.payload().id);
    let mut replay = topic.subscribe(Start::Earliest).unwrap();
    let mut replayed: Vec<Message<Unserialized>> =
        (0..4).map(|_| replay.recv_timeout(WAIT).unwrap()).collect();
    replayed.sort_by_key(|m| m.payload().id);
    for (g, r) in from_group.iter().zip(&replayed) {
        assert!(std::ptr::eq(g.payload(), r.payload()));
    }
    // A group redelivery is the same allocation again.
    let address: *const Unserialized = from_group[0].payload();
    from_group.remove(0).nack().unwrap();
    let again = member.recv_timeout(WAIT).unwrap();
    assert_eq!(again.delivery_count(), 2);
    assert!(std::ptr::eq(address, again.payload()));

    // Age and count retention do not serialize either.
    let retained = bus
        .topic_with::<Unserialized>(
            "retained",
            TopicOptions::default()
                .retention(Retention::messages(2).and_age(Duration::from_secs(1)))
                .overflow(Overflow::Block),
        )
        .unwrap();
    let mut slow = retained.subscribe(Start::Earliest).unwrap();
    retained.producer().send(Unserialized::new(5)).unwrap();
    clock.advance(Duration::from_secs(2));
    retained.producer().send(Unserialized::new(6)).unwrap();
    assert_eq!(slow.recv_timeout(WAIT).unwrap().payload().id, 5);

    assert_eq!(
        UNSERIALIZED_CALLS.load(Ordering::SeqCst),
        0,
        "memory mode serialized a payload"
    );
}

#[test]
fn queues_never_serialize_and_move_the_payload_through_redelivery_and_dead_letters() {
    let bus = Broker::memory();
    let queue = bus
        .queue_with::<Unserialized>(
            "jobs",
            QueueOptions::default()
                .capacity(2)
                .max_deliveries(2)
                .dead_letter("jobs.dead"),
        )
        .unwrap();
    let producer = queue.producer();
    producer.send(Unserialized::new(1)).unwrap();
    producer.try_send(Unserialized::new(2)).unwrap();
    // Full: the very payload comes back, not a copy.
    let rejected = producer.try_send(Unserialized::new(3)).unwrap_err();
    assert_eq!(rejected.into_inner(), Unserialized::new(3));

    let mut worker = queue.consumer();
    let first = worker.recv_timeout(WAIT).unwrap();
    let address: *const Unserialized = first.payload();
    first.nack().unwrap();
    let second = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(second.delivery_count(), 2);
    assert!(
        std::ptr::eq(address, second.payload()),
        "redelivery copied the payload"
    );
    drop(second); // second failed delivery: dead-lettered
    let mut dead = bus.queue::<Unserialized>("jobs.dead").unwrap().consumer();
    let dead_letter = dead.recv_timeout(WAIT).unwrap();
    assert_eq!(dead_letter.payload().id, 1);
    assert!(
        std::ptr::eq(address, dead_letter.payload()),
        "dead-lettering copied the payload"
    );
    dead_letter.ack().unwrap();
    let next = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(next.payload().id, 2);
    next.ack().unwrap();
    assert!(queue.is_empty());

    assert_eq!(UNSERIALIZED_CALLS.load(Ordering::SeqCst), 0);
}

#[test]
fn byte_retention_counts_sizes_through_serialize() {
    let bus = Broker::memory();
    let topic = bus
        .topic_with::<ByteCounted>(
            "sized",
            TopicOptions::default().retention(Retention::bytes(1 << 20)),
        )
        .unwrap();
    let mut a = topic.subscribe(Start::Earliest).unwrap();
    let mut b = topic.subscribe(Start::Earliest).unwrap();
    assert_eq!(BYTE_COUNTED_CALLS.load(Ordering::SeqCst), 0);
    for id in 0..3 {
        topic.producer().send(ByteCounted::new(id)).unwrap();
    }
    // Sizes are counted through serde (without producing bytes) ...
    assert!(
        BYTE_COUNTED_CALLS.load(Ordering::SeqCst) >= 3,
        "a byte limit needs each payload's encoded size"
    );
    // ... and the payload is still shared, not round-tripped.
    for _ in 0..3 {
        let (x, y) = (a.recv_timeout(WAIT).unwrap(), b.recv_timeout(WAIT).unwrap());
        assert!(std::ptr::eq(x.payload(), y.payload()));
    }
}

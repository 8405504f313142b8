//! The codec is chosen per broker and kept in the file; a payload the codec cannot read back is
//! refused at `send`, never discovered after a restart; stored declarations name payload types
//! by a stable name.

mod common;

use embus::codec::CodecKind;
use embus::{Broker, Error, Record, SendError, Start};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Event {
    Created { id: u32 },
    Deleted { id: u32, reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sparse {
    id: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    note: Option<String>,
    tail: u64,
}

/// Asserts a send was refused as `Unsupported`, naming the type and the way out, with the
/// message handed back.
#[track_caller]
fn expect_unsupported<M: PartialEq + std::fmt::Debug>(
    result: Result<embus::Receipt, SendError<M>>,
    sent: &M,
    type_name: &str,
) {
    match result {
        Err(SendError::Failed(back, error @ Error::Unsupported { .. })) => {
            assert_eq!(&back, sent, "the message is handed back");
            let text = error.to_string();
            assert!(text.contains(type_name), "names the type: {text}");
            assert!(text.contains("CodecKind::Json"), "suggests JSON: {text}");
        }
        other => panic!("expected SendError::Failed(_, Error::Unsupported), got {other:?}"),
    }
}

#[test]
fn bincode_refuses_a_tagged_enum_at_send_on_topics_and_queues() {
    let path = common::fresh_dir("codec-tagged").join("bus.embus");
    let bus = Broker::open(&path).unwrap();
    let topic = bus.topic::<Event>("events").unwrap();
    let event = Event::Created { id: 1 };
    expect_unsupported(topic.producer().send(event.clone()), &event, "Event");
    let queue = bus.queue::<Event>("work").unwrap();
    expect_unsupported(queue.producer().send(event.clone()), &event, "Event");
    // Nothing was stored: a live subscriber sees nothing, and neither does a reopen.
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    assert!(sub.try_recv().is_err());
    assert_eq!(queue.len(), 0);
    drop((sub, topic, queue));
    bus.close().unwrap();
    let bus = Broker::open(&path).unwrap();
    assert_eq!(bus.topic::<Event>("events").unwrap().retained(), 0);
    bus.close().unwrap();
}

#[test]
fn bincode_refuses_skip_serializing_if_whichever_send_comes_first() {
    let bus = Broker::open(common::fresh_dir("codec-sparse").join("bus.embus")).unwrap();
    let p = bus.topic::<Sparse>("sparse").unwrap().producer();
    let sparse = Sparse {
        id: 7,
        note: None,
        tail: 1 << 40,
    };
    expect_unsupported(p.send(sparse.clone()), &sparse, "Sparse");
    // A batch is refused as a whole, in order.
    let batch = vec![sparse.clone(), sparse.clone()];
    match p.send_batch(batch.clone()) {
        Err(SendError::Failed(back, Error::Unsupported { .. })) => assert_eq!(back, batch),
        other => panic!("expected the batch refused, got {other:?}"),
    }
    bus.close().unwrap();
}

#[test]
fn json_carries_what_bincode_cannot_across_a_reopen() {
    let path = common::fresh_dir("codec-json").join("bus.embus");
    let open = || Broker::builder().path(&path).codec(CodecKind::Json).open();
    let events = [
        Event::Created { id: 1 },
        Event::Deleted {
            id: 1,
            reason: "gone".into(),
        },
    ];
    let sparse = Sparse {
        id: 3,
        note: None,
        tail: 9,
    };
    {
        let bus = open().unwrap();
        let topic = bus.topic::<Event>("events").unwrap();
        topic.producer().send_batch(events.to_vec()).unwrap();
        let queue = bus.queue::<Sparse>("sparse").unwrap();
        queue
            .producer()
            .send_record(Record::new(sparse.clone()).key("k"))
            .unwrap();
        bus.close().unwrap();
    }
    let bus = open().unwrap();
    let mut sub = bus
        .topic::<Event>("events")
        .unwrap()
        .subscribe(Start::Earliest)
        .unwrap();
    assert_eq!(common::take(&mut sub, 2), events);
    let queue = bus.queue::<Sparse>("sparse").unwrap();
    let mut consumer = queue.consumer();
    let m = consumer.recv_timeout(common::WAIT).unwrap();
    assert_eq!((m.payload(), m.key()), (&sparse, Some(&b"k"[..])));
    m.ack().unwrap();
    assert!(queue.undecodable().is_empty());
    bus.close().unwrap();
}

#[test]
fn reopening_with_another_codec_is_a_clear_error() {
    let path = common::fresh_dir("codec-switch").join("bus.embus");
    let open_json = || Broker::builder().path(&path).codec(CodecKind::Json).open();
    open_json().unwrap().close().unwrap();
    match Broker::open(&path) {
        Err(e @ Error::CodecMismatch { .. }) => {
            let text = e.to_string();
            assert!(text.contains("bus.embus"), "names the file: {text}");
            assert!(
                text.contains("CodecKind::Json"),
                "says how to open it: {text}"
            );
        }
        other => panic!("expected CodecMismatch, got {other:?}"),
    }
    // The file is untouched by the refused open: JSON still opens it.
    open_json().unwrap().close().unwrap();
}

#[test]
fn json_lets_a_payload_type_gain_a_defaulted_field() {
    mod v1 {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub struct Order {
            pub id: u32,
        }
    }
    mod v2 {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub struct Order {
            pub id: u32,
            #[serde(default)]
            pub express: bool,
        }
    }
    let path = common::fresh_dir("codec-evolve").join("bus.embus");
    let open = || Broker::builder().path(&path).codec(CodecKind::Json).open();
    {
        let bus = open().unwrap();
        let q = bus.queue::<v1::Order>("orders").unwrap();
        q.producer().send(v1::Order { id: 5 }).unwrap();
        bus.close().unwrap();
    }
    // Another module, the same stable name: the declaration matches, the old message reads.
    let bus = open().unwrap();
    let q = bus.queue::<v2::Order>("orders").unwrap();
    let mut consumer = q.consumer();
    let m = consumer.recv_timeout(common::WAIT).unwrap();
    assert_eq!((m.payload().id, m.payload().express), (5, false));
    m.ack().unwrap();
    bus.close().unwrap();
}

#[test]
fn a_renamed_type_keeps_its_stored_name_with_payload_name() {
    #[derive(Serialize, Deserialize)]
    struct Job(u32);
    #[derive(Serialize, Deserialize)]
    struct Task(u32);
    let path = common::fresh_dir("codec-rename").join("bus.embus");
    {
        let bus = Broker::open(&path).unwrap();
        bus.queue::<Job>("jobs")
            .unwrap()
            .producer()
            .send(Job(1))
            .unwrap();
        bus.close().unwrap();
    }
    {
        let bus = Broker::open(&path).unwrap();
        let message = common::expect_mismatch(bus.queue::<Task>("jobs"), "jobs");
        assert!(
            message.contains("Job") && message.contains("Task"),
            "{message}"
        );
        bus.close().unwrap();
    }
    let bus = Broker::builder()
        .path(&path)
        .payload_name::<Task>("Job")
        .open()
        .unwrap();
    let q = bus.queue::<Task>("jobs").unwrap();
    let mut consumer = q.consumer();
    let m = consumer.recv_timeout(common::WAIT).unwrap();
    assert_eq!(m.payload().0, 1);
    m.ack().unwrap();
    bus.close().unwrap();
}

#[test]
fn memory_mode_never_encodes_so_any_serde_shape_works() {
    let bus = Broker::memory();
    let t = bus.topic::<Event>("events").unwrap();
    let mut sub = t.subscribe(Start::Earliest).unwrap();
    t.producer().send(Event::Created { id: 2 }).unwrap();
    assert_eq!(
        sub.recv_timeout(common::WAIT).unwrap().payload(),
        &Event::Created { id: 2 }
    );
}

#[test]
fn two_types_of_one_name_are_still_told_apart_in_one_process() {
    mod a {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub struct Order(pub u32);
    }
    mod b {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub struct Order(pub u32);
    }
    let bus = Broker::memory();
    let _orders = bus.topic::<a::Order>("orders").unwrap();
    let message = common::expect_mismatch(bus.topic::<b::Order>("orders"), "orders");
    assert!(
        message.contains("a::Order") && message.contains("b::Order"),
        "the full paths tell them apart: {message}"
    );
}

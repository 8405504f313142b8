//! Error contract: `Error::Mismatch`, `InvalidName`, `InvalidOption` with messages naming the topic or queue, send errors that hand the message back, `Copy + Eq` receive errors, and no panics on odd user input.

mod common;

use std::fmt::Debug;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{BRIEF, Backend, WAIT, both_backends};
use embus::{
    Error, GroupOptions, ManualClock, QueueOptions, RecvError, RecvTimeoutError, Retention,
    SendError, SendTimeoutError, Start, TopicOptions, TryRecvError, TrySendError,
};
use serde::{Deserialize, Serialize};

/// A payload type without `Debug`, `Clone` or `PartialEq`.
#[derive(Serialize, Deserialize)]
struct Opaque(u64);

#[track_caller]
fn expect_invalid_name<T: Debug>(result: Result<T, Error>, name: &str) {
    match result {
        Err(err @ Error::InvalidName { .. }) => {
            let Error::InvalidName { name: n, reason } = &err else {
                unreachable!()
            };
            assert_eq!(n, name);
            assert!(!reason.is_empty());
            assert!(
                err.to_string().contains(&format!("{name:?}")),
                "the message should show the name: {err}"
            );
        }
        other => panic!("expected InvalidName for {name:?}, got {other:?}"),
    }
}

// ---- Mismatch -------------------------------------------------------------------------------

both_backends!(a_topic_redeclared_with_another_payload_type_is_a_mismatch);
fn a_topic_redeclared_with_another_payload_type_is_a_mismatch(backend: Backend) {
    let bus = backend.bus();
    let orders = bus.topic::<u64>("orders").unwrap();
    let message = common::expect_mismatch(bus.topic::<String>("orders"), "orders");
    assert!(message.contains("u64"), "{message}");
    assert!(message.contains("String"), "{message}");
    common::expect_mismatch(
        bus.topic_with::<String>("orders", TopicOptions::default()),
        "orders",
    );
    // No second topic was made: the original still works and is the only one.
    let mut sub = orders.subscribe(Start::Earliest).unwrap();
    bus.topic::<u64>("orders")
        .unwrap()
        .producer()
        .send(1)
        .unwrap();
    assert_eq!(common::take(&mut sub, 1), [1]);
}

both_backends!(a_queue_redeclared_with_another_payload_type_is_a_mismatch);
fn a_queue_redeclared_with_another_payload_type_is_a_mismatch(backend: Backend) {
    let bus = backend.bus();
    let _jobs = bus.queue::<String>("jobs").unwrap();
    let message = common::expect_mismatch(bus.queue::<Vec<u8>>("jobs"), "jobs");
    assert!(message.contains("queue"), "{message}");
    common::expect_mismatch(
        bus.queue_with::<u32>("jobs", QueueOptions::default()),
        "jobs",
    );
}

both_backends!(topic_with_other_options_is_a_mismatch);
fn topic_with_other_options_is_a_mismatch(backend: Backend) {
    let bus = backend.bus();
    let options = TopicOptions::default()
        .partitions(4)
        .retention(Retention::messages(100));
    let topic = bus.topic_with::<u64>("metrics", options).unwrap();
    common::expect_mismatch(
        bus.topic_with::<u64>("metrics", options.partitions(2)),
        "metrics",
    );
    common::expect_mismatch(
        bus.topic_with::<u64>("metrics", options.retention(Retention::messages(101))),
        "metrics",
    );
    common::expect_mismatch(
        bus.topic_with::<u64>("metrics", options.overflow(embus::Overflow::Block)),
        "metrics",
    );
    common::expect_mismatch(
        bus.topic_with::<u64>("metrics", TopicOptions::default()),
        "metrics",
    );
    // The very same options give the same topic.
    let again = bus.topic_with::<u64>("metrics", options).unwrap();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    again.producer().send(5).unwrap();
    assert_eq!(common::take(&mut sub, 1), [5]);
}

both_backends!(queue_with_other_options_is_a_mismatch);
fn queue_with_other_options_is_a_mismatch(backend: Backend) {
    let bus = backend.bus();
    let options = QueueOptions::default()
        .capacity(10)
        .ack_timeout(Duration::from_secs(5))
        .max_deliveries(3)
        .dead_letter("jobs.dead");
    let jobs = bus.queue_with::<u64>("jobs", options.clone()).unwrap();
    for other in [
        options.clone().capacity(11),
        options.clone().ack_timeout(Duration::from_secs(6)),
        options.clone().no_ack_timeout(),
        options.clone().max_deliveries(4),
        options.clone().dead_letter("jobs.dlq"),
        options.clone().prefetch(1),
        QueueOptions::default(),
    ] {
        common::expect_mismatch(bus.queue_with::<u64>("jobs", other), "jobs");
    }
    let again = bus.queue_with::<u64>("jobs", options).unwrap();
    again.producer().send(3).unwrap();
    assert_eq!(common::take(&mut jobs.consumer(), 1), [3]);
}

both_backends!(topics_and_queues_share_one_namespace);
fn topics_and_queues_share_one_namespace(backend: Backend) {
    let bus = backend.bus();
    let _topic = bus.topic::<u64>("events").unwrap();
    let _queue = bus.queue::<u64>("jobs").unwrap();
    let message = common::expect_mismatch(bus.queue::<u64>("events"), "events");
    assert!(
        message.contains("topic") && message.contains("queue"),
        "{message}"
    );
    common::expect_mismatch(
        bus.queue_with::<u64>("events", QueueOptions::default()),
        "events",
    );
    common::expect_mismatch(bus.topic::<u64>("jobs"), "jobs");
    common::expect_mismatch(
        bus.topic_with::<u64>("jobs", TopicOptions::default()),
        "jobs",
    );
    // A dead-letter queue may not take a topic's name either.
    common::expect_mismatch(
        bus.queue_with::<u64>("work", QueueOptions::default().dead_letter("events")),
        "events",
    );
}

both_backends!(a_dead_letter_queue_of_another_payload_type_is_a_mismatch);
fn a_dead_letter_queue_of_another_payload_type_is_a_mismatch(backend: Backend) {
    let bus = backend.bus();
    let _dead = bus.queue::<String>("jobs.dead").unwrap();
    common::expect_mismatch(
        bus.queue_with::<u64>("jobs", QueueOptions::default().dead_letter("jobs.dead")),
        "jobs.dead",
    );
}

both_backends!(topic_and_queue_by_name_return_the_existing_one_whatever_its_options);
fn topic_and_queue_by_name_return_the_existing_one_whatever_its_options(backend: Backend) {
    let bus = backend.bus();
    let options = TopicOptions::default()
        .partitions(4)
        .retention(Retention::messages(10).and_age(Duration::from_secs(60)));
    let topic = bus.topic_with::<u64>("metrics", options).unwrap();
    let found = bus.topic::<u64>("metrics").unwrap();
    assert_eq!(found.partitions(), 4);
    assert_eq!(found.options(), options);
    assert_eq!(found.name(), "metrics");
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    found.producer().send(1).unwrap();
    assert_eq!(common::take(&mut sub, 1), [1]);

    let queue_options = QueueOptions::default().capacity(3).prefetch(2);
    let _queue = bus
        .queue_with::<u64>("jobs", queue_options.clone())
        .unwrap();
    let found = bus.queue::<u64>("jobs").unwrap();
    assert_eq!(found.options(), &queue_options);
    assert_eq!(found.capacity(), 3);
}

// ---- InvalidName ------------------------------------------------------------------------------

both_backends!(bad_names_are_invalid_name_everywhere);
fn bad_names_are_invalid_name_everywhere(backend: Backend) {
    let bus = backend.bus();
    let longest = "n".repeat(249);
    let too_long = "n".repeat(250);
    let bad = [
        "",
        too_long.as_str(),
        "has space",
        "a/b",
        "a:b",
        "tab\t",
        "ünïcödé",
        "emoji-🦀",
        "new\nline",
        "star*",
    ];
    for name in bad {
        expect_invalid_name(bus.topic::<u64>(name), name);
        expect_invalid_name(bus.topic_with::<u64>(name, TopicOptions::default()), name);
        expect_invalid_name(bus.queue::<u64>(name), name);
        expect_invalid_name(bus.queue_with::<u64>(name, QueueOptions::default()), name);
        expect_invalid_name(
            bus.queue_with::<u64>("jobs", QueueOptions::default().dead_letter(name)),
            name,
        );
    }
    let topic = bus.topic::<u64>("t").unwrap();
    for name in bad {
        expect_invalid_name(topic.join_group(name), name);
        expect_invalid_name(
            topic.join_group_with(name, GroupOptions::default().start(Start::Latest)),
            name,
        );
    }

    // The edges of what is allowed.
    for name in [longest.as_str(), "a", "A-z_0.9", "...", "-", "_"] {
        bus.topic::<u64>(name).unwrap();
        topic.join_group(name).unwrap();
    }
    bus.queue::<u64>("Q-1_x.y").unwrap();
}

// ---- InvalidOption ----------------------------------------------------------------------------

both_backends!(out_of_range_topic_options_are_invalid_option);
fn out_of_range_topic_options_are_invalid_option(backend: Backend) {
    let bus = backend.bus();
    let cases = [
        (TopicOptions::default().partitions(0), "partitions"),
        (TopicOptions::default().partitions(5000), "partitions"),
        (
            TopicOptions::default().partitions(TopicOptions::MAX_PARTITIONS + 1),
            "partitions",
        ),
        (
            TopicOptions::default().retention(Retention::messages(0)),
            "retention",
        ),
        (
            TopicOptions::default().retention(Retention::bytes(0)),
            "retention",
        ),
        (
            TopicOptions::default().retention(Retention::age(Duration::ZERO)),
            "retention",
        ),
        (
            TopicOptions::default().retention(
                Retention::messages(10)
                    .and_bytes(100)
                    .and_age(Duration::ZERO),
            ),
            "retention",
        ),
    ];
    for (options, option) in cases {
        common::expect_invalid_option(
            bus.topic_with::<u64>("bad-topic", options),
            "bad-topic",
            option,
        );
    }
    // Nothing was declared by the failed attempts: the name is still free for a queue.
    bus.queue::<u64>("bad-topic").unwrap();
    // The limits themselves are fine.
    let max = bus
        .topic_with::<u64>(
            "widest",
            TopicOptions::default().partitions(TopicOptions::MAX_PARTITIONS),
        )
        .unwrap();
    assert_eq!(max.partitions(), 4096);
    bus.topic_with::<u64>(
        "tiny",
        TopicOptions::default().retention(
            Retention::messages(1)
                .and_bytes(1)
                .and_age(Duration::from_nanos(1)),
        ),
    )
    .unwrap();
}

both_backends!(out_of_range_queue_options_are_invalid_option);
fn out_of_range_queue_options_are_invalid_option(backend: Backend) {
    let bus = backend.bus();
    let dlq = || QueueOptions::default().dead_letter("bad-queue.dead");
    let cases = [
        (QueueOptions::default().capacity(0), "capacity"),
        (
            QueueOptions::default().ack_timeout(Duration::ZERO),
            "ack_timeout",
        ),
        (QueueOptions::default().prefetch(0), "prefetch"),
        (dlq().max_deliveries(0), "max_deliveries"),
        (QueueOptions::default().max_deliveries(0), "max_deliveries"),
        // max_deliveries without a dead-letter queue would have to drop messages.
        (QueueOptions::default().max_deliveries(3), "max_deliveries"),
        (
            QueueOptions::default().dead_letter("bad-queue"),
            "dead_letter",
        ),
    ];
    for (options, option) in cases {
        common::expect_invalid_option(
            bus.queue_with::<u64>("bad-queue", options),
            "bad-queue",
            option,
        );
    }
    bus.topic::<u64>("bad-queue").unwrap();
    bus.queue_with::<u64>(
        "fine",
        dlq()
            .capacity(1)
            .prefetch(1)
            .max_deliveries(1)
            .ack_timeout(Duration::from_nanos(1)),
    )
    .unwrap();
}

// ---- broker-level Error ----------------------------------------------------------------------

both_backends!(error_is_a_std_error_that_boxes_and_names_what_is_busy);
fn error_is_a_std_error_that_boxes_and_names_what_is_busy(backend: Backend) {
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<Error>();

    let bus = backend.bus();
    let jobs = bus.queue::<u64>("jobs").unwrap();
    jobs.producer().send(1).unwrap();
    let err = bus.wait_idle(Duration::ZERO).unwrap_err();
    assert!(matches!(err, Error::NotIdle { .. }), "{err:?}");
    assert!(err.to_string().contains("`jobs`"), "{err}");
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
    assert!(boxed.to_string().contains("jobs"));
}

// ---- send errors ------------------------------------------------------------------------------

both_backends!(try_send_on_a_full_queue_hands_the_message_back);
fn try_send_on_a_full_queue_hands_the_message_back(backend: Backend) {
    let bus = backend.bus();
    let queue = bus
        .queue_with::<Opaque>("q", QueueOptions::default().capacity(1))
        .unwrap();
    let producer = queue.producer();
    producer.try_send(Opaque(1)).unwrap();
    let err: TrySendError<Opaque> = producer.try_send(Opaque(2)).unwrap_err();
    assert!(err.is_full());
    assert!(!err.is_disconnected());
    assert_eq!(format!("{err:?}"), "Full(..)"); // Debug without `Opaque: Debug`
    assert!(!err.to_string().is_empty());
    assert!(std::error::Error::source(&err).is_none());
    assert_eq!(err.into_inner().0, 2);
}

both_backends!(send_timeout_on_a_full_queue_times_out_with_the_message_back);
fn send_timeout_on_a_full_queue_times_out_with_the_message_back(backend: Backend) {
    let bus = backend.bus();
    let queue = bus
        .queue_with::<Opaque>("q", QueueOptions::default().capacity(1))
        .unwrap();
    let producer = queue.producer();
    producer.send(Opaque(1)).unwrap();
    let started = std::time::Instant::now();
    let err: SendTimeoutError<Opaque> = producer.send_timeout(Opaque(2), BRIEF).unwrap_err();
    assert!(started.elapsed() >= BRIEF, "returned before the timeout");
    assert!(err.is_timeout());
    assert!(!err.is_disconnected());
    assert_eq!(format!("{err:?}"), "Timeout(..)");
    assert_eq!(err.into_inner().0, 2);

    let err = producer
        .send_deadline(Opaque(3), std::time::Instant::now())
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err.into_inner().0, 3);

    // After an ack there is room again.
    let mut worker = queue.consumer();
    worker.recv_timeout(WAIT).unwrap().ack().unwrap();
    producer.send_timeout(Opaque(4), WAIT).unwrap();
}

both_backends!(send_errors_on_a_closed_broker_hand_the_message_back);
fn send_errors_on_a_closed_broker_hand_the_message_back(backend: Backend) {
    let bus = backend.bus();
    let topic = bus.topic::<Opaque>("t").unwrap();
    let producer = topic.producer();
    bus.close().unwrap();

    let err: SendError<Opaque> = producer.send(Opaque(7)).unwrap_err();
    assert!(err.is_disconnected());
    assert_eq!(format!("{err:?}"), "Disconnected(..)");
    assert!(!err.to_string().is_empty());
    assert!(std::error::Error::source(&err).is_none());
    assert_eq!(err.into_inner().0, 7);

    let err = producer.try_send(Opaque(8)).unwrap_err();
    assert!(err.is_disconnected() && !err.is_full());
    assert_eq!(format!("{err:?}"), "Disconnected(..)");
    assert_eq!(err.into_inner().0, 8);

    let err = producer.send_timeout(Opaque(9), WAIT).unwrap_err();
    assert!(err.is_disconnected() && !err.is_timeout());
    assert_eq!(err.into_inner().0, 9);

    let err = producer
        .send_batch(vec![Opaque(10), Opaque(11)])
        .unwrap_err();
    assert_eq!(
        err.into_inner().iter().map(|o| o.0).collect::<Vec<_>>(),
        [10, 11]
    );
}

both_backends!(send_error_converts_into_try_send_and_send_timeout_errors);
fn send_error_converts_into_try_send_and_send_timeout_errors(backend: Backend) {
    let err: TrySendError<Opaque> = SendError::Disconnected(Opaque(1)).into();
    assert!(err.is_disconnected());
    assert_eq!(err.into_inner().0, 1);

    let err: SendTimeoutError<Opaque> = SendError::Disconnected(Opaque(2)).into();
    assert!(err.is_disconnected() && !err.is_timeout());
    assert_eq!(err.into_inner().0, 2);

    // `?` converts too.
    fn forward(producer: &embus::Producer<Opaque>) -> Result<(), TrySendError<Opaque>> {
        producer.send(Opaque(3))?;
        Ok(())
    }
    let bus = backend.bus();
    let producer = bus.queue::<Opaque>("q").unwrap().producer();
    forward(&producer).unwrap();
    bus.close().unwrap();
    assert_eq!(forward(&producer).unwrap_err().into_inner().0, 3);
}

both_backends!(send_errors_are_std_errors_without_payload_bounds);
fn send_errors_are_std_errors_without_payload_bounds(backend: Backend) {
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<SendError<Opaque>>();
    assert_error::<TrySendError<Opaque>>();
    assert_error::<SendTimeoutError<Opaque>>();
    // A message without Debug is still printable too.
    let bus = backend.bus();
    let queue = bus.queue::<Opaque>("q").unwrap();
    queue.producer().send(Opaque(1)).unwrap();
    let mut consumer = queue.consumer();
    let message = consumer.recv_timeout(WAIT).unwrap();
    assert!(format!("{message:?}").starts_with("Message"));
    message.ack().unwrap();
}

// ---- receive errors -----------------------------------------------------------------------------

both_backends!(receive_errors_are_clone_eq_and_convert);
fn receive_errors_are_clone_eq_and_convert(backend: Backend) {
    // Not `Copy` since they carry an undecodable record's bytes.
    fn assert_clone_eq<E: Clone + Eq + Debug + std::error::Error + Send + Sync + 'static>() {}
    assert_clone_eq::<RecvError>();
    assert_clone_eq::<TryRecvError>();
    assert_clone_eq::<RecvTimeoutError>();

    let lagged = RecvError::Lagged { skipped: 3 };
    let copy = lagged.clone();
    assert_eq!(lagged, copy);
    assert_ne!(lagged, RecvError::Lagged { skipped: 4 });
    assert_ne!(lagged, RecvError::Disconnected);
    assert!(!lagged.is_disconnected());
    assert!(RecvError::Disconnected.is_disconnected());
    assert!(lagged.to_string().contains('3'), "{lagged}");

    assert_eq!(
        TryRecvError::from(lagged.clone()),
        TryRecvError::Lagged { skipped: 3 }
    );
    assert_eq!(
        TryRecvError::from(RecvError::Disconnected),
        TryRecvError::Disconnected
    );
    assert_eq!(
        RecvTimeoutError::from(lagged),
        RecvTimeoutError::Lagged { skipped: 3 }
    );
    assert_eq!(
        RecvTimeoutError::from(RecvError::Disconnected),
        RecvTimeoutError::Disconnected
    );
    assert!(TryRecvError::Empty.is_empty() && !TryRecvError::Empty.is_disconnected());
    assert!(RecvTimeoutError::Timeout.is_timeout());
    assert!(RecvTimeoutError::Disconnected.is_disconnected());

    // The errors a real consumer returns compare equal to the constants.
    let bus = backend.bus();
    let mut sub = bus
        .topic::<u64>("t")
        .unwrap()
        .subscribe(Start::Latest)
        .unwrap();
    let err = sub.try_recv().unwrap_err();
    assert_eq!(err, TryRecvError::Empty);
    assert_eq!(err, err.clone());
    assert_eq!(
        sub.recv_timeout(BRIEF).unwrap_err(),
        RecvTimeoutError::Timeout
    );
    bus.close().unwrap();
    assert_eq!(sub.recv().unwrap_err(), RecvError::Disconnected);
}

// ---- nothing panics on user input ---------------------------------------------------------------

both_backends!(extreme_durations_times_and_offsets_do_not_panic);
fn extreme_durations_times_and_offsets_do_not_panic(backend: Backend) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    let topic = bus
        .topic_with::<u64>(
            "t",
            TopicOptions::default()
                .partitions(2)
                .retention(Retention::age(Duration::MAX).and_messages(u64::MAX)),
        )
        .unwrap();
    let queue = bus
        .queue_with::<u64>(
            "q",
            QueueOptions::default()
                .ack_timeout(Duration::MAX)
                .capacity(usize::MAX)
                .prefetch(u32::MAX),
        )
        .unwrap();
    topic.producer().send_timeout(1, Duration::MAX).unwrap();
    queue.producer().send_timeout(2, Duration::MAX).unwrap();

    for (i, start) in [
        Start::Offset(u64::MAX),
        Start::Time(UNIX_EPOCH),
        Start::Time(UNIX_EPOCH - Duration::from_secs(1)),
        Start::Time(SystemTime::now() + Duration::from_secs(1 << 40)),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = topic.subscribe(start).unwrap().try_recv();
        let _ = topic
            .join_group_with(&format!("g{i}"), GroupOptions::default().start(start))
            .unwrap()
            .try_recv();
    }
    assert_eq!(topic.offsets(2), None);
    assert_eq!(topic.offsets(u32::MAX), None);

    let mut worker = queue.consumer();
    let held = worker.recv_timeout(Duration::MAX).unwrap();
    assert_eq!(*held.payload(), 2);
    // The clock saturates; what expires at the end of time is unspecified, but nothing panics.
    clock.advance(Duration::MAX);
    clock.advance(Duration::MAX);
    let acked = held.ack();
    assert!(
        matches!(acked, Ok(()) | Err(Error::DeliveryEnded { .. })),
        "{acked:?}"
    );
    let _ = worker.try_recv();
    let mut sub = topic.subscribe(Start::Earliest).unwrap();
    let _ = sub.try_recv();
    topic.producer().send(3).unwrap();
    bus.close().unwrap();
}

both_backends!(wait_idle_with_a_huge_timeout_does_not_panic);
fn wait_idle_with_a_huge_timeout_does_not_panic(backend: Backend) {
    let bus = backend.bus();
    bus.queue::<u64>("q").unwrap();
    // Idle already: returns at once, whatever the timeout.
    bus.wait_idle(Duration::MAX).unwrap();
}

both_backends!(a_failed_queue_declaration_leaves_no_dead_letter_queue_behind);
fn a_failed_queue_declaration_leaves_no_dead_letter_queue_behind(backend: Backend) {
    let bus = backend.bus();
    let _jobs = bus.queue::<u32>("jobs").unwrap();
    let err = bus
        .queue_with::<u32>("jobs", QueueOptions::default().dead_letter("jobs.dead"))
        .unwrap_err();
    assert!(matches!(err, Error::Mismatch { .. }), "{err}");
    // Had the dead-letter queue been created, this name would be taken by a queue.
    bus.topic::<u32>("jobs.dead").unwrap();
}

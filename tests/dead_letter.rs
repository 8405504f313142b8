//! Dead letters: `max_deliveries`, the dead-letter queue's contents and headers, and its options.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{BRIEF, Backend, Bus, WAIT, both_backends, take};
use embus::{
    Backoff, Broker, DEAD_LETTER_DELIVERIES, DEAD_LETTER_QUEUE, DEAD_LETTER_REASON, Ended, Error,
    ManualClock, Message, Queue, QueueOptions, Record, TryRecvError,
};

const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Just past [`ACK_TIMEOUT`].
const PAST_TIMEOUT: Duration = Duration::from_secs(31);
/// How long a helper thread waits for a wake-up the test then waits `WAIT` for. Longer than
/// `WAIT`, so that a missed wake-up fails the test rather than being hidden by the last
/// re-check a wait makes at its own deadline.
const THREAD_WAIT: Duration = Duration::from_secs(WAIT.as_secs() * 2);

/// A broker on `backend` on a manual clock, and the clock.
fn manual_bus(backend: Backend) -> (ManualClock, Bus) {
    let clock = ManualClock::new();
    let bus = backend.bus_with_clock(clock.clone());
    (clock, bus)
}

/// Without a backoff: these tests are about where messages go, not when (tests/backoff.rs).
fn dead_letter_options(max_deliveries: u32) -> QueueOptions {
    QueueOptions::default()
        .backoff(Backoff::none())
        .ack_timeout(ACK_TIMEOUT)
        .max_deliveries(max_deliveries)
        .dead_letter("jobs.dead")
}

/// `jobs`, dead-lettering to `jobs.dead` after `max_deliveries`, and `jobs.dead`.
fn jobs_with_dead_letters(bus: &Broker, max_deliveries: u32) -> (Queue<String>, Queue<String>) {
    let jobs = bus
        .queue_with("jobs", dead_letter_options(max_deliveries))
        .unwrap();
    let dead = bus.queue("jobs.dead").unwrap();
    (jobs, dead)
}

fn header<'a, T>(m: &'a Message<T>, name: &str) -> Option<&'a str> {
    m.headers()
        .get(name)
        .map(|v| std::str::from_utf8(v).unwrap())
}

/// The dead-letter headers of `m`: (queue, reason, deliveries).
fn dead_letter_headers<T>(m: &Message<T>) -> (Option<&str>, Option<&str>, Option<&str>) {
    (
        header(m, DEAD_LETTER_QUEUE),
        header(m, DEAD_LETTER_REASON),
        header(m, DEAD_LETTER_DELIVERIES),
    )
}

// ---- Moving after max_deliveries ----

both_backends!(message_is_requeued_until_max_deliveries_then_moved);
fn message_is_requeued_until_max_deliveries_then_moved(backend: Backend) {
    let bus = backend.bus();
    let (jobs, dead) = jobs_with_dead_letters(&bus, 3);
    jobs.producer().send("flaky".to_string()).unwrap();
    let mut worker = jobs.consumer();
    for count in 1..=2 {
        let m = worker.recv_timeout(WAIT).unwrap();
        assert_eq!(m.delivery_count(), count);
        m.nack().unwrap();
        assert_eq!((jobs.len(), dead.len()), (1, 0), "requeued, not dead yet");
    }
    let last = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(last.delivery_count(), 3);
    last.nack().unwrap();

    assert!(jobs.is_empty());
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(dead.len(), 1);
    let d = dead.consumer().recv_timeout(WAIT).unwrap();
    assert_eq!(d.payload(), "flaky");
    assert_eq!(
        d.delivery_count(),
        1,
        "a first delivery from the dead-letter queue"
    );
}

both_backends!(dead_letter_keeps_payload_key_headers_and_timestamp);
fn dead_letter_keeps_payload_key_headers_and_timestamp(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let (jobs, dead) = jobs_with_dead_letters(&bus, 1);
    let sent_at = clock.now();
    jobs.producer()
        .send_record(
            Record::new("flaky".to_string())
                .key("customer-42")
                .header("trace-id", b"abc")
                .header("attempt-note", b"first"),
        )
        .unwrap();
    clock.advance(Duration::from_secs(5));
    jobs.consumer().recv_timeout(WAIT).unwrap().nack().unwrap();

    let d = dead.consumer().recv_timeout(WAIT).unwrap();
    assert_eq!(d.payload(), "flaky");
    assert_eq!(d.key(), Some(&b"customer-42"[..]));
    let originals: Vec<(&str, &[u8])> = d.headers().iter().take(2).collect();
    assert_eq!(
        originals,
        [("trace-id", &b"abc"[..]), ("attempt-note", &b"first"[..])],
        "the original headers come first, in order"
    );
    assert_eq!(
        d.headers().len(),
        5,
        "original headers plus the three added"
    );
    assert_eq!(d.timestamp(), sent_at, "the original timestamp");
}

both_backends!(dead_letter_without_key_or_headers_gets_only_the_added_headers);
fn dead_letter_without_key_or_headers_gets_only_the_added_headers(backend: Backend) {
    let bus = backend.bus();
    let (jobs, dead) = jobs_with_dead_letters(&bus, 1);
    jobs.producer().send("plain".to_string()).unwrap();
    jobs.consumer().recv_timeout(WAIT).unwrap().nack().unwrap();
    let d = dead.consumer().recv_timeout(WAIT).unwrap();
    assert_eq!(d.key(), None);
    let names: Vec<&str> = d.headers().iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            DEAD_LETTER_QUEUE,
            DEAD_LETTER_REASON,
            DEAD_LETTER_DELIVERIES
        ]
    );
}

both_backends!(nacked_dead_letter_names_queue_reason_nack_and_deliveries);
fn nacked_dead_letter_names_queue_reason_nack_and_deliveries(backend: Backend) {
    let bus = backend.bus();
    let (jobs, dead) = jobs_with_dead_letters(&bus, 2);
    jobs.producer().send("flaky".to_string()).unwrap();
    let mut worker = jobs.consumer();
    worker.recv_timeout(WAIT).unwrap().nack().unwrap();
    worker.recv_timeout(WAIT).unwrap().nack().unwrap();
    let d = dead.consumer().recv_timeout(WAIT).unwrap();
    assert_eq!(
        dead_letter_headers(&d),
        (Some("jobs"), Some("nack"), Some("2"))
    );
}

both_backends!(dropped_delivery_is_dead_lettered_with_reason_dropped);
fn dropped_delivery_is_dead_lettered_with_reason_dropped(backend: Backend) {
    let bus = backend.bus();
    let (jobs, dead) = jobs_with_dead_letters(&bus, 1);
    jobs.producer().send("flaky".to_string()).unwrap();
    let mut worker = jobs.consumer();
    drop(worker.recv_timeout(WAIT).unwrap());
    let d = dead.consumer().recv_timeout(WAIT).unwrap();
    assert_eq!(d.payload(), "flaky");
    assert_eq!(
        dead_letter_headers(&d),
        (Some("jobs"), Some("dropped"), Some("1"))
    );
}

both_backends!(dropped_consumer_dead_letters_its_deliveries_with_reason_dropped);
fn dropped_consumer_dead_letters_its_deliveries_with_reason_dropped(backend: Backend) {
    let bus = backend.bus();
    let (jobs, dead) = jobs_with_dead_letters(&bus, 2);
    jobs.producer().send("flaky".to_string()).unwrap();
    let mut first = jobs.consumer();
    first.recv_timeout(WAIT).unwrap().nack().unwrap();
    let _held = first.recv_timeout(WAIT).unwrap();
    drop(first);
    assert_eq!((jobs.len(), jobs.in_flight()), (0, 0));
    let d = dead.consumer().recv_timeout(WAIT).unwrap();
    assert_eq!(
        dead_letter_headers(&d),
        (Some("jobs"), Some("dropped"), Some("2"))
    );
}

both_backends!(timed_out_delivery_is_dead_lettered_with_reason_ack_timeout);
fn timed_out_delivery_is_dead_lettered_with_reason_ack_timeout(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let (jobs, dead) = jobs_with_dead_letters(&bus, 1);
    jobs.producer().send("slow".to_string()).unwrap();
    let mut worker = jobs.consumer();
    let _late = worker.recv_timeout(WAIT).unwrap();
    clock.advance(PAST_TIMEOUT);
    assert_eq!(jobs.in_flight(), 0, "the delivery timed out");
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
    let d = dead.consumer().recv_timeout(WAIT).unwrap();
    assert_eq!(d.payload(), "slow");
    assert_eq!(
        dead_letter_headers(&d),
        (Some("jobs"), Some("ack-timeout"), Some("1"))
    );
}

both_backends!(clock_advance_alone_moves_a_timed_out_message_to_the_dead_letter_queue);
fn clock_advance_alone_moves_a_timed_out_message_to_the_dead_letter_queue(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let (jobs, dead) = jobs_with_dead_letters(&bus, 1);
    jobs.producer().send("slow".to_string()).unwrap();
    // Keep the consumer: dropping it would release the delivery at once.
    let mut worker = jobs.consumer();
    let _late = worker.recv_timeout(WAIT).unwrap();
    clock.advance(PAST_TIMEOUT);
    // Nothing has looked at `jobs` since the advance: the dead-letter queue's consumer must
    // still see the message ("ack timeouts fire" on advance).
    let d = dead.consumer().recv_timeout(WAIT).unwrap();
    assert_eq!(d.payload(), "slow");
}

both_backends!(clock_advance_wakes_a_dead_letter_consumer_blocked_on_another_thread);
fn clock_advance_wakes_a_dead_letter_consumer_blocked_on_another_thread(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let (jobs, dead) = jobs_with_dead_letters(&bus, 1);
    jobs.producer().send("slow".to_string()).unwrap();
    // Keep the consumer: dropping it would release the delivery at once.
    let mut worker = jobs.consumer();
    let _late = worker.recv_timeout(WAIT).unwrap();

    let mut monitor = dead.consumer();
    let (started_tx, started_rx) = mpsc::channel();
    let (got_tx, got_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        started_tx.send(()).unwrap();
        let got = monitor.recv_timeout(THREAD_WAIT).map(|m| {
            let payload = m.payload().clone();
            m.ack().unwrap();
            payload
        });
        got_tx.send(got).unwrap();
    });
    started_rx.recv_timeout(WAIT).unwrap();
    assert!(
        got_rx.recv_timeout(BRIEF).is_err(),
        "no dead letter before the timeout"
    );
    clock.advance(PAST_TIMEOUT);
    assert_eq!(got_rx.recv_timeout(WAIT).unwrap(), Ok("slow".to_string()));
    handle.join().unwrap();
}

both_backends!(acked_messages_are_never_dead_lettered);
fn acked_messages_are_never_dead_lettered(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let (jobs, dead) = jobs_with_dead_letters(&bus, 1);
    jobs.producer().send("fine".to_string()).unwrap();
    let mut worker = jobs.consumer();
    assert_eq!(take(&mut worker, 1), ["fine"]);
    clock.advance(PAST_TIMEOUT * 10);
    assert_eq!(jobs.dead_lettered(), 0);
    assert!(dead.is_empty());
}

both_backends!(dead_lettered_counts_the_messages_moved);
fn dead_lettered_counts_the_messages_moved(backend: Backend) {
    let bus = backend.bus();
    let (jobs, dead) = jobs_with_dead_letters(&bus, 1);
    jobs.producer()
        .send_batch(vec!["a".to_string(), "b".to_string(), "c".to_string()])
        .unwrap();
    let mut worker = jobs.consumer();
    assert_eq!(jobs.dead_lettered(), 0);
    worker.recv_timeout(WAIT).unwrap().nack().unwrap();
    worker.recv_timeout(WAIT).unwrap().ack().unwrap();
    worker.recv_timeout(WAIT).unwrap().nack().unwrap();
    assert_eq!(jobs.dead_lettered(), 2);
    assert_eq!(
        dead.dead_lettered(),
        0,
        "the dead-letter queue moved nothing"
    );
    let mut inspector = dead.consumer();
    assert_eq!(take(&mut inspector, 2), ["a", "c"]);
}

both_backends!(dead_letter_queue_accepts_dead_letters_beyond_its_capacity);
fn dead_letter_queue_accepts_dead_letters_beyond_its_capacity(backend: Backend) {
    let bus = backend.bus();
    let dead = bus
        .queue_with::<String>("jobs.dead", QueueOptions::default().capacity(1))
        .unwrap();
    let jobs = bus
        .queue_with::<String>("jobs", dead_letter_options(1))
        .unwrap();
    jobs.producer()
        .send_batch(vec!["a".to_string(), "b".to_string()])
        .unwrap();
    let mut worker = jobs.consumer();
    worker.recv_timeout(WAIT).unwrap().nack().unwrap();
    worker.recv_timeout(WAIT).unwrap().nack().unwrap();
    assert_eq!(jobs.dead_lettered(), 2);
    assert_eq!(dead.len(), 2, "nothing dropped");
    assert!(
        dead.producer()
            .try_send("c".to_string())
            .unwrap_err()
            .is_full(),
        "ordinary sends still respect the capacity"
    );
    let mut inspector = dead.consumer();
    assert_eq!(take(&mut inspector, 2), ["a", "b"]);
}

both_backends!(dead_lettering_frees_capacity_for_a_blocked_send);
fn dead_lettering_frees_capacity_for_a_blocked_send(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<String>("jobs", dead_letter_options(1).capacity(1))
        .unwrap();
    let producer = jobs.producer();
    producer.send("a".to_string()).unwrap();
    let mut worker = jobs.consumer();
    let first = worker.recv_timeout(WAIT).unwrap();

    let (sent_tx, sent_rx) = mpsc::channel();
    let sender = {
        let producer = producer.clone();
        thread::spawn(move || {
            let result = producer.send("b".to_string()).map_err(|e| e.into_inner());
            sent_tx.send(result).unwrap();
        })
    };
    assert!(sent_rx.recv_timeout(BRIEF).is_err(), "the queue is full");
    first.nack().unwrap();
    sent_rx
        .recv_timeout(WAIT)
        .expect("dead-lettering frees room")
        .unwrap();
    sender.join().unwrap();
    assert_eq!(take(&mut worker, 1), ["b"]);
}

both_backends!(dead_lettering_from_another_thread_wakes_a_consumer_waiting_for_its_prefetch_window);
fn dead_lettering_from_another_thread_wakes_a_consumer_waiting_for_its_prefetch_window(
    backend: Backend,
) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<String>("jobs", dead_letter_options(1).prefetch(1))
        .unwrap();
    jobs.producer()
        .send_batch(vec!["a".to_string(), "b".to_string()])
        .unwrap();
    let mut worker = jobs.consumer();
    let (handed_tx, handed_rx) = mpsc::channel();
    let (got_tx, got_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        handed_tx.send(worker.recv_timeout(WAIT).unwrap()).unwrap();
        let next = worker.recv_timeout(THREAD_WAIT).map(|m| {
            let payload = m.payload().clone();
            m.ack().unwrap();
            payload
        });
        got_tx.send(next).unwrap();
    });
    let first = handed_rx.recv_timeout(WAIT).unwrap();
    assert!(
        got_rx.recv_timeout(BRIEF).is_err(),
        "prefetch window is full"
    );
    first.nack().unwrap(); // the last allowed delivery: dead-lettered, window open
    assert_eq!(got_rx.recv_timeout(WAIT).unwrap(), Ok("b".to_string()));
    handle.join().unwrap();
    assert_eq!(jobs.dead_lettered(), 1);
}

// ---- Declaration ----

both_backends!(dead_letter_queue_is_declared_with_the_source_queue);
fn dead_letter_queue_is_declared_with_the_source_queue(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus
        .queue_with::<String>("jobs", dead_letter_options(1))
        .unwrap();
    jobs.producer().send("flaky".to_string()).unwrap();
    jobs.consumer().recv_timeout(WAIT).unwrap().nack().unwrap();
    // Declared afterwards with `queue`, it is the queue that already holds the dead letter.
    let dead = bus.queue::<String>("jobs.dead").unwrap();
    assert_eq!(dead.len(), 1);
    common::expect_mismatch(bus.queue::<u32>("jobs.dead"), "jobs.dead");
}

both_backends!(dead_letter_queue_of_another_payload_type_is_a_mismatch_at_declaration);
fn dead_letter_queue_of_another_payload_type_is_a_mismatch_at_declaration(backend: Backend) {
    let bus = backend.bus();
    bus.queue::<u32>("jobs.dead").unwrap();
    common::expect_mismatch(
        bus.queue_with::<String>("jobs", dead_letter_options(1)),
        "jobs.dead",
    );
}

both_backends!(dead_letter_naming_a_topic_is_a_mismatch_at_declaration);
fn dead_letter_naming_a_topic_is_a_mismatch_at_declaration(backend: Backend) {
    let bus = backend.bus();
    bus.topic::<String>("jobs.dead").unwrap();
    common::expect_mismatch(
        bus.queue_with::<String>("jobs", dead_letter_options(1)),
        "jobs.dead",
    );
}

both_backends!(max_deliveries_without_dead_letter_is_an_invalid_option);
fn max_deliveries_without_dead_letter_is_an_invalid_option(backend: Backend) {
    let bus = backend.bus();
    common::expect_invalid_option(
        bus.queue_with::<String>("jobs", QueueOptions::default().max_deliveries(3)),
        "jobs",
        "max_deliveries",
    );
}

both_backends!(queue_cannot_be_its_own_dead_letter_queue);
fn queue_cannot_be_its_own_dead_letter_queue(backend: Backend) {
    let bus = backend.bus();
    let options = QueueOptions::default()
        .max_deliveries(3)
        .dead_letter("jobs");
    common::expect_invalid_option(
        bus.queue_with::<String>("jobs", options),
        "jobs",
        "dead_letter",
    );
}

both_backends!(dead_letter_with_an_invalid_name_is_rejected);
fn dead_letter_with_an_invalid_name_is_rejected(backend: Backend) {
    let bus = backend.bus();
    let options = QueueOptions::default()
        .max_deliveries(3)
        .dead_letter("jobs dead");
    match bus.queue_with::<String>("jobs", options) {
        Err(Error::InvalidName { name, .. }) => assert_eq!(name, "jobs dead"),
        other => panic!("expected InvalidName, got {other:?}"),
    }
}

// ---- wait_idle ----

both_backends!(wait_idle_ignores_dead_letters_parked_in_the_dead_letter_queue);
fn wait_idle_ignores_dead_letters_parked_in_the_dead_letter_queue(backend: Backend) {
    let bus = backend.bus();
    let (jobs, dead) = jobs_with_dead_letters(&bus, 1);
    jobs.producer().send("flaky".to_string()).unwrap();
    jobs.consumer().recv_timeout(WAIT).unwrap().nack().unwrap();
    assert_eq!(dead.len(), 1);
    bus.wait_idle(WAIT).unwrap();
}

both_backends!(wait_idle_names_a_dead_letter_queue_with_a_delivery_in_flight);
fn wait_idle_names_a_dead_letter_queue_with_a_delivery_in_flight(backend: Backend) {
    let bus = backend.bus();
    let (jobs, dead) = jobs_with_dead_letters(&bus, 1);
    jobs.producer().send("flaky".to_string()).unwrap();
    jobs.consumer().recv_timeout(WAIT).unwrap().nack().unwrap();
    let mut inspector = dead.consumer();
    let held = inspector.recv_timeout(WAIT).unwrap();
    match bus.wait_idle(Duration::ZERO) {
        Err(Error::NotIdle { busy, .. }) => {
            assert!(
                busy.contains("`jobs.dead`"),
                "should name jobs.dead: {busy}"
            )
        }
        other => panic!("expected NotIdle, got {other:?}"),
    }
    held.ack().unwrap();
    bus.wait_idle(WAIT).unwrap();
}

both_backends!(wait_idle_returns_when_a_clock_advance_dead_letters_the_last_delivery);
fn wait_idle_returns_when_a_clock_advance_dead_letters_the_last_delivery(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let (jobs, dead) = jobs_with_dead_letters(&bus, 1);
    jobs.producer().send("slow".to_string()).unwrap();
    // Keep the consumer: dropping it would release the delivery at once.
    let mut worker = jobs.consumer();
    let _late = worker.recv_timeout(WAIT).unwrap();

    let (idle_tx, idle_rx) = mpsc::channel();
    let waiter = {
        let bus = bus.clone();
        thread::spawn(move || idle_tx.send(bus.wait_idle(THREAD_WAIT)).unwrap())
    };
    assert!(
        idle_rx.recv_timeout(BRIEF).is_err(),
        "a delivery is in flight"
    );
    clock.advance(PAST_TIMEOUT);
    idle_rx
        .recv_timeout(WAIT)
        .expect("wait_idle returns after the advance")
        .unwrap();
    waiter.join().unwrap();
    assert_eq!((jobs.dead_lettered(), dead.len()), (1, 1));
}

both_backends!(a_nack_after_the_ack_timeout_passed_dead_letters_as_ack_timeout);
/// A delivery whose ack timeout passed (system clock, nobody looked yet) and is then nacked
/// ends as timed out: its dead letter says `ack-timeout`, not `nack`, and the nack says it
/// came too late.
fn a_nack_after_the_ack_timeout_passed_dead_letters_as_ack_timeout(backend: Backend) {
    let bus = backend.bus();
    let options = QueueOptions::default()
        .ack_timeout(Duration::from_millis(1))
        .max_deliveries(1)
        .dead_letter("jobs.dead");
    let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
    let dead = bus.queue::<u32>("jobs.dead").unwrap();
    jobs.producer().send(1).unwrap();
    let mut worker = jobs.consumer();
    let late = worker.recv_timeout(WAIT).unwrap();
    let due = std::time::Instant::now() + Duration::from_millis(5);
    while std::time::Instant::now() < due {
        std::thread::yield_now(); // the system clock passes the 1 ms deadline
    }
    assert!(matches!(
        late.nack(),
        Err(Error::DeliveryEnded {
            reason: Ended::AckTimeout,
            ..
        })
    ));
    let letter = dead.consumer().recv_timeout(WAIT).unwrap();
    assert_eq!(
        letter.headers().get(DEAD_LETTER_REASON),
        Some(&b"ack-timeout"[..])
    );
}

//! Settling queue messages: what an ack, nack or `in_progress` says when its delivery had
//! already ended (its ack timeout passed, or its consumer was dropped).

mod common;

use common::timed::{ACK_TIMEOUT, PAST_TIMEOUT, manual_bus, payload_and_count, timed_queue};
use common::{Backend, WAIT, both_backends};
use embus::{Backoff, Ended, Error, QueueOptions, TryRecvError};

both_backends!(ack_of_a_delivery_released_by_its_dropped_consumer_does_not_delete_the_redelivery);
fn ack_of_a_delivery_released_by_its_dropped_consumer_does_not_delete_the_redelivery(
    backend: Backend,
) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    jobs.producer().send(7).unwrap();
    let mut first = jobs.consumer();
    let stale = first.recv_timeout(WAIT).unwrap();
    drop(first);
    let mut second = jobs.consumer();
    let again = second.recv_timeout(WAIT).unwrap();
    assert_eq!(payload_and_count(&again), (7, 2));

    assert_ended(stale.ack(), Ended::ConsumerDropped);
    assert_eq!(jobs.in_flight(), 1, "the redelivery is still in flight");
    again.nack().unwrap();
    let third = second.recv_timeout(WAIT).unwrap();
    assert_eq!(payload_and_count(&third), (7, 3));
}

both_backends!(ack_of_a_timed_out_delivery_does_not_delete_the_redelivered_message);
fn ack_of_a_timed_out_delivery_does_not_delete_the_redelivered_message(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = timed_queue(&bus);
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    let late = worker.recv_timeout(WAIT).unwrap();
    clock.advance(PAST_TIMEOUT);
    let again = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(payload_and_count(&again), (7, 2));

    assert_ended(late.ack(), Ended::AckTimeout);
    assert_eq!(jobs.in_flight(), 1, "the redelivery is still in flight");
    again.ack().unwrap();
    assert_eq!((jobs.len(), jobs.in_flight()), (0, 0));
}

both_backends!(ack_after_the_ack_timeout_passed_is_refused_even_before_the_redelivery);
fn ack_after_the_ack_timeout_passed_is_refused_even_before_the_redelivery(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = timed_queue(&bus);
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    let late = worker.recv_timeout(WAIT).unwrap();
    clock.advance(PAST_TIMEOUT);

    // Nobody looked at the queue since the deadline passed: the ack still comes too late.
    assert_ended(late.ack(), Ended::AckTimeout);
    let again = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(payload_and_count(&again), (7, 2));
}

both_backends!(acking_what_a_temporary_consumer_received_says_the_delivery_ended);
/// Regression: `q.consumer().recv()` drops the consumer at the `;`, which releases what it
/// received; the ack then returned `Ok` and removed nothing.
fn acking_what_a_temporary_consumer_received_says_the_delivery_ended(backend: Backend) {
    let bus = backend.bus();
    // Redelivered at once: about counts, not timing (tests/backoff.rs).
    let no_backoff = QueueOptions::default().backoff(Backoff::none());
    let jobs = bus.queue_with::<u32>("jobs", no_backoff).unwrap();
    jobs.producer().send(7).unwrap();
    let m = jobs.consumer().recv_timeout(WAIT).unwrap();
    assert_ended(m.ack(), Ended::ConsumerDropped);
    let m = jobs.consumer().recv_timeout(WAIT).unwrap();
    assert_ended(m.nack(), Ended::ConsumerDropped);
    assert_eq!((jobs.len(), jobs.in_flight()), (1, 0), "still there");
    let mut worker = jobs.consumer();
    let m = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(payload_and_count(&m), (7, 3));
    m.ack().unwrap();
    assert!(jobs.is_empty());
}

both_backends!(in_progress_restarts_the_ack_timeout);
fn in_progress_restarts_the_ack_timeout(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = timed_queue(&bus);
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    let long = worker.recv_timeout(WAIT).unwrap();
    let step = ACK_TIMEOUT * 2 / 3;
    for _ in 0..3 {
        clock.advance(step);
        long.in_progress().unwrap(); // each time before the deadline
    }
    assert_eq!(worker.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(
        jobs.in_flight(),
        1,
        "2 ack timeouts passed, but it is still in progress"
    );
    long.ack().unwrap();
    assert_eq!((jobs.len(), jobs.in_flight()), (0, 0));

    jobs.producer().send(8).unwrap();
    let late = worker.recv_timeout(WAIT).unwrap();
    clock.advance(PAST_TIMEOUT);
    assert_ended(late.in_progress(), Ended::AckTimeout);
    let again = worker.recv_timeout(WAIT).unwrap();
    assert_eq!(payload_and_count(&again), (8, 2));
    assert_ended(late.ack(), Ended::AckTimeout);
    again.ack().unwrap();
}

both_backends!(a_late_ack_says_the_timeout_ended_it_even_after_its_consumer_was_dropped);
/// The reason is the queue's record of how the delivery ended, not a guess from what happened
/// since.
fn a_late_ack_says_the_timeout_ended_it_even_after_its_consumer_was_dropped(backend: Backend) {
    let (clock, bus) = manual_bus(backend);
    let jobs = timed_queue(&bus);
    jobs.producer().send(7).unwrap();
    let mut worker = jobs.consumer();
    let late = worker.recv_timeout(WAIT).unwrap();
    clock.advance(PAST_TIMEOUT);
    assert_eq!(jobs.len(), 1, "timed out, ready again");
    drop(worker);
    assert_ended(late.ack(), Ended::AckTimeout);
}

/// Asserts a settle did nothing because its delivery had ended for `reason`.
#[track_caller]
fn assert_ended(result: Result<(), Error>, reason: Ended) {
    match result {
        Err(Error::DeliveryEnded { reason: r, .. }) if r == reason => {}
        other => panic!("expected DeliveryEnded({reason:?}), got {other:?}"),
    }
}

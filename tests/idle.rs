//! `Broker::wait_idle` and its variants: exact under handlers that send on and then ack, with
//! dead-letter queues that have consumers, and in async code.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::thread;
use std::time::Duration;

use common::{Backend, WAIT, both_backends};
use embus::{Error, IdleOptions, QueueOptions, Start};

/// A chain of handlers on their own threads: queue `a` → queue `b` → topic `t` → group `g`,
/// each sending on before it acks what it consumed. After each round's send to `a`,
/// `wait_idle` must not return before the group has counted it (regression: the check looked
/// at one queue after another, and missed work that moved between two looks: 26 of 200 flow
/// tests returned early).
fn chained_rounds(backend: Backend, rounds: u64) {
    let bus = backend.bus();
    // Declared downstream first, so a check may well look at them first.
    let t = bus.topic::<u64>("t").unwrap();
    let b = bus.queue::<u64>("b").unwrap();
    let a = bus.queue::<u64>("a").unwrap();
    let counted = Arc::new(AtomicU64::new(0));
    let mut handlers = Vec::new();
    let (mut from_a, to_b) = (a.consumer(), b.producer());
    handlers.push(thread::spawn(move || {
        while let Ok(m) = from_a.recv() {
            to_b.send(*m.payload()).unwrap();
            m.ack().unwrap();
        }
    }));
    let (mut from_b, to_t) = (b.consumer(), t.producer());
    handlers.push(thread::spawn(move || {
        while let Ok(m) = from_b.recv() {
            to_t.send(*m.payload()).unwrap();
            m.ack().unwrap();
        }
    }));
    let mut member = t.join_group("g").unwrap();
    let seen = Arc::clone(&counted);
    handlers.push(thread::spawn(move || {
        while let Ok(m) = member.recv() {
            seen.fetch_add(1, SeqCst);
            m.ack().unwrap();
        }
    }));
    let producer = a.producer();
    let mut early = 0;
    for round in 1..=rounds {
        producer.send(round).unwrap();
        bus.wait_idle(WAIT).unwrap();
        if counted.load(SeqCst) != round {
            early += 1;
        }
    }
    drop((producer, a, b, t));
    bus.close().unwrap();
    for h in handlers {
        h.join().unwrap();
    }
    assert_eq!(
        early, 0,
        "wait_idle returned early in {early} of {rounds} rounds"
    );
}

#[test]
fn wait_idle_never_returns_while_a_chain_of_handlers_is_still_working() {
    chained_rounds(Backend::Memory, 10_000);
}

#[test]
fn wait_idle_never_returns_while_a_chain_of_durable_handlers_is_still_working() {
    chained_rounds(Backend::Durable, 200);
}

both_backends!(wait_idle_with_dead_letters_waits_for_a_dead_letter_queue_with_a_consumer);
fn wait_idle_with_dead_letters_waits_for_a_dead_letter_queue_with_a_consumer(backend: Backend) {
    let bus = backend.bus();
    let options = QueueOptions::default()
        .max_deliveries(1)
        .dead_letter("jobs.dead");
    let jobs = bus.queue_with::<u32>("jobs", options).unwrap();
    let dead = bus.queue::<u32>("jobs.dead").unwrap();
    jobs.producer().send(1).unwrap();
    let mut worker = jobs.consumer();
    worker.recv_timeout(WAIT).unwrap().nack().unwrap();
    assert_eq!(dead.len(), 1);
    let with_dead_letters = IdleOptions::default().dead_letters(true);

    // Parked, with nobody to consume them: idle either way.
    bus.wait_idle(Duration::ZERO).unwrap();
    bus.wait_idle_with(Duration::ZERO, with_dead_letters)
        .unwrap();

    // A consumer of dead letters is part of the flow when asked.
    let mut letters = dead.consumer();
    bus.wait_idle(Duration::ZERO).unwrap();
    match bus.wait_idle_with(Duration::ZERO, with_dead_letters) {
        Err(Error::NotIdle { busy, .. }) => assert!(busy.contains("jobs.dead"), "{busy}"),
        other => panic!("expected NotIdle, got {other:?}"),
    }
    let handler = thread::spawn(move || letters.recv_timeout(WAIT).unwrap().ack().unwrap());
    bus.wait_idle_with(WAIT, with_dead_letters).unwrap();
    assert!(dead.is_empty());
    handler.join().unwrap();
}

both_backends!(#[tokio::test(flavor = "current_thread")] async wait_idle_async_resolves_when_another_task_acks);
async fn wait_idle_async_resolves_when_another_task_acks(backend: Backend) {
    let bus = backend.bus();
    let jobs = bus.queue::<u32>("jobs").unwrap();
    let sub = bus.topic::<u32>("t").unwrap();
    jobs.producer().send(1).unwrap();
    let _plain = sub.subscribe(Start::Earliest).unwrap(); // not waited for
    match bus.wait_idle_async(Duration::from_millis(1)).await {
        Err(Error::NotIdle { busy, .. }) => assert!(busy.contains("jobs"), "{busy}"),
        other => panic!("expected NotIdle, got {other:?}"),
    }
    let mut worker = jobs.consumer();
    // The ack runs on this same thread, after the wait has started: the wait must not block.
    let ack = async move {
        let m = worker.recv_async().await.unwrap();
        tokio::task::yield_now().await;
        m.ack().unwrap();
    };
    let (idle, ()) = tokio::join!(bus.wait_idle_async(WAIT), ack);
    idle.unwrap();
    assert!(jobs.is_empty());
}

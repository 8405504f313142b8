//! Retries and dead letters: a flaky worker, a backoff between attempts, `max_deliveries`, the
//! dead-letter queue, and a redrive once the bug is fixed.
//!
//! Run it with `cargo run --example retries_and_dead_letters`.

use std::time::Duration;

use embus::{
    Backoff, Broker, DEAD_LETTER_DELIVERIES, DEAD_LETTER_QUEUE, DEAD_LETTER_REASON, GroupOptions,
    QueueOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Broker::memory();

    // A queue of e-mails to send: three attempts each, 20 ms then 40 ms apart, then the
    // message is parked in `emails.dead` with the reason.
    let emails = bus.queue_with::<String>(
        "emails",
        QueueOptions::default()
            .max_deliveries(3)
            .backoff(Backoff::exponential(
                Duration::from_millis(20),
                Duration::from_secs(1),
            ))
            .dead_letter("emails.dead"),
    )?;
    let producer = emails.producer();
    for to in ["ada@example.com", "bad-address", "grace@example.com"] {
        producer.send(to.to_owned())?;
    }

    // A worker whose mail server refuses one address every time.
    let mut worker = emails.consumer();
    let mut sent = 0;
    while sent < 2 || emails.dead_lettered() == 0 {
        let msg = worker.recv_timeout(Duration::from_secs(5))?;
        if msg.payload().contains('@') {
            println!(
                "sent to {} (attempt {})",
                msg.payload(),
                msg.delivery_count()
            );
            msg.ack()?;
            sent += 1;
        } else {
            println!(
                "refused: {} (attempt {})",
                msg.payload(),
                msg.delivery_count()
            );
            msg.nack()?; // the backoff decides when it comes back
        }
    }

    // The dead-letter queue holds the message with why it got there.
    let dead = bus.queue::<String>("emails.dead")?;
    for letter in dead.peek(10) {
        let header =
            |name| String::from_utf8_lossy(letter.headers().get(name).unwrap_or(b"?")).into_owned();
        println!(
            "dead letter {:?}: from `{}`, reason `{}`, after {} deliveries",
            letter.payload(),
            header(DEAD_LETTER_QUEUE),
            header(DEAD_LETTER_REASON),
            header(DEAD_LETTER_DELIVERIES),
        );
    }

    // The address was fixed at the source: move the dead letters back for another try.
    let moved = dead.redrive(&emails, 100)?;
    println!("redrove {moved} message(s)");
    let msg = worker.recv_timeout(Duration::from_secs(5))?;
    println!(
        "back in `emails`: {} (delivery {})",
        msg.payload(),
        msg.delivery_count()
    );
    msg.ack()?;

    // A consumer group gets the same: the failing event is retried after 10 ms, then parked,
    // and the group moves on to the next one.
    let events = bus.topic::<u32>("events")?;
    let mut billing = events.join_group_with(
        "billing",
        GroupOptions::default()
            .max_deliveries(2)
            .backoff(Backoff::fixed(Duration::from_millis(10)))
            .dead_letter("billing.dead"),
    )?;
    for n in 1..=3 {
        events.producer().send(n)?;
    }
    let parked = bus.queue::<u32>("billing.dead")?;
    let mut billed = Vec::new();
    while billed.len() < 2 || parked.is_empty() {
        let msg = billing.recv_timeout(Duration::from_secs(5))?;
        if *msg.payload() == 2 {
            // A transient failure we know the length of: come back in 5 ms.
            msg.nack_after(Duration::from_millis(5))?;
        } else {
            billed.push(*msg.payload());
            msg.ack()?;
        }
    }
    bus.wait_idle(Duration::from_secs(5))?;
    println!(
        "billed {billed:?}; parked {} event(s) in billing.dead",
        parked.len()
    );
    Ok(())
}

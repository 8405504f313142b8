//! embus on tokio: an async producer publishing orders to a topic, a consumer-group member
//! reading them as a `Stream`, a receipt queue worked by two async workers (ack, nack, retry,
//! dead letters), and a `tokio::select!` over two consumers with a shutdown signal. It runs in
//! memory and stops by itself: once everything is handled it closes the bus, which ends every
//! stream and receive.
//!
//! ```text
//! cargo run --example async_tokio
//! ```
//!
//! embus needs no particular runtime: the same futures run on smol, async-std or
//! `futures::executor`.

use std::time::Duration;

use embus::{Broker, Overflow, QueueOptions, Retention, Start, TopicOptions};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u32,
    customer: String,
    cents: u64,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Orders above this raise an alert.
const BIG_ORDER_CENTS: u64 = 1_000;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let bus = Broker::memory();
    // `Overflow::Block` with a small retention: `send_async` waits (without blocking a worker
    // thread) whenever the slowest reader is 8 messages behind.
    let orders = bus.topic_with::<Order>(
        "orders",
        TopicOptions::default()
            .partitions(2)
            .retention(Retention::messages(8))
            .overflow(Overflow::Block),
    )?;
    let alerts = bus.topic::<String>("alerts")?;
    let receipts = bus.queue_with::<String>(
        "receipts",
        QueueOptions::default()
            .capacity(4)
            .max_deliveries(2)
            .dead_letter("receipts.dead"),
    )?;
    let dead = bus.queue::<String>("receipts.dead")?;

    // --- A consumer-group member reading the orders as a Stream ----------------------------
    let mut billing = orders.join_group("billing")?;
    let receipt_producer = receipts.producer();
    let alert_producer = alerts.producer();
    let billing_task = tokio::spawn(async move {
        let mut billed = 0;
        // `stream()` ends when the bus is closed and nothing is left.
        let mut stream = billing.stream();
        while let Some(item) = stream.next().await {
            let order = item?; // `Lagged` cannot happen under `Overflow::Block`
            let Order {
                id,
                customer,
                cents,
                ..
            } = order.payload().clone();
            billed += cents;
            println!("billing  order {id} for {customer}: {cents} cents");
            if cents > BIG_ORDER_CENTS {
                alert_producer
                    .send_async(format!("big order {id} ({cents} cents)"))
                    .await?;
            }
            // Waits for room in the 4-slot queue: backpressure from the workers.
            receipt_producer
                .send_async(format!("receipt-{id}-{customer}"))
                .await?;
            order.ack()?; // the group moves past it only now: at-least-once
        }
        Ok::<u64, BoxError>(billed)
    });

    // --- Two async workers on the receipt queue ----------------------------------------------
    let workers: Vec<_> = (1..=2)
        .map(|n| {
            let mut worker = receipts.consumer();
            tokio::spawn(async move {
                let mut sent = 0u32;
                // `Err(Disconnected)` once the bus is closed ends the loop.
                while let Ok(job) = worker.recv_async().await {
                    // Pretend mailing some customer's receipts fails every time.
                    if job.payload().ends_with("mallory") {
                        println!(
                            "worker {n} failed {} (delivery {})",
                            job.payload(),
                            job.delivery_count()
                        );
                        job.nack()?; // redelivered once, then dead-lettered
                    } else {
                        tokio::time::sleep(Duration::from_millis(2)).await; // the "mailing"
                        println!("worker {n} mailed {}", job.payload());
                        job.ack()?;
                        sent += 1;
                    }
                }
                Ok::<u32, BoxError>(sent)
            })
        })
        .collect();

    // --- select! over two consumers, with a shutdown signal -----------------------------------
    let mut alert_feed = alerts.subscribe(Start::Earliest)?;
    let mut dead_letters = dead.consumer();
    let (shutdown, mut shutdown_rx) = oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        let (mut alerts_seen, mut dead_seen) = (0u32, 0u32);
        loop {
            // Receives are cancel safe: the branch that loses the race loses no message.
            tokio::select! {
                alert = alert_feed.recv_async() => {
                    let Ok(alert) = alert else { break };
                    println!("watcher  ALERT: {}", alert.payload());
                    alerts_seen += 1;
                }
                letter = dead_letters.recv_async() => {
                    let Ok(letter) = letter else { break };
                    let reason = letter.headers().get(embus::DEAD_LETTER_REASON).unwrap_or_default();
                    println!("watcher  dead letter: {} ({})", letter.payload(),
                        String::from_utf8_lossy(reason));
                    letter.ack()?;
                    dead_seen += 1;
                }
                _ = &mut shutdown_rx => {
                    println!("watcher  shutting down");
                    break;
                }
            }
        }
        Ok::<(u32, u32), BoxError>((alerts_seen, dead_seen))
    });

    // --- The async producer ----------------------------------------------------------------
    let producer = orders.producer();
    let customers = ["ada", "grace", "mallory", "linus", "ada", "barbara"];
    for (i, customer) in customers.into_iter().cycle().take(12).enumerate() {
        let id = i as u32 + 1;
        let order = Order {
            id,
            customer: customer.to_owned(),
            cents: 150 * u64::from(id),
        };
        let receipt = producer.send_async(order).await?;
        println!(
            "producer sent order {id} -> partition {}, offset {}",
            receipt.partition, receipt.offset
        );
    }
    drop(producer);

    // --- Shutdown: wait until everything is handled, then close ------------------------------
    // `wait_idle` blocks, so it runs on tokio's blocking pool, not on a worker.
    let idle = bus.clone();
    tokio::task::spawn_blocking(move || idle.wait_idle(Duration::from_secs(5))).await??;
    let _ = shutdown.send(());
    let (alerts_seen, dead_seen) = watcher.await??;
    bus.close()?; // ends the billing stream and the workers' receives

    let billed = billing_task.await??;
    let mut mailed = 0;
    for worker in workers {
        mailed += worker.await??;
    }
    println!(
        "done: billed {billed} cents, mailed {mailed} receipts, {alerts_seen} alerts, \
         {dead_seen} dead letters ({} dead-lettered in total)",
        receipts.dead_lettered()
    );
    Ok(())
}

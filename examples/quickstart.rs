//! The quickstart: a topic with an audit subscriber and a billing consumer group, and a job
//! queue with two workers, a retry and a dead-letter queue, in memory; then the same API on a
//! durable store (a redb file in the system's temp directory) that survives a restart.
//! Nothing to install.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::thread;
use std::time::Duration;

use embus::{Broker, QueueOptions, Record, Start, TopicOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u32,
    customer: String,
    cents: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Broker::memory();

    // --- Publish/subscribe -------------------------------------------------------------
    let orders = bus.topic_with::<Order>("orders", TopicOptions::default().partitions(2))?;
    let mut audit = orders.subscribe(Start::Earliest)?; // sees every order
    let mut billing = orders.join_group("billing")?; // shares partitions with its group

    let producer = orders.producer();
    for (id, customer) in [(1, "ada"), (2, "grace"), (3, "ada")] {
        let order = Order {
            id,
            customer: customer.into(),
            cents: 250 * u64::from(id),
        };
        // The key keeps one customer's orders in one partition, in order.
        let receipt = producer.send_record(Record::new(order).key(customer))?;
        println!(
            "sent order {id} for {customer} -> partition {}, offset {}",
            receipt.partition, receipt.offset
        );
    }

    for _ in 0..3 {
        let m = audit.recv()?;
        println!(
            "audit   saw order {} (partition {}, offset {})",
            m.payload().id,
            m.partition(),
            m.offset()
        );
    }
    let mut billed = 0;
    for _ in 0..3 {
        let m = billing.recv()?;
        billed += m.payload().cents;
        m.ack()?; // the group moves past it
    }
    println!(
        "billing charged {billed} cents; group position {:?}",
        orders.group_position("billing")
    );

    // --- Point-to-point with retries and dead letters ----------------------------------
    let jobs = bus.queue_with::<String>(
        "thumbnails",
        QueueOptions::default()
            .max_deliveries(2)
            .dead_letter("thumbnails.dead"),
    )?;
    let dead = bus.queue::<String>("thumbnails.dead")?;
    jobs.producer().send_batch(vec![
        "cat.png".into(),
        "corrupt.png".into(),
        "dog.png".into(),
    ])?;

    let workers: Vec<_> = (1..=2)
        .map(|n| {
            let mut worker = jobs.consumer();
            thread::spawn(move || -> Result<(), embus::Error> {
                while let Ok(job) = worker.recv_timeout(Duration::from_millis(200)) {
                    if job.payload().starts_with("corrupt") {
                        println!(
                            "worker {n} failed {} (delivery {})",
                            job.payload(),
                            job.delivery_count()
                        );
                        job.nack()?; // retried, then dead-lettered
                    } else {
                        println!("worker {n} resized {}", job.payload());
                        job.ack()?;
                    }
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| "worker panicked")??;
    }

    let mut letters = dead.consumer(); // dropping a consumer releases what it holds
    let letter = letters.recv_timeout(Duration::from_secs(1))?;
    let reason = String::from_utf8_lossy(
        letter
            .headers()
            .get(embus::DEAD_LETTER_REASON)
            .unwrap_or_default(),
    );
    println!("dead letter: {} (reason: {reason})", letter.payload());
    letter.ack()?;

    bus.wait_idle(Duration::from_secs(1))?;
    println!(
        "bus idle: {} jobs left, {} dead-lettered",
        jobs.len(),
        jobs.dead_lettered()
    );
    bus.close()?;

    durable()
}

/// The same API on a file: what was sent and not yet acked is there after a restart.
fn durable() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("embus-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("shop.embus");
    {
        let bus = Broker::open(&path)?; // every send returns once it is fsynced
        let jobs = bus.queue::<String>("invoices")?;
        jobs.producer()
            .send_batch(vec!["invoice-1".into(), "invoice-2".into()])?; // one commit
        let mut worker = jobs.consumer();
        let first = worker.recv()?;
        println!("durable: sent 2 invoices, acking {}", first.payload());
        first.ack()?;
        bus.close()?; // the writer thread commits what is queued and stops
    }
    let bus = Broker::open(&path)?; // a restart
    let jobs = bus.queue::<String>("invoices")?;
    let mut worker = jobs.consumer();
    let left = worker.recv()?;
    println!(
        "durable: after reopening {}, {} is still there (delivery {})",
        path.display(),
        left.payload(),
        left.delivery_count()
    );
    left.ack()?;
    bus.close()?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

//! Two services that outgrew one process, joined through NATS JetStream.
//!
//! The order service keeps its durable embus topic as the outbox; an outbound bridge relays it
//! into the `ORDERS` stream, acking each order locally only after JetStream's `PubAck`. The
//! billing service, with a broker of its own, relays the stream back in through a durable
//! consumer, storing each order once (the dedupe window drops redeliveries) before it acks it
//! on the server.
//!
//! Needs NATS with JetStream on 127.0.0.1:4222 (or `NATS_URL`); run it with
//! `cargo run --example bridge_nats`.

use std::time::Duration;

use embus::bridge::{DeadLetter, nats};
use embus::{Broker, Dedupe, Record, Start, TopicOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order: u64,
    item: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let stream = format!("ORDERS_{}", std::process::id());
    let subject = format!("orders.{}.placed", std::process::id());
    if let Err(error) = create_stream(&url, &stream, &subject) {
        println!(
            "NATS JetStream is not reachable at {url} ({error}); start it to run this example."
        );
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("embus-bridge-nats-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // The order service: its topic is the outbox, relayed out with confirms.
    let orders_bus = Broker::open(dir.join("orders.embus"))?;
    let placed = orders_bus.topic::<OrderPlaced>("order-placed")?;
    let parked = orders_bus.queue::<DeadLetter>("bridge-dead-letters")?;
    let out = nats::Outbound::new(&url, &subject).start(placed.join_group("to-nats")?, &parked)?;
    for (order, item) in [(1, "espresso"), (2, "flat white"), (3, "cortado")] {
        let event = OrderPlaced {
            order,
            item: item.into(),
        };
        placed
            .producer()
            .send_record(Record::new(event).key(format!("customer-{}", order % 2)))?;
    }

    // The billing service: another broker, fed from the stream, each order stored once.
    let billing_bus = Broker::open(dir.join("billing.embus"))?;
    let to_bill = billing_bus.topic_with::<OrderPlaced>(
        "to-bill",
        TopicOptions::default().dedupe(Dedupe::within(Duration::from_secs(600))),
    )?;
    let billing_parked = billing_bus.queue::<DeadLetter>("bridge-dead-letters")?;
    let inbound =
        nats::Inbound::new(&url, &stream, "billing").start(to_bill.producer(), &billing_parked)?;
    let mut billing = to_bill.subscribe(Start::Earliest)?;
    for _ in 0..3 {
        let m = billing.recv_timeout(Duration::from_secs(10))?;
        println!(
            "billing got order {} ({}) with id {}",
            m.payload().order,
            m.payload().item,
            m.id().unwrap_or("-")
        );
    }
    // The acks on the server follow the local commits.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while inbound.stats().forwarded < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("outbound: {:?}", out.stats());
    println!("inbound:  {:?}", inbound.stats());
    out.stop()?;
    inbound.stop()?;
    delete_stream(&url, &stream);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The stream is infrastructure, made by whoever runs NATS; the example makes its own.
fn create_stream(url: &str, stream: &str, subject: &str) -> Result<(), async_nats::Error> {
    runtime()?.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(url)
            .await?;
        async_nats::jetstream::new(client)
            .create_stream(async_nats::jetstream::stream::Config {
                name: stream.into(),
                subjects: vec![subject.into()],
                ..Default::default()
            })
            .await?;
        Ok(())
    })
}

fn delete_stream(url: &str, stream: &str) {
    if let Ok(runtime) = runtime() {
        let _ = runtime.block_on(async {
            let client = async_nats::connect(url).await?;
            async_nats::jetstream::new(client)
                .delete_stream(stream)
                .await?;
            Ok::<(), async_nats::Error>(())
        });
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

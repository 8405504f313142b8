//! A topic relayed out to a RabbitMQ exchange, and back in through a queue bound to it.
//!
//! ```text
//! cargo run --example bridge_amqp --features amqp
//! ```
//!
//! It talks to RabbitMQ on loopback (or at `AMQP_URL`), declares the exchange and queue it
//! needs with `lapin`, and deletes them at the end. Without a server it says so and exits
//! successfully.

use std::time::{Duration, Instant};

use embus::bridge::DeadLetter;
use embus::bridge::amqp::{Inbound, Outbound};
use embus::{Broker, Dedupe, Record, Start, TopicOptions};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};

const EXCHANGE: &str = "embus.example";
const QUEUE: &str = "embus.example.orders";

/// Declares (`up`) or deletes the example's exchange and its bound queue on the server. The
/// bridges themselves only check that they exist.
fn topology(url: &str, up: bool) -> Result<(), lapin::Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|error| lapin::Error::from(lapin::ErrorKind::IOError(error.into())))?;
    rt.block_on(async {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        if up {
            let (kind, none) = (ExchangeKind::Direct, FieldTable::default());
            let options = ExchangeDeclareOptions::default();
            channel
                .exchange_declare(EXCHANGE.into(), kind, options, none.clone())
                .await?;
            let options = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            channel
                .queue_declare(QUEUE.into(), options, none.clone())
                .await?;
            let options = QueueBindOptions::default();
            channel
                .queue_bind(
                    QUEUE.into(),
                    EXCHANGE.into(),
                    "orders".into(),
                    options,
                    none,
                )
                .await?;
        } else {
            channel
                .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
                .await?;
            channel
                .exchange_delete(EXCHANGE.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        connection.close(200, "done".into()).await
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
    if let Err(error) = topology(&url, true) {
        // (The error names no credentials; the URL would.)
        println!("RabbitMQ is not reachable ({error}); nothing to show.");
        return Ok(());
    }
    let result = relay(&url);
    topology(&url, false)?;
    result
}

fn relay(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let broker = Broker::memory();
    let orders = broker.topic::<u64>("orders")?;
    // What comes back in is deduplicated by its AMQP message_id.
    let options = TopicOptions::default().dedupe(Dedupe::within(Duration::from_secs(600)));
    let returned = broker.topic_with::<u64>("orders.returned", options)?;
    let dead = broker.queue::<DeadLetter>("bridge.dead")?;

    for i in 0..10u64 {
        orders
            .producer()
            .send_record(Record::new(i).key("customer-7").id(format!("order-{i}")))?;
    }

    // Out: the group `to-rabbit` reads `orders`; each message is acked once RabbitMQ confirms it.
    let out = Outbound::new(url, EXCHANGE)
        .routing_key("orders")
        .start(orders.join_group("to-rabbit")?, &dead)?;
    // In: the queue bound to the exchange, into `orders.returned`.
    let inb = Inbound::new(url, QUEUE).start(returned.producer(), &dead)?;

    let mut reader = returned.subscribe(Start::Earliest)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut back = 0;
    while back < 10 && Instant::now() < deadline {
        if let Ok(message) = reader.recv_timeout(Duration::from_millis(500)) {
            println!(
                "back from RabbitMQ: {} (id {})",
                message.payload(),
                message.id().unwrap_or("-")
            );
            back += 1;
        }
    }
    // The counters move just after the messages do (confirm, then count; store, then count).
    while inb.stats().forwarded < back && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (sent, received) = (out.stats().forwarded, inb.stats().forwarded);
    println!("confirmed by RabbitMQ: {sent}; stored back here: {received}");
    out.stop()?;
    inb.stop()?;
    println!(
        "{back} of 10 orders made the round trip; dead letters: {}",
        dead.len()
    );
    Ok(())
}

//! A topic relayed out to a RabbitMQ exchange, and back in through a queue bound to it.
//!
//! Needs RabbitMQ on loopback (or `AMQP_URL`), and the exchange `embus.example` and queue
//! `embus.example` bound to it with routing key `orders`:
//!
//! ```text
//! rabbitmqadmin declare exchange name=embus.example type=direct
//! rabbitmqadmin declare queue name=embus.example durable=true
//! rabbitmqadmin declare binding source=embus.example destination=embus.example routing_key=orders
//! cargo run --example bridge_amqp --features amqp
//! ```
//!
//! Without a server it says so and exits successfully.

use std::time::{Duration, Instant};

use embus::bridge::amqp::{Inbound, Outbound};
use embus::bridge::{BridgeError, DeadLetter};
use embus::{Broker, Dedupe, Record, Start, TopicOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
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
    let out = match Outbound::new(url.as_str(), "embus.example")
        .routing_key("orders")
        .start(orders.join_group("to-rabbit")?, &dead)
    {
        Ok(bridge) => bridge,
        Err(error @ (BridgeError::Connect { .. } | BridgeError::Auth { .. })) => {
            println!("RabbitMQ is not reachable ({error}); nothing to show.");
            return Ok(());
        }
        Err(error @ BridgeError::NoExchange { .. }) => {
            println!("{error}: declare it as this example's docs say, then run it again.");
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    // In: the queue bound to the exchange, into `orders.returned`.
    let inb = match Inbound::new(url.as_str(), "embus.example").start(returned.producer(), &dead) {
        Ok(bridge) => bridge,
        Err(error @ BridgeError::NoSource { .. }) => {
            println!("{error}: declare and bind it as this example's docs say.");
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };

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
    println!("out: {:?}", out.stats());
    println!("in:  {:?}", inb.stats());
    out.stop()?;
    inb.stop()?;
    println!(
        "{back} of 10 orders made the round trip; dead letters: {}",
        dead.len()
    );
    Ok(())
}

//! The servers the bridges relay through, as the multi-process bridge tests use them
//! ([`Server`]): NATS JetStream ([`Nats`]) and RabbitMQ ([`Amqp`]).

use std::time::Duration;

use embus::bridge::{Bridge, DeadLetter, amqp as amqp_bridge, nats as nats_bridge};
use embus::{Consumer, Payload, Producer, Queue};

use super::amqp_admin::AmqpAdmin;
use super::nats_admin::NatsAdmin;
use super::services::{amqp, nats, unique};

/// A server the bridges relay through, as these tests use it: the parent creates what a test
/// relays through and inspects it; a child attaches to it by name and starts bridges.
pub trait Server: Sized {
    /// Its name in `EMBUS_PROC_SERVER`.
    const NAME: &'static str;
    /// Whether the server stores a republished message id once (JetStream's duplicate
    /// window). Without it, a crash between the confirm and the local ack stores a copy.
    const DEDUPES_BY_ID: bool;
    /// Whether an inbound bridge gives a message published without an id one that its
    /// redeliveries share (JetStream: stream/sequence/time). Without it, only messages
    /// published with an id can be deduplicated.
    const ASSIGNS_IDS: bool;

    /// The server's URL, or `None` (after a `SKIPPED:` line; the test returns).
    fn probe() -> Option<String>;
    /// The server's URL.
    fn url(&self) -> &str;
    /// Parent: something fresh to relay through, named after `prefix`; deleted on drop.
    fn create(url: &str, prefix: &str) -> Self;
    /// The names a child needs, as one line.
    fn route(&self) -> String;
    /// Child: the same names, without the right to delete anything.
    fn attach(url: &str, route: &str) -> Self;
    /// Parent, before any inbound bridge starts: makes the server redeliver soon what a killed
    /// reader left unacked.
    fn prepare_for_crashes(&self);
    /// Child: an outbound bridge from `source`.
    fn outbound<T: Payload>(&self, source: Consumer<T>, parked: &Queue<DeadLetter>) -> Bridge;
    /// Child: an inbound bridge into `target`.
    fn inbound<T: Payload>(
        &self,
        target: Producer<T>,
        parked: &Queue<DeadLetter>,
        window: usize,
    ) -> Bridge;
    /// Parent: puts one message where an inbound bridge reads, with its confirm.
    fn publish(&self, id: Option<&str>, payload: &[u8]);
    /// Parent: how many messages the server holds.
    fn count(&self) -> u64;
    /// Parent, at the end of a test: every message the server holds, in order: (message id,
    /// payload). It may take them (AMQP).
    fn stored(&self) -> Vec<(Option<String>, Vec<u8>)>;
    /// Parent: messages the inbound bridge's source has not had acked, as far as the server
    /// says: RabbitMQ counts only those not yet delivered, so 0 there does not mean all acked.
    fn unacked(&self) -> u64;
    /// Parent: deliveries to the inbound bridge so far, redeliveries included, if the server
    /// says (for the report only).
    fn deliveries(&self) -> Option<u64>;
}

/// NATS JetStream: a stream on `<name>.>` with a 10-minute duplicate window, its subject
/// `<name>.in`, and durable consumer `<name>_in`.
pub struct Nats {
    url: String,
    stream: String,
    subject: String,
    durable: String,
    /// The parent's: it deletes the stream on drop.
    admin: Option<NatsAdmin>,
}

impl Nats {
    fn admin(&self) -> &NatsAdmin {
        self.admin
            .as_ref()
            .expect("only the parent inspects the server")
    }
}

impl Server for Nats {
    const NAME: &'static str = "nats";
    const DEDUPES_BY_ID: bool = true;
    const ASSIGNS_IDS: bool = true;

    fn probe() -> Option<String> {
        nats()
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn create(url: &str, prefix: &str) -> Self {
        let admin = NatsAdmin::connect(url);
        let stream = unique(prefix).replace(['-', '.'], "_");
        admin.create_stream(&stream, &[&format!("{stream}.>")]);
        Self {
            url: url.to_string(),
            subject: format!("{stream}.in"),
            durable: format!("{stream}_in"),
            stream,
            admin: Some(admin),
        }
    }

    fn route(&self) -> String {
        format!("{} {} {}", self.stream, self.subject, self.durable)
    }

    fn attach(url: &str, route: &str) -> Self {
        let names: Vec<&str> = route.split_whitespace().collect();
        let [stream, subject, durable] = names[..] else {
            panic!("bad route {route:?}");
        };
        Self {
            url: url.to_string(),
            stream: stream.to_string(),
            subject: subject.to_string(),
            durable: durable.to_string(),
            admin: None,
        }
    }

    fn prepare_for_crashes(&self) {
        // The bridge would create the consumer with the server's 30 s ack wait and at most
        // 2 × window unacked. What a killed bridge held then fills that limit, and the bridge
        // started next gets nothing until the ack wait ends: with 4 kills the inbound test took
        // 91 s instead of 3 (each restart waited 30 s). A 2 s ack wait and room for what the
        // killed ones held keep each restart busy at once; the dedupe window drops what a slow
        // commit might get twice.
        self.admin()
            .create_consumer(&self.stream, &self.durable, Duration::from_secs(2), 100_000);
    }

    fn outbound<T: Payload>(&self, source: Consumer<T>, parked: &Queue<DeadLetter>) -> Bridge {
        nats_bridge::Outbound::new(&self.url, &self.subject)
            .start(source, parked)
            .expect("child: start the outbound bridge")
    }

    fn inbound<T: Payload>(
        &self,
        target: Producer<T>,
        parked: &Queue<DeadLetter>,
        window: usize,
    ) -> Bridge {
        nats_bridge::Inbound::new(&self.url, &self.stream, &self.durable)
            .window(window)
            .start(target, parked)
            .expect("child: start the inbound bridge")
    }

    fn publish(&self, id: Option<&str>, payload: &[u8]) {
        self.admin().publish(&self.subject, id, payload);
    }

    fn count(&self) -> u64 {
        self.admin().count(&self.stream)
    }

    fn stored(&self) -> Vec<(Option<String>, Vec<u8>)> {
        let all = self.admin().read_all(&self.stream);
        all.into_iter().map(|m| (m.id, m.payload)).collect()
    }

    fn unacked(&self) -> u64 {
        self.admin().unacked(&self.stream, &self.durable)
    }

    fn deliveries(&self) -> Option<u64> {
        let info = self.admin().consumer_info(&self.stream, &self.durable);
        Some(info.delivered.consumer_sequence)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(admin) = &self.admin {
            admin.delete_stream(&self.stream);
        }
    }
}

/// RabbitMQ: a durable direct exchange and a durable queue bound to it with the queue's name as
/// the routing key. The outbound bridge publishes to the exchange, the inbound one consumes the
/// queue.
pub struct Amqp {
    url: String,
    exchange: String,
    queue: String,
    /// The parent's: it deletes the exchange and the queue on drop.
    admin: Option<AmqpAdmin>,
}

impl Amqp {
    fn admin(&self) -> &AmqpAdmin {
        self.admin
            .as_ref()
            .expect("only the parent inspects the server")
    }
}

impl Server for Amqp {
    const NAME: &'static str = "amqp";
    const DEDUPES_BY_ID: bool = false;
    const ASSIGNS_IDS: bool = false;

    fn probe() -> Option<String> {
        amqp()
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn create(url: &str, prefix: &str) -> Self {
        let mut admin = AmqpAdmin::connect(url);
        let exchange = admin.exchange(prefix);
        let queue = admin.queue(prefix, None);
        admin.bind(&queue, &exchange, &queue);
        Self {
            url: url.to_string(),
            exchange,
            queue,
            admin: Some(admin),
        }
    }

    fn route(&self) -> String {
        format!("{} {}", self.exchange, self.queue)
    }

    fn attach(url: &str, route: &str) -> Self {
        let names: Vec<&str> = route.split_whitespace().collect();
        let [exchange, queue] = names[..] else {
            panic!("bad route {route:?}");
        };
        Self {
            url: url.to_string(),
            exchange: exchange.to_string(),
            queue: queue.to_string(),
            admin: None,
        }
    }

    fn prepare_for_crashes(&self) {
        // Nothing: RabbitMQ requeues what a consumer had not acked as soon as its connection
        // closes, and a killed process's connection closes with it.
    }

    fn outbound<T: Payload>(&self, source: Consumer<T>, parked: &Queue<DeadLetter>) -> Bridge {
        amqp_bridge::Outbound::new(&self.url, &self.exchange)
            .routing_key(&self.queue)
            .start(source, parked)
            .expect("child: start the outbound bridge")
    }

    fn inbound<T: Payload>(
        &self,
        target: Producer<T>,
        parked: &Queue<DeadLetter>,
        window: usize,
    ) -> Bridge {
        amqp_bridge::Inbound::new(&self.url, &self.queue)
            .window(window)
            .start(target, parked)
            .expect("child: start the inbound bridge")
    }

    fn publish(&self, id: Option<&str>, payload: &[u8]) {
        self.admin().publish(&self.queue, id, None, payload);
    }

    fn count(&self) -> u64 {
        u64::from(self.admin().count(&self.queue))
    }

    fn stored(&self) -> Vec<(Option<String>, Vec<u8>)> {
        let all = self.admin().drain(&self.queue);
        all.into_iter().map(|m| (m.id, m.payload)).collect()
    }

    fn unacked(&self) -> u64 {
        // Without the management plugin, only the ready ones.
        self.count()
    }

    fn deliveries(&self) -> Option<u64> {
        None
    }
}

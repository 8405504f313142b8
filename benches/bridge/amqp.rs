//! The RabbitMQ far side of `benches/bridge.rs`: lapin as the raw client (the embus AMQP bridge
//! is not in this tree yet).

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use embus::bridge::{Bridge, DeadLetter};
use embus::{Consumer, Queue};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::{Event, Far, RawSender, Target, runtime, services};

/// RabbitMQ through lapin: a direct exchange and a durable queue bound to it, persistent
/// messages published with `mandatory` and publisher confirms. embus's AMQP bridge is not in
/// this tree yet: [`bridge`](Far::bridge) returns `None`, and only the raw side runs.
///
/// No connection stays open between operations, so no lapin I/O thread is alive while the other
/// server's sections run on this 2-core machine.
pub(super) struct Amqp {
    url: String,
    runtime: tokio::runtime::Runtime,
}

impl Amqp {
    pub(super) fn new(url: String) -> Self {
        Self {
            url,
            runtime: runtime(),
        }
    }

    /// Runs `op` on a channel of a connection made for it, and closes the connection.
    fn admin<R>(&self, op: impl AsyncFnOnce(&lapin::Channel) -> R) -> R {
        self.runtime.block_on(async {
            let (connection, channel) = Self::connect(&self.url, false).await;
            let result = op(&channel).await;
            let _ = connection.close(200, "done".into()).await;
            result
        })
    }

    /// A connection and a channel, in confirm mode if `confirms`.
    async fn connect(url: &str, confirms: bool) -> (lapin::Connection, lapin::Channel) {
        let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("a channel");
        if confirms {
            channel
                .confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await
                .expect("confirm mode");
        }
        (connection, channel)
    }

    /// Publishes one event as the bridge would: JSON, `message_id`, persistent, mandatory.
    async fn publish(
        channel: &lapin::Channel,
        target: &Target,
        event: &Event,
    ) -> lapin::PublisherConfirm {
        let payload = serde_json::to_vec(event).expect("JSON");
        let properties = lapin::BasicProperties::default()
            .with_message_id(format!("events/0/{}", event.n).into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let options = lapin::options::BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        channel
            .basic_publish(
                target.name.as_str().into(),
                target.subject.as_str().into(),
                options,
                &payload,
                properties,
            )
            .await
            .expect("publish")
    }

    /// A confirm that is an ack, and not a return (unroutable).
    fn check(confirmation: lapin::Result<lapin::Confirmation>) {
        let confirmation = confirmation.expect("a confirm");
        assert!(confirmation.is_ack(), "nacked: {confirmation:?}");
        assert!(
            confirmation.take_message().is_none(),
            "returned: unroutable"
        );
    }
}

impl Far for Amqp {
    fn name(&self) -> &'static str {
        "AMQP"
    }

    fn create(&self) -> Target {
        let name = services::unique("bench-bridge");
        let target = Target {
            subject: "events".to_string(),
            name,
        };
        self.admin(async |channel| {
            let args = lapin::types::FieldTable::default;
            channel
                .exchange_declare(
                    target.name.as_str().into(),
                    lapin::ExchangeKind::Direct,
                    lapin::options::ExchangeDeclareOptions::default(),
                    args(),
                )
                .await
                .expect("declare the exchange");
            let durable = lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            channel
                .queue_declare(target.name.as_str().into(), durable, args())
                .await
                .expect("declare the queue");
            channel
                .queue_bind(
                    target.name.as_str().into(),
                    target.name.as_str().into(),
                    target.subject.as_str().into(),
                    lapin::options::QueueBindOptions::default(),
                    args(),
                )
                .await
                .expect("bind the queue");
        });
        target
    }

    fn delete(&self, target: &Target) {
        self.admin(async |channel| {
            let _ = channel
                .queue_delete(target.name.as_str().into(), Default::default())
                .await;
            let _ = channel
                .exchange_delete(target.name.as_str().into(), Default::default())
                .await;
        });
    }

    fn stored(&self, target: &Target) -> u64 {
        self.admin(async |channel| {
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                durable: true,
                ..Default::default()
            };
            let queue = channel
                .queue_declare(target.name.as_str().into(), passive, Default::default())
                .await
                .expect("the queue");
            u64::from(queue.message_count())
        })
    }

    fn raw_publish(&self, target: &Target, events: &[Event], window: usize) -> Duration {
        self.runtime.block_on(async {
            let start = Instant::now();
            let (connection, channel) = Self::connect(&self.url, true).await;
            let mut confirms = FuturesUnordered::new();
            for event in events {
                if confirms.len() >= window {
                    Self::check(confirms.next().await.expect("a confirm in flight"));
                }
                confirms.push(Self::publish(&channel, target, event).await);
            }
            while let Some(confirmation) = confirms.next().await {
                Self::check(confirmation);
            }
            let elapsed = start.elapsed();
            let _ = connection.close(200, "done".into()).await;
            elapsed
        })
    }

    fn bridge(
        &self,
        target: &Target,
        source: Consumer<Event>,
        dead_letters: &Queue<DeadLetter>,
        window: usize,
    ) -> Option<Bridge> {
        Some(
            embus::bridge::amqp::Outbound::new(&self.url, &target.name)
                .routing_key(&target.subject)
                .window(window)
                .start(source, dead_letters)
                .expect("start the AMQP bridge"),
        )
    }

    fn raw_sender(&self, target: &Target) -> Box<dyn RawSender> {
        let runtime = runtime();
        let (connection, channel) = runtime.block_on(Self::connect(&self.url, true));
        Box::new(AmqpSender {
            runtime,
            channel,
            connection,
            target: Target {
                name: target.name.clone(),
                subject: target.subject.clone(),
            },
        })
    }

    fn listen(&self, target: &Target, count: usize) -> JoinHandle<Vec<(u64, Instant)>> {
        let (ready, started) = mpsc::channel();
        let url = self.url.clone();
        let queue = target.name.clone();
        let handle = std::thread::spawn(move || {
            runtime().block_on(async move {
                let (connection, channel) = Self::connect(&url, false).await;
                let no_ack = lapin::options::BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                };
                let mut deliveries = channel
                    .basic_consume(
                        queue.as_str().into(),
                        "bench".into(),
                        no_ack,
                        Default::default(),
                    )
                    .await
                    .expect("consume");
                ready.send(()).expect("bench waiting");
                let mut got = Vec::with_capacity(count);
                while got.len() < count {
                    let delivery = deliveries.next().await.expect("consumer open");
                    let at = Instant::now();
                    let delivery = delivery.expect("a delivery");
                    let event: Event = serde_json::from_slice(&delivery.data).expect("JSON");
                    got.push((event.n, at));
                }
                let _ = connection.close(200, "done".into()).await;
                got
            })
        });
        started.recv().expect("the listener started");
        handle
    }
}

struct AmqpSender {
    runtime: tokio::runtime::Runtime,
    channel: lapin::Channel,
    connection: lapin::Connection,
    target: Target,
}

impl Drop for AmqpSender {
    fn drop(&mut self) {
        let _ = self
            .runtime
            .block_on(self.connection.close(200, "done".into()));
    }
}

impl RawSender for AmqpSender {
    fn send(&mut self, event: &Event) {
        self.runtime.block_on(async {
            let confirm = Amqp::publish(&self.channel, &self.target, event).await;
            Amqp::check(confirm.await);
        });
    }
}

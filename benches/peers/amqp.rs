//! The RabbitMQ side of `benches/peers.rs` (lapin): a durable classic queue, persistent
//! messages with publisher confirms (at most `BATCH` unconfirmed), manual acks.

use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::{BATCH, Ctx, Flow, POLL, Peer, e2e, payload, ping, runtime, seq_of, services};

/// RabbitMQ through lapin.
pub(super) struct Rabbit {
    url: String,
    /// Runs the admin calls and the latency test's publishes.
    runtime: tokio::runtime::Runtime,
}

/// A connection and a channel, in confirm mode if `confirms`.
async fn connect(url: &str, confirms: bool) -> (Connection, Channel) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("a channel");
    if confirms {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
    }
    (connection, channel)
}

/// Publishes message `seq` to `queue` through the default exchange, persistent.
async fn publish(channel: &Channel, queue: &str, seq: u64) -> lapin::PublisherConfirm {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &payload(seq),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
}

/// A confirm that is an ack.
fn check(confirmation: lapin::Result<lapin::Confirmation>) {
    let confirmation = confirmation.expect("a confirm");
    assert!(confirmation.is_ack(), "nacked: {confirmation:?}");
}

/// Publishes from `from` until `deadline` (checked every `BATCH`), at most `BATCH` unconfirmed,
/// then awaits every confirm; returns how many.
async fn publish_until(channel: &Channel, queue: &str, from: u64, deadline: Instant) -> u64 {
    let mut confirms = FuturesUnordered::new();
    let mut n = from;
    loop {
        for seq in n..n + BATCH as u64 {
            if confirms.len() >= BATCH {
                check(confirms.next().await.expect("a confirm in flight"));
            }
            confirms.push(publish(channel, queue, seq).await);
        }
        n += BATCH as u64;
        if Instant::now() >= deadline {
            break;
        }
    }
    while let Some(confirmation) = confirms.next().await {
        check(confirmation);
    }
    n - from
}

/// A manual-ack consumer on `queue` with a prefetch of `BATCH`.
async fn consume(url: &str, queue: &str) -> (Connection, lapin::Consumer) {
    let (connection, channel) = connect(url, false).await;
    channel
        .basic_qos(BATCH as u16, BasicQosOptions::default())
        .await
        .expect("prefetch");
    let consumer = channel
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    (connection, consumer)
}

impl Rabbit {
    pub(super) fn new(url: String) -> Self {
        Self {
            url,
            runtime: runtime(),
        }
    }

    /// Runs `op` on a channel of a connection made for it, and closes the connection.
    fn admin<R>(&self, op: impl AsyncFnOnce(&Channel) -> R) -> R {
        self.runtime.block_on(async {
            let (connection, channel) = connect(&self.url, false).await;
            let result = op(&channel).await;
            let _ = connection.close(200, "done".into()).await;
            result
        })
    }

    /// A fresh durable queue.
    fn create(&self) -> String {
        let name = services::unique("embus-bench");
        self.admin(async |channel| {
            let durable = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            channel
                .queue_declare(name.as_str().into(), durable, FieldTable::default())
                .await
                .expect("declare the queue");
        });
        name
    }

    fn delete(&self, queue: &str) {
        self.admin(async |channel| {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await
                .expect("delete the queue");
        });
    }
}

impl Peer for Rabbit {
    fn name(&self) -> &'static str {
        "RabbitMQ"
    }

    fn durability(&self) -> &'static str {
        "durable queue, persistent, confirms"
    }

    fn produce(&self, ctx: &Ctx, warm: bool) -> f64 {
        let queue = self.create();
        let rate = self.runtime.block_on(async {
            let (connection, channel) = connect(&self.url, true).await;
            // Untimed: the first publish.
            check(publish(&channel, &queue, 0).await.await);
            let start = Instant::now();
            let n = publish_until(&channel, &queue, 1, start + ctx.window(warm)).await;
            let rate = n as f64 / start.elapsed().as_secs_f64();
            let _ = connection.close(200, "done".into()).await;
            rate
        });
        self.delete(&queue);
        rate
    }

    fn e2e(&self, ctx: &Ctx, warm: bool) -> f64 {
        let queue = self.create();
        let rate = e2e(
            ctx.window(warm),
            |flow: &Flow| {
                runtime().block_on(async {
                    let (connection, channel) = connect(&self.url, true).await;
                    let n = publish_until(&channel, &queue, 0, flow.go()).await;
                    let _ = connection.close(200, "done".into()).await;
                    n
                })
            },
            |flow: &Flow| {
                runtime().block_on(async {
                    let (connection, mut deliveries) = consume(&self.url, &queue).await;
                    flow.go();
                    let mut acked = 0;
                    while !flow.done(acked) {
                        let next = deliveries.next();
                        match tokio::time::timeout(POLL, next).await {
                            Ok(delivery) => {
                                let delivery = delivery.expect("consumer open").expect("delivery");
                                delivery
                                    .acker
                                    .ack(BasicAckOptions::default())
                                    .await
                                    .expect("ack");
                                acked += 1;
                            }
                            Err(_) => flow.check(acked),
                        }
                    }
                    let _ = connection.close(200, "done".into()).await;
                    acked
                })
            },
        )
        .rate();
        self.delete(&queue);
        rate
    }

    fn latency(&self, ctx: &Ctx, warm: bool) -> Vec<f64> {
        let queue = self.create();
        let (connection, channel) = self.runtime.block_on(connect(&self.url, true));
        let figures = ping(
            ctx.samples(warm),
            |seq| {
                self.runtime.block_on(async {
                    check(publish(&channel, &queue, seq).await.await);
                });
            },
            |listener, count| {
                runtime().block_on(async {
                    let (connection, mut deliveries) = consume(&self.url, &queue).await;
                    listener.ready();
                    for _ in 0..count {
                        let delivery = deliveries.next().await.expect("consumer open");
                        let at = Instant::now();
                        let delivery = delivery.expect("a delivery");
                        delivery
                            .acker
                            .ack(BasicAckOptions::default())
                            .await
                            .expect("ack");
                        listener.report(seq_of(&delivery.data), at);
                    }
                    let _ = connection.close(200, "done".into()).await;
                });
            },
        );
        let _ = self.runtime.block_on(connection.close(200, "done".into()));
        self.delete(&queue);
        figures
    }
}

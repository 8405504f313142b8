//! The NATS JetStream side of `benches/peers.rs` (async-nats): a file-storage stream, publishes
//! with at most `BATCH` unacknowledged, a durable pull consumer with explicit acks.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::{BATCH, Ctx, Flow, POLL, Peer, e2e, payload, ping, runtime, seq_of, services};

/// NATS JetStream through async-nats.
pub(super) struct Nats {
    url: String,
    /// Runs the admin calls and the latency test's publishes.
    runtime: tokio::runtime::Runtime,
}

/// A context that keeps at most `BATCH` publishes unacknowledged.
async fn context(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(BATCH)
        .backpressure_on_inflight(true)
        .build(client)
}

/// Publishes from `from` until `deadline` (checked every `BATCH`), at most `BATCH`
/// unacknowledged, then awaits every `PubAck`; returns how many.
async fn publish_until(
    context: &jetstream::Context,
    subject: &str,
    from: u64,
    deadline: Instant,
) -> u64 {
    let mut acks = FuturesUnordered::new();
    let mut n = from;
    loop {
        for seq in n..n + BATCH as u64 {
            if acks.len() >= BATCH {
                let ack: Result<_, _> = acks.next().await.expect("a PubAck in flight");
                ack.expect("PubAck");
            }
            let ack = context
                .publish(subject.to_owned(), payload(seq).into())
                .await
                .expect("publish");
            acks.push(ack.into_future());
        }
        n += BATCH as u64;
        if Instant::now() >= deadline {
            break;
        }
    }
    while let Some(ack) = acks.next().await {
        ack.expect("PubAck");
    }
    n - from
}

/// A durable pull consumer with explicit acks on `stream`, fetching up to `BATCH` at a time.
async fn pull(url: &str, stream: &str) -> consumer::pull::Stream {
    let context = jetstream::new(async_nats::connect(url).await.expect("connect to NATS"));
    let stream = context.get_stream(stream).await.expect("the stream");
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("a pull consumer");
    consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .messages()
        .await
        .expect("pull")
}

impl Nats {
    pub(super) fn new(url: String) -> Self {
        let runtime = runtime();
        let client = runtime.block_on(async_nats::connect(&url));
        let version = client.expect("connect to NATS").server_info().version;
        println!(
            "NATS {version} at {}: JetStream, file storage",
            services::host_port(&url)
        );
        Self { url, runtime }
    }

    /// A fresh file-storage stream; returns its name and subject.
    fn create(&self) -> (String, String) {
        let name = services::unique("embus_bench").replace(['-', '.'], "_");
        let subject = format!("{name}.m");
        self.runtime.block_on(async {
            let context = jetstream::new(async_nats::connect(&self.url).await.expect("connect"));
            context
                .create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![format!("{name}.>")],
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .expect("create the stream");
        });
        (name, subject)
    }

    fn delete(&self, name: &str) {
        self.runtime.block_on(async {
            let context = jetstream::new(async_nats::connect(&self.url).await.expect("connect"));
            context
                .delete_stream(name)
                .await
                .expect("delete the stream");
        });
    }
}

impl Peer for Nats {
    fn name(&self) -> &'static str {
        "NATS JetStream"
    }

    fn durability(&self) -> &'static str {
        "file storage, no fsync"
    }

    fn produce(&self, ctx: &Ctx, warm: bool) -> f64 {
        let (name, subject) = self.create();
        let rate = self.runtime.block_on(async {
            let context = context(&self.url).await;
            // Untimed: the first publish.
            let first = context.publish(subject.clone(), payload(0).into()).await;
            first.expect("publish").await.expect("PubAck");
            let start = Instant::now();
            let n = publish_until(&context, &subject, 1, start + ctx.window(warm)).await;
            n as f64 / start.elapsed().as_secs_f64()
        });
        self.delete(&name);
        rate
    }

    fn e2e(&self, ctx: &Ctx, warm: bool) -> f64 {
        let (name, subject) = self.create();
        let rate = e2e(
            ctx.window(warm),
            |flow: &Flow| {
                runtime().block_on(async {
                    let context = context(&self.url).await;
                    publish_until(&context, &subject, 0, flow.go()).await
                })
            },
            |flow: &Flow| {
                runtime().block_on(async {
                    let mut messages = pull(&self.url, &name).await;
                    flow.go();
                    let mut acked = 0;
                    while !flow.done(acked) {
                        let next = messages.next();
                        match tokio::time::timeout(POLL, next).await {
                            Ok(message) => {
                                let message = message.expect("pull open").expect("a message");
                                message.ack().await.expect("ack");
                                acked += 1;
                            }
                            Err(_) => flow.check(acked),
                        }
                    }
                    acked
                })
            },
        )
        .rate();
        self.delete(&name);
        rate
    }

    fn latency(&self, ctx: &Ctx, warm: bool) -> Vec<f64> {
        let (name, subject) = self.create();
        let context = self.runtime.block_on(context(&self.url));
        let figures = ping(
            ctx.samples(warm),
            |seq| {
                self.runtime.block_on(async {
                    context
                        .publish(subject.clone(), payload(seq).into())
                        .await
                        .expect("publish")
                        .await
                        .expect("PubAck");
                });
            },
            |listener, count| {
                runtime().block_on(async {
                    let mut messages = pull(&self.url, &name).await;
                    listener.ready();
                    for _ in 0..count {
                        let message = messages.next().await.expect("pull open").expect("msg");
                        let at = Instant::now();
                        message.ack().await.expect("ack");
                        listener.report(seq_of(&message.payload), at);
                    }
                });
            },
        );
        drop(context);
        self.delete(&name);
        figures
    }
}

//! The NATS JetStream far side of `benches/bridge.rs`: async-nats as the raw client, and
//! `embus::bridge::nats::Outbound`.

use std::future::IntoFuture;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use embus::bridge::{Bridge, DeadLetter, nats};
use embus::{Consumer, Queue};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::{Event, Far, RawSender, Target, nats_admin, runtime, services};

/// NATS JetStream through async-nats.
pub(super) struct Nats {
    url: String,
    admin: nats_admin::NatsAdmin,
    runtime: tokio::runtime::Runtime,
}

impl Nats {
    pub(super) fn new(url: String) -> Self {
        Self {
            admin: nats_admin::NatsAdmin::connect(&url),
            url,
            runtime: runtime(),
        }
    }

    /// A JetStream context configured as the bridge configures its own.
    async fn context(url: &str, window: usize) -> jetstream::Context {
        let client = async_nats::connect(url).await.expect("connect to NATS");
        jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .max_ack_inflight(window)
            .backpressure_on_inflight(true)
            .build(client)
    }

    /// The publish the bridge makes: JSON payload, `Nats-Msg-Id`.
    fn message(event: &Event) -> jetstream::message::PublishMessage {
        let payload = serde_json::to_vec(event).expect("JSON");
        jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(format!("events/0/{}", event.n))
    }
}

impl Far for Nats {
    fn name(&self) -> &'static str {
        "NATS"
    }

    fn create(&self) -> Target {
        let name = services::unique("bench_bridge").replace(['-', '.'], "_");
        let subject = format!("{name}.events");
        self.admin.create_stream(&name, &[&format!("{name}.>")]);
        Target { name, subject }
    }

    fn delete(&self, target: &Target) {
        self.admin.delete_stream(&target.name);
    }

    fn stored(&self, target: &Target) -> u64 {
        self.admin.count(&target.name)
    }

    fn raw_publish(&self, target: &Target, events: &[Event], window: usize) -> Duration {
        self.runtime.block_on(async {
            let start = Instant::now();
            let context = Self::context(&self.url, window).await;
            let mut confirms = FuturesUnordered::new();
            for event in events {
                if confirms.len() >= window {
                    let ack: Result<_, _> = confirms.next().await.expect("a confirm in flight");
                    ack.expect("PubAck");
                }
                let confirm = context
                    .send_publish(target.subject.clone(), Self::message(event))
                    .await
                    .expect("publish");
                confirms.push(confirm.into_future());
            }
            while let Some(ack) = confirms.next().await {
                ack.expect("PubAck");
            }
            start.elapsed()
        })
    }

    fn bridge(
        &self,
        target: &Target,
        source: Consumer<Event>,
        dead_letters: &Queue<DeadLetter>,
        window: usize,
    ) -> Option<Bridge> {
        let bridge = nats::Outbound::new(&self.url, &target.subject)
            .window(window)
            .start(source, dead_letters)
            .expect("start the NATS bridge");
        Some(bridge)
    }

    fn raw_sender(&self, target: &Target) -> Box<dyn RawSender> {
        let runtime = runtime();
        let context = runtime.block_on(Self::context(&self.url, 256));
        Box::new(NatsSender {
            runtime,
            context,
            subject: target.subject.clone(),
        })
    }

    fn listen(&self, target: &Target, count: usize) -> JoinHandle<Vec<(u64, Instant)>> {
        let (ready, started) = mpsc::channel();
        let url = self.url.clone();
        let stream = target.name.clone();
        let handle = std::thread::spawn(move || {
            runtime().block_on(async move {
                let context = jetstream::new(async_nats::connect(&url).await.expect("connect"));
                let stream = context.get_stream(&stream).await.expect("the stream");
                let consumer: jetstream::consumer::PullConsumer = stream
                    .create_consumer(jetstream::consumer::pull::Config {
                        ack_policy: jetstream::consumer::AckPolicy::None,
                        ..Default::default()
                    })
                    .await
                    .expect("a pull consumer");
                let mut messages = consumer.messages().await.expect("pull");
                ready.send(()).expect("bench waiting");
                let mut got = Vec::with_capacity(count);
                while got.len() < count {
                    let message = messages.next().await.expect("stream open").expect("msg");
                    let at = Instant::now();
                    let event: Event = serde_json::from_slice(&message.payload).expect("JSON");
                    got.push((event.n, at));
                }
                got
            })
        });
        started.recv().expect("the listener started");
        handle
    }
}

struct NatsSender {
    runtime: tokio::runtime::Runtime,
    context: jetstream::Context,
    subject: String,
}

impl RawSender for NatsSender {
    fn send(&mut self, event: &Event) {
        self.runtime.block_on(async {
            self.context
                .send_publish(self.subject.clone(), Nats::message(event))
                .await
                .expect("publish")
                .await
                .expect("PubAck");
        });
    }
}

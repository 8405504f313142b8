//! A blocking NATS JetStream admin for the bridge tests: create and delete streams, publish,
//! and read a stream back.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

/// A client with its own small runtime.
pub struct NatsAdmin {
    runtime: tokio::runtime::Runtime,
    js: jetstream::Context,
}

/// One stored message: its `Nats-Msg-Id`, headers and payload.
#[derive(Debug, Clone)]
pub struct Stored {
    pub subject: String,
    pub id: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl NatsAdmin {
    pub fn connect(url: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The context spawns a task: make it inside the runtime.
        let js =
            runtime.block_on(async { jetstream::new(async_nats::connect(url).await.unwrap()) });
        Self { runtime, js }
    }

    /// Creates stream `name` on `subjects`, deduplicating by `Nats-Msg-Id` for 10 minutes.
    pub fn create_stream(&self, name: &str, subjects: &[&str]) {
        self.runtime
            .block_on(self.js.create_stream(stream::Config {
                name: name.to_string(),
                subjects: subjects.iter().map(|s| s.to_string()).collect(),
                duplicate_window: Duration::from_secs(600),
                ..stream::Config::default()
            }))
            .unwrap();
    }

    pub fn delete_stream(&self, name: &str) {
        let _ = self.runtime.block_on(self.js.delete_stream(name));
    }

    /// Publishes `payload` to `subject` with an optional `Nats-Msg-Id` and waits for its ack.
    pub fn publish(&self, subject: &str, id: Option<&str>, payload: &[u8]) {
        let mut publish =
            jetstream::message::PublishMessage::build().payload(payload.to_vec().into());
        if let Some(id) = id {
            publish = publish.message_id(id);
        }
        self.send(subject, publish);
    }

    /// Publishes `payload` to `subject` with one header, and waits for its ack.
    pub fn publish_with_header(&self, subject: &str, name: &str, value: &str, payload: &str) {
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.as_bytes().to_vec().into())
            .header(name, value);
        self.send(subject, publish);
    }

    fn send(&self, subject: &str, publish: jetstream::message::PublishMessage) {
        self.runtime
            .block_on(async {
                self.js
                    .send_publish(subject.to_string(), publish)
                    .await?
                    .await
            })
            .unwrap();
    }

    /// How many messages stream `name` holds.
    pub fn count(&self, name: &str) -> u64 {
        self.runtime.block_on(async {
            let mut stream = self.js.get_stream(name).await.unwrap();
            stream.info().await.unwrap().state.messages
        })
    }

    /// Every message of stream `name`, in order.
    pub fn read_all(&self, name: &str) -> Vec<Stored> {
        self.runtime.block_on(async {
            let mut stream = self.js.get_stream(name).await.unwrap();
            let state = stream.info().await.unwrap().state.clone();
            let mut out = Vec::new();
            for seq in state.first_sequence..=state.last_sequence {
                let Ok(m) = stream.get_raw_message(seq).await else {
                    continue;
                };
                let mut id = None;
                let mut headers = Vec::new();
                for (name, values) in m.headers.iter() {
                    let name: &str = name.as_ref();
                    for v in values {
                        if name == "Nats-Msg-Id" {
                            id = Some(v.as_str().to_string());
                        } else {
                            headers.push((name.to_string(), v.as_str().to_string()));
                        }
                    }
                }
                out.push(Stored {
                    subject: m.subject.to_string(),
                    id,
                    headers,
                    payload: m.payload.to_vec(),
                });
            }
            out
        })
    }

    /// Messages of durable consumer `durable` on `stream` not yet acked (delivered or not).
    pub fn unacked(&self, stream: &str, durable: &str) -> u64 {
        self.runtime.block_on(async {
            let s = self.js.get_stream(stream).await.unwrap();
            let info = s.consumer_info(durable).await.unwrap();
            info.num_pending + info.num_ack_pending as u64
        })
    }

    /// Creates durable pull consumer `durable` on `stream` with explicit acks, delivering from
    /// the start: a message not acked within `ack_wait` is delivered again, and at most
    /// `max_ack_pending` are out unacked. (A bridge that finds it uses it as it is.)
    pub fn create_consumer(
        &self,
        stream: &str,
        durable: &str,
        ack_wait: Duration,
        max_ack_pending: i64,
    ) {
        self.runtime.block_on(async {
            let s = self.js.get_stream(stream).await.unwrap();
            s.create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some(durable.to_string()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending,
                ..Default::default()
            })
            .await
            .unwrap();
        });
    }

    /// What the server says about durable consumer `durable` on `stream`.
    pub fn consumer_info(&self, stream: &str, durable: &str) -> jetstream::consumer::Info {
        self.runtime.block_on(async {
            let s = self.js.get_stream(stream).await.unwrap();
            s.consumer_info(durable).await.unwrap()
        })
    }
}

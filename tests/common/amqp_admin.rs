//! A blocking RabbitMQ admin for the bridge tests, on `lapin`: declares exchanges and queues
//! (and deletes them on drop), publishes with confirms, and reads a queue back.

use std::collections::BTreeMap;

use embus::bridge::KEY_HEADER;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::services::unique;

/// A client on its own small runtime, with one channel in confirm mode. What it declares it
/// deletes when dropped.
///
/// The runtime has a worker thread (not a current-thread one), so that the connection's
/// heartbeats go on between calls: a test may leave the admin idle for a long time.
pub struct AmqpAdmin {
    rt: tokio::runtime::Runtime,
    _connection: Connection,
    channel: Channel,
    exchanges: Vec<String>,
    queues: Vec<String>,
}

/// A message as read back from a queue.
#[derive(Debug)]
pub struct Got {
    pub id: Option<String>,
    /// The [`KEY_HEADER`] header, taken out of `headers`.
    pub key: Option<Vec<u8>>,
    pub headers: BTreeMap<String, Vec<u8>>,
    pub content_type: Option<String>,
    pub payload: Vec<u8>,
}

impl AmqpAdmin {
    pub fn connect(url: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (connection, channel) = rt.block_on(async {
            let connection = Connection::connect(url, ConnectionProperties::default())
                .await
                .unwrap();
            let channel = connection.create_channel().await.unwrap();
            channel.confirm_select(Default::default()).await.unwrap();
            (connection, channel)
        });
        Self {
            rt,
            _connection: connection,
            channel,
            exchanges: Vec::new(),
            queues: Vec::new(),
        }
    }

    /// A new durable direct exchange, named after `prefix`.
    pub fn exchange(&mut self, prefix: &str) -> String {
        let name = unique(prefix);
        let options = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        self.rt
            .block_on(self.channel.exchange_declare(
                name.as_str().into(),
                ExchangeKind::Direct,
                options,
                FieldTable::default(),
            ))
            .unwrap();
        self.exchanges.push(name.clone());
        name
    }

    /// A new durable queue, named after `prefix`, bound to `exchange` with `key` if given.
    pub fn queue(&mut self, prefix: &str, binding: Option<(&str, &str)>) -> String {
        let name = unique(prefix);
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        self.rt
            .block_on(self.channel.queue_declare(
                name.as_str().into(),
                options,
                FieldTable::default(),
            ))
            .unwrap();
        self.queues.push(name.clone());
        if let Some((exchange, key)) = binding {
            self.bind(&name, exchange, key);
        }
        name
    }

    /// Binds `queue` to `exchange` with routing key `key`.
    pub fn bind(&self, queue: &str, exchange: &str, key: &str) {
        self.rt
            .block_on(self.channel.queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ))
            .unwrap();
    }

    /// Publishes `payload` persistently to `queue` through the default exchange, with `id` as
    /// its `message_id`, `key` under [`KEY_HEADER`], and two headers the inbound tests look
    /// for (`origin`: the bytes `test`; `attempt`: the integer 3); waits for the confirm.
    pub fn publish(&self, queue: &str, id: Option<&str>, key: Option<&str>, payload: &[u8]) {
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        let mut headers = FieldTable::default();
        headers.insert(
            "origin".into(),
            AMQPValue::LongString(LongString::from("test")),
        );
        headers.insert("attempt".into(), AMQPValue::LongLongInt(3));
        if let Some(key) = key {
            headers.insert(KEY_HEADER.into(), AMQPValue::LongString(key.into()));
        }
        let confirm = self.rt.block_on(async {
            self.channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    payload,
                    properties.with_headers(headers),
                )
                .await
                .unwrap()
                .await
                .unwrap()
        });
        assert!(confirm.is_ack());
    }

    /// Messages ready in `queue` (RabbitMQ does not count the delivered and unacked ones here).
    pub fn count(&self, queue: &str) -> u32 {
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.rt
            .block_on(
                self.channel
                    .queue_declare(queue.into(), options, FieldTable::default()),
            )
            .unwrap()
            .message_count()
    }

    /// Takes (and acks) every message now ready in `queue`, in queue order.
    pub fn drain(&self, queue: &str) -> Vec<Got> {
        let mut got = Vec::new();
        let options = BasicGetOptions { no_ack: true };
        while let Some(message) = self
            .rt
            .block_on(self.channel.basic_get(queue.into(), options))
            .unwrap()
        {
            let properties = &message.delivery.properties;
            let mut headers: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for (name, value) in properties.headers().clone().unwrap_or_default().inner() {
                let AMQPValue::LongString(bytes) = value else {
                    panic!("header {name} is not a byte string: {value:?}");
                };
                headers.insert(name.to_string(), bytes.as_bytes().to_vec());
            }
            got.push(Got {
                id: properties.message_id().as_ref().map(ToString::to_string),
                key: headers.remove(KEY_HEADER),
                headers,
                content_type: properties.content_type().as_ref().map(ToString::to_string),
                payload: message.delivery.data.clone(),
            });
        }
        got
    }
}

impl Drop for AmqpAdmin {
    fn drop(&mut self) {
        let channel = self.channel.clone();
        let (queues, exchanges) = (self.queues.clone(), self.exchanges.clone());
        self.rt.block_on(async move {
            for queue in queues {
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for exchange in exchanges {
                let _ = channel
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        });
    }
}

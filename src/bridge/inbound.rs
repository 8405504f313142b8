//! The inbound relay: a remote durable consumer → a local topic or queue. A [`Source`] is one
//! client (a JetStream pull consumer, an AMQP queue); [`start`] runs the loop both share.
//!
//! The bridge's async task receives and decodes; a writer thread (`embus-bridge-writer`) stores
//! what is waiting in one `send_record_batch` (one commit, and one more for dead letters) and
//! reports how far it got; only then does the task ack those messages remotely. A crash between the two leaves them unacked
//! remotely, so the server delivers them again, and the target's dedupe window drops them by id.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::outbound::Failure;
use super::{Bridge, BridgeError, Common, DeadLetter, KEY_HEADER, Shared};
use crate::codec::CodecKind;
use crate::record::{MAX_MESSAGE_ID_LEN, MESSAGE_ID, Payload};
use crate::{Error, Producer, Queue, Record, SendError};

/// One message as a source receives it.
pub(crate) struct Incoming<A> {
    /// The id redeliveries share (`Nats-Msg-Id` or stream/sequence/time, AMQP `message_id`).
    pub(crate) id: Option<String>,
    /// Its headers, with the key under [`KEY_HEADER`] if it has one.
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) payload: Vec<u8>,
    /// Acks it remotely.
    pub(crate) ack: A,
}

/// Acks one message remotely.
pub(crate) trait RemoteAck: 'static {
    async fn ack(self) -> Result<(), Failure>;
}

/// A remote durable consumer with manual acks. Built on the caller's thread, used on the
/// bridge's.
pub(crate) trait Source: super::Remote {
    type Ack: RemoteAck;

    /// The next message. Cancel safe: a call dropped before it resolves loses none. `room` is
    /// how many more the relay can take now: a source that pulls in batches asks for no more,
    /// so nothing it pulled sits unread while the relay waits for the local store.
    async fn next(&mut self, room: usize) -> Result<Incoming<Self::Ack>, Failure>;

    /// Messages the server holds for this consumer and has not delivered, if it says.
    fn lag(&self) -> Option<u64>;

    /// The server and the queue or stream, as errors and dead letters name them.
    fn describe(&self) -> String;
}

/// Starts an inbound bridge relaying `source` into `target`.
pub(crate) fn start<T: Payload, S: Source>(
    source: S,
    target: Producer<T>,
    dead_letters: &Queue<DeadLetter>,
    common: Common,
) -> Result<Bridge, BridgeError> {
    common.validate()?;
    let relay = Relay {
        source,
        codec: common.codec,
        target_name: target.name().to_string(),
        common,
    };
    let writer = Writer {
        target,
        dead_letters: dead_letters.producer(),
        codec: relay.codec,
        origin: relay.source.describe(),
    };
    let name = format!(
        "inbound {} -> `{}`",
        relay.source.describe(),
        relay.target_name
    );
    let shared = super::Shared::new(name, dead_letters);
    Bridge::spawn(shared, move |shared, ready| {
        relay.run(writer, shared, ready)
    })
}

/// What the writer thread stores: a decoded record, or what did not decode.
enum Item<T> {
    Record(Record<T>),
    Dead(DeadLetter),
}

type AckFut = Pin<Box<dyn Future<Output = Result<(), Failure>>>>;

struct Relay<S> {
    source: S,
    codec: CodecKind,
    target_name: String,
    common: Common,
}

impl<S: Source> Relay<S> {
    async fn run<T: Payload>(
        mut self,
        writer: Writer<T>,
        shared: Arc<Shared>,
        ready: super::Ready,
    ) -> Result<(), BridgeError> {
        self.source.connect().await?;
        shared.set_connected(true, false);
        let (to_writer, items) = crossbeam_channel::unbounded();
        let (written, mut done) = tokio::sync::mpsc::unbounded_channel();
        let batch = self.common.window;
        let counters = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("embus-bridge-writer".into())
            .spawn(move || writer.run(&items, &written, batch, &counters))
            .map_err(|error| BridgeError::Runtime(error.to_string()))?;
        ready.ready();

        // Received and handed to the writer, not yet stored: (sequence, remote ack).
        let mut waiting: VecDeque<(u64, S::Ack)> = VecDeque::new();
        let mut next = 0u64;
        let mut acks: FuturesUnordered<AckFut> = FuturesUnordered::new();
        let mut broken = false;
        let mut drain: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let idle = waiting.is_empty() && acks.is_empty();
            if drain.is_some() && idle {
                break Ok(());
            }
            if broken {
                let source = &mut self.source;
                if !super::reconnect(source, &shared, &self.common, &mut drain, idle).await {
                    break Ok(());
                }
                broken = false;
                continue;
            }
            let room = drain.is_none() && waiting.len() < self.common.window;
            tokio::select! {
                biased;
                () = shared.stopped(), if drain.is_none() => {
                    drain = Some(super::drain_deadline(&self.common));
                }
                () = super::sleep_until(drain) => break Ok(()),
                Some(stored) = done.recv() => match stored {
                    Ok(upto) => {
                        let mut n = 0;
                        while waiting.front().is_some_and(|(seq, _)| *seq < upto) {
                            if let Some((_, ack)) = waiting.pop_front() {
                                acks.push(Box::pin(ack.ack()));
                                n += 1;
                            }
                        }
                        shared.forwarded(n);
                    }
                    Err(error) => break Err(error),
                },
                Some(acked) = acks.next() => {
                    // Not acked: the server delivers it again, and the dedupe window drops it.
                    if let Err(Failure::Retry(reason) | Failure::Reject(reason)) = acked {
                        shared.error(format!("{}: ack: {reason}", self.source.describe()));
                    }
                }
                incoming = self.source.next(self.common.window - waiting.len()), if room => match incoming {
                    Ok(incoming) => {
                        let (item, ack) = self.convert::<T>(incoming);
                        if to_writer.send((next, item)).is_err() {
                            // The writer stopped on a failed local send: report that send.
                            let why = std::iter::from_fn(|| done.try_recv().ok())
                                .find_map(Result::err);
                            break Err(why.unwrap_or_else(|| {
                                BridgeError::Runtime("the bridge's writer stopped".into())
                            }));
                        }
                        waiting.push_back((next, ack));
                        next += 1;
                    }
                    Err(Failure::Retry(reason)) => {
                        shared.error(format!("{}: {reason}", self.source.describe()));
                        broken = true;
                    }
                    Err(Failure::Reject(reason)) => {
                        shared.error(format!("{}: {reason}", self.source.describe()));
                    }
                },
                _ = tick.tick() => {
                    if let Some(lag) = self.source.lag() {
                        shared.set_lag(lag);
                    }
                }
            }
            shared.set_in_flight(waiting.len());
        };
        shared.set_in_flight(waiting.len());
        let last_acks = async { while acks.next().await.is_some() {} };
        let _ = tokio::time::timeout(super::CLOSE_TIMEOUT, last_acks).await;
        super::close(&mut self.source).await;
        drop(to_writer);
        // With nothing waiting the writer is idle and ends at once; otherwise (the drain timed
        // out, or a send failed) it ends after its current batch, acked by no one: the server
        // delivers those messages again.
        if waiting.is_empty() {
            let _ = thread.join();
        }
        result
    }

    /// Decodes one message into a record for the target, or a dead letter if it does not.
    fn convert<T: Payload>(&self, incoming: Incoming<S::Ack>) -> (Item<T>, S::Ack) {
        let Incoming {
            id,
            headers,
            payload,
            ack,
        } = incoming;
        let id = id.filter(|id| !id.is_empty());
        let key = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(KEY_HEADER))
            .map(|(_, value)| value.clone());
        let decoded = match &id {
            Some(id) if id.len() > MAX_MESSAGE_ID_LEN => Err(format!(
                "message id is {} bytes long, more than {MAX_MESSAGE_ID_LEN}",
                id.len()
            )),
            _ => self.codec.decode::<T>(&payload).map_err(|error| {
                format!(
                    "payload does not decode as {} ({}): {error}",
                    std::any::type_name::<T>(),
                    self.codec.name()
                )
            }),
        };
        let item = match decoded {
            Ok(value) => {
                let mut record = Record::new(value);
                if let Some(key) = &key {
                    record = record.key(key);
                }
                for (name, value) in &headers {
                    if !name.eq_ignore_ascii_case(KEY_HEADER) && name != MESSAGE_ID {
                        record = record.header(name.as_str(), value);
                    }
                }
                if let Some(id) = id {
                    record = record.id(id);
                }
                Item::Record(record)
            }
            Err(reason) => Item::Dead(DeadLetter {
                reason,
                origin: self.source.describe(),
                target: self.target_name.clone(),
                id,
                key,
                headers,
                payload,
            }),
        };
        (item, ack)
    }
}

/// Whether a local send failure is about the broker or its store (stop the bridge; the
/// messages stay unacked remotely) rather than about one record (a compacted topic and no
/// key, a payload the store cannot encode, a bad id: dead-letter that record).
fn fatal(error: &Error) -> bool {
    !matches!(
        error,
        Error::KeyRequired { .. }
            | Error::Encode { .. }
            | Error::Unsupported { .. }
            | Error::InvalidMessageId { .. }
    )
}

/// The writer thread's side: stores batches in order, reporting how far it got.
struct Writer<T> {
    target: Producer<T>,
    dead_letters: Producer<DeadLetter>,
    codec: CodecKind,
    /// The source, as dead letters name it.
    origin: String,
}

impl<T: Payload> Writer<T> {
    /// Takes what is waiting (up to `batch`), stores it in one send per destination, and
    /// reports the first sequence not yet stored. Stops at the first failure, reporting it.
    fn run(
        self,
        items: &crossbeam_channel::Receiver<(u64, Item<T>)>,
        written: &tokio::sync::mpsc::UnboundedSender<Result<u64, BridgeError>>,
        batch: usize,
        shared: &Shared,
    ) {
        while let Ok(first) = items.recv() {
            let mut upto = first.0 + 1;
            let mut records = Vec::new();
            let mut dead = Vec::new();
            for (seq, item) in std::iter::once(first).chain(items.try_iter().take(batch - 1)) {
                upto = seq + 1;
                match item {
                    Item::Record(record) => records.push(record),
                    Item::Dead(letter) => dead.push(letter),
                }
            }
            let stored = self.store(records, dead, shared);
            let failed = stored.is_err();
            if written.send(stored.map(|()| upto)).is_err() || failed {
                return;
            }
        }
    }

    /// Stores `records` in the target and `dead` in the dead-letter queue. When the target
    /// refuses the batch for something about one record (a compacted topic and a record without
    /// a key, a payload the store cannot encode), stores them one by one and dead-letters the
    /// refused ones with the reason, rather than stopping the bridge for good.
    fn store(
        &self,
        records: Vec<Record<T>>,
        mut dead: Vec<DeadLetter>,
        shared: &Shared,
    ) -> Result<(), BridgeError> {
        if !records.is_empty() {
            match self.target.send_record_batch(records) {
                Ok(_) => {}
                Err(SendError::Failed(records, error)) if !fatal(&error) => {
                    for record in records {
                        match self.target.send_record(record) {
                            Ok(_) => {}
                            Err(SendError::Failed(record, error)) if !fatal(&error) => {
                                dead.push(self.refused(&record, &error));
                            }
                            Err(error) => return Err(super::send_failed(error)),
                        }
                    }
                }
                Err(error) => return Err(super::send_failed(error)),
            }
        }
        if !dead.is_empty() {
            let letters = dead.len() as u64;
            self.dead_letters
                .send_batch(dead)
                .map_err(super::send_failed)?;
            shared.dead_lettered(letters);
        }
        Ok(())
    }

    /// A dead letter for a record the target refused, its payload encoded again by the codec.
    fn refused(&self, record: &Record<T>, error: &Error) -> DeadLetter {
        let mut payload = Vec::new();
        let _ = self.codec.encode(record.payload(), &mut payload);
        DeadLetter {
            reason: format!("`{}` refused it: {error}", self.target.name()),
            origin: self.origin.clone(),
            target: self.target.name().to_string(),
            id: record.message_id().map(str::to_string),
            key: record.key_bytes().map(<[u8]>::to_vec),
            headers: record
                .headers()
                .iter()
                .filter(|(name, _)| *name != MESSAGE_ID)
                .map(|(name, value)| (name.to_string(), value.to_vec()))
                .collect(),
            payload,
        }
    }
}

//! The outbound relay: a local group member or queue consumer → a remote publisher with
//! confirms. A [`Sink`] is one client (JetStream, AMQP); [`run`] is the loop both share: a
//! bounded window of publishes, the local ack after the confirm, dead letters for what the
//! server refuses, and republishing everything unconfirmed after a reconnect.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::{Bridge, BridgeError, Common, DeadLetter, Envelope, RouteFn, Shared};
use crate::error::RecvError;
use crate::record::{MESSAGE_ID, Payload};
use crate::{Consumer, Message, Producer, Queue};

/// One message as a sink publishes it.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// The id the far side deduplicates by (`Nats-Msg-Id`, AMQP `message_id`).
    pub(crate) id: String,
    /// The subject or routing key.
    pub(crate) route: String,
    pub(crate) key: Option<Vec<u8>>,
    /// The record's headers, without the message id (it travels natively).
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    /// Shared, not copied, with the client for each (re)publish.
    pub(crate) payload: bytes::Bytes,
}

/// Why a publish or a receive did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection broke or the confirm did not come: reconnect, then try again.
    Retry(String),
    /// The server refused this one message (unroutable, rejected, not representable):
    /// dead-letter it with this reason.
    Reject(String),
}

/// A remote publisher with confirms. Built on the caller's thread, used on the bridge's.
pub(crate) trait Sink: super::Remote {
    /// Hands `message` to the client, in order; the returned future waits for its confirm.
    async fn publish(&mut self, message: &Outgoing) -> Result<Confirm, Failure>;

    /// The target as errors and dead letters name it: the server and the subject, or the
    /// exchange and routing key.
    fn describe(&self, route: &str) -> String;
}

/// Starts an outbound bridge relaying `consumer` through `sink`.
pub(crate) fn start<T: Payload, S: Sink>(
    sink: S,
    consumer: Consumer<T>,
    dead_letters: &Queue<DeadLetter>,
    route: RouteFn,
    common: Common,
) -> Result<Bridge, BridgeError> {
    common.validate()?;
    if !consumer.settles() {
        return Err(BridgeError::InvalidOption(format!(
            "an outbound bridge reads a group member or a queue consumer, not a plain \
             subscriber of `{}`: a subscriber's position is not stored, so a restart would \
             lose or resend messages",
            consumer.name()
        )));
    }
    let name = format!("outbound `{}` -> {}", consumer.name(), sink.describe(""));
    let shared = super::Shared::new(name, dead_letters);
    let relay = Relay {
        sink,
        instance: consumer.store_instance(),
        consumer,
        dead_letters: dead_letters.producer(),
        route,
        common,
        pending: BTreeMap::new(),
        next: 0,
    };
    Bridge::spawn(shared, move |shared, ready| relay.run(shared, ready))
}

/// One message taken from the consumer and not yet settled there.
struct Pending<T> {
    message: Message<T>,
    outgoing: Outgoing,
}

/// Resolves once the server confirmed (or refused) one message.
pub(crate) type Confirm = Pin<Box<dyn Future<Output = Result<(), Failure>>>>;

/// A confirm with the number of the message it is for.
struct Tagged {
    seq: u64,
    confirm: Confirm,
}

impl Future for Tagged {
    type Output = (u64, Result<(), Failure>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let seq = self.seq;
        self.confirm.as_mut().poll(cx).map(|result| (seq, result))
    }
}

struct Relay<T, S> {
    sink: S,
    /// The source broker's store instance, for [`derived_id`].
    instance: u64,
    consumer: Consumer<T>,
    dead_letters: Producer<DeadLetter>,
    route: RouteFn,
    common: Common,
    /// By the order they were taken in, which is the order they are published in. Boxed: a
    /// `Pending` is a few hundred bytes, and unboxed the map's nodes are large allocations whose
    /// churn (and the value moves on every insert and remove) cost more than the relay's own work.
    pending: BTreeMap<u64, Box<Pending<T>>>,
    next: u64,
}

impl<T: Payload, S: Sink> Relay<T, S> {
    async fn run(mut self, shared: Arc<Shared>, ready: super::Ready) -> Result<(), BridgeError> {
        self.sink.connect().await?;
        shared.set_connected(true, false);
        ready.ready();

        let mut confirms: FuturesUnordered<Tagged> = FuturesUnordered::new();
        let mut broken = false;
        let mut drain: Option<tokio::time::Instant> = None;
        // Made once: a `Notified` made anew on every turn of the loop takes the `Notify`'s lock
        // twice per message.
        let stopped = shared.stopped();
        tokio::pin!(stopped);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if drain.is_some() && self.pending.is_empty() {
                break;
            }
            if broken {
                confirms.clear();
                shared.set_connected(false, false);
                let idle = self.pending.is_empty();
                let sink = &mut self.sink;
                if !super::reconnect(sink, &shared, &self.common, &mut drain, idle).await {
                    break; // told to stop with nothing to drain, or the drain timed out
                }
                broken = !self.republish(&mut confirms, &shared).await?;
                continue;
            }
            let room = drain.is_none() && self.pending.len() < self.common.window;
            tokio::select! {
                biased;
                () = &mut stopped, if drain.is_none() => {
                    drain = Some(super::drain_deadline(&self.common));
                }
                () = super::sleep_until(drain) => break,
                Some((seq, result)) = confirms.next() => match result {
                    Ok(()) => self.settle(seq, &shared),
                    Err(Failure::Reject(reason)) => self.dead_letter(seq, reason, &shared).await?,
                    Err(Failure::Retry(reason)) => {
                        shared.error(format!("{}: {reason}", self.describe(seq)));
                        broken = true;
                    }
                },
                received = self.consumer.recv_async(), if room => match received {
                    Ok(message) => {
                        let seq = self.take(message, &shared).await?;
                        if let Some(seq) = seq {
                            broken = !self.publish(seq, &mut confirms, &shared).await?;
                        }
                    }
                    Err(RecvError::Undecodable(undecodable)) => {
                        self.dead_letter_undecodable(*undecodable, &shared).await?;
                    }
                    Err(RecvError::Failed(failure)) => shared.error(failure),
                    Err(RecvError::Lagged { .. }) => {} // subscribers only, refused at start
                    Err(RecvError::Deleted(deleted)) => {
                        let name = deleted.name().to_string();
                        return Err(BridgeError::Local(crate::Error::Deleted { name }));
                    }
                    Err(_) => return Err(BridgeError::Local(crate::Error::Closed)),
                },
                _ = tick.tick() => shared.set_lag(self.consumer.lag()),
            }
            shared.set_in_flight(self.pending.len());
        }
        shared.set_in_flight(self.pending.len());
        super::close(&mut self.sink).await;
        Ok(())
        // What is still pending is dropped here: released locally, redelivered next time.
    }

    /// Encodes a received message and files it as pending; `None` if it went straight to the
    /// dead-letter queue (its payload cannot be encoded).
    async fn take(
        &mut self,
        message: Message<T>,
        shared: &Shared,
    ) -> Result<Option<u64>, BridgeError> {
        let source = self.consumer.name();
        let id = message.id().map_or_else(
            || derived_id(source, self.instance, &message),
            str::to_string,
        );
        let route = (self.route)(&Envelope {
            source,
            partition: message.partition(),
            offset: message.offset(),
            key: message.key(),
            headers: message.headers(),
            id: &id,
        });
        let mut payload = Vec::with_capacity(256);
        let encoded = self.common.codec.encode(message.payload(), &mut payload);
        let outgoing = Outgoing {
            id,
            route,
            key: message.key().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .iter()
                .filter(|(name, _)| *name != MESSAGE_ID)
                .map(|(name, value)| (name.to_string(), value.to_vec()))
                .collect(),
            payload: payload.into(),
        };
        let seq = self.next;
        self.next += 1;
        self.pending
            .insert(seq, Box::new(Pending { message, outgoing }));
        if let Err(error) = encoded {
            let reason = format!("cannot encode as {}: {error}", self.common.codec.name());
            self.dead_letter(seq, reason, shared).await?;
            return Ok(None);
        }
        Ok(Some(seq))
    }

    /// Publishes one pending message; `false` if the connection broke.
    async fn publish(
        &mut self,
        seq: u64,
        confirms: &mut FuturesUnordered<Tagged>,
        shared: &Shared,
    ) -> Result<bool, BridgeError> {
        let Some(pending) = self.pending.get(&seq) else {
            return Ok(true);
        };
        match self.sink.publish(&pending.outgoing).await {
            Ok(confirm) => {
                confirms.push(Tagged { seq, confirm });
                Ok(true)
            }
            Err(Failure::Reject(reason)) => {
                self.dead_letter(seq, reason, shared).await?;
                Ok(true)
            }
            Err(Failure::Retry(reason)) => {
                shared.error(format!("{}: {reason}", self.describe(seq)));
                Ok(false)
            }
        }
    }

    /// After a reconnect: publishes everything unconfirmed again, in order. The far side drops
    /// the ones it already had by their id (NATS), or sees them twice (AMQP, at least once).
    async fn republish(
        &mut self,
        confirms: &mut FuturesUnordered<Tagged>,
        shared: &Shared,
    ) -> Result<bool, BridgeError> {
        let seqs: Vec<u64> = self.pending.keys().copied().collect();
        for seq in seqs {
            if !self.publish(seq, confirms, shared).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The server confirmed `seq`: ack it locally.
    fn settle(&mut self, seq: u64, shared: &Shared) {
        if let Some(pending) = self.pending.remove(&seq) {
            shared.forwarded(1);
            // An ack that fails (the delivery moved to another member, or timed out) leaves
            // the message to be delivered again; the far side drops the duplicate by its id.
            if let Err(error) = pending.message.ack() {
                shared.error(format!("local ack on `{}`: {error}", self.consumer.name()));
            }
        }
    }

    /// Parks `seq` in the dead-letter queue with `reason`, then acks it locally: it is never
    /// published again.
    async fn dead_letter(
        &mut self,
        seq: u64,
        reason: String,
        shared: &Shared,
    ) -> Result<(), BridgeError> {
        let Some(pending) = self.pending.remove(&seq) else {
            return Ok(());
        };
        let outgoing = pending.outgoing;
        let letter = DeadLetter {
            reason,
            origin: self.consumer.name().to_string(),
            target: self.sink.describe(&outgoing.route),
            id: Some(outgoing.id),
            key: outgoing.key,
            headers: outgoing.headers,
            payload: outgoing.payload.to_vec(),
        };
        self.dead_letters
            .send_async(letter)
            .await
            .map_err(super::send_failed)?;
        shared.dead_lettered(1);
        if let Err(error) = pending.message.ack() {
            shared.error(format!("local ack on `{}`: {error}", self.consumer.name()));
        }
        Ok(())
    }

    /// A stored record that no longer decodes as `T`: its stored bytes go to the dead-letter
    /// queue, and it is skipped.
    async fn dead_letter_undecodable(
        &mut self,
        undecodable: crate::Undecodable,
        shared: &Shared,
    ) -> Result<(), BridgeError> {
        let letter = DeadLetter {
            reason: undecodable.to_string(),
            origin: self.consumer.name().to_string(),
            target: self.sink.describe(""),
            id: None,
            key: None,
            headers: Vec::new(),
            payload: undecodable.bytes.clone(),
        };
        self.dead_letters
            .send_async(letter)
            .await
            .map_err(super::send_failed)?;
        shared.dead_lettered(1);
        if let Err(error) = undecodable.ack() {
            shared.error(format!("local ack on `{}`: {error}", self.consumer.name()));
        }
        Ok(())
    }

    fn describe(&self, seq: u64) -> String {
        match self.pending.get(&seq) {
            Some(pending) => self.sink.describe(&pending.outgoing.route),
            None => self.sink.describe(""),
        }
    }
}

/// The id a message sent without one travels with:
/// `source/instance/partition/offset/timestamp` (the store's instance number in hex, the
/// timestamp in nanoseconds since the Unix epoch, as stored with the record). Its place alone
/// is not enough: two brokers with a topic of the same name (two replicas of a service, or a
/// store file made anew) both start at offset 0, and the far side would drop the second
/// broker's message as a duplicate of the first's. Nor is the timestamp, with coarse stamps
/// (`BrokerBuilder::coarse_timestamps`): two replicas stamp their first messages alike. The
/// instance number tells the brokers apart (unless one's store is a copy of the other's),
/// and the timestamp mostly tells apart a topic deleted and declared again in one store. Both
/// are stored, so a redelivery after a crash carries the same id.
fn derived_id<T>(source: &str, instance: u64, message: &Message<T>) -> String {
    let nanos = message
        .timestamp()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!(
        "{source}/{instance:016x}/{}/{}/{nanos}",
        message.partition(),
        message.offset()
    )
}

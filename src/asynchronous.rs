//! The async front-end: [`RecvFut`], [`RecvStream`], [`SendFut`], [`WaitIdleFut`] and
//! [`CloseFut`], runtime-agnostic.
//!
//! They run the same engine as the blocking calls; only the waiting differs (a task's `Waker`
//! is registered where a blocking call would park its thread). No runtime is needed: they work
//! on tokio, smol, async-std or `futures::executor`.
//!
//! # Cancel safety
//!
//! - [`RecvFut`] and [`RecvStream`] take a message only when they return it: dropping one before
//!   it completes loses nothing, and the message goes to the next receive.
//! - [`SendFut`] sends or not at all: dropping it while it waits for room drops the message
//!   unsent (it never appears to consumers). On a durable broker the future then waits for
//!   the commit without blocking the executor; dropped during that wait, the message is still
//!   stored and delivered (only the receipt is lost).
//! - [`WaitIdleFut`] only looks: dropping it changes nothing.
//! - [`CloseFut`]'s closing starts at once and completes whether or not it is polled.
//! - A dropped future removes its waker from everything it waited on.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use futures_core::{FusedFuture, FusedStream, Stream};

use crate::consumer::Consumer;
use crate::engine::notify::Wait;
use crate::engine::{Context as Bus, Fail, IdleWait, Life};
use crate::error::{Error, RecvError, SendError};
use crate::message::Message;
use crate::producer::Producer;
use crate::record::{Payload, Receipt, Record};
use crate::store::Ticket;

/// The future of [`Consumer::recv_async`]: resolves like [`Consumer::recv`].
///
/// Polling it again after it completed starts another receive (use
/// `FusedFuture::is_terminated` to tell). A received message dropped without an ack, for
/// instance in a losing `select!` arm that received but discarded it, is redelivered like any
/// dropped delivery.
///
/// # Cancel safety
///
/// Cancel safe: dropping it before it completes loses no message.
#[must_use = "futures do nothing unless polled"]
pub struct RecvFut<'a, T> {
    consumer: &'a mut Consumer<T>,
    state: State,
}

/// Where a future or stream is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    /// Returned `Pending`: a waker is registered.
    Waiting,
    Done,
}

impl<T: Payload> Consumer<T> {
    /// Receives the next message asynchronously; the same results as [`recv`](Self::recv).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped future loses no message (usable in `tokio::select!`).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = embus::Broker::memory();
    /// let jobs = bus.queue::<u32>("jobs")?;
    /// let mut worker = jobs.consumer();
    /// jobs.producer().send(7)?;
    /// let job = futures_executor_block_on(worker.recv_async())?;
    /// assert_eq!(job.payload(), &7);
    /// # Ok(()) }
    /// # fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let waker = std::task::Waker::noop();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
    /// # }
    /// ```
    pub fn recv_async(&mut self) -> RecvFut<'_, T> {
        RecvFut {
            consumer: self,
            state: State::Idle,
        }
    }

    /// A stream of messages, borrowing this consumer. It yields `Lagged`, `Undecodable` and
    /// `Failed` as `Err` and keeps going, and ends when the broker is closed and nothing is left.
    pub fn stream(&mut self) -> RecvStream<'_, T> {
        RecvStream {
            consumer: Holder::Borrowed(self),
            state: State::Idle,
        }
    }

    /// A stream of messages that owns this consumer; see [`stream`](Self::stream).
    pub fn into_stream(self) -> RecvStream<'static, T> {
        RecvStream {
            consumer: Holder::Owned(self),
            state: State::Idle,
        }
    }
}

impl<T: Payload> Future for RecvFut<'_, T> {
    type Output = Result<Message<T>, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.consumer.poll_recv(cx) {
            Poll::Ready(result) => {
                if this.state == State::Waiting {
                    this.consumer.finish_wait();
                }
                this.state = State::Done;
                Poll::Ready(result)
            }
            Poll::Pending => {
                this.state = State::Waiting;
                Poll::Pending
            }
        }
    }
}

impl<T: Payload> FusedFuture for RecvFut<'_, T> {
    fn is_terminated(&self) -> bool {
        self.state == State::Done
    }
}

impl<T> Unpin for RecvFut<'_, T> {}

impl<T> Drop for RecvFut<'_, T> {
    fn drop(&mut self) {
        if self.state == State::Waiting {
            self.consumer.unregister();
        }
    }
}

impl<T> fmt::Debug for RecvFut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecvFut { .. }")
    }
}

enum Holder<'a, T> {
    Borrowed(&'a mut Consumer<T>),
    Owned(Consumer<T>),
}

impl<T> Holder<'_, T> {
    fn get(&mut self) -> &mut Consumer<T> {
        match self {
            Self::Borrowed(c) => c,
            Self::Owned(c) => c,
        }
    }
}

/// The stream of [`Consumer::stream`] and [`Consumer::into_stream`]: items are
/// `Result<Message<T>, RecvError>` (lag, undecodable records and failed reads are not the
/// end); it ends when the broker is closed.
///
/// # Cancel safety
///
/// Cancel safe: a `next()` future dropped before it completes loses no message.
#[must_use = "streams do nothing unless polled"]
pub struct RecvStream<'a, T> {
    consumer: Holder<'a, T>,
    state: State,
}

impl<T: Payload> Stream for RecvStream<'_, T> {
    type Item = Result<Message<T>, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.state == State::Done {
            return Poll::Ready(None);
        }
        let polled = this.consumer.get().poll_recv(cx);
        if polled.is_ready() && this.state == State::Waiting {
            this.consumer.get().finish_wait();
        }
        match polled {
            Poll::Ready(Err(RecvError::Disconnected)) => {
                this.state = State::Done;
                Poll::Ready(None)
            }
            Poll::Ready(item) => {
                this.state = State::Idle;
                Poll::Ready(Some(item))
            }
            Poll::Pending => {
                this.state = State::Waiting;
                Poll::Pending
            }
        }
    }
}

impl<T: Payload> FusedStream for RecvStream<'_, T> {
    fn is_terminated(&self) -> bool {
        self.state == State::Done
    }
}

impl<T> Unpin for RecvStream<'_, T> {}

impl<T> Drop for RecvStream<'_, T> {
    fn drop(&mut self) {
        if self.state == State::Waiting {
            self.consumer.get().unregister();
        }
    }
}

impl<T> fmt::Debug for RecvStream<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecvStream { .. }")
    }
}

/// The future of [`Producer::send_async`] (`M` = `T`) and [`Producer::send_record_async`]
/// (`M` = `Record<T>`): resolves like [`Producer::send`] / [`send_record`](Producer::send_record),
/// waiting for room without blocking the executor. A failed send hands back an `M`.
///
/// # Cancel safety
///
/// Dropping it while it waits for room means the message was not sent (it never reaches a
/// consumer); it is dropped with the future. On a durable broker, once there was room the
/// message is handed to the store and the future waits for the commit: dropped then, the
/// message is still stored and delivered, only the receipt is lost. If it returned its
/// receipt, it was sent. Polling it again after it completed returns `Pending` (see
/// `FusedFuture::is_terminated`).
#[must_use = "futures do nothing unless polled"]
pub struct SendFut<'a, T, M = T> {
    producer: &'a Producer<T>,
    record: Option<Record<T>>,
    /// What a failed send hands back: the payload, or the whole record.
    hand_back: fn(Record<T>) -> M,
    partition: Option<u32>,
    id: u64,
    state: State,
    /// Sent to a durable store: the receipt, once its commit is done.
    storing: Option<(Receipt, Ticket)>,
}

impl<T: Payload> Producer<T> {
    /// Sends a message asynchronously, waiting for room (a full queue, or a topic under
    /// [`Overflow::Block`](crate::Overflow::Block)) without blocking the executor.
    ///
    /// # Cancel safety
    ///
    /// Dropped while waiting for room: not sent. Dropped while a durable broker commits it:
    /// sent anyway (the receipt is lost).
    pub fn send_async(&self, msg: T) -> SendFut<'_, T> {
        self.send_future(Record::new(msg), Record::into_payload)
    }

    /// Sends a record with a key and headers asynchronously, like
    /// [`send_async`](Self::send_async); a failed send hands the record back.
    ///
    /// # Cancel safety
    ///
    /// As [`send_async`](Self::send_async).
    pub fn send_record_async(&self, record: Record<T>) -> SendFut<'_, T, Record<T>> {
        self.send_future(record, |record| record)
    }

    fn send_future<M>(
        &self,
        record: Record<T>,
        hand_back: fn(Record<T>) -> M,
    ) -> SendFut<'_, T, M> {
        SendFut {
            producer: self,
            record: Some(record),
            hand_back,
            partition: None,
            id: self.next_waiter_id(),
            state: State::Idle,
            storing: None,
        }
    }
}

impl<T: Payload, M> Future for SendFut<'_, T, M> {
    type Output = Result<Receipt, SendError<M>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some((receipt, ticket)) = this.storing {
            let stored = match this.producer.poll_stored(ticket, cx.waker()) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(stored) => stored,
            };
            this.storing = None;
            this.state = State::Done;
            // A failed commit hands the message back; if it is not staged any more, it was
            // published after all.
            let back = stored
                .err()
                .and_then(|e| Some((this.producer.take_back(receipt)?, e)));
            return Poll::Ready(match back {
                Some((record, e)) => Err(SendError::Failed((this.hand_back)(record), e)),
                None => Ok(receipt),
            });
        }
        let Some(record) = this.record.take() else {
            // Polled after completion: nothing left to send.
            return Poll::Pending;
        };
        let wait = Wait::Task(cx.waker());
        let sent = this
            .producer
            .try_send_waiting(record, &mut this.partition, this.id, wait);
        match sent {
            Err((record, Fail::Full)) => {
                this.record = Some(record);
                this.state = State::Waiting;
                Poll::Pending
            }
            Ok((receipt, Some(ticket))) => {
                if this.state == State::Waiting {
                    this.producer.forget_waiter(this.partition, this.id);
                }
                this.state = State::Idle;
                this.storing = Some((receipt, ticket));
                Pin::new(this).poll(cx) // registers for the commit, or finds it done
            }
            done => {
                if this.state == State::Waiting {
                    this.producer.forget_waiter(this.partition, this.id);
                }
                this.state = State::Done;
                let hand_back = this.hand_back;
                Poll::Ready(done.map(|(receipt, _)| receipt).map_err(|(record, fail)| {
                    let msg = hand_back(record);
                    match fail {
                        Fail::Failed(e) => SendError::Failed(msg, e),
                        Fail::Full | Fail::Disconnected => SendError::Disconnected(msg),
                    }
                }))
            }
        }
    }
}

impl<T: Payload, M> FusedFuture for SendFut<'_, T, M> {
    fn is_terminated(&self) -> bool {
        self.state == State::Done
    }
}

impl<T, M> Unpin for SendFut<'_, T, M> {}

impl<T, M> Drop for SendFut<'_, T, M> {
    fn drop(&mut self) {
        if self.state == State::Waiting {
            self.producer.forget_waiter(self.partition, self.id);
        }
    }
}

impl<T, M> fmt::Debug for SendFut<'_, T, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendFut { .. }")
    }
}

/// The future of [`Broker::wait_idle_async`](crate::Broker::wait_idle_async): resolves like
/// [`Broker::wait_idle`](crate::Broker::wait_idle), without blocking the executor.
///
/// # Cancel safety
///
/// Cancel safe: it only looks.
#[must_use = "futures do nothing unless polled"]
pub struct WaitIdleFut {
    wait: Option<IdleWait>,
}

impl WaitIdleFut {
    pub(crate) fn new(wait: IdleWait) -> Self {
        Self { wait: Some(wait) }
    }
}

impl Future for WaitIdleFut {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(wait) = self.wait.as_mut() else {
            return Poll::Ready(Ok(())); // polled after completion: nothing more to wait for
        };
        let result = wait.poll(cx);
        if result.is_ready() {
            self.wait = None;
        }
        result
    }
}

impl FusedFuture for WaitIdleFut {
    fn is_terminated(&self) -> bool {
        self.wait.is_none()
    }
}

impl fmt::Debug for WaitIdleFut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitIdleFut")
            .field("terminated", &self.wait.is_none())
            .finish()
    }
}

/// The future of [`Broker::close_async`](crate::Broker::close_async): resolves like
/// [`Broker::close`](crate::Broker::close).
///
/// # Cancel safety
///
/// Closing starts when `close_async` is called, on a thread of its own, and completes whether
/// or not the future is polled or dropped.
#[must_use = "closing starts at once; await the future for its result"]
pub struct CloseFut {
    done: Arc<Mutex<Closing>>,
}

#[derive(Default)]
struct Closing {
    result: Option<Result<(), Error>>,
    waker: Option<Waker>,
    /// Whether the result was handed out (later polls: `Ok`, closing twice is fine).
    taken: bool,
}

impl CloseFut {
    /// Starts closing `bus`; `life` (the handle's hold on it) is let go only after the close,
    /// so letting it go cannot be what closes, blocking.
    pub(crate) fn new(bus: Arc<Bus>, life: Arc<Life>) -> Self {
        let done: Arc<Mutex<Closing>> = Arc::default();
        let fallback = (Arc::clone(&bus), Arc::clone(&life));
        let report = Arc::clone(&done);
        let close = move || {
            let result = bus.close();
            drop(life); // closed already: nothing left to do
            let mut closing = report.lock();
            closing.result = Some(result);
            closing.waker.take()
        };
        let spawned = std::thread::Builder::new()
            .name("embus-close".into())
            .spawn(move || close().map(Waker::wake));
        if spawned.is_err() {
            // No thread to spare: close here (blocking) rather than not at all.
            let result = fallback.0.close();
            done.lock().result = Some(result);
        }
        Self { done }
    }
}

impl Future for CloseFut {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut closing = self.done.lock();
        if closing.taken {
            return Poll::Ready(Ok(()));
        }
        match closing.result.take() {
            Some(result) => {
                closing.taken = true;
                Poll::Ready(result)
            }
            None => {
                closing.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl FusedFuture for CloseFut {
    fn is_terminated(&self) -> bool {
        self.done.lock().taken
    }
}

impl fmt::Debug for CloseFut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloseFut")
            .field("terminated", &self.done.lock().taken)
            .finish()
    }
}

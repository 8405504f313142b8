//! [`Consumer`]: receives from a topic (as a subscriber or a group member) or from a queue, with
//! the crossbeam family of `recv` methods and iterators.

use std::fmt;
use std::task::{Context, Poll as TaskPoll};
use std::time::{Duration, Instant};

use crate::engine::notify::{Backoff, Deadline, Wait};
use crate::engine::queue::QueueConsumer;
use crate::engine::topic::{Member, Subscriber};
use crate::engine::{Poll, Source};
use crate::error::{Deleted, RecvError, RecvTimeoutError, TryRecvError};
use crate::message::Message;
use crate::record::Payload;

/// A receiver: a topic subscriber ([`Topic::subscribe`](crate::Topic::subscribe)), a consumer
/// group member ([`Topic::join_group`](crate::Topic::join_group)) or a queue consumer
/// ([`Queue::consumer`](crate::Queue::consumer)).
///
/// A consumer owns a cursor or a membership, so it is `Send` but not `Clone`. Dropping it ends
/// the membership (its partitions are rebalanced) and releases its unacked deliveries: keep it
/// until the messages it received are settled (an ack of a queue message whose consumer was
/// dropped is [`Error::DeliveryEnded`](crate::Error::DeliveryEnded)).
///
/// # Blocking
///
/// `recv` waits until a message arrives or the broker closes. Once the broker is closed, the
/// receive methods return whatever was already available, then `Disconnected`.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use embus::{Broker, RecvTimeoutError, Start};
///
/// let bus = Broker::memory();
/// let t = bus.topic::<u32>("t")?;
/// let mut sub = t.subscribe(Start::Earliest)?;
/// assert_eq!(sub.recv_timeout(Duration::from_millis(1)).unwrap_err(), RecvTimeoutError::Timeout);
/// t.producer().send(1)?;
/// assert_eq!(sub.recv()?.payload(), &1);
/// # Ok(()) }
/// ```
///
/// # Errors that are not the end
///
/// Besides `Disconnected` (the end), a receive may return an error and the consumer carries
/// on after it:
///
/// - [`RecvError::Lagged`]: a subscriber fell behind retention under
///   [`Overflow::Lag`](crate::Overflow::Lag); the messages it names are gone.
/// - [`RecvError::Undecodable`] (durable topics): a stored record is damaged or does not
///   decode as `T`; it carries the raw bytes and where the record is. A subscriber has moved
///   past it. A group member holds it like a delivery: the group's position stays before it
///   until [`Undecodable::ack`](crate::Undecodable::ack) skips it; dropped unsettled, it comes
///   again after the group's backoff.
/// - [`RecvError::Failed`] (durable topics): the store could not read a retained message back,
///   even after retrying for about half a second; nothing was skipped, and the next receive
///   tries again from the same message. A failed commit (a full disk) makes the store refuse
///   reads until it is reopened.
pub struct Consumer<T> {
    flavor: Flavor<T>,
    /// A receive decided by [`Select`](crate::Select), handed out by the next receive.
    stash: Option<Result<Message<T>, Fail>>,
    /// Set once a receive returned `Disconnected`: it stays the answer (a queue message
    /// released after close does not come back to life).
    disconnected: bool,
}

enum Flavor<T> {
    Subscriber(Subscriber<T>),
    Member(Member<T>),
    Queue(QueueConsumer<T>),
}

/// Why a receive returned no message.
pub(crate) enum Fail {
    /// Nothing before the deadline (`Empty` for `try_recv`, `Timeout` otherwise).
    Empty,
    Disconnected,
    /// The topic or queue was deleted: the end too.
    Deleted(Box<Deleted>),
    /// Lag, damaged data or a failing store: not the end.
    Error(RecvError),
}

/// One look at `source`: `Some` once the receive is decided (a message, a lag, or closed with
/// nothing left), `None` if the caller should wait.
fn look<T>(source: &mut impl Source<T>, wait: Wait<'_>) -> Option<Result<Message<T>, Fail>> {
    fn decided<T>(poll: Poll<T>) -> Option<Result<Message<T>, Fail>> {
        match poll {
            Poll::Ready(delivery) => Some(Ok(Message::new(delivery))),
            Poll::Lagged(skipped) => Some(Err(Fail::Error(RecvError::Lagged { skipped }))),
            Poll::Error(error) => Some(Err(Fail::Error(error))),
            Poll::Empty => None,
        }
    }
    // Deleted: no message after that (a group's or queue's would only come back when
    // released); and again after a poll that registered: a delete sets the flag before it
    // wakes waiters under the locks that poll took, so a waiter it missed sees it here.
    if let Some(name) = source.deleted() {
        return Some(Err(Fail::Deleted(Deleted::new(name))));
    }
    let poll = source.poll(wait);
    if !poll.is_ready()
        && wait.takes_locks()
        && let Some(name) = source.deleted()
    {
        return Some(Err(Fail::Deleted(Deleted::new(name))));
    }
    if let Some(result) = decided(poll) {
        return Some(result);
    }
    if source.is_closed() {
        // The poll above may have looked (lock-free) before the last sends became visible;
        // seeing `closed` makes them visible, so look once more under the locks.
        let locked = if wait.takes_locks() {
            wait
        } else {
            Wait::Locked
        };
        return Some(decided(source.poll(locked)).unwrap_or(Err(Fail::Disconnected)));
    }
    None
}

/// The blocking receive: look, back off briefly, then register and park until `deadline`.
fn receive<T>(source: &mut impl Source<T>, deadline: Deadline) -> Result<Message<T>, Fail> {
    let mut backoff = Backoff::new();
    let mut register = false;
    loop {
        if let Some(result) = look(source, if register { Wait::Thread } else { Wait::No }) {
            return result;
        }
        if deadline.passed() {
            return Err(Fail::Empty);
        }
        if register {
            deadline.park(source.wake_at());
        } else {
            register = !backoff.snooze();
        }
    }
}

impl<T: Payload> Source<T> for Flavor<T> {
    fn poll(&mut self, wait: Wait<'_>) -> Poll<T> {
        match self {
            Self::Subscriber(s) => s.poll(wait),
            Self::Member(m) => m.poll(wait),
            Self::Queue(q) => q.poll(wait),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Self::Subscriber(s) => s.is_closed(),
            Self::Member(m) => m.is_closed(),
            Self::Queue(q) => q.is_closed(),
        }
    }

    fn deleted(&self) -> Option<String> {
        match self {
            Self::Subscriber(s) => s.deleted(),
            Self::Member(m) => m.deleted(),
            Self::Queue(q) => q.deleted(),
        }
    }

    fn wake_at(&self) -> Option<Instant> {
        match self {
            Self::Subscriber(s) => s.wake_at(),
            Self::Member(m) => m.wake_at(),
            Self::Queue(q) => q.wake_at(),
        }
    }
}

impl<T: Payload> Consumer<T> {
    fn new(flavor: Flavor<T>) -> Self {
        Self {
            flavor,
            stash: None,
            disconnected: false,
        }
    }

    pub(crate) fn subscriber(s: Subscriber<T>) -> Self {
        Self::new(Flavor::Subscriber(s))
    }

    pub(crate) fn member(m: Member<T>) -> Self {
        Self::new(Flavor::Member(m))
    }

    pub(crate) fn queue(q: QueueConsumer<T>) -> Self {
        Self::new(Flavor::Queue(q))
    }

    /// Records a decided receive: `Disconnected` stays the answer from then on.
    fn settle(&mut self, result: Result<Message<T>, Fail>) -> Result<Message<T>, Fail> {
        self.disconnected |= matches!(result, Err(Fail::Disconnected));
        result
    }

    fn receive(&mut self, deadline: Deadline) -> Result<Message<T>, Fail> {
        if let Some(result) = self.stash.take() {
            return self.settle(result);
        }
        if self.disconnected {
            return Err(Fail::Disconnected);
        }
        let result = receive(&mut self.flavor, deadline);
        self.settle(result)
    }

    /// Takes the next message if one is decided, registering `cx`'s waker otherwise.
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> TaskPoll<Result<Message<T>, RecvError>> {
        let mut registered = false;
        let result = match self.stash.take() {
            Some(result) => Some(result),
            None if self.disconnected => Some(Err(Fail::Disconnected)),
            // A cheap look first; then register the waker under the locks and look again.
            None => look(&mut self.flavor, Wait::No).or_else(|| {
                registered = true;
                look(&mut self.flavor, Wait::Task(cx.waker()))
            }),
        };
        if registered && result.is_some() {
            // Registered on some lists, then found a result on another: forget the rest.
            self.finish_wait();
        }
        match result {
            Some(result) => TaskPoll::Ready(self.settle(result).map_err(Fail::into_recv_error)),
            None => TaskPoll::Pending,
        }
    }

    /// For [`Select`](crate::Select): looks without taking the result away, keeping it for the
    /// next receive. `true` once a receive would not wait.
    pub(crate) fn select_poll(&mut self, wait: Wait<'_>) -> bool {
        if self.stash.is_some() || self.disconnected {
            return true;
        }
        self.stash = look(&mut self.flavor, wait);
        self.stash.is_some()
    }

    pub(crate) fn wake_at(&self) -> Option<Instant> {
        self.flavor.wake_at()
    }

    /// Waits for the next message.
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] once the broker is closed and nothing is left;
    /// [`RecvError::Lagged`] once after this consumer fell behind retention under
    /// [`Overflow::Lag`](crate::Overflow::Lag); [`RecvError::Undecodable`] for a damaged or
    /// undecodable stored record; [`RecvError::Failed`] when the store cannot read a retained
    /// message back (see [Errors that are not the end](Consumer#errors-that-are-not-the-end)).
    pub fn recv(&mut self) -> Result<Message<T>, RecvError> {
        self.receive(Deadline::Never).map_err(Fail::into_recv_error)
    }

    /// Takes a message if one is ready now.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`], or as [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Message<T>, TryRecvError> {
        self.receive(Deadline::Now).map_err(|fail| match fail {
            Fail::Empty => TryRecvError::Empty,
            Fail::Disconnected => TryRecvError::Disconnected,
            Fail::Deleted(d) => TryRecvError::Deleted(d),
            Fail::Error(error) => error.into(),
        })
    }

    /// Waits at most `timeout` (real time) for a message.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`], or as [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message<T>, RecvTimeoutError> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.recv_deadline(deadline),
            None => self.recv().map_err(RecvTimeoutError::from),
        }
    }

    /// Waits until `deadline` (real time) for a message.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`], or as [`recv`](Self::recv).
    pub fn recv_deadline(&mut self, deadline: Instant) -> Result<Message<T>, RecvTimeoutError> {
        self.receive(Deadline::At(deadline))
            .map_err(|fail| match fail {
                Fail::Empty => RecvTimeoutError::Timeout,
                Fail::Disconnected => RecvTimeoutError::Disconnected,
                Fail::Deleted(d) => RecvTimeoutError::Deleted(d),
                Fail::Error(error) => error.into(),
            })
    }

    /// A blocking iterator. It yields `Lagged`, `Undecodable` and `Failed` as `Err` and keeps
    /// going, and ends when the broker is closed and nothing is left, or the topic or queue is
    /// deleted ([`recv`](Self::recv) says which).
    ///
    /// Handle the errors rather than skipping them (`.flatten()`): a group member that drops an
    /// [`Undecodable`](crate::Undecodable) without [`ack`](crate::Undecodable::ack)ing it gets
    /// it again after the group's backoff, like Kafka's consumer that re-throws the same
    /// deserialization error until it seeks past it, and the group's position stays before it.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = embus::Broker::memory();
    /// let t = bus.topic::<u32>("t")?;
    /// let mut sub = t.subscribe(embus::Start::Earliest)?;
    /// t.producer().send_batch(vec![1, 2, 3])?;
    /// drop(t);
    /// bus.close()?;
    /// let got: Vec<u32> = sub.iter().map(|m| m.map(|m| *m.payload())).collect::<Result<_, _>>()?;
    /// assert_eq!(got, [1, 2, 3]);
    /// # Ok(()) }
    /// ```
    pub fn iter(&mut self) -> Iter<'_, T> {
        Iter { consumer: self }
    }

    /// An iterator over what is ready now, without waiting. Yields `Lagged`, `Undecodable` and
    /// `Failed` as `Err` and keeps going; ends when nothing is ready or the broker is closed.
    pub fn try_iter(&mut self) -> TryIter<'_, T> {
        TryIter { consumer: self }
    }

    /// Messages this consumer has yet to receive: for a subscriber, retained messages past its
    /// position; for a group member, unacked messages of its partitions; for a queue consumer,
    /// the queue's ready messages.
    pub fn lag(&self) -> u64 {
        match &self.flavor {
            Flavor::Subscriber(s) => s.lag(),
            Flavor::Member(m) => m.lag(),
            Flavor::Queue(q) => q.ready(),
        }
    }

    /// The partitions this consumer reads: all of them for a subscriber, the assigned ones for a
    /// group member (none for an idle member), `[0]` for a queue consumer.
    pub fn partitions(&self) -> Vec<u32> {
        match &self.flavor {
            Flavor::Subscriber(s) => s.partitions(),
            Flavor::Member(m) => m.assigned(),
            Flavor::Queue(_) => vec![0],
        }
    }
}

impl<T> Consumer<T> {
    /// The name of the topic or queue this consumer reads.
    pub fn name(&self) -> &str {
        match &self.flavor {
            Flavor::Subscriber(s) => s.topic_name(),
            Flavor::Member(m) => m.topic_name(),
            Flavor::Queue(q) => q.queue_name(),
        }
    }

    /// Whether its messages are settled (a group member or a queue consumer): acking one
    /// moves something that outlives the consumer, unlike a plain subscriber's position.
    #[cfg(any(feature = "nats", feature = "amqp"))]
    pub(crate) fn settles(&self) -> bool {
        !matches!(self.flavor, Flavor::Subscriber(_))
    }

    /// Its broker's store instance: outbound bridges' derived message ids name it.
    #[cfg(any(feature = "nats", feature = "amqp"))]
    pub(crate) fn store_instance(&self) -> u64 {
        match &self.flavor {
            Flavor::Subscriber(s) => s.store_instance(),
            Flavor::Member(m) => m.store_instance(),
            Flavor::Queue(q) => q.store_instance(),
        }
    }

    /// Forgets this consumer's waker registrations (a dropped future leaves none behind).
    pub(crate) fn unregister(&mut self) {
        match &mut self.flavor {
            Flavor::Subscriber(s) => s.unregister(),
            Flavor::Member(m) => m.unregister(),
            Flavor::Queue(q) => q.unregister(),
        }
    }

    /// After a future that waited got its result: forgets the registrations the wake-up did not
    /// take, so no stale waker stays behind.
    pub(crate) fn finish_wait(&mut self) {
        match &mut self.flavor {
            Flavor::Subscriber(s) => s.finish_wait(),
            Flavor::Member(m) => m.finish_wait(),
            Flavor::Queue(q) => q.finish_wait(),
        }
    }
}

impl Fail {
    fn into_recv_error(self) -> RecvError {
        match self {
            Self::Error(error) => error,
            Self::Deleted(d) => RecvError::Deleted(d),
            Self::Empty | Self::Disconnected => RecvError::Disconnected,
        }
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.flavor {
            Flavor::Subscriber(_) => "subscriber",
            Flavor::Member(_) => "group member",
            Flavor::Queue(_) => "queue consumer",
        };
        f.debug_struct("Consumer")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

/// The blocking iterator of [`Consumer::iter`].
pub struct Iter<'a, T> {
    consumer: &'a mut Consumer<T>,
}

/// The non-blocking iterator of [`Consumer::try_iter`].
pub struct TryIter<'a, T> {
    consumer: &'a mut Consumer<T>,
}

/// The owning blocking iterator of `Consumer`'s `IntoIterator`.
pub struct IntoIter<T> {
    consumer: Consumer<T>,
}

fn next_blocking<T: Payload>(consumer: &mut Consumer<T>) -> Option<Result<Message<T>, RecvError>> {
    match consumer.recv() {
        Err(RecvError::Disconnected | RecvError::Deleted(_)) => None,
        other => Some(other),
    }
}

impl<T: Payload> Iterator for Iter<'_, T> {
    type Item = Result<Message<T>, RecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        next_blocking(self.consumer)
    }
}

impl<T: Payload> Iterator for IntoIter<T> {
    type Item = Result<Message<T>, RecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        next_blocking(&mut self.consumer)
    }
}

impl<T: Payload> Iterator for TryIter<'_, T> {
    type Item = Result<Message<T>, RecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.consumer.try_recv() {
            Ok(message) => Some(Ok(message)),
            Err(TryRecvError::Lagged { skipped }) => Some(Err(RecvError::Lagged { skipped })),
            Err(TryRecvError::Undecodable(u)) => Some(Err(RecvError::Undecodable(u))),
            Err(TryRecvError::Failed(f)) => Some(Err(RecvError::Failed(f))),
            Err(TryRecvError::Empty | TryRecvError::Disconnected | TryRecvError::Deleted(_)) => {
                None
            }
        }
    }
}

impl<'a, T: Payload> IntoIterator for &'a mut Consumer<T> {
    type Item = Result<Message<T>, RecvError>;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: Payload> IntoIterator for Consumer<T> {
    type Item = Result<Message<T>, RecvError>;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        IntoIter { consumer: self }
    }
}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Iter { .. }")
    }
}

impl<T> fmt::Debug for TryIter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TryIter { .. }")
    }
}

impl<T> fmt::Debug for IntoIter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IntoIter { .. }")
    }
}

//! The name registry: one namespace for topics and queues, the `Mismatch` check, and the
//! declarations a durable store keeps (kind, payload type name and options, versioned).

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::queue::QueueCore;
use super::topic::{TopicCore, is_group_declaration, stored_dead_letter};
use super::{Context, Control};
use crate::codec::{Bincode, Codec};
use crate::error::Error;
use crate::options::{QueueOptions, TopicOptions, validate_name};
use crate::record::Payload;
use crate::store::LogId;

/// The version of the stored declaration encoding this build writes. Version 1 (bincode, with
/// `std::any::type_name` as the payload's identity) is still read.
const DECLARATION_VERSION: u32 = 2;

/// Declared topics and queues by name, and the payload type names a durable store checks.
pub(super) struct Registry {
    declared: Mutex<HashMap<String, Declared>>,
    /// Payload type names set by the application (`BrokerBuilder::payload_name`).
    names: HashMap<TypeId, String>,
}

/// Stored as `"topic"` or `"queue"`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Topic,
    Queue,
}

/// Stored as the options struct itself.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
enum DeclaredOptions {
    Topic(TopicOptions),
    Queue(QueueOptions),
}

struct Declared {
    type_id: TypeId,
    /// The payload type's full name, for messages (the stored identity is its stable name).
    type_name: &'static str,
    options: DeclaredOptions,
    core: Arc<dyn Any + Send + Sync>,
    control: Arc<dyn Control>,
}

/// A declaration as stored, version 2: JSON, so a later version can add fields.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredDeclaration<O> {
    version: u32,
    kind: Kind,
    /// The payload type's stable name.
    payload: String,
    options: O,
}

/// A declaration as version 1 stored it (bincode; options bincode too).
#[derive(serde::Deserialize)]
struct LegacyDeclaration {
    queue: bool,
    type_name: String,
    options: Vec<u8>,
}

/// A stored declaration read back: kind, payload name, and the options (read only when the
/// kind is the one asked for: another kind's options are another type).
struct Found<O> {
    kind: Kind,
    payload: String,
    options: Option<O>,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Queue => "queue",
        }
    }
}

impl DeclaredOptions {
    fn kind(&self) -> Kind {
        match self {
            Self::Topic(_) => Kind::Topic,
            Self::Queue(_) => Kind::Queue,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Topic(o) => format!("{o:?}"),
            Self::Queue(o) => format!("{o:?}"),
        }
    }
}

impl Declared {
    fn describe(&self) -> String {
        format!(
            "a {} of {} with {}",
            self.options.kind().name(),
            self.type_name,
            self.options.describe()
        )
    }
}

impl Registry {
    /// An empty registry; `names` are the payload type names the application set.
    pub(super) fn new(names: HashMap<TypeId, String>) -> Self {
        Self {
            declared: Mutex::default(),
            names,
        }
    }

    /// Every declared topic's and queue's control.
    pub(super) fn controls(&self) -> Vec<Arc<dyn Control>> {
        self.declared
            .lock()
            .values()
            .map(|d| Arc::clone(&d.control))
            .collect()
    }

    /// Forgets every declaration (close), returning their controls.
    pub(super) fn drain(&self) -> Vec<Arc<dyn Control>> {
        let declared: Vec<Declared> = self.declared.lock().drain().map(|(_, d)| d).collect();
        declared.into_iter().map(|d| d.control).collect()
    }

    /// The stable name of payload type `T`: the one the application set, or the last path
    /// segment of each path in its type name (`my_app::orders::Order` is `Order`,
    /// `alloc::vec::Vec<my_app::Order>` is `Vec<Order>`).
    fn payload_name<T: 'static>(&self) -> String {
        match self.names.get(&TypeId::of::<T>()) {
            Some(name) => name.clone(),
            None => short_type_name(type_name::<T>()),
        }
    }
}

fn describe_request(kind: Kind, payload: &str, options: Option<String>) -> String {
    let options = options.map_or(String::new(), |o| format!(" with {o}"));
    format!("a {} of {payload}{options}", kind.name())
}

/// Strips every path in a type name to its last segment.
fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            segment.clear();
        } else if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else {
            out.push_str(&segment);
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(&segment);
    out
}

impl Context {
    /// Gets the topic `name` (checking type and, when given, options) or creates it.
    pub(crate) fn declare_topic<T: Payload>(
        self: &Arc<Self>,
        name: &str,
        options: Option<TopicOptions>,
    ) -> Result<Arc<TopicCore<T>>, Error> {
        validate_name(name)?;
        if let Some(o) = &options {
            o.validate(name)?;
        }
        let (options, stored) = self.stored::<T, _>(name, Kind::Topic, options)?;
        let declared = options.map(DeclaredOptions::Topic);
        self.declare::<T, _>(name, Kind::Topic, declared, stored, || {
            let o = options.unwrap_or_default();
            let core = TopicCore::<T>::create(name, o, Arc::clone(self))?;
            Ok((DeclaredOptions::Topic(o), core))
        })
    }

    /// Gets the queue `name` (checking type and, when given, options) or creates it, with its
    /// dead-letter queue.
    pub(crate) fn declare_queue<T: Payload>(
        self: &Arc<Self>,
        name: &str,
        options: Option<QueueOptions>,
    ) -> Result<Arc<QueueCore<T>>, Error> {
        validate_name(name)?;
        if let Some(o) = &options {
            o.validate(name)?;
        }
        let (options, stored) = self.stored::<T, _>(name, Kind::Queue, options)?;
        let declared = options.clone().map(DeclaredOptions::Queue);
        // A mismatch on `name` itself must not leave a new dead-letter queue behind (`declare`
        // looks again, under the lock it creates under).
        let existing = self.lookup::<T, QueueCore<T>>(
            &self.registry.declared.lock(),
            name,
            Kind::Queue,
            declared.as_ref(),
        )?;
        if let Some(core) = existing {
            return Ok(core);
        }
        // Then the dead-letter queue, so a type mismatch there fails this declaration.
        let dead_letter = match options.as_ref().and_then(QueueOptions::dead_letter_queue) {
            Some(dlq) => Some(self.declare_queue::<T>(dlq, None)?),
            None => None,
        };
        let core = self.declare::<T, _>(name, Kind::Queue, declared, stored, || {
            let o = options.unwrap_or_default();
            let core =
                QueueCore::<T>::create(name, o.clone(), dead_letter.clone(), Arc::clone(self))?;
            Ok((DeclaredOptions::Queue(o), core))
        })?;
        if let Some(dlq) = &dead_letter {
            dlq.add_feeder(&core);
        }
        Ok(core)
    }

    /// Looks `name` up, checking kind, type and (when given) options, or creates it with the
    /// options `create` settles on, storing the declaration unless it is `stored` already.
    fn declare<T: 'static, C: Control + 'static>(
        &self,
        name: &str,
        kind: Kind,
        options: Option<DeclaredOptions>,
        stored: bool,
        create: impl FnOnce() -> Result<(DeclaredOptions, Arc<C>), Error>,
    ) -> Result<Arc<C>, Error> {
        let mut declared = self.registry.declared.lock();
        if let Some(core) = self.lookup::<T, C>(&declared, name, kind, options.as_ref())? {
            return Ok(core);
        }
        self.check_open()?;
        let (options, core) = create()?;
        if !stored {
            self.remember::<T>(name, &options)?;
        }
        declared.insert(
            name.to_owned(),
            Declared {
                type_id: TypeId::of::<C>(),
                type_name: type_name::<T>(),
                options,
                core: Arc::clone(&core) as Arc<dyn Any + Send + Sync>,
                control: Arc::clone(&core) as Arc<dyn Control>,
            },
        );
        Ok(core)
    }

    /// The existing declaration of `name`, if it matches kind, type and (when given) options.
    ///
    /// # Errors
    /// [`Error::Mismatch`].
    fn lookup<T: 'static, C: Any + Send + Sync>(
        &self,
        declared: &HashMap<String, Declared>,
        name: &str,
        kind: Kind,
        options: Option<&DeclaredOptions>,
    ) -> Result<Option<Arc<C>>, Error> {
        let Some(existing) = declared.get(name) else {
            return Ok(None);
        };
        let type_matches = existing.type_id == TypeId::of::<C>();
        let options_match = options.is_none_or(|o| *o == existing.options);
        match Arc::clone(&existing.core).downcast::<C>() {
            Ok(core) if type_matches && options_match && existing.options.kind() == kind => {
                Ok(Some(core))
            }
            _ => Err(Error::Mismatch {
                name: name.to_owned(),
                existing: existing.describe(),
                requested: describe_request(kind, type_name::<T>(), options.map(|o| o.describe())),
            }),
        }
    }

    /// The options `name` was stored with by an earlier run (durable mode), checked against
    /// what this declaration asks: `(options to use, whether they are stored already)`.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if the stored declaration has another kind, payload type or options;
    /// [`Error::Corrupt`] if it cannot be read.
    fn stored<T: 'static, O>(
        &self,
        name: &str,
        kind: Kind,
        requested: Option<O>,
    ) -> Result<(Option<O>, bool), Error>
    where
        O: Serialize + Declarable + PartialEq + fmt::Debug,
    {
        if self.registry.declared.lock().contains_key(name) {
            return Ok((requested, true)); // declared in this run: `lookup` checks it
        }
        let Some(bytes) = self.store.declared(name)? else {
            return Ok((requested, false));
        };
        let found = read_declaration::<O>(&bytes, kind).map_err(|detail| Error::Corrupt {
            path: self.store.path(),
            detail: format!("the stored declaration of `{name}` cannot be read: {detail}"),
        })?;
        let payload = self.registry.payload_name::<T>();
        match found.options {
            Some(options)
                if found.payload == payload && requested.as_ref().is_none_or(|o| *o == options) =>
            {
                return Ok((Some(options), true));
            }
            _ => {}
        }
        let options = found
            .options
            .map_or(String::new(), |o| format!(" with {o:?}"));
        Err(Error::Mismatch {
            name: name.to_owned(),
            existing: format!(
                "a stored {} of {}{options}",
                found.kind.name(),
                found.payload,
            ),
            requested: describe_request(kind, &payload, requested.map(|o| format!("{o:?}"))),
        })
    }

    /// Stores a new declaration (durable mode), so a reopen knows it.
    ///
    /// # Errors
    /// [`Error::Encode`] if the options cannot be encoded (they always can today).
    fn remember<T: 'static>(&self, name: &str, options: &DeclaredOptions) -> Result<(), Error> {
        let declaration = StoredDeclaration {
            version: DECLARATION_VERSION,
            kind: options.kind(),
            payload: self.registry.payload_name::<T>(),
            options,
        };
        let bytes = serde_json::to_vec(&declaration).map_err(|e| Error::Encode {
            name: name.to_owned(),
            message: format!("its declaration: {e}"),
        })?;
        self.store.declare(name, bytes);
        Ok(())
    }
}

/// Listing and deleting (`Broker::topics`, `queues`, `delete_topic`, `delete_queue`).
impl Context {
    /// The names of every topic (or queue) declared in this run or stored in the file, sorted.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if a stored declaration cannot be read; a store read failure.
    pub(crate) fn names(&self, queues: bool) -> Result<Vec<String>, Error> {
        let kind = if queues { Kind::Queue } else { Kind::Topic };
        let mut names: Vec<String> = self
            .registry
            .declared
            .lock()
            .iter()
            .filter(|(_, d)| d.options.kind() == kind)
            .map(|(name, _)| name.clone())
            .collect();
        for (name, bytes) in self.store.declarations()? {
            if !is_group_declaration(&name) && self.stored_kind(&name, &bytes)? == kind {
                names.push(name);
            }
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// Deletes the topic (or queue) `name`: wakes its handles with `Deleted`, forgets it, and
    /// (durable mode) deletes its declaration, rows and group positions in one commit.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Mismatch`] if `name` is the other kind; [`Error::InUse`]
    /// for a queue another queue dead-letters into; [`Error::Closed`]; a store failure.
    pub(crate) fn delete(&self, name: &str, queue: bool) -> Result<(), Error> {
        self.check_open()?;
        let kind = if queue { Kind::Queue } else { Kind::Topic };
        // Held throughout: nobody declares `name` again before its rows are gone.
        let mut declared = self.registry.declared.lock();
        let options = match declared.get(name) {
            Some(d) => Some(d.options.clone()),
            None => match self.store.declared(name)? {
                Some(bytes) => self.stored_options(name, &bytes)?,
                None => None,
            },
        };
        let Some(options) = options else {
            return Err(Error::NotFound {
                name: name.to_owned(),
            });
        };
        if options.kind() != kind {
            return Err(Error::Mismatch {
                name: name.to_owned(),
                existing: format!("a {}", options.kind().name()),
                requested: format!("a {} to delete", kind.name()),
            });
        }
        if queue && let Some(user) = self.dead_letter_user(&declared, name)? {
            return Err(Error::InUse {
                name: name.to_owned(),
                user,
            });
        }
        let mut tables: Vec<String> = match &options {
            DeclaredOptions::Topic(o) => (0..o.partition_count())
                .flat_map(|p| LogId::partition(name, p).tables())
                .collect(),
            DeclaredOptions::Queue(_) => LogId::queue(name).tables(),
        };
        // A topic's partitions share its message id table: each names it.
        tables.sort_unstable();
        tables.dedup();
        let sinks = match declared.remove(name) {
            Some(d) => {
                d.control.delete();
                d.control.sinks()
            }
            None => Vec::new(),
        };
        self.store.delete(name, tables, sinks, !queue)
    }

    /// A queue (declared or stored) whose dead-letter queue is `name`.
    fn dead_letter_user(
        &self,
        declared: &HashMap<String, Declared>,
        name: &str,
    ) -> Result<Option<String>, Error> {
        let uses = |o: &DeclaredOptions| match o {
            DeclaredOptions::Queue(q) => q.dead_letter_queue() == Some(name),
            DeclaredOptions::Topic(_) => false,
        };
        if let Some((user, _)) = declared.iter().find(|(_, d)| uses(&d.options)) {
            return Ok(Some(user.clone()));
        }
        let groups = declared
            .values()
            .flat_map(|d| d.control.dead_letter_users(name));
        if let Some(user) = groups.into_iter().next() {
            return Ok(Some(user));
        }
        for (user, bytes) in self.store.declarations()? {
            if is_group_declaration(&user) {
                // A group of a topic not declared in this run (those were asked above).
                let topic = user.split('/').next().unwrap_or_default();
                if !declared.contains_key(topic)
                    && stored_dead_letter(&bytes).as_deref() == Some(name)
                {
                    return Ok(Some(user));
                }
                continue;
            }
            if user != name
                && !declared.contains_key(&user)
                && self
                    .stored_options(&user, &bytes)?
                    .is_some_and(|o| uses(&o))
            {
                return Ok(Some(user));
            }
        }
        Ok(None)
    }

    /// The kind of a stored declaration.
    fn stored_kind(&self, name: &str, bytes: &[u8]) -> Result<Kind, Error> {
        read_declaration::<TopicOptions>(bytes, Kind::Topic)
            .map(|found| found.kind)
            .map_err(|detail| self.unreadable(name, &detail))
    }

    /// The options of a stored declaration.
    fn stored_options(&self, name: &str, bytes: &[u8]) -> Result<Option<DeclaredOptions>, Error> {
        let kind = self.stored_kind(name, bytes)?;
        let options = match kind {
            Kind::Topic => read_declaration::<TopicOptions>(bytes, kind)
                .map(|f| f.options.map(DeclaredOptions::Topic)),
            Kind::Queue => read_declaration::<QueueOptions>(bytes, kind)
                .map(|f| f.options.map(DeclaredOptions::Queue)),
        };
        options.map_err(|detail| self.unreadable(name, &detail))
    }

    fn unreadable(&self, name: &str, detail: &str) -> Error {
        Error::Corrupt {
            path: self.store.path(),
            detail: format!("the stored declaration of `{name}` cannot be read: {detail}"),
        }
    }
}

/// Reads a stored declaration of either version; its options only if it is of kind `asked`.
/// Options a declaration stores. Version 1 stored them in bincode, which cannot skip or
/// default a field: each kind reads that shape (as it was then) and converts it.
trait Declarable: DeserializeOwned {
    fn from_v1(bytes: &[u8]) -> Result<Self, String>;
}

#[derive(serde::Deserialize)]
struct TopicV1 {
    partitions: u32,
    messages: Option<u64>,
    bytes: Option<u64>,
    age: Option<std::time::Duration>,
    block: OverflowV1,
}

#[derive(serde::Deserialize)]
enum OverflowV1 {
    Lag,
    Block,
}

#[derive(serde::Deserialize)]
struct QueueV1 {
    capacity: usize,
    ack_timeout: Option<std::time::Duration>,
    max_deliveries: Option<u32>,
    dead_letter: Option<String>,
    prefetch: Option<u32>,
}

impl Declarable for TopicOptions {
    fn from_v1(bytes: &[u8]) -> Result<Self, String> {
        let v1: TopicV1 = Bincode::decode(bytes).map_err(|e| e.to_string())?;
        let mut retention = crate::options::Retention::unlimited();
        if let Some(n) = v1.messages {
            retention = retention.and_messages(n);
        }
        if let Some(n) = v1.bytes {
            retention = retention.and_bytes(n);
        }
        if let Some(age) = v1.age {
            retention = retention.and_age(age);
        }
        let overflow = match v1.block {
            OverflowV1::Lag => crate::options::Overflow::Lag,
            OverflowV1::Block => crate::options::Overflow::Block,
        };
        Ok(Self::default()
            .partitions(v1.partitions)
            .retention(retention)
            .overflow(overflow))
    }
}

impl Declarable for QueueOptions {
    fn from_v1(bytes: &[u8]) -> Result<Self, String> {
        let v1: QueueV1 = Bincode::decode(bytes).map_err(|e| e.to_string())?;
        let mut options = Self::default().capacity(v1.capacity);
        options = match v1.ack_timeout {
            Some(timeout) => options.ack_timeout(timeout),
            None => options.no_ack_timeout(),
        };
        if let Some(n) = v1.max_deliveries {
            options = options.max_deliveries(n);
        }
        if let Some(dlq) = v1.dead_letter {
            options = options.dead_letter(dlq);
        }
        if let Some(n) = v1.prefetch {
            options = options.prefetch(n);
        }
        Ok(options)
    }
}

fn read_declaration<O: Declarable>(bytes: &[u8], asked: Kind) -> Result<Found<O>, String> {
    if bytes.first() == Some(&b'{') {
        let header: StoredDeclaration<serde_json::Value> =
            serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if header.version > DECLARATION_VERSION {
            return Err(format!(
                "declaration version {}, this build reads up to {DECLARATION_VERSION}",
                header.version
            ));
        }
        let kind = header.kind;
        let options = if kind == asked {
            Some(serde_json::from_value(header.options).map_err(|e| e.to_string())?)
        } else {
            None
        };
        return Ok(Found {
            kind,
            payload: header.payload,
            options,
        });
    }
    let legacy: LegacyDeclaration = Bincode::decode(bytes).map_err(|e| e.to_string())?;
    let kind = if legacy.queue {
        Kind::Queue
    } else {
        Kind::Topic
    };
    let options = if kind == asked {
        Some(O::from_v1(&legacy.options)?)
    } else {
        None
    };
    Ok(Found {
        kind,
        payload: short_type_name(&legacy.type_name),
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_keep_the_last_segment_of_every_path() {
        assert_eq!(short_type_name("alloc::string::String"), "String");
        assert_eq!(short_type_name("u64"), "u64");
        assert_eq!(
            short_type_name("alloc::vec::Vec<my_app::orders::Order>"),
            "Vec<Order>"
        );
        assert_eq!(
            short_type_name("(u32, core::option::Option<a::B>)"),
            "(u32, Option<B>)"
        );
    }

    #[test]
    fn a_declaration_reads_back_and_ignores_fields_it_does_not_know() {
        let bytes = serde_json::to_vec(&StoredDeclaration {
            version: DECLARATION_VERSION,
            kind: Kind::Topic,
            payload: "Order".to_owned(),
            options: TopicOptions::default().partitions(3),
        })
        .unwrap();
        let found = read_declaration::<TopicOptions>(&bytes, Kind::Topic).unwrap();
        assert_eq!(found.kind, Kind::Topic);
        assert_eq!(found.options.map(|o| o.partition_count()), Some(3));
        let as_queue = read_declaration::<QueueOptions>(&bytes, Kind::Queue).unwrap();
        assert!(
            as_queue.options.is_none(),
            "another kind's options are not read"
        );
        // A later build's extra field (in the declaration and in the options) is ignored.
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        value["added"] = serde_json::json!(1);
        value["options"]["added"] = serde_json::json!(true);
        let bytes = serde_json::to_vec(&value).unwrap();
        assert!(read_declaration::<TopicOptions>(&bytes, Kind::Topic).is_ok());
        // A later version is refused, not misread.
        value["version"] = serde_json::json!(DECLARATION_VERSION + 1);
        let bytes = serde_json::to_vec(&value).unwrap();
        assert!(read_declaration::<TopicOptions>(&bytes, Kind::Topic).is_err());
    }
}

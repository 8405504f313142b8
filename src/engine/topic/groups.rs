//! A topic's consumer groups as a whole: declaring them (options, stored declarations, the
//! dead-letter queue), restoring them, listing, deleting, resetting; and looking at one
//! message ([`TopicCore::peek`]).
//!
//! A group's options are stored as a declaration named `<topic>/<group>` (names cannot
//! contain `/`, so it never collides with a topic or queue), in JSON like topic and queue
//! declarations; its positions are stored per partition. A reopen reads both, never the log.

use std::sync::Arc;

use super::{Cold, Group, StoredRef, TopicCore};
use crate::engine::Context;
use crate::error::Error;
use crate::options::{GroupOptions, Start, validate_name};
use crate::record::Payload;
use crate::store::Progress;

/// The version of the stored group declaration.
const GROUP_DECLARATION_VERSION: u32 = 1;

/// A group's declaration as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredGroup {
    version: u32,
    kind: String,
    options: GroupOptions,
}

/// The name a group's declaration is stored under.
fn declaration_name(topic: &str, group: &str) -> String {
    format!("{topic}/{group}")
}

/// Whether a stored declaration's name is a group's (`topic/group`), not a topic's or queue's.
pub(crate) fn is_group_declaration(name: &str) -> bool {
    name.contains('/')
}

/// The dead-letter queue a stored group declaration names, if it can be read and names one.
pub(crate) fn stored_dead_letter(bytes: &[u8]) -> Option<String> {
    let stored: StoredGroup = serde_json::from_slice(bytes).ok()?;
    stored.options.dead_letter_queue().map(str::to_owned)
}

/// The stored options of group `group` of `topic`: the defaults if none were stored (a group
/// from before group options existed).
///
/// # Errors
/// [`Error::Corrupt`] if the declaration cannot be read.
pub(super) fn stored_options(
    context: &Context,
    topic: &str,
    group: &str,
) -> Result<GroupOptions, Error> {
    let name = declaration_name(topic, group);
    let Some(bytes) = context.store.declared(&name)? else {
        return Ok(GroupOptions::default());
    };
    let corrupt = |detail: String| Error::Corrupt {
        path: context.store.path(),
        detail: format!("the stored options of group `{group}` of topic `{topic}`: {detail}"),
    };
    let stored: StoredGroup = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if stored.version > GROUP_DECLARATION_VERSION {
        return Err(corrupt(format!(
            "version {}, this build reads up to {GROUP_DECLARATION_VERSION}",
            stored.version
        )));
    }
    Ok(stored.options)
}

impl<T: Payload> TopicCore<T> {
    /// Restores a stored group at `stored(partition)` (clamped to what is retained).
    pub(super) fn restore_group(
        &self,
        name: &str,
        options: GroupOptions,
        stored: impl Fn(u32) -> Option<u64>,
    ) {
        let blocks = options.overflow_policy() == crate::options::Overflow::Block;
        let cursors = (0..)
            .zip(self.partitions.iter())
            .map(|(partition, part)| {
                let mut log = part.lock();
                let at = match stored(partition) {
                    Some(at) => at.clamp(log.base(), log.end()),
                    None => self.start_offset(&mut log, options.start_position()),
                };
                (at, log.add_group_cursor(at, blocks))
            })
            .collect();
        let group = Arc::new(Group::new(name, options, cursors));
        self.groups.lock().insert(name.to_owned(), group);
    }

    /// The group `name` to join: the existing one (checked against `options` if given), or a
    /// new one with `options` (or the defaults), declared with its dead-letter queue.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::InvalidOption`]; [`Error::Mismatch`] if the group
    /// exists with other options, or its dead-letter queue with another payload type.
    pub(crate) fn declare_group(
        &self,
        name: &str,
        options: Option<GroupOptions>,
    ) -> Result<Arc<Group<T>>, Error> {
        validate_name(name)?;
        if let Some(o) = &options {
            o.validate(name)?;
        }
        let existing = self.groups.lock().get(name).cloned();
        let group = match existing {
            Some(group) => {
                self.check_group(&group, options.as_ref())?;
                group
            }
            None => {
                let options = options.unwrap_or_default();
                // The dead-letter queue first, so a mismatch there declares nothing.
                if let Some(dlq) = options.dead_letter_queue() {
                    self.context.declare_queue::<T>(dlq, None)?;
                }
                self.create_group(name, options)?
            }
        };
        if !group.has_dead_letter()
            && let Some(dlq) = group.options().dead_letter_queue()
        {
            let dlq = self.context.declare_queue::<T>(dlq, None)?;
            dlq.add_group_feeder();
            group.set_dead_letter(dlq);
        }
        Ok(group)
    }

    /// `Mismatch` unless `options` (if given) are `group`'s.
    fn check_group(&self, group: &Group<T>, options: Option<&GroupOptions>) -> Result<(), Error> {
        match options {
            Some(o) if o != group.options() => Err(Error::Mismatch {
                name: group.name().to_owned(),
                existing: format!(
                    "a consumer group of topic `{}` with {:?}",
                    self.name,
                    group.options()
                ),
                requested: format!("{o:?}"),
            }),
            _ => Ok(()),
        }
    }

    /// Creates group `name` (unless a concurrent join just did: then checks against it),
    /// storing its declaration and its starting positions.
    fn create_group(&self, name: &str, options: GroupOptions) -> Result<Arc<Group<T>>, Error> {
        self.check_live()?;
        let mut groups = self.groups.lock();
        if let Some(group) = groups.get(name) {
            self.check_group(group, Some(&options))?;
            return Ok(Arc::clone(group));
        }
        if self.context.store.reads_back() {
            let declaration = StoredGroup {
                version: GROUP_DECLARATION_VERSION,
                kind: "group".to_owned(),
                options: options.clone(),
            };
            let bytes = serde_json::to_vec(&declaration).map_err(|e| Error::Encode {
                name: name.to_owned(),
                message: format!("its declaration: {e}"),
            })?;
            self.context
                .store
                .declare(&declaration_name(&self.name, name), bytes);
        }
        let blocks = options.overflow_policy() == crate::options::Overflow::Block;
        let cursors = (0..)
            .zip(self.partitions.iter())
            .map(|(partition, part)| {
                let mut log = part.lock();
                let at = self.start_offset(&mut log, options.start_position());
                // Stored at once: a group that joined at `Latest` and had not moved yet must
                // not restart elsewhere after a reopen.
                self.context.store.progress(Progress::GroupPosition {
                    topic: &self.name,
                    group: name,
                    partition,
                    offset: at,
                });
                (at, log.add_group_cursor(at, blocks))
            })
            .collect();
        let group = Arc::new(Group::new(name, options, cursors));
        groups.insert(name.to_owned(), Arc::clone(&group));
        Ok(group)
    }

    /// The names of the topic's groups, sorted (those restored from the store included).
    /// The groups of this topic that dead-letter into `queue`, as `topic/group`.
    pub(crate) fn dead_letter_users(&self, queue: &str) -> Vec<String> {
        let groups = self.groups.lock();
        let users = groups
            .iter()
            .filter(|(_, g)| g.options().dead_letter_queue() == Some(queue));
        users
            .map(|(name, _)| declaration_name(&self.name, name))
            .collect()
    }

    pub(crate) fn group_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.groups.lock().keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// Deletes group `name`: its positions and stored options go, its members get
    /// `RecvError::Deleted`, and producers it held under `Block` go on.
    ///
    /// # Errors
    /// [`Error::NoSuchGroup`]; [`Error::Deleted`] (the topic); [`Error::Closed`].
    pub(crate) fn delete_group(&self, name: &str) -> Result<(), Error> {
        self.check_live()?;
        // Under the map's lock: a group of the same name created right after stores its
        // positions after these are forgotten.
        let mut groups = self.groups.lock();
        let group = groups
            .remove(name)
            .ok_or_else(|| self.no_such_group(name))?;
        group.delete(self);
        self.context
            .store
            .undeclare(&declaration_name(&self.name, name));
        Ok(())
    }

    /// Moves group `name` to `start` in every partition (stored), forgetting its deliveries.
    ///
    /// # Errors
    /// [`Error::NoSuchGroup`]; [`Error::GroupBusy`] while a member is connected;
    /// [`Error::Deleted`] (the topic); [`Error::Closed`].
    pub(crate) fn reset_group(&self, name: &str, start: Start) -> Result<(), Error> {
        self.check_live()?;
        let group = self.groups.lock().get(name).cloned();
        let group = group.ok_or_else(|| self.no_such_group(name))?;
        group.reset(self, start)
    }

    /// Messages group `name` moved to its dead-letter queue (this run), if it exists.
    pub(crate) fn group_dead_lettered(&self, name: &str) -> Option<u64> {
        let group = self.groups.lock().get(name).cloned()?;
        Some(group.dead_lettered())
    }

    fn no_such_group(&self, name: &str) -> Error {
        Error::NoSuchGroup {
            topic: self.name.clone(),
            group: name.to_owned(),
        }
    }

    /// The retained message at `offset` of `partition`, changing nothing: `Ok(None)` if it
    /// was trimmed or is not written yet.
    ///
    /// # Errors
    /// [`Error::NoSuchPartition`]; [`Error::Decode`] for a stored record that is damaged or
    /// not a `T`; a store error if it cannot be read back now.
    pub(crate) fn peek(&self, partition: u32, offset: u64) -> Result<Option<StoredRef<T>>, Error> {
        self.check_live()?;
        let Some(part) = self.partitions.get(partition as usize) else {
            return Err(Error::NoSuchPartition {
                topic: self.name.clone(),
                partition,
                partitions: self.options.partition_count(),
            });
        };
        let mut log = part.lock();
        self.trim_for_read(&mut log);
        if offset < log.base() || offset >= log.end() {
            return Ok(None);
        }
        if offset < log.hot() {
            return match log.cold(offset) {
                Cold::Got(stored) => Ok(Some(stored)),
                Cold::Undecodable(undecodable) => Err(Error::Decode(undecodable)),
                Cold::Failed(error) => Err(error),
            };
        }
        Ok(log.stored(offset))
    }
}

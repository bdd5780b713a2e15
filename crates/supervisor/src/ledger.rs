//! The sans-IO cursor ledger: per source, what the consumer has taken (its durable cursor,
//! delivery time and recent ids), and what to write to the state file.
//!
//! A driver registers every source with [`Ledger::restore`] (which decides whether the state
//! file's entry may be reused and gives the machine what to [`restore`](SourceMachine::restore)),
//! then turns each [`Action::Deliver`] / [`Action::Checkpoint`] into a [`Commit`]:
//!
//! * a delivered event's commit travels with the event: [`Ledger::forwarded`] when it is handed
//!   to the consumer, [`Ledger::commit`] once the consumer has taken it;
//! * a checkpoint is committed at once when nothing the source forwarded is still untaken
//!   ([`Ledger::checkpoint`] says which), else it travels like an event.
//!
//! So a saved cursor never passes an event the consumer has not taken. [`Ledger::take_snapshot`]
//! gives what to write ([`StateFile::set`] each entry, then [`StateFile::save`]). The ledger
//! reads no clock and does no IO: times come in with the commits.
//!
//! ```
//! use chat_model::{Cursor, Service};
//! use supervisor::ledger::{Checkpointed, Commit, Ledger};
//!
//! let mut ledger = Ledger::new(4096);
//! let ops = ledger.restore("ops", Service::Campfire, "campfire room 1", None);
//! let at = chrono::Utc::now();
//! // An event is forwarded; a checkpoint after it must wait for the consumer.
//! ledger.forwarded(ops.index);
//! let event = Commit::delivered(Some(Cursor::from_typed(&1)), "m1", at);
//! let Checkpointed::Forward(checkpoint) =
//!     ledger.checkpoint(ops.index, Commit::checkpoint(Cursor::from_typed(&2), at, false))
//! else {
//!     unreachable!()
//! };
//! assert_eq!(ledger.cursor(ops.index), None);
//! ledger.commit(ops.index, event); // the consumer took the event...
//! ledger.commit(ops.index, checkpoint); // ...and reached the checkpoint
//! assert_eq!(ledger.cursor(ops.index), Some(&Cursor::from_typed(&2)));
//! let snapshot = ledger.take_snapshot(false).unwrap();
//! assert_eq!(snapshot[0].1.recent_ids, ["m1"]);
//! ```

use std::collections::VecDeque;

use chat_model::{Cursor, Service, Timestamp};

use crate::machine::Restored;
#[cfg(doc)]
use crate::machine::{Action, SourceMachine};
use crate::state::SavedSource;
#[cfg(doc)]
use crate::state::StateFile;

/// How many delivered ids per source are kept in the state file.
pub const PERSISTED_IDS: usize = 1024;

/// What becomes durable once the consumer has taken an event (or reached a checkpoint).
#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    cursor: Option<Cursor>,
    id: Option<String>,
    at: Timestamp,
    /// A checkpoint that is the first item of its connection (a "start from now" baseline).
    baseline: bool,
    /// A checkpoint rather than a delivered event.
    checkpoint: bool,
}

impl Commit {
    /// The commit of an event with `id` (an empty id is not remembered) received at `at`,
    /// after which the source resumes from `cursor` (when given).
    pub fn delivered(cursor: Option<Cursor>, id: &str, at: Timestamp) -> Commit {
        Commit {
            cursor,
            id: Some(id.to_owned()).filter(|id| !id.is_empty()),
            at,
            baseline: false,
            checkpoint: false,
        }
    }

    /// The commit of a checkpoint received at `at`; `baseline` when it is the first item of
    /// its connection.
    pub fn checkpoint(cursor: Cursor, at: Timestamp, baseline: bool) -> Commit {
        Commit {
            cursor: Some(cursor),
            id: None,
            at,
            baseline,
            checkpoint: true,
        }
    }

    /// The resume position it makes durable.
    pub fn cursor(&self) -> Option<&Cursor> {
        self.cursor.as_ref()
    }
}

/// What [`Ledger::checkpoint`] did with a checkpoint.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub enum Checkpointed {
    /// Nothing forwarded before it was untaken: it is committed. `urgent` when it is the
    /// source's first durable position, to be saved before anything after it is forwarded.
    Committed {
        /// Whether to save at once.
        urgent: bool,
    },
    /// Something forwarded before it is not taken yet: forward it behind that, and hand it to
    /// [`Ledger::commit`] when the consumer reaches it (it is counted as forwarded).
    Forward(Commit),
}

/// Where a source resumes from, as [`Ledger::restore`] decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Restore {
    /// The source's index in the ledger (the order sources were restored in).
    pub index: usize,
    /// What its machine restores (empty when nothing saved could be reused).
    pub restored: Restored,
    /// Why the saved entry was not reused, when it was not (another service or identity).
    pub warning: Option<String>,
}

/// The durable view of one source: what the consumer has taken.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    service: Service,
    identity: String,
    cursor: Option<Cursor>,
    last_delivery_at: Option<Timestamp>,
    recent_ids: VecDeque<String>,
    /// Commits forwarded to the consumer and not yet committed.
    in_flight: usize,
}

/// Every source's durable position, from the commits the consumer has reached.
#[derive(Clone, Debug)]
pub struct Ledger {
    sources: Vec<Entry>,
    id_cap: usize,
    dirty: bool,
}

impl Ledger {
    /// An empty ledger keeping up to `dedup_window` (at most [`PERSISTED_IDS`]) recent ids
    /// per source.
    pub fn new(dedup_window: usize) -> Ledger {
        Ledger {
            sources: Vec::new(),
            id_cap: dedup_window.min(PERSISTED_IDS),
            dirty: false,
        }
    }

    /// Registers the next source, `name` of `service` reading `identity`, with what the state
    /// file saved for it: reused unless it belongs to another service or identity (then the
    /// source starts fresh and the warning says why).
    pub fn restore(
        &mut self,
        name: impl Into<String>,
        service: Service,
        identity: impl Into<String>,
        saved: Option<&SavedSource>,
    ) -> Restore {
        let (name, identity) = (name.into(), identity.into());
        let problem = saved.and_then(|s| reuse_problem(s, &service, &identity));
        let saved = saved.filter(|_| problem.is_none());
        let restored = saved
            .map(|s| Restored {
                cursor: s.cursor.clone(),
                last_delivery_at: s.last_delivery_at,
                recent_ids: s.recent_ids.clone(),
            })
            .unwrap_or_default();
        let skip = restored.recent_ids.len().saturating_sub(self.id_cap);
        let entry = Entry {
            cursor: restored.cursor.clone(),
            last_delivery_at: restored.last_delivery_at,
            recent_ids: restored.recent_ids.iter().skip(skip).cloned().collect(),
            name,
            service,
            identity,
            in_flight: 0,
        };
        let warning = problem.map(|p| format!("source {:?}: {p}", entry.name));
        self.sources.push(entry);
        Restore {
            index: self.sources.len() - 1,
            restored,
            warning,
        }
    }

    /// How many sources are registered.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether no source is registered.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// A commit of `source` was handed to the consumer: later checkpoints wait for it.
    pub fn forwarded(&mut self, source: usize) {
        if let Some(e) = self.sources.get_mut(source) {
            e.in_flight += 1;
        }
    }

    /// The consumer has reached a forwarded commit of `source`: it is durable. Returns whether
    /// to save at once (the source's first durable position).
    pub fn commit(&mut self, source: usize, commit: Commit) -> bool {
        if let Some(e) = self.sources.get_mut(source) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
        self.apply(source, commit)
    }

    /// A checkpoint of `source`: committed now when every commit it forwarded is taken, else
    /// to be forwarded.
    pub fn checkpoint(&mut self, source: usize, commit: Commit) -> Checkpointed {
        if self.settled(source) {
            Checkpointed::Committed {
                urgent: self.apply(source, commit),
            }
        } else {
            self.forwarded(source);
            Checkpointed::Forward(commit)
        }
    }

    /// Whether every commit `source` forwarded has been committed.
    pub fn settled(&self, source: usize) -> bool {
        self.sources.get(source).is_none_or(|e| e.in_flight == 0)
    }

    /// The durable cursor of `source`.
    pub fn cursor(&self, source: usize) -> Option<&Cursor> {
        self.sources.get(source)?.cursor.as_ref()
    }

    /// Whether something was committed since the last snapshot taken.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// What to write to the state file, by source name: every source that has something.
    pub fn snapshot(&self) -> Vec<(String, SavedSource)> {
        self.sources
            .iter()
            .filter(|e| {
                e.cursor.is_some() || e.last_delivery_at.is_some() || !e.recent_ids.is_empty()
            })
            .map(|e| {
                let saved = SavedSource {
                    service: e.service.as_str().to_owned(),
                    identity: e.identity.clone(),
                    cursor: e.cursor.clone(),
                    last_delivery_at: e.last_delivery_at,
                    recent_ids: e.recent_ids.iter().cloned().collect(),
                };
                (e.name.clone(), saved)
            })
            .collect()
    }

    /// The [`snapshot`](Self::snapshot) when something changed since the last one (or when
    /// `force`), marking the ledger clean; [`mark_dirty`](Self::mark_dirty) if writing fails.
    pub fn take_snapshot(&mut self, force: bool) -> Option<Vec<(String, SavedSource)>> {
        if !(self.dirty || force) {
            return None;
        }
        self.dirty = false;
        Some(self.snapshot())
    }

    /// The last snapshot was not written: the next [`take_snapshot`](Self::take_snapshot)
    /// gives one again.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Records a commit; returns whether it is the source's first durable position (a
    /// checkpoint when no cursor is committed yet, or a baseline that changes it).
    fn apply(&mut self, source: usize, commit: Commit) -> bool {
        let Some(e) = self.sources.get_mut(source) else {
            return false;
        };
        let mut urgent = false;
        if let Some(cursor) = commit.cursor {
            urgent = commit.checkpoint
                && match &e.cursor {
                    None => true,
                    Some(old) => commit.baseline && *old != cursor,
                };
            e.cursor = Some(cursor);
        }
        if let Some(id) = commit.id {
            if self.id_cap > 0 {
                if e.recent_ids.len() == self.id_cap {
                    e.recent_ids.pop_front();
                }
                e.recent_ids.push_back(id);
            }
        }
        e.last_delivery_at = Some(commit.at);
        self.dirty = true;
        urgent
    }
}

/// Why a saved state cannot be reused by a source of `service` reading `identity`, if it
/// cannot: another service, or another identity (a saved state without one, from before
/// identities were kept, is reused and gets the identity at the next save).
fn reuse_problem(saved: &SavedSource, service: &Service, identity: &str) -> Option<String> {
    if saved.service != service.as_str() {
        return Some(format!(
            "the state file holds a cursor for service {:?}, not {:?}; starting without it",
            saved.service,
            service.as_str()
        ));
    }
    if !saved.identity.is_empty() && !identity.is_empty() && saved.identity != identity {
        // Identities hold no secrets; redacting is a second line of defence.
        return Some(format!(
            "the state file holds a cursor for {:?}, but the source now reads {:?}; starting \
             fresh without the saved cursor and ids",
            chat_model::redact_url(&saved.identity),
            chat_model::redact_url(identity)
        ));
    }
    None
}

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
    /// Changed since the last snapshot taken (or reused from the state file and not yet
    /// written back with its identity).
    changed: bool,
}

impl Entry {
    /// Whether there is anything to save.
    fn has_something(&self) -> bool {
        self.cursor.is_some() || self.last_delivery_at.is_some() || !self.recent_ids.is_empty()
    }

    fn saved(&self) -> (String, SavedSource) {
        let saved = SavedSource {
            service: self.service.as_str().to_owned(),
            identity: self.identity.clone(),
            cursor: self.cursor.clone(),
            last_delivery_at: self.last_delivery_at,
            recent_ids: self.recent_ids.iter().cloned().collect(),
        };
        (self.name.clone(), saved)
    }
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
            changed: saved.is_some(),
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
            .filter(|e| e.has_something())
            .map(Entry::saved)
            .collect()
    }

    /// What changed since the last snapshot taken, when something did (with `force`: the
    /// whole [`snapshot`](Self::snapshot)), marking the ledger clean. The entries left out
    /// are those the state file already holds from earlier snapshots (so a save costs what
    /// changed, not every source): [`StateFile::set`] each entry into the same
    /// [`StateFile`], and call [`mark_dirty`](Self::mark_dirty) if writing fails.
    pub fn take_snapshot(&mut self, force: bool) -> Option<Vec<(String, SavedSource)>> {
        if !(self.dirty || force) {
            return None;
        }
        self.dirty = false;
        let snapshot = self
            .sources
            .iter_mut()
            .filter(|e| e.has_something() && (force || e.changed))
            .map(|e| {
                e.changed = false;
                e.saved()
            })
            .collect();
        // Unchanged entries with nothing to save are not written either.
        self.sources.iter_mut().for_each(|e| e.changed = false);
        Some(snapshot)
    }

    /// The last snapshot was not written: the next [`take_snapshot`](Self::take_snapshot)
    /// gives the whole snapshot again.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
        self.sources.iter_mut().for_each(|e| e.changed = true);
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
        e.changed = true;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateFile;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(secs: i64) -> Timestamp {
        chrono::Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn pos(n: u64) -> Cursor {
        Cursor::from_typed(&n)
    }

    fn saved(service: &str, identity: &str, cursor: u64) -> SavedSource {
        SavedSource {
            service: service.into(),
            identity: identity.into(),
            cursor: Some(pos(cursor)),
            last_delivery_at: Some(at(0)),
            recent_ids: (0..5).map(|i| format!("m{i}")).collect(),
        }
    }

    #[test]
    fn a_checkpoint_waits_for_what_was_forwarded_before_it() {
        let mut l = Ledger::new(16);
        let s = l.restore("ops", Service::Campfire, "", None).index;
        assert!(l.settled(s));
        l.forwarded(s);
        let event = Commit::delivered(Some(pos(1)), "m1", at(1));
        let Checkpointed::Forward(cp) = l.checkpoint(s, Commit::checkpoint(pos(2), at(2), false))
        else {
            panic!("committed while an event was untaken")
        };
        assert_eq!((l.cursor(s), l.is_dirty()), (None, false));
        assert!(!l.commit(s, event), "an event's commit is never urgent");
        assert_eq!(l.cursor(s), Some(&pos(1)));
        assert!(!l.settled(s));
        assert!(
            !l.commit(s, cp),
            "the event already made a position durable"
        );
        assert!(l.settled(s));
        assert_eq!(l.cursor(s), Some(&pos(2)));
        let snap = l.take_snapshot(false).unwrap();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].0, "ops");
        assert_eq!(snap[0].1.recent_ids, ["m1"]);
        assert_eq!(snap[0].1.last_delivery_at, Some(at(2)));
        assert_eq!(l.take_snapshot(false), None, "clean until the next commit");
        l.mark_dirty();
        assert_eq!(l.take_snapshot(false), Some(snap.clone()));
        assert_eq!(l.take_snapshot(true), Some(snap));
    }

    #[test]
    fn a_snapshot_taken_holds_what_changed_since_the_last_one() {
        let mut l = Ledger::new(16);
        let old = saved("campfire", "", 7);
        let a = l
            .restore("a", Service::Campfire, "room a", Some(&old))
            .index;
        let b = l.restore("b", Service::Campfire, "room b", None).index;
        let c = l.restore("c", Service::Campfire, "room c", None).index;
        for s in [b, c] {
            l.forwarded(s);
            let _ = l.commit(s, Commit::delivered(Some(pos(1)), "m1", at(1)));
        }
        let names = |snap: Option<Vec<(String, SavedSource)>>| -> Vec<String> {
            snap.unwrap().into_iter().map(|(n, _)| n).collect()
        };
        // The reused entry is written back once, with its identity now.
        let first = l.take_snapshot(false).unwrap();
        assert_eq!(first[0].1.identity, "room a");
        assert_eq!(first.len(), 3);
        l.forwarded(c);
        let _ = l.commit(c, Commit::delivered(Some(pos(2)), "m2", at(2)));
        assert_eq!(names(l.take_snapshot(false)), ["c"]);
        assert_eq!(l.take_snapshot(false), None);
        assert_eq!(names(l.take_snapshot(true)), ["a", "b", "c"]);
        l.mark_dirty();
        assert_eq!(names(l.take_snapshot(false)), ["a", "b", "c"]);
        assert_eq!(l.cursor(a), Some(&pos(7)));
    }

    #[test]
    fn only_first_positions_and_changed_baselines_are_urgent() {
        let mut l = Ledger::new(16);
        let s = l.restore("ops", Service::Campfire, "", None).index;
        let mut cp =
            |n, baseline| match l.checkpoint(s, Commit::checkpoint(pos(n), at(0), baseline)) {
                Checkpointed::Committed { urgent } => urgent,
                other => panic!("{other:?}"),
            };
        assert!(cp(1, false), "no cursor yet");
        assert!(!cp(2, false), "a later checkpoint waits for the saver");
        assert!(cp(3, true), "a baseline that moves the position");
        assert!(!cp(3, true), "a baseline at the saved position");
    }

    #[test]
    fn restore_reuses_only_the_same_service_and_identity() {
        let mut l = Ledger::new(3);
        let same = saved("campfire", "room 1", 7);
        let r = l.restore("a", Service::Campfire, "room 1", Some(&same));
        assert_eq!(r.index, 0);
        assert_eq!(r.warning, None);
        assert_eq!(r.restored.cursor, Some(pos(7)));
        assert_eq!(
            r.restored.recent_ids.len(),
            5,
            "the machine gets every saved id"
        );
        let r = l.restore("b", Service::Campfire, "room 2", Some(&same));
        assert_eq!(r.restored, Restored::default());
        assert!(r.warning.unwrap().contains("\"room 2\""));
        let r = l.restore("c", Service::Flowdock, "room 1", Some(&same));
        assert!(r.warning.unwrap().contains("service"));
        let old = saved("campfire", "", 8);
        let r = l.restore("d", Service::Campfire, "room 4", Some(&old));
        assert_eq!((r.restored.cursor, r.warning), (Some(pos(8)), None));
        // Only reused entries are written, with at most the window's ids and the identity now.
        let snap = l.snapshot();
        let names: Vec<_> = snap.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "d"]);
        assert_eq!(snap[0].1.recent_ids, ["m2", "m3", "m4"]);
        assert_eq!(snap[1].1.identity, "room 4");
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn the_persisted_ids_are_bounded() {
        let mut l = Ledger::new(usize::MAX);
        let s = l.restore("ops", Service::Campfire, "", None).index;
        for i in 0..PERSISTED_IDS + 5 {
            l.forwarded(s);
            let _ = l.commit(s, Commit::delivered(None, &format!("m{i}"), at(0)));
        }
        let _ = l.commit(s, Commit::delivered(None, "", at(1)));
        let snap = l.snapshot();
        assert_eq!(snap[0].1.recent_ids.len(), PERSISTED_IDS);
        assert_eq!(snap[0].1.recent_ids[0], "m5");
        assert_eq!(snap[0].1.last_delivery_at, Some(at(1)));
        assert_eq!(snap[0].1.cursor, None);
        assert!(Ledger::new(0).is_empty());
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// The source `0` yields an event (or a checkpoint) at its next position.
        Produce { source: usize, checkpoint: bool },
        /// The consumer calls `recv` (taking the previous event).
        Recv,
        /// The consumer acks the last event.
        Ack,
        /// The saver writes a snapshot.
        Save,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..2usize, any::<bool>())
                .prop_map(|(source, checkpoint)| Op::Produce { source, checkpoint }),
            3 => Just(Op::Recv),
            1 => Just(Op::Ack),
            1 => Just(Op::Save),
        ]
    }

    /// The driver and the consumer, without tokio: one FIFO channel of commits.
    struct World {
        ledger: Ledger,
        next: [u64; 2],
        channel: std::collections::VecDeque<(usize, Option<u64>, Commit)>,
        pending: Option<(usize, u64, Commit)>,
        taken: Vec<String>,
        file: StateFile,
    }

    impl World {
        fn new() -> World {
            let mut ledger = Ledger::new(8);
            ledger.restore("a", Service::Campfire, "room a", None);
            ledger.restore("b", Service::Flowdock, "flow b", None);
            World {
                ledger,
                next: [1, 1],
                channel: Default::default(),
                pending: None,
                taken: Vec::new(),
                file: StateFile::empty("unused.json"),
            }
        }

        fn ack(&mut self) {
            if let Some((s, n, c)) = self.pending.take() {
                let _ = self.ledger.commit(s, c);
                self.taken.push(format!("{s}:{n}"));
            }
        }

        fn step(&mut self, op: &Op) {
            match *op {
                Op::Produce { source, checkpoint } => {
                    let n = self.next[source];
                    self.next[source] += 1;
                    if checkpoint {
                        let c = Commit::checkpoint(pos(n), at(n as i64), false);
                        if let Checkpointed::Forward(c) = self.ledger.checkpoint(source, c) {
                            self.channel.push_back((source, None, c));
                        }
                    } else {
                        let c = Commit::delivered(Some(pos(n)), &format!("{source}:{n}"), at(0));
                        self.ledger.forwarded(source);
                        self.channel.push_back((source, Some(n), c));
                    }
                }
                Op::Recv => {
                    self.ack();
                    while let Some((s, event, c)) = self.channel.pop_front() {
                        match event {
                            Some(n) => {
                                self.pending = Some((s, n, c));
                                break;
                            }
                            None => {
                                let _ = self.ledger.commit(s, c);
                            }
                        }
                    }
                }
                Op::Ack => self.ack(),
                Op::Save => {
                    for (name, saved) in self.ledger.take_snapshot(false).into_iter().flatten() {
                        self.file.set(name, saved);
                    }
                }
            }
        }

        /// The first event of `source` not yet taken by the consumer.
        fn first_untaken(&self, source: usize) -> Option<u64> {
            let pending = self.pending.iter().map(|(s, n, _)| (*s, Some(*n)));
            let queued = self.channel.iter().map(|(s, n, _)| (*s, *n));
            pending
                .chain(queued)
                .filter(|(s, _)| *s == source)
                .find_map(|(_, n)| n)
        }
    }

    proptest! {
        #[test]
        fn a_saved_cursor_never_passes_an_untaken_event(ops in proptest::collection::vec(op(), 0..120)) {
            let mut w = World::new();
            for op in &ops {
                w.step(op);
                for (source, name) in [(0, "a"), (1, "b")] {
                    let untaken = w.first_untaken(source);
                    let committed = w.ledger.cursor(source).map(|c| c.to_typed::<u64>().unwrap());
                    let saved = w.file.get(name).and_then(|s| s.cursor.as_ref())
                        .map(|c| c.to_typed::<u64>().unwrap());
                    for cursor in [committed, saved].into_iter().flatten() {
                        prop_assert!(cursor < w.next[source]);
                        if let Some(u) = untaken {
                            prop_assert!(cursor < u, "cursor {cursor} passed untaken event {u}");
                        }
                    }
                    // Every id remembered was taken.
                    for (_, s) in w.ledger.snapshot().iter().filter(|(n, _)| n == name) {
                        for id in &s.recent_ids {
                            prop_assert!(w.taken.contains(id), "{id} was not taken");
                        }
                    }
                }
            }
            // Once everything is taken, every position is durable.
            while !w.channel.is_empty() || w.pending.is_some() {
                w.step(&Op::Recv);
            }
            w.step(&Op::Save);
            for (source, name) in [(0, "a"), (1, "b")] {
                let last = w.next[source] - 1;
                let cursor = w.file.get(name).and_then(|s| s.cursor.clone());
                prop_assert_eq!(cursor, (last > 0).then(|| pos(last)));
            }

            // A restart restores the same cursors and writes the same state back.
            let before = w.ledger.snapshot();
            let mut again = Ledger::new(8);
            for (name, service, identity) in
                [("a", Service::Campfire, "room a"), ("b", Service::Flowdock, "flow b")]
            {
                let r = again.restore(name, service, identity, w.file.get(name));
                prop_assert_eq!(r.warning, None);
                prop_assert_eq!(
                    r.restored.cursor,
                    w.file.get(name).and_then(|s| s.cursor.clone())
                );
                prop_assert_eq!(
                    r.restored.recent_ids,
                    w.file.get(name).map(|s| s.recent_ids.clone()).unwrap_or_default()
                );
            }
            prop_assert_eq!(again.snapshot(), before);
        }
    }
}

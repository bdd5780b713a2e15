//! What the supervisor reports: every source's live counters ([`StatsReader`]) and how each
//! source ended ([`Report`]).

use std::sync::{Arc, Mutex};

use chat_model::{Service, lock_ignoring_poison as lock};

use crate::machine::{Outcome, SourceState, SourceStats};

/// How one source ended, in the [`Report`] of a shutdown.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceReport {
    /// The source's name.
    pub name: String,
    /// Its service.
    pub service: Service,
    /// How it ended.
    pub outcome: Outcome,
    /// Its final counters.
    pub stats: SourceStats,
}

/// What `SupervisorHandle::shutdown` reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Every source, in the order added.
    pub sources: Vec<SourceReport>,
    /// The error of the final state-file save, when it failed.
    pub state_error: Option<String>,
}

impl Report {
    /// Whether every source failed or gave up (and there was at least one).
    pub fn all_failed(&self) -> bool {
        all_failed(&self.sources, |s| {
            matches!(
                s.outcome,
                Outcome::Fatal(_) | Outcome::GaveUp { .. } | Outcome::Panicked(_)
            )
        })
    }
}

/// A cloneable, read-only view of every source's counters (for a metrics page).
#[derive(Clone, Debug)]
pub struct StatsReader {
    stats: Arc<[Mutex<SourceStats>]>,
}

impl StatsReader {
    /// A view of these sources' counters, in the order added.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn new(stats: impl IntoIterator<Item = SourceStats>) -> Self {
        StatsReader {
            stats: stats.into_iter().map(Mutex::new).collect(),
        }
    }

    /// Counters and status of every source, in the order added.
    pub fn stats(&self) -> Vec<SourceStats> {
        self.stats.iter().map(|s| lock(s).clone()).collect()
    }

    /// Whether every source has failed or given up (false with no sources).
    pub fn all_failed(&self) -> bool {
        all_failed(&self.stats, |s| lock(s).state.has_failed())
    }

    /// The counters of the source `index`.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn get(&self, index: usize) -> SourceStats {
        lock(&self.stats[index]).clone()
    }

    /// Replaces the counters of the source `index`. The driver calls this after every item,
    /// keep-alives included: unchanged counters (the common case) are only compared, not
    /// copied (a copy would allocate the name and the last error again).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn set(&self, index: usize, stats: &SourceStats) {
        let mut slot = lock(&self.stats[index]);
        if *slot != *stats {
            slot.clone_from(stats);
        }
    }

    /// Records that the task of the source `index` crashed with `message`; returns its name.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn record_crash(&self, index: usize, message: &str) -> String {
        let mut stats = lock(&self.stats[index]);
        stats.state = SourceState::Failed;
        stats.last_error = Some(format!("the source crashed: {message}"));
        stats.name.clone()
    }
}

/// Whether there is at least one item and every one has `failed`.
fn all_failed<T>(items: &[T], failed: impl Fn(&T) -> bool) -> bool {
    !items.is_empty() && items.iter().all(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::DisconnectReason;

    fn stats(name: &str, state: SourceState) -> SourceStats {
        let m = crate::SourceMachine::new(
            name,
            Service::Campfire,
            crate::Policy::default(),
            crate::MachineConfig::default(),
        );
        SourceStats {
            state,
            ..m.stats().clone()
        }
    }

    #[test]
    fn all_failed_needs_every_source_failed_and_at_least_one() {
        assert!(!StatsReader::new([]).all_failed());
        let r = StatsReader::new([
            stats("a", SourceState::GaveUp),
            stats("b", SourceState::Failed),
        ]);
        assert!(r.all_failed());
        let r = StatsReader::new([
            stats("a", SourceState::GaveUp),
            stats("b", SourceState::Connected),
        ]);
        assert!(!r.all_failed());
        assert_eq!(r.record_crash(1, "boom"), "b");
        assert!(r.all_failed());
        assert_eq!(
            r.get(1).last_error.as_deref(),
            Some("the source crashed: boom")
        );

        let report = |outcomes: Vec<Outcome>| Report {
            sources: outcomes
                .into_iter()
                .map(|outcome| SourceReport {
                    name: "a".into(),
                    service: Service::Campfire,
                    outcome,
                    stats: stats("a", SourceState::Stopped),
                })
                .collect(),
            state_error: None,
        };
        assert!(!report(vec![]).all_failed());
        assert!(
            report(vec![
                Outcome::Panicked("x".into()),
                Outcome::Fatal(DisconnectReason::Unauthorized("no".into()))
            ])
            .all_failed()
        );
        assert!(!report(vec![Outcome::Running, Outcome::Panicked("x".into())]).all_failed());
    }
}

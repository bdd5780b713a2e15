//! The thin tokio driver: one task per source running its [`SourceMachine`], a bounded merged
//! channel to the consumer, and a task that saves delivered cursors to the state file.
//!
//! Cursors are saved about every [`Options::save_interval`], except a source's first durable
//! position: a checkpoint ([`SourceItem::Cursor`](chat_model::SourceItem::Cursor)) when none
//! is saved yet for the source, or the first checkpoint of a connection (its "start from
//! now" baseline) when it differs from the saved one. That one is written at once, before
//! anything after it is forwarded, so a process killed before its first periodic save still
//! resumes from where the source started.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_model::{Cursor, Event, Service, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant as TokioInstant;

use crate::machine::{
    Action, DEFAULT_DEDUP_WINDOW, Jitter, MachineConfig, Outcome, Restored, SourceMachine,
    SourceState, SourceStats,
};
use crate::source::{Connection, Overrides, Source};
use crate::state::{SavedSource, StateFile};

/// How many delivered ids per source are kept in the state file.
const PERSISTED_IDS: usize = 1024;

/// Errors setting up a [`Supervisor`] or writing its state file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The state file exists but cannot be read (permissions, a directory in its place).
    #[error("cannot read state file {}: {source}", path.display())]
    StateRead {
        /// The state file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The state file is corrupt and could not be renamed out of the way.
    #[error("state file {} is corrupt ({problem}) and could not be set aside: {source}", path.display())]
    StateSetAside {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// Why the rename failed.
        source: std::io::Error,
    },
    /// The state file could not be written.
    #[error("cannot write state file {}: {source}", path.display())]
    StateWrite {
        /// The state file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Two sources have the same name.
    #[error("two sources are named {name:?}; every source needs a unique name")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A source's policy (after overrides) cannot work.
    #[error("source {name:?}: {problem}")]
    InvalidPolicy {
        /// The source.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

/// Settings of a [`Supervisor`].
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Where cursors are saved; `None` keeps them in memory only.
    pub state_file: Option<PathBuf>,
    /// How often delivered cursors are saved (the most the file lags behind delivery).
    pub save_interval: Duration,
    /// Capacity of the merged channel from the sources to the consumer.
    pub channel_capacity: usize,
    /// How many recent event ids each source remembers for deduplication.
    pub dedup_window: usize,
    /// Seed for the sources' jitter; `None` draws one from the OS (tests pass a fixed seed).
    pub seed: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            state_file: None,
            save_interval: Duration::from_secs(1),
            channel_capacity: 1024,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            seed: None,
        }
    }
}

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

/// What [`SupervisorHandle::shutdown`] reports.
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
        !self.sources.is_empty()
            && self.sources.iter().all(|s| {
                matches!(
                    s.outcome,
                    Outcome::Fatal(_) | Outcome::GaveUp { .. } | Outcome::Panicked(_)
                )
            })
    }
}

/// What becomes durable once the consumer has taken an event (or reached a checkpoint).
#[derive(Debug)]
struct Commit {
    cursor: Option<Cursor>,
    id: Option<String>,
    seen_at: Timestamp,
    /// A checkpoint that is the first item of its connection (a "start from now" baseline).
    baseline: bool,
    /// A checkpoint rather than a delivered event.
    checkpoint: bool,
}

// The big variant is the common one; boxing it would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Payload {
    Event {
        event: Event,
        commit: Option<Commit>,
    },
    Checkpoint(Commit),
}

#[derive(Debug)]
struct Envelope {
    source: usize,
    payload: Payload,
}

/// The durable view of one source: what the consumer has taken.
#[derive(Debug)]
struct Committed {
    name: String,
    service: Service,
    identity: String,
    cursor: Option<Cursor>,
    last_delivery_at: Option<Timestamp>,
    recent_ids: VecDeque<String>,
    id_cap: usize,
}

#[derive(Debug)]
struct Durable {
    file: Option<StateFile>,
    sources: Vec<Committed>,
    dirty: bool,
}

#[derive(Debug)]
struct Shared {
    stats: Vec<Mutex<SourceStats>>,
    durable: Mutex<Durable>,
    /// Per source: commits forwarded to the consumer and not yet applied.
    in_flight: Vec<AtomicUsize>,
    /// Wakes the saver for a save that should not wait for the interval.
    save_soon: Notify,
}

// A panic while holding one of these locks leaves plain data behind; keep going.
use chat_model::lock_ignoring_poison as lock;

impl Shared {
    /// Applies a commit the consumer has reached (it was counted in `in_flight`).
    fn commit_forwarded(&self, source: usize, commit: Commit) {
        let urgent = {
            let mut d = lock(&self.durable);
            if let Some(n) = self.in_flight.get(source) {
                n.fetch_sub(1, Ordering::AcqRel);
            }
            Self::apply(&mut d, source, commit)
        };
        if urgent {
            self.save_soon.notify_one();
        }
    }

    /// Applies a commit at once (nothing forwarded before it awaits delivery); returns
    /// whether it must be saved at once.
    fn commit_now(&self, source: usize, commit: Commit) -> bool {
        Self::apply(&mut lock(&self.durable), source, commit)
    }

    /// Whether every commit this source forwarded has been applied.
    fn settled(&self, source: usize) -> bool {
        self.in_flight
            .get(source)
            .is_none_or(|n| n.load(Ordering::Acquire) == 0)
    }

    /// Records a commit; returns whether it is the source's first durable position (a
    /// checkpoint when no cursor is committed yet, or a baseline that changes it), which is
    /// saved at once rather than at the next interval.
    fn apply(d: &mut Durable, source: usize, commit: Commit) -> bool {
        let Some(c) = d.sources.get_mut(source) else {
            return false;
        };
        let mut urgent = false;
        if let Some(cursor) = commit.cursor {
            urgent = commit.checkpoint
                && match &c.cursor {
                    None => true,
                    Some(old) => commit.baseline && *old != cursor,
                };
            c.cursor = Some(cursor);
        }
        if let Some(id) = commit.id {
            if c.id_cap > 0 {
                if c.recent_ids.len() == c.id_cap {
                    c.recent_ids.pop_front();
                }
                c.recent_ids.push_back(id);
            }
        }
        c.last_delivery_at = Some(commit.seen_at);
        d.dirty = true;
        urgent
    }

    /// Writes the committed state when it changed (or when `force`). Holds the lock while
    /// writing, so saves never overtake each other.
    fn save(&self, force: bool) -> Result<(), SupervisorError> {
        let mut d = lock(&self.durable);
        if !(d.dirty || force) {
            return Ok(());
        }
        let Durable {
            file,
            sources,
            dirty,
        } = &mut *d;
        let Some(file) = file.as_mut() else {
            *dirty = false;
            return Ok(());
        };
        for c in sources.iter() {
            if c.cursor.is_none() && c.last_delivery_at.is_none() && c.recent_ids.is_empty() {
                continue;
            }
            file.set(
                c.name.clone(),
                SavedSource {
                    service: c.service.as_str().to_owned(),
                    identity: c.identity.clone(),
                    cursor: c.cursor.clone(),
                    last_delivery_at: c.last_delivery_at,
                    recent_ids: c.recent_ids.iter().cloned().collect(),
                },
            );
        }
        file.save()?;
        *dirty = false;
        Ok(())
    }
}

type Spawner = Box<dyn FnOnce(SourceCtx) -> JoinHandle<Outcome> + Send>;

struct Pending {
    name: String,
    service: Service,
    identity: String,
    /// The saved state this source may reuse (same service, same identity or none saved).
    saved: Option<SavedSource>,
    machine: SourceMachine,
    spawn: Spawner,
}

struct SourceCtx {
    index: usize,
    machine: SourceMachine,
    tx: mpsc::Sender<Envelope>,
    shutdown: watch::Receiver<bool>,
    shared: Arc<Shared>,
}

/// Keeps any number of [`Source`]s alive and merges their events into one [`EventStream`].
///
/// ```no_run
/// # async fn demo(source: impl supervisor::Source) -> Result<(), supervisor::SupervisorError> {
/// use supervisor::{Options, Overrides, Supervisor};
///
/// let mut sup = Supervisor::new(Options {
///     state_file: Some("tributary-state.json".into()),
///     ..Options::default()
/// })?;
/// for w in sup.warnings() {
///     eprintln!("warning: {w}");
/// }
/// sup.add(source, Overrides::default())?;
/// let (mut events, handle) = sup.start();
/// while let Some(event) = events.recv().await {
///     println!("{}", event.to_json_line()); // write (and flush) before the next recv
/// }
/// let report = handle.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Supervisor {
    options: Options,
    state: Option<StateFile>,
    warnings: Vec<String>,
    sources: Vec<Pending>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("options", &self.options)
            .field(
                "sources",
                &self.sources.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor with no sources yet; reads the state file when one is configured (see
    /// [`StateFile::load`] for what happens to a missing or corrupt file).
    pub fn new(options: Options) -> Result<Self, SupervisorError> {
        let (state, warnings) = match &options.state_file {
            Some(path) => {
                let (state, warnings) = StateFile::load(path.clone())?;
                (Some(state), warnings)
            }
            None => (None, Vec::new()),
        };
        Ok(Supervisor {
            options,
            state,
            warnings,
            sources: Vec::new(),
        })
    }

    /// Problems found while loading (a corrupt state file set aside, a saved cursor that
    /// belongs to another service or to a source that read something else).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Adds a source, supervised by its own [`Source::policy`] with `overrides` applied.
    pub fn add<S: Source>(
        &mut self,
        source: S,
        overrides: Overrides,
    ) -> Result<(), SupervisorError> {
        let name = source.name().to_owned();
        if self.sources.iter().any(|p| p.name == name) {
            return Err(SupervisorError::DuplicateName { name });
        }
        let service = source.service();
        let identity = source.identity();
        let policy = source.policy().with_overrides(&overrides);
        policy
            .validate()
            .map_err(|problem| SupervisorError::InvalidPolicy {
                name: name.clone(),
                problem,
            })?;
        let seed = match self.options.seed {
            Some(seed) => seed ^ (self.sources.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            None => StdRng::from_os_rng().random(),
        };
        let mut machine = SourceMachine::new(
            name.clone(),
            service.clone(),
            policy,
            MachineConfig {
                dedup_window: self.options.dedup_window,
                jitter: Jitter::Full,
                seed,
            },
        );
        let mut reusable = None;
        if let Some(saved) = self.state.as_ref().and_then(|s| s.get(&name)) {
            match reuse_problem(saved, &service, &identity) {
                None => {
                    machine.restore(Restored {
                        cursor: saved.cursor.clone(),
                        last_delivery_at: saved.last_delivery_at,
                        recent_ids: saved.recent_ids.clone(),
                    });
                    reusable = Some(saved.clone());
                }
                Some(problem) => {
                    let w = format!("source {name:?}: {problem}");
                    tracing::warn!(source = %name, "{w}");
                    self.warnings.push(w);
                }
            }
        }
        self.sources.push(Pending {
            name,
            service,
            identity,
            saved: reusable,
            machine,
            spawn: Box::new(move |ctx| {
                let (index, shared) = (ctx.index, ctx.shared.clone());
                let task = tokio::spawn(run_source(source, ctx));
                // A panicking source fails alone: record it and report it as an outcome.
                tokio::spawn(async move {
                    match task.await {
                        Ok(outcome) => outcome,
                        Err(e) => {
                            let message = panic_message(e);
                            let mut stats = lock(&shared.stats[index]);
                            tracing::error!(source = %stats.name, "the source crashed: {message}");
                            stats.state = SourceState::Failed;
                            stats.last_error = Some(format!("the source crashed: {message}"));
                            Outcome::Panicked(message)
                        }
                    }
                })
            }),
        });
        Ok(())
    }

    /// Starts every source, each in its own task, and the cursor saver. Must be called within
    /// a tokio runtime.
    pub fn start(self) -> (EventStream, SupervisorHandle) {
        let (tx, rx) = mpsc::channel(self.options.channel_capacity.max(1));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let id_cap = self.options.dedup_window.min(PERSISTED_IDS);
        let committed = self
            .sources
            .iter()
            .map(|p| {
                let saved = p.saved.as_ref();
                let mut recent_ids: VecDeque<String> = saved
                    .map(|s| s.recent_ids.iter().cloned().collect())
                    .unwrap_or_default();
                while recent_ids.len() > id_cap {
                    recent_ids.pop_front();
                }
                Committed {
                    name: p.name.clone(),
                    service: p.service.clone(),
                    identity: p.identity.clone(),
                    cursor: saved.and_then(|s| s.cursor.clone()),
                    last_delivery_at: saved.and_then(|s| s.last_delivery_at),
                    recent_ids,
                    id_cap,
                }
            })
            .collect();
        let shared = Arc::new(Shared {
            stats: self
                .sources
                .iter()
                .map(|p| Mutex::new(p.machine.stats().clone()))
                .collect(),
            durable: Mutex::new(Durable {
                file: self.state,
                sources: committed,
                dirty: false,
            }),
            in_flight: self.sources.iter().map(|_| AtomicUsize::new(0)).collect(),
            save_soon: Notify::new(),
        });
        let mut tasks = Vec::with_capacity(self.sources.len());
        for (index, p) in self.sources.into_iter().enumerate() {
            let ctx = SourceCtx {
                index,
                machine: p.machine,
                tx: tx.clone(),
                shutdown: shutdown_rx.clone(),
                shared: shared.clone(),
            };
            tasks.push((p.name, p.service, (p.spawn)(ctx)));
        }
        drop(tx);
        let (alive, stream_gone) = oneshot::channel();
        let saver = tokio::spawn(run_saver(
            shared.clone(),
            self.options.save_interval,
            shutdown_rx,
            stream_gone,
        ));
        (
            EventStream {
                rx,
                pending: None,
                shared: shared.clone(),
                _alive: alive,
            },
            SupervisorHandle {
                shared,
                shutdown: shutdown_tx,
                tasks,
                saver,
            },
        )
    }
}

/// The merged, deduplicated stream of every source's events, lifecycle and gap events
/// included (filter [`Kind::Connection`](chat_model::Kind::Connection) out if unwanted).
///
/// # Delivery contract
///
/// A cursor becomes durable (is written to the state file within `save_interval`) only once
/// the consumer has *taken* its event: either by calling [`recv`](Self::recv) again — which
/// marks the previously returned event as delivered — or by calling [`ack`](Self::ack).
/// So write and flush each event before asking for the next one. A source's first position
/// (a checkpoint when none is saved yet, or the baseline a connection starts from) is saved
/// at once instead, as soon as everything the source forwarded before it was taken. Then:
///
/// * after a clean shutdown (the last written event acked), a restart repeats nothing and
///   loses nothing (for sources that replay from a cursor);
/// * after a crash, nothing is lost, and the only repeats are events delivered within the
///   last `save_interval` (at-least-once; their ids are stable, so a consumer can drop them);
/// * within one run, the recent-id window drops events a source sends twice.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Envelope>,
    pending: Option<(usize, Commit)>,
    shared: Arc<Shared>,
    /// Dropped with the stream: tells the saver nobody can ack any more.
    _alive: oneshot::Sender<()>,
}

impl EventStream {
    /// The next event; marks the previously returned one as delivered. `None` once every
    /// source has ended (fatal or gave up), or after a shutdown once what was queued is
    /// drained (cursors of events acked after the shutdown are not saved).
    ///
    /// Cancel-safe: it can be a branch of `tokio::select!`; an event is never lost when the
    /// future is dropped before it resolves.
    pub async fn recv(&mut self) -> Option<Event> {
        self.ack();
        loop {
            let envelope = self.rx.recv().await?;
            match envelope.payload {
                Payload::Event { event, commit } => {
                    self.pending = commit.map(|c| (envelope.source, c));
                    return Some(event);
                }
                // Everything forwarded before it has been returned and acked.
                Payload::Checkpoint(commit) => {
                    self.shared.commit_forwarded(envelope.source, commit)
                }
            }
        }
    }

    /// Marks the last event returned by [`recv`](Self::recv) as delivered, so its cursor is
    /// saved. Idempotent.
    pub fn ack(&mut self) {
        if let Some((source, commit)) = self.pending.take() {
            self.shared.commit_forwarded(source, commit);
        }
    }
}

/// Controls running sources: statistics and shutdown.
#[derive(Debug)]
pub struct SupervisorHandle {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<(String, Service, JoinHandle<Outcome>)>,
    saver: JoinHandle<()>,
}

/// A cloneable, read-only view of every source's counters (for a metrics page).
#[derive(Clone, Debug)]
pub struct StatsReader {
    shared: Arc<Shared>,
}

impl StatsReader {
    /// Counters and status of every source, in the order added.
    pub fn stats(&self) -> Vec<SourceStats> {
        self.shared.stats.iter().map(|s| lock(s).clone()).collect()
    }
}

impl SupervisorHandle {
    /// Counters and status of every source, in the order added.
    pub fn stats(&self) -> Vec<SourceStats> {
        self.shared.stats.iter().map(|s| lock(s).clone()).collect()
    }

    /// A read-only view of the counters that outlives this handle's borrow.
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Whether every source has failed or given up (false with no sources).
    pub fn all_failed(&self) -> bool {
        !self.shared.stats.is_empty()
            && self.shared.stats.iter().all(|s| lock(s).state.has_failed())
    }

    /// Stops every source (cancelling connections and waits), saves the cursors of the events
    /// the consumer has taken, and reports how each source ended.
    pub async fn shutdown(self) -> Report {
        let _ = self.shutdown.send(true);
        let mut sources = Vec::with_capacity(self.tasks.len());
        for (index, (name, service, task)) in self.tasks.into_iter().enumerate() {
            let outcome = match task.await {
                Ok(outcome) => outcome,
                Err(e) => Outcome::Panicked(panic_message(e)),
            };
            let stats = lock(&self.shared.stats[index]).clone();
            sources.push(SourceReport {
                name,
                service,
                outcome,
                stats,
            });
        }
        let _ = self.saver.await;
        let shared = self.shared.clone();
        let saved = tokio::task::spawn_blocking(move || shared.save(true)).await;
        let state_error = match saved {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("saving the state file crashed: {e}")),
        };
        if let Some(e) = &state_error {
            tracing::error!("{e}");
        }
        Report {
            sources,
            state_error,
        }
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

/// Saves the state file now (a source's first durable position); a failure is logged and
/// left to the periodic saver to retry.
async fn save_now(shared: &Arc<Shared>, name: &str) {
    let s = shared.clone();
    match tokio::task::spawn_blocking(move || s.save(false)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(source = %name, "{e}; will retry"),
        Err(e) => tracing::warn!(source = %name, "saving the state file crashed: {e}"),
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if e.is_panic() {
        let p = e.into_panic();
        if let Some(s) = p.downcast_ref::<&str>() {
            return (*s).to_owned();
        }
        if let Some(s) = p.downcast_ref::<String>() {
            return s.clone();
        }
        return "the source's task panicked".to_owned();
    }
    e.to_string()
}

/// Resolves once a shutdown was asked for. A dropped [`SupervisorHandle`] is not a shutdown:
/// sources go on until the [`EventStream`] is dropped too.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn run_saver(
    shared: Arc<Shared>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut stream_gone: oneshot::Receiver<()>,
) {
    let interval = interval.max(Duration::from_millis(10));
    loop {
        let last = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            // A first durable position reached through the consumer.
            _ = shared.save_soon.notified() => false,
            // The handle saves once more after stopping the sources.
            _ = stopped(&mut shutdown) => return,
            // Nobody can ack any more: save what was taken and stop.
            _ = &mut stream_gone => true,
        };
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || s.save(false)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("{e}; will retry"),
            Err(e) => tracing::warn!("saving the state file crashed: {e}"),
        }
        if last {
            return;
        }
    }
}

fn now() -> (std::time::Instant, Timestamp) {
    (TokioInstant::now().into_std(), chrono::Utc::now())
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(TokioInstant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Why a source's loop stopped early.
enum Stop {
    Shutdown,
    Finished(Outcome),
}

async fn run_source<S: Source>(mut source: S, ctx: SourceCtx) -> Outcome {
    let SourceCtx {
        index,
        mut machine,
        tx,
        mut shutdown,
        shared,
    } = ctx;
    let name = machine.name().to_owned();
    let mut conn: Option<S::Connection> = None;
    // Whether nothing has come from the current connection yet (its first checkpoint is a
    // baseline).
    let mut fresh_connection = false;
    let (t, w) = now();
    machine.start(t, w);
    let outcome = loop {
        // Carry out what the machine asked for.
        let mut connect = None;
        let mut stop = None;
        let mut sent = false;
        while let Some(action) = machine.poll_action() {
            sent |= matches!(
                action,
                Action::Deliver { .. } | Action::Checkpoint(_) | Action::Emit(_)
            );
            match action {
                Action::Connect { resume } => {
                    fresh_connection = true;
                    connect = Some(resume);
                }
                Action::Close { reason } => {
                    tracing::warn!(source = %name, "{reason}; replacing the connection");
                    conn = None;
                }
                Action::WaitUntil(_) => {}
                Action::Deliver { event, cursor } => {
                    fresh_connection = false;
                    let commit = Commit {
                        cursor,
                        id: Some(event.id.clone()).filter(|id| !id.is_empty()),
                        seen_at: chrono::Utc::now(),
                        baseline: false,
                        checkpoint: false,
                    };
                    let payload = Payload::Event {
                        event,
                        commit: Some(commit),
                    };
                    shared.in_flight[index].fetch_add(1, Ordering::AcqRel);
                    if let Err(s) = send(&tx, &mut shutdown, index, payload).await {
                        stop = Some(s);
                        break;
                    }
                }
                Action::Checkpoint(cursor) => {
                    let commit = Commit {
                        cursor: Some(cursor),
                        id: None,
                        seen_at: chrono::Utc::now(),
                        baseline: std::mem::take(&mut fresh_connection),
                        checkpoint: true,
                    };
                    if shared.settled(index) {
                        // Everything forwarded before it is delivered: it is durable now,
                        // whether or not the consumer reads on; a first position is saved
                        // before anything after it is forwarded.
                        if shared.commit_now(index, commit) {
                            save_now(&shared, &name).await;
                        }
                    } else {
                        shared.in_flight[index].fetch_add(1, Ordering::AcqRel);
                        if let Err(s) =
                            send(&tx, &mut shutdown, index, Payload::Checkpoint(commit)).await
                        {
                            stop = Some(s);
                            break;
                        }
                    }
                }
                Action::Drop { id } => {
                    tracing::debug!(source = %name, id = %id, "duplicate event dropped");
                }
                Action::OnlyDuplicates { dropped } => {
                    tracing::warn!(
                        source = %name,
                        "the server re-sent only events already delivered since the connection \
                         came up ({dropped} in a row, nothing new): its history may have been \
                         reset, and new messages with reissued ids are being dropped; if so, \
                         remove this source's entry from the state file"
                    );
                }
                Action::ServerDelayCapped { from, asked, cap } => {
                    tracing::warn!(
                        source = %name,
                        "the server asked (with {from}) to wait {:.1}s before reconnecting; \
                         waiting at most {:.1}s (max_server_delay)",
                        asked.as_secs_f64(),
                        cap.as_secs_f64()
                    );
                }
                Action::Emit(event) => {
                    log_emitted(&name, &event);
                    let payload = Payload::Event {
                        event,
                        commit: None,
                    };
                    if let Err(s) = send(&tx, &mut shutdown, index, payload).await {
                        stop = Some(s);
                        break;
                    }
                }
                Action::GiveUp(outcome) => {
                    stop = Some(Stop::Finished(outcome));
                    break;
                }
            }
        }
        if sent {
            // Sends wait for the consumer; that silence is not the server's.
            machine.on_reading_resumed(TokioInstant::now().into_std());
        }
        *lock(&shared.stats[index]) = machine.stats().clone();
        match stop {
            Some(Stop::Finished(outcome)) => break outcome,
            Some(Stop::Shutdown) => {
                machine.on_shutdown();
                break Outcome::Running;
            }
            None => {}
        }

        let deadline = machine.poll_timeout();
        if let Some(resume) = connect {
            conn = None;
            tokio::select! {
                biased;
                _ = stopped(&mut shutdown) => {
                    machine.on_shutdown();
                    break Outcome::Running;
                }
                result = source.connect(resume) => {
                    let (t, w) = now();
                    match result {
                        Ok(c) => {
                            conn = Some(c);
                            machine.on_connected(t, w);
                        }
                        Err(reason) => machine.on_disconnect(t, w, reason),
                    }
                }
                _ = sleep_until(deadline) => {
                    let (t, w) = now();
                    machine.handle_timeout(t, w);
                }
            }
        } else if let Some(c) = conn.as_mut() {
            tokio::select! {
                biased;
                _ = stopped(&mut shutdown) => {
                    machine.on_shutdown();
                    break Outcome::Running;
                }
                result = c.next_item() => {
                    let (t, w) = now();
                    match result {
                        Ok(item) => {
                            if let chat_model::SourceItem::Malformed { error } = &item {
                                tracing::warn!(source = %name, "malformed frame skipped: {error}");
                            }
                            machine.on_item(t, w, item);
                        }
                        Err(reason) => {
                            conn = None;
                            machine.on_disconnect(t, w, reason);
                        }
                    }
                }
                _ = sleep_until(deadline) => {
                    let (t, w) = now();
                    machine.handle_timeout(t, w);
                }
            }
        } else {
            if deadline.is_none() {
                // Nothing to wait for and nothing to do: the machine has stopped.
                break Outcome::Running;
            }
            tokio::select! {
                biased;
                _ = stopped(&mut shutdown) => {
                    machine.on_shutdown();
                    break Outcome::Running;
                }
                _ = sleep_until(deadline) => {
                    let (t, w) = now();
                    machine.handle_timeout(t, w);
                }
            }
        }
    };
    drop(conn);
    *lock(&shared.stats[index]) = machine.stats().clone();
    outcome
}

async fn send(
    tx: &mpsc::Sender<Envelope>,
    shutdown: &mut watch::Receiver<bool>,
    source: usize,
    payload: Payload,
) -> Result<(), Stop> {
    if *shutdown.borrow() {
        return Err(Stop::Shutdown);
    }
    tokio::select! {
        sent = tx.send(Envelope { source, payload }) => sent.map_err(|_| Stop::Shutdown),
        _ = stopped(shutdown) => Err(Stop::Shutdown),
    }
}

fn log_emitted(name: &str, event: &Event) {
    match event.kind {
        chat_model::Kind::Gap => tracing::warn!(source = %name, "{}", event.text),
        _ => match event.connection.as_ref().map(|c| c.state) {
            Some(chat_model::ConnectionState::GaveUp) => {
                tracing::error!(source = %name, "{}", event.text)
            }
            Some(chat_model::ConnectionState::Disconnected) => {
                tracing::warn!(source = %name, "{}", event.text)
            }
            _ => tracing::info!(source = %name, "{}", event.text),
        },
    }
}

//! The thin tokio driver: one task per source running its [`SourceMachine`], a bounded merged
//! channel to the consumer, and a task that saves the [`Ledger`]'s snapshots to the state file.
//!
//! Cursors are saved about every [`Options::save_interval`], except a source's first durable
//! position (see [`Ledger::checkpoint`]): that one is written at once, before anything after
//! it is forwarded, so a process killed before its first periodic save still resumes from
//! where the source started.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_model::{Event, Service, lock_ignoring_poison as lock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::SupervisorError;
use crate::ledger::{Commit, Ledger};
use crate::machine::{DEFAULT_DEDUP_WINDOW, Jitter, MachineConfig, Outcome, SourceMachine};
use crate::report::{Report, SourceReport, StatsReader};
use crate::source::{Overrides, Source};
use crate::state::StateFile;

mod task;
use task::{run_saver, run_source};

/// Settings of a [`Supervisor`].
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Where cursors are saved; `None` keeps them in memory only.
    pub state_file: Option<PathBuf>,
    /// How often delivered cursors are saved (the most the file lags behind delivery).
    pub save_interval: Duration,
    /// Capacity of the merged channel from the sources to the consumer, in events (it
    /// carries batches of up to 256; each source may hold one more batch while it waits).
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

/// An event for the consumer, with what becomes durable once it is taken; or a checkpoint.
#[derive(Debug)]
struct Envelope {
    source: usize,
    event: Option<Event>,
    commit: Option<Commit>,
}

#[derive(Debug)]
struct Shared {
    stats: StatsReader,
    ledger: Mutex<Ledger>,
    /// Held while writing, so saves never overtake each other.
    file: Mutex<Option<StateFile>>,
    /// Wakes the saver for a save that should not wait for the interval.
    save_soon: Notify,
    /// How many saves were asked for with [`Shared::save_now`].
    saves_asked: AtomicU64,
    /// The saver's count of asks its finished saves covered; closed once the saver stopped.
    saves_done: watch::Receiver<u64>,
    /// Room in the merged channel, in events: what keeps it bounded.
    room: Semaphore,
    /// [`Options::channel_capacity`] (at least 1).
    capacity: usize,
}

impl Shared {
    /// The room a batch of `len` events takes in the channel (a batch larger than the whole
    /// channel takes all of it).
    fn room_for(&self, len: usize) -> u32 {
        len.min(self.capacity) as u32
    }

    /// The consumer reached a forwarded commit.
    fn commit(&self, source: usize, commit: Commit) {
        if lock(&self.ledger).commit(source, commit) {
            self.save_soon.notify_one();
        }
    }

    /// Writes the ledger's snapshot when it changed (or when `force`).
    fn save(&self, force: bool) -> Result<(), SupervisorError> {
        let mut file = lock(&self.file);
        let Some(snapshot) = lock(&self.ledger).take_snapshot(force) else {
            return Ok(());
        };
        let Some(file) = file.as_mut() else {
            return Ok(());
        };
        for (name, saved) in snapshot {
            file.set(name, saved);
        }
        file.save().inspect_err(|_| lock(&self.ledger).mark_dirty())
    }

    /// Saves on a blocking thread; a failure is logged and left to the next save to retry.
    async fn save_logged(self: &Arc<Self>) {
        let s = self.clone();
        let problem = match tokio::task::spawn_blocking(move || s.save(false)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("{e}; will retry"),
            Err(e) => format!("saving the state file crashed: {e}"),
        };
        tracing::warn!("{problem}");
    }

    /// Returns once a save that began after this call has finished (or the saver stopped).
    /// Many sources asking at once share one save: the saver covers every ask made before
    /// it took its snapshot.
    async fn save_now(&self) {
        let ticket = self.saves_asked.fetch_add(1, Ordering::SeqCst) + 1;
        self.save_soon.notify_one();
        let mut done = self.saves_done.clone();
        // An error: the saver stopped; the handle's final save covers what is committed.
        let _ = done.wait_for(|covered| *covered >= ticket).await;
    }
}

type Spawner = Box<dyn FnOnce(SourceCtx) -> JoinHandle<Outcome> + Send>;

struct Pending {
    name: String,
    service: Service,
    machine: SourceMachine,
    spawn: Spawner,
}

struct SourceCtx {
    index: usize,
    machine: SourceMachine,
    tx: mpsc::UnboundedSender<Vec<Envelope>>,
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
    ledger: Ledger,
    warnings: Vec<String>,
    sources: Vec<Pending>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.sources.iter().map(|p| &p.name).collect();
        f.debug_struct("Supervisor")
            .field("options", &self.options)
            .field("sources", &names)
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
            ledger: Ledger::new(options.dedup_window),
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
        let config = MachineConfig {
            dedup_window: self.options.dedup_window,
            jitter: Jitter::Full,
            seed,
        };
        let mut machine = SourceMachine::new(name.clone(), service.clone(), policy, config);
        let saved = self.state.as_ref().and_then(|s| s.get(&name));
        let restore = self
            .ledger
            .restore(&name, service.clone(), source.identity(), saved);
        machine.restore(restore.restored);
        if let Some(w) = restore.warning {
            tracing::warn!(source = %name, "{w}");
            self.warnings.push(w);
        }
        let spawn: Spawner = Box::new(move |ctx| {
            let (index, stats) = (ctx.index, ctx.shared.stats.clone());
            let task = tokio::spawn(run_source(source, ctx));
            // A panicking source fails alone: record it and report it as an outcome.
            tokio::spawn(async move {
                task.await.unwrap_or_else(|e| {
                    let message = panic_message(e);
                    let name = stats.record_crash(index, &message);
                    tracing::error!(source = %name, "the source crashed: {message}");
                    Outcome::Panicked(message)
                })
            })
        });
        self.sources.push(Pending {
            name,
            service,
            machine,
            spawn,
        });
        Ok(())
    }

    /// Starts every source, each in its own task, and the cursor saver. Must be called within
    /// a tokio runtime.
    pub fn start(self) -> (EventStream, SupervisorHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (saves_covered, saves_done) = watch::channel(0);
        let capacity = self.options.channel_capacity.clamp(1, u32::MAX as usize);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            stats: StatsReader::new(self.sources.iter().map(|p| p.machine.stats().clone())),
            ledger: Mutex::new(self.ledger),
            file: Mutex::new(self.state),
            save_soon: Notify::new(),
            saves_asked: AtomicU64::new(0),
            saves_done,
            room: Semaphore::new(capacity),
            capacity,
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
        let interval = self.options.save_interval;
        let saver = tokio::spawn(run_saver(
            shared.clone(),
            saves_covered,
            interval,
            shutdown_rx,
            stream_gone,
        ));
        let stream = EventStream {
            rx,
            queued: Vec::new().into_iter(),
            taken: Vec::new(),
            shared: shared.clone(),
            _alive: alive,
        };
        let handle = SupervisorHandle {
            shared,
            shutdown: shutdown_tx,
            tasks,
            saver,
        };
        (stream, handle)
    }
}

/// The merged, deduplicated stream of every source's events, lifecycle and gap events
/// included (filter [`Kind::Connection`](chat_model::Kind::Connection) out if unwanted).
///
/// # Delivery contract
///
/// A cursor becomes durable (is written to the state file within `save_interval`) only once
/// the consumer has *taken* its event: either by calling [`recv`](Self::recv) again — which
/// marks every event returned before as delivered — or by calling [`ack`](Self::ack).
/// So write and flush each event before asking for the next one, or take a batch with
/// [`try_recv`](Self::try_recv) (which marks nothing), write and flush it, then `ack`. A
/// source's first position (a checkpoint when none is saved yet, or the baseline a connection
/// starts from) is saved at once instead, as soon as everything the source forwarded before
/// it was taken. Then:
///
/// * after a clean shutdown (the last written event acked), a restart repeats nothing and
///   loses nothing (for sources that replay from a cursor);
/// * after a crash, nothing is lost, and the only repeats are events delivered within the
///   last `save_interval` (at-least-once; their ids are stable, so a consumer can drop them);
/// * within one run, the recent-id window drops events a source sends twice.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Vec<Envelope>>,
    /// The rest of the batch received last.
    queued: std::vec::IntoIter<Envelope>,
    /// Commits of the events returned and not yet acked (and of checkpoints behind them), in
    /// order.
    taken: Vec<(usize, Commit)>,
    shared: Arc<Shared>,
    /// Dropped with the stream: tells the saver nobody can ack any more.
    _alive: oneshot::Sender<()>,
}

impl EventStream {
    /// The next event; marks every event returned before as delivered. `None` once every
    /// source has ended (fatal or gave up), or after a shutdown once what was queued is
    /// drained (cursors of events acked after the shutdown are not saved).
    ///
    /// Cancel-safe: it can be a branch of `tokio::select!`; an event is never lost when the
    /// future is dropped before it resolves.
    pub async fn recv(&mut self) -> Option<Event> {
        self.ack();
        loop {
            if let Some(event) = self.next_queued() {
                return Some(event);
            }
            // Checkpoints met on the way are durable now.
            self.ack();
            let batch = self.rx.recv().await?;
            self.take_batch(batch);
        }
    }

    /// The next event when one is already queued, without waiting; marks nothing as
    /// delivered (call [`ack`](Self::ack) once what it returned is written).
    pub fn try_recv(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.next_queued() {
                return Some(event);
            }
            let batch = self.rx.try_recv().ok()?;
            self.take_batch(batch);
        }
    }

    /// Makes `batch` the current one and gives its room in the channel back.
    fn take_batch(&mut self, batch: Vec<Envelope>) {
        self.shared
            .room
            .add_permits(self.shared.room_for(batch.len()) as usize);
        self.queued = batch.into_iter();
    }

    /// The next event of the current batch; checkpoints on the way join `taken`.
    fn next_queued(&mut self) -> Option<Event> {
        for Envelope {
            source,
            event,
            commit,
        } in self.queued.by_ref()
        {
            match (event, commit) {
                (Some(event), commit) => {
                    self.taken.extend(commit.map(|c| (source, c)));
                    return Some(event);
                }
                // A checkpoint with everything before it acked: durable now.
                (None, Some(c)) if self.taken.is_empty() => self.shared.commit(source, c),
                // Else durable once everything before it is acked.
                (None, Some(c)) => self.taken.push((source, c)),
                (None, None) => {}
            }
        }
        None
    }

    /// Marks every event returned by [`recv`](Self::recv) and [`try_recv`](Self::try_recv)
    /// so far as delivered, so their cursors are saved. Idempotent.
    pub fn ack(&mut self) {
        if self.taken.is_empty() {
            return;
        }
        let urgent = {
            let mut ledger = lock(&self.shared.ledger);
            self.taken.drain(..).fold(false, |urgent, (source, c)| {
                ledger.commit(source, c) | urgent
            })
        };
        if urgent {
            self.shared.save_soon.notify_one();
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

impl SupervisorHandle {
    /// Counters and status of every source, in the order added.
    pub fn stats(&self) -> Vec<crate::SourceStats> {
        self.shared.stats.stats()
    }

    /// A read-only view of the counters that outlives this handle's borrow.
    pub fn stats_reader(&self) -> StatsReader {
        self.shared.stats.clone()
    }

    /// Whether every source has failed or given up (false with no sources).
    pub fn all_failed(&self) -> bool {
        self.shared.stats.all_failed()
    }

    /// Stops every source (cancelling connections and waits), saves the cursors of the events
    /// the consumer has taken, and reports how each source ended.
    pub async fn shutdown(self) -> Report {
        let _ = self.shutdown.send(true);
        let mut sources = Vec::with_capacity(self.tasks.len());
        for (index, (name, service, task)) in self.tasks.into_iter().enumerate() {
            let outcome = task
                .await
                .unwrap_or_else(|e| Outcome::Panicked(panic_message(e)));
            let stats = self.shared.stats.get(index);
            sources.push(SourceReport {
                name,
                service,
                outcome,
                stats,
            });
        }
        let _ = self.saver.await;
        let shared = self.shared.clone();
        let state_error = match tokio::task::spawn_blocking(move || shared.save(true)).await {
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

fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let p = e.into_panic();
    match (p.downcast_ref::<&str>(), p.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "the source's task panicked".to_owned(),
    }
}

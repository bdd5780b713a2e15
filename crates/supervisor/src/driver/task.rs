//! The per-source IO loop: carries out the machine's actions, waits for the connection, the
//! machine's deadline or a shutdown, and feeds what happened back with the time it happened.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_model::{DisconnectReason, Event, SourceItem, Timestamp, lock_ignoring_poison as lock};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant as TokioInstant;

use super::{Envelope, Shared, SourceCtx};
use crate::ledger::{Checkpointed, Commit};
use crate::machine::{Action, Outcome};
use crate::source::{Connection, Source};

/// Resolves once a shutdown was asked for. A dropped [`SupervisorHandle`](super::SupervisorHandle)
/// is not a shutdown: sources go on until the [`EventStream`](super::EventStream) is dropped too.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub(super) async fn run_saver(
    shared: Arc<Shared>,
    covered: watch::Sender<u64>,
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
        // Every ask made before the snapshot is taken is covered by this save.
        let asked = shared.saves_asked.load(Ordering::SeqCst);
        shared.save_logged().await;
        covered.send_replace(asked);
        if last {
            return;
        }
    }
}

/// The clocks the machine is fed with: monotonic for its timers, wall for its events.
fn now() -> (std::time::Instant, Timestamp) {
    (TokioInstant::now().into_std(), chrono::Utc::now())
}

/// What ended a wait of [`race`].
enum Woke<T> {
    /// A shutdown was asked for.
    Stopped,
    /// The machine's deadline passed.
    Timeout,
    /// The work finished.
    Done(T),
}

/// What every wait of a source races against: a shutdown and the machine's deadline. Both
/// are registered once per source and the timer is moved only when the deadline changes (a
/// later one is a cheap update), so an idle source's keep-alive costs no timer or watch
/// registration.
struct Waits {
    shutdown: watch::Receiver<bool>,
    stop: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    stopped: bool,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Waits {
    fn new(shutdown: &watch::Receiver<bool>) -> Waits {
        let mut rx = shutdown.clone();
        Waits {
            shutdown: shutdown.clone(),
            stop: Box::pin(async move { stopped(&mut rx).await }),
            stopped: false,
            // Far away until the machine asks for a deadline.
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(365 * 86_400))),
        }
    }

    /// Whether a shutdown has been asked for.
    fn stopping(&self) -> bool {
        self.stopped || *self.shutdown.borrow()
    }

    /// Waits for `work`, the machine's `deadline` (none: no timeout) or a shutdown, whichever
    /// comes first (a shutdown wins ties).
    async fn race<T>(
        &mut self,
        deadline: Option<std::time::Instant>,
        work: impl Future<Output = T>,
    ) -> Woke<T> {
        if self.stopped {
            return Woke::Stopped;
        }
        if let Some(d) = deadline.map(TokioInstant::from_std) {
            if self.timer.deadline() != d {
                self.timer.as_mut().reset(d);
            }
        }
        let (stop, timer) = (self.stop.as_mut(), self.timer.as_mut());
        let woke = tokio::select! {
            biased;
            () = stop => Woke::Stopped,
            done = work => Woke::Done(done),
            () = timer, if deadline.is_some() => Woke::Timeout,
        };
        // The stop future is done once it fired: never poll it again.
        self.stopped |= matches!(woke, Woke::Stopped);
        woke
    }
}

/// What a source's connection (or connection attempt) produced.
// The big variant is the common one; boxing it would cost an allocation per item.
#[allow(clippy::large_enum_variant)]
enum Io<C> {
    Connected(Result<C, DisconnectReason>),
    Item(Result<SourceItem, DisconnectReason>),
}

/// The most events (and checkpoints) one source hands to the consumer in one batch.
pub(super) const MAX_BATCH: usize = 256;

/// Polls `work` once without waiting: its output when it is ready now. Dropping it unfinished
/// is safe for the futures polled here (a connection's `next_item` is cancel-safe).
fn ready_now<T>(work: impl Future<Output = T>) -> Option<T> {
    let mut work = std::pin::pin!(work);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match work.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

pub(super) async fn run_source<S: Source>(mut source: S, ctx: SourceCtx) -> Outcome {
    let SourceCtx {
        index,
        mut machine,
        tx,
        shutdown,
        shared,
    } = ctx;
    let mut waits = Waits::new(&shutdown);
    drop(shutdown);
    let name = machine.name().to_owned();
    let mut conn: Option<S::Connection> = None;
    // What goes to the consumer in one send: a whole chunk's events cost one channel hand-off.
    let mut batch: Vec<Envelope> = Vec::new();
    // Events added to `batch` not yet counted in the ledger (counted before any checkpoint
    // and before the batch is sent).
    let mut uncounted = 0usize;
    let (t, w) = now();
    machine.start(t, w);
    let outcome = 'run: loop {
        // Carry out what the machine asked for.
        let mut connect = None;
        while let Some(action) = machine.poll_action() {
            let (event, commit) = match action {
                Action::Connect { resume } => {
                    connect = Some(resume);
                    continue;
                }
                Action::Close { reason } => {
                    tracing::warn!(source = %name, "{reason}; replacing the connection");
                    conn = None;
                    continue;
                }
                Action::Deliver { event, cursor, at } => {
                    let commit = Commit::delivered(cursor, &event.id, at);
                    uncounted += 1;
                    (Some(event), Some(commit))
                }
                Action::Checkpoint {
                    cursor,
                    at,
                    baseline,
                } => {
                    let commit = Commit::checkpoint(cursor, at, baseline);
                    let checkpointed = {
                        let mut ledger = lock(&shared.ledger);
                        count_forwarded(&mut ledger, index, &mut uncounted);
                        ledger.checkpoint(index, commit)
                    };
                    match checkpointed {
                        // Durable now, whether or not the consumer reads on; a first position
                        // is saved before anything after it is forwarded.
                        Checkpointed::Committed { urgent } => {
                            if urgent {
                                shared.save_now().await;
                            }
                            continue;
                        }
                        Checkpointed::Forward(commit) => (None, Some(commit)),
                    }
                }
                Action::Emit(event) => {
                    log_emitted(&name, &event);
                    (Some(event), None)
                }
                Action::GiveUp(outcome) => {
                    // What was queued before giving up still reaches the consumer.
                    send(&mut batch, &mut uncounted, &tx, &shared, index, &mut waits).await;
                    break 'run outcome;
                }
                other => {
                    log_action(&name, &other);
                    continue;
                }
            };
            batch.push(Envelope {
                source: index,
                event,
                commit,
            });
        }

        // An item the connection already has (the rest of a chunk) is taken without waiting,
        // until the batch is full.
        if connect.is_none() && batch.len() < MAX_BATCH {
            if let Some(c) = conn.as_mut() {
                if let Some(item) = ready_now(c.next_item()) {
                    let (t, w) = now();
                    on_item(&mut machine, &mut conn, &name, t, w, item);
                    // Items that need no IO (a parsed response's queue) still let other
                    // tasks run now and then.
                    tokio::task::consume_budget().await;
                    continue;
                }
            }
        }

        // About to wait: hand over what was collected first.
        if !batch.is_empty() {
            if !send(&mut batch, &mut uncounted, &tx, &shared, index, &mut waits).await {
                machine.on_shutdown();
                break 'run Outcome::Running;
            }
            // Sends wait for the consumer; that silence is not the server's.
            machine.on_reading_resumed(now().0);
            if connect.is_none() {
                // More may have arrived while the send waited: look again before waiting.
                continue;
            }
        }
        shared.stats.set(index, machine.stats());

        let deadline = machine.poll_timeout();
        let woke = if let Some(resume) = connect {
            conn = None;
            // Boxed: the connect plan's state lives on the heap only while connecting,
            // not in every idle source's task.
            let connecting = Box::pin(async { Io::Connected(source.connect(resume).await) });
            waits.race(deadline, connecting).await
        } else if let Some(c) = conn.as_mut() {
            waits
                .race(deadline, async { Io::Item(c.next_item().await) })
                .await
        } else if deadline.is_some() {
            waits.race(deadline, std::future::pending()).await
        } else {
            // Nothing to wait for and nothing to do: the machine has stopped.
            break Outcome::Running;
        };
        let (t, w) = now();
        match woke {
            Woke::Stopped => {
                machine.on_shutdown();
                break Outcome::Running;
            }
            Woke::Timeout => machine.handle_timeout(t, w),
            Woke::Done(Io::Connected(Ok(c))) => {
                conn = Some(c);
                machine.on_connected(t, w);
            }
            Woke::Done(Io::Item(item)) => on_item(&mut machine, &mut conn, &name, t, w, item),
            Woke::Done(Io::Connected(Err(reason))) => {
                conn = None;
                machine.on_disconnect(t, w, reason);
            }
        }
    };
    drop(conn);
    shared.stats.set(index, machine.stats());
    outcome
}

/// Feeds one item (or the end of the connection) to the machine.
fn on_item<C>(
    machine: &mut crate::machine::SourceMachine,
    conn: &mut Option<C>,
    name: &str,
    t: std::time::Instant,
    w: Timestamp,
    item: Result<SourceItem, DisconnectReason>,
) {
    match item {
        Ok(item) => {
            if let SourceItem::Malformed { error } = &item {
                tracing::warn!(source = %name, "malformed frame skipped: {error}");
            }
            machine.on_item(t, w, item);
        }
        Err(reason) => {
            *conn = None;
            machine.on_disconnect(t, w, reason);
        }
    }
}

/// Counts the events added to the batch since the last count as forwarded.
fn count_forwarded(ledger: &mut crate::ledger::Ledger, index: usize, uncounted: &mut usize) {
    for _ in 0..std::mem::take(uncounted) {
        ledger.forwarded(index);
    }
}

/// Sends the batch to the consumer (waiting while the channel is full); false when a shutdown
/// came first or the consumer is gone.
async fn send(
    batch: &mut Vec<Envelope>,
    uncounted: &mut usize,
    tx: &mpsc::UnboundedSender<Vec<Envelope>>,
    shared: &Shared,
    index: usize,
    waits: &mut Waits,
) -> bool {
    if batch.is_empty() {
        return true;
    }
    if *uncounted > 0 {
        count_forwarded(&mut lock(&shared.ledger), index, uncounted);
    }
    if waits.stopping() {
        return false;
    }
    // Room in the channel for this many events (the consumer gives it back as it takes them).
    let room = shared.room_for(batch.len());
    let admitted = async {
        tokio::select! {
            permit = shared.room.acquire_many(room) => permit.ok(),
            () = tx.closed() => None,
        }
    };
    let Woke::Done(Some(permit)) = waits.race(None, admitted).await else {
        return false;
    };
    permit.forget();
    let full = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH.min(batch.len() * 2)));
    tx.send(full).is_ok()
}

/// Logs the actions that only inform.
fn log_action(name: &str, action: &Action) {
    match action {
        Action::Drop { id } => tracing::debug!(source = %name, id = %id, "duplicate event dropped"),
        Action::OnlyDuplicates { dropped } => tracing::warn!(
            source = %name,
            "the server re-sent only events already delivered since the connection came up \
             ({dropped} in a row, nothing new): its history may have been reset, and new \
             messages with reissued ids are being dropped; if so, remove this source's entry \
             from the state file"
        ),
        Action::ServerDelayCapped { from, asked, cap } => tracing::warn!(
            source = %name,
            "the server asked (with {from}) to wait {:.1}s before reconnecting; waiting at \
             most {:.1}s (max_server_delay)",
            asked.as_secs_f64(),
            cap.as_secs_f64()
        ),
        // WaitUntil: the deadline is polled; anything later versions add is informative.
        _ => {}
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

//! The per-source IO loop: carries out the machine's actions, waits for the connection, the
//! machine's deadline or a shutdown, and feeds what happened back with the time it happened.

use std::sync::Arc;
use std::time::Duration;

use chat_model::{DisconnectReason, Event, SourceItem, Timestamp, lock_ignoring_poison as lock};
use tokio::sync::{oneshot, watch};
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
        shared.save_logged(None).await;
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

/// Waits for `work`, the machine's `deadline` (none: no timeout) or a shutdown, whichever
/// comes first (a shutdown wins ties).
async fn race<T>(
    shutdown: &mut watch::Receiver<bool>,
    deadline: Option<std::time::Instant>,
    work: impl Future<Output = T>,
) -> Woke<T> {
    let timeout = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(TokioInstant::from_std(d)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = stopped(shutdown) => Woke::Stopped,
        done = work => Woke::Done(done),
        _ = timeout => Woke::Timeout,
    }
}

/// What a source's connection (or connection attempt) produced.
// The big variant is the common one; boxing it would cost an allocation per item.
#[allow(clippy::large_enum_variant)]
enum Io<C> {
    Connected(Result<C, DisconnectReason>),
    Item(Result<SourceItem, DisconnectReason>),
}

pub(super) async fn run_source<S: Source>(mut source: S, ctx: SourceCtx) -> Outcome {
    let SourceCtx {
        index,
        mut machine,
        tx,
        mut shutdown,
        shared,
    } = ctx;
    let name = machine.name().to_owned();
    let mut conn: Option<S::Connection> = None;
    let (t, w) = now();
    machine.start(t, w);
    let outcome = 'run: loop {
        // Carry out what the machine asked for.
        let mut connect = None;
        let mut sent = false;
        while let Some(action) = machine.poll_action() {
            sent |= matches!(
                action,
                Action::Deliver { .. } | Action::Checkpoint { .. } | Action::Emit(_)
            );
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
                    lock(&shared.ledger).forwarded(index);
                    (Some(event), Some(commit))
                }
                Action::Checkpoint {
                    cursor,
                    at,
                    baseline,
                } => {
                    let commit = Commit::checkpoint(cursor, at, baseline);
                    let checkpointed = lock(&shared.ledger).checkpoint(index, commit);
                    match checkpointed {
                        // Durable now, whether or not the consumer reads on; a first position
                        // is saved before anything after it is forwarded.
                        Checkpointed::Committed { urgent } => {
                            if urgent {
                                shared.save_logged(Some(&name)).await;
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
                Action::GiveUp(outcome) => break 'run outcome,
                other => {
                    log_action(&name, &other);
                    continue;
                }
            };
            let envelope = Envelope {
                source: index,
                event,
                commit,
            };
            let stopping = *shutdown.borrow();
            if stopping
                || !matches!(
                    race(&mut shutdown, None, tx.send(envelope)).await,
                    Woke::Done(Ok(()))
                )
            {
                machine.on_shutdown();
                break 'run Outcome::Running;
            }
        }
        if sent {
            // Sends wait for the consumer; that silence is not the server's.
            machine.on_reading_resumed(now().0);
        }
        shared.stats.set(index, machine.stats());

        let deadline = machine.poll_timeout();
        let woke = if let Some(resume) = connect {
            conn = None;
            let connecting = async { Io::Connected(source.connect(resume).await) };
            race(&mut shutdown, deadline, connecting).await
        } else if let Some(c) = conn.as_mut() {
            race(&mut shutdown, deadline, async {
                Io::Item(c.next_item().await)
            })
            .await
        } else if deadline.is_some() {
            race(&mut shutdown, deadline, std::future::pending()).await
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
            Woke::Done(Io::Item(Ok(item))) => {
                if let SourceItem::Malformed { error } = &item {
                    tracing::warn!(source = %name, "malformed frame skipped: {error}");
                }
                machine.on_item(t, w, item);
            }
            Woke::Done(Io::Connected(Err(reason)) | Io::Item(Err(reason))) => {
                conn = None;
                machine.on_disconnect(t, w, reason);
            }
        }
    };
    drop(conn);
    shared.stats.set(index, machine.stats());
    outcome
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

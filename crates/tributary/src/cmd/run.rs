//! `tributary run`: stream every configured source to stdout until stopped.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chat_model::{Event, Kind};
use supervisor::{Options, Supervisor};

use crate::cli::{self, ConfigArg, parse_duration};
use crate::config::{self, Config};
use crate::metrics::{self, RelayStats, StatsProvider};
use crate::output::{Format, Printer};
use crate::relay::{RelayStatsHandle, Relays};
use crate::signals::StopSignals;
use crate::{sinks, sources};

/// Arguments of `tributary run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Output format [default: json when stdout is not a terminal, pretty when it is].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Stop cleanly after this long (e.g. 10s, 5m).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Keep each event's original wire object in the `raw` field.
    #[arg(long)]
    pub raw: bool,
    /// Also print connection lifecycle events (`"kind":"connection"`).
    #[arg(long)]
    pub lifecycle: bool,
    /// The state file for resume cursors [default: `state_file` from the config, else
    /// $XDG_STATE_HOME/tributary/state.json].
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics and a health check on /healthz.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// With --metrics: /healthz answers 503 once a source has not been connected for longer
    /// than this.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "60s")]
    pub health_grace: Duration,
}

/// How a run prints and stops.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Output format.
    pub format: Format,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Keep wire objects.
    pub raw: bool,
    /// Print lifecycle events.
    pub lifecycle: bool,
    /// Where cursors are kept (None: nowhere, as in `demo`).
    pub state_file: Option<PathBuf>,
    /// Where to serve metrics.
    pub metrics: Option<SocketAddr>,
    /// How long `/healthz` tolerates a source being disconnected.
    pub health_grace: Duration,
    /// Ends the run (as [`Ending::Duration`]) when it turns true: a caller's own end, such as
    /// `demo`'s drain after its duration.
    pub end: Option<tokio::sync::watch::Receiver<bool>>,
    /// Gets a copy of every event printed, in order.
    pub tap: Option<tokio::sync::mpsc::UnboundedSender<Event>>,
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// `--duration` elapsed.
    Duration,
    /// SIGINT or SIGTERM.
    Signal,
    /// Every source failed or gave up.
    AllSourcesEnded,
    /// stdout was closed.
    OutputClosed,
}

/// What a finished run reports.
pub struct RunResult {
    /// Why it ended.
    pub ending: Ending,
    /// The supervisor's final per-source report.
    pub report: supervisor::Report,
    /// Per-relay counters.
    pub relays: Vec<RelayStats>,
}

struct Provider {
    sources: supervisor::StatsReader,
    relays: Option<RelayStatsHandle>,
}

impl StatsProvider for Provider {
    fn sources(&self) -> Vec<supervisor::SourceStats> {
        self.sources.stats()
    }
    fn relays(&self) -> Vec<RelayStats> {
        self.relays.as_ref().map(|r| r.stats()).unwrap_or_default()
    }
}

/// `tributary run`.
pub async fn run(args: RunArgs) -> ExitCode {
    // Listen from the very start, so a signal during startup is not lost either.
    let mut stop = StopSignals::new();
    let cfg = match config::load(args.config.path()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tributary: {e}");
            if args.config.is_missing_default() {
                eprintln!(
                    "tributary: write a {} here or pass --config FILE (see docs/user-guide.md)",
                    cli::DEFAULT_CONFIG
                );
            }
            return ExitCode::from(2);
        }
    };
    if cfg.sources.is_empty() {
        eprintln!(
            "tributary: {}: no [[source]] is configured; nothing to run",
            args.config.path().display()
        );
        return ExitCode::from(2);
    }
    let state_file = args.state.clone().unwrap_or_else(|| cfg.state_file.clone());
    let opts = RunOptions {
        format: args.format.unwrap_or_else(Format::default_for_stdout),
        duration: args.duration,
        raw: args.raw,
        lifecycle: args.lifecycle,
        state_file: Some(state_file),
        metrics: args.metrics,
        health_grace: args.health_grace,
        end: None,
        tap: None,
    };
    match run_config(&cfg, &opts, &mut stop).await {
        Ok(result) => exit_for(&result),
        Err(e) => {
            eprintln!("tributary: {e}");
            ExitCode::from(2)
        }
    }
}

/// The exit status for a finished run: 1 when every source failed or gave up.
pub fn exit_for(result: &RunResult) -> ExitCode {
    if result.ending == Ending::AllSourcesEnded {
        eprintln!("tributary: every source has failed or given up:");
        for s in &result.report.sources {
            eprintln!("  {} ({}): {}", s.name, s.service, s.outcome);
        }
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs a checked config until the duration, a signal (from `stop`, listening since the
/// command started), or every source ending.
pub async fn run_config(
    cfg: &Config,
    opts: &RunOptions,
    stop: &mut StopSignals,
) -> Result<RunResult, String> {
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    if let Some(path) = &opts.state_file {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create the state folder {}: {e}", dir.display()))?;
        }
    }
    let options = Options {
        state_file: opts.state_file.clone(),
        ..Options::default()
    };
    let mut sup = Supervisor::new(options).map_err(|e| e.to_string())?;
    for w in sup.warnings() {
        tracing::warn!("{w}");
        eprintln!("tributary: warning: {w}");
    }
    let mut tls = crate::tls::Tls::default();
    let mut source_configs = cfg.sources.clone();
    for s in &mut source_configs {
        s.common.keep_raw = opts.raw;
    }
    sources::add_all(&mut sup, &source_configs, &mut tls)?;
    let sinks = sinks::build_sinks(cfg, &mut tls)?;
    let (mut stream, handle) = sup.start();
    let relays = if cfg.relays.is_empty() {
        None
    } else {
        let state = opts
            .state_file
            .as_ref()
            .map(|p| p.with_extension("relays.json"));
        Some(Relays::start(&cfg.relays, sinks, state)?)
    };
    let metrics_task = match opts.metrics {
        Some(addr) => {
            let provider = Arc::new(Provider {
                sources: handle.stats_reader(),
                relays: relays.as_ref().map(|r| r.stats_handle()),
            });
            let (local, task) = metrics::serve(addr, provider, opts.health_grace)
                .await
                .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
            tracing::info!("metrics on http://{local}/metrics");
            Some(task)
        }
        None => None,
    };

    let out: Box<dyn Write + Send> = match opts.format {
        Format::Json => Box::new(std::io::stdout()),
        Format::Pretty => Box::new(anstream::stdout()),
    };
    let mut printer = Printer::new(Vec::with_capacity(OUTPUT_BUFFER), opts.format, opts.raw);
    let mut output = Output { out: Some(out) };

    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut end = opts.end.clone();
    let ending = loop {
        tokio::select! {
            _ = stop.recv() => break Ending::Signal,
            _ = sleep_until(deadline) => break Ending::Duration,
            _ = ended(&mut end) => break Ending::Duration,
            next = stream.recv() => match next {
                Some(event) => {
                    // Everything already queued is written in one go, then flushed once and
                    // acked: a cursor is saved only after its event reached stdout.
                    write_batch(event, &mut stream, &mut printer, opts, relays.as_ref());
                    if output.write(printer.buffer()).await.is_err() {
                        break Ending::OutputClosed;
                    }
                    stream.ack();
                }
                None => break Ending::AllSourcesEnded,
            },
        }
    };
    let _ = output.write(printer.buffer()).await;
    let report = handle.shutdown().await;
    if let Some(e) = &report.state_error {
        eprintln!("tributary: warning: could not save the state file: {e}");
    }
    let relay_stats = match relays {
        Some(r) => {
            let stats = r.stats_handle();
            r.shutdown(Duration::from_secs(5)).await;
            stats.stats()
        }
        None => Vec::new(),
    };
    if let Some(t) = metrics_task {
        t.abort();
    }
    Ok(RunResult {
        ending,
        report,
        relays: relay_stats,
    })
}

/// The output buffer's usual size: a batch stops growing once it holds this much.
const OUTPUT_BUFFER: usize = 256 * 1024;

/// The most events in one batch (so a stop signal is seen between batches).
const MAX_BATCH: usize = 4096;

/// Prints `first` and every event already queued behind it (up to [`MAX_BATCH`] or
/// [`OUTPUT_BUFFER`] bytes) into the printer's buffer, offering each to the relays and the tap.
fn write_batch(
    first: Event,
    stream: &mut supervisor::EventStream,
    printer: &mut Printer<Vec<u8>>,
    opts: &RunOptions,
    relays: Option<&Relays>,
) {
    let mut next = Some(first);
    let mut taken = 0;
    while let Some(mut event) = next.take() {
        if wanted(&event, opts.lifecycle) {
            // Writing into memory cannot fail.
            let _ = printer.print(&mut event);
            if let Some(r) = relays {
                r.offer(&event);
            }
            if let Some(t) = &opts.tap {
                let _ = t.send(event);
            }
        }
        taken += 1;
        if taken < MAX_BATCH && printer.buffer().len() < OUTPUT_BUFFER {
            next = stream.try_recv();
        }
    }
}

/// Stdout, written on a blocking thread: a reader that is slow or has stopped holds up only
/// the output (and so, through the bounded channel, the sources' reading), never the runtime
/// that keeps timers, metrics and signals going.
struct Output {
    /// `None` once a write failed or panicked.
    out: Option<Box<dyn Write + Send>>,
}

impl Output {
    /// Writes and flushes all of `buf`, then empties it (keeping its allocation).
    async fn write(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let closed = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stdout is closed");
        let mut out = self.out.take().ok_or_else(closed)?;
        let data = std::mem::take(buf);
        let (out, mut data, written) = tokio::task::spawn_blocking(move || {
            let written = out.write_all(&data).and_then(|()| out.flush());
            (out, data, written)
        })
        .await
        .map_err(|_| closed())?;
        written?;
        self.out = Some(out);
        data.clear();
        *buf = data;
        Ok(())
    }
}

fn wanted(event: &Event, lifecycle: bool) -> bool {
    lifecycle || event.kind != Kind::Connection
}

/// Returns when `end` turns true; never without one (or once its sender is gone).
async fn ended(end: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match end {
        Some(rx) => {
            if rx.wait_for(|e| *e).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

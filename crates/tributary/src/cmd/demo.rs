//! `tributary demo`: the whole product against local emulators of all five services.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chat_model::{Event, Kind};
use emulator::{Fault, FaultPlan};
use tokio::sync::{mpsc, watch};

use crate::cli::parse_duration;
use crate::cmd::emulate::{AnyEmulator, EmulatedService};
use crate::cmd::run::{self, Ending, RunOptions, RunResult};
use crate::config;
use crate::output::Format;

/// Arguments of `tributary demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Inject drops, stalls and server errors to watch reconnects, resumes and gaps.
    #[arg(long)]
    pub faults: bool,
    /// How long to run.
    #[arg(long, value_name = "D", default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Output format [default: json when stdout is not a terminal, pretty when it is].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Also print connection lifecycle events (always on with --faults).
    #[arg(long)]
    pub lifecycle: bool,
    /// Seed for the emulators' traffic and faults.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Messages per second each emulator generates.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Keep each event's original wire object in the `raw` field.
    #[arg(long)]
    pub raw: bool,
    /// The state file for the demo's resume cursors [default: a temporary one, removed at the
    /// end; never the state file of `run`].
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics and a health check on /healthz.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}

/// The sources and target the demo builds, by emulator.
const PLAN: &[(EmulatedService, &str)] = &[
    (EmulatedService::Campfire, "campfire"),
    (EmulatedService::Flowdock, "flowdock"),
    (EmulatedService::Multistreamer, "multistreamer"),
    (EmulatedService::Ustream, "ustream"),
    (EmulatedService::Streamin, "streamin"),
];

/// How long the demo waits after its duration, with the emulators' traffic stopped, for every
/// source to deliver what its emulator committed.
const DRAIN_MAX: Duration = Duration::from_secs(10);

/// Every this many generated Ustream items, a `host` item moves the client to the emulator's
/// other listener.
const USTREAM_HOST_EVERY: u32 = 6;

/// The relay the demo runs: alerts from chat into the StreamIn emulator.
const RELAY: &str = "\n[[relay]]\nfrom = [\"campfire\", \"flowdock-sse\", \"multistreamer\"]\nto = \"streamin\"\nmatch = \"(?i)deploy|outage|ship it\"\ntemplate = \"**{author}** in {room} ({source}): {text}\"\n";

/// The faults the first connections of each emulator get with `--faults`, so every kind of
/// failure shows within the demo's first seconds; random faults follow.
fn scripted_faults(service: EmulatedService) -> Vec<Vec<Fault>> {
    let drop = |n| vec![Fault::DropAfterBytes(n)];
    match service {
        EmulatedService::Campfire => {
            vec![
                drop(1500),
                vec![Fault::Status {
                    code: 400,
                    retry_after: None,
                }],
                vec![Fault::Malformed],
            ]
        }
        EmulatedService::Flowdock => vec![
            drop(2500),
            vec![Fault::Stall {
                keepalives: false,
                duration: None,
            }],
            vec![Fault::Status {
                code: 503,
                retry_after: Some(2),
            }],
            vec![Fault::OneByteWrites],
        ],
        EmulatedService::Multistreamer => vec![drop(4000), vec![Fault::Malformed]],
        EmulatedService::Ustream => vec![
            vec![Fault::Status {
                code: 500,
                retry_after: None,
            }],
            vec![Fault::Delay(Duration::from_secs(3))],
        ],
        EmulatedService::Streamin => Vec::new(),
    }
}

/// `tributary demo`.
pub async fn run(args: DemoArgs) -> ExitCode {
    // Listen from the very start, so a signal during startup is not lost either.
    let mut stop = crate::signals::StopSignals::new();
    let format = args.format.unwrap_or_else(Format::default_for_stdout);
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut emulators = Vec::new();
    for (i, (service, _)) in PLAN.iter().enumerate() {
        let seed = args.seed.wrapping_add(i as u64);
        // StreamIn only receives; its faults would only fail relays.
        let faults = if args.faults && *service != EmulatedService::Streamin {
            let plan = FaultPlan::random(seed, 0.3);
            for f in scripted_faults(*service) {
                plan.push(f);
            }
            plan
        } else {
            FaultPlan::none()
        };
        match AnyEmulator::start(*service, listen, seed, args.rate, Arc::new(faults)).await {
            Ok(AnyEmulator::Ustream(e)) => {
                // The document's `host` switches, besides its suffix forms (always generated).
                e.set_host_every(USTREAM_HOST_EVERY);
                emulators.push(AnyEmulator::Ustream(e));
            }
            Ok(e) => emulators.push(e),
            Err(e) => {
                eprintln!("tributary: cannot start the {service:?} emulator on loopback: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let text = demo_config(&emulators, args.faults);
    let mut cfg = match config::parse(&text, Path::new("demo.toml"), &|_| None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tributary: the demo's own config is invalid (a bug): {e}\n{text}");
            return ExitCode::FAILURE;
        }
    };
    // The emulators' tokens are written inline on purpose.
    cfg.warnings.clear();
    // Cursors of the emulators mean nothing to real servers and vice versa: the demo keeps
    // its own, never `run`'s default state file.
    let state = match &args.state {
        Some(path) => DemoState::Given(path.clone()),
        None => match DemoState::temporary() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tributary: cannot create a temporary state folder: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    cfg.state_file = state.path();
    // The run ends when `control` says so: after the duration and the drain.
    let (end_tx, end_rx) = watch::channel(false);
    let (tap_tx, mut tap_rx) = mpsc::unbounded_channel();
    let opts = RunOptions {
        health_grace: crate::metrics::DEFAULT_HEALTH_GRACE,
        format,
        duration: None,
        raw: args.raw,
        lifecycle: args.lifecycle || args.faults,
        state_file: Some(state.path()),
        metrics: args.metrics,
        end: Some(end_rx),
        tap: Some(tap_tx),
    };
    let summary_to_stdout = format == Format::Pretty;
    let intro = format!(
        "tributary demo: {} sources and a StreamIn relay against local emulators for {}{}",
        cfg.sources.len(),
        humantime::format_duration(args.duration),
        if args.faults {
            ", with faults injected"
        } else {
            ""
        }
    );
    say(summary_to_stdout, &intro);
    let mut tally = Tally::new(
        &emulators,
        cfg.sources.iter().map(|s| s.name.clone()).collect(),
    );
    let result = {
        let run = run::run_config(&cfg, &opts, &mut stop);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r,
            () = control(&mut emulators, &mut tally, &mut tap_rx, args.duration, &end_tx) => run.await,
        }
    };
    drop(opts);
    while let Ok(e) = tap_rx.try_recv() {
        tally.record(&e);
    }
    // Interrupted before the end of the duration: count what was committed until now.
    tally.close(&emulators);
    drop(state);
    let streamin_received = emulators.iter().find_map(|e| match e {
        AnyEmulator::Streamin(s) => Some(s.committed().len()),
        _ => None,
    });
    for e in emulators {
        e.stop().await;
    }
    match result {
        Ok(result) => {
            for line in summary(&result, &tally, streamin_received.unwrap_or(0)) {
                say(summary_to_stdout, &line);
            }
            run::exit_for(&result)
        }
        Err(e) => {
            eprintln!("tributary: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the demo's clock: records what the sources deliver; at the end of `duration` stops
/// the emulators' traffic and notes what each committed, then waits (at most [`DRAIN_MAX`])
/// until every source has delivered that, and ends the run.
async fn control(
    emulators: &mut [AnyEmulator],
    tally: &mut Tally,
    tap: &mut mpsc::UnboundedReceiver<Event>,
    duration: Duration,
    end: &watch::Sender<bool>,
) {
    let deadline = tokio::time::Instant::now() + duration;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            Some(e) = tap.recv() => tally.record(&e),
        }
    }
    for e in emulators.iter_mut() {
        stop_traffic(e);
    }
    tally.close(emulators);
    let drain_started = tokio::time::Instant::now();
    let drain_end = drain_started + DRAIN_MAX;
    while !tally.settled() {
        tokio::select! {
            () = tokio::time::sleep_until(drain_end) => break,
            Some(e) = tap.recv() => tally.record(&e),
        }
    }
    tally.drained = Some(drain_started.elapsed());
    let _ = end.send(true);
}

/// Stops an emulator's generated traffic, where it can be stopped (the Ustream emulator's
/// cannot; what it commits after the duration is not counted).
fn stop_traffic(emulator: &mut AnyEmulator) {
    match emulator {
        AnyEmulator::Campfire(e) => e.stop_traffic(),
        AnyEmulator::Flowdock(e) => e.stop_traffic(),
        AnyEmulator::Multistreamer(e) => e.stop_traffic(),
        AnyEmulator::Ustream(_) | AnyEmulator::Streamin(_) => {}
    }
}

/// The ids a client gives the messages an emulator committed and must deliver (stored ones,
/// visible ones), in commit order; None for StreamIn, which only receives.
fn committed_ids(emulator: &AnyEmulator) -> Option<Vec<String>> {
    Some(match emulator {
        AnyEmulator::Campfire(e) => e
            .committed()
            .iter()
            .map(|c| format!("campfire:{}:{}", c.room, c.id))
            .collect(),
        // The demo's sources read flows, not private messages.
        AnyEmulator::Flowdock(e) => e
            .committed()
            .into_iter()
            .filter(|c| c.flow != "private")
            .map(|c| c.event_id)
            .collect(),
        AnyEmulator::Multistreamer(e) => {
            let stream = e.stream();
            e.committed_chat()
                .iter()
                .filter_map(
                    |c| match multistreamer::ServerMessage::from_value(&c.json) {
                        Ok(multistreamer::ServerMessage::Text(m)) => {
                            Some(multistreamer::map::chat_id(stream, false, &m, 0))
                        }
                        Ok(multistreamer::ServerMessage::Emote(m)) => {
                            Some(multistreamer::map::chat_id(stream, true, &m, 0))
                        }
                        _ => None,
                    },
                )
                .collect()
        }
        AnyEmulator::Ustream(e) => {
            let channel = e.channel();
            e.visible_messages()
                .iter()
                .map(|c| format!("ustream:{channel}:{}", c.uid))
                .collect()
        }
        AnyEmulator::Streamin(_) => return None,
    })
}

/// The index in [`PLAN`] of the emulator a demo source reads (`flowdock-sse` reads
/// `flowdock`).
fn plan_index(source: &str) -> Option<usize> {
    PLAN.iter().position(|(_, name)| {
        source == *name
            || source
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('-'))
    })
}

/// What each source delivered against what its emulator committed during the demo.
struct Tally {
    /// Per emulator: how many of its committed ids were there before the sources started.
    before: Vec<usize>,
    /// Per emulator: the ids it committed during the demo (known once the duration ended).
    expected: Vec<Option<Vec<String>>>,
    /// The demo's sources.
    sources: Vec<String>,
    /// Per source: the ids of the events it delivered (not gap and connection events).
    delivered: HashMap<String, HashSet<String>>,
    /// How long the drain took, once done.
    drained: Option<Duration>,
}

/// One source's delivery against its emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivery {
    /// Committed messages delivered.
    delivered: usize,
    /// Messages its emulator committed during the demo.
    committed: usize,
    /// Other events delivered: presence, notices, earlier history.
    other: usize,
    /// The first few committed messages not delivered.
    missing: Vec<String>,
}

impl Tally {
    /// Notes what every emulator committed before the sources start.
    fn new(emulators: &[AnyEmulator], sources: Vec<String>) -> Tally {
        Tally {
            sources,
            before: emulators
                .iter()
                .map(|e| committed_ids(e).map_or(0, |ids| ids.len()))
                .collect(),
            expected: vec![None; emulators.len()],
            delivered: HashMap::new(),
            drained: None,
        }
    }

    /// Counts one delivered event.
    fn record(&mut self, e: &Event) {
        if matches!(e.kind, Kind::Connection | Kind::Gap) {
            return;
        }
        self.delivered
            .entry(e.source.clone())
            .or_default()
            .insert(e.id.clone());
    }

    /// Notes what every emulator committed since the sources started (once).
    fn close(&mut self, emulators: &[AnyEmulator]) {
        for (i, e) in emulators.iter().enumerate() {
            if self.expected[i].is_none() {
                self.expected[i] = committed_ids(e)
                    .map(|ids| ids.into_iter().skip(self.before[i]).collect::<Vec<_>>());
            }
        }
    }

    /// Whether every source has delivered what its emulator committed. Multistreamer cannot
    /// replay (what a broken connection missed is announced by a gap, never delivered): it is
    /// done once the last committed message arrived.
    fn settled(&self) -> bool {
        let empty = HashSet::new();
        self.sources.iter().all(|source| {
            let Some(i) = plan_index(source) else {
                return true;
            };
            let Some(Some(ids)) = self.expected.get(i) else {
                return true;
            };
            let got = self.delivered.get(source).unwrap_or(&empty);
            if PLAN[i].0 == EmulatedService::Multistreamer {
                ids.last().is_none_or(|id| got.contains(id))
            } else {
                ids.iter().all(|id| got.contains(id))
            }
        })
    }

    /// How `source` did, when it reads an emulator that commits messages.
    fn delivery(&self, source: &str) -> Option<Delivery> {
        let ids = self.expected.get(plan_index(source)?)?.as_ref()?;
        let empty = HashSet::new();
        let got = self.delivered.get(source).unwrap_or(&empty);
        let delivered = ids.iter().filter(|id| got.contains(*id)).count();
        let wanted: HashSet<&String> = ids.iter().collect();
        Some(Delivery {
            delivered,
            committed: ids.len(),
            other: got.iter().filter(|id| !wanted.contains(id)).count(),
            missing: ids
                .iter()
                .filter(|id| !got.contains(*id))
                .take(3)
                .cloned()
                .collect(),
        })
    }
}

/// Where the demo keeps its cursors: a file the user named, or a temporary folder removed
/// when the demo ends.
enum DemoState {
    /// `--state FILE`.
    Given(PathBuf),
    /// A fresh folder under the system's temporary folder.
    Temporary(PathBuf),
}

impl DemoState {
    /// A new private folder `tributary-demo-<pid>-<n>` in the temporary folder.
    fn temporary() -> std::io::Result<DemoState> {
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last = None;
        for n in 0..100u32 {
            let dir = base.join(format!(
                "tributary-demo-{}-{}",
                std::process::id(),
                nanos.wrapping_add(n)
            ));
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            match builder.create(&dir) {
                Ok(()) => return Ok(DemoState::Temporary(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free name")))
    }

    /// The state file.
    fn path(&self) -> PathBuf {
        match self {
            DemoState::Given(p) => p.clone(),
            DemoState::Temporary(dir) => dir.join("state.json"),
        }
    }
}

impl Drop for DemoState {
    fn drop(&mut self) {
        if let DemoState::Temporary(dir) = self {
            if let Err(e) = std::fs::remove_dir_all(&*dir) {
                tracing::debug!(
                    "cannot remove the demo's state folder {}: {e}",
                    dir.display()
                );
            }
        }
    }
}

fn say(stdout: bool, line: &str) {
    if stdout {
        println!("{line}");
    } else {
        eprintln!("{line}");
    }
}

/// The demo's config: one table per emulator, both Flowdock transports, and a relay.
fn demo_config(emulators: &[AnyEmulator], faults: bool) -> String {
    let mut text = String::new();
    // With faults, stalls should be noticed within the demo's few seconds.
    let tune = if faults {
        "stall_timeout = \"4s\"\nbackoff = { initial = \"1s\", max = \"4s\" }\n"
    } else {
        ""
    };
    for (emu, (_, name)) in emulators.iter().zip(PLAN) {
        match emu {
            AnyEmulator::Flowdock(_) => {
                let sse = emu.config_snippet("flowdock-sse");
                let json = emu
                    .config_snippet("flowdock-json")
                    .replace("transport = \"sse\"", "transport = \"json\"");
                for s in [sse, json] {
                    text.push_str(&s);
                    text.push_str(tune);
                    text.push('\n');
                }
            }
            AnyEmulator::Streamin(_) => {
                text.push_str(&emu.config_snippet(name));
                text.push('\n');
            }
            _ => {
                text.push_str(&emu.config_snippet(name));
                text.push_str(tune);
                text.push('\n');
            }
        }
    }
    text.push_str(RELAY);
    text
}

/// The closing summary: one line per source and relay; per source, how many of the messages
/// its emulator committed during the demo it delivered, so a loss is visible.
fn summary(result: &RunResult, tally: &Tally, streamin_received: usize) -> Vec<String> {
    let mut lines = vec![
        String::new(),
        format!(
            "── summary ({}) ──",
            match result.ending {
                Ending::Duration => "duration reached",
                Ending::Signal => "interrupted",
                Ending::AllSourcesEnded => "every source ended",
                Ending::OutputClosed => "output closed",
            }
        ),
        format!(
            "{:<16} {:<14} {:>24} {:>6} {:>10} {:>5} {:>10} {:>9}",
            "source",
            "service",
            "delivered",
            "other",
            "reconnects",
            "gaps",
            "duplicates",
            "malformed"
        ),
    ];
    let mut short = Vec::new();
    for s in &result.report.sources {
        let st = &s.stats;
        let (delivered, other) = match tally.delivery(&s.name) {
            Some(d) => {
                let cells = (
                    format!("{} of {} committed", d.delivered, d.committed),
                    d.other.to_string(),
                );
                if d.delivered < d.committed {
                    short.push((s.name.clone(), d, st.gaps));
                }
                cells
            }
            None => (st.delivered.to_string(), "-".to_owned()),
        };
        lines.push(format!(
            "{:<16} {:<14} {:>24} {:>6} {:>10} {:>5} {:>10} {:>9}",
            s.name,
            s.service.as_str(),
            delivered,
            other,
            st.reconnects,
            st.gaps,
            st.duplicates,
            st.malformed
        ));
    }
    for (name, d, gaps) in short {
        let missing = d.committed - d.delivered;
        let mut first = d.missing.join(", ");
        if missing > d.missing.len() {
            first.push_str(", ...");
        }
        lines.push(if gaps > 0 {
            format!(
                "{name}: {missing} committed not delivered ({first}); {gaps} gap events announced where messages may be missing"
            )
        } else {
            format!("{name}: {missing} committed not delivered ({first}) and no gap event: LOST")
        });
    }
    if let Some(d) = tally.drained {
        lines.push(if tally.settled() {
            format!(
                "traffic stopped at the end of the duration; every source caught up within {:.1} s",
                d.as_secs_f64()
            )
        } else {
            format!(
                "traffic stopped at the end of the duration; not every source caught up within {} s",
                DRAIN_MAX.as_secs()
            )
        });
    }
    for r in &result.relays {
        lines.push(format!(
            "relay {}: {} sent, {} failed",
            r.name, r.sent, r.failed
        ));
    }
    lines.push(format!(
        "StreamIn emulator received {streamin_received} messages"
    ));
    lines
}

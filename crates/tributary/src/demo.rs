//! `tributary demo`: the whole product against local emulators of all five services.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use emulator::{Fault, FaultPlan};

use crate::config;
use crate::emulate::{AnyEmulator, EmulatedService};
use crate::output::Format;
use crate::run::{self, Ending, RunOptions, RunResult, parse_duration};

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
    let opts = RunOptions {
        health_grace: crate::metrics::DEFAULT_HEALTH_GRACE,
        format,
        duration: Some(args.duration),
        raw: args.raw,
        lifecycle: args.lifecycle || args.faults,
        state_file: Some(state.path()),
        metrics: args.metrics,
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
    let result = run::run_config(&cfg, &opts, &mut stop).await;
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
            for line in summary(&result, streamin_received.unwrap_or(0)) {
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

/// The closing summary: one line per source and relay.
fn summary(result: &RunResult, streamin_received: usize) -> Vec<String> {
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
            "{:<16} {:<14} {:>9} {:>10} {:>5} {:>10} {:>9}",
            "source", "service", "delivered", "reconnects", "gaps", "duplicates", "malformed"
        ),
    ];
    for s in &result.report.sources {
        let st = &s.stats;
        lines.push(format!(
            "{:<16} {:<14} {:>9} {:>10} {:>5} {:>10} {:>9}",
            s.name,
            s.service.as_str(),
            st.delivered,
            st.reconnects,
            st.gaps,
            st.duplicates,
            st.malformed
        ));
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

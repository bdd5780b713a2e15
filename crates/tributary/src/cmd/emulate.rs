//! `tributary emulate`: run one service's emulator in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use emulator::FaultPlan;
use emulator::proxy::{FaultKind, Proxy, ProxyPlan};
use serde_json::{Value, json};

/// The services that can be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EmulatedService {
    /// Campfire streaming + REST (join, recent.json).
    Campfire,
    /// Flowdock streaming (JSON stream and SSE) + REST messages.
    Flowdock,
    /// Multistreamer WebSocket.
    Multistreamer,
    /// Ustream Social Stream timeslices.
    Ustream,
    /// StreamIn source API.
    Streamin,
}

/// Arguments of `tributary emulate`.
#[derive(clap::Args, Debug)]
pub struct EmulateArgs {
    /// Which service to emulate.
    #[arg(value_enum)]
    pub service: EmulatedService,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Seed for the generated traffic and faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Generated messages per second.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Inject random faults into this fraction of connections (0 to 1): protocol faults in
    /// the emulator, and transport faults (swallowed answers, cuts, resets, stalls, delays)
    /// in a fault proxy in front of it; the printed config then points at the proxy.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub faults: f64,
    /// Flowdock only: how JSON stream frames end, `cr` (`\r`, the document's rule) or `crlf`
    /// (`\r\n`, what its Ruby example and the npm `flowdock` client split on).
    #[arg(long, value_enum, value_name = "DELIM")]
    pub delim: Option<Delim>,
    /// Only these transport faults, and none in the emulator (with --faults): a
    /// comma-separated list of swallow, cut, cut-after, reset, stall, trickle, delay.
    #[arg(long, value_name = "KINDS", value_delimiter = ',', value_parser = parse_kind)]
    pub transport_faults: Vec<FaultKind>,
    /// On Ctrl-C, write every message the emulator committed to FILE, one JSON object a line.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

/// The frame ending of the Flowdock emulator's JSON stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Delim {
    /// `\r`.
    Cr,
    /// `\r\n`.
    Crlf,
}

fn parse_kind(s: &str) -> Result<FaultKind, String> {
    Ok(match s.trim() {
        "swallow" => FaultKind::Swallow,
        "cut" => FaultKind::CutAtByte,
        "cut-after" => FaultKind::CutAfter,
        "reset" => FaultKind::ResetAtByte,
        "stall" => FaultKind::Stall,
        "trickle" => FaultKind::Trickle,
        "delay" => FaultKind::Delay,
        other => {
            return Err(format!(
                "`{other}` is not one of swallow, cut, cut-after, reset, stall, trickle, delay"
            ));
        }
    })
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("`{s}` is not between 0 and 1"))
    }
}

/// A started emulator of any service, for `emulate` and `demo`.
pub enum AnyEmulator {
    /// Campfire.
    Campfire(emulator::campfire::Emulator),
    /// Flowdock.
    Flowdock(emulator::flowdock::Emulator),
    /// Multistreamer.
    Multistreamer(emulator::multistreamer::Emulator),
    /// Ustream.
    Ustream(emulator::ustream::Emulator),
    /// StreamIn.
    Streamin(emulator::streamin::Emulator),
}

impl AnyEmulator {
    /// Starts the emulator of `service` with common settings.
    pub async fn start(
        service: EmulatedService,
        listen: SocketAddr,
        seed: u64,
        rate: f64,
        faults: Arc<FaultPlan>,
    ) -> std::io::Result<AnyEmulator> {
        Ok(match service {
            EmulatedService::Campfire => {
                let c = emulator::campfire::Config {
                    listen,
                    seed,
                    rate,
                    faults,
                    ..Default::default()
                };
                AnyEmulator::Campfire(emulator::campfire::Emulator::start(c).await?)
            }
            EmulatedService::Flowdock => {
                let c = emulator::flowdock::Config {
                    listen,
                    seed,
                    rate,
                    faults,
                    ..Default::default()
                };
                AnyEmulator::Flowdock(emulator::flowdock::Emulator::start(c).await?)
            }
            EmulatedService::Multistreamer => {
                let c = emulator::multistreamer::Config {
                    listen,
                    seed,
                    rate,
                    faults,
                    ..Default::default()
                };
                AnyEmulator::Multistreamer(emulator::multistreamer::Emulator::start(c).await?)
            }
            EmulatedService::Ustream => {
                let c = emulator::ustream::Config {
                    listen,
                    seed,
                    rate,
                    faults,
                    ..Default::default()
                };
                AnyEmulator::Ustream(emulator::ustream::Emulator::start(c).await?)
            }
            EmulatedService::Streamin => {
                let c = emulator::streamin::Config {
                    listen,
                    seed,
                    rate,
                    faults,
                    ..Default::default()
                };
                AnyEmulator::Streamin(emulator::streamin::Emulator::start(c).await?)
            }
        })
    }

    /// The emulator's base URL.
    pub fn url(&self) -> String {
        match self {
            AnyEmulator::Campfire(e) => e.url(),
            AnyEmulator::Flowdock(e) => e.url(),
            AnyEmulator::Multistreamer(e) => e.url(),
            AnyEmulator::Ustream(e) => e.url(),
            AnyEmulator::Streamin(e) => e.url(),
        }
    }

    /// A config table that connects `tributary run` to this emulator.
    pub fn config_snippet(&self, name: &str) -> String {
        match self {
            AnyEmulator::Campfire(e) => e.config_snippet(name),
            AnyEmulator::Flowdock(e) => e.config_snippet(name),
            AnyEmulator::Multistreamer(e) => e.config_snippet(name),
            AnyEmulator::Ustream(e) => e.config_snippet(name),
            AnyEmulator::Streamin(e) => e.config_snippet(name),
        }
    }

    /// Every message the emulator committed, as JSON objects in commit order (none for
    /// StreamIn, which receives rather than commits).
    pub fn committed_json(&self) -> Vec<Value> {
        match self {
            AnyEmulator::Campfire(e) => e
                .committed()
                .iter()
                .map(|c| json!({"id": c.id, "room": c.room, "type": c.kind, "body": c.body}))
                .collect(),
            AnyEmulator::Flowdock(e) => e
                .committed()
                .iter()
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
                .collect(),
            AnyEmulator::Multistreamer(e) => e
                .committed()
                .iter()
                .map(|c| json!({"seq": c.seq, "type": c.kind, "text": c.text, "json": c.json}))
                .collect(),
            AnyEmulator::Ustream(e) => e
                .committed()
                .iter()
                .map(|c| {
                    json!({"uid": c.uid, "type": c.kind, "provider": c.provider,
                           "display_name": c.display_name, "text": c.text})
                })
                .collect(),
            AnyEmulator::Streamin(_) => Vec::new(),
        }
    }

    /// Stops the emulator.
    pub async fn stop(self) {
        match self {
            AnyEmulator::Campfire(e) => e.stop().await,
            AnyEmulator::Flowdock(e) => e.stop().await,
            AnyEmulator::Multistreamer(e) => e.stop().await,
            AnyEmulator::Ustream(e) => e.stop().await,
            AnyEmulator::Streamin(e) => e.stop().await,
        }
    }
}

/// `tributary emulate`.
pub async fn run(args: EmulateArgs) -> ExitCode {
    let emulator_faults = args.faults > 0.0 && args.transport_faults.is_empty();
    let faults = Arc::new(if emulator_faults {
        FaultPlan::random(args.seed, args.faults)
    } else {
        FaultPlan::none()
    });
    // With faults, the emulator listens on a port of its own and the proxy takes `--listen`.
    let emu_listen = if args.faults > 0.0 {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        args.listen
    };
    let started = match (args.service, args.delim) {
        (EmulatedService::Flowdock, Some(delim)) => {
            let c = emulator::flowdock::Config {
                listen: emu_listen,
                seed: args.seed,
                rate: args.rate,
                faults,
                crlf: delim == Delim::Crlf,
                ..Default::default()
            };
            emulator::flowdock::Emulator::start(c)
                .await
                .map(AnyEmulator::Flowdock)
        }
        (service, Some(_)) => {
            eprintln!("tributary: --delim applies to the flowdock emulator only, not {service:?}");
            return ExitCode::from(2);
        }
        (service, None) => {
            AnyEmulator::start(service, emu_listen, args.seed, args.rate, faults).await
        }
    };
    let emu = match started {
        Ok(e) => e,
        Err(e) => {
            eprintln!("tributary: cannot start the emulator on {emu_listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let name = format!("{:?}", args.service).to_lowercase();
    let mut snippet = emu.config_snippet(&format!("{name}-emulator"));
    let proxy = if args.faults > 0.0 {
        let Some(emu_addr) = emulator_addr(&emu) else {
            eprintln!(
                "tributary: the emulator's address is not known: {}",
                emu.url()
            );
            emu.stop().await;
            return ExitCode::FAILURE;
        };
        let plan = ProxyPlan::random(args.seed.wrapping_add(1), args.faults)
            .with_kinds(&args.transport_faults);
        match Proxy::start(args.listen, emu_addr, Arc::new(plan)).await {
            Ok(p) => {
                snippet = snippet.replace(&emu_addr.to_string(), &p.addr().to_string());
                Some(p)
            }
            Err(e) => {
                eprintln!(
                    "tributary: cannot start the fault proxy on {}: {e}",
                    args.listen
                );
                emu.stop().await;
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    match &proxy {
        Some(p) => {
            println!(
                "# {name} emulator listening on {}, behind a fault proxy on {}",
                emu.url(),
                p.url()
            );
        }
        None => println!("# {name} emulator listening on {}", emu.url()),
    }
    println!("# add this to tributary.toml to read it; stop with Ctrl-C\n");
    println!("{snippet}");
    use std::io::Write;
    let mut stop = crate::signals::StopSignals::new();
    let _ = std::io::stdout().flush();
    stop.recv().await;
    let mut code = ExitCode::SUCCESS;
    if let Some(path) = &args.record {
        let mut text = String::new();
        for v in emu.committed_json() {
            text.push_str(&v.to_string());
            text.push('\n');
        }
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("tributary: cannot write {}: {e}", path.display());
            code = ExitCode::FAILURE;
        }
    }
    if let Some(p) = proxy {
        p.stop().await;
    }
    emu.stop().await;
    code
}

/// The loopback address the emulator listens on (from its base URL).
fn emulator_addr(emu: &AnyEmulator) -> Option<SocketAddr> {
    let url = emu.url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    rest.split('/').next()?.parse().ok()
}

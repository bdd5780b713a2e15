//! `tributary emulate`: run one service's emulator in the foreground.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use emulator::FaultPlan;

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
    /// Inject random faults into this fraction of connections (0 to 1).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub faults: f64,
    /// Flowdock only: how JSON stream frames end, `cr` (`\r`, the document's rule) or `crlf`
    /// (`\r\n`, what its Ruby example and the npm `flowdock` client split on).
    #[arg(long, value_enum, value_name = "DELIM")]
    pub delim: Option<Delim>,
}

/// The frame ending of the Flowdock emulator's JSON stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Delim {
    /// `\r`.
    Cr,
    /// `\r\n`.
    Crlf,
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
    let faults = Arc::new(if args.faults > 0.0 {
        FaultPlan::random(args.seed, args.faults)
    } else {
        FaultPlan::none()
    });
    let started = match (args.service, args.delim) {
        (EmulatedService::Flowdock, Some(delim)) => {
            let c = emulator::flowdock::Config {
                listen: args.listen,
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
            AnyEmulator::start(service, args.listen, args.seed, args.rate, faults).await
        }
    };
    let emu = match started {
        Ok(e) => e,
        Err(e) => {
            eprintln!(
                "tributary: cannot start the emulator on {}: {e}",
                args.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let name = format!("{:?}", args.service).to_lowercase();
    println!("# {name} emulator listening on {}", emu.url());
    println!("# add this to tributary.toml to read it; stop with Ctrl-C\n");
    println!("{}", emu.config_snippet(&format!("{name}-emulator")));
    use std::io::Write;
    let mut stop = crate::run::StopSignals::new();
    let _ = std::io::stdout().flush();
    stop.recv().await;
    emu.stop().await;
    ExitCode::SUCCESS
}

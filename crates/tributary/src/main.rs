//! Tributary: many live chat streams in, one clean stream out.
//!
//! `tributary run` keeps every configured chat source connected — Campfire, Flowdock,
//! Multistreamer, Ustream — and prints one ordered, deduplicated stream of normalized events.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(feature = "count-allocs")]
mod alloc_count;
mod cli;
mod cmd;
mod config;
mod config_types;
mod metrics;
mod output;
mod relay;
mod signals;
mod sinks;
mod sources;
mod template;
mod tls;

/// The end of `--help`: examples, files, environment and exit statuses.
const LONG_HELP: &str = "EXAMPLES:
  tributary demo                              all five services against local emulators
  tributary demo --faults                     the same, with drops, stalls and server errors
  tributary run                               stream every source in ./tributary.toml
  tributary run --format json | jq .text      NDJSON for scripts (the default when piped)
  tributary run --lifecycle --metrics 127.0.0.1:9464
  tributary send --to live --emote waves      write to a multistreamer source
  tributary check                             validate config, secrets and connectivity
  tributary decode --format sse capture.txt   decode a captured stream

FILES:
  ./tributary.toml                            the default config (--config FILE)
  $XDG_STATE_HOME/tributary/state.json        resume cursors (state_file, --state FILE)

ENVIRONMENT:
  RUST_LOG              log filter for stderr (default: warn)
  NO_COLOR              disable colours in pretty output
  TOKIO_WORKER_THREADS  run the sources on this many worker threads (default: one thread)

EXIT STATUS:
  0  success
  1  failure: every source failed or gave up, a send was refused, a check failed
  2  a bad command line or config

See docs/user-guide.md for the config reference and recipes.";

#[cfg(feature = "count-allocs")]
#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;

/// Many live chat streams in, one clean stream out.
#[derive(Parser, Debug)]
#[command(
    name = "tributary",
    version,
    about = "Many live chat streams in, one clean stream out",
    long_about = "Tributary keeps live chat streams from Campfire, Flowdock, Multistreamer and \
Ustream connected — reconnecting with backoff, detecting stalled connections, resuming \
without loss and dropping duplicates — and prints them as one stream of normalized events \
(NDJSON or readable lines). It can also send to Multistreamer and StreamIn, relay events \
between services, decode captured streams, and run faithful local emulators of all five \
services.",
    after_help = "Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.\n\
Exit status: 0 success, 1 failure (e.g. every source failed), 2 bad command line or config.",
    after_long_help = LONG_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Stream every configured source to stdout.
    Run(cmd::run::RunArgs),
    /// Decode a captured stream (SSE, delimited JSON, concatenated JSON) into one JSON object
    /// per frame.
    Decode(cmd::decode::DecodeArgs),
    /// Run the whole product against local emulators of all five services.
    Demo(cmd::demo::DemoArgs),
    /// Send one message through a multistreamer source or a streamin target.
    Send(cmd::send::SendArgs),
    /// Ask StreamIn for a new API key and store it in the target's key file (once a day).
    RefreshKey(cmd::refresh_key::RefreshKeyArgs),
    /// Validate the config, resolve secrets, ping StreamIn targets and try every source.
    Check(cmd::check::CheckArgs),
    /// Run one service's local emulator and print a config table that reads it.
    Emulate(cmd::emulate::EmulateArgs),
    /// Print shell completions.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    raise_fd_limit();
    let code = match cli.command {
        Command::Run(args) => runtime().block_on(cmd::run::run(args)),
        Command::Decode(args) => cmd::decode::run(&args),
        Command::Demo(args) => runtime().block_on(cmd::demo::run(args)),
        Command::Send(args) => runtime().block_on(cmd::send::run(args)),
        Command::RefreshKey(args) => runtime().block_on(cmd::refresh_key::run(args)),
        Command::Check(args) => runtime().block_on(cmd::check::run(args)),
        Command::Emulate(args) => runtime().block_on(cmd::emulate::run(args)),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "tributary",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    };
    #[cfg(feature = "count-allocs")]
    alloc_count::report();
    code
}

/// Raises the soft limit of open files to the hard limit: every stream holds a socket, and
/// the usual soft limit (1024) is far below what thousands of sources need. Best effort: a
/// refusal is logged at debug level and the old limit stays.
#[cfg(unix)]
#[allow(unsafe_code)]
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `struct rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur >= limit.rlim_max
    {
        return;
    }
    // An unlimited hard limit cannot be the soft one: the kernel's ceiling is fs.nr_open.
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(1 << 20);
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max.min(ceiling).max(limit.rlim_cur),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: `raised` is a valid `struct rlimit`; the call only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        tracing::debug!(
            "cannot raise the open-files limit from {} to {}: {}",
            limit.rlim_cur,
            raised.rlim_cur,
            std::io::Error::last_os_error()
        );
    }
}

/// Elsewhere the limit is left as it is.
#[cfg(not(unix))]
fn raise_fd_limit() {}

/// The runtime: one thread runs everything (sources, output loop, timers, metrics), with
/// stdout and state files written on blocking threads. Handing every event from a worker to
/// another thread cost more than all the rest of its way (wake-ups, and frees of memory
/// allocated on the other thread): one thread carries twice the events at half the CPU. Set
/// `TOKIO_WORKER_THREADS` to spread the sources over that many worker threads instead.
fn runtime() -> tokio::runtime::Runtime {
    let mut builder = if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

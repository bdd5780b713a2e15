//! Project automation: `cargo xtask ci | outside | bench | fuzz <target> --seconds N`.

use std::process::{Command, ExitCode};

mod bench;
mod fuzz;
mod outside;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci                         what CI runs: fmt --check, clippy -D warnings, rustdoc
                             -D warnings, the whole test suite (nextest when installed),
                             the fuzz-corpus replay and the outside checks
  outside                    real outside clients against the emulators (npm eventsource on
                             Flowdock SSE, the npm flowdock client on the JSON stream, Python
                             websockets on Multistreamer), each compared with the emulator's
                             recording; needs node, npm and python3 (installs the clients into
                             outside/ from its lock files). TRIBUTARY_SKIP_OUTSIDE=1 skips it
  bench [frame] [ARGS...]    the stream-frame criterion benchmarks (ARGS go to cargo bench)
  bench e2e [ARGS...]        the whole `tributary run` path per transport, beside the
                             loopback limit: events/s, CPU and allocations per event, peak RSS
  bench idle [--streams N]   N idle Flowdock SSE streams: RSS per stream, idle CPU, time
                             until all are connected
  fuzz <target> [--seconds N]
                             run one cargo-fuzz target on nightly for N seconds (default 60)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("outside") => outside::run_all(true),
        Some("bench") => bench::run_bench(&args[1..]),
        Some("fuzz") => fuzz_cmd(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("xtask: unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn fuzz_cmd(args: &[String]) -> Result<(), String> {
    let mut target = None;
    let mut seconds = 60u64;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                let v = it.next().ok_or("--seconds needs a value")?;
                seconds = v
                    .parse()
                    .map_err(|_| format!("--seconds: `{v}` is not a number"))?;
            }
            t if target.is_none() && !t.starts_with('-') => target = Some(t.to_owned()),
            other => return Err(format!("fuzz: unexpected argument `{other}`")),
        }
    }
    let target = target.ok_or("fuzz: name a target (sse, json_lines, json_seq)")?;
    fuzz::run(&target, seconds)
}

/// Runs a command from the workspace root, failing with its name if it fails.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<(), String> {
    run_with_env(program, args, &[])
}

/// [`run`] with extra environment variables.
pub(crate) fn run_with_env(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(), String> {
    let root = workspace_root();
    let shown: String = env.iter().map(|(k, v)| format!("{k}={v:?} ")).collect();
    eprintln!("xtask: $ {shown}{program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(&root)
        .status()
        .map_err(|e| format!("could not start `{program}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

/// The workspace root (the parent of this crate's directory).
pub(crate) fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn ci() -> Result<(), String> {
    run("cargo", &["fmt", "--all", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The API docs build without a broken link or a bare URL.
    run_with_env(
        "cargo",
        &["doc", "--workspace", "--no-deps", "--locked"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    if has_nextest() {
        run(
            "cargo",
            &[
                "nextest",
                "run",
                "--workspace",
                "--locked",
                "--profile",
                "ci",
            ],
        )?;
        // nextest does not run doctests.
        run("cargo", &["test", "--workspace", "--locked", "--doc"])?;
    } else {
        run(
            "cargo",
            &["test", "--workspace", "--locked", "--no-fail-fast"],
        )?;
    }
    // The fuzz corpora are replayed by an ordinary test; run it by name so a filter or a
    // skipped package can never hide it.
    run(
        "cargo",
        &[
            "test",
            "--locked",
            "-p",
            "stream-frame",
            "--test",
            "fuzz_corpus",
        ],
    )?;
    // Real outside clients against the emulators: they read the documents, not our code.
    // The test build above has built the binary they run.
    outside::run_all(false)?;
    Ok(())
}

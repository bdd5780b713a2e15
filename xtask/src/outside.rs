//! `cargo xtask outside`: real outside clients against our emulators.
//!
//! Builds `tributary`, installs the clients from the project's own files (`outside/package.json`
//! with its lock file, `outside/requirements.txt`) into `outside/`, then for each check starts
//! `tributary emulate <service> --record FILE` on a free loopback port, runs the client script
//! (`receive`), stops the emulator with SIGINT so it writes what it committed, and runs the
//! script's `verify` against that recording. Every check runs; the failures are named at the end.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{run, workspace_root};

/// Set to `1` to skip the outside checks (for machines without node, npm or python3).
const SKIP_ENV: &str = "TRIBUTARY_SKIP_OUTSIDE";
/// How long an emulator may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an emulator may take to write its recording and exit after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The flows the Flowdock emulator serves by default, which the clients read.
const FLOWS: &str = "acme/main,acme/ops";

/// One outside check: an emulator, a client script and how to call it.
struct Check {
    /// What the failure report calls it.
    name: &'static str,
    /// `tributary emulate` arguments (before `--record`).
    emulate: &'static [&'static str],
    /// The interpreter.
    program: &'static str,
    /// The script, relative to the workspace root.
    script: &'static str,
    /// Extra arguments of `receive`, from the emulator's printed settings.
    receive_args: fn(&Printed) -> Vec<String>,
    /// Extra arguments of `verify`.
    verify_args: fn() -> Vec<String>,
    /// How long `receive` may take.
    timeout: Duration,
}

/// What `tributary emulate` printed: its own address, the fault proxy's (if any) and the
/// settings of its config snippet.
#[derive(Debug, Default)]
struct Printed {
    direct: String,
    url: String,
    token: String,
    stream: String,
}

const CHECKS: &[Check] = &[
    Check {
        name: "npm eventsource on the Flowdock Event-Stream (retry:, Last-Event-ID, CORS)",
        // Cuts and resets from a fault proxy on most connections, so the client must resume.
        emulate: &[
            "flowdock",
            "--rate",
            "10",
            "--seed",
            "3",
            "--faults",
            "0.7",
            "--transport-faults",
            "cut,cut-after,reset",
        ],
        program: "node",
        script: "outside/flowdock-sse.mjs",
        receive_args: |p| {
            strings(&[
                "--url", &p.url, "--direct", &p.direct, "--token", &p.token, "--flows", FLOWS,
            ])
        },
        verify_args: || strings(&["--flows", FLOWS]),
        timeout: Duration::from_secs(40),
    },
    Check {
        name: "npm flowdock client on the Flowdock JSON stream (--delim crlf)",
        emulate: &["flowdock", "--rate", "10", "--seed", "4", "--delim", "crlf"],
        program: "node",
        script: "outside/flowdock-json.mjs",
        receive_args: |p| strings(&["--url", &p.url, "--token", &p.token, "--flows", FLOWS]),
        verify_args: || strings(&["--flows", FLOWS]),
        timeout: Duration::from_secs(30),
    },
    Check {
        name: "Python websockets on the Multistreamer WebSocket",
        emulate: &["multistreamer", "--rate", "10", "--seed", "5"],
        program: "python3",
        script: "outside/multistreamer_ws.py",
        receive_args: |p| strings(&["--url", &p.url, "--stream", &p.stream, "--token", &p.token]),
        verify_args: Vec::new,
        timeout: Duration::from_secs(40),
    },
];

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// `cargo xtask outside`; `build` builds `tributary` first (`ci` passes false: its test build
/// has just built the binary, with the workspace's features, and a `-p tributary` build would
/// rebuild part of the tree with other features).
pub(crate) fn run_all(build: bool) -> Result<(), String> {
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("xtask: SKIPPING the outside checks ({SKIP_ENV}=1)");
        return Ok(());
    }
    for (tool, why) in [
        ("node", "the npm clients"),
        ("npm", "installing the npm clients"),
        ("python3", "the Python websockets client"),
    ] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return Err(format!(
                "outside checks: `{tool}` is not on PATH (needed for {why}); install it, or set \
                 {SKIP_ENV}=1 to skip these checks"
            ));
        }
    }
    let root = workspace_root();
    if build {
        run("cargo", &["build", "-p", "tributary", "--locked"])?;
    }
    run(
        "npm",
        &["ci", "--prefix", "outside", "--no-audit", "--no-fund"],
    )?;
    run(
        "python3",
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--root-user-action=ignore",
            "--upgrade",
            "--target",
            "outside/.py",
            "-r",
            "outside/requirements.txt",
        ],
    )?;
    let target = target_dir(&root);
    let work = target.join("outside-checks");
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let tributary = target.join("debug").join("tributary");
    if !tributary.is_file() {
        return Err(format!(
            "outside checks: {} is missing; build it with `cargo build -p tributary`",
            tributary.display()
        ));
    }
    let mut failed = Vec::new();
    for (i, check) in CHECKS.iter().enumerate() {
        let started = Instant::now();
        eprintln!("xtask: outside check: {}", check.name);
        match run_check(&root, &tributary, &work.join(format!("{i}")), check) {
            Ok(()) => eprintln!(
                "xtask: outside check passed in {:.1} s: {}",
                started.elapsed().as_secs_f64(),
                check.name
            ),
            Err(e) => {
                eprintln!("xtask: outside check FAILED: {}: {e}", check.name);
                failed.push(format!("{}: {e}", check.name));
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} outside checks failed:\n  {}",
            failed.len(),
            CHECKS.len(),
            failed.join("\n  ")
        ))
    }
}

/// Where cargo builds: `CARGO_TARGET_DIR` (relative to the workspace root) or `target/`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// An emulator process, killed if still running when dropped.
struct Emulator {
    child: Child,
    name: String,
}

impl Emulator {
    /// Stops it with SIGINT (so it writes its recording) and waits for it.
    fn stop(mut self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !sent {
            return Err(format!(
                "could not send SIGINT to the {} emulator",
                self.name
            ));
        }
        let status = wait_timeout(&mut self.child, STOP_TIMEOUT)?
            .ok_or_else(|| format!("the {} emulator did not stop after SIGINT", self.name))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the {} emulator exited with {status}", self.name))
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn run_check(root: &Path, tributary: &Path, dir: &Path, check: &Check) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let record = dir.join("record.jsonl");
    let got = dir.join("received.jsonl");
    let (emulator, printed) = start_emulator(tributary, dir, check.emulate, &record)?;
    let mut receive = strings(&[check.script, "receive"]);
    receive.extend((check.receive_args)(&printed));
    receive.extend(["--out".to_owned(), path_arg(&got)]);
    let received = run_script(root, check.program, &receive, check.timeout, "receive");
    let stopped = emulator.stop();
    received?;
    stopped?;
    let mut verify = strings(&[check.script, "verify"]);
    verify.extend([
        "--got".to_owned(),
        path_arg(&got),
        "--record".to_owned(),
        path_arg(&record),
    ]);
    verify.extend((check.verify_args)());
    run_script(
        root,
        check.program,
        &verify,
        Duration::from_secs(30),
        "verify",
    )
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Starts `tributary emulate ARGS --record FILE` and reads the address and settings it prints.
fn start_emulator(
    tributary: &Path,
    dir: &Path,
    args: &[&str],
    record: &Path,
) -> Result<(Emulator, Printed), String> {
    let name = args.first().copied().unwrap_or("?").to_owned();
    let log = std::fs::File::create(dir.join("emulator.log"))
        .map_err(|e| format!("cannot create the emulator log: {e}"))?;
    let mut child = Command::new(tributary)
        .arg("emulate")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--record"])
        .arg(record)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", tributary.display()))?;
    let stdout = child.stdout.take().ok_or("the emulator has no stdout")?;
    let emulator = Emulator { child, name };
    let (tx, rx) = mpsc::channel();
    // Reads every line (so the pipe never fills) and hands them over.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let mut lines = Vec::new();
    while !snippet_done(&lines) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).map_err(|_| {
            format!(
                "the {} emulator printed no config within {START_TIMEOUT:?} (see {})",
                emulator.name,
                dir.join("emulator.log").display()
            )
        })?;
        lines.push(line);
    }
    let printed = parse_printed(&lines).ok_or_else(|| {
        format!(
            "could not read the {} emulator's address from what it printed: {lines:?}",
            emulator.name
        )
    })?;
    Ok((emulator, printed))
}

/// Whether `lines` hold the whole config snippet (`[[source]]` up to the blank line after it).
fn snippet_done(lines: &[String]) -> bool {
    lines
        .iter()
        .skip_while(|l| l.as_str() != "[[source]]")
        .any(|l| l.trim().is_empty())
}

/// Reads the emulator's own address (the `# ... listening on URL[, behind a fault proxy on
/// URL]` line) and the snippet's `url`, `token` and `stream`; None without both addresses.
fn parse_printed(lines: &[String]) -> Option<Printed> {
    let mut printed = Printed::default();
    for line in lines {
        if let Some(rest) = line.strip_prefix('#') {
            if let Some((_, addrs)) = rest.split_once(" listening on ") {
                printed.direct = addrs.split(',').next().unwrap_or(addrs).trim().to_owned();
            }
        } else if let Some((key, value)) = line.split_once(" = ") {
            let value = value.trim().trim_matches('"').to_owned();
            match key.trim() {
                "url" => printed.url = value,
                "token" => printed.token = value,
                "stream" => printed.stream = value,
                _ => {}
            }
        }
    }
    (!printed.url.is_empty() && !printed.direct.is_empty()).then_some(printed)
}

/// Runs one step of a client script with PYTHONPATH set to the local install, with a timeout.
fn run_script(
    root: &Path,
    program: &str,
    args: &[String],
    timeout: Duration,
    step: &str,
) -> Result<(), String> {
    eprintln!("xtask: $ {program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .current_dir(root)
        .env("PYTHONPATH", root.join("outside").join(".py"))
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start `{program}`: {e}"))?;
    match wait_timeout(&mut child, timeout)? {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!("the client's {step} step failed ({status})")),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "the client's {step} step did not finish within {timeout:?}"
            ))
        }
    }
}

/// Waits for `child` up to `timeout`: its status, or None if it is still running.
fn wait_timeout(
    child: &mut Child,
    timeout: Duration,
) -> Result<Option<std::process::ExitStatus>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("cannot wait for a child process: {e}"))?
        {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn reads_what_emulate_prints_behind_a_proxy() {
        let out = lines(
            "# flowdock emulator listening on http://127.0.0.1:43047, behind a fault proxy on http://127.0.0.1:35085\n\
             # add this to tributary.toml to read it; stop with Ctrl-C\n\
             \n\
             [[source]]\n\
             name = \"flowdock-emulator\"\n\
             service = \"flowdock\"\n\
             token = \"flowdock-token\"\n\
             url = \"http://127.0.0.1:35085\"\n\
             flows = [\"acme/main\", \"acme/ops\"]\n\
             \n",
        );
        assert!(snippet_done(&out));
        assert!(
            !snippet_done(&out[..5]),
            "the blank line before the snippet does not end it"
        );
        let p = parse_printed(&out).expect("parsed");
        assert_eq!(p.direct, "http://127.0.0.1:43047");
        assert_eq!(p.url, "http://127.0.0.1:35085");
        assert_eq!(p.token, "flowdock-token");
    }

    #[test]
    fn reads_the_multistreamer_stream_and_refuses_output_without_an_address() {
        let out = lines(
            "# multistreamer emulator listening on ws://127.0.0.1:39715\n\
             [[source]]\n\
             url = \"ws://127.0.0.1:39715\"\n\
             stream = 21\n\
             token = \"ms-emulator-token\"\n",
        );
        let p = parse_printed(&out).expect("parsed");
        assert_eq!(
            (p.direct.as_str(), p.url.as_str()),
            ("ws://127.0.0.1:39715", "ws://127.0.0.1:39715")
        );
        assert_eq!(
            (p.stream.as_str(), p.token.as_str()),
            ("21", "ms-emulator-token")
        );
        assert!(parse_printed(&out[1..]).is_none(), "no listening line");
    }
}

//! `cargo xtask fuzz <target> --seconds N`: runs a cargo-fuzz target of `fuzz/` on nightly.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The fuzz targets under `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &["sse", "json_lines", "json_seq"];

/// Runs `cargo +nightly fuzz run <target>` in `fuzz/` for `seconds` seconds, installing
/// cargo-fuzz first when it is missing. New corpus entries go to a scratch directory under
/// `fuzz/target/`, so the committed seed corpus `fuzz/corpus/<target>/` only grows by hand;
/// crash inputs land in `fuzz/artifacts/<target>/` (copy them into the corpus once fixed).
pub fn run(target: &str, seconds: u64) -> Result<(), String> {
    if !TARGETS.contains(&target) {
        return Err(format!(
            "unknown fuzz target '{target}'; valid targets: {}",
            TARGETS.join(", ")
        ));
    }
    let fuzz_dir = workspace_root().join("fuzz");
    ensure_cargo_fuzz()?;
    let scratch = fuzz_dir.join("target").join("corpus").join(target);
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let seeds = fuzz_dir.join("corpus").join(target);
    eprintln!(
        "fuzzing {target} for {seconds}s (seeds: {})",
        seeds.display()
    );
    let status = Command::new("cargo")
        .args(["+nightly", "fuzz", "run", target])
        .arg(&scratch)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .current_dir(&fuzz_dir)
        .status()
        .map_err(|e| format!("cannot run `cargo +nightly fuzz`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo +nightly fuzz run {target}` failed ({status}); a crash input is saved under \
             {} (is the nightly toolchain installed? `rustup toolchain install nightly`)",
            fuzz_dir.join("artifacts").join(target).display()
        ))
    }
}

/// Installs cargo-fuzz with `cargo install cargo-fuzz --locked` unless `cargo fuzz` works.
fn ensure_cargo_fuzz() -> Result<(), String> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    eprintln!("cargo-fuzz is not installed; running `cargo install cargo-fuzz --locked`");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .map_err(|e| format!("cannot run `cargo install cargo-fuzz`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo install cargo-fuzz --locked` failed ({status})"
        ))
    }
}

/// The workspace root: the parent of the xtask crate.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

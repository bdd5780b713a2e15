//! `cargo xtask bench [ARGS...]`: runs the stream-frame criterion benchmarks.

use std::path::Path;
use std::process::Command;

/// Runs `cargo bench -p stream-frame`, passing `args` through (e.g. `-- sse/` to filter).
/// The measured table belongs in `docs/performance.md`.
pub fn run(args: &[String]) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."));
    let status = Command::new("cargo")
        .args(["bench", "-p", "stream-frame"])
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run `cargo bench`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo bench -p stream-frame` failed ({status})"))
    }
}

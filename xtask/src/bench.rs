//! `cargo xtask bench [frame | e2e | idle] [ARGS...]`: the benchmarks whose figures belong in
//! `docs/performance.md`.

use crate::run;

/// Runs one benchmark: `frame` (the default: the stream-frame criterion benchmarks), `e2e`
/// (the whole `tributary run` path per transport beside the loopback limit) or `idle` (many
/// idle streams). The remaining arguments go to the benchmark.
pub fn run_bench(args: &[String]) -> Result<(), String> {
    let (which, rest) = match args.first().map(String::as_str) {
        Some("frame") => ("frame", &args[1..]),
        Some("e2e") => ("e2e", &args[1..]),
        Some("idle") => ("idle", &args[1..]),
        _ => ("frame", args),
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let mut cmd: Vec<&str> = match which {
        "frame" => vec!["bench", "--locked", "-p", "stream-frame"],
        // The counting allocator is compiled into the measured binary only here.
        "e2e" => vec![
            "bench",
            "--locked",
            "-p",
            "tributary",
            "--features",
            "count-allocs",
            "--bench",
            "e2e",
        ],
        _ => vec!["bench", "--locked", "-p", "tributary", "--bench", "idle"],
    };
    if which == "frame" {
        cmd.extend(rest);
    } else {
        cmd.push("--");
        cmd.extend(rest);
    }
    run("cargo", &cmd)
}

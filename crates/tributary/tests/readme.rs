//! The README's commands must stay true: its two set-up commands are the ones a newcomer
//! pastes, so this test runs the first (the demo, shortened) in a temporary directory, checks
//! that the second is what CI runs, and that every `tributary` command line in the README
//! names a real subcommand and real flags.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md at the workspace root")
}

/// The shell blocks of one section, in order.
fn shell_blocks(text: &str, heading: &str) -> Vec<String> {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("README has a `{heading}` section"));
    let section = &text[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").expect("closed code block");
        blocks.push(body[..close].trim().to_owned());
        rest = &body[close + 3..];
    }
    blocks
}

#[test]
fn the_two_setup_commands_work() {
    let text = readme();
    let blocks = shell_blocks(&text, "## Try it");
    assert_eq!(blocks.len(), 2, "exactly two set-up commands: {blocks:?}");
    assert_eq!(blocks[0], "cargo run --release -p tributary -- demo");
    assert_eq!(blocks[1], "cargo xtask ci");

    // The first: run what `cargo run ... -- demo` runs, shortened, in an empty folder.
    let args: Vec<&str> = blocks[0]
        .split_once(" -- ")
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(&args)
        .args(["--duration", "5s"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("── summary"),
        "the demo ends with its summary:\n{all}"
    );

    // The second is what CI runs.
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.contains(&blocks[1]),
        ".ci/run runs the README's test command"
    );
    let xtask = std::fs::read_to_string(root().join("xtask/src/main.rs")).unwrap();
    assert!(
        xtask.contains("Some(\"ci\") => ci()"),
        "xtask has the `ci` command"
    );
}

#[test]
fn every_tributary_command_in_the_docs_is_real() {
    let mut lines = Vec::new();
    for file in ["README.md", "docs/user-guide.md"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for line in text.lines() {
            let line = line
                .trim()
                .trim_start_matches('|')
                .trim()
                .trim_start_matches('`');
            if let Some(rest) = line.strip_prefix("tributary ") {
                lines.push((file, rest.split('#').next().unwrap().trim().to_owned()));
            }
        }
    }
    assert!(lines.len() >= 8, "found the documented commands: {lines:?}");
    for (file, line) in lines {
        let sub = line
            .split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches('`');
        let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: `tributary {sub}` is a command"
        );
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in line
            .split(|c: char| c.is_whitespace() || "[]|`".contains(c))
            .filter(|w| w.starts_with("--"))
        {
            assert!(help.contains(flag), "{file}: `tributary {sub}` has {flag}");
        }
    }
}

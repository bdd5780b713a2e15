//! Process tests of bad input in the config: `run` and `check` both exit 2 with a message that
//! names the file, the line and the key, read at most 1 MiB of config (memory stays bounded
//! whatever the file's size), refuse over-long names and empty or ambiguous secrets, and say
//! what a secret may look like.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

/// The commands that read a config and must refuse the same bad input.
const COMMANDS: &[&str] = &["run", "check"];

/// How a secret may be written, as every wrongly typed secret's message must say.
const SECRET_FORMS: &[&str] = &["\"literal\"", "{ env = \"VAR\" }", "{ file = \"path\" }"];

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tributary"));
    c.env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env("TRIB_CFG_TEST_TOKEN", "tok")
        .env_remove("TRIB_CFG_TEST_UNSET")
        .kill_on_drop(true);
    c
}

async fn output(mut cmd: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("tributary finishes in time")
        .expect("tributary starts")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// Runs `command --config path`; the stderr of a run that must exit 2.
async fn refused(command: &str, path: &Path) -> String {
    let mut cmd = bin();
    cmd.args([command, "--config"]).arg(path);
    let out = output(cmd).await;
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{command} {}: exit 2 expected; stderr: {err}",
        path.display()
    );
    assert!(
        out.stdout.is_empty(),
        "{command}: nothing on stdout: {}",
        text(&out.stdout)
    );
    err
}

/// Writes `body` as `name`, and checks that `run` and `check` exit 2 with
/// `tributary: <path>:<line>:` and every one of `needles` in a short message.
async fn case(dir: &Path, name: &str, body: &str, line: usize, needles: &[&str]) {
    let path = write(dir, name, body);
    for command in COMMANDS {
        let err = refused(command, &path).await;
        let prefix = format!("tributary: {}:{line}: ", path.display());
        assert!(
            err.starts_with(&prefix),
            "{command} {name}: the message names file and line ({prefix}): {err}"
        );
        for n in needles {
            assert!(err.contains(n), "{command} {name}: mentions {n}: {err}");
        }
        assert!(
            err.len() < 1024,
            "{command} {name}: the message stays short ({} bytes)",
            err.len()
        );
        assert!(
            !err.contains("untagged enum") && !err.contains("Raw"),
            "{command} {name}: no internal type names: {err}"
        );
    }
}

const CAMPFIRE: &str = "[[source]]\nname = \"ops\"\nservice = \"campfire\"\nroom = 1\n";

#[tokio::test]
async fn an_empty_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    case(
        dir.path(),
        "empty.toml",
        &format!("{CAMPFIRE}token = \"\"\n"),
        5,
        &["`token` of `ops` is empty"],
    )
    .await;
    case(
        dir.path(),
        "blank.toml",
        &format!("{CAMPFIRE}token = \"   \"\n"),
        5,
        &["`token` of `ops` is empty"],
    )
    .await;
    case(
        dir.path(),
        "empty-env.toml",
        &format!("{CAMPFIRE}token = {{ env = \"\" }}\n"),
        5,
        &["`token` of `ops` has an empty `env`"],
    )
    .await;
    case(
        dir.path(),
        "empty-file.toml",
        &format!("{CAMPFIRE}token = {{ file = \"\" }}\n"),
        5,
        &["`token` of `ops` has an empty `file`"],
    )
    .await;
    case(
        dir.path(),
        "empty-table.toml",
        &format!("{CAMPFIRE}token = {{}}\n"),
        5,
        &["`token` of `ops` is an empty table"],
    )
    .await;
    case(
        dir.path(),
        "empty-key.toml",
        "[[target]]\nname = \"notify\"\nservice = \"streamin\"\napi_key = \"\"\n",
        4,
        &["`api_key` of `notify` is empty"],
    )
    .await;
}

#[tokio::test]
async fn a_secret_with_both_env_and_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tok", "from-a-file\n");
    case(
        dir.path(),
        "both.toml",
        &format!("{CAMPFIRE}token = {{ env = \"TRIB_CFG_TEST_TOKEN\", file = \"tok\" }}\n"),
        5,
        &["`token` of `ops` has both `env` and `file`"],
    )
    .await;
    case(
        dir.path(),
        "both-key.toml",
        "[[target]]\nname = \"notify\"\nservice = \"streamin\"\n\napi_key = { file = \"tok\", env = \"TRIB_CFG_TEST_TOKEN\" }\n",
        5,
        &["`api_key` of `notify` has both `env` and `file`"],
    )
    .await;
}

#[tokio::test]
async fn a_wrongly_typed_secret_says_what_a_secret_may_look_like() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("5", "is an integer"),
        ("true", "is a boolean"),
        ("[\"tok\"]", "is an array"),
        ("1979-05-27", "is a datetime"),
        ("{ var = \"X\" }", "has an unknown key `var`"),
        ("{ env = 3 }", "has `env` = integer, not a string"),
        ("{ file = [\"a\"] }", "has `file` = array, not a string"),
    ];
    for (i, (value, says)) in cases.iter().enumerate() {
        let mut needles = vec!["`token` of `ops`", *says];
        needles.extend_from_slice(SECRET_FORMS);
        case(
            dir.path(),
            &format!("typed-{i}.toml"),
            &format!("{CAMPFIRE}token = {value}\n"),
            5,
            &needles,
        )
        .await;
    }
    let mut needles = vec!["`api_key` of `notify` is an integer"];
    needles.extend_from_slice(SECRET_FORMS);
    case(
        dir.path(),
        "typed-key.toml",
        "[[target]]\nname = \"notify\"\nservice = \"streamin\"\napi_key = 42\n",
        4,
        &needles,
    )
    .await;
}

#[tokio::test]
async fn names_have_a_length_limit_and_their_characters_are_said() {
    let dir = tempfile::tempdir().unwrap();
    // 100 000 characters: refused at once, with a short message and a short log.
    let long = "n".repeat(100_000);
    case(
        dir.path(),
        "long-name.toml",
        &format!("\n[[source]]\nname = \"{long}\"\nservice = \"ustream\"\nchannel = 1\n"),
        3,
        &[
            "`name`",
            "too long",
            "at most 64 characters",
            "letters, digits",
        ],
    )
    .await;
    let long_target = "t".repeat(65);
    case(
        dir.path(),
        "long-target.toml",
        &format!(
            "[[target]]\nname = \"{long_target}\"\nservice = \"streamin\"\napi_key = {{ env = \"TRIB_CFG_TEST_TOKEN\" }}\n"
        ),
        2,
        &["`name`", "at most 64 characters"],
    )
    .await;
    case(
        dir.path(),
        "spaced-name.toml",
        "[[source]]\nname = \"my source\"\nservice = \"ustream\"\nchannel = 1\n",
        2,
        &["`name` = \"my source\"", "letters, digits, `-`, `_` or `.`"],
    )
    .await;
    // A long unknown value is repeated only in part.
    let service = "x".repeat(500_000);
    case(
        dir.path(),
        "long-service.toml",
        &format!("[[source]]\nname = \"a\"\nservice = \"{service}\"\n"),
        3,
        &["unknown `service`", "(500000 characters)"],
    )
    .await;
}

#[tokio::test]
async fn a_config_larger_than_1_mib_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    // Two MiB of comments: valid TOML, but no config is that large.
    let big = "# a comment line of thirty-two b\n".repeat(2 * 1024 * 1024 / 33 + 1);
    let path = write(dir.path(), "big.toml", &big);
    for command in COMMANDS {
        let err = refused(command, &path).await;
        assert!(
            err.contains(&path.display().to_string())
                && err.contains("larger than the limit of 1048576 bytes (1 MiB)")
                && err.contains(&format!("{} bytes", big.len())),
            "{command}: names the file, its size and the limit: {err}"
        );
    }
    // Just under the limit is read (no source: check has nothing to try and succeeds).
    let fits = "#".repeat(1024 * 1024 - 1) + "\n";
    let path = write(dir.path(), "fits.toml", &fits);
    let mut cmd = bin();
    cmd.args(["check", "--config"]).arg(&path);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `sh -c 'ulimit -v <KiB>; exec tributary <command> --config <path>'`: the run may use at most
/// 512 MiB of address space, far less than the file (a memory bound that holds on any core
/// count).
#[cfg(target_os = "linux")]
async fn refused_with_bounded_memory(command: &str, path: &Path) -> String {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 524288 && exec \"$0\" \"$1\" --config \"$2\"")
        .arg(env!("CARGO_BIN_EXE_tributary"))
        .arg(command)
        .arg(path)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    let out = output(cmd).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{command}: {err}");
    err
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn memory_stays_bounded_for_a_huge_config_or_a_endless_one() {
    let dir = tempfile::tempdir().unwrap();
    // A sparse 3 GiB file: no disk used, but reading it whole needs 3 GiB.
    let huge = dir.path().join("huge.toml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(3 * 1024 * 1024 * 1024)
        .unwrap();
    for command in COMMANDS {
        let err = refused_with_bounded_memory(command, &huge).await;
        assert!(
            err.contains("huge.toml")
                && err.contains("3221225472 bytes, larger than the limit of 1048576 bytes"),
            "{command}: {err}"
        );
        // An endless stream has no size to check first: reading stops at the limit.
        let err = refused_with_bounded_memory(command, Path::new("/dev/zero")).await;
        assert!(
            err.contains("/dev/zero") && err.contains("larger than the limit of 1048576 bytes"),
            "{command}: {err}"
        );
    }
    // The same bound for a secret file.
    let cfg = write(
        dir.path(),
        "zero-secret.toml",
        &format!("{CAMPFIRE}token = {{ file = \"/dev/zero\" }}\n"),
    );
    for command in COMMANDS {
        let err = refused_with_bounded_memory(command, &cfg).await;
        assert!(
            err.contains("zero-secret.toml:5:")
                && err.contains("`token` of `ops`")
                && err.contains("larger than the limit"),
            "{command}: {err}"
        );
    }
}

#[tokio::test]
async fn type_errors_and_table_mistakes_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    case(
        dir.path(),
        "room.toml",
        "[[source]]\nname = \"a\"\nservice = \"campfire\"\nroom = \"abc\"\ntoken = { env = \"TRIB_CFG_TEST_TOKEN\" }\n",
        4,
        &["`room`", "expected a non-negative integer"],
    )
    .await;
    case(
        dir.path(),
        "backoff.toml",
        &format!("{CAMPFIRE}token = {{ env = \"TRIB_CFG_TEST_TOKEN\" }}\nbackoff = \"fast\"\n"),
        6,
        &["`backoff`", "initial = \"2s\""],
    )
    .await;
    case(
        dir.path(),
        "retries.toml",
        &format!("{CAMPFIRE}token = {{ env = \"TRIB_CFG_TEST_TOKEN\" }}\nmax_retries = -1\n"),
        6,
        &["`max_retries`"],
    )
    .await;
    case(
        dir.path(),
        "single-brackets.toml",
        "# one table, not an array of tables\n[source]\nname = \"a\"\n",
        2,
        &["`source`", "write [[source]], not [source]"],
    )
    .await;
    case(
        dir.path(),
        "state.toml",
        "state_file = 5\n",
        1,
        &["`state_file`", "expected a string"],
    )
    .await;
    case(
        dir.path(),
        "unset.toml",
        &format!("{CAMPFIRE}token = {{ env = \"TRIB_CFG_TEST_UNSET\" }}\n"),
        5,
        &["`token` of `ops`", "TRIB_CFG_TEST_UNSET is not set"],
    )
    .await;
}

//! Reading and checking `tributary.toml`.
//!
//! Every error names the file, the line and the key, and lists the valid choices where there
//! are some. Secrets are resolved here (from an environment variable, a file, or — with a
//! warning — a literal string) and never printed.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_model::{Kind, Secret};

use crate::template::{Template, UnknownPlaceholder};
use serde::Deserialize;
use toml::Spanned;

pub use crate::config_types::*;

mod relay;
mod source;
mod target;

/// The services a `[[source]]` may name.
pub const SOURCE_SERVICES: &[&str] = &["campfire", "flowdock", "multistreamer", "ustream"];
/// The services a `[[target]]` may name.
pub const TARGET_SERVICES: &[&str] = &["streamin"];
/// The largest config file read, in bytes (1 MiB): checked from the file's size before reading
/// and again while reading (a pipe or a device has no size).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// The longest source or target name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// The largest secret file read, in bytes (64 KiB).
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;
/// How a secret may be written, for error messages.
const SECRET_FORMS: &str =
    "a secret is a string \"literal\", { env = \"VAR\" } or { file = \"path\" }";
/// How much of a value from the config an error message repeats, in characters.
const SHOWN_CHARS: usize = 64;

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where cursors are kept.
    pub state_file: PathBuf,
    /// The sources, in file order.
    pub sources: Vec<SourceConfig>,
    /// The write-only targets.
    pub targets: Vec<TargetConfig>,
    /// The relays.
    pub relays: Vec<RelayConfig>,
    /// Non-fatal remarks (literal secrets, ...), to be logged.
    pub warnings: Vec<String>,
}

/// A `[[relay]]` table.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Source names whose events are relayed.
    pub from: Vec<String>,
    /// A target or multistreamer source name.
    pub to: String,
    /// Only these kinds (None: chat kinds — message, emote, paste, upload).
    pub kinds: Option<Vec<Kind>>,
    /// Only events whose text matches this regular expression (compiled, size-bounded).
    pub pattern: Option<regex::Regex>,
    /// How the relayed text is built (`{author}`, `{room}`, `{text}`, `{source}`, `{kind}`).
    pub template: Template,
}

/// A configuration that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error(
        "{path}: the config file is {}larger than the limit of {limit} bytes (1 MiB); is it the right file?",
        match size { Some(n) => format!("{n} bytes, "), None => String::new() }
    )]
    TooLarge {
        /// The file.
        path: String,
        /// Its size, when known before reading.
        size: Option<u64>,
        /// The limit.
        limit: u64,
    },
    /// The file is not valid: syntax, types or meaning.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The 1-based line of the offending key or table.
        line: usize,
        /// What is wrong and what would be valid.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_file: Option<Spanned<String>>,
    #[serde(default)]
    source: Vec<Spanned<RawSource>>,
    #[serde(default)]
    target: Vec<Spanned<RawTarget>>,
    #[serde(default)]
    relay: Vec<Spanned<RawRelay>>,
}

/// A secret as written: checked by [`Cx::secret`], so a wrong shape gets a message that says
/// what a secret may look like.
#[derive(Deserialize)]
#[serde(transparent)]
struct RawSecret(toml::Value);

/// The three ways a secret may be written.
enum SecretForm<'a> {
    Literal(&'a str),
    Env(&'a str),
    File(&'a str),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    initial: Option<Spanned<String>>,
    max: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Option<Spanned<String>>,
    service: Option<Spanned<String>>,
    token: Option<Spanned<RawSecret>>,
    url: Option<Spanned<String>>,
    stall_timeout: Option<Spanned<String>>,
    backoff: Option<Spanned<RawBackoff>>,
    max_retries: Option<Spanned<u32>>,
    max_elapsed: Option<Spanned<String>>,
    max_server_delay: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    // campfire
    room: Option<Spanned<u64>>,
    join: Option<Spanned<bool>>,
    // campfire and flowdock
    api_url: Option<Spanned<String>>,
    // flowdock
    flows: Option<Spanned<Vec<String>>>,
    private: Option<Spanned<bool>>,
    transport: Option<Spanned<String>>,
    active: Option<Spanned<String>>,
    // multistreamer
    stream: Option<Spanned<u64>>,
    // ustream
    channel: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Option<Spanned<String>>,
    service: Option<Spanned<String>>,
    api_key: Option<Spanned<RawSecret>>,
    url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    from: Option<Spanned<Vec<String>>>,
    to: Option<Spanned<String>>,
    kinds: Option<Spanned<Vec<String>>>,
    #[serde(rename = "match")]
    pattern: Option<Spanned<String>>,
    template: Option<Spanned<String>>,
}

/// Reads and checks a config file (at most [`MAX_CONFIG_BYTES`]).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let shown = || path.display().to_string();
    let read_err = |source| ConfigError::Read {
        path: shown(),
        source,
    };
    let too_large = |size| ConfigError::TooLarge {
        path: shown(),
        size,
        limit: MAX_CONFIG_BYTES,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if meta.is_file() && meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large(Some(meta.len())));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_CONFIG_BYTES + 1),
        &mut bytes,
    )
    .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large(None));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        ConfigError::Invalid {
            path: shown(),
            line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
            message: "the config is not UTF-8 text".to_owned(),
        }
    })?;
    parse(&text, path, &|name| std::env::var(name).ok())
}

/// At most [`SHOWN_CHARS`] characters of `s`, for repeating a value in a message.
fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => format!("{}… ({} characters)", &s[..end], s.chars().count()),
        None => s.to_owned(),
    }
}

/// A message from the TOML reader, cut to a sane length (it may repeat a value).
fn short_message(m: &str) -> String {
    const MAX: usize = 300;
    match m.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &m[..end]),
        None => m.to_owned(),
    }
}

/// A message of the TOML reader in the config's own words (no internal type names), cut to a
/// sane length.
fn readable_toml_message(m: &str) -> String {
    let mut m = short_message(m);
    for (from, to) in [
        (
            "struct RawBackoff",
            "a table like { initial = \"2s\", max = \"2m\" }",
        ),
        ("struct RawSource", "a [[source]] table"),
        ("struct RawTarget", "a [[target]] table"),
        ("struct RawRelay", "a [[relay]] table"),
        ("struct RawConfig", "a TOML document"),
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected a sequence", "expected an array"),
        ("invalid type: map", "invalid type: table"),
        ("invalid type: sequence", "invalid type: array"),
    ] {
        m = m.replace(from, to);
    }
    m
}

/// The key whose value starts at `offset`: the last key before `=` on that line (the name of
/// a `[table]` header on a header line).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let before = text.get(start..offset)?;
    let line = text[start..].lines().next().unwrap_or("");
    if line.trim_start().starts_with('[') && !before.contains('=') {
        let name = line
            .trim()
            .trim_start_matches('[')
            .split(']')
            .next()?
            .trim();
        return (!name.is_empty()).then(|| shown(name));
    }
    let lhs = before.trim_end().strip_suffix('=')?;
    let key = lhs.rsplit(['{', ',']).next()?.trim().trim_matches('"');
    (!key.is_empty() && !key.contains('=')).then(|| shown(key))
}

/// Reads at most `limit` bytes of `path` as text; more is an error.
fn read_bounded(path: &Path, limit: u64) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, limit + 1), &mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the limit of {limit} bytes for a secret"),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Checks config text as if read from `path` (relative paths resolve against its folder);
/// `env` looks up environment variables.
pub fn parse(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let cx = Cx {
        text,
        path,
        env,
        base: path.parent().unwrap_or(Path::new(".")),
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| cx.line(s.start)).unwrap_or(1);
        let message = readable_toml_message(e.message().trim_end());
        match e.span().and_then(|s| key_at(text, s.start)) {
            Some(key) if !message.contains(&format!("`{key}`")) => {
                let hint = if ["source", "target", "relay"].contains(&key.as_str())
                    && message.contains("expected an array")
                {
                    format!(" (write [[{key}]], not [{key}])")
                } else {
                    String::new()
                };
                cx.err_at(line, format!("`{key}`: {message}{hint}"))
            }
            _ => cx.err_at(line, message),
        }
    })?;
    let mut warnings = Vec::new();

    let state_file = match &raw.state_file {
        Some(s) => cx.resolve_path(s.get_ref()),
        None => default_state_file(),
    };

    let mut names = HashSet::new();
    let mut sources = Vec::new();
    for table in &raw.source {
        let src = cx.source(table, &mut warnings)?;
        if !names.insert(src.name.clone()) {
            return Err(cx.err(
                table.span(),
                format!(
                    "two sources or targets are named `{}`; names must be unique",
                    src.name
                ),
            ));
        }
        sources.push(src);
    }
    let mut targets = Vec::new();
    for table in &raw.target {
        let t = cx.target(table, &mut warnings)?;
        if !names.insert(t.name.clone()) {
            return Err(cx.err(
                table.span(),
                format!(
                    "two sources or targets are named `{}`; names must be unique",
                    t.name
                ),
            ));
        }
        targets.push(t);
    }
    let mut relays = Vec::new();
    for table in &raw.relay {
        relays.push(cx.relay(table, &sources, &targets)?);
    }
    Ok(Config {
        state_file,
        sources,
        targets,
        relays,
        warnings,
    })
}

/// `$XDG_STATE_HOME/tributary/state.json`, or `~/.local/state/tributary/state.json`.
pub fn default_state_file() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("tributary").join("state.json")
}

struct Cx<'a> {
    text: &'a str,
    path: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    base: &'a Path,
}

impl Cx<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err_at(&self, line: usize, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.display().to_string(),
            line,
            message,
        }
    }

    fn err(&self, span: Range<usize>, message: String) -> ConfigError {
        self.err_at(self.line(span.start), message)
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn duration(&self, v: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(v.get_ref()).map_err(|e| {
            self.err(
                v.span(),
                format!(
                    "`{key}` = \"{}\" is not a duration ({}); write e.g. \"30s\", \"2m\", \"1h 30m\"",
                    shown(v.get_ref()),
                    short_message(&e.to_string())
                ),
            )
        })
    }

    fn url(&self, v: &Spanned<String>, key: &str, schemes: &[&str]) -> Result<String, ConfigError> {
        let s = v.get_ref().trim_end_matches('/');
        let scheme = s.split_once("://").map(|(sch, _)| sch);
        match scheme {
            Some(sch) if schemes.contains(&sch) && s.len() > sch.len() + 3 => Ok(s.to_owned()),
            _ => Err(self.err(
                v.span(),
                format!(
                    "`{key}` = \"{}\" is not a valid URL; it must start with {}",
                    shown(&chat_model::redact_url(v.get_ref())),
                    schemes
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            )),
        }
    }

    fn secret(
        &self,
        v: &Spanned<RawSecret>,
        key: &str,
        owner: &str,
        warnings: &mut Vec<String>,
    ) -> Result<(Secret, Option<PathBuf>), ConfigError> {
        let form = self.secret_form(v, key, owner)?;
        match form {
            SecretForm::Literal(s) => {
                warnings.push(format!(
                    "{}:{}: `{key}` of `{owner}` is written in the config file; prefer {{ env = \"VAR\" }} or {{ file = \"path\" }}",
                    self.path.display(),
                    self.line(v.span().start)
                ));
                Ok((Secret::new(s.to_owned()), None))
            }
            SecretForm::Env(env) => match (self.env)(env) {
                Some(value) if !value.trim().is_empty() => {
                    Ok((Secret::new(value.trim().to_owned()), None))
                }
                Some(_) => Err(self.err(
                    v.span(),
                    format!(
                        "`{key}` of `{owner}`: environment variable {} is empty",
                        shown(env)
                    ),
                )),
                None => Err(self.err(
                    v.span(),
                    format!(
                        "`{key}` of `{owner}`: environment variable {} is not set",
                        shown(env)
                    ),
                )),
            },
            SecretForm::File(file) => {
                let path = self.resolve_path(file);
                let value = read_bounded(&path, MAX_SECRET_FILE_BYTES).map_err(|e| {
                    self.err(
                        v.span(),
                        format!("`{key}` of `{owner}`: cannot read {}: {e}", path.display()),
                    )
                })?;
                let value = value.trim();
                if value.is_empty() {
                    return Err(self.err(
                        v.span(),
                        format!("`{key}` of `{owner}`: {} is empty", path.display()),
                    ));
                }
                Ok((Secret::new(value.to_owned()), Some(path)))
            }
        }
    }

    /// Which of the three forms a secret is written in; anything else (a number, both `env`
    /// and `file`, an empty value) is an error that says what a secret may look like.
    fn secret_form<'v>(
        &self,
        v: &'v Spanned<RawSecret>,
        key: &str,
        owner: &str,
    ) -> Result<SecretForm<'v>, ConfigError> {
        let bad = |what: String| {
            self.err(
                v.span(),
                format!("`{key}` of `{owner}` {what}; {SECRET_FORMS}"),
            )
        };
        match &v.get_ref().0 {
            toml::Value::String(s) if s.trim().is_empty() => Err(bad("is empty".into())),
            toml::Value::String(s) => Ok(SecretForm::Literal(s)),
            toml::Value::Table(t) => {
                if let Some(k) = t.keys().find(|k| *k != "env" && *k != "file") {
                    return Err(bad(format!("has an unknown key `{}`", shown(k))));
                }
                let text = |sub: &str, v: &'v toml::Value| match v {
                    toml::Value::String(s) if s.trim().is_empty() => {
                        Err(bad(format!("has an empty `{sub}`")))
                    }
                    toml::Value::String(s) => Ok(s.as_str()),
                    other => Err(bad(format!(
                        "has `{sub}` = {}, not a string",
                        other.type_str()
                    ))),
                };
                match (t.get("env"), t.get("file")) {
                    (Some(_), Some(_)) => {
                        Err(bad("has both `env` and `file`; give exactly one".into()))
                    }
                    (Some(e), None) => Ok(SecretForm::Env(text("env", e)?)),
                    (None, Some(f)) => Ok(SecretForm::File(text("file", f)?)),
                    (None, None) => Err(bad("is an empty table".into())),
                }
            }
            other => Err(bad(format!(
                "is {} {}",
                article(other.type_str()),
                other.type_str()
            ))),
        }
    }

    fn name(
        &self,
        v: &Option<Spanned<String>>,
        span: Range<usize>,
        what: &str,
    ) -> Result<String, ConfigError> {
        let Some(name) = v else {
            return Err(self.err(span, format!("this [[{what}]] has no `name`")));
        };
        let n = name.get_ref();
        let len = n.chars().count();
        if len > MAX_NAME_CHARS {
            return Err(self.err(
                name.span(),
                format!(
                    "`name` = \"{}\" is too long: at most {MAX_NAME_CHARS} characters (letters, digits, `-`, `_` or `.`)",
                    shown(n)
                ),
            ));
        }
        if n.is_empty() || !n.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c)) {
            return Err(self.err(
                name.span(),
                format!(
                    "`name` = \"{}\": use letters, digits, `-`, `_` or `.` (at most {MAX_NAME_CHARS})",
                    shown(n)
                ),
            ));
        }
        Ok(n.clone())
    }
}

/// "a" or "an" before a TOML type name.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "CAMPFIRE_TOKEN" => Some("tok".into()),
            "EMPTY" => Some("".into()),
            _ => None,
        }
    }

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("/etc/tributary.toml"), &env)
    }

    fn err(text: &str) -> String {
        parse_str(text).unwrap_err().to_string()
    }

    const FULL: &str = r#"
state_file = "state.json"

[[source]]
name = "ops"
service = "campfire"
token = { env = "CAMPFIRE_TOKEN" }
url = "https://streaming.campfirenow.com/"
stall_timeout = "30s"
backoff = { initial = "2s", max = "2m" }
max_retries = 10
room = 111
api_url = "https://example.campfirenow.com"

[[source]]
name = "flows"
service = "flowdock"
token = "literal-token"
flows = ["acme/main", "acme/ops"]
transport = "json"
active = "idle"

[[source]]
name = "live"
service = "multistreamer"
token = { env = "CAMPFIRE_TOKEN" }
url = "wss://ms.example.com"
stream = 21

[[source]]
name = "social"
service = "ustream"
channel = 1234

[[target]]
name = "notify"
service = "streamin"
api_key = { env = "CAMPFIRE_TOKEN" }

[[relay]]
from = ["flows", "ops"]
to = "notify"
kinds = ["message", "emote"]
match = "deploy|outage"
template = "{author} in {room}: {text}"
"#;

    #[test]
    fn full_config_reads() {
        let c = parse_str(FULL).unwrap();
        assert_eq!(c.state_file, PathBuf::from("/etc/state.json"));
        assert_eq!(c.sources.len(), 4);
        let ops = &c.sources[0];
        assert_eq!(
            ops.common.url.as_deref(),
            Some("https://streaming.campfirenow.com")
        );
        assert_eq!(ops.common.stall_timeout, Some(Duration::from_secs(30)));
        assert_eq!(ops.common.backoff_max, Some(Duration::from_secs(120)));
        assert_eq!(ops.common.max_retries, Some(10));
        match &ops.kind {
            SourceKind::Campfire(c) => {
                assert_eq!(c.room, 111);
                assert_eq!(c.token.expose(), "tok");
            }
            other => panic!("{other:?}"),
        }
        match &c.sources[1].kind {
            SourceKind::Flowdock(f) => {
                assert_eq!(f.transport, flowdock::Transport::Json);
                assert_eq!(f.flows, ["acme/main", "acme/ops"]);
                assert_eq!(f.active, Some(flowdock::Active::Idle));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.warnings.len(), 1, "literal token warns: {:?}", c.warnings);
        assert!(
            c.warnings[0].contains("/etc/tributary.toml:18:"),
            "{}",
            c.warnings[0]
        );
        assert!(!c.warnings[0].contains("literal-token"));
        assert_eq!(c.relays.len(), 1);
        assert_eq!(
            c.relays[0].kinds.as_deref(),
            Some(&[Kind::Message, Kind::Emote][..])
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = err("[[source]]\nname = \"a\"\nservice = \"irc\"\n");
        assert!(e.starts_with("/etc/tributary.toml:3:"), "{e}");
        assert!(e.contains("unknown `service` = \"irc\""), "{e}");
        assert!(
            e.contains("campfire, flowdock, multistreamer, ustream"),
            "{e}"
        );

        let e = err(
            "[[source]]\nname = \"a\"\nservice = \"campfire\"\ntoken = { env = \"CAMPFIRE_TOKEN\" }\n",
        );
        assert!(e.contains(":1:") && e.contains("needs `room`"), "{e}");

        let e = err(
            "[[source]]\nname = \"a\"\nservice = \"campfire\"\nroom = 1\ntoken = { env = \"NOPE\" }\n",
        );
        assert!(e.contains(":5:") && e.contains("NOPE is not set"), "{e}");

        let e = err(
            "[[source]]\nname = \"a\"\nservice = \"campfire\"\nroom = 1\ntoken = { env = \"EMPTY\" }\n",
        );
        assert!(e.contains("EMPTY is empty"), "{e}");

        let e = err(
            "[[source]]\nname = \"a\"\nservice = \"ustream\"\nchannel = 1\n\n[[source]]\nname = \"a\"\nservice = \"ustream\"\nchannel = 2\n",
        );
        assert!(
            e.contains(":6:") && e.contains("two sources or targets are named `a`"),
            "{e}"
        );

        let e = err("[[source]]\nname = \"a\"\nservice = \"ustream\"\nchannel = 1\nroom = 5\n");
        assert!(
            e.contains(":5:") && e.contains("`room` is not a ustream setting"),
            "{e}"
        );

        let e = err(
            "[[source]]\nname = \"a\"\nservice = \"ustream\"\nchannel = 1\nstall_timeout = \"soon\"\n",
        );
        assert!(e.contains(":5:") && e.contains("not a duration"), "{e}");

        let e = err("[[source]]\nname = \"a\"\nservice = \"ustream\"\nchannnel = 1\n");
        assert!(e.contains(":4:") && e.contains("channnel"), "{e}");

        let e = err(
            "[[source]]\nname = \"a\"\nservice = \"flowdock\"\ntoken = { env = \"CAMPFIRE_TOKEN\" }\n",
        );
        assert!(e.contains("needs `flows"), "{e}");

        let e = err(
            "[[source]]\nname = \"m\"\nservice = \"multistreamer\"\ntoken = { env = \"CAMPFIRE_TOKEN\" }\nurl = \"http://x?token=abc\"\nstream = 1\n",
        );
        assert!(e.contains("ws://") && !e.contains("abc"), "{e}");

        let e = err("[[source]]\nname = \"a\"\nservice = \"streamin\"\n");
        assert!(e.contains("[[target]]"), "{e}");

        let e = err(
            "[[target]]\nname = \"t\"\nservice = \"streamin\"\napi_key = { file = \"/nonexistent/key\" }\n",
        );
        assert!(e.contains(":4:") && e.contains("/nonexistent/key"), "{e}");
    }

    #[test]
    fn flowdock_transport_and_active_are_checked_where_written() {
        let table = |extra: &str| {
            format!(
                "[[source]]\nname = \"f\"\nservice = \"flowdock\"\ntoken = \"t\"\nflows = [\"a/b\"]\n{extra}"
            )
        };
        let e = err(&table("active = \"yes\"\n"));
        assert!(
            e.contains(":6:") && e.contains("unknown `active` = \"yes\"") && e.contains("idle"),
            "{e}"
        );
        let e = err(&table("transport = \"xml\"\n"));
        assert!(e.contains(":6:") && e.contains("valid: sse, json"), "{e}");
        let ok = parse_str(&table("active = \"true\"\n")).unwrap();
        match &ok.sources[0].kind {
            SourceKind::Flowdock(f) => {
                assert_eq!(f.active, Some(flowdock::Active::True));
                assert_eq!(f.transport, flowdock::Transport::EventStream);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn relay_errors() {
        let base = "[[source]]\nname = \"s\"\nservice = \"ustream\"\nchannel = 1\n";
        let e = err(&format!("{base}[[relay]]\nfrom = [\"x\"]\nto = \"s\"\n"));
        assert!(e.contains("no source is named `x`"), "{e}");
        let e = err(&format!("{base}[[relay]]\nfrom = [\"s\"]\nto = \"s\"\n"));
        assert!(
            e.contains("neither a target nor a multistreamer source"),
            "{e}"
        );
        let full = FULL.replace(
            "template = \"{author} in {room}: {text}\"",
            "template = \"{who}\"",
        );
        assert!(err(&full).contains("unknown placeholder {who}"));
        let full = FULL.replace("match = \"deploy|outage\"", "match = \"(\"");
        assert!(err(&full).contains("not a valid regular expression"));
        let full = FULL.replace("kinds = [\"message\", \"emote\"]", "kinds = [\"shout\"]");
        assert!(err(&full).contains("unknown kind \"shout\""));
    }

    #[test]
    fn names_of_64_characters_are_accepted_and_65_refused() {
        let table =
            |n: &str| format!("[[source]]\nname = \"{n}\"\nservice = \"ustream\"\nchannel = 1\n");
        let ok = "a".repeat(MAX_NAME_CHARS - 1) + "é";
        assert_eq!(parse_str(&table(&ok)).unwrap().sources[0].name, ok);
        let e = err(&table(&"a".repeat(MAX_NAME_CHARS + 1)));
        assert!(
            e.contains(":2:") && e.contains("at most 64 characters"),
            "{e}"
        );
    }

    #[test]
    fn secrets_have_one_of_three_forms() {
        let with = |v: &str| {
            format!("[[source]]\nname = \"a\"\nservice = \"campfire\"\nroom = 1\ntoken = {v}\n")
        };
        assert!(parse_str(&with("{ env = \"CAMPFIRE_TOKEN\" }")).is_ok());
        assert!(parse_str(&with("\"lit\"")).is_ok());
        for (v, says) in [
            ("\"\"", "is empty"),
            (
                "{ env = \"CAMPFIRE_TOKEN\", file = \"x\" }",
                "both `env` and `file`",
            ),
            ("5.5", "is a float"),
            (
                "{ env = \"CAMPFIRE_TOKEN\", extra = 1 }",
                "unknown key `extra`",
            ),
        ] {
            let e = err(&with(v));
            assert!(e.contains(":5:") && e.contains(says), "{v}: {e}");
            assert!(e.contains(SECRET_FORMS), "{v}: {e}");
        }
    }

    #[test]
    fn shown_cuts_long_values_and_key_at_finds_the_key() {
        assert_eq!(shown("short"), "short");
        let long = "x".repeat(100);
        assert_eq!(
            shown(&long),
            format!("{}… (100 characters)", "x".repeat(64))
        );
        let text = "a = 1\nbackoff = { initial = 5 }\n[source]\n";
        assert_eq!(key_at(text, 4).as_deref(), Some("a"));
        assert_eq!(
            key_at(text, text.find('5').unwrap()).as_deref(),
            Some("initial")
        );
        assert_eq!(
            key_at(text, text.find("[source]").unwrap()).as_deref(),
            Some("source")
        );
        assert_eq!(key_at(text, 0), None);
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let e = err("[[source]]\nname = \"a\nservice = 1\n");
        assert!(e.starts_with("/etc/tributary.toml:2:"), "{e}");
    }

    #[test]
    fn token_file_is_read_and_relative_to_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "secret-value\n").unwrap();
        let cfg = dir.path().join("t.toml");
        let text = "[[source]]\nname = \"a\"\nservice = \"campfire\"\nroom = 1\ntoken = { file = \"tok\" }\n";
        let c = parse(text, &cfg, &env).unwrap();
        match &c.sources[0].kind {
            SourceKind::Campfire(c) => assert_eq!(c.token.expose(), "secret-value"),
            other => panic!("{other:?}"),
        }
    }
}

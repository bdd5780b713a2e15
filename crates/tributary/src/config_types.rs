//! The validated configuration, as the rest of the binary sees it.
//!
//! `config.rs` reads and checks the TOML file; everything here is already resolved: secrets
//! read from their env var or file, durations parsed, paths made absolute.

use std::path::PathBuf;
use std::time::Duration;

use chat_model::Secret;

/// Settings every source accepts.
#[derive(Clone, Debug, Default)]
pub struct Common {
    /// Service base URL (None: the real service's).
    pub url: Option<String>,
    /// Silence longer than this replaces the connection.
    pub stall_timeout: Option<Duration>,
    /// First backoff delay.
    pub backoff_initial: Option<Duration>,
    /// Backoff cap.
    pub backoff_max: Option<Duration>,
    /// Give up after this many consecutive failures.
    pub max_retries: Option<u32>,
    /// Give up after failing this long.
    pub max_elapsed: Option<Duration>,
    /// The longest `Retry-After` / SSE `retry:` obeyed (never below the backoff cap).
    pub max_server_delay: Option<Duration>,
    /// An extra trusted CA certificate (PEM) for self-hosted servers and tests.
    pub ca_file: Option<PathBuf>,
    /// Keep each event's original wire object in `raw` (set by `--raw`, not by the file;
    /// building it costs time on every event, so it is off unless asked for).
    pub keep_raw: bool,
}

/// A `[[source]]` table.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Unique name; the `source` field of its events.
    pub name: String,
    /// Keys every source accepts.
    pub common: Common,
    /// The service and its own keys.
    pub kind: SourceKind,
}

/// The service-specific part of a source.
#[derive(Clone, Debug)]
pub enum SourceKind {
    /// `service = "campfire"`.
    Campfire(CampfireConfig),
    /// `service = "flowdock"`.
    Flowdock(FlowdockConfig),
    /// `service = "multistreamer"`.
    Multistreamer(MultistreamerConfig),
    /// `service = "ustream"`.
    Ustream(UstreamConfig),
}

/// Campfire keys.
#[derive(Clone, Debug)]
pub struct CampfireConfig {
    /// API token (basic auth `token:x`).
    pub token: Secret,
    /// Room id.
    pub room: u64,
    /// REST API base for join and backfill (None: derived from `url` or the real service).
    pub api_url: Option<String>,
    /// Join the room over REST before streaming.
    pub join: bool,
}

/// Flowdock keys.
#[derive(Clone, Debug)]
pub struct FlowdockConfig {
    /// Access token (basic auth user, empty password).
    pub token: Secret,
    /// Flows as `org/flow` (or flow ids).
    pub flows: Vec<String>,
    /// Also stream private messages (`user=1`).
    pub private: bool,
    /// Which transport.
    pub transport: flowdock::Transport,
    /// `active=true|idle`, when set.
    pub active: Option<flowdock::Active>,
    /// REST API base for backfill (None: derived from `url` or the real service).
    pub api_url: Option<String>,
}

/// Multistreamer keys.
#[derive(Clone, Debug)]
pub struct MultistreamerConfig {
    /// Access token (sent in the URL query, never logged).
    pub token: Secret,
    /// `ws://host` or `wss://host` (required).
    pub url: String,
    /// Stream id.
    pub stream: u64,
}

/// Ustream keys.
#[derive(Clone, Debug)]
pub struct UstreamConfig {
    /// Channel id.
    pub channel: u64,
}

/// A `[[target]]` table (write-only endpoint).
#[derive(Clone, Debug)]
pub struct TargetConfig {
    /// Unique name.
    pub name: String,
    /// The service and its keys.
    pub kind: TargetKind,
}

/// The service of a target.
#[derive(Clone, Debug)]
pub enum TargetKind {
    /// `service = "streamin"`.
    Streamin(StreaminTargetConfig),
}

/// StreamIn target keys.
#[derive(Clone, Debug)]
pub struct StreaminTargetConfig {
    /// The source API key.
    pub api_key: Secret,
    /// Where the key came from when it was `{ file = ... }` (rewritten on refresh).
    pub api_key_file: Option<PathBuf>,
    /// API base (None: the real service's).
    pub url: Option<String>,
}

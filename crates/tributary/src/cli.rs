//! Command-line pieces shared by every subcommand: the `--config` argument, its default path
//! and the value parsers.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The config file used when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "tributary.toml";

/// Where `--config` points by default.
pub fn default_config_path() -> PathBuf {
    PathBuf::from(DEFAULT_CONFIG)
}

/// The `--config FILE` argument, flattened into every subcommand that reads the config.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArg {
    /// The config file.
    #[arg(long = "config", short = 'c', id = "config", value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub path: PathBuf,
}

impl ConfigArg {
    /// The config file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when `--config` was left at its default and that file does not exist.
    pub fn is_missing_default(&self) -> bool {
        !self.path.exists() && self.path == default_config_path()
    }
}

/// Parses a humantime duration for clap.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e}); e.g. 10s, 5m"))
}

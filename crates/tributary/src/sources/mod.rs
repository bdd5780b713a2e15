//! Adapters that let the supervisor drive each protocol client.

pub mod campfire;
pub mod flowdock;
pub mod multistreamer;
pub mod ustream;

use supervisor::{Overrides, Supervisor};

use crate::config_types::{Common, SourceConfig, SourceKind};

/// The supervisor overrides a source's common keys ask for.
pub fn overrides(common: &Common) -> Overrides {
    Overrides {
        backoff_initial: common.backoff_initial,
        backoff_max: common.backoff_max,
        stall_timeout: common.stall_timeout,
        max_retries: common.max_retries,
        max_elapsed: common.max_elapsed,
    }
}

/// Builds every configured source and adds it to the supervisor.
pub fn add_all(sup: &mut Supervisor, configs: &[SourceConfig]) -> Result<(), String> {
    for cfg in configs {
        let name = cfg.name.as_str();
        let o = overrides(&cfg.common);
        let added = match &cfg.kind {
            SourceKind::Campfire(c) => sup.add(campfire::build(name, &cfg.common, c)?, o),
            SourceKind::Flowdock(c) => sup.add(flowdock::build(name, &cfg.common, c)?, o),
            SourceKind::Multistreamer(c) => sup.add(multistreamer::build(name, &cfg.common, c)?, o),
            SourceKind::Ustream(c) => sup.add(ustream::build(name, &cfg.common, c)?, o),
        };
        added.map_err(|e| format!("source `{name}`: {e}"))?;
    }
    Ok(())
}

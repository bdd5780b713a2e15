//! Adapters that let the supervisor drive each protocol client.

pub mod campfire;
pub mod flowdock;
pub mod multistreamer;
pub mod ustream;

use std::time::Duration;

use chat_model::Cursor;
use serde::de::DeserializeOwned;
use supervisor::{Backoff, Overrides, Policy, Resume, Supervisor};

use crate::config_types::{Common, SourceConfig, SourceKind};
use crate::tls::Tls;

/// The supervisor overrides a source's common keys ask for.
pub fn overrides(common: &Common) -> Overrides {
    Overrides {
        backoff_initial: common.backoff_initial,
        backoff_max: common.backoff_max,
        stall_timeout: common.stall_timeout,
        max_retries: common.max_retries,
        max_elapsed: common.max_elapsed,
        max_server_delay: common.max_server_delay,
    }
}

/// Builds every configured source and adds it to the supervisor.
pub fn add_all(
    sup: &mut Supervisor,
    configs: &[SourceConfig],
    tls: &mut Tls,
) -> Result<(), String> {
    for cfg in configs {
        let name = cfg.name.as_str();
        let o = overrides(&cfg.common);
        let added = match &cfg.kind {
            SourceKind::Campfire(c) => sup.add(campfire::build(name, &cfg.common, c, tls)?, o),
            SourceKind::Flowdock(c) => sup.add(flowdock::build(name, &cfg.common, c, tls)?, o),
            SourceKind::Multistreamer(c) => {
                sup.add(multistreamer::build(name, &cfg.common, c, tls)?, o)
            }
            SourceKind::Ustream(c) => sup.add(ustream::build(name, &cfg.common, c, tls)?, o),
        };
        added.map_err(|e| format!("source `{name}`: {e}"))?;
    }
    Ok(())
}

/// A service's default policy: backoff from `initial` to `max`, no retry or time limit.
pub fn policy(initial: Duration, max: Duration, stall_timeout: Duration, resume: Resume) -> Policy {
    Policy {
        backoff: Backoff {
            initial,
            max,
            ..Backoff::default()
        },
        stall_timeout,
        resume,
        max_retries: None,
        max_elapsed: None,
        prompt_delay: Default::default(),
        max_server_delay: supervisor::DEFAULT_MAX_SERVER_DELAY,
    }
}

/// The saved cursor as the protocol's typed cursor; one of another shape is logged (naming
/// the source and what happens instead, `fresh`) and ignored, never fatal.
pub fn typed_resume<T: DeserializeOwned>(
    source: &str,
    service: &str,
    fresh: &str,
    resume: Option<Cursor>,
) -> Option<T> {
    let c = resume?;
    match c.to_typed() {
        Ok(typed) => Some(typed),
        Err(e) => {
            tracing::warn!(
                source = %source,
                cursor = %c.as_json(),
                error = %e,
                "ignoring a saved cursor that is not a {service} cursor; {fresh}"
            );
            None
        }
    }
}

/// The shared HTTP client trusting the source's `ca_file`; the error names the source and file.
pub fn http_client(name: &str, common: &Common, tls: &mut Tls) -> Result<reqwest::Client, String> {
    tls.http_client(common.ca_file.as_deref())
        .map_err(|e| format!("source `{name}`: {e}"))
}

/// Checks that `build` refuses a missing and a junk `ca_file` with errors naming the file
/// (and, for junk, the certificate).
#[cfg(test)]
pub(crate) fn assert_ca_file_errors<S: std::fmt::Debug>(
    build: impl Fn(&Common) -> Result<S, String>,
) {
    let dir = tempfile::tempdir().unwrap();
    let common = Common {
        ca_file: Some(dir.path().join("missing.pem")),
        ..Common::default()
    };
    let e = build(&common).unwrap_err();
    assert!(e.contains("missing.pem"), "{e}");

    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let common = Common {
        ca_file: Some(junk),
        ..Common::default()
    };
    let e = build(&common).unwrap_err();
    assert!(e.contains("certificate") && e.contains("junk.pem"), "{e}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Mine {
        last: u64,
    }

    #[test]
    fn typed_resume_keeps_its_own_cursors_and_drops_others() {
        let none: Option<Mine> = typed_resume("s", "Test", "starting fresh", None);
        assert_eq!(none, None);
        let mine = Cursor::from_json(serde_json::json!({"last": 7}));
        let got: Option<Mine> = typed_resume("s", "Test", "starting fresh", Some(mine));
        assert_eq!(got, Some(Mine { last: 7 }));
        let other = Cursor::from_json(serde_json::json!("not ours"));
        let got: Option<Mine> = typed_resume("s", "Test", "starting fresh", Some(other));
        assert_eq!(got, None);
    }

    #[test]
    fn max_server_delay_is_read_and_passed_to_the_supervisor() {
        let parse = |extra: &str| {
            crate::config::parse(
                &format!("[[source]]\nname = \"s\"\nservice = \"ustream\"\nchannel = 1\n{extra}"),
                std::path::Path::new("/etc/t.toml"),
                &|_| None,
            )
        };
        let cfg = parse("max_server_delay = \"90s\"\n").unwrap();
        let o = overrides(&cfg.sources[0].common);
        assert_eq!(o.max_server_delay, Some(Duration::from_secs(90)));
        let p = Policy::default().with_overrides(&o);
        assert_eq!(p.max_server_delay, Duration::from_secs(90));
        let cfg = parse("").unwrap();
        assert_eq!(overrides(&cfg.sources[0].common).max_server_delay, None);
        let e = parse("max_server_delay = \"later\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:5:") && e.contains("max_server_delay"),
            "{e}"
        );
    }
}

//! The writable endpoints relays send to — StreamIn targets and multistreamer sources — and
//! the StreamIn client `run`, `send` and `check` build.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, SourceKind, StreaminTargetConfig, TargetKind};
use crate::relay::{SendFailure, SendFuture, Sink};
use crate::sources;
use crate::tls::Tls;

/// How long one multistreamer send may wait for the server's echo.
const MULTISTREAMER_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends to a StreamIn target (markdown converted to wiki markup, 1000 characters at most).
pub struct StreaminSink {
    client: streamin::Client,
}

impl Sink for StreaminSink {
    /// Converts markdown to StreamIn's wiki markup and cuts it to 1000 characters.
    fn fit(&self, text: &str) -> (String, bool) {
        streamin::fit_markdown(text, streamin::MAX_CONTENT_CHARS)
    }

    fn send<'a>(&'a self, text: &'a str, external_id: &'a str) -> SendFuture<'a> {
        Box::pin(async move {
            let id: String = external_id
                .chars()
                .take(streamin::MAX_EXTERNAL_ID_CHARS)
                .collect();
            // `fit` already produced wiki markup.
            let msg = streamin::NewMessage::wiki(text.to_owned()).with_external_id(id);
            match self.client.new_message(&msg).await {
                Ok(info) => Ok(format!(
                    "StreamIn message {} created at {}",
                    info.external_id, info.created_at
                )),
                Err(e) => Err(SendFailure {
                    retryable: e.is_retryable(),
                    message: e.to_string(),
                }),
            }
        })
    }
}

/// Sends through a multistreamer source's stream (one connection per message).
pub struct MultistreamerSink {
    options: multistreamer::ConnectOptions,
}

impl Sink for MultistreamerSink {
    fn send<'a>(&'a self, text: &'a str, _external_id: &'a str) -> SendFuture<'a> {
        Box::pin(async move {
            let req = multistreamer::SendRequest {
                text: text.to_owned(),
                ..Default::default()
            };
            match multistreamer::send_once(&self.options, &req, MULTISTREAMER_TIMEOUT).await {
                Ok(c) => Ok(c.summary()),
                Err(e) => Err(SendFailure {
                    retryable: e.is_retryable(),
                    message: e.to_string(),
                }),
            }
        })
    }
}

/// A sink for every name a relay sends to.
pub fn build_sinks(cfg: &Config, tls: &mut Tls) -> Result<HashMap<String, Arc<dyn Sink>>, String> {
    let mut sinks: HashMap<String, Arc<dyn Sink>> = HashMap::new();
    for relay in &cfg.relays {
        if sinks.contains_key(&relay.to) {
            continue;
        }
        if let Some(t) = cfg.targets.iter().find(|t| t.name == relay.to) {
            let TargetKind::Streamin(st) = &t.kind;
            let client = streamin_client(st).map_err(|e| format!("target `{}`: {e}", t.name))?;
            sinks.insert(t.name.clone(), Arc::new(StreaminSink { client }));
        } else if let Some(s) = cfg.sources.iter().find(|s| s.name == relay.to) {
            if let SourceKind::Multistreamer(ms) = &s.kind {
                let options = sources::multistreamer::connect_options(&s.name, &s.common, ms, tls)?;
                sinks.insert(s.name.clone(), Arc::new(MultistreamerSink { options }));
            }
        }
    }
    Ok(sinks)
}

/// A StreamIn client for a target.
pub fn streamin_client(t: &StreaminTargetConfig) -> Result<streamin::Client, streamin::Error> {
    streamin::Client::new(
        t.url
            .clone()
            .unwrap_or_else(|| streamin::DEFAULT_BASE_URL.to_owned()),
        t.api_key.clone(),
    )
}

//! `--metrics ADDR`: Prometheus text on `/metrics` and a health check on `/healthz`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use supervisor::{SourceState, SourceStats};

/// Per-relay counters the metrics page reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// The relay's label (`from→to`).
    pub name: String,
    /// Messages sent and confirmed.
    pub sent: u64,
    /// Sends that failed for good (after retries) or were refused.
    pub failed: u64,
}

/// Where the metrics page reads its numbers on each scrape.
pub trait StatsProvider: Send + Sync + 'static {
    /// Current per-source statistics.
    fn sources(&self) -> Vec<SourceStats>;
    /// Current per-relay statistics.
    fn relays(&self) -> Vec<RelayStats>;
}

#[derive(Clone)]
struct Shared(Arc<dyn StatsProvider>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsProvider")
    }
}

/// A counter's name, help text and how to read it from an item's stats.
type Counter<T> = (&'static str, &'static str, fn(&T) -> u64);

const STATES: &[(SourceState, &str)] = &[
    (SourceState::Idle, "idle"),
    (SourceState::Connecting, "connecting"),
    (SourceState::Connected, "connected"),
    (SourceState::BackingOff, "backing_off"),
    (SourceState::GaveUp, "gave_up"),
    (SourceState::Failed, "failed"),
    (SourceState::Stopped, "stopped"),
];

impl Collector for Shared {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let sources = self.0.sources();
        let now = chrono::Utc::now();
        {
            let mut m = encoder.encode_descriptor(
                "tributary_source_state",
                "Connection state of each source (1 for the current state)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for s in &sources {
                for (state, label) in STATES {
                    let labels = [("source", s.name.as_str()), ("state", *label)];
                    let g = ConstGauge::new(i64::from(s.state == *state));
                    g.encode(m.encode_family(&labels)?)?;
                }
            }
        }
        let counters: [Counter<SourceStats>; 5] = [
            (
                "tributary_events_delivered",
                "Events delivered to the output",
                |s| s.delivered,
            ),
            ("tributary_reconnects", "Successful reconnections", |s| {
                s.reconnects
            }),
            (
                "tributary_gaps",
                "Gap events emitted (reconnects without replay)",
                |s| s.gaps,
            ),
            (
                "tributary_duplicates_suppressed",
                "Events dropped as duplicates",
                |s| s.duplicates,
            ),
            (
                "tributary_malformed_frames",
                "Malformed or oversize frames skipped",
                |s| s.malformed,
            ),
        ];
        encode_counters(&mut encoder, &counters, &sources, |s| {
            vec![("source", s.name.as_str()), ("service", s.service.as_str())]
        })?;
        {
            let mut m = encoder.encode_descriptor(
                "tributary_last_event_age_seconds",
                "Seconds since the source last delivered an event (absent before the first)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for s in &sources {
                if let Some(at) = s.last_event_at {
                    let age = (now - at).num_milliseconds().max(0) as f64 / 1000.0;
                    let labels = [("source", s.name.as_str())];
                    ConstGauge::new(age).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        let relays = self.0.relays();
        let relay_counters: [Counter<RelayStats>; 2] = [
            (
                "tributary_relay_sent",
                "Messages a relay sent and the target confirmed",
                |r| r.sent,
            ),
            (
                "tributary_relay_failed",
                "Messages a relay could not send",
                |r| r.failed,
            ),
        ];
        encode_counters(&mut encoder, &relay_counters, &relays, |r| {
            vec![("relay", r.name.as_str())]
        })?;
        Ok(())
    }
}

/// Encodes one counter family per `(name, help, read)` entry, one sample per item.
fn encode_counters<'a, T>(
    encoder: &mut DescriptorEncoder<'_>,
    counters: &[Counter<T>],
    items: &'a [T],
    labels: impl Fn(&'a T) -> Vec<(&'static str, &'a str)>,
) -> Result<(), std::fmt::Error> {
    for (name, help, read) in counters {
        let mut m = encoder.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for item in items {
            ConstCounter::new(read(item)).encode(m.encode_family(&labels(item))?)?;
        }
    }
    Ok(())
}

/// Renders the metrics page once (Prometheus / OpenMetrics text).
pub fn render(provider: Arc<dyn StatsProvider>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Shared(provider)));
    let mut out = String::new();
    // Encoding into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Whether every source is connected or still retrying within its budget.
pub fn healthy(sources: &[SourceStats]) -> bool {
    !sources.is_empty() && sources.iter().all(|s| !s.state.has_failed())
}

async fn metrics(State(p): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render(p.0.clone()),
    )
}

async fn healthz(State(p): State<Shared>) -> impl IntoResponse {
    let sources = p.0.sources();
    let body: String = sources
        .iter()
        .map(|s| format!("{} {:?}\n", s.name, s.state))
        .collect();
    if healthy(&sources) {
        (StatusCode::OK, body)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    provider: Arc<dyn StatsProvider>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Shared(provider));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics server failed");
        }
    });
    Ok((local, task))
}

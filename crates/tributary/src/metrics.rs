//! `--metrics ADDR`: Prometheus text on `/metrics` and a health check on `/healthz`.
//!
//! `/healthz` answers 200 while every source is connected or has been disconnected for at
//! most the grace period (`--health-grace`, default [`DEFAULT_HEALTH_GRACE`]), and 503 — with
//! a line per source saying which one is down and since when — when a source has failed,
//! given up, or not been connected for longer than the grace.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chat_model::Timestamp;
use chrono::SecondsFormat;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use supervisor::{SourceState, SourceStats};

/// How long a source may be disconnected (never connected yet, or reconnecting) before
/// `/healthz` answers 503.
pub const DEFAULT_HEALTH_GRACE: Duration = Duration::from_secs(60);

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

/// What is wrong with one source at `now`, if anything: it failed or gave up, or it has not
/// been connected for longer than `grace`.
fn problem(s: &SourceStats, now: Timestamp, grace: Duration) -> Option<String> {
    if s.state.has_failed() {
        let why = s.last_error.as_deref().unwrap_or("no reason recorded");
        return Some(format!("stopped for good: {why}"));
    }
    if s.state == SourceState::Connected {
        return None;
    }
    let since = s.disconnected_since?;
    let down = (now - since).to_std().unwrap_or_default();
    (down > grace).then(|| {
        let mut text = format!(
            "not connected since {} ({}s, longer than the {}s grace)",
            since.to_rfc3339_opts(SecondsFormat::Secs, true),
            down.as_secs(),
            grace.as_secs_f64()
        );
        if let Some(e) = &s.last_error {
            text.push_str(&format!("; last error: {e}"));
        }
        text
    })
}

/// Whether the sources are healthy at `now` (none failed, none disconnected for longer than
/// `grace`, at least one configured), and the health page's body: a line per source, its
/// state and, when it is the problem, what is wrong and since when.
pub fn health(sources: &[SourceStats], now: Timestamp, grace: Duration) -> (bool, String) {
    let mut ok = !sources.is_empty();
    let mut body = String::new();
    if sources.is_empty() {
        body.push_str("no sources\n");
    }
    for s in sources {
        match problem(s, now, grace) {
            Some(p) => {
                ok = false;
                body.push_str(&format!("{} {}: {p}\n", s.name, s.state));
            }
            None => body.push_str(&format!("{} {}\n", s.name, s.state)),
        }
    }
    (ok, body)
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

/// The health page's settings and where it reads the sources.
#[derive(Clone, Debug)]
struct Health {
    stats: Shared,
    grace: Duration,
}

async fn healthz(State(h): State<Health>) -> impl IntoResponse {
    let (ok, body) = health(&h.stats.0.sources(), chrono::Utc::now(), h.grace);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

/// Serves `/metrics` and `/healthz` on `addr` until the returned task is aborted; `/healthz`
/// tolerates a source being disconnected for `health_grace`.
pub async fn serve(
    addr: SocketAddr,
    provider: Arc<dyn StatsProvider>,
    health_grace: Duration,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let stats = Shared(provider);
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(stats.clone())
        .merge(
            Router::new()
                .route("/healthz", get(healthz))
                .with_state(Health {
                    stats,
                    grace: health_grace,
                }),
        );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics server failed");
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::Service;
    use chrono::TimeZone;

    fn at(secs: i64) -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
            + chrono::Duration::seconds(secs)
    }

    fn source(name: &str, state: SourceState, since: Option<i64>) -> SourceStats {
        SourceStats {
            name: name.into(),
            service: Service::Campfire,
            state,
            attempts: 3,
            reconnects: 0,
            delivered: 0,
            duplicates: 0,
            gaps: 0,
            malformed: 0,
            last_event_at: None,
            last_error: Some("network error: connection refused".into()),
            disconnected_since: since.map(at),
        }
    }

    const GRACE: Duration = Duration::from_secs(60);

    #[test]
    fn a_source_disconnected_past_the_grace_is_unhealthy_until_it_connects() {
        let ok = source("ok", SourceState::Connected, None);
        // Retrying, but within the grace: healthy.
        let down = source("down", SourceState::BackingOff, Some(0));
        let (healthy, body) = health(&[ok.clone(), down.clone()], at(60), GRACE);
        assert!(healthy, "{body}");
        assert_eq!(body, "ok connected\ndown backing-off\n");
        // Past the grace: unhealthy, and the body says which and since when.
        let (healthy, body) = health(&[ok.clone(), down.clone()], at(61), GRACE);
        assert!(!healthy);
        assert!(body.starts_with("ok connected\n"), "{body}");
        assert!(
            body.contains("down backing-off: not connected since 2026-12-01T12:00:00Z (61s"),
            "{body}"
        );
        assert!(body.contains("connection refused"), "{body}");
        // Connecting again, still down: the same.
        let connecting = source("down", SourceState::Connecting, Some(0));
        assert!(!health(&[connecting], at(3600), GRACE).0);
        // Connected again: healthy.
        let back = source("down", SourceState::Connected, None);
        assert!(health(&[ok, back], at(3600), GRACE).0);
    }

    #[test]
    fn failed_sources_and_no_sources_are_unhealthy() {
        let failed = source("bad", SourceState::Failed, Some(0));
        let (healthy, body) = health(&[failed], at(1), GRACE);
        assert!(!healthy);
        assert!(body.contains("bad failed: stopped for good"), "{body}");
        assert!(!health(&[], at(0), GRACE).0);
        // Not started yet (no disconnect time): not a problem by itself.
        assert!(health(&[source("new", SourceState::Idle, None)], at(0), GRACE).0);
    }

    struct Fixed(Vec<SourceStats>);

    impl StatsProvider for Fixed {
        fn sources(&self) -> Vec<SourceStats> {
            self.0.clone()
        }
        fn relays(&self) -> Vec<RelayStats> {
            Vec::new()
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[tokio::test]
    async fn healthz_uses_the_configured_grace() {
        let since = chrono::Utc::now() - chrono::Duration::seconds(30);
        let mut down = source("ops", SourceState::BackingOff, None);
        down.disconnected_since = Some(since);
        let provider: Arc<dyn StatsProvider> = Arc::new(Fixed(vec![down]));
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), provider.clone(), GRACE)
            .await
            .unwrap();
        let r = get(addr, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(
            get(addr, "/metrics")
                .await
                .contains("tributary_source_state")
        );
        task.abort();
        let (addr, task) = serve(
            "127.0.0.1:0".parse().unwrap(),
            provider,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let r = get(addr, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains("ops backing-off: not connected since"), "{r}");
        task.abort();
    }
}

//! `tributary check`: validate the config, resolve every secret, ping every StreamIn target
//! and try every source once.

use std::process::ExitCode;
use std::time::Duration;

use chat_model::SourceItem;
use futures_util::FutureExt;
use futures_util::future::LocalBoxFuture;
use supervisor::{Connection, Source};

use crate::cli::{ConfigArg, parse_duration};
use crate::config::{self, SourceConfig, SourceKind, TargetKind};
use crate::sinks::streamin_client;
use crate::sources;
use crate::tls::Tls;

/// Arguments of `tributary check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// How long each source may take to connect and show a first sign of life.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `tributary check`.
pub async fn run(args: CheckArgs) -> ExitCode {
    let cfg = match config::load(args.config.path()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tributary: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "config {}: ok ({} sources, {} targets, {} relays; secrets resolved)",
        args.config.path().display(),
        cfg.sources.len(),
        cfg.targets.len(),
        cfg.relays.len()
    );
    for w in &cfg.warnings {
        println!("  warning: {w}");
    }
    let mut ok = true;
    for t in &cfg.targets {
        let TargetKind::Streamin(st) = &t.kind;
        let result = match streamin_client(st) {
            Ok(client) => match tokio::time::timeout(args.timeout, client.ping()).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {}s", args.timeout.as_secs_f64())),
            },
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(answer) => println!("target {} (streamin): ok — {answer}", t.name),
            Err(e) => {
                ok = false;
                println!("target {} (streamin): FAILED — {e}", t.name);
            }
        }
    }
    // Sources are tried concurrently so a slow one does not hold up the rest.
    let mut tls = Tls::default();
    let checks: Vec<_> = cfg
        .sources
        .iter()
        .map(|s| check_source(s, args.timeout, &mut tls))
        .collect();
    let results = futures_util::future::join_all(checks).await;
    for (s, r) in cfg.sources.iter().zip(results) {
        match r {
            Ok(what) => println!("source {} ({}): ok — {what}", s.name, service_name(s)),
            Err(e) => {
                ok = false;
                println!("source {} ({}): FAILED — {e}", s.name, service_name(s));
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn service_name(s: &SourceConfig) -> &'static str {
    match s.kind {
        SourceKind::Campfire(_) => "campfire",
        SourceKind::Flowdock(_) => "flowdock",
        SourceKind::Multistreamer(_) => "multistreamer",
        SourceKind::Ustream(_) => "ustream",
    }
}

/// Builds the source (with the shared TLS set-up), then connects once and waits for the first
/// item: an event, a keep-alive or a cursor.
fn check_source(
    s: &SourceConfig,
    timeout: Duration,
    tls: &mut Tls,
) -> LocalBoxFuture<'static, Result<String, String>> {
    let name = s.name.as_str();
    let built = match &s.kind {
        SourceKind::Campfire(c) => sources::campfire::build(name, &s.common, c, tls)
            .map(|src| probe(src, timeout).boxed_local()),
        SourceKind::Flowdock(c) => sources::flowdock::build(name, &s.common, c, tls)
            .map(|src| probe(src, timeout).boxed_local()),
        SourceKind::Multistreamer(c) => sources::multistreamer::build(name, &s.common, c, tls)
            .map(|src| probe(src, timeout).boxed_local()),
        SourceKind::Ustream(c) => sources::ustream::build(name, &s.common, c, tls)
            .map(|src| probe(src, timeout).boxed_local()),
    };
    built.unwrap_or_else(|e| std::future::ready(Err(e)).boxed_local())
}

async fn probe<S: Source>(mut source: S, timeout: Duration) -> Result<String, String> {
    let attempt = async {
        let mut conn = source.connect(None).await.map_err(|e| e.to_string())?;
        match conn.next_item().await {
            Ok(SourceItem::Event { event, .. }) => {
                Ok(format!("connected; first event: {}", event.kind))
            }
            Ok(SourceItem::Malformed { error }) => {
                Ok(format!("connected; first frame malformed: {error}"))
            }
            Ok(_) => Ok("connected; stream alive".to_owned()),
            Err(e) if !e.is_fatal() => Ok(format!("connected, then: {e}")),
            Err(e) => Err(e.to_string()),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no connection or sign of life within {}s",
            timeout.as_secs_f64()
        )),
    }
}

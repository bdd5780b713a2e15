//! The StreamIn source API emulator: `GET /api/source/{request}?api_key=...`.
//!
//! Answers as the document describes: HTTP 200 with `{"status", "message", "result"}`.
//! Key checks (102 no key, 101 invalid key), 105 for unknown requests, 103 for requests
//! StreamIn knows but does not support, 104 for a bad call structure (a missing or empty
//! parameter, a delivery_confirmation other than 0/1, a limit broken), the once-a-day
//! refresh limit (-201 by default; the day is injectable), and status 0 for a failure. Any
//! status can also be forced: for every request with [`Emulator::force_status`], or for one
//! message with the content `!status:N`. Faults come per request from [`Config::faults`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::NaiveDate;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::fault::lock;
use crate::{Fault, FaultPlan, ServerHandle};

/// The key the emulator accepts unless configured otherwise (the document's example key).
pub const DEFAULT_API_KEY: &str = "c197a6f761adb8ce1a47cdf9f22d705c";

/// Emulator settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// Seed for generated keys.
    pub seed: u64,
    /// Unused (StreamIn is write-only); kept for a uniform emulator API.
    pub rate: f64,
    /// Faults, one entry per request.
    pub faults: Arc<FaultPlan>,
    /// The valid API key.
    pub api_key: String,
    /// The code for a second refresh on one day: -201 (default) or 201.
    pub refresh_limit_code: i64,
    /// The day used for the refresh limit (`None`: today in UTC).
    pub today: Option<NaiveDate>,
    /// The day of the last refresh, if one already happened.
    pub last_refresh: Option<NaiveDate>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 1,
            rate: 0.0,
            faults: Arc::new(FaultPlan::none()),
            api_key: DEFAULT_API_KEY.to_owned(),
            refresh_limit_code: -201,
            today: None,
            last_refresh: None,
        }
    }
}

/// A message the emulator accepted, as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The external_id parameter.
    pub external_id: String,
    /// The content parameter (wiki markup).
    pub content: String,
    /// The delivery_confirmation parameter as sent ("0" = yes, "1" = no).
    pub delivery_confirmation: String,
    /// The created_at the emulator answered.
    pub created_at: String,
}

#[derive(Debug)]
struct Inner {
    key: String,
    today: Option<NaiveDate>,
    last_refresh: Option<NaiveDate>,
    force: Option<i64>,
    received: Vec<Received>,
    requests: Vec<String>,
    rng: StdRng,
}

#[derive(Debug)]
struct Shared {
    config: Config,
    inner: Mutex<Inner>,
    shutdown: watch::Receiver<bool>,
}

/// The running emulator.
#[derive(Debug)]
pub struct Emulator {
    handle: ServerHandle,
    shared: Arc<Shared>,
}

impl Emulator {
    /// Starts the server.
    pub async fn start(config: Config) -> std::io::Result<Emulator> {
        let listener = crate::server::bind(config.listen).await?;
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                key: config.api_key.clone(),
                today: config.today,
                last_refresh: config.last_refresh,
                force: None,
                received: Vec::new(),
                requests: Vec::new(),
                rng: StdRng::seed_from_u64(config.seed),
            }),
            config,
            shutdown: rx,
        });
        let router = Router::new()
            .route("/api/source/{request}", get(handle))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
            .with_state(shared.clone());
        let handle = crate::server::serve_router(listener, router, tx)?;
        Ok(Emulator { handle, shared })
    }

    /// The API base URL (`http://127.0.0.1:PORT/api/source`).
    pub fn url(&self) -> String {
        format!("{}/api/source", self.handle.url())
    }

    /// A `[[target]]` table connecting Tributary to this emulator.
    pub fn config_snippet(&self, source_name: &str) -> String {
        format!(
            "[[target]]\nname = \"{source_name}\"\nservice = \"streamin\"\napi_key = \"{}\"\nurl = \"{}\"\n",
            self.api_key(),
            self.url()
        )
    }

    /// Every message accepted, in order.
    pub fn committed(&self) -> Vec<Received> {
        lock(&self.shared.inner).received.clone()
    }

    /// The names of the requests received, in order (no keys).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.inner).requests.clone()
    }

    /// The key valid now (changes on refresh).
    pub fn api_key(&self) -> String {
        lock(&self.shared.inner).key.clone()
    }

    /// Answers every request with this status (and a message) until cleared with `None`.
    pub fn force_status(&self, code: Option<i64>) {
        lock(&self.shared.inner).force = code;
    }

    /// Sets the day the refresh limit counts by.
    pub fn set_today(&self, day: NaiveDate) {
        lock(&self.shared.inner).today = Some(day);
    }

    /// The fault plan.
    pub fn faults(&self) -> &Arc<FaultPlan> {
        &self.shared.config.faults
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.handle.stop().await;
    }
}

fn message_for(code: i64) -> &'static str {
    match code {
        0 => "Request failure",
        1 => "n/a",
        101 => "Invalid API key",
        102 => "No API key",
        103 => "Request not supported",
        104 => "Invalid API call structure",
        105 => "Unknown API request",
        201 | -201 => "Over refresh limit",
        _ => "Error",
    }
}

fn answer(code: i64, message: &str, result: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": code, "message": message, "result": result}).to_string(),
    )
        .into_response()
}

fn fail(code: i64, detail: &str) -> Response {
    let msg = if detail.is_empty() {
        message_for(code).to_owned()
    } else {
        format!("{}: {detail}", message_for(code))
    };
    answer(code, &msg, Value::Null)
}

async fn handle(
    AxState(shared): AxState<Arc<Shared>>,
    Path(request): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    lock(&shared.inner).requests.push(request.clone());
    for f in shared.config.faults.next_connection() {
        match f {
            Fault::Delay(d) => {
                let mut stop = shared.shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
            Fault::Stall { duration, .. } => {
                let mut stop = shared.shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(3600))) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
            Fault::Status { code, retry_after } => {
                let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut r = (code, "emulated failure").into_response();
                if let Some(s) = retry_after {
                    if let Ok(v) = s.to_string().parse() {
                        r.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                }
                return r;
            }
            Fault::Malformed | Fault::DropAfterBytes(_) | Fault::Refuse => {
                return (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    "{\"status\":1,\"mess",
                )
                    .into_response();
            }
            Fault::Oversize(n) => {
                return (StatusCode::OK, "x".repeat(n)).into_response();
            }
            Fault::OneByteWrites => {}
        }
    }
    let mut inner = lock(&shared.inner);
    if let Some(code) = inner.force {
        return fail(code, "forced by the emulator");
    }
    let key = q.get("api_key").map(String::as_str).unwrap_or("");
    if key.is_empty() {
        return fail(102, "");
    }
    if key != inner.key {
        return fail(101, "");
    }
    match request.as_str() {
        "ping" => answer(
            1,
            "n/a",
            json!({"success": "Pong! You have a valid API key!"}),
        ),
        "refresh_api_key" => {
            let today = inner
                .today
                .unwrap_or_else(|| chrono::Utc::now().date_naive());
            if inner.last_refresh == Some(today) {
                return fail(shared.config.refresh_limit_code, "");
            }
            let new_key: String = (0..32)
                .map(|_| {
                    let n = inner.rng.random_range(0..16u32);
                    char::from_digit(n, 16).unwrap_or('0')
                })
                .collect();
            inner.key = new_key.clone();
            inner.last_refresh = Some(today);
            answer(1, "n/a", json!({"api_key": new_key}))
        }
        "new_message" => {
            let (Some(external_id), Some(content), Some(dc)) = (
                q.get("external_id"),
                q.get("content"),
                q.get("delivery_confirmation"),
            ) else {
                let missing: Vec<&str> = ["external_id", "content", "delivery_confirmation"]
                    .into_iter()
                    .filter(|k| !q.contains_key(*k))
                    .collect();
                return fail(104, &format!("missing {}", missing.join(", ")));
            };
            if let Some(code) = content.strip_prefix("!status:") {
                if let Ok(code) = code.trim().parse::<i64>() {
                    return fail(code, "requested by the message content");
                }
            }
            if content.is_empty() || external_id.is_empty() {
                return fail(104, "empty content or external_id");
            }
            if content.chars().count() > 1000 {
                return fail(104, "content longer than 1000 characters");
            }
            if external_id.chars().count() > 255 {
                return fail(104, "external_id longer than 255 characters");
            }
            if dc != "0" && dc != "1" {
                return fail(104, "delivery_confirmation must be 0 or 1");
            }
            let created_at = chrono::Utc::now()
                .format("%Y-%m-%d %H:%M:%S %z")
                .to_string();
            inner.received.push(Received {
                external_id: external_id.clone(),
                content: content.clone(),
                delivery_confirmation: dc.clone(),
                created_at: created_at.clone(),
            });
            // As in the document's example: sent 0, echoed false.
            answer(
                1,
                "n/a",
                json!({"message_info": {
                    "external_id": external_id,
                    "content": content,
                    "created_at": created_at,
                    "delivery_confirmation": dc == "1",
                }}),
            )
        }
        "get_messages" | "delete_message" | "update_message" | "get_source" => fail(103, ""),
        _ => fail(105, &request),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(emu: &Emulator, path_and_query: &str) -> Value {
        let addr = emu.handle.addr();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /api/source/{path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf).to_string();
        let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    #[tokio::test]
    async fn documented_codes() {
        let emu = Emulator::start(Config::default()).await.unwrap();
        let k = DEFAULT_API_KEY;
        assert_eq!(get(&emu, "ping").await["status"], 102);
        assert_eq!(get(&emu, "ping?api_key=abc").await["status"], 101);
        let v = get(&emu, &format!("ping?api_key={k}")).await;
        assert_eq!(v["status"], 1);
        assert_eq!(v["message"], "n/a");
        assert_eq!(get(&emu, &format!("nope?api_key={k}")).await["status"], 105);
        assert_eq!(
            get(&emu, &format!("get_messages?api_key={k}")).await["status"],
            103
        );
        let v = get(
            &emu,
            &format!("new_message?api_key={k}&external_id=1&delivery_confirmation=0"),
        )
        .await;
        assert_eq!(v["status"], 104);
        assert!(v["message"].as_str().unwrap().contains("content"));
        let v = get(&emu, &format!("new_message?api_key={k}&external_id=1&content=%21status%3A0&delivery_confirmation=0")).await;
        assert_eq!(v["status"], 0);
        let v = get(
            &emu,
            &format!(
                "new_message?api_key={k}&external_id=m1&content=hi%20there&delivery_confirmation=0"
            ),
        )
        .await;
        assert_eq!(v["status"], 1);
        assert_eq!(v["result"]["message_info"]["delivery_confirmation"], false);
        assert_eq!(emu.committed()[0].content, "hi there");
        assert_eq!(emu.committed()[0].delivery_confirmation, "0");
        emu.force_status(Some(103));
        assert_eq!(get(&emu, &format!("ping?api_key={k}")).await["status"], 103);
        emu.stop().await;
    }

    #[tokio::test]
    async fn refresh_once_a_day() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let emu = Emulator::start(Config {
            today: Some(day),
            ..Config::default()
        })
        .await
        .unwrap();
        let v = get(&emu, &format!("refresh_api_key?api_key={DEFAULT_API_KEY}")).await;
        assert_eq!(v["status"], 1);
        let new_key = v["result"]["api_key"].as_str().unwrap().to_owned();
        assert_eq!(new_key.len(), 32);
        assert_eq!(
            get(&emu, &format!("ping?api_key={DEFAULT_API_KEY}")).await["status"],
            101
        );
        assert_eq!(
            get(&emu, &format!("refresh_api_key?api_key={new_key}")).await["status"],
            -201
        );
        emu.set_today(day.succ_opt().unwrap());
        assert_eq!(
            get(&emu, &format!("refresh_api_key?api_key={new_key}")).await["status"],
            1
        );
        emu.stop().await;
    }
}

//! The async client: a thin IO loop that sends a [`Session`]'s requests with reqwest, hands
//! it the responses and sleeps until its next deadline.

use std::sync::Arc;
use std::time::Instant;

use chat_model::{SourceItem, redact_url};

use crate::error::Error;
use crate::session::{Config, MessageMemory, Request, Response, Session, UstreamCursor};
use crate::wire::NetworkAccount;

/// Polls one channel's Social Stream, yielding events in time order, keep-alives after every
/// successful poll, cursor updates and stall timeouts; the first failure ends it.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    session: Session,
    /// The request handed out by the session and not answered yet (kept across a dropped
    /// [`Client::next_item`] future, and sent again).
    in_flight: Option<Request>,
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Client {
    /// A client with its own HTTP client (rustls, the public web roots); `resume` continues a
    /// saved session.
    pub fn new(config: Config, resume: Option<UstreamCursor>) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .build()
            .map_err(|e| Error::HttpClient {
                source: Arc::new(e),
            })?;
        Client::with_http_client(config, http, resume)
    }

    /// A client using `http` (the binary's shared client, e.g. one trusting an extra CA);
    /// `resume` continues a saved session: same host, the range widened from the last end,
    /// same ignore list.
    pub fn with_http_client(
        config: Config,
        http: reqwest::Client,
        resume: Option<UstreamCursor>,
    ) -> Result<Self, Error> {
        let session = Session::new(config, resume, Instant::now(), wall_ms())?;
        Ok(Client {
            http,
            session,
            in_flight: None,
        })
    }

    /// Shares `memory` with the session (see [`Session::with_memory`]).
    pub fn with_memory(mut self, memory: MessageMemory) -> Self {
        self.session = self.session.with_memory(memory);
        self
    }

    /// The session this client drives.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The current resume state.
    pub fn cursor(&self) -> UstreamCursor {
        self.session.cursor()
    }

    /// The server base URL polled now (changes on a `host` item).
    pub fn base_url(&self) -> &str {
        self.session.base_url()
    }

    /// The accounts ignored now.
    pub fn ignored(&self) -> impl Iterator<Item = &NetworkAccount> {
        self.session.ignored()
    }

    /// The next item. Waits for the schedule and polls; a failed poll ends the client with
    /// an error, and asking again returns the same error (reconnect with the last cursor).
    ///
    /// Cancel-safe: a future dropped mid-request leaves that request to be sent again.
    pub async fn next_item(&mut self) -> Result<SourceItem, Error> {
        loop {
            if let Some(item) = self.session.poll_item() {
                return Ok(item);
            }
            if let Some(e) = self.session.error() {
                return Err(e.clone());
            }
            if self.in_flight.is_none() {
                if let Some(at) = self.session.poll_timeout() {
                    tokio::time::sleep_until(at.into()).await;
                }
                self.session.handle_timeout(Instant::now());
                self.in_flight = self.session.poll_request();
            }
            let Some(request) = self.in_flight.clone() else {
                continue;
            };
            match self.fetch(&request).await {
                Ok(response) => self
                    .session
                    .handle_response(response, Instant::now(), wall_ms()),
                Err(e) => self.session.handle_end(e),
            }
            self.in_flight = None;
        }
    }

    /// One GET within the request timeout; the body is read (up to the size limit) only for
    /// a 200.
    async fn fetch(&self, request: &Request) -> Result<Response, Error> {
        let url = request.url();
        let shown = redact_url(&url);
        let config = self.session.config();
        let network = |detail: String| Error::Network {
            channel: config.channel.clone(),
            url: shown.clone(),
            detail,
        };
        let header = |r: &reqwest::Response, name| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let work = async {
            let mut resp = self
                .http
                .get(&url)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| network(e.without_url().to_string()))?;
            let mut out = Response {
                status: resp.status().as_u16(),
                retry_after: header(&resp, reqwest::header::RETRY_AFTER),
                content_type: header(&resp, reqwest::header::CONTENT_TYPE),
                body: Vec::new(),
            };
            if out.status == 200 {
                // One allocation for a body of a known size (the limit is checked as read).
                let known = resp.content_length().unwrap_or(0);
                let cap = usize::try_from(known).unwrap_or(usize::MAX);
                out.body.reserve(cap.min(config.max_response_bytes));
            }
            while out.status == 200 {
                let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| network(format!("response cut short: {}", e.without_url())))?
                else {
                    break;
                };
                if out.body.len() + chunk.len() > config.max_response_bytes {
                    return Err(Error::TooLarge {
                        channel: config.channel.clone(),
                        url: shown.clone(),
                        limit: config.max_response_bytes,
                    });
                }
                out.body.extend_from_slice(&chunk);
            }
            Ok(out)
        };
        tokio::time::timeout(config.request_timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    channel: config.channel.clone(),
                    url: shown.clone(),
                    timeout: config.request_timeout,
                })
            })
    }
}

//! An in-process scripted server and a `Source` for it, driven by tokio's (paused) clock.
//!
//! The server publishes message `k` (id `m{k}`) at `base + k × interval`, up to `total`. A
//! connection that replays starts after the cursor it was given (minus `overlap` messages,
//! like an imprecise backfill), one that cannot replay starts at whatever is published next.
//! Each connect consumes one scripted [`Step`]: refuse with a reason, or stream `n` messages
//! and then end in a chosen way (drop mid-frame, stall silently, close with a reason).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_model::{Cursor, DisconnectReason, Event, Kind, Service, SourceItem};
use supervisor::{Backoff, Connection, Policy, Resume, Source};
use tokio::time::Instant;

/// How a streaming connection ends after its messages.
#[derive(Clone, Debug)]
pub enum End {
    /// The TCP connection is cut in the middle of a frame.
    Drop,
    /// Nothing more arrives, not even keep-alives.
    Stall,
    /// The server ends it with this reason.
    Close(DisconnectReason),
}

/// What one connection attempt does.
#[derive(Clone, Debug)]
pub enum Step {
    /// The connect fails.
    Refuse(DisconnectReason),
    /// Streams `n` messages, then ends.
    Stream(usize, End),
    /// Panics inside `connect` (a buggy source).
    Panic,
}

/// The server side: what was published and what clients asked for.
#[derive(Clone, Debug)]
pub struct Server {
    pub base: Instant,
    pub interval: Duration,
    pub total: u64,
    pub replays: bool,
    pub overlap: u64,
    pub keepalive: Duration,
    /// A connect without a cursor starts at what is published next ("start from now") and
    /// yields that position (the last published id) as a `SourceItem::Cursor` first.
    pub from_now: bool,
    /// With `from_now`: every connect starts from now, whatever its cursor.
    pub rebaseline: bool,
    /// Every message whose id is a multiple of this reaches the client as a bare
    /// `SourceItem::Cursor` (a position without an event, like an empty poll range).
    pub cursor_only_every: Option<u64>,
    /// The resume cursor (last id) of every connect, in order.
    pub resumes: Arc<Mutex<Vec<Option<u64>>>>,
}

impl Server {
    pub fn new(total: u64, interval: Duration, replays: bool) -> Self {
        Server {
            base: Instant::now(),
            interval,
            total,
            replays,
            overlap: 0,
            keepalive: Duration::from_secs(1),
            from_now: false,
            rebaseline: false,
            cursor_only_every: None,
            resumes: Arc::default(),
        }
    }

    pub fn published_at(&self, id: u64) -> Instant {
        self.base + self.interval * id as u32
    }

    pub fn resumes(&self) -> Vec<Option<u64>> {
        self.resumes.lock().unwrap().clone()
    }
}

pub fn cursor(id: u64) -> Cursor {
    Cursor::from_json(serde_json::json!({ "last_id": id }))
}

/// The supervised source.
pub struct Scripted {
    pub name: String,
    pub server: Server,
    pub script: VecDeque<Step>,
    pub policy: Policy,
    /// What `Source::identity` returns.
    pub identity: String,
}

/// A policy scaled for tests: backoff 1 s .. 8 s, healthy after 5 s, stall after 5 s.
pub fn test_policy(resume: Resume) -> Policy {
    Policy {
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            multiplier: 2.0,
            healthy_after: Duration::from_secs(5),
        },
        stall_timeout: Duration::from_secs(5),
        resume,
        max_retries: None,
        max_elapsed: None,
        prompt_delay: Default::default(),
        max_server_delay: supervisor::DEFAULT_MAX_SERVER_DELAY,
    }
}

impl Scripted {
    pub fn new(name: &str, server: &Server, script: Vec<Step>) -> Self {
        let resume = if server.replays {
            Resume::Replays
        } else {
            Resume::NoReplay
        };
        Scripted {
            name: name.to_owned(),
            server: server.clone(),
            script: script.into(),
            policy: test_policy(resume),
            identity: String::new(),
        }
    }

    /// The same, saying it reads `identity`.
    pub fn with_identity(mut self, identity: &str) -> Self {
        self.identity = identity.to_owned();
        self
    }
}

impl Source for Scripted {
    type Connection = Conn;

    fn name(&self) -> &str {
        &self.name
    }

    fn service(&self) -> Service {
        Service::Other("scripted".into())
    }

    fn policy(&self) -> Policy {
        self.policy.clone()
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn connect(
        &mut self,
        resume: Option<Cursor>,
    ) -> impl Future<Output = Result<Conn, DisconnectReason>> + Send {
        // After the script: stream for ever.
        let step = self
            .script
            .pop_front()
            .unwrap_or(Step::Stream(usize::MAX, End::Drop));
        let server = self.server.clone();
        let name = self.name.clone();
        async move {
            let last = resume.map(|c| c.as_json()["last_id"].as_u64().expect("our cursor"));
            server.resumes.lock().unwrap().push(last);
            tokio::time::sleep(Duration::from_millis(20)).await;
            match step {
                Step::Refuse(reason) => Err(reason),
                Step::Panic => panic!("scripted source {name} crashed"),
                Step::Stream(n, end) => {
                    let now_next = || {
                        let since = Instant::now() - server.base;
                        (since.as_nanos() / server.interval.as_nanos().max(1)) as u64 + 1
                    };
                    let baseline = (server.from_now && (last.is_none() || server.rebaseline))
                        .then(|| now_next() - 1);
                    let next = if let Some(b) = baseline {
                        b + 1
                    } else if server.replays {
                        (last.unwrap_or(0) + 1)
                            .saturating_sub(server.overlap)
                            .max(1)
                    } else {
                        now_next()
                    };
                    Ok(Conn {
                        name,
                        server,
                        next,
                        left: n,
                        end,
                        baseline,
                    })
                }
            }
        }
    }
}

/// A live scripted connection.
pub struct Conn {
    name: String,
    server: Server,
    next: u64,
    left: usize,
    end: End,
    baseline: Option<u64>,
}

impl Connection for Conn {
    async fn next_item(&mut self) -> Result<SourceItem, DisconnectReason> {
        if let Some(b) = self.baseline.take() {
            return Ok(SourceItem::Cursor(cursor(b)));
        }
        if self.left == 0 {
            return match &self.end {
                End::Drop => Err(DisconnectReason::Network(
                    "connection reset in the middle of a frame".into(),
                )),
                End::Stall => std::future::pending().await,
                End::Close(reason) => Err(reason.clone()),
            };
        }
        if self.next > self.server.total {
            tokio::time::sleep(self.server.keepalive).await;
            return Ok(SourceItem::KeepAlive);
        }
        let due = self.server.published_at(self.next);
        if Instant::now() < due {
            tokio::time::sleep_until(due.min(Instant::now() + self.server.keepalive)).await;
            if Instant::now() < due {
                return Ok(SourceItem::KeepAlive);
            }
        }
        let id = self.next;
        self.next += 1;
        if self
            .server
            .cursor_only_every
            .is_some_and(|k| k > 0 && id % k == 0)
        {
            return Ok(SourceItem::Cursor(cursor(id)));
        }
        self.left -= 1;
        let event = Event::new(
            self.name.clone(),
            Service::Other("scripted".into()),
            Kind::Message,
            format!("m{id}"),
            "room",
            chrono::Utc::now(),
        )
        .with_text(format!("message {id}"));
        Ok(SourceItem::Event {
            event,
            cursor: Some(cursor(id)),
        })
    }
}

/// The numeric id of a message event (`m17` → 17).
pub fn num(e: &Event) -> u64 {
    e.id.trim_start_matches('m').parse().expect("a message id")
}

//! Relays: forwarding chosen events from sources to a writable endpoint (a StreamIn target or a
//! multistreamer source), without blocking the sources, without loops, and without sending
//! twice across restarts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_model::{Event, Kind, lock_ignoring_poison};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::RelayConfig;
use crate::metrics::RelayStats;
use crate::template::Template;

/// How many relayed ids (and sent texts) are remembered per relay.
const REMEMBER: usize = 2048;

/// Queue length per target; a full queue drops (and counts) instead of blocking the sources.
const QUEUE: usize = 256;

/// Attempts per message before a send counts as failed.
const ATTEMPTS: u32 = 5;

/// Why a send failed.
#[derive(Debug, Clone)]
pub struct SendFailure {
    /// What went wrong, for the log.
    pub message: String,
    /// Whether trying again may help (network, 5xx) or not (refused, invalid).
    pub retryable: bool,
}

/// Boxed future returned by a [`Sink`].
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<String, SendFailure>> + Send + 'a>>;

/// A writable endpoint a relay sends to.
pub trait Sink: Send + Sync + 'static {
    /// Fits a message within the endpoint's limits; says whether it had to cut.
    fn fit(&self, text: &str) -> (String, bool) {
        (text.to_owned(), false)
    }
    /// Sends one message with a stable id; answers what the endpoint confirmed.
    fn send<'a>(&'a self, text: &'a str, external_id: &'a str) -> SendFuture<'a>;
}

/// One configured relay, compiled.
#[derive(Debug)]
struct Route {
    label: String,
    from: HashSet<String>,
    kinds: Vec<Kind>,
    pattern: Option<regex::Regex>,
    template: Template,
    to: String,
}

impl Route {
    fn matches(&self, e: &Event) -> bool {
        self.from.contains(&e.source)
            && self.kinds.contains(&e.kind)
            && self.pattern.as_ref().is_none_or(|p| p.is_match(&e.text))
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Persisted {
    /// Per relay label: ids already relayed, oldest first.
    relayed: HashMap<String, VecDeque<String>>,
}

/// What relays remember: ids already relayed (persisted), texts recently sent (echo guard),
/// and counters.
struct Memory {
    path: Option<PathBuf>,
    persisted: Persisted,
    /// Per target: texts recently sent, to recognise their echo.
    sent_texts: HashMap<String, VecDeque<String>>,
    stats: HashMap<String, RelayStats>,
}

impl Memory {
    fn load(path: Option<PathBuf>) -> Self {
        let persisted = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| match serde_json::from_slice(&bytes) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!("relay state file is corrupt ({e}); starting afresh");
                    None
                }
            })
            .unwrap_or_default();
        Memory {
            path,
            persisted,
            sent_texts: HashMap::new(),
            stats: HashMap::new(),
        }
    }

    fn already_relayed(&self, label: &str, id: &str) -> bool {
        self.persisted
            .relayed
            .get(label)
            .is_some_and(|ids| ids.iter().any(|i| i == id))
    }

    fn mark_relayed(&mut self, label: &str, id: &str) {
        let ids = self.persisted.relayed.entry(label.to_owned()).or_default();
        ids.push_back(id.to_owned());
        while ids.len() > REMEMBER {
            ids.pop_front();
        }
        self.save();
    }

    fn save(&self) {
        let Some(path) = &self.path else { return };
        let Ok(bytes) = serde_json::to_vec(&self.persisted) else {
            return;
        };
        if let Err(e) = chat_model::fs::write_atomically(path, &bytes) {
            tracing::warn!("cannot save relay state to {}: {e}", path.display());
        }
    }

    fn remember_sent(&mut self, target: &str, text: &str) {
        let texts = self.sent_texts.entry(target.to_owned()).or_default();
        texts.push_back(text.to_owned());
        while texts.len() > REMEMBER {
            texts.pop_front();
        }
    }

    fn is_echo(&self, source: &str, text: &str) -> bool {
        self.sent_texts
            .get(source)
            .is_some_and(|t| t.iter().any(|s| s == text))
    }

    fn stat(&mut self, label: &str) -> &mut RelayStats {
        self.stats
            .entry(label.to_owned())
            .or_insert_with(|| RelayStats {
                name: label.to_owned(),
                ..RelayStats::default()
            })
    }
}

struct Job {
    label: String,
    id: String,
    text: String,
}

/// The running relays: offer every delivered event; matching ones are queued per target and
/// sent in the background with retries.
pub struct Relays {
    routes: Vec<Route>,
    queues: HashMap<String, mpsc::Sender<Job>>,
    memory: Arc<Mutex<Memory>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Relays {
    /// Starts relays; `sinks` maps each `to` name to its endpoint; `state` is where relayed
    /// ids are kept (None: in memory only).
    pub fn start(
        configs: &[RelayConfig],
        sinks: HashMap<String, Arc<dyn Sink>>,
        state: Option<PathBuf>,
    ) -> Result<Relays, String> {
        let memory = Arc::new(Mutex::new(Memory::load(state)));
        let mut routes = Vec::new();
        for c in configs {
            let label = format!("{}→{}", c.from.join(","), c.to);
            routes.push(Route {
                label: label.clone(),
                from: c.from.iter().cloned().collect(),
                kinds: c
                    .kinds
                    .clone()
                    .unwrap_or_else(|| Kind::ALL.iter().copied().filter(|k| k.is_chat()).collect()),
                pattern: c.pattern.clone(),
                template: c.template.clone(),
                to: c.to.clone(),
            });
            lock_ignoring_poison(&memory).stat(&label);
        }
        let mut queues = HashMap::new();
        let mut workers = Vec::new();
        for route in &routes {
            if queues.contains_key(&route.to) {
                continue;
            }
            let sink = sinks
                .get(&route.to)
                .cloned()
                .ok_or_else(|| format!("relay target `{}` has no writer", route.to))?;
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.insert(route.to.clone(), tx);
            workers.push(tokio::spawn(worker(
                route.to.clone(),
                sink,
                rx,
                memory.clone(),
            )));
        }
        Ok(Relays {
            routes,
            queues,
            memory,
            workers,
        })
    }

    /// Offers a delivered event to every relay; never blocks.
    pub fn offer(&self, e: &Event) {
        for route in &self.routes {
            if !route.matches(e) {
                continue;
            }
            let mut mem = lock_ignoring_poison(&self.memory);
            if mem.is_echo(&e.source, &e.text) {
                tracing::debug!(source = %e.source, "not relaying our own echo");
                continue;
            }
            if mem.already_relayed(&route.label, &e.id) {
                continue;
            }
            let job = Job {
                label: route.label.clone(),
                id: e.id.clone(),
                text: route.template.render(e),
            };
            let Some(q) = self.queues.get(&route.to) else {
                continue;
            };
            if let Err(err) = q.try_send(job) {
                let job = match err {
                    mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
                };
                tracing::warn!(relay = %job.label, "relay queue full; dropping event {}", job.id);
                mem.stat(&route.label).failed += 1;
            }
        }
    }

    /// A handle for the metrics page.
    pub fn stats_handle(&self) -> RelayStatsHandle {
        RelayStatsHandle(self.memory.clone())
    }

    /// Lets queued sends finish (up to `grace`), then stops.
    pub async fn shutdown(self, grace: Duration) {
        drop(self.queues);
        let all = futures_join(self.workers);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                "relays still sending after {}s; stopping them",
                grace.as_secs()
            );
        }
    }
}

async fn futures_join(workers: Vec<tokio::task::JoinHandle<()>>) {
    for w in workers {
        let _ = w.await;
    }
}

/// Shared read access to relay counters.
#[derive(Clone)]
pub struct RelayStatsHandle(Arc<Mutex<Memory>>);

impl RelayStatsHandle {
    /// Counters per relay.
    pub fn stats(&self) -> Vec<RelayStats> {
        let mem = lock_ignoring_poison(&self.0);
        let mut v: Vec<RelayStats> = mem.stats.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

async fn worker(
    target: String,
    sink: Arc<dyn Sink>,
    mut rx: mpsc::Receiver<Job>,
    memory: Arc<Mutex<Memory>>,
) {
    while let Some(job) = rx.recv().await {
        let (text, cut) = sink.fit(&job.text);
        if cut {
            tracing::info!(relay = %job.label, "message {} truncated on a character boundary to fit {target}", job.id);
        }
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            // Remember before sending: the echo may arrive before the confirmation.
            lock_ignoring_poison(&memory).remember_sent(&target, &text);
            match sink.send(&text, &job.id).await {
                Ok(confirmed) => break Ok(confirmed),
                Err(f) if f.retryable && attempt < ATTEMPTS => {
                    tracing::warn!(relay = %job.label, "send to {target} failed ({}); retrying in {:?}", f.message, delay);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(f) => break Err(f),
            }
        };
        let mut mem = lock_ignoring_poison(&memory);
        match result {
            Ok(confirmed) => {
                tracing::debug!(relay = %job.label, "relayed {}: {confirmed}", job.id);
                mem.mark_relayed(&job.label, &job.id);
                mem.stat(&job.label).sent += 1;
            }
            Err(f) => {
                tracing::warn!(relay = %job.label, "could not relay {} to {target}: {}", job.id, f.message);
                mem.stat(&job.label).failed += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::{Author, Service};

    fn ev(source: &str, id: &str, kind: Kind, text: &str) -> Event {
        Event::new(
            source,
            Service::Flowdock,
            kind,
            id,
            "acme/main",
            chrono::Utc::now(),
        )
        .with_author(Author::new(Some("1".to_owned()), Some("Ada".to_owned())))
        .with_text(text)
    }

    struct Recorder {
        sent: Mutex<Vec<(String, String)>>,
        fail_first: Mutex<u32>,
        max: Option<usize>,
    }

    impl Sink for Recorder {
        fn fit(&self, text: &str) -> (String, bool) {
            match self.max {
                Some(max) => streamin::truncate_content(text, max),
                None => (text.to_owned(), false),
            }
        }
        fn send<'a>(&'a self, text: &'a str, id: &'a str) -> SendFuture<'a> {
            Box::pin(async move {
                let mut f = self.fail_first.lock().unwrap();
                if *f > 0 {
                    *f -= 1;
                    return Err(SendFailure {
                        message: "503".into(),
                        retryable: true,
                    });
                }
                self.sent
                    .lock()
                    .unwrap()
                    .push((id.to_owned(), text.to_owned()));
                Ok("ok".into())
            })
        }
    }

    fn cfg(pattern: Option<&str>) -> RelayConfig {
        RelayConfig {
            from: vec!["flows".into()],
            to: "notify".into(),
            kinds: None,
            pattern: pattern.map(|p| regex::Regex::new(p).unwrap()),
            template: Template::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tag_change_is_never_relayed_as_an_empty_message() {
        let sink = Arc::new(Recorder {
            sent: Mutex::default(),
            fail_first: Mutex::new(0),
            max: None,
        });
        let sinks: HashMap<String, Arc<dyn Sink>> =
            [("notify".to_owned(), sink.clone() as Arc<dyn Sink>)].into();
        let mut t = ev("flows", "t1", Kind::TagChange, "");
        t.refers_to = Some("flowdock:acme/main:374".into());
        t.tags = vec!["#ops".into()];
        t.tags_removed = vec!["#old".into()];
        // Default kinds (chat only): not relayed at all.
        let relays = Relays::start(&[cfg(None)], sinks.clone(), None).unwrap();
        relays.offer(&t);
        relays.shutdown(Duration::from_secs(60)).await;
        assert!(sink.sent.lock().unwrap().is_empty());
        // Asked for explicitly: relayed as what it did.
        let mut c = cfg(None);
        c.kinds = Some(vec![Kind::TagChange]);
        let relays = Relays::start(&[c], sinks, None).unwrap();
        relays.offer(&t);
        relays.shutdown(Duration::from_secs(60)).await;
        let sent = sink.sent.lock().unwrap().clone();
        assert_eq!(
            sent,
            [(
                "t1".to_owned(),
                "Ada in acme/main: tags of flowdock:acme/main:374 changed: +#ops -#old".to_owned()
            )]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn relays_matching_events_once_with_retries_and_no_echo() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("relays.json");
        let sink = Arc::new(Recorder {
            sent: Mutex::default(),
            fail_first: Mutex::new(2),
            max: Some(20),
        });
        let sinks: HashMap<String, Arc<dyn Sink>> =
            [("notify".to_owned(), sink.clone() as Arc<dyn Sink>)].into();
        let relays = Relays::start(
            &[cfg(Some("deploy|outage"))],
            sinks.clone(),
            Some(state.clone()),
        )
        .unwrap();
        relays.offer(&ev(
            "flows",
            "1",
            Kind::Message,
            "deploy of the billing service finished",
        ));
        relays.offer(&ev("flows", "2", Kind::Message, "lunch?"));
        relays.offer(&ev("other", "3", Kind::Message, "deploy elsewhere"));
        relays.offer(&ev("flows", "4", Kind::Presence, "deploy"));
        relays.shutdown(Duration::from_secs(60)).await;
        let sent = sink.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].0, "1");
        assert_eq!(
            sent[0].1.chars().count(),
            20,
            "truncated to the sink's limit"
        );
        assert!(sent[0].1.ends_with('…'));

        // After a restart the same event is not sent again.
        let relays = Relays::start(&[cfg(None)], sinks, Some(state)).unwrap();
        relays.offer(&ev(
            "flows",
            "1",
            Kind::Message,
            "deploy of the billing service finished",
        ));
        relays.offer(&ev("flows", "5", Kind::Message, "new one"));
        let stats = relays.stats_handle();
        relays.shutdown(Duration::from_secs(60)).await;
        let sent = sink.sent.lock().unwrap().clone();
        assert_eq!(
            sent.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
            ["1", "5"]
        );
        assert_eq!(stats.stats()[0].sent, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn own_echo_is_not_relayed_back() {
        // flows → live and live → flows: the echo of what we sent to `live` must not bounce.
        let a = Arc::new(Recorder {
            sent: Mutex::default(),
            fail_first: Mutex::new(0),
            max: None,
        });
        let b = Arc::new(Recorder {
            sent: Mutex::default(),
            fail_first: Mutex::new(0),
            max: None,
        });
        let sinks: HashMap<String, Arc<dyn Sink>> = [
            ("live".to_owned(), a.clone() as Arc<dyn Sink>),
            ("flows".to_owned(), b.clone() as Arc<dyn Sink>),
        ]
        .into();
        let configs = [
            RelayConfig {
                from: vec!["flows".into()],
                to: "live".into(),
                kinds: None,
                pattern: None,
                template: Template::parse("{text}").unwrap(),
            },
            RelayConfig {
                from: vec!["live".into()],
                to: "flows".into(),
                kinds: None,
                pattern: None,
                template: Template::parse("{text}").unwrap(),
            },
        ];
        let relays = Relays::start(&configs, sinks, None).unwrap();
        relays.offer(&ev("flows", "1", Kind::Message, "hello"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The multistreamer source now sees its echo.
        relays.offer(&ev("live", "echo-1", Kind::Message, "hello"));
        relays.offer(&ev("live", "2", Kind::Message, "a real reply"));
        relays.shutdown(Duration::from_secs(60)).await;
        assert_eq!(a.sent.lock().unwrap().len(), 1);
        let back = b.sent.lock().unwrap().clone();
        assert_eq!(back.len(), 1, "{back:?}");
        assert_eq!(back[0].1, "a real reply");
    }
}

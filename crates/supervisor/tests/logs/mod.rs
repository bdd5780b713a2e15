//! A minimal `tracing` subscriber that records warnings, to check what the driver logs.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One recorded log line: its `source` field (if any) and its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub level: Level,
    pub source: Option<String>,
    pub message: String,
}

/// Records every event at WARN or above.
#[derive(Clone, Default)]
pub struct Recorder {
    lines: Arc<Mutex<Vec<Line>>>,
}

impl Recorder {
    /// Installs a recorder as this thread's default subscriber until the guard drops.
    pub fn install() -> (Recorder, tracing::subscriber::DefaultGuard) {
        let r = Recorder::default();
        let guard = tracing::subscriber::set_default(r.clone());
        (r, guard)
    }

    /// The warnings recorded so far whose message contains `needle`.
    pub fn warnings_with(&self, needle: &str) -> Vec<Line> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.level == Level::WARN && l.message.contains(needle))
            .cloned()
            .collect()
    }
}

struct Fields {
    source: Option<String>,
    message: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "source" => self.source = Some(format!("{value:?}")),
            _ => {}
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "source" => self.source = Some(value.to_owned()),
            _ => {}
        }
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut f = Fields {
            source: None,
            message: String::new(),
        };
        event.record(&mut f);
        self.lines.lock().unwrap().push(Line {
            level: *event.metadata().level(),
            source: f.source,
            message: f.message,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

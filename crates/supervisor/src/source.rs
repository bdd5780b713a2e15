//! The interface a source implements to be supervised: connect with a resume cursor, then
//! yield [`SourceItem`]s until the connection ends with a [`DisconnectReason`].

use std::future::Future;
use std::time::Duration;

use chat_model::{Cursor, DisconnectReason, Service, SourceItem};

/// Whether a source can pick up where it left off after a reconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// The protocol replays or backfills from the cursor: a reconnect loses nothing.
    Replays,
    /// The protocol cannot replay: every reconnect emits a `gap` event.
    NoReplay,
}

/// Exponential backoff settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The first delay after a failure (the floor of every delay).
    pub initial: Duration,
    /// The cap on any delay.
    pub max: Duration,
    /// How much the delay grows per consecutive failure.
    pub multiplier: f64,
    /// A connection must stay healthy this long before the backoff resets.
    pub healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(120),
            multiplier: 2.0,
            healthy_after: Duration::from_secs(30),
        }
    }
}

/// How a source is supervised: the service's defaults, overridable from the config.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Reconnection backoff.
    pub backoff: Backoff,
    /// Silence (no frame, no keep-alive) longer than this replaces the connection.
    pub stall_timeout: Duration,
    /// Whether reconnects can resume without loss.
    pub resume: Resume,
    /// Give up after this many consecutive failed attempts (unlimited when `None`).
    pub max_retries: Option<u32>,
    /// Give up after failing for this long without a healthy connection (unlimited when `None`).
    pub max_elapsed: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            backoff: Backoff::default(),
            stall_timeout: Duration::from_secs(60),
            resume: Resume::NoReplay,
            max_retries: None,
            max_elapsed: None,
        }
    }
}

/// A chat source the supervisor keeps alive: the five protocols, or one a user writes.
pub trait Source: Send + 'static {
    /// One live connection.
    type Connection: Connection;

    /// The configured name of this source (the `source` field of its events).
    fn name(&self) -> &str;

    /// The service it speaks.
    fn service(&self) -> Service;

    /// How it should be supervised by default.
    fn policy(&self) -> Policy;

    /// Opens a connection, resuming after `resume` when given (replaying or backfilling what
    /// was missed, where the protocol can).
    fn connect(
        &mut self,
        resume: Option<Cursor>,
    ) -> impl Future<Output = Result<Self::Connection, DisconnectReason>> + Send;
}

/// One live connection of a [`Source`].
pub trait Connection: Send + 'static {
    /// The next item; an error ends the connection ([`DisconnectReason::EndOfStream`] for a
    /// clean end).
    fn next_item(&mut self) -> impl Future<Output = Result<SourceItem, DisconnectReason>> + Send;
}

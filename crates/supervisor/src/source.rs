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

/// The longest delay before a prompt reconnect (a clean end of stream or an idle close).
pub const PROMPT_MAX_DELAY: Duration = Duration::from_millis(500);

/// How long a prompt reconnect (a clean end of stream, an idle close) waits: a delay drawn
/// uniformly from `[min, max]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PromptDelay {
    /// The least delay.
    pub min: Duration,
    /// The greatest delay (raised to `min` when below it).
    pub max: Duration,
}

impl Default for PromptDelay {
    fn default() -> Self {
        PromptDelay {
            min: Duration::ZERO,
            max: PROMPT_MAX_DELAY,
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
    /// The delay before a prompt reconnect (Campfire asks for a few seconds).
    pub prompt_delay: PromptDelay,
    /// The longest delay a server may impose (an HTTP `Retry-After`, an SSE `retry:`); a
    /// longer one is cut to [`server_delay_cap`](Self::server_delay_cap) and logged.
    pub max_server_delay: Duration,
}

/// The default of [`Policy::max_server_delay`]: five minutes.
pub const DEFAULT_MAX_SERVER_DELAY: Duration = Duration::from_secs(300);

impl Default for Policy {
    fn default() -> Self {
        Policy {
            backoff: Backoff::default(),
            stall_timeout: Duration::from_secs(60),
            resume: Resume::NoReplay,
            max_retries: None,
            max_elapsed: None,
            prompt_delay: PromptDelay::default(),
            max_server_delay: DEFAULT_MAX_SERVER_DELAY,
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

    /// What this source reads (service, URL, room, flows, stream or channel), stored with its
    /// cursor: a saved cursor (and the recent ids) whose identity differs is not reused, with
    /// a warning. Empty: not checked.
    ///
    /// The identity is written to the state file and may appear in logs: it must never
    /// contain a secret (no token, no password, no URL with credentials or a token in its
    /// query).
    fn identity(&self) -> String {
        String::new()
    }

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

/// Per-source settings from the user's config, applied on top of a source's own
/// [`Source::policy`]; every field left `None` keeps the source's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// Replaces [`Backoff::initial`] (the floor of every backoff delay).
    pub backoff_initial: Option<Duration>,
    /// Replaces [`Backoff::max`] (the cap of every backoff delay).
    pub backoff_max: Option<Duration>,
    /// Replaces [`Policy::stall_timeout`].
    pub stall_timeout: Option<Duration>,
    /// Replaces [`Policy::max_retries`].
    pub max_retries: Option<u32>,
    /// Replaces [`Policy::max_elapsed`].
    pub max_elapsed: Option<Duration>,
    /// Replaces [`Policy::max_server_delay`].
    pub max_server_delay: Option<Duration>,
}

impl Policy {
    /// This policy with the user's overrides applied.
    pub fn with_overrides(mut self, overrides: &Overrides) -> Policy {
        if let Some(d) = overrides.backoff_initial {
            self.backoff.initial = d;
        }
        if let Some(d) = overrides.backoff_max {
            self.backoff.max = d;
        }
        if let Some(d) = overrides.stall_timeout {
            self.stall_timeout = d;
        }
        if overrides.max_retries.is_some() {
            self.max_retries = overrides.max_retries;
        }
        if overrides.max_elapsed.is_some() {
            self.max_elapsed = overrides.max_elapsed;
        }
        if let Some(d) = overrides.max_server_delay {
            self.max_server_delay = d;
        }
        self
    }

    /// The longest delay a server can impose: the larger of
    /// [`max_server_delay`](Self::max_server_delay) and the backoff maximum (a server may
    /// always ask for as long as the source's own backoff could wait anyway).
    pub fn server_delay_cap(&self) -> Duration {
        self.max_server_delay.max(self.backoff.max)
    }

    /// Checks that the policy can work: a non-zero backoff floor not above its cap, a finite
    /// multiplier of at least 1 and a non-zero stall timeout. The error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let b = &self.backoff;
        if b.initial.is_zero() {
            return Err("backoff initial delay must be above zero".into());
        }
        if b.initial > b.max {
            return Err(format!(
                "backoff initial delay {:?} is above the maximum {:?}",
                b.initial, b.max
            ));
        }
        if !b.multiplier.is_finite() || b.multiplier < 1.0 {
            return Err(format!(
                "backoff multiplier {} must be a finite number of at least 1",
                b.multiplier
            ));
        }
        if self.stall_timeout.is_zero() {
            return Err("stall timeout must be above zero".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_is_set() {
        let base = Policy {
            max_retries: Some(3),
            ..Policy::default()
        };
        let same = base.clone().with_overrides(&Overrides::default());
        assert_eq!(same, base);
        let o = Overrides {
            backoff_initial: Some(Duration::from_millis(500)),
            backoff_max: Some(Duration::from_secs(10)),
            stall_timeout: Some(Duration::from_secs(7)),
            max_retries: Some(9),
            max_elapsed: Some(Duration::from_secs(600)),
            max_server_delay: Some(Duration::from_secs(30)),
        };
        let p = base.clone().with_overrides(&o);
        assert_eq!(p.backoff.initial, Duration::from_millis(500));
        assert_eq!(p.backoff.max, Duration::from_secs(10));
        assert_eq!(p.backoff.multiplier, base.backoff.multiplier);
        assert_eq!(p.backoff.healthy_after, base.backoff.healthy_after);
        assert_eq!(p.stall_timeout, Duration::from_secs(7));
        assert_eq!(p.max_retries, Some(9));
        assert_eq!(p.max_elapsed, Some(Duration::from_secs(600)));
        assert_eq!(p.resume, base.resume);
        assert_eq!(p.max_server_delay, Duration::from_secs(30));
        // The cap is never below the backoff maximum.
        assert_eq!(p.server_delay_cap(), Duration::from_secs(30));
        assert_eq!(
            Policy::default().server_delay_cap(),
            DEFAULT_MAX_SERVER_DELAY
        );
        let long_backoff = Policy {
            backoff: Backoff {
                max: Duration::from_secs(3600),
                ..Backoff::default()
            },
            ..Policy::default()
        };
        assert_eq!(long_backoff.server_delay_cap(), Duration::from_secs(3600));
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(Policy::default().validate().is_ok());
        let mut p = Policy::default();
        p.backoff.initial = Duration::from_secs(300);
        assert!(p.validate().unwrap_err().contains("above the maximum"));
        let mut p = Policy::default();
        p.backoff.initial = Duration::ZERO;
        assert!(p.validate().unwrap_err().contains("above zero"));
        let mut p = Policy::default();
        p.backoff.multiplier = 0.5;
        assert!(p.validate().unwrap_err().contains("multiplier"));
        let mut p = Policy::default();
        p.backoff.multiplier = f64::NAN;
        assert!(p.validate().is_err());
        let p = Policy {
            stall_timeout: Duration::ZERO,
            ..Policy::default()
        };
        assert!(p.validate().unwrap_err().contains("stall timeout"));
    }
}

//! Ustream Social Stream poller: typed responses, drift-free sans-IO schedule, mapping to
//! chat-model.
//!
//! - [`wire`]: the response envelope and payload items, both shapes seen in the wild.
//! - [`mapping`]: payload items to [`chat_model::Event`]s (ids `ustream:<channel>:<uid>`),
//!   time ordering, the "live at" suffix.
//! - [`schedule`]: the document's drift-free timing as a sans-IO state machine.
//! - [`memory`]: the recent messages per user, so an `ignUser` retracts earlier ones.
//! - [`Poller`]: the async driver that yields [`chat_model::SourceItem`]s, applies control
//!   items (host switch, retractions, ignore lists) and resumes from a [`UstreamCursor`].
#![forbid(unsafe_code)]
#![cfg_attr(doctest, doc = include_str!("../README.md"))]

mod error;
pub mod mapping;
pub mod memory;
mod poller;
pub mod schedule;
pub mod wire;

pub use error::Error;
pub use memory::MessageMemory;
pub use poller::{Poller, PollerConfig, RetryPolicy, UstreamCursor, resolve_host};
/// The HTTP client type a [`Poller`] can share ([`PollerConfig::http_client`]).
pub use reqwest::Client as HttpClient;
pub use schedule::{Planned, RequestKind, Schedule, ScheduleState};
pub use wire::{Item, Message, NetworkAccount, Response};

/// The real service's base URL.
pub const DEFAULT_BASE_URL: &str = "http://socialstream.ustream.tv";

//! Flowdock streaming client: typed wire messages, a pure mapping to [`chat_model::Event`],
//! and an async client for both streaming transports (Event-Stream with `Last-Event-ID`
//! resume, JSON stream with REST backfill).
//!
//! The crate stands alone: it depends on `chat-model` and `stream-frame` only.
//!
//! * [`wire`]: [`WireMessage`] and the typed [`Payload`] of every event type.
//! * [`mapping`]: [`to_event`], wire message to normalized event (stable ids
//!   `flowdock:<org/flow>:<id>`).
//! * [`session`]: the sans-IO [`StreamDecoder`] and the resume [`FlowdockCursor`].
//! * [`client`]: [`Client`] and [`FlowdockStream`], the reqwest driver.
//! * [`users`]: authors' names from the REST users API, cached ([`UserCache`]).
#![forbid(unsafe_code)]

pub mod client;
pub mod error;
mod http;
pub mod mapping;
pub mod session;
pub mod users;
pub mod wire;

pub use client::{Active, Client, ClientConfig, FlowdockStream};
pub use error::Error;
pub use mapping::to_event;
pub use session::{FlowdockCursor, StreamDecoder, Transport};
pub use users::{Names, User, UserCache};
pub use wire::{Payload, WireMessage};

/// A stall timeout that suits both transports: the server sends a keep-alive (`\n` on the
/// JSON stream, a comment on Event-Stream) about every 20 seconds, so 75 s is more than three
/// missed keep-alives, within the 60-90 s a known SSE client used.
pub const DEFAULT_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(75);
/// The keep-alive period this crate assumes of the server (and the emulator uses).
pub const KEEPALIVE_PERIOD: std::time::Duration = std::time::Duration::from_secs(20);

/// Compiles the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod client;
pub mod error;
mod http;
pub mod map;
pub mod session;
pub mod users;
pub mod wire;

/// The wire → event mapping under its former module name.
pub use map as mapping;

pub use client::{Client, ClientConfig, FlowdockStream};
pub use error::Error;
pub use map::to_event;
pub use session::{Active, FlowdockCursor, Request, Response, Session, Settings, Transport};
pub use users::{Found, LookupRound, Names, RoundOutcome, User, UserCache};
pub use wire::{Payload, WireMessage};

/// A stall timeout that suits both transports: the server sends a keep-alive (`\n` on the
/// JSON stream, a comment on Event-Stream) about every 20 seconds, so 75 s is more than three
/// missed keep-alives, within the 60-90 s a known SSE client used.
pub const DEFAULT_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(75);
/// The keep-alive period this crate assumes of the server (and the emulator uses).
pub const KEEPALIVE_PERIOD: std::time::Duration = std::time::Duration::from_secs(20);

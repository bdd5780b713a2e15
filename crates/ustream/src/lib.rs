#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod client;
mod error;
pub mod map;
mod session;
pub mod wire;

pub use client::Client;
pub use error::Error;
/// The HTTP client type a [`Client`] can share ([`Client::with_http_client`]).
pub use reqwest::Client as HttpClient;
pub use session::{
    Config, DEFAULT_MAX_WINDOW, MessageMemory, Request, RequestKind, Response, ScheduleState,
    Session, UstreamCursor, resolve_host,
};
pub use wire::{Envelope, Item, Message, NetworkAccount};

/// The real service's base URL.
pub const DEFAULT_BASE_URL: &str = "http://socialstream.ustream.tv";

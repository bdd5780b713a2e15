//! A Campfire streaming client: typed wire messages, a pure mapping to [`chat_model::Event`]s,
//! and an async client that joins a room, backfills what a reconnect missed and streams the
//! room live.
//!
//! * [`wire`]: the messages of the streaming and REST APIs ([`Message`], [`MessageType`]).
//! * [`map`]: [`to_event`], message → event, with stable ids `campfire:<room>:<id>`.
//! * [`Session`]: the sans-IO core of one connection (bytes in, [`chat_model::SourceItem`]s
//!   out, resume cursor, duplicate suppression).
//! * [`Client`] / [`LiveStream`]: the thin async driver over reqwest (rustls).
//!
//! The crate depends only on `chat-model` and `stream-frame`; it works without Tributary's
//! supervisor.
#![forbid(unsafe_code)]
#![doc = include_str!("../README.md")]

mod client;
mod error;
pub mod map;
mod session;
pub mod wire;

pub use client::{
    Client, ClientConfig, DEFAULT_STREAMING_URL, LiveStream, MAX_BACKFILL_PAGES, RECENT_LIMIT,
    retry_after,
};
pub use error::{Endpoint, Error};
pub use map::{event_id, kind_of, to_event};
pub use session::{CampfireCursor, Session};
pub use wire::{Message, MessageType, RecentMessages, Tweet};

//! Multistreamer WebSocket client: typed messages both ways, a mapping to
//! [`chat_model::Event`]s, and an async client on tokio-tungstenite (rustls with the `ring`
//! provider for `wss://`).
//!
//! - [`wire`]: every message type of the wiki's WebSocket API, both directions; unknown types
//!   pass through.
//! - [`map`]: wire message → event, with stable derived ids (multistreamer has no message ids).
//! - [`Session`] and [`Liveness`]: the sans-IO core (frame meaning, ping/pong deadline).
//! - [`connect`] / [`Connection`]: the live connection yielding [`chat_model::SourceItem`]s.
//! - [`send_once`] / [`Connection::send_chat`]: sending text, emotes and `/msg` private
//!   messages, with the writer flow and confirmation by the server's echo when it comes.
//!
//! Multistreamer cannot replay: a reconnect may miss messages. The token travels in the URL's
//! query; every URL this crate prints is redacted.
#![forbid(unsafe_code)]

mod client;
mod error;
pub mod map;
mod send;
mod session;
pub mod tls;
pub mod wire;

pub use client::{
    ConnectOptions, Connection, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PING_INTERVAL, DEFAULT_PONG_TIMEOUT, Handle, HandleClosed, connect,
};
pub use error::Error;
pub use send::{
    DEFAULT_ECHO_WAIT, IRC_ACCOUNT, SendConfirmation, SendError, SendPlan, SendRequest,
    is_msg_command, plan_send, send_once,
};
pub use session::{Liveness, LivenessAction, Received, Session, schedule_for_stall_timeout};
pub use wire::{AccountId, ClientMessage, ServerMessage, Status};

/// The README's examples, compiled as doctests so they cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod client;
mod error;
pub mod map;
pub mod session;
pub mod wire;

pub use client::{Client, ClientConfig, DEFAULT_STREAMING_URL, LiveStream};
pub use error::{Endpoint, Error};
pub use map::{event_id, kind_of, to_event};
pub use session::{
    CampfireCursor, Host, MAX_BACKFILL_PAGES, Method, Purpose, RECENT_LIMIT, Request, Response,
    Session, SessionConfig,
};
pub use wire::{Message, MessageType, RecentMessages, Tweet};

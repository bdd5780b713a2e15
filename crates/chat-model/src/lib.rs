#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod chain;
mod cursor;
mod event;
pub mod fs;
mod http;
mod item;
mod reason;
mod secret;
mod sync;
mod time;

pub use chain::error_chain;
pub use cursor::{Cursor, CursorError};
pub use event::{
    Author, ConnectionInfo, ConnectionState, Event, GapSpan, Kind, SCHEMA_VERSION, Service,
};
pub use http::{StatusClass, parse_retry_after};
pub use item::SourceItem;
pub use reason::{DisconnectReason, Disposition};
pub use secret::{Secret, redact_url};
pub use sync::lock_ignoring_poison;

/// UTC timestamps as used throughout the model.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

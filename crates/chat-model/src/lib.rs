//! The one vocabulary every Tributary crate speaks: the normalized chat [`Event`], its
//! [`Kind`], [`Author`] and [`Service`], plus the notions the supervisor and the protocol
//! crates share — a resume [`Cursor`], a [`DisconnectReason`] and a redacting [`Secret`] —
//! and the one reading of HTTP answers ([`StatusClass`], [`parse_retry_after`]).
//!
//! This crate does no network IO; its one file operation is the atomic writer
//! [`fs::write_atomically`] that saved cursors and rotated keys share. Its JSON form is
//! Tributary's output schema, version 1 (`docs/event-schema.md`): one [`Event`] per line.
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

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

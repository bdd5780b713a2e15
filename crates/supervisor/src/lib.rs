//! Reconnect supervisor: keeps any number of chat sources alive and merges them into one
//! ordered, deduplicated event stream, with backoff and jitter, stall detection, resume
//! cursors that survive restarts, and explicit gap events where a protocol cannot replay.
#![forbid(unsafe_code)]

mod source;

pub use source::{Backoff, Connection, Policy, Resume, Source};

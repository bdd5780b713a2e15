use std::time::Duration;

use crate::{Cursor, Event};

/// One thing a live connection to a source produced, in the order it happened.
///
/// Protocol clients yield these; the supervisor consumes them. An `Err(DisconnectReason)` from
/// the connection (not an item) ends it.
// Events dominate the stream; boxing them would add an allocation per event for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SourceItem {
    /// A normalized event, with the resume cursor that becomes valid once it is delivered.
    Event {
        /// The event.
        event: Event,
        /// The cursor to resume after this event, when the protocol has one.
        cursor: Option<Cursor>,
    },
    /// Proof of life without an event: a keep-alive, a pong, a successful empty poll.
    KeepAlive,
    /// The resume position advanced without an event (an SSE id on a comment, a poll range).
    Cursor(Cursor),
    /// The server asked for this reconnection delay (an SSE `retry:` field).
    RetryHint(Duration),
    /// From now on, silence longer than this means the connection is dead (a poll interval
    /// changed).
    StallTimeout(Duration),
    /// A frame was malformed or oversize and was skipped; the connection goes on.
    Malformed {
        /// What was wrong, with the byte offset in the stream.
        error: String,
    },
}

impl SourceItem {
    /// An event without a cursor of its own.
    pub fn event(event: Event) -> Self {
        SourceItem::Event {
            event,
            cursor: None,
        }
    }

    /// The event this item carries, if it is one.
    pub fn as_event(&self) -> Option<&Event> {
        match self {
            SourceItem::Event { event, .. } => Some(event),
            _ => None,
        }
    }
}

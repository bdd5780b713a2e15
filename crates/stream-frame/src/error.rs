//! The error type shared by all decoders.

use std::fmt;

/// A frame that could not be decoded: what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// Byte offset in the stream of the first byte of the offending frame, line or junk.
    pub offset: u64,
    /// What was wrong.
    pub kind: FrameErrorKind,
}

/// What was wrong with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameErrorKind {
    /// The frame was larger than the configured limit and was skipped without being buffered.
    Oversize {
        /// The limit in force, in bytes.
        limit: usize,
    },
    /// The bytes were not a frame: junk between JSON values, an unterminated value, ...
    Malformed(String),
}

impl fmt::Display for FrameErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameErrorKind::Oversize { limit } => {
                write!(f, "frame larger than the {limit}-byte limit, skipped")
            }
            FrameErrorKind::Malformed(what) => write!(f, "malformed frame: {what}"),
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte offset {})", self.kind, self.offset)
    }
}

impl std::error::Error for FrameError {}

impl FrameError {
    pub(crate) fn oversize(offset: u64, limit: usize) -> Self {
        FrameError {
            offset,
            kind: FrameErrorKind::Oversize { limit },
        }
    }

    pub(crate) fn malformed(offset: u64, what: impl Into<String>) -> Self {
        FrameError {
            offset,
            kind: FrameErrorKind::Malformed(what.into()),
        }
    }
}

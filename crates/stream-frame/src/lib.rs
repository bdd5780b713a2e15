#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod error;
mod json_lines;
mod json_seq;
mod scan;
mod sse;
mod text;

#[doc(hidden)]
pub mod check;

pub use error::{FrameError, FrameErrorKind};
pub use json_lines::{Delimiter, JsonLinesDecoder};
pub use json_seq::JsonSeqDecoder;
pub use sse::{SseDecoder, SseEvent, SseItem};
pub use text::Str;

/// A chunk of input for a decoder's `feed`: borrowed bytes, or a [`bytes::Bytes`] (as HTTP
/// clients hand chunks over) whose frames the JSON decoders return as slices without copying.
///
/// Built implicitly by `feed` from `&[u8]`, `&&[u8]`, `&[u8; N]`, `&Vec<u8>`, `&str`,
/// `&String` or `&Bytes`.
#[derive(Debug, Clone, Copy)]
pub enum Chunk<'a> {
    /// Borrowed bytes: frames that must outlive the call are copied.
    Slice(&'a [u8]),
    /// Shared bytes: frames are slices of the chunk (they keep it alive while held).
    Bytes(&'a bytes::Bytes),
}

impl<'a> Chunk<'a> {
    /// The chunk's bytes.
    #[inline]
    pub fn as_slice(&self) -> &'a [u8] {
        match *self {
            Chunk::Slice(s) => s,
            Chunk::Bytes(b) => b,
        }
    }
}

impl<'a> From<&'a [u8]> for Chunk<'a> {
    fn from(s: &'a [u8]) -> Self {
        Chunk::Slice(s)
    }
}

impl<'a, 'b: 'a> From<&'a &'b [u8]> for Chunk<'a> {
    fn from(s: &'a &'b [u8]) -> Self {
        Chunk::Slice(s)
    }
}

impl<'a> From<&'a String> for Chunk<'a> {
    fn from(s: &'a String) -> Self {
        Chunk::Slice(s.as_bytes())
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Chunk<'a> {
    fn from(s: &'a [u8; N]) -> Self {
        Chunk::Slice(s)
    }
}

impl<'a> From<&'a Vec<u8>> for Chunk<'a> {
    fn from(s: &'a Vec<u8>) -> Self {
        Chunk::Slice(s)
    }
}

impl<'a> From<&'a str> for Chunk<'a> {
    fn from(s: &'a str) -> Self {
        Chunk::Slice(s.as_bytes())
    }
}

impl<'a> From<&'a bytes::Bytes> for Chunk<'a> {
    fn from(b: &'a bytes::Bytes) -> Self {
        Chunk::Bytes(b)
    }
}

/// Size limits a decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame (JSON text, SSE line or SSE event data) accepted, in bytes.
    pub max_frame: usize,
}

impl Limits {
    /// The default maximum frame size: 1 MiB.
    pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

    /// Limits with the given maximum frame size in bytes (at least 1).
    pub fn with_max_frame(max_frame: usize) -> Self {
        Limits {
            max_frame: max_frame.max(1),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: Self::DEFAULT_MAX_FRAME,
        }
    }
}

/// One thing a decoder found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<F> {
    /// A complete frame.
    Frame(F),
    /// Whitespace between frames: the server is alive but sent nothing (liveness only).
    KeepAlive,
    /// A malformed or oversize frame that was skipped; decoding goes on after it.
    Error(FrameError),
}

/// A raw JSON frame: the bytes of one JSON text, not parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Byte offset of the frame's first byte in the stream.
    pub offset: u64,
    /// The frame's bytes, without delimiters or surrounding whitespace.
    pub bytes: bytes::Bytes,
}

/// What every decoder does: take chunks, finish a stream, report what it holds.
///
/// Code that drives any of the decoders (a protocol session, the `decode` command, the fuzz
/// checks) is written once against this trait instead of once per decoder.
///
/// ```
/// use stream_frame::{Decode, Delimiter, Item, JsonLinesDecoder, Limits};
///
/// fn frames<D: Decode>(mut decoder: D, chunks: &[&[u8]]) -> Vec<Item<D::Output>> {
///     let mut out = Vec::new();
///     for chunk in chunks {
///         decoder.feed_chunk((*chunk).into(), &mut out);
///         assert!(decoder.buffered_len() <= decoder.limits().max_frame);
///     }
///     decoder.finish_stream(&mut out);
///     out
/// }
///
/// let items = frames(JsonLinesDecoder::new(Delimiter::Cr, Limits::default()), &[b"{\"a\"", b":1}\r"]);
/// assert!(matches!(&items[..], [Item::Frame(f)] if &f.bytes[..] == b"{\"a\":1}"));
/// ```
pub trait Decode {
    /// What a complete frame decodes to.
    type Output;

    /// Decodes the next chunk, appending what it completed to `out`.
    fn feed_chunk(&mut self, chunk: Chunk<'_>, out: &mut Vec<Item<Self::Output>>);

    /// Ends the stream (see each decoder's `finish`); the decoder is then ready for a new one.
    fn finish_stream(&mut self, out: &mut Vec<Item<Self::Output>>);

    /// Bytes held for an incomplete frame (never more than the limit).
    fn buffered_len(&self) -> usize;

    /// The limits in force.
    fn limits(&self) -> Limits;
}

macro_rules! impl_decode {
    ($decoder:ty, $output:ty) => {
        impl Decode for $decoder {
            type Output = $output;

            fn feed_chunk(&mut self, chunk: Chunk<'_>, out: &mut Vec<Item<$output>>) {
                self.feed(chunk, out);
            }

            fn finish_stream(&mut self, out: &mut Vec<Item<$output>>) {
                self.finish(out);
            }

            fn buffered_len(&self) -> usize {
                <$decoder>::buffered_len(self)
            }

            fn limits(&self) -> Limits {
                <$decoder>::limits(self)
            }
        }
    };
}

impl_decode!(JsonLinesDecoder, Frame);
impl_decode!(JsonSeqDecoder, Frame);
impl_decode!(SseDecoder, SseItem);

/// JSON insignificant whitespace (RFC 8259): space, tab, LF, CR.
#[inline]
pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

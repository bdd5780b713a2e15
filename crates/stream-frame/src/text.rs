//! [`Str`]: an immutable, cheaply cloned UTF-8 string that can share one buffer with others.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use smol_str::SmolStr;

/// An immutable UTF-8 string, cheap to clone, that derefs to `&str`.
///
/// The SSE decoder hands out event data, types and ids as `Str` so that it needs no heap
/// allocation per event: a `Str` is a `&'static str` (the default event type `"message"`),
/// a short string (up to 23 bytes) stored inline, or a range of a reference-counted text
/// buffer that several strings share (the validated text of the chunk the value came from;
/// the data and id of a plain `id:`/`data:` event are both such ranges). Cloning never copies
/// more than the inline bytes. A `Str` holding a slice of a shared buffer keeps the whole
/// buffer (at most about 32 KiB, or one long line) alive; use
/// [`into_string`](Self::into_string) to keep a value long-term without it.
///
/// Use it like a `&str` (`*`, `&s[..]`, `.as_str()`, any `str` method), compare it with
/// `&str`/`String`, format it with `{}`/`{:?}`.
#[derive(Clone)]
pub struct Str(Repr);

#[derive(Clone)]
enum Repr {
    /// Static or inline (short) text, or text of its own.
    Small(SmolStr),
    /// A range of a shared buffer.
    Shared {
        buf: Arc<String>,
        start: usize,
        end: usize,
    },
}

impl Str {
    /// A `Str` of a static string (no allocation).
    pub const fn from_static(s: &'static str) -> Self {
        Str(Repr::Small(SmolStr::new_static(s)))
    }

    /// Short strings are kept inline (no allocation, no reference count to update on clone).
    pub(crate) const INLINE: usize = 23;

    /// The bytes `start..end` of `buf`, or `None` when that is not a range of `buf` on
    /// character boundaries.
    #[inline(always)]
    pub(crate) fn slice_of(buf: &Arc<String>, start: usize, end: usize) -> Option<Self> {
        let text = buf.get(start..end)?;
        if text.len() <= Self::INLINE {
            return Some(Str(Repr::Small(SmolStr::new_inline(text))));
        }
        Some(Str(Repr::Shared {
            buf: Arc::clone(buf),
            start,
            end,
        }))
    }

    /// The bytes `start..end` of `buf` as a shared range even when short (cheaper to build
    /// than an inline copy), or `None` when that is not a range on character boundaries.
    #[inline(always)]
    pub(crate) fn shared_of(buf: &Arc<String>, start: usize, end: usize) -> Option<Self> {
        buf.get(start..end)?;
        Some(Str(Repr::Shared {
            buf: Arc::clone(buf),
            start,
            end,
        }))
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Small(s) => s,
            Repr::Shared { buf, start, end } => &buf[*start..*end],
        }
    }

    /// The text as an owned `String` (a copy; the shared buffer is released).
    pub fn into_string(self) -> String {
        String::from(self.as_str())
    }
}

impl Default for Str {
    fn default() -> Self {
        Str::from_static("")
    }
}

impl Deref for Str {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Str {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Borrow<str> for Str {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Str {
    /// Copies `s` into a buffer of its own.
    fn from(s: &str) -> Self {
        Str(Repr::Small(SmolStr::new(s)))
    }
}

impl From<String> for Str {
    /// Takes over `s` without copying it (short strings are copied inline).
    fn from(s: String) -> Self {
        if s.len() <= Self::INLINE {
            return Str(Repr::Small(SmolStr::new_inline(&s)));
        }
        let end = s.len();
        Str(Repr::Shared {
            buf: Arc::new(s),
            start: 0,
            end,
        })
    }
}

impl From<&String> for Str {
    fn from(s: &String) -> Self {
        Str::from(s.as_str())
    }
}

impl From<Str> for String {
    fn from(s: Str) -> Self {
        s.into_string()
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Str {
    fn eq(&self, other: &Str) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Str {}

impl PartialOrd for Str {
    fn partial_cmp(&self, other: &Str) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Str {
    fn cmp(&self, other: &Str) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Str {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

macro_rules! eq_with {
    ($($t:ty),*) => {$(
        impl PartialEq<$t> for Str {
            fn eq(&self, other: &$t) -> bool {
                self.as_str() == AsRef::<str>::as_ref(other)
            }
        }
        impl PartialEq<Str> for $t {
            fn eq(&self, other: &Str) -> bool {
                AsRef::<str>::as_ref(self) == other.as_str()
            }
        }
    )*};
}
eq_with!(str, &str, String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_share_one_buffer_and_compare_as_text() {
        let long = "x".repeat(30);
        let buf = Arc::new(format!("id: 7\ndata: caf\u{e9}{long}\n"));
        let id = Str::slice_of(&buf, 4, 5).unwrap();
        assert_eq!(id, "7");
        assert_eq!(Arc::strong_count(&buf), 1, "short strings are inline");
        let data = Str::slice_of(&buf, 12, 47).unwrap();
        let text = format!("caf\u{e9}{long}");
        assert_eq!(data, text.as_str());
        assert_eq!(text.as_str(), data);
        assert_eq!(data, text);
        assert_eq!(format!("{data} {data:?}"), format!("{text} {text:?}"));
        assert_eq!(Arc::strong_count(&buf), 2, "a long one shares the buffer");
        assert_eq!(data.clone().into_string(), text);
        assert!(Str::slice_of(&buf, 12, 16).is_none(), "inside a character");
        assert!(Str::slice_of(&buf, 12, 99).is_none());
        assert_eq!(Str::from_static("message"), Str::from("message"));
        assert_eq!(Str::default().len(), 0);
    }
}

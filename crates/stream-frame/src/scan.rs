//! [`Pair`]: a search for either of two bytes, set up once instead of on every call.

use std::sync::LazyLock;

/// `\n` or `\r`: the end of an SSE line (or of a delimited JSON frame split on either).
pub(crate) static LINE_ENDS: LazyLock<Pair> = LazyLock::new(|| Pair::new(b'\n', b'\r'));
/// `\n` alone.
pub(crate) static LF: LazyLock<Pair> = LazyLock::new(|| Pair::new(b'\n', b'\n'));
/// `\r` alone.
pub(crate) static CR: LazyLock<Pair> = LazyLock::new(|| Pair::new(b'\r', b'\r'));
/// The end of a JSON string or an escape in it.
pub(crate) static QUOTES: LazyLock<Pair> = LazyLock::new(|| Pair::new(b'"', b'\\'));
/// The start of a JSON object or array.
pub(crate) static OPENS: LazyLock<Pair> = LazyLock::new(|| Pair::new(b'{', b'['));

/// Finds the first occurrence of either of two bytes. `memchr::memchr2` picks its routine
/// and builds its search vectors on every call, which costs about as much as scanning a short
/// line; the decoders keep a reference to one of the statics above and search with it.
#[derive(Debug)]
pub(crate) struct Pair {
    a: u8,
    b: u8,
    #[cfg(target_arch = "x86_64")]
    avx2: Option<memchr::arch::x86_64::avx2::memchr::Two>,
}

impl Pair {
    /// A search for `a` or `b`.
    fn new(a: u8, b: u8) -> Self {
        Pair {
            a,
            b,
            #[cfg(target_arch = "x86_64")]
            avx2: memchr::arch::x86_64::avx2::memchr::Two::new(a, b),
        }
    }

    /// The index of the first `a` or `b` in `haystack`.
    #[inline(always)]
    pub(crate) fn find(&self, haystack: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(two) = &self.avx2 {
            return two.find(haystack);
        }
        memchr::memchr2(self.a, self.b, haystack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_of_either_byte_at_every_length_and_position() {
        let pairs: [(&Pair, u8, u8); 5] = [
            (&LINE_ENDS, b'\n', b'\r'),
            (&LF, b'\n', b'\n'),
            (&CR, b'\r', b'\r'),
            (&QUOTES, b'"', b'\\'),
            (&OPENS, b'{', b'['),
        ];
        for (pair, a, b) in pairs {
            for len in 0..100 {
                let mut hay = vec![b'x'; len];
                assert_eq!(pair.find(&hay), None, "{len}");
                for at in (0..len).rev() {
                    hay[at] = if at % 2 == 0 { a } else { b };
                    assert_eq!(pair.find(&hay), Some(at), "{len} {at}");
                }
            }
        }
    }
}

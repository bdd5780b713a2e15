//! [`Pair`]: a search for either of two bytes, set up once instead of on every call.

/// Finds the first occurrence of either of two bytes. `memchr::memchr2` picks its routine
/// and builds its search vectors on every call, which costs about as much as scanning a short
/// line; a decoder keeps a `Pair` and searches each line with it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pair {
    a: u8,
    b: u8,
    #[cfg(target_arch = "x86_64")]
    avx2: Option<memchr::arch::x86_64::avx2::memchr::Two>,
}

impl Pair {
    /// A search for `a` or `b`.
    pub(crate) fn new(a: u8, b: u8) -> Self {
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
        let pair = Pair::new(b'\n', b'\r');
        for len in 0..100 {
            let mut hay = vec![b'x'; len];
            assert_eq!(pair.find(&hay), None, "{len}");
            for at in (0..len).rev() {
                hay[at] = if at % 2 == 0 { b'\n' } else { b'\r' };
                assert_eq!(pair.find(&hay), Some(at), "{len} {at}");
            }
        }
    }
}

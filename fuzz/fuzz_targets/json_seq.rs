//! Fuzz target: concatenated JSON. The first bytes pick the size limit and the chunk sizes; the body is
//! decoded whole, in those chunks and byte by byte, and the results must be identical (plus
//! the decoder invariants in `stream_frame::check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stream_frame::check::check_seq(data);
});

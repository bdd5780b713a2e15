//! Tributary: many live chat streams in, one clean stream out.
fn main() {}

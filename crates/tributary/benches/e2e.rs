//! `cargo xtask bench e2e` (being written).

fn main() {
    eprintln!("the e2e benchmark is being written");
}

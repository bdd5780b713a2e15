//! `cargo xtask bench idle` (being written).

fn main() {
    eprintln!("the idle benchmark is being written");
}

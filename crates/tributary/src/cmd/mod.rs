//! One module per subcommand: its arguments and what it does.

pub mod check;
pub mod decode;
pub mod demo;
pub mod emulate;
pub mod refresh_key;
pub mod run;
pub mod send;

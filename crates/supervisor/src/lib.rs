#![cfg_attr(feature = "tokio", doc = include_str!("../README.md"))]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "Reconnect supervision, sans-IO: `SourceMachine`, `Ledger`, the state file and dedup. \
           The tokio driver and this crate's guide (README.md) need the default `tokio` feature."
)]
#![forbid(unsafe_code)]

mod dedup;
#[cfg(feature = "tokio")]
mod driver;
mod error;
pub mod ledger;
pub mod machine;
mod report;
mod source;
pub mod state;

pub use dedup::RecentIds;
#[cfg(feature = "tokio")]
pub use driver::{EventStream, Options, Supervisor, SupervisorHandle};
pub use error::SupervisorError;
pub use ledger::{Checkpointed, Commit, Ledger};
pub use machine::{
    Action, Jitter, MachineConfig, Outcome, Restored, ServerDelay, SourceMachine, SourceState,
    SourceStats,
};
pub use report::{Report, SourceReport, StatsReader};
pub use source::{
    Backoff, Connection, DEFAULT_MAX_SERVER_DELAY, Overrides, Policy, PromptDelay, Resume, Source,
};
pub use state::{SavedSource, StateFile};

#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod dedup;
mod driver;
pub mod machine;
mod source;
pub mod state;

pub use dedup::RecentIds;
pub use driver::{
    EventStream, Options, Report, SourceReport, StatsReader, Supervisor, SupervisorError,
    SupervisorHandle,
};
pub use machine::{
    Action, Jitter, MachineConfig, Outcome, Restored, ServerDelay, SourceMachine, SourceState,
    SourceStats,
};
pub use source::{
    Backoff, Connection, DEFAULT_MAX_SERVER_DELAY, Overrides, Policy, PromptDelay, Resume, Source,
};
pub use state::{SavedSource, StateFile};

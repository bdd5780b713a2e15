//! The typed error of setting up a [`Supervisor`](crate::Supervisor) or writing its state file.

use std::path::PathBuf;

/// Errors setting up a `Supervisor` or writing its state file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The state file exists but cannot be read (permissions, a directory in its place).
    #[error("cannot read state file {}: {source}", path.display())]
    StateRead {
        /// The state file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The state file is corrupt and could not be renamed out of the way.
    #[error("state file {} is corrupt ({problem}) and could not be set aside: {source}", path.display())]
    StateSetAside {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// Why the rename failed.
        source: std::io::Error,
    },
    /// The state file could not be written.
    #[error("cannot write state file {}: {source}", path.display())]
    StateWrite {
        /// The state file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Two sources have the same name.
    #[error("two sources are named {name:?}; every source needs a unique name")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A source's policy (after overrides) cannot work.
    #[error("source {name:?}: {problem}")]
    InvalidPolicy {
        /// The source.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

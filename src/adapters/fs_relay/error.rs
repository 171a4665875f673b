//! The file-system relay's own failures, mapped onto [`RelayError`].

use std::io;
use std::path::PathBuf;

use crate::ports::RelayError;

/// What went wrong below the relay rules. Never carries file contents.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FsRelayError {
    /// A file-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The options given to open a new relay directory are out of range.
    #[error("invalid relay options: {0}")]
    Options(&'static str),
    /// A blocking task did not complete (panicked or was cancelled).
    #[error("relay task did not complete: {0}")]
    Task(String),
}

impl From<FsRelayError> for RelayError {
    fn from(e: FsRelayError) -> Self {
        RelayError::Backend(Box::new(e))
    }
}

/// A closure mapping an [`io::Error`] on `path` during `op` to a [`RelayError`].
pub(crate) fn io_err(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(io::Error) -> RelayError {
    let path = path.to_path_buf();
    move |source| FsRelayError::Io { op, path, source }.into()
}

/// A [`RelayError::Corrupt`] for data read back from `path` that is not as written.
pub(crate) fn corrupt(path: &std::path::Path, what: impl std::fmt::Display) -> RelayError {
    RelayError::Corrupt(format!("{}: {what}", path.display()))
}

/// Describes a JSON decoding failure by position only (the bytes may be user data).
pub(crate) fn json_problem(e: &serde_json::Error) -> String {
    format!(
        "undecodable JSON ({:?} error at line {}, column {})",
        e.classify(),
        e.line(),
        e.column()
    )
}

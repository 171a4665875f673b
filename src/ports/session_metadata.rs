//! The `SessionMetadataProvider` port: the rows a side-effect names but does not carry.
//!
//! Effects carry ids only (`SessionCreated { session_id, .. }`), while the cloud rows need the
//! title, repository name and timestamps. The cold path looks them up here at the moment it
//! syncs, so it always uploads the *current* metadata, whatever the effect's age.
//!
//! # Contract
//!
//! Every named clause has a conformance test of the same name in
//! [`conformance::session_metadata`](crate::ports::conformance::session_metadata).
//!
//! - `returns_committed_rows`: [`SessionMetadataProvider::repository`] and
//!   [`SessionMetadataProvider::session`] MUST return the latest committed state of the row.
//! - `unknown_ids_are_none`: an id that was never committed MUST yield `Ok(None)`, not an
//!   error.
//! - `deleted_rows_are_none`: a deleted row MUST yield `Ok(None)` (the effect that deleted it
//!   is later in the log, and the consumer will apply it).
//! - Failures to *read* (a locked or damaged database) MUST be errors, never `None`: `None`
//!   makes the consumer skip the upsert.
//!
//! Implementations MAY block briefly (an SQLite read); async callers move them off the runtime.

use std::fmt::Debug;

use crate::domain::{Repository, RepositoryId, Session, SessionId};

/// Why metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The source is temporarily unable to answer (busy database); retry later.
    #[error("session metadata is temporarily unavailable: {0}")]
    Unavailable(String),
    /// Any other failure.
    #[error("session metadata backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Looks up repository and session rows by id. See the module docs for the contract.
#[cfg_attr(test, mockall::automock)]
pub trait SessionMetadataProvider: Send + Sync + Debug + 'static {
    /// The repository's current row, or `None` if it does not exist (any more).
    fn repository(&self, id: RepositoryId) -> Result<Option<Repository>, MetadataError>;

    /// The session's current row, or `None` if it does not exist (any more).
    fn session(&self, id: SessionId) -> Result<Option<Session>, MetadataError>;
}

//! Domain errors: what a caller did wrong, independent of any storage technology.

use super::ids::{IdError, MessageId, RepositoryId, SessionId};

/// A rule of the domain was broken. Every variant is the caller's to fix; none is transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A malformed id.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// A malformed field value.
    #[error("invalid {what}: {reason}")]
    InvalidValue {
        /// Which field.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The session does not exist (never created, or deleted).
    #[error("session {0} does not exist")]
    SessionNotFound(SessionId),
    /// The session is closed and accepts no more messages.
    #[error("session {0} is closed")]
    SessionClosed(SessionId),
    /// The session already exists.
    #[error("session {0} already exists")]
    SessionExists(SessionId),
    /// The repository does not exist.
    #[error("repository {0} does not exist")]
    RepositoryNotFound(RepositoryId),
    /// The repository already exists.
    #[error("repository {0} already exists")]
    RepositoryExists(RepositoryId),
    /// A message with this id was already committed.
    #[error("message {0} already exists")]
    DuplicateMessage(MessageId),
    /// Message content is larger than allowed.
    #[error("message content of {len} bytes exceeds the limit of {max}")]
    ContentTooLarge {
        /// Actual size.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A batch append was given no messages.
    #[error("a batch must contain at least one message")]
    EmptyBatch,
}

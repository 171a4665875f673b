//! Engine errors.

use crate::domain::DomainError;
use crate::ports::StoreError;

/// Why an engine operation failed. Nothing was committed, no view changed and no effect was
/// emitted when an operation returns an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request broke a domain rule (unknown or closed session, invalid input, ...).
    #[error(transparent)]
    Rejected(DomainError),
    /// The store failed (full disk, busy, corrupt, ...).
    #[error(transparent)]
    Store(StoreError),
}

impl EngineError {
    /// Whether the same call may succeed later (full disk, busy database).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_transient())
    }
}

impl From<DomainError> for EngineError {
    fn from(e: DomainError) -> Self {
        Self::Rejected(e)
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(d) => Self::Rejected(d),
            other => Self::Store(other),
        }
    }
}

impl From<crate::domain::IdError> for EngineError {
    fn from(e: crate::domain::IdError) -> Self {
        Self::Rejected(DomainError::InvalidId(e))
    }
}

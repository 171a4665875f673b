//! The error of the cold consumer's own API (ticks never fail: they back off).

use crate::adapters::sqlite::DeadLetterId;
use crate::app::devices::DevicesError;
use crate::ports::StoreError;

/// Why a cold consumer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ColdError {
    /// No auth context is set (signed out).
    #[error("no auth context is set")]
    NotAuthenticated,
    /// The local database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Device identity or keys failed.
    #[error(transparent)]
    Devices(#[from] DevicesError),
    /// No dead letter has this id.
    #[error("no dead letter {0}")]
    UnknownDeadLetter(DeadLetterId),
}

//! The error of device registration, key distribution and cloud reads.

use crate::app::auth::{AuthedCallError, RefreshError};
use crate::domain::backoff::RetryClass;
use crate::domain::crypto::CryptoError;
use crate::domain::DeviceId;
use crate::ports::{CloudError, StoreError};

use super::keyring::KeyringError;
use super::secrets::SecretsError;

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    /// No auth context is set (signed out).
    #[error("no auth context is set")]
    NotAuthenticated,
    /// A cloud call failed (after at most one token refresh).
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// The cloud refused the token and refreshing it failed.
    #[error("the access token was refused and refreshing it failed: {0}")]
    Refresh(#[source] RefreshError),
    /// The local keyring failed.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// Wrapping or rotating a key failed.
    #[error("key operation failed: {0}")]
    Crypto(#[from] CryptoError),
    /// This device's secrets could not be loaded.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The local database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This device is not in the user's device list; register it first.
    #[error("device {0} is not registered")]
    NotRegistered(DeviceId),
    /// No device with this id is registered.
    #[error("no device {0} is registered")]
    UnknownDevice(DeviceId),
    /// A device cannot revoke itself (another device must).
    #[error("a device cannot revoke itself")]
    RevokeSelf,
    /// A background task was cancelled or panicked.
    #[error("background task failed: {0}")]
    Task(String),
}

impl From<AuthedCallError> for DevicesError {
    fn from(e: AuthedCallError) -> Self {
        match e {
            AuthedCallError::NoContext => Self::NotAuthenticated,
            AuthedCallError::Cloud(e) => Self::Cloud(e),
            AuthedCallError::Refresh(RefreshError::NoContext) => Self::NotAuthenticated,
            AuthedCallError::Refresh(e) => Self::Refresh(e),
        }
    }
}

impl DevicesError {
    /// How a worker may retry the operation that failed.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            Self::NotAuthenticated | Self::Refresh(_) => RetryClass::Unauthenticated,
            Self::Cloud(e) => e.retry_class(),
            Self::Keyring(e) if e.is_transient() => RetryClass::Transient { retry_after: None },
            Self::Store(e) if e.is_transient() => RetryClass::Transient { retry_after: None },
            Self::Task(_) => RetryClass::Transient { retry_after: None },
            Self::Keyring(_)
            | Self::Store(_)
            | Self::Crypto(_)
            | Self::Secrets(_)
            | Self::NotRegistered(_)
            | Self::UnknownDevice(_)
            | Self::RevokeSelf => RetryClass::Permanent,
        }
    }
}

/// Runs blocking work (SQLite, file I/O) off the async runtime.
pub(crate) async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, DevicesError>
where
    T: Send + 'static,
    E: Into<DevicesError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| DevicesError::Task(e.to_string()))?
        .map_err(Into::into)
}

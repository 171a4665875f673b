//! The `KeyProvider` port: the scope keys that seal oplog payloads end to end.
//!
//! Every [`Scope`] has a sequence of keys, one per [`KeyEpoch`]. New ops are sealed under the
//! scope's *current* key; ops and checkpoints sealed earlier name their epoch and are opened
//! with the key of that epoch, so history written before a rotation stays readable.
//!
//! # Contract
//!
//! Every clause below has a conformance test of the same name in
//! [`conformance::keys`](crate::ports::conformance::keys), run against every adapter.
//!
//! - `current_is_stable`: [`KeyProvider::current`] MUST return the same epoch and the same key
//!   on every call until the scope's key is rotated.
//! - `key_returns_the_current_key`: [`KeyProvider::key`] for the scope and the current epoch
//!   MUST return the key [`KeyProvider::current`] returned.
//! - `unknown_epoch_is_refused`: [`KeyProvider::key`] for an epoch the provider does not hold
//!   MUST fail with [`KeyError::UnknownEpoch`], never return another epoch's key.
//! - `scopes_have_distinct_keys`: two scopes MUST NOT share a key.
//! - `debug_never_shows_keys`: the provider's `Debug` output MUST NOT contain key material.
//!
//! A provider that cannot create keys (a fixed set loaded for tests, a device that has not
//! received the org's key yet) fails [`KeyProvider::current`] with [`KeyError::NoKey`].
//! Implementations MAY block (a key file is read from disk); async callers move them off the
//! runtime.

use std::fmt::Debug;

use crate::domain::crypto::{KeyEpoch, SessionKey};
use crate::domain::oplog::Scope;

/// Why a key could not be provided. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The provider holds no key for the scope and cannot create one.
    #[error("no key is available for scope {scope}")]
    NoKey {
        /// The scope.
        scope: Scope,
    },
    /// The provider does not hold the scope's key of that epoch.
    #[error("no key of epoch {epoch} is available for scope {scope}")]
    UnknownEpoch {
        /// The scope.
        scope: Scope,
        /// The epoch asked for.
        epoch: KeyEpoch,
    },
    /// A different key is already held for that scope and epoch; nothing was changed.
    #[error("a different key is already held for scope {scope} at epoch {epoch}")]
    Conflict {
        /// The scope.
        scope: Scope,
        /// The epoch.
        epoch: KeyEpoch,
    },
    /// The scope's epochs are exhausted; it cannot be rotated again.
    #[error("scope {scope} cannot be rotated any further")]
    EpochsExhausted {
        /// The scope.
        scope: Scope,
    },
    /// The stored keys could not be read back (damaged or hand-edited key store).
    #[error("the key store is corrupt: {0}")]
    Corrupt(String),
    /// The backend failed (I/O, permissions).
    #[error("key backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where scope keys come from. See the module docs for the contract.
#[cfg_attr(test, mockall::automock)]
pub trait KeyProvider: Send + Sync + Debug + 'static {
    /// The scope's current epoch and key, to seal new ops with.
    fn current(&self, scope: &Scope) -> Result<(KeyEpoch, SessionKey), KeyError>;

    /// The scope's key of `epoch`, to open what was sealed under it.
    fn key(&self, scope: &Scope, epoch: KeyEpoch) -> Result<SessionKey, KeyError>;
}

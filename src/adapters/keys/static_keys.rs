//! [`StaticKeyProvider`]: a fixed, in-memory set of scope keys. **Tests and development only**:
//! nothing is persisted, and it never creates a key by itself.

use std::sync::{Mutex, MutexGuard};

use super::ring::KeyRing;
use crate::domain::crypto::{KeyEpoch, SessionKey};
use crate::domain::oplog::Scope;
use crate::ports::{KeyError, KeyProvider};

/// Scope keys held in memory, added with [`StaticKeyProvider::with_key`] or
/// [`StaticKeyProvider::insert`]. A scope's current key is its highest epoch; a scope without
/// keys fails with [`KeyError::NoKey`]. `Debug` lists scopes and epochs only.
#[derive(Debug, Default)]
pub struct StaticKeyProvider {
    ring: Mutex<KeyRing>,
}

impl StaticKeyProvider {
    /// A provider holding no key.
    pub fn new() -> Self {
        Self::default()
    }

    /// The provider with one more key (builder style). A conflicting key at the same scope and
    /// epoch is ignored; use [`StaticKeyProvider::insert`] to see the conflict.
    #[must_use]
    pub fn with_key(self, scope: Scope, epoch: KeyEpoch, key: SessionKey) -> Self {
        // A conflict keeps the first key, as documented.
        let _ = self.insert(scope, epoch, key);
        self
    }

    /// Adds a key. Re-adding the same key is a no-op; a different key at a held scope and
    /// epoch fails with [`KeyError::Conflict`] and changes nothing.
    pub fn insert(&self, scope: Scope, epoch: KeyEpoch, key: SessionKey) -> Result<(), KeyError> {
        self.ring()
            .insert(scope.clone(), epoch, key)
            .map_err(|_| KeyError::Conflict { scope, epoch })
    }

    fn ring(&self) -> MutexGuard<'_, KeyRing> {
        // A panic while holding the lock cannot leave the ring half-updated (every update is
        // one map insert), so a poisoned lock is still safe to use.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl KeyProvider for StaticKeyProvider {
    fn current(&self, scope: &Scope) -> Result<(KeyEpoch, SessionKey), KeyError> {
        self.ring().current(scope).ok_or_else(|| KeyError::NoKey {
            scope: scope.clone(),
        })
    }

    fn key(&self, scope: &Scope, epoch: KeyEpoch) -> Result<SessionKey, KeyError> {
        self.ring()
            .get(scope, epoch)
            .ok_or_else(|| KeyError::UnknownEpoch {
                scope: scope.clone(),
                epoch,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_keys_current_is_no_key() {
        let p = StaticKeyProvider::new();
        assert!(matches!(
            p.current(&Scope::Personal),
            Err(KeyError::NoKey {
                scope: Scope::Personal
            })
        ));
    }

    #[test]
    fn conflicting_insert_is_refused_and_the_first_key_stays() {
        let p = StaticKeyProvider::new().with_key(
            Scope::Personal,
            KeyEpoch::FIRST,
            SessionKey::from_bytes([1; 32]),
        );
        assert!(matches!(
            p.insert(
                Scope::Personal,
                KeyEpoch::FIRST,
                SessionKey::from_bytes([2; 32])
            ),
            Err(KeyError::Conflict { .. })
        ));
        let (_, k) = p.current(&Scope::Personal).unwrap();
        assert_eq!(k.expose_secret(), &[1; 32]);
    }
}

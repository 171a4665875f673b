//! The keyring: this device's session keys, sealed at rest in the `session_keys` table.
//!
//! Every key is sealed under the [`DeviceLocalKey`] (bound to its session and epoch) before
//! it reaches the database and opened only when needed; the sealing nonce is drawn from the
//! OS inside the seal call. Keys come from three places: created here on first use of a
//! session ([`Keyring::current_or_create`]), rotated here when a device is revoked, or
//! received from another device through a verified wrap. A stored generation is never
//! overwritten.
//!
//! All methods block on SQLite; async callers run them with `spawn_blocking`.

use std::sync::Arc;

use rand_core::OsRng;

use crate::adapters::sqlite::{SqliteColdStore, StoredSessionKey};
use crate::domain::crypto::{
    open_session_key_at_rest, seal_session_key_at_rest, CryptoError, DeviceLocalKey, KeyEpoch,
    SessionKey,
};
use crate::domain::SessionId;
use crate::ports::{Clock, StoreError};

/// Why the keyring failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored key did not open (wrong device-local key or a damaged row).
    #[error("a stored session key could not be opened: {0}")]
    Crypto(#[from] CryptoError),
}

impl KeyringError {
    /// Whether retrying later may help (a busy or full database).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_transient())
    }
}

/// A session key held by this device, opened.
#[derive(Debug, Clone)]
pub struct HeldKey {
    /// The session.
    pub session_id: SessionId,
    /// The generation.
    pub epoch: KeyEpoch,
    /// The key (redacted in `Debug`, zeroized on drop).
    pub key: SessionKey,
    /// Created or rotated on this device (which distributes it).
    pub owned: bool,
    /// Whether its wraps reached the cloud (always true for received keys).
    pub distributed: bool,
}

impl HeldKey {
    /// Whether this device still has to upload wraps of this key.
    pub fn needs_distribution(&self) -> bool {
        self.owned && !self.distributed
    }
}

/// This device's session keys. See the module docs.
pub struct Keyring {
    store: Arc<SqliteColdStore>,
    local_key: DeviceLocalKey,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring over `store`, sealing under `local_key`.
    pub fn new(
        store: Arc<SqliteColdStore>,
        local_key: DeviceLocalKey,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            local_key,
            clock,
        }
    }

    /// The bookkeeping store the keys live in.
    pub fn store(&self) -> &Arc<SqliteColdStore> {
        &self.store
    }

    /// The newest generation held for `session`.
    pub fn current(&self, session: SessionId) -> Result<Option<HeldKey>, KeyringError> {
        self.store
            .newest_session_key(session)?
            .map(|stored| self.open(&stored))
            .transpose()
    }

    /// The newest generation held for `session`, creating generation 1 (owned, awaiting
    /// distribution) when none is held. Two racing callers end up with the same key.
    pub fn current_or_create(&self, session: SessionId) -> Result<HeldKey, KeyringError> {
        if let Some(held) = self.current(session)? {
            return Ok(held);
        }
        let key = SessionKey::generate(&mut OsRng);
        self.insert(session, KeyEpoch::FIRST, &key, true)?;
        self.current(session)?
            .ok_or(KeyringError::Store(StoreError::Decode(format!(
                "session key of {session} vanished after insertion"
            ))))
    }

    /// One generation's key, if held.
    pub fn get(
        &self,
        session: SessionId,
        epoch: KeyEpoch,
    ) -> Result<Option<SessionKey>, KeyringError> {
        self.store
            .session_key(session, epoch)?
            .map(|stored| self.open(&stored).map(|held| held.key))
            .transpose()
    }

    /// Stores a key received from another device; `false` if the generation was held already.
    pub fn insert_received(
        &self,
        session: SessionId,
        epoch: KeyEpoch,
        key: &SessionKey,
    ) -> Result<bool, KeyringError> {
        self.insert(session, epoch, key, false)
    }

    /// Stores a generation rotated here (owned, awaiting distribution); `false` if held already.
    pub fn insert_rotated(
        &self,
        session: SessionId,
        epoch: KeyEpoch,
        key: &SessionKey,
    ) -> Result<bool, KeyringError> {
        self.insert(session, epoch, key, true)
    }

    /// Records that a generation's wraps reached the cloud.
    pub fn mark_distributed(
        &self,
        session: SessionId,
        epoch: KeyEpoch,
    ) -> Result<bool, KeyringError> {
        Ok(self
            .store
            .mark_session_key_distributed(session, epoch, self.clock.now_ms())?)
    }

    /// For every session with a key created here, its newest generation.
    pub fn owned_sessions(&self) -> Result<Vec<HeldKey>, KeyringError> {
        self.store
            .owned_sessions_newest_keys()?
            .iter()
            .map(|stored| self.open(stored))
            .collect()
    }

    /// Keys created here whose wraps have not reached the cloud yet.
    pub fn undistributed(&self) -> Result<Vec<HeldKey>, KeyringError> {
        self.store
            .undistributed_session_keys()?
            .iter()
            .map(|stored| self.open(stored))
            .collect()
    }

    fn insert(
        &self,
        session: SessionId,
        epoch: KeyEpoch,
        key: &SessionKey,
        owned: bool,
    ) -> Result<bool, KeyringError> {
        let sealed = seal_session_key_at_rest(&self.local_key, session, epoch, key, &mut OsRng)?;
        let now = self.clock.now_ms();
        Ok(self.store.insert_session_key(&StoredSessionKey {
            session_id: session,
            epoch,
            sealed,
            owned,
            // Received keys are not ours to distribute.
            distributed_at_ms: (!owned).then_some(now),
            created_at_ms: now,
        })?)
    }

    fn open(&self, stored: &StoredSessionKey) -> Result<HeldKey, KeyringError> {
        let key = open_session_key_at_rest(
            &self.local_key,
            stored.session_id,
            stored.epoch,
            &stored.sealed,
        )?;
        Ok(HeldKey {
            session_id: stored.session_id,
            epoch: stored.epoch,
            key,
            owned: stored.owned,
            distributed: stored.distributed_at_ms.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::adapters::system::ManualClock;

    fn keyring() -> Keyring {
        Keyring::new(
            Arc::new(SqliteColdStore::open_in_memory().unwrap()),
            DeviceLocalKey::generate(&mut OsRng),
            Arc::new(ManualClock::new(5)),
        )
    }

    fn session(n: u128) -> SessionId {
        SessionId::from_uuid(Uuid::from_u128(n)).unwrap()
    }

    #[test]
    fn first_use_creates_one_owned_key_that_awaits_distribution() {
        let ring = keyring();
        assert!(ring.current(session(1)).unwrap().is_none());
        let first = ring.current_or_create(session(1)).unwrap();
        let again = ring.current_or_create(session(1)).unwrap();
        assert_eq!(first.epoch, KeyEpoch::FIRST);
        assert_eq!(first.key.expose_secret(), again.key.expose_secret());
        assert!(first.needs_distribution());
        assert_eq!(ring.undistributed().unwrap().len(), 1);
        assert!(ring.mark_distributed(session(1), KeyEpoch::FIRST).unwrap());
        assert!(!ring
            .current(session(1))
            .unwrap()
            .unwrap()
            .needs_distribution());
    }

    #[test]
    fn keys_are_sealed_at_rest() {
        let ring = keyring();
        let held = ring.current_or_create(session(1)).unwrap();
        let stored = ring
            .store()
            .session_key(session(1), KeyEpoch::FIRST)
            .unwrap()
            .unwrap();
        let blob = stored.sealed.to_bytes();
        assert!(!blob
            .windows(held.key.expose_secret().len())
            .any(|w| w == held.key.expose_secret()));
        let other = Keyring::new(
            Arc::clone(ring.store()),
            DeviceLocalKey::generate(&mut OsRng),
            Arc::new(ManualClock::new(5)),
        );
        assert!(matches!(
            other.get(session(1), KeyEpoch::FIRST),
            Err(KeyringError::Crypto(CryptoError::Decrypt))
        ));
    }

    #[test]
    fn received_keys_are_kept_but_never_overwrite() {
        let ring = keyring();
        let key = SessionKey::generate(&mut OsRng);
        assert!(ring
            .insert_received(session(2), KeyEpoch::new(3), &key)
            .unwrap());
        let other = SessionKey::generate(&mut OsRng);
        assert!(!ring
            .insert_received(session(2), KeyEpoch::new(3), &other)
            .unwrap());
        let got = ring.get(session(2), KeyEpoch::new(3)).unwrap().unwrap();
        assert_eq!(got.expose_secret(), key.expose_secret());
        let held = ring.current(session(2)).unwrap().unwrap();
        assert!(!held.owned && !held.needs_distribution());
        assert!(ring.owned_sessions().unwrap().is_empty());
    }
}

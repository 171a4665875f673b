//! The `session_keys` table: session keys sealed at rest, one row per (session, epoch).
//!
//! Rows hold [`LocalSealedKey`] blobs only; sealing and opening happen in the app with the
//! device-local key. A row is never updated except to record that its wraps were uploaded.

use rusqlite::{params, OptionalExtension, Row};

use crate::domain::crypto::{KeyEpoch, LocalSealedKey};
use crate::domain::SessionId;
use crate::ports::StoreError;

use super::cold_store::SqliteColdStore;
use super::error::map_sqlite;

const KEY_COLUMNS: &str = "session_id, epoch, sealed_key, owned, distributed_at_ms, created_at_ms";

/// One stored session key (sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSessionKey {
    /// The session.
    pub session_id: SessionId,
    /// The key generation.
    pub epoch: KeyEpoch,
    /// The key, sealed under the device-local key and bound to (session, epoch).
    pub sealed: LocalSealedKey,
    /// Created (or rotated) on this device, which is responsible for distributing it.
    pub owned: bool,
    /// When its wraps reached the cloud (`None` while an owned key awaits distribution).
    pub distributed_at_ms: Option<i64>,
    /// When it was stored, Unix milliseconds.
    pub created_at_ms: i64,
}

fn decode(row: &Row<'_>) -> Result<StoredSessionKey, StoreError> {
    let session: String = row.get(0).map_err(map_sqlite)?;
    let epoch: i64 = row.get(1).map_err(map_sqlite)?;
    let blob: Vec<u8> = row.get(2).map_err(map_sqlite)?;
    Ok(StoredSessionKey {
        session_id: SessionId::parse(&session)
            .map_err(|e| StoreError::Decode(format!("session key row: {e}")))?,
        epoch: KeyEpoch::new(
            u32::try_from(epoch)
                .map_err(|_| StoreError::Decode(format!("session key epoch {epoch}")))?,
        ),
        sealed: LocalSealedKey::from_bytes(&blob)
            .map_err(|e| StoreError::Decode(format!("session key blob: {e}")))?,
        owned: row.get(3).map_err(map_sqlite)?,
        distributed_at_ms: row.get(4).map_err(map_sqlite)?,
        created_at_ms: row.get(5).map_err(map_sqlite)?,
    })
}

impl SqliteColdStore {
    /// Stores a key unless (session, epoch) already has one; `false` when it had (the stored
    /// key is kept: two devices never get to overwrite a generation).
    pub fn insert_session_key(&self, key: &StoredSessionKey) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .prepare_cached(
                "INSERT INTO session_keys \
                 (session_id, epoch, sealed_key, owned, distributed_at_ms, created_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (session_id, epoch) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    key.session_id.to_string(),
                    key.epoch.get(),
                    key.sealed.to_bytes(),
                    key.owned,
                    key.distributed_at_ms,
                    key.created_at_ms
                ])
            })
            .map_err(map_sqlite)?;
        Ok(n == 1)
    }

    /// The key of one generation.
    pub fn session_key(
        &self,
        session: SessionId,
        epoch: KeyEpoch,
    ) -> Result<Option<StoredSessionKey>, StoreError> {
        self.one_key(
            &format!("SELECT {KEY_COLUMNS} FROM session_keys WHERE session_id = ?1 AND epoch = ?2"),
            params![session.to_string(), epoch.get()],
        )
    }

    /// The newest generation held for a session.
    pub fn newest_session_key(
        &self,
        session: SessionId,
    ) -> Result<Option<StoredSessionKey>, StoreError> {
        self.one_key(
            &format!(
                "SELECT {KEY_COLUMNS} FROM session_keys WHERE session_id = ?1 \
                 ORDER BY epoch DESC LIMIT 1"
            ),
            params![session.to_string()],
        )
    }

    /// Records that a key's wraps reached the cloud; `false` if no such key is stored.
    pub fn mark_session_key_distributed(
        &self,
        session: SessionId,
        epoch: KeyEpoch,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE session_keys SET distributed_at_ms = ?3 \
                 WHERE session_id = ?1 AND epoch = ?2",
                params![session.to_string(), epoch.get(), at_ms],
            )
            .map_err(map_sqlite)?;
        Ok(n == 1)
    }

    /// For every session with a key created here, its newest generation (whoever created
    /// that one), in session order: what a revocation must rotate.
    pub fn owned_sessions_newest_keys(&self) -> Result<Vec<StoredSessionKey>, StoreError> {
        self.keys(&format!(
            "SELECT {KEY_COLUMNS} FROM session_keys AS k \
             WHERE k.epoch = (SELECT MAX(epoch) FROM session_keys WHERE session_id = k.session_id) \
             AND EXISTS (SELECT 1 FROM session_keys WHERE session_id = k.session_id AND owned = 1) \
             ORDER BY k.session_id"
        ))
    }

    /// Keys created here whose wraps have not reached the cloud yet.
    pub fn undistributed_session_keys(&self) -> Result<Vec<StoredSessionKey>, StoreError> {
        self.keys(&format!(
            "SELECT {KEY_COLUMNS} FROM session_keys \
             WHERE owned = 1 AND distributed_at_ms IS NULL ORDER BY session_id, epoch"
        ))
    }

    fn one_key(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Option<StoredSessionKey>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql).map_err(map_sqlite)?;
        let found = stmt
            .query_row(params, |row| Ok(decode(row)))
            .optional()
            .map_err(map_sqlite)?;
        found.transpose()
    }

    fn keys(&self, sql: &str) -> Result<Vec<StoredSessionKey>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql).map_err(map_sqlite)?;
        let mut rows = stmt.query([]).map_err(map_sqlite)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(map_sqlite)? {
            out.push(decode(row)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn session(n: u128) -> SessionId {
        SessionId::from_uuid(Uuid::from_u128(n)).unwrap()
    }

    fn key(s: u128, epoch: u32, owned: bool, fill: u8) -> StoredSessionKey {
        StoredSessionKey {
            session_id: session(s),
            epoch: KeyEpoch::new(epoch),
            sealed: LocalSealedKey {
                nonce: [fill; 24],
                ciphertext: vec![fill; 48],
            },
            owned,
            distributed_at_ms: None,
            created_at_ms: 10,
        }
    }

    #[test]
    fn a_generation_is_stored_once_and_never_overwritten() {
        let db = SqliteColdStore::open_in_memory().unwrap();
        assert!(db.insert_session_key(&key(1, 1, true, 1)).unwrap());
        assert!(!db.insert_session_key(&key(1, 1, false, 2)).unwrap());
        let stored = db
            .session_key(session(1), KeyEpoch::FIRST)
            .unwrap()
            .unwrap();
        assert_eq!(stored, key(1, 1, true, 1));
        assert_eq!(db.session_key(session(1), KeyEpoch::new(2)).unwrap(), None);
    }

    #[test]
    fn newest_generation_wins() {
        let db = SqliteColdStore::open_in_memory().unwrap();
        assert_eq!(db.newest_session_key(session(1)).unwrap(), None);
        for epoch in [1, 3, 2] {
            db.insert_session_key(&key(1, epoch, true, epoch as u8))
                .unwrap();
        }
        let newest = db.newest_session_key(session(1)).unwrap().unwrap();
        assert_eq!(newest.epoch, KeyEpoch::new(3));
    }

    #[test]
    fn distribution_is_recorded_and_pending_keys_are_listed() {
        let db = SqliteColdStore::open_in_memory().unwrap();
        db.insert_session_key(&key(1, 1, true, 1)).unwrap();
        db.insert_session_key(&key(2, 1, false, 2)).unwrap();
        let pending = db.undistributed_session_keys().unwrap();
        assert_eq!(pending.len(), 1, "received keys are not ours to distribute");
        assert!(db
            .mark_session_key_distributed(session(1), KeyEpoch::FIRST, 99)
            .unwrap());
        assert!(!db
            .mark_session_key_distributed(session(3), KeyEpoch::FIRST, 99)
            .unwrap());
        assert!(db.undistributed_session_keys().unwrap().is_empty());
        let stored = db
            .session_key(session(1), KeyEpoch::FIRST)
            .unwrap()
            .unwrap();
        assert_eq!(stored.distributed_at_ms, Some(99));
    }

    #[test]
    fn owned_sessions_list_their_newest_generation() {
        let db = SqliteColdStore::open_in_memory().unwrap();
        db.insert_session_key(&key(1, 1, true, 1)).unwrap();
        db.insert_session_key(&key(1, 2, false, 2)).unwrap();
        db.insert_session_key(&key(2, 1, false, 3)).unwrap();
        let owned = db.owned_sessions_newest_keys().unwrap();
        assert_eq!(owned.len(), 1);
        assert_eq!(
            (owned[0].session_id, owned[0].epoch),
            (session(1), KeyEpoch::new(2))
        );
    }
}

//! [`SqliteColdStore`]: the cold path's local bookkeeping, in the same database file as the
//! [`SqliteStore`](super::SqliteStore).
//!
//! It keeps two tables of its own (migration 3): `session_keys` (every session key sealed at
//! rest under the device-local key, see [`super::cold_keys`]) and `dead_letters` (effects a
//! consumer could not deliver, see [`super::cold_dead_letters`]). It also reads, never writes,
//! the engine's `repositories`, `sessions` and `messages` tables: message content for sealing
//! and the metadata behind [`SessionMetadataProvider`], so a consumer built from nothing but
//! the database path has everything it needs.
//!
//! It opens its own connection (WAL lets it read while the engine writes; its own short
//! writes wait on the busy timeout). All methods block; async callers move them off the
//! runtime.

use std::collections::HashMap;
use std::path::Path;
use std::sync::MutexGuard;

use rusqlite::{Connection, OptionalExtension};

use crate::domain::backoff::RetryClass;
use crate::domain::{Message, MessageId, Repository, RepositoryId, Session, SessionId};
use crate::ports::{MetadataError, SessionMetadataProvider, StoreError};

use super::connection::SqliteOptions;
use super::error::map_sqlite;
use super::handle::DbHandle;
use super::rows::{self, message_columns, repository_columns, session_columns};

const SELECT_MESSAGE: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE id = ?1"
);
const SELECT_SESSION: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE id = ?1"
);
const SELECT_REPOSITORY: &str = concat!(
    "SELECT ",
    repository_columns!(),
    " FROM repositories WHERE id = ?1"
);

/// Most message ids bound in one query of [`SqliteColdStore::messages`] (well under SQLite's
/// limit on bound parameters).
const MESSAGES_PER_QUERY: usize = 500;

/// The cold path's bookkeeping store. See the module docs.
pub struct SqliteColdStore {
    db: DbHandle,
}

impl std::fmt::Debug for SqliteColdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteColdStore")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

impl SqliteColdStore {
    /// Opens the database at `path` (creating and migrating it if needed) with its own
    /// connection and asserted PRAGMAs.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        Ok(Self {
            db: DbHandle::open(path, &options)?,
        })
    }

    /// A private in-memory database with the full schema. **Tests only**: it shares nothing
    /// with any engine, so message and metadata reads find nothing.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Ok(Self {
            db: DbHandle::open_in_memory(&SqliteOptions::default())?,
        })
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.db.path()
    }

    /// One message by id (its content is plaintext: seal it, never log it).
    pub fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        self.read_one(SELECT_MESSAGE, &id.to_string(), rows::message)
    }

    /// The messages of `ids` that still exist, in the order of `ids` (their content is
    /// plaintext: seal it, never log it). One query per 500 ids.
    pub fn messages(&self, ids: &[MessageId]) -> Result<Vec<Message>, StoreError> {
        let mut found: HashMap<MessageId, Message> = HashMap::with_capacity(ids.len());
        let conn = self.conn();
        for chunk in ids.chunks(MESSAGES_PER_QUERY) {
            let sql = format!(
                concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE id IN ({})"
                ),
                vec!["?"; chunk.len()].join(", ")
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(map_sqlite)?;
            let keys: Vec<String> = chunk.iter().map(ToString::to_string).collect();
            let decoded = stmt
                .query_map(rusqlite::params_from_iter(&keys), |row| {
                    Ok(rows::message(row))
                })
                .map_err(map_sqlite)?;
            for message in decoded {
                let message = message.map_err(map_sqlite)?.map_err(StoreError::from)?;
                found.insert(message.id, message);
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.lock()
    }

    fn read_one<T>(
        &self,
        sql: &str,
        key: &str,
        decode: impl FnOnce(&rusqlite::Row<'_>) -> Result<T, rows::RowError>,
    ) -> Result<Option<T>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql).map_err(map_sqlite)?;
        let found = stmt
            .query_row([key], |row| Ok(decode(row)))
            .optional()
            .map_err(map_sqlite)?;
        found.transpose().map_err(StoreError::from)
    }
}

impl SessionMetadataProvider for SqliteColdStore {
    fn repository(&self, id: RepositoryId) -> Result<Option<Repository>, MetadataError> {
        self.read_one(SELECT_REPOSITORY, &id.to_string(), rows::repository)
            .map_err(metadata_error)
    }

    fn session(&self, id: SessionId) -> Result<Option<Session>, MetadataError> {
        self.read_one(SELECT_SESSION, &id.to_string(), rows::session)
            .map_err(metadata_error)
    }
}

fn metadata_error(e: StoreError) -> MetadataError {
    if e.is_transient() {
        MetadataError::Unavailable(e.to_string())
    } else {
        MetadataError::Backend(Box::new(e))
    }
}

/// The stored spelling of a retry class (`retry_after` is not kept).
pub(super) fn retry_class_name(class: &RetryClass) -> &'static str {
    match class {
        RetryClass::Transient { .. } => "transient",
        RetryClass::Network => "network",
        RetryClass::Unauthenticated => "unauthenticated",
        RetryClass::Permanent => "permanent",
    }
}

/// Parses [`retry_class_name`]'s spelling.
pub(super) fn parse_retry_class(name: &str) -> Option<RetryClass> {
    Some(match name {
        "transient" => RetryClass::Transient { retry_after: None },
        "network" => RetryClass::Network,
        "unauthenticated" => RetryClass::Unauthenticated,
        "permanent" => RetryClass::Permanent,
        _ => return None,
    })
}

/// Clamps a counter into SQLite's signed integer range.
pub(super) fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classes_round_trip_through_their_names() {
        for class in [
            RetryClass::Transient { retry_after: None },
            RetryClass::Network,
            RetryClass::Unauthenticated,
            RetryClass::Permanent,
        ] {
            assert_eq!(parse_retry_class(retry_class_name(&class)), Some(class));
        }
        assert_eq!(parse_retry_class("bogus"), None);
    }
}

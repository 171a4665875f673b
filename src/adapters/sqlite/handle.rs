//! One migrated connection to the database plus the file it came from: the shape every
//! single-connection SQLite adapter (journal, cold-path bookkeeping) shares.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use crate::ports::StoreError;

use super::connection::{open_file, open_memory, SqliteOptions};
use super::schema::migrate;

/// A connection with asserted PRAGMAs and the full schema, behind a mutex.
pub(crate) struct DbHandle {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

impl DbHandle {
    /// Opens (creating if needed) and migrates the file at `path`.
    pub(crate) fn open(path: &Path, options: &SqliteOptions) -> Result<Self, StoreError> {
        let mut conn = open_file(path, options)?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: Some(path.to_owned()),
        })
    }

    /// A private, migrated in-memory database (tests and development only).
    pub(crate) fn open_in_memory(options: &SqliteOptions) -> Result<Self, StoreError> {
        let mut conn = open_memory(options)?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: None,
        })
    }

    /// The database file, or `None` in memory.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The connection. An open transaction rolls back on drop, so a poisoned lock is safe to
    /// keep using.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

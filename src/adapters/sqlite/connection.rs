//! Opening connections with asserted PRAGMAs.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::ports::StoreError;

use super::error::map_sqlite;

/// How hard each commit is pushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `synchronous=FULL`: the WAL is fsynced at every commit, so no acknowledged write is lost
    /// even on power loss. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: durable across process crashes; the newest commits may roll back
    /// after a power loss or OS crash. Opt-in for throughput.
    Normal,
}

impl Synchronous {
    fn pragma_value(self) -> i64 {
        match self {
            Self::Full => 2,
            Self::Normal => 1,
        }
    }
}

/// Options for [`SqliteStore`](super::SqliteStore).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Durability of commits (default [`Synchronous::Full`]).
    pub synchronous: Synchronous,
    /// How long a connection waits for a lock held by another connection (default 5 s).
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl SqliteOptions {
    /// Sets the durability mode.
    #[must_use]
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }
}

/// Opens a connection to a file database and asserts its PRAGMAs.
pub fn open_file(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(map_sqlite)?;
    configure(&conn, options, false)?;
    Ok(conn)
}

/// Opens a private in-memory database (test/dev only) and asserts its PRAGMAs.
pub fn open_memory(options: &SqliteOptions) -> Result<Connection, StoreError> {
    let conn = Connection::open_in_memory().map_err(map_sqlite)?;
    configure(&conn, options, true)?;
    Ok(conn)
}

/// Sets WAL, foreign keys, busy timeout and synchronous, then reads each back and refuses the
/// connection if SQLite did not take it. An in-memory database cannot use WAL; it reports
/// `memory`, which is accepted there only.
fn configure(
    conn: &Connection,
    options: &SqliteOptions,
    in_memory: bool,
) -> Result<(), StoreError> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(map_sqlite)?;
    let expected_mode = if in_memory { "memory" } else { "wal" };
    check("journal_mode", expected_mode, &mode.to_ascii_lowercase())?;

    conn.pragma_update(None, "foreign_keys", true)
        .map_err(map_sqlite)?;
    let fk: i64 = conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .map_err(map_sqlite)?;
    check("foreign_keys", "1", &fk.to_string())?;

    conn.busy_timeout(options.busy_timeout)
        .map_err(map_sqlite)?;
    let busy: i64 = conn
        .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
        .map_err(map_sqlite)?;
    check(
        "busy_timeout",
        &options.busy_timeout.as_millis().to_string(),
        &busy.to_string(),
    )?;

    let sync = options.synchronous.pragma_value();
    conn.pragma_update(None, "synchronous", sync)
        .map_err(map_sqlite)?;
    let got: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .map_err(map_sqlite)?;
    check("synchronous", &sync.to_string(), &got.to_string())?;

    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn check(pragma: &str, expected: &str, actual: &str) -> Result<(), StoreError> {
    if expected == actual {
        Ok(())
    } else {
        Err(StoreError::Incompatible(format!(
            "PRAGMA {pragma} is {actual:?}, expected {expected:?}"
        )))
    }
}

//! Opening connections with asserted PRAGMAs.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};

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

/// Sets the busy timeout, WAL, foreign keys and synchronous, then reads each back and refuses the
/// connection if SQLite did not take it. An in-memory database cannot use WAL; it reports
/// `memory`, which is accepted there only.
fn configure(
    conn: &Connection,
    options: &SqliteOptions,
    in_memory: bool,
) -> Result<(), StoreError> {
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

    let mode = switch_to_wal(conn, options.busy_timeout)?;
    let expected_mode = if in_memory { "memory" } else { "wal" };
    check("journal_mode", expected_mode, &mode.to_ascii_lowercase())?;

    conn.pragma_update(None, "foreign_keys", true)
        .map_err(map_sqlite)?;
    let fk: i64 = conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .map_err(map_sqlite)?;
    check("foreign_keys", "1", &fk.to_string())?;

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

/// Asks for WAL and returns the journal mode SQLite reports.
///
/// Switching a fresh file to WAL upgrades a read lock to a write lock, and SQLite never runs
/// the busy handler for that upgrade (waiting there could deadlock two upgraders), so a
/// connection opened at the same moment as another on a new file gets `Busy` at once. The
/// switch is retried here instead, with growing pauses, until `busy_timeout` has passed.
/// Once one connection has switched the file, the others find it in WAL and return at once.
fn switch_to_wal(conn: &Connection, busy_timeout: Duration) -> Result<String, StoreError> {
    const LONGEST_PAUSE: Duration = Duration::from_millis(20);
    let deadline = Instant::now() + busy_timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(map_sqlite(e));
                }
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            other => return other.map_err(map_sqlite),
        }
    }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    /// Connections opened at the same moment on one fresh file all open: switching the file to
    /// WAL takes a lock, and each waits its turn for it rather than failing with `Busy`; then
    /// each migrates, and the file ends at the current schema version. Separate connections
    /// in one process contend for SQLite's file locks as separate processes do.
    #[test]
    fn connections_opened_at_once_on_a_fresh_file_all_open() {
        const FILES: usize = 20;
        const OPENERS: usize = 8;
        let dir = tempfile::tempdir().expect("tempdir");
        for file in 0..FILES {
            let path = dir.path().join(format!("fresh-{file}.db"));
            let barrier = Arc::new(Barrier::new(OPENERS));
            let openers: Vec<_> = (0..OPENERS)
                .map(|_| {
                    let (path, barrier) = (path.clone(), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        let mut conn = open_file(&path, &SqliteOptions::default())?;
                        crate::adapters::sqlite::schema::migrate(&mut conn)
                    })
                })
                .collect();
            for opener in openers {
                let opened = opener.join().expect("opener thread");
                assert!(opened.is_ok(), "file {file}: {opened:?}");
            }
            let conn = open_file(&path, &SqliteOptions::default()).expect("reopen");
            let version: u32 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .expect("user_version");
            assert_eq!(
                version,
                crate::adapters::sqlite::schema::SCHEMA_VERSION,
                "file {file}"
            );
        }
    }
}

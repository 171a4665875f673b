//! Embedded, versioned migrations for the local SQLite database.
//!
//! `PRAGMA user_version` records the applied version. Each migration runs in one transaction;
//! a database written by a newer tandem (higher version) is refused rather than guessed at.

use rusqlite::{Connection, TransactionBehavior};

use crate::ports::StoreError;

use super::error::map_sqlite;

/// The migrations, in order; index + 1 is the version each one produces.
const MIGRATIONS: &[&str] = &[
    // 1: sessions, messages, runtime status, effect log, consumer cursors.
    r"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE repositories (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        remote_url    TEXT,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );

    CREATE TABLE sessions (
        id            TEXT PRIMARY KEY,
        repository_id TEXT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
        title         TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('active', 'closed')),
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        closed_at_ms  INTEGER,
        -- seq of the newest message; the next append must carry last_seq + 1
        last_seq      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_by_repository ON sessions(repository_id);

    CREATE TABLE messages (
        id            TEXT NOT NULL UNIQUE,
        session_id    TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seq           INTEGER NOT NULL CHECK (seq >= 1),
        role          TEXT NOT NULL,
        content       TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        origin        TEXT NOT NULL,
        UNIQUE (session_id, seq)
    );

    CREATE TABLE runtime_status (
        session_id    TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
        envelope      TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );

    -- The durable effect log: one row per committed side-effect, in commit order.
    CREATE TABLE effects (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        kind            TEXT NOT NULL,
        payload         TEXT NOT NULL,
        committed_at_ms INTEGER NOT NULL
    );

    CREATE TABLE consumer_cursors (
        consumer      TEXT PRIMARY KEY,
        position      INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    ",
    // 2: device-sync oplog (journal, chain heads, push cursors, base checkpoint).
    r"
    -- Every op this device holds, as exchanged (sealed payloads stay sealed), as JSON.
    CREATE TABLE oplog_ops (
        device TEXT    NOT NULL,
        seq    INTEGER NOT NULL CHECK (seq >= 0),
        op_id  TEXT    NOT NULL UNIQUE,
        record TEXT    NOT NULL,
        PRIMARY KEY (device, seq)
    ) WITHOUT ROWID;

    -- The head of every held chain (the frontier); also set by an installed base checkpoint.
    CREATE TABLE oplog_heads (
        device      TEXT    PRIMARY KEY,
        seq         INTEGER NOT NULL CHECK (seq >= 0),
        op_id       TEXT    NOT NULL,
        hlc_wall_ms INTEGER NOT NULL CHECK (hlc_wall_ms >= 0),
        hlc_counter INTEGER NOT NULL CHECK (hlc_counter >= 0)
    ) WITHOUT ROWID;

    -- Per chain, the next seq the relay has not acknowledged receiving.
    CREATE TABLE oplog_push_cursors (
        device   TEXT    PRIMARY KEY,
        next_seq INTEGER NOT NULL CHECK (next_seq >= 0)
    ) WITHOUT ROWID;

    -- The checkpoint the journal continues from (at most one row).
    CREATE TABLE oplog_base (
        singleton     INTEGER PRIMARY KEY CHECK (singleton = 1),
        checkpoint_id TEXT NOT NULL,
        frontier      TEXT NOT NULL,
        state_hash    TEXT NOT NULL,
        state         BLOB NOT NULL
    );
    ",
    // 3: cold path bookkeeping (session keys sealed at rest, dead letters).
    r"
    -- Session keys, one row per (session, epoch), sealed under the device-local key: the
    -- database never holds a key in clear. No foreign key to sessions: keys received from
    -- other devices belong to sessions this database may not hold.
    CREATE TABLE session_keys (
        session_id        TEXT    NOT NULL,
        epoch             INTEGER NOT NULL CHECK (epoch >= 1),
        sealed_key        BLOB    NOT NULL,
        -- 1: created (or rotated) on this device, which distributes it; 0: received.
        owned             INTEGER NOT NULL CHECK (owned IN (0, 1)),
        -- When its wraps reached the cloud; NULL while an owned key still awaits them.
        distributed_at_ms INTEGER,
        created_at_ms     INTEGER NOT NULL,
        PRIMARY KEY (session_id, epoch)
    ) WITHOUT ROWID;

    -- Effects a consumer could not deliver (permanent failures), kept for an operator to
    -- list and replay. The payload is the effect itself: ids and runtime status, never
    -- message content. One row per (consumer, effect), so dead-lettering is idempotent.
    CREATE TABLE dead_letters (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        consumer           TEXT    NOT NULL,
        effect_seq         INTEGER NOT NULL,
        kind               TEXT    NOT NULL,
        payload            TEXT    NOT NULL,
        reason             TEXT    NOT NULL,
        retry_class        TEXT    NOT NULL,
        attempts           INTEGER NOT NULL CHECK (attempts >= 1),
        created_at_ms      INTEGER NOT NULL,
        last_attempt_at_ms INTEGER NOT NULL,
        UNIQUE (consumer, effect_seq)
    );
    ",
    // 4: execution leases (durable epochs).
    r"
    -- One row per resource ever leased. A released lease keeps its row with the holder columns
    -- NULL, so highest_epoch survives and epochs are never reused.
    CREATE TABLE leases (
        resource      TEXT PRIMARY KEY,
        holder        TEXT,
        epoch         INTEGER CHECK (epoch >= 1),
        expires_at_ms INTEGER CHECK (expires_at_ms >= 0),
        highest_epoch INTEGER NOT NULL CHECK (highest_epoch >= 0),
        CHECK ((holder IS NULL) = (epoch IS NULL) AND (holder IS NULL) = (expires_at_ms IS NULL)),
        CHECK (epoch IS NULL OR epoch <= highest_epoch)
    ) WITHOUT ROWID;
    ",
    // 5: the journal keeps ops in their compact binary form (`domain::oplog::op_codec`) in a
    // rowid table with one small (device, seq) index. Version 2's random op-id index is gone:
    // a chain position holds one op, and ids are checked by chain verification. Rows written
    // under version 2 keep their JSON text, which the journal still reads.
    r"
    ALTER TABLE oplog_ops RENAME TO oplog_ops_v2;
    CREATE TABLE oplog_ops (
        device TEXT    NOT NULL,
        seq    INTEGER NOT NULL CHECK (seq >= 0),
        record BLOB    NOT NULL,
        UNIQUE (device, seq)
    );
    INSERT INTO oplog_ops (device, seq, record)
        SELECT device, seq, record FROM oplog_ops_v2 ORDER BY device, seq;
    DROP TABLE oplog_ops_v2;
    ",
    // 6: a file-backed journal keeps its base checkpoint's state in a file beside the database
    // (`state_file = 1`, `state` empty); rows written before keep the state inline.
    r"
    ALTER TABLE oplog_base ADD COLUMN state_file INTEGER NOT NULL DEFAULT 0
        CHECK (state_file IN (0, 1));
    ",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database up to [`SCHEMA_VERSION`].
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Brings the database up to `target` (at most [`SCHEMA_VERSION`]); tests use it to build
/// databases as older builds left them.
pub(super) fn migrate_to(conn: &mut Connection, target: u32) -> Result<(), StoreError> {
    let current: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(map_sqlite)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Incompatible(format!(
            "database schema version {current} is newer than this build supports ({SCHEMA_VERSION})"
        )));
    }
    let wanted = MIGRATIONS.iter().take(target as usize);
    for (index, sql) in wanted.enumerate().skip(current as usize) {
        let version = index as u32 + 1;
        // IMMEDIATE takes the write lock before the version is re-read, so two processes
        // opening the same fresh file apply each migration exactly once.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_sqlite)?;
        let applied: u32 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(map_sqlite)?;
        if applied >= version {
            continue;
        }
        tx.execute_batch(sql).map_err(map_sqlite)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(map_sqlite)?;
        tx.commit().map_err(map_sqlite)?;
        tracing::debug!(version, "applied local schema migration");
    }
    Ok(())
}

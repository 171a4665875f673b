//! [`SqliteStore`]: the embedded, durable [`Store`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::domain::{
    ConsumerName, DeviceId, DomainError, EffectRecord, EffectSeq, Message, MessageId, Repository,
    Seq, Session, SessionId, SessionStatus, SideEffect,
};
use crate::ports::{Fact, Store, StoreContents, StoreError, WriteBatch};

use super::connection::{open_file, open_memory, SqliteOptions};
use super::error::{
    constraint_code, map_sqlite, CONSTRAINT_FOREIGNKEY, CONSTRAINT_PRIMARYKEY, CONSTRAINT_UNIQUE,
};
use super::rows::{self, effect_columns, message_columns, repository_columns, session_columns};
use super::schema::migrate;

const SELECT_REPOSITORIES: &str = concat!("SELECT ", repository_columns!(), " FROM repositories");
const SELECT_SESSIONS: &str = concat!("SELECT ", session_columns!(), " FROM sessions");
const SELECT_MESSAGES: &str = concat!("SELECT ", message_columns!(), " FROM messages");
const SELECT_MESSAGES_AFTER: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
);
const SELECT_MESSAGE_BY_ID: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE id = ?1"
);
const SELECT_EFFECTS_AFTER: &str = concat!(
    "SELECT ",
    effect_columns!(),
    " FROM effects WHERE seq > ?1 ORDER BY seq LIMIT ?2"
);
const INSERT_REPOSITORY: &str = concat!(
    "INSERT INTO repositories (",
    repository_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5)"
);
const INSERT_SESSION: &str = concat!(
    "INSERT INTO sessions (",
    session_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
);
const INSERT_MESSAGE: &str = concat!(
    "INSERT INTO messages (",
    message_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
);

/// The SQLite-backed store: one writer connection, plus a reader connection for file databases
/// so effect-log consumers and refreshes never queue behind the writer.
///
/// Opened with [`SqliteStore::open`] (a file, WAL, the production store) or
/// [`SqliteStore::open_in_memory`] (a private in-memory database, for tests and development
/// only: it cannot use WAL and vanishes with the process).
pub struct SqliteStore {
    writer: Mutex<Connection>,
    reader: Option<Mutex<Connection>>,
    path: Option<PathBuf>,
    options: SqliteOptions,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, asserts its PRAGMAs and applies
    /// pending migrations.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let mut writer = open_file(path, &options)?;
        migrate(&mut writer)?;
        let reader = open_file(path, &options)?;
        Ok(Self {
            writer: Mutex::new(writer),
            reader: Some(Mutex::new(reader)),
            path: Some(path.to_owned()),
            options,
        })
    }

    /// Opens a private in-memory database. **Test and development only**: nothing survives the
    /// process, and WAL is unavailable in memory.
    pub fn open_in_memory(options: SqliteOptions) -> Result<Self, StoreError> {
        let mut conn = open_memory(&options)?;
        migrate(&mut conn)?;
        Ok(Self {
            writer: Mutex::new(conn),
            reader: None,
            path: None,
            options,
        })
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The options the store was opened with.
    pub fn options(&self) -> SqliteOptions {
        self.options
    }

    /// Caps the database at `pages` pages (`PRAGMA max_page_count`) on the writer connection;
    /// `None` lifts the cap. Writes that would grow past it fail with [`StoreError::DiskFull`].
    /// Useful as a disk quota, and to rehearse a full disk.
    pub fn set_page_limit(&self, pages: Option<u64>) -> Result<(), StoreError> {
        let conn = self.writer();
        let limit = pages.unwrap_or(u32::MAX as u64 - 1);
        conn.query_row(&format!("PRAGMA max_page_count = {limit}"), [], |_| Ok(()))
            .map_err(map_sqlite)
    }

    /// The number of pages the database currently uses.
    pub fn page_count(&self) -> Result<u64, StoreError> {
        let conn = self.writer();
        conn.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(map_sqlite)
    }

    /// Runs `PRAGMA integrity_check` and returns its verdict (`"ok"` when healthy).
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        let conn = self.writer();
        let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(map_sqlite)?;
        let lines: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(map_sqlite)?
            .collect::<Result<_, _>>()
            .map_err(map_sqlite)?;
        Ok(lines.join("\n"))
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (an open transaction
        // rolls back on drop), so a poisoned lock is safe to keep using.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        match &self.reader {
            Some(r) => r.lock().unwrap_or_else(|p| p.into_inner()),
            None => self.writer(),
        }
    }
}

impl Store for SqliteStore {
    fn load(&self) -> Result<StoreContents, StoreError> {
        let conn = self.reader();
        // One read transaction so the three tables are a consistent snapshot.
        let tx = conn.unchecked_transaction().map_err(map_sqlite)?;
        let repositories = collect(&tx, SELECT_REPOSITORIES, rows::repository)?;
        let sessions = collect(&tx, SELECT_SESSIONS, rows::session)?;
        let mut by_session: HashMap<SessionId, Vec<Message>> =
            sessions.iter().map(|s| (s.id, Vec::new())).collect();
        {
            // Table order is insertion order, which is seq order within a session; sorted below
            // only if that ever fails to hold.
            let mut stmt = tx.prepare(SELECT_MESSAGES).map_err(map_sqlite)?;
            let mut it = stmt.query([]).map_err(map_sqlite)?;
            while let Some(row) = it.next().map_err(map_sqlite)? {
                let m = rows::message(row)?;
                by_session
                    .get_mut(&m.session_id)
                    .ok_or_else(|| StoreError::Decode(format!("message {} has no session", m.id)))?
                    .push(m);
            }
        }
        let runtime_statuses = collect(&tx, "SELECT envelope FROM runtime_status", |r| {
            rows::runtime_status(r, 0)
        })?;
        drop(tx);
        let sessions = sessions
            .into_iter()
            .map(|s| {
                let mut msgs = by_session.remove(&s.id).unwrap_or_default();
                if !msgs.is_sorted_by_key(|m| m.seq) {
                    msgs.sort_by_key(|m| m.seq);
                }
                (s, msgs)
            })
            .collect();
        Ok(StoreContents {
            repositories,
            sessions,
            runtime_statuses,
        })
    }

    fn commit(&self, batch: &WriteBatch) -> Result<Vec<EffectRecord>, StoreError> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_sqlite)?;
        for fact in &batch.facts {
            apply_fact(&tx, fact)?;
        }
        let mut records = Vec::with_capacity(batch.effects.len());
        for effect in &batch.effects {
            records.push(insert_effect(&tx, effect, batch.committed_at_ms)?);
        }
        tx.commit().map_err(map_sqlite)?;
        Ok(records)
    }

    fn messages_after(
        &self,
        session: SessionId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(SELECT_MESSAGES_AFTER)
            .map_err(map_sqlite)?;
        let mut it = stmt
            .query(params![
                session.to_string(),
                as_i64(after.get()),
                as_i64(limit as u64)
            ])
            .map_err(map_sqlite)?;
        let mut out = Vec::new();
        while let Some(row) = it.next().map_err(map_sqlite)? {
            out.push(rows::message(row)?);
        }
        Ok(out)
    }

    fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(SELECT_MESSAGE_BY_ID)
            .map_err(map_sqlite)?;
        let mut it = stmt.query([id.to_string()]).map_err(map_sqlite)?;
        match it.next().map_err(map_sqlite)? {
            Some(row) => Ok(Some(rows::message(row)?)),
            None => Ok(None),
        }
    }

    fn effects_after(
        &self,
        after: EffectSeq,
        limit: usize,
    ) -> Result<Vec<EffectRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(SELECT_EFFECTS_AFTER)
            .map_err(map_sqlite)?;
        let mut it = stmt
            .query(params![as_i64(after.get()), as_i64(limit as u64)])
            .map_err(map_sqlite)?;
        let mut out = Vec::new();
        while let Some(row) = it.next().map_err(map_sqlite)? {
            out.push(rows::effect(row)?);
        }
        Ok(out)
    }

    fn effect_head(&self) -> Result<EffectSeq, StoreError> {
        head(&self.reader())
    }

    fn cursor(&self, consumer: &ConsumerName) -> Result<EffectSeq, StoreError> {
        cursor_of(&self.reader(), consumer)
    }

    fn advance_cursor(&self, consumer: &ConsumerName, to: EffectSeq) -> Result<(), StoreError> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_sqlite)?;
        let current = cursor_of(&tx, consumer)?;
        if to < current {
            return Err(StoreError::CursorRegression {
                consumer: consumer.clone(),
                current,
                requested: to,
            });
        }
        if to == current {
            return Ok(());
        }
        let head = head(&tx)?;
        if to > head {
            return Err(StoreError::CursorBeyondHead {
                consumer: consumer.clone(),
                head,
                requested: to,
            });
        }
        tx.execute(
            "INSERT INTO consumer_cursors (consumer, position, updated_at_ms) \
             VALUES (?1, ?2, CAST(unixepoch('subsec') * 1000 AS INTEGER)) \
             ON CONFLICT (consumer) DO UPDATE SET position = excluded.position, \
             updated_at_ms = excluded.updated_at_ms",
            params![consumer.as_str(), as_i64(to.get())],
        )
        .map_err(map_sqlite)?;
        tx.commit().map_err(map_sqlite)
    }

    fn cursors(&self) -> Result<Vec<(ConsumerName, EffectSeq)>, StoreError> {
        let conn = self.reader();
        collect(
            &conn,
            "SELECT consumer, position FROM consumer_cursors ORDER BY consumer",
            |r| {
                let name: String = r.get(0)?;
                let name = ConsumerName::parse(&name)
                    .map_err(|e| rows::RowError::Invalid(e.to_string()))?;
                let pos: i64 = r.get(1)?;
                Ok((name, EffectSeq::new(pos.max(0) as u64)))
            },
        )
    }

    fn local_device_id(&self, candidate: DeviceId) -> Result<DeviceId, StoreError> {
        let conn = self.writer();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('device_id', ?1) ON CONFLICT (key) DO NOTHING",
            [candidate.to_string()],
        )
        .map_err(map_sqlite)?;
        let stored: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'device_id'", [], |r| {
                r.get(0)
            })
            .map_err(map_sqlite)?;
        DeviceId::parse(&stored).map_err(|e| StoreError::Decode(e.to_string()))
    }
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn collect<T>(
    conn: &Connection,
    sql: &str,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T, rows::RowError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_sqlite)?;
    let mut it = stmt.query([]).map_err(map_sqlite)?;
    let mut out = Vec::new();
    while let Some(row) = it.next().map_err(map_sqlite)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

fn head(conn: &Connection) -> Result<EffectSeq, StoreError> {
    let seq: Option<i64> = conn
        .query_row("SELECT MAX(seq) FROM effects", [], |r| r.get(0))
        .map_err(map_sqlite)?;
    Ok(EffectSeq::new(seq.unwrap_or(0).max(0) as u64))
}

fn cursor_of(conn: &Connection, consumer: &ConsumerName) -> Result<EffectSeq, StoreError> {
    let pos: Option<i64> = conn
        .prepare_cached("SELECT position FROM consumer_cursors WHERE consumer = ?1")
        .and_then(|mut s| s.query_row([consumer.as_str()], |r| r.get(0)).optional())
        .map_err(map_sqlite)?;
    Ok(EffectSeq::new(pos.unwrap_or(0).max(0) as u64))
}

fn insert_effect(
    tx: &Transaction<'_>,
    effect: &SideEffect,
    at_ms: i64,
) -> Result<EffectRecord, StoreError> {
    let payload = serde_json::to_string(effect).map_err(|e| StoreError::Backend(Box::new(e)))?;
    tx.prepare_cached("INSERT INTO effects (kind, payload, committed_at_ms) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![effect.kind(), payload, at_ms]))
        .map_err(map_sqlite)?;
    Ok(EffectRecord {
        seq: EffectSeq::new(tx.last_insert_rowid().max(0) as u64),
        effect: effect.clone(),
        committed_at_ms: at_ms,
    })
}

/// Maps a constraint violation of a known kind to a domain error; anything else is classified
/// generically.
fn on_constraint(
    e: rusqlite::Error,
    classify: impl FnOnce(i32) -> Option<DomainError>,
) -> StoreError {
    match constraint_code(&e).and_then(classify) {
        Some(domain) => StoreError::Rejected(domain),
        None => map_sqlite(e),
    }
}

fn apply_fact(tx: &Transaction<'_>, fact: &Fact) -> Result<(), StoreError> {
    match fact {
        Fact::InsertRepository(r) => insert_repository(tx, r),
        Fact::DeleteRepository(id) => {
            let n = tx
                .execute("DELETE FROM repositories WHERE id = ?1", [id.to_string()])
                .map_err(map_sqlite)?;
            if n == 0 {
                return Err(DomainError::RepositoryNotFound(*id).into());
            }
            Ok(())
        }
        Fact::InsertSession(s) => insert_session(tx, s),
        Fact::UpdateSession(s) => {
            let n = tx
                .execute(
                    "UPDATE sessions SET title = ?2, status = ?3, updated_at_ms = ?4, \
                     closed_at_ms = ?5 WHERE id = ?1",
                    params![
                        s.id.to_string(),
                        s.title,
                        s.status.as_str(),
                        s.updated_at_ms,
                        s.closed_at_ms
                    ],
                )
                .map_err(map_sqlite)?;
            if n == 0 {
                return Err(DomainError::SessionNotFound(s.id).into());
            }
            Ok(())
        }
        Fact::DeleteSession(id) => {
            let n = tx
                .execute("DELETE FROM sessions WHERE id = ?1", [id.to_string()])
                .map_err(map_sqlite)?;
            if n == 0 {
                return Err(DomainError::SessionNotFound(*id).into());
            }
            Ok(())
        }
        Fact::AppendMessage(m) => append_message(tx, m),
        Fact::PutRuntimeStatus(env) => {
            let json = serde_json::to_string(env).map_err(|e| StoreError::Backend(Box::new(e)))?;
            tx.execute(
                "INSERT INTO runtime_status (session_id, envelope, updated_at_ms) \
                 VALUES (?1, ?2, ?3) ON CONFLICT (session_id) DO UPDATE SET \
                 envelope = excluded.envelope, updated_at_ms = excluded.updated_at_ms",
                params![env.session_id.to_string(), json, env.updated_at_ms],
            )
            .map_err(|e| {
                on_constraint(e, |code| {
                    (code == CONSTRAINT_FOREIGNKEY)
                        .then_some(DomainError::SessionNotFound(env.session_id))
                })
            })?;
            Ok(())
        }
    }
}

fn insert_repository(tx: &Transaction<'_>, r: &Repository) -> Result<(), StoreError> {
    tx.execute(
        INSERT_REPOSITORY,
        params![
            r.id.to_string(),
            r.name,
            r.remote_url,
            r.created_at_ms,
            r.updated_at_ms
        ],
    )
    .map_err(|e| {
        on_constraint(e, |code| {
            matches!(code, CONSTRAINT_PRIMARYKEY | CONSTRAINT_UNIQUE)
                .then_some(DomainError::RepositoryExists(r.id))
        })
    })?;
    Ok(())
}

fn insert_session(tx: &Transaction<'_>, s: &Session) -> Result<(), StoreError> {
    tx.execute(
        INSERT_SESSION,
        params![
            s.id.to_string(),
            s.repository_id.to_string(),
            s.title,
            s.status.as_str(),
            s.created_at_ms,
            s.updated_at_ms,
            s.closed_at_ms
        ],
    )
    .map_err(|e| {
        on_constraint(e, |code| match code {
            CONSTRAINT_PRIMARYKEY | CONSTRAINT_UNIQUE => Some(DomainError::SessionExists(s.id)),
            CONSTRAINT_FOREIGNKEY => Some(DomainError::RepositoryNotFound(s.repository_id)),
            _ => None,
        })
    })?;
    Ok(())
}

fn append_message(tx: &Transaction<'_>, m: &Message) -> Result<(), StoreError> {
    let session = m.session_id.to_string();
    let seq = as_i64(m.seq.get());
    // One statement checks existence, openness and contiguity, and claims the seq.
    let claimed = tx
        .prepare_cached(
            "UPDATE sessions SET last_seq = ?2 \
             WHERE id = ?1 AND status = 'active' AND last_seq = ?2 - 1",
        )
        .and_then(|mut s| s.execute(params![session, seq]))
        .map_err(map_sqlite)?;
    if claimed == 0 {
        return Err(explain_refused_append(tx, m));
    }
    tx.prepare_cached(INSERT_MESSAGE)
        .and_then(|mut s| {
            s.execute(params![
                m.id.to_string(),
                session,
                seq,
                m.role.as_str(),
                m.content,
                m.created_at_ms,
                m.origin.to_string()
            ])
        })
        .map_err(|e| {
            on_constraint(e, |code| {
                (code == CONSTRAINT_UNIQUE).then_some(DomainError::DuplicateMessage(m.id))
            })
        })?;
    Ok(())
}

fn explain_refused_append(tx: &Transaction<'_>, m: &Message) -> StoreError {
    let row: Result<Option<(String, i64)>, _> = tx
        .query_row(
            "SELECT status, last_seq FROM sessions WHERE id = ?1",
            [m.session_id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional();
    match row {
        Err(e) => map_sqlite(e),
        Ok(None) => DomainError::SessionNotFound(m.session_id).into(),
        Ok(Some((status, _))) if status == SessionStatus::Closed.as_str() => {
            DomainError::SessionClosed(m.session_id).into()
        }
        Ok(Some((_, last))) => StoreError::SeqConflict {
            session: m.session_id,
            expected: Seq::new(last.max(0) as u64 + 1),
            got: m.seq,
        },
    }
}

//! Decoding rows into domain values. Stored data that fails validation is a
//! [`StoreError::Decode`], never a panic.

use std::str::FromStr;

use rusqlite::Row;

use crate::domain::{
    EffectRecord, EffectSeq, Message, Repository, Role, RuntimeStatusEnvelope, Seq, Session,
    SessionStatus,
};
use crate::ports::StoreError;

// Column lists as macros, so the store can build its SQL as compile-time constants with
// `concat!` instead of formatting strings on every call.

/// Column list matching [`message`].
macro_rules! message_columns {
    () => {
        "id, session_id, seq, role, content, created_at_ms, origin"
    };
}
/// Column list matching [`session`].
macro_rules! session_columns {
    () => {
        "id, repository_id, title, status, created_at_ms, updated_at_ms, closed_at_ms"
    };
}
/// Column list matching [`repository`].
macro_rules! repository_columns {
    () => {
        "id, name, remote_url, created_at_ms, updated_at_ms"
    };
}
/// Column list matching [`effect`].
macro_rules! effect_columns {
    () => {
        "seq, payload, committed_at_ms"
    };
}
pub(crate) use {effect_columns, message_columns, repository_columns, session_columns};

/// A row decoding failure: either SQLite could not read the column, or the value is invalid.
pub enum RowError {
    /// rusqlite failed to read a column.
    Sql(rusqlite::Error),
    /// The value does not satisfy the domain's rules.
    Invalid(String),
}

impl From<rusqlite::Error> for RowError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<RowError> for StoreError {
    fn from(e: RowError) -> Self {
        match e {
            RowError::Sql(e) => super::error::map_sqlite(e),
            RowError::Invalid(reason) => StoreError::Decode(reason),
        }
    }
}

fn text<'r>(row: &'r Row<'_>, i: usize) -> Result<&'r str, RowError> {
    row.get_ref(i)?
        .as_str()
        .map_err(|e| RowError::Sql(e.into()))
}

fn parse<T: FromStr>(row: &Row<'_>, i: usize, what: &str) -> Result<T, RowError>
where
    T::Err: std::fmt::Display,
{
    let raw = text(row, i)?;
    raw.parse()
        .map_err(|e| RowError::Invalid(format!("{what}: {e}")))
}

fn seq(row: &Row<'_>, i: usize) -> Result<u64, RowError> {
    let v: i64 = row.get(i)?;
    u64::try_from(v).map_err(|_| RowError::Invalid(format!("negative sequence number {v}")))
}

/// Decodes a message row selected with the columns of `message_columns!`.
pub fn message(row: &Row<'_>) -> Result<Message, RowError> {
    Ok(Message {
        id: parse(row, 0, "message id")?,
        session_id: parse(row, 1, "session id")?,
        seq: Seq::new(seq(row, 2)?),
        role: Role::parse(text(row, 3)?).map_err(|e| RowError::Invalid(e.to_string()))?,
        content: row.get(4)?,
        created_at_ms: row.get(5)?,
        origin: parse(row, 6, "origin device id")?,
    })
}

/// Decodes a session row selected with the columns of `session_columns!`.
pub fn session(row: &Row<'_>) -> Result<Session, RowError> {
    Ok(Session {
        id: parse(row, 0, "session id")?,
        repository_id: parse(row, 1, "repository id")?,
        title: row.get(2)?,
        status: SessionStatus::parse(text(row, 3)?)
            .map_err(|e| RowError::Invalid(e.to_string()))?,
        created_at_ms: row.get(4)?,
        updated_at_ms: row.get(5)?,
        closed_at_ms: row.get(6)?,
    })
}

/// Decodes a repository row selected with the columns of `repository_columns!`.
pub fn repository(row: &Row<'_>) -> Result<Repository, RowError> {
    Ok(Repository {
        id: parse(row, 0, "repository id")?,
        name: row.get(1)?,
        remote_url: row.get(2)?,
        created_at_ms: row.get(3)?,
        updated_at_ms: row.get(4)?,
    })
}

/// Decodes an effect row selected with the columns of `effect_columns!`.
pub fn effect(row: &Row<'_>) -> Result<EffectRecord, RowError> {
    let payload = text(row, 1)?;
    Ok(EffectRecord {
        seq: EffectSeq::new(seq(row, 0)?),
        effect: serde_json::from_str(payload)
            .map_err(|e| RowError::Invalid(format!("effect payload: {e}")))?,
        committed_at_ms: row.get(2)?,
    })
}

/// Decodes a runtime status envelope column.
pub fn runtime_status(row: &Row<'_>, i: usize) -> Result<RuntimeStatusEnvelope, RowError> {
    serde_json::from_str(text(row, i)?)
        .map_err(|e| RowError::Invalid(format!("runtime status: {e}")))
}

//! Mapping rusqlite errors onto [`StoreError`], by SQLite error code (never by message text).

use rusqlite::ErrorCode;

use crate::ports::StoreError;

/// Extended result code for a PRIMARY KEY violation.
pub const CONSTRAINT_PRIMARYKEY: i32 = 1555;
/// Extended result code for a UNIQUE violation.
pub const CONSTRAINT_UNIQUE: i32 = 2067;
/// Extended result code for a FOREIGN KEY violation.
pub const CONSTRAINT_FOREIGNKEY: i32 = 787;

/// The extended result code of a constraint violation, if `e` is one.
pub fn constraint_code(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            Some(f.extended_code)
        }
        _ => None,
    }
}

/// Classifies a rusqlite error that has no more specific meaning in its context.
pub fn map_sqlite(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::DiskFull,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Backend(Box::new(e)),
    }
}

//! Repositories and sessions.

use serde::{Deserialize, Serialize};

use super::error::DomainError;
use super::ids::{RepositoryId, SessionId};

/// Longest accepted session title or repository name, in bytes.
pub const MAX_TITLE_BYTES: usize = 1024;

/// A source repository that sessions belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    /// Stable id.
    pub id: RepositoryId,
    /// Human-readable name (non-empty, at most [`MAX_TITLE_BYTES`]).
    pub name: String,
    /// Where the repository lives (a git remote), if known.
    pub remote_url: Option<String>,
    /// When it was created, in Unix milliseconds.
    pub created_at_ms: i64,
    /// When it was last changed, in Unix milliseconds.
    pub updated_at_ms: i64,
}

/// Whether a session still accepts messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Open: messages may be appended.
    Active,
    /// Closed for good: appends are refused.
    Closed,
}

impl SessionStatus {
    /// The stored spelling (`active` / `closed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Closed => "closed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        match s {
            "active" => Ok(Self::Active),
            "closed" => Ok(Self::Closed),
            other => Err(DomainError::InvalidValue {
                what: "session status",
                reason: format!("unknown status {other:?}"),
            }),
        }
    }
}

/// A coding session: an ordered conversation within a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Stable id.
    pub id: SessionId,
    /// The repository it belongs to.
    pub repository_id: RepositoryId,
    /// Human-readable title (at most [`MAX_TITLE_BYTES`]; may be empty).
    pub title: String,
    /// Active or closed.
    pub status: SessionStatus,
    /// When it was created, in Unix milliseconds.
    pub created_at_ms: i64,
    /// When its metadata last changed, in Unix milliseconds.
    pub updated_at_ms: i64,
    /// When it was closed, if it is.
    pub closed_at_ms: Option<i64>,
}

impl Session {
    /// Whether messages may still be appended.
    pub fn is_active(&self) -> bool {
        self.status == SessionStatus::Active
    }
}

/// Checks a repository name: non-empty and at most [`MAX_TITLE_BYTES`].
pub fn validate_repository_name(name: &str) -> Result<(), DomainError> {
    if name.trim().is_empty() {
        return Err(DomainError::InvalidValue {
            what: "repository name",
            reason: "must not be empty".into(),
        });
    }
    validate_title(name)
}

/// Checks a session title: at most [`MAX_TITLE_BYTES`].
pub fn validate_title(title: &str) -> Result<(), DomainError> {
    if title.len() > MAX_TITLE_BYTES {
        return Err(DomainError::InvalidValue {
            what: "title",
            reason: format!(
                "{} bytes exceeds the limit of {MAX_TITLE_BYTES}",
                title.len()
            ),
        });
    }
    Ok(())
}

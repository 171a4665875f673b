//! The `CloudSync` port: the durable cloud copy (Supabase tables behind PostgREST).
//!
//! Every call carries the caller's [`AccessToken`]; the cloud scopes every row to the token's
//! user (row-level security), so the port never names a user id. Message content reaches this
//! port already sealed: rows hold ciphertext, nonce, key epoch and algorithm only.
//!
//! # Contract
//!
//! - `upsert_messages` MUST be idempotent on `(session_id, sequence_number)`: re-sending a
//!   batch (after a lost response, say) leaves exactly one row per message. The whole batch
//!   lands or none of it does.
//! - Upserts of repositories, sessions, devices and key wraps MUST be idempotent on their
//!   primary keys.
//! - Deletes of rows that do not exist MUST succeed (the effect is already in place).
//! - Conditional updates ([`CloudSync::end_session`], [`CloudSync::update_runtime_status`],
//!   [`CloudSync::revoke_device`]) MUST report whether a row matched, never guess.
//! - Every failure MUST be classified once, by the adapter, into a [`CloudError`] whose
//!   [`CloudError::retry_class`] tells a worker what to do; workers never parse messages.
//! - Errors and `Debug` output MUST NOT contain tokens or message content.

use std::fmt::{self, Debug};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::backoff::RetryClass;
use crate::domain::crypto::{KeyEpoch, SessionKeyWrapRow};
use crate::domain::ids::{DeviceId, MessageId, RepositoryId, SessionId};

/// A bearer access token (a JWT). Redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token text, for the `Authorization` header only.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// A `messages` row: sealed content and its binding context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudMessageRow {
    /// Message id.
    pub id: MessageId,
    /// Session id.
    pub session_id: SessionId,
    /// Contiguous per-session sequence number, from 1.
    pub sequence_number: u64,
    /// `user`, `assistant`, `system` or `tool`.
    pub role: String,
    /// Base64 ciphertext (with tag).
    pub content_ciphertext: String,
    /// Base64 nonce.
    pub content_nonce: String,
    /// Session-key epoch it was sealed under.
    pub key_epoch: KeyEpoch,
    /// AEAD algorithm name.
    pub encryption_alg: String,
    /// The device that sealed it.
    pub sender_device_id: DeviceId,
    /// When the message was created, Unix milliseconds.
    pub created_at_ms: i64,
}

/// A `repositories` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudRepositoryRow {
    /// Repository id.
    pub id: RepositoryId,
    /// Display name.
    pub name: String,
    /// Remote URL, if any.
    pub remote_url: Option<String>,
    /// Created, Unix milliseconds.
    pub created_at_ms: i64,
    /// Last updated, Unix milliseconds.
    pub updated_at_ms: i64,
}

/// A session's status in the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudSessionStatus {
    /// Open.
    Active,
    /// Closed.
    Ended,
}

/// A `sessions` row (without the runtime status, which has its own conditional update).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudSessionRow {
    /// Session id.
    pub id: SessionId,
    /// Its repository.
    pub repository_id: RepositoryId,
    /// Title.
    pub title: String,
    /// Status.
    pub status: CloudSessionStatus,
    /// Created, Unix milliseconds.
    pub created_at_ms: i64,
    /// Last updated, Unix milliseconds.
    pub updated_at_ms: i64,
    /// When it ended, if it did.
    pub ended_at_ms: Option<i64>,
}

/// A `devices` row: public keys only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudDeviceRow {
    /// Device id.
    pub id: DeviceId,
    /// Display name.
    pub name: String,
    /// Platform (`macos`, `linux`, `ios`, ...).
    pub platform: String,
    /// Base64 X25519 public key.
    pub x25519_public_key: String,
    /// Base64 Ed25519 public key.
    pub ed25519_public_key: String,
    /// Last seen, Unix milliseconds.
    pub last_seen_at_ms: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<i64>,
}

/// Why a cloud call failed, classified once by the adapter.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The service is temporarily unable (5xx, 408, 429, timeout).
    #[error("cloud temporarily unavailable (HTTP {status}, code {code:?}): {message}")]
    Transient {
        /// HTTP status (0 for a timeout).
        status: u16,
        /// PostgREST/PostgreSQL error code, if any.
        code: Option<String>,
        /// The server's message (never request content).
        message: String,
        /// The server's `Retry-After`, if sent.
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, DNS failure.
    #[error("cloud unreachable: {0}")]
    Network(String),
    /// The token was refused (401, PGRST301/302/303): refresh once and retry.
    #[error("cloud refused the access token (code {code:?}): {message}")]
    Unauthenticated {
        /// PostgREST error code.
        code: Option<String>,
        /// The server's message.
        message: String,
    },
    /// Retrying cannot help (other 4xx, constraint or policy violations).
    #[error("cloud refused the request (HTTP {status}, code {code:?}): {message}")]
    Permanent {
        /// HTTP status.
        status: u16,
        /// PostgREST/PostgreSQL error code, if any.
        code: Option<String>,
        /// The server's message.
        message: String,
    },
    /// The adapter itself failed (bad configuration, undecodable response).
    #[error("cloud adapter failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl CloudError {
    /// How a worker may retry this failure.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            Self::Transient { retry_after, .. } => RetryClass::Transient {
                retry_after: *retry_after,
            },
            Self::Network(_) => RetryClass::Network,
            Self::Unauthenticated { .. } => RetryClass::Unauthenticated,
            Self::Permanent { .. } | Self::Backend(_) => RetryClass::Permanent,
        }
    }
}

/// The cloud copy of a user's sessions. See the module docs for the contract.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait CloudSync: Send + Sync + Debug + 'static {
    /// Upserts sealed messages on `(session_id, sequence_number)`, in one request.
    async fn upsert_messages(
        &self,
        token: &AccessToken,
        rows: &[CloudMessageRow],
    ) -> Result<(), CloudError>;

    /// A session's messages with `sequence_number > after`, in order, at most `limit`.
    async fn fetch_messages(
        &self,
        token: &AccessToken,
        session: SessionId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<CloudMessageRow>, CloudError>;

    /// Upserts a repository.
    async fn upsert_repository(
        &self,
        token: &AccessToken,
        row: &CloudRepositoryRow,
    ) -> Result<(), CloudError>;

    /// Deletes a repository (and, by cascade, its sessions and messages).
    async fn delete_repository(
        &self,
        token: &AccessToken,
        id: RepositoryId,
    ) -> Result<(), CloudError>;

    /// Upserts a session's metadata.
    async fn upsert_session(
        &self,
        token: &AccessToken,
        row: &CloudSessionRow,
    ) -> Result<(), CloudError>;

    /// Deletes a session (and, by cascade, its messages and key wraps).
    async fn delete_session(&self, token: &AccessToken, id: SessionId) -> Result<(), CloudError>;

    /// Sets a session's status to ended; `false` if no such session row exists.
    async fn end_session(
        &self,
        token: &AccessToken,
        id: SessionId,
        ended_at_ms: i64,
    ) -> Result<bool, CloudError>;

    /// Sets a session's runtime status unless a newer one is stored; `false` if no row changed.
    async fn update_runtime_status(
        &self,
        token: &AccessToken,
        id: SessionId,
        status: &Value,
        updated_at_ms: i64,
    ) -> Result<bool, CloudError>;

    /// Registers (or refreshes) a device and its public keys.
    async fn upsert_device(
        &self,
        token: &AccessToken,
        row: &CloudDeviceRow,
    ) -> Result<(), CloudError>;

    /// Every device of the token's user, revoked ones included.
    async fn list_devices(&self, token: &AccessToken) -> Result<Vec<CloudDeviceRow>, CloudError>;

    /// Marks a device revoked; `false` if no such device row exists.
    async fn revoke_device(
        &self,
        token: &AccessToken,
        id: DeviceId,
        revoked_at_ms: i64,
    ) -> Result<bool, CloudError>;

    /// Upserts session-key wraps on `(session_id, key_epoch, recipient_device_id)`.
    async fn put_key_wraps(
        &self,
        token: &AccessToken,
        rows: &[SessionKeyWrapRow],
    ) -> Result<(), CloudError>;

    /// The wraps of a session addressed to `recipient`, every epoch.
    async fn fetch_key_wraps(
        &self,
        token: &AccessToken,
        session: SessionId,
        recipient: DeviceId,
    ) -> Result<Vec<SessionKeyWrapRow>, CloudError>;
}

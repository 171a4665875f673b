//! The `TokenRefresher` port and the auth context the cloud workers run under.
//!
//! An [`AuthContext`] is what a signed-in user hands the daemon: an access token, a refresh
//! token, the user id and this device's id. Cloud workers run only while a context is set;
//! with none they wait, without advancing their cursors and without losing anything.
//!
//! # Contract
//!
//! - [`TokenRefresher::refresh`] MUST exchange a refresh token for a new access token and a
//!   new refresh token (refresh tokens rotate: the old one MUST NOT be used again).
//! - A refresh token the server refuses MUST be reported as [`AuthError::Rejected`] (sign in
//!   again); a server that cannot answer now as [`AuthError::Unavailable`] (try later).
//! - Errors and `Debug` output MUST NOT contain either token.

use std::fmt::{self, Debug};

use async_trait::async_trait;

use crate::domain::ids::{DeviceId, UserId};
use crate::ports::cloud::AccessToken;

/// A refresh token. Redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token text, for the refresh request only.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

/// Who the cloud workers act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthContext {
    /// The bearer token sent with every cloud call.
    pub access_token: AccessToken,
    /// The token that buys the next access token.
    pub refresh_token: RefreshToken,
    /// The signed-in user.
    pub user_id: UserId,
    /// This device.
    pub device_id: DeviceId,
}

/// A fresh token pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPair {
    /// The new access token.
    pub access_token: AccessToken,
    /// The new (rotated) refresh token.
    pub refresh_token: RefreshToken,
    /// When the access token expires, Unix milliseconds, if the server said.
    pub expires_at_ms: Option<i64>,
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The server refused the refresh token: the user must sign in again.
    #[error("the refresh token was refused: {0}")]
    Rejected(String),
    /// The server could not answer now (network, 5xx, 429).
    #[error("the auth server is unavailable: {0}")]
    Unavailable(String),
    /// The adapter failed (bad configuration, undecodable response).
    #[error("auth adapter failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Exchanges refresh tokens for new token pairs. See the module docs for the contract.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait TokenRefresher: Send + Sync + Debug + 'static {
    /// Exchanges `refresh_token` for a new pair.
    async fn refresh(&self, refresh_token: &RefreshToken) -> Result<TokenPair, AuthError>;
}

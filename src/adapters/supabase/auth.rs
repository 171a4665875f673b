//! [`SupabaseTokenRefresher`]: the [`TokenRefresher`] port over Supabase Auth.
//!
//! `POST {auth_url}/auth/v1/token?grant_type=refresh_token` with the `apikey` header and the
//! JSON body `{"refresh_token": "…"}`; the answer is
//! `{"access_token", "refresh_token", "expires_in", "expires_at"?, …}`. Supabase rotates
//! refresh tokens: the one sent is spent, the one returned buys the next access token.
//!
//! Failures: 400/401/403 (`invalid_grant`, `refresh_token_not_found`, …) are
//! [`AuthError::Rejected`] (sign in again); 408, 429, 5xx, timeouts and network errors are
//! [`AuthError::Unavailable`] (try later); anything else, including a success body that does
//! not decode, is [`AuthError::Backend`]. No error ever contains either token.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::config::SupabaseConfig;
use super::http::{decode_json, encode_json, Failure, HttpClient};
use crate::adapters::system::SystemClock;
use crate::ports::auth::{AuthError, RefreshToken, TokenPair, TokenRefresher};
use crate::ports::clock::Clock;
use crate::ports::cloud::AccessToken;

/// Refreshes Supabase sessions through the project's Auth endpoint.
///
/// Needs [`SupabaseConfig::auth_url`] and, on hosted Supabase, [`SupabaseConfig::api_key`].
/// `Debug` shows the configuration with the key redacted.
#[derive(Clone)]
pub struct SupabaseTokenRefresher {
    http: HttpClient,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for SupabaseTokenRefresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupabaseTokenRefresher")
            .field("config", self.http.config())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct RefreshRequest<'a> {
    refresh_token: &'a str,
}

#[derive(Deserialize)]
struct RefreshResponse {
    access_token: String,
    refresh_token: String,
    /// Lifetime of the access token, seconds.
    expires_in: Option<i64>,
    /// Expiry of the access token, Unix seconds.
    expires_at: Option<i64>,
}

impl SupabaseTokenRefresher {
    /// Builds the refresher. Fails with [`AuthError::Backend`] when no auth URL is configured
    /// or the HTTP client cannot be built.
    pub fn new(config: SupabaseConfig) -> Result<Self, AuthError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// Like [`new`](Self::new), with the clock used to turn `expires_in` into an expiry time
    /// when the server does not send `expires_at`.
    pub fn with_clock(config: SupabaseConfig, clock: Arc<dyn Clock>) -> Result<Self, AuthError> {
        config.token_url().map_err(Failure::from)?;
        Ok(Self {
            http: HttpClient::new(config)?,
            clock,
        })
    }

    fn expires_at_ms(&self, response: &RefreshResponse) -> Option<i64> {
        match (response.expires_at, response.expires_in) {
            (Some(at), _) => at.checked_mul(1000),
            (None, Some(seconds)) => seconds
                .checked_mul(1000)
                .and_then(|ms| self.clock.now_ms().checked_add(ms)),
            (None, None) => None,
        }
    }
}

#[async_trait]
impl TokenRefresher for SupabaseTokenRefresher {
    async fn refresh(&self, refresh_token: &RefreshToken) -> Result<TokenPair, AuthError> {
        let mut url = self.http.config().token_url().map_err(Failure::from)?;
        url.query_pairs_mut()
            .append_pair("grant_type", "refresh_token");
        let body = encode_json(&RefreshRequest {
            refresh_token: refresh_token.expose_secret(),
        })?;
        let request = self
            .http
            .request(Method::POST, url, None)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let answer = self
            .http
            .execute(request, &[refresh_token.expose_secret()])
            .await?;
        let response: RefreshResponse = decode_json(&answer.body)?;
        if response.access_token.is_empty() || response.refresh_token.is_empty() {
            return Err(AuthError::Backend(Box::new(Failure::Decode(
                "the token response carries an empty token".into(),
            ))));
        }
        Ok(TokenPair {
            expires_at_ms: self.expires_at_ms(&response),
            access_token: AccessToken::new(response.access_token),
            refresh_token: RefreshToken::new(response.refresh_token),
        })
    }
}

//! The auth context the cloud workers run under, and single-flight token refresh.
//!
//! [`AuthState`] holds the current [`AuthContext`] (or none) in a `tokio::sync::watch`
//! channel: the daemon sets it at sign-in and clears it at sign-out, and workers either read
//! it or wait for it ([`AuthState::wait_for_context`]) without polling.
//!
//! # Refresh
//!
//! When the cloud refuses an access token (HTTP 401), the worker calls
//! [`AuthState::refresh`] with the token that was refused. Refreshes are single-flight: the
//! first caller exchanges the refresh token, every concurrent caller that saw the same
//! refused token waits for it and then uses the new context, so one burst of 401s costs one
//! refresh (and a rotated refresh token is never spent twice). A refresh the server refuses
//! is returned to the caller and remembered in [`AuthState::last_refresh_error`]; the context
//! is *not* cleared behind anyone's back: signing out is the app's decision, made visibly.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::domain::backoff::RetryClass;
use crate::ports::{AccessToken, AuthContext, AuthError, CloudError, TokenRefresher};

/// Why a refresh did not produce a fresh context.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// No context is set (signed out): there is nothing to refresh.
    #[error("no auth context is set")]
    NoContext,
    /// The refresher failed; see [`AuthError`] for whether signing in again is required.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl RefreshError {
    /// Whether the refresh token itself was refused (the user must sign in again).
    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Auth(AuthError::Rejected(_)))
    }
}

/// Why a cloud call made through [`AuthState::call`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthedCallError {
    /// No context is set (signed out).
    #[error("no auth context is set")]
    NoContext,
    /// The cloud call failed (after at most one refresh and retry).
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// The cloud refused the token and refreshing it failed.
    #[error("the access token was refused and refreshing it failed: {0}")]
    Refresh(#[source] RefreshError),
}

/// The current auth context, shared by every cloud worker. See the module docs.
pub struct AuthState {
    tx: watch::Sender<Option<AuthContext>>,
    refresh_gate: tokio::sync::Mutex<()>,
    last_refresh_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.tx.borrow();
        f.debug_struct("AuthState")
            .field("user_id", &current.as_ref().map(|c| c.user_id))
            .field("device_id", &current.as_ref().map(|c| c.device_id))
            .finish_non_exhaustive()
    }
}

impl Default for AuthState {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthState {
    /// A state with no context (signed out).
    pub fn new() -> Self {
        let (tx, _) = watch::channel(None);
        Self {
            tx,
            refresh_gate: tokio::sync::Mutex::new(()),
            last_refresh_error: Mutex::new(None),
        }
    }

    /// A state that starts signed in.
    pub fn with_context(context: AuthContext) -> Self {
        let state = Self::new();
        state.set(context);
        state
    }

    /// Sets (or replaces) the context; waiting workers wake up.
    pub fn set(&self, context: AuthContext) {
        self.tx.send_replace(Some(context));
        self.remember_error(None);
    }

    /// Clears the context (sign-out); workers pause at their next step.
    pub fn clear(&self) {
        self.tx.send_replace(None);
    }

    /// The current context, if any.
    pub fn current(&self) -> Option<AuthContext> {
        self.tx.borrow().clone()
    }

    /// Whether a context is set.
    pub fn is_set(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// A receiver that observes every change of the context.
    pub fn subscribe(&self) -> watch::Receiver<Option<AuthContext>> {
        self.tx.subscribe()
    }

    /// Waits until a context is set and returns it (at once if one is set already).
    pub async fn wait_for_context(&self) -> AuthContext {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(context) = rx.borrow_and_update().clone() {
                return context;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`, so this cannot happen while `self` is borrowed;
                // never resolve rather than invent a context.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The reason the last refresh failed, until a refresh succeeds or a context is set.
    pub fn last_refresh_error(&self) -> Option<String> {
        self.last_refresh_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Refreshes the context after the cloud refused `refused` (single-flight).
    ///
    /// If the current access token is no longer `refused`, someone else refreshed (or signed
    /// in again) meanwhile and the current context is returned without calling `refresher`.
    /// Otherwise the refresh token is exchanged once and both tokens are replaced (refresh
    /// tokens rotate). If the context was replaced or cleared while the refresh ran, the newer
    /// state wins and the refreshed tokens are dropped.
    pub async fn refresh(
        &self,
        refresher: &dyn TokenRefresher,
        refused: &AccessToken,
    ) -> Result<AuthContext, RefreshError> {
        let _gate = self.refresh_gate.lock().await;
        let context = self.current().ok_or(RefreshError::NoContext)?;
        if context.access_token != *refused {
            return Ok(context);
        }
        let pair = match refresher.refresh(&context.refresh_token).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "access token refresh failed");
                self.remember_error(Some(e.to_string()));
                return Err(e.into());
            }
        };
        let mut updated = None;
        self.tx.send_if_modified(|current| match current {
            Some(c) if c.refresh_token == context.refresh_token => {
                c.access_token = pair.access_token.clone();
                c.refresh_token = pair.refresh_token.clone();
                updated = Some(c.clone());
                true
            }
            _ => false,
        });
        self.remember_error(None);
        match updated {
            Some(context) => {
                tracing::debug!("access token refreshed");
                Ok(context)
            }
            None => self.current().ok_or(RefreshError::NoContext),
        }
    }

    /// Runs a cloud call with the current access token; if the cloud refuses the token, refreshes
    /// it once and retries once with the new one.
    pub async fn call<T, F, Fut>(
        &self,
        refresher: &dyn TokenRefresher,
        mut op: F,
    ) -> Result<T, AuthedCallError>
    where
        F: FnMut(AccessToken) -> Fut,
        Fut: Future<Output = Result<T, CloudError>>,
    {
        let context = self.current().ok_or(AuthedCallError::NoContext)?;
        match op(context.access_token.clone()).await {
            Err(e) if e.retry_class() == RetryClass::Unauthenticated => {
                let fresh = self
                    .refresh(refresher, &context.access_token)
                    .await
                    .map_err(AuthedCallError::Refresh)?;
                Ok(op(fresh.access_token).await?)
            }
            other => Ok(other?),
        }
    }

    fn remember_error(&self, error: Option<String>) {
        *self
            .last_refresh_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = error;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::sync::Notify;
    use uuid::Uuid;

    use super::*;
    use crate::domain::{DeviceId, UserId};
    use crate::ports::auth::MockTokenRefresher;
    use crate::ports::{RefreshToken, TokenPair};

    fn context(access: &str, refresh: &str) -> AuthContext {
        AuthContext {
            access_token: AccessToken::new(access),
            refresh_token: RefreshToken::new(refresh),
            user_id: UserId::from_uuid(Uuid::from_u128(1)).unwrap(),
            device_id: DeviceId::from_uuid(Uuid::from_u128(2)).unwrap(),
        }
    }

    fn pair(access: &str, refresh: &str) -> TokenPair {
        TokenPair {
            access_token: AccessToken::new(access),
            refresh_token: RefreshToken::new(refresh),
            expires_at_ms: None,
        }
    }

    /// A refresher that must be called exactly once and hands out `a2` / `r2`.
    fn refreshes_once_to_a2() -> MockTokenRefresher {
        let mut refresher = MockTokenRefresher::new();
        refresher
            .expect_refresh()
            .times(1)
            .returning(|_| Ok(pair("a2", "r2")));
        refresher
    }

    fn unauthenticated() -> CloudError {
        CloudError::Unauthenticated {
            code: Some("PGRST301".into()),
            message: "JWT expired".into(),
        }
    }

    #[tokio::test]
    async fn wait_for_context_resolves_once_a_context_is_set() {
        let state = Arc::new(AuthState::new());
        assert!(!state.is_set());
        let waiter = tokio::spawn({
            let state = Arc::clone(&state);
            async move { state.wait_for_context().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "nothing to return yet");
        state.set(context("a1", "r1"));
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by set")
            .unwrap();
        assert_eq!(got, context("a1", "r1"));
        state.clear();
        assert_eq!(state.current(), None);
    }

    #[tokio::test]
    async fn refresh_rotates_both_tokens() {
        let state = AuthState::with_context(context("a1", "r1"));
        let mut refresher = MockTokenRefresher::new();
        refresher
            .expect_refresh()
            .withf(|t| t.expose_secret() == "r1")
            .times(1)
            .returning(|_| Ok(pair("a2", "r2")));
        let fresh = state
            .refresh(&refresher, &AccessToken::new("a1"))
            .await
            .unwrap();
        assert_eq!(fresh, context("a2", "r2"));
        assert_eq!(state.current(), Some(context("a2", "r2")));
    }

    #[tokio::test]
    async fn a_stale_refused_token_does_not_refresh_again() {
        let state = AuthState::with_context(context("a2", "r2"));
        let refresher = MockTokenRefresher::new(); // any call would panic
        let got = state
            .refresh(&refresher, &AccessToken::new("a1"))
            .await
            .unwrap();
        assert_eq!(got, context("a2", "r2"));
    }

    /// Counts refreshes and holds each one until released.
    #[derive(Debug, Default)]
    struct GatedRefresher {
        calls: AtomicUsize,
        release: Notify,
    }

    #[async_trait]
    impl TokenRefresher for GatedRefresher {
        async fn refresh(&self, _: &RefreshToken) -> Result<TokenPair, AuthError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.release.notified().await;
            Ok(pair(&format!("a{}", n + 1), &format!("r{}", n + 1)))
        }
    }

    #[tokio::test]
    async fn concurrent_refreshes_of_the_same_token_are_single_flight() {
        let state = Arc::new(AuthState::with_context(context("a1", "r1")));
        let refresher = Arc::new(GatedRefresher::default());
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (state, refresher) = (Arc::clone(&state), Arc::clone(&refresher));
                tokio::spawn(async move {
                    state
                        .refresh(refresher.as_ref(), &AccessToken::new("a1"))
                        .await
                })
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(refresher.calls.load(Ordering::SeqCst), 1);
        refresher.release.notify_one();
        for task in tasks {
            let got = tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("finished")
                .unwrap()
                .unwrap();
            assert_eq!(got, context("a2", "r2"));
        }
        assert_eq!(refresher.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_refresh_is_reported_and_clears_nothing() {
        let state = AuthState::with_context(context("a1", "r1"));
        let mut refresher = MockTokenRefresher::new();
        refresher
            .expect_refresh()
            .times(1)
            .returning(|_| Err(AuthError::Rejected("refresh token revoked".into())));
        let err = state
            .refresh(&refresher, &AccessToken::new("a1"))
            .await
            .unwrap_err();
        assert!(err.is_rejected());
        assert_eq!(state.current(), Some(context("a1", "r1")), "still set");
        let reported = state.last_refresh_error().expect("reported");
        assert!(reported.contains("refused"), "{reported}");
        assert!(!reported.contains("r1") && !reported.contains("a1"));
        state.set(context("a9", "r9"));
        assert_eq!(state.last_refresh_error(), None, "a new sign-in clears it");
    }

    #[tokio::test]
    async fn a_context_replaced_during_refresh_wins() {
        let state = Arc::new(AuthState::with_context(context("a1", "r1")));
        let refresher = Arc::new(GatedRefresher::default());
        let task = tokio::spawn({
            let (state, refresher) = (Arc::clone(&state), Arc::clone(&refresher));
            async move {
                state
                    .refresh(refresher.as_ref(), &AccessToken::new("a1"))
                    .await
            }
        });
        for _ in 0..100 {
            if refresher.calls.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(refresher.calls.load(Ordering::SeqCst), 1, "refresh started");
        state.set(context("b1", "s1"));
        refresher.release.notify_one();
        let got = task.await.unwrap().unwrap();
        assert_eq!(got, context("b1", "s1"));
        assert_eq!(state.current(), Some(context("b1", "s1")));
    }

    #[tokio::test]
    async fn call_refreshes_once_on_401_and_retries_with_the_new_token() {
        let state = AuthState::with_context(context("a1", "r1"));
        let refresher = refreshes_once_to_a2();
        let mut seen = Vec::new();
        let got = state
            .call(&refresher, |token| {
                seen.push(token.expose_secret().to_owned());
                let ok = token.expose_secret() == "a2";
                async move {
                    if ok {
                        Ok(7)
                    } else {
                        Err(unauthenticated())
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(got, 7);
        assert_eq!(seen, ["a1", "a2"]);
    }

    #[tokio::test]
    async fn call_gives_up_after_one_refresh() {
        let state = AuthState::with_context(context("a1", "r1"));
        let refresher = refreshes_once_to_a2();
        let mut calls = 0;
        let err = state
            .call(&refresher, |_| {
                calls += 1;
                async { Err::<(), _>(unauthenticated()) }
            })
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            AuthedCallError::Cloud(CloudError::Unauthenticated { .. })
        ));
        assert_eq!(calls, 2);
    }

    #[tokio::test]
    async fn call_without_context_calls_nothing() {
        let state = AuthState::new();
        let refresher = MockTokenRefresher::new();
        let err = state
            .call(&refresher, |_| async { Ok::<_, CloudError>(()) })
            .await
            .unwrap_err();
        assert!(matches!(err, AuthedCallError::NoContext));
    }
}

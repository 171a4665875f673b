//! `SupabaseTokenRefresher` against a wiremock Supabase Auth on 127.0.0.1, and the whole
//! expiry → refresh → retry loop against the real PostgREST.

use std::sync::Arc;

use serde_json::json;
use tandem::adapters::supabase::{ApiKey, SupabaseConfig, SupabaseTokenRefresher};
use tandem::adapters::system::ManualClock;
use tandem::domain::ids::UserId;
use tandem::ports::{AuthError, CloudError, CloudSync, RefreshToken, TokenRefresher};
use uuid::Uuid;
use wiremock::matchers::{any, body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::rows;
use super::services::{unix_now, LiveServices};

const API_KEY: &str = "anon-key-for-auth-tests";
const OLD_REFRESH: &str = "old-refresh-token-0123456789";
const NEW_REFRESH: &str = "new-refresh-token-9876543210";
const NEW_ACCESS: &str = "new-access-token-abcdefghij";

fn refresher(server: &MockServer) -> SupabaseTokenRefresher {
    SupabaseTokenRefresher::new(
        SupabaseConfig::hosted(&server.uri(), ApiKey::new(API_KEY)).expect("uri"),
    )
    .expect("refresher")
}

async fn answering(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

async fn failure_of(server: &MockServer) -> AuthError {
    refresher(server)
        .refresh(&RefreshToken::new(OLD_REFRESH))
        .await
        .expect_err("refused")
}

fn assert_no_tokens(err: &AuthError) {
    let text = format!("{err} / {err:?}");
    for secret in [OLD_REFRESH, NEW_REFRESH, NEW_ACCESS, API_KEY] {
        assert!(!text.contains(secret), "a secret leaked: {text}");
    }
}

#[tokio::test]
async fn refresh_exchanges_the_refresh_token_for_a_new_pair() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/auth/v1/token"))
        .and(query_param("grant_type", "refresh_token"))
        .and(header("apikey", API_KEY))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"refresh_token": OLD_REFRESH})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": NEW_ACCESS,
            "token_type": "bearer",
            "expires_in": 3600,
            "expires_at": 1_800_000_000_i64,
            "refresh_token": NEW_REFRESH,
            "user": {"id": "8f1c6d3e-0000-4000-8000-000000000001"}
        })))
        .expect(1)
        .mount(&server)
        .await;

    let pair = refresher(&server)
        .refresh(&RefreshToken::new(OLD_REFRESH))
        .await
        .expect("refresh");
    assert_eq!(pair.access_token.expose_secret(), NEW_ACCESS);
    assert_eq!(pair.refresh_token.expose_secret(), NEW_REFRESH);
    assert_eq!(pair.expires_at_ms, Some(1_800_000_000_000));
    let debug = format!("{pair:?}");
    assert!(
        !debug.contains(NEW_ACCESS) && !debug.contains(NEW_REFRESH),
        "{debug}"
    );
}

#[tokio::test]
async fn without_expires_at_the_expiry_comes_from_expires_in_and_the_clock() {
    let server = answering(ResponseTemplate::new(200).set_body_json(json!({
        "access_token": NEW_ACCESS, "refresh_token": NEW_REFRESH, "expires_in": 60
    })))
    .await;
    let clock = Arc::new(ManualClock::new(1_000_000));
    let refresher = SupabaseTokenRefresher::with_clock(
        SupabaseConfig::hosted(&server.uri(), ApiKey::new(API_KEY)).expect("uri"),
        clock,
    )
    .expect("refresher");
    let pair = refresher
        .refresh(&RefreshToken::new(OLD_REFRESH))
        .await
        .expect("refresh");
    assert_eq!(pair.expires_at_ms, Some(1_060_000));
}

#[tokio::test]
async fn a_refused_refresh_token_is_rejected() {
    let bodies = [
        (
            400,
            json!({"error": "invalid_grant",
                   "error_description": format!("Invalid Refresh Token: {OLD_REFRESH}")}),
        ),
        (
            400,
            json!({"code": 400, "error_code": "refresh_token_not_found",
                   "msg": "Invalid Refresh Token: Refresh Token Not Found"}),
        ),
        (
            401,
            json!({"message": "Invalid authentication credentials"}),
        ),
    ];
    for (status, body) in bodies {
        let server = answering(ResponseTemplate::new(status).set_body_json(body)).await;
        let err = failure_of(&server).await;
        assert!(matches!(err, AuthError::Rejected(_)), "{status}: {err:?}");
        assert_no_tokens(&err);
    }
}

#[tokio::test]
async fn an_auth_server_that_cannot_answer_is_unavailable() {
    for status in [500, 502, 503, 429] {
        let server =
            answering(ResponseTemplate::new(status).set_body_string(format!("echo {OLD_REFRESH}")))
                .await;
        let err = failure_of(&server).await;
        assert!(
            matches!(err, AuthError::Unavailable(_)),
            "{status}: {err:?}"
        );
        assert_no_tokens(&err);
    }

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let refresher = SupabaseTokenRefresher::new(
        SupabaseConfig::hosted(&format!("http://127.0.0.1:{port}"), ApiKey::new(API_KEY))
            .expect("uri"),
    )
    .expect("refresher");
    let err = refresher
        .refresh(&RefreshToken::new(OLD_REFRESH))
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
    assert_no_tokens(&err);
}

#[tokio::test]
async fn a_malformed_answer_or_configuration_is_a_backend_failure() {
    let server = answering(ResponseTemplate::new(200).set_body_json(json!({
        "access_token": NEW_ACCESS
    })))
    .await;
    let err = failure_of(&server).await;
    assert!(matches!(err, AuthError::Backend(_)), "{err:?}");
    assert_no_tokens(&err);

    let no_auth_url = SupabaseConfig::postgrest("http://127.0.0.1:9/").expect("uri");
    assert!(matches!(
        SupabaseTokenRefresher::new(no_auth_url),
        Err(AuthError::Backend(_))
    ));
}

/// A fake token endpoint that mints real JWTs for one user with PostgREST's secret.
struct MintingTokenEndpoint {
    mint: Box<dyn Fn(UserId, i64) -> String + Send + Sync>,
    user: UserId,
}

impl Respond for MintingTokenEndpoint {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        let expires_at = unix_now() + 3600;
        ResponseTemplate::new(200).set_body_json(json!({
            "access_token": (self.mint)(self.user, expires_at),
            "refresh_token": NEW_REFRESH,
            "expires_in": 3600,
            "expires_at": expires_at,
        }))
    }
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_retry_lands() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let user = UserId::from_uuid(Uuid::new_v4()).expect("v4");
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/auth/v1/token"))
        .and(body_json(json!({"refresh_token": OLD_REFRESH})))
        .respond_with(MintingTokenEndpoint {
            mint: Box::new(live.minter()),
            user,
        })
        .expect(1)
        .mount(&auth)
        .await;
    let refresher =
        SupabaseTokenRefresher::new(live.config().with_auth_url(&auth.uri()).expect("auth uri"))
            .expect("refresher");
    let cloud = live.cloud();
    let repo = rows::repository("after refresh");

    let expired = live.mint_expired_token(user);
    let err = cloud
        .upsert_repository(&expired, &repo)
        .await
        .expect_err("expired");
    assert!(matches!(err, CloudError::Unauthenticated { .. }), "{err:?}");

    let pair = refresher
        .refresh(&RefreshToken::new(OLD_REFRESH))
        .await
        .expect("refresh");
    assert_eq!(pair.refresh_token.expose_secret(), NEW_REFRESH);
    cloud
        .upsert_repository(&pair.access_token, &repo)
        .await
        .expect("the retry with the fresh token lands");
    assert_eq!(
        live.count(&format!(
            "repositories where id = '{}' and user_id = '{user}'",
            repo.id
        )),
        1
    );
}

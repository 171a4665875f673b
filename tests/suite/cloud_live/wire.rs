//! The failure classification table and the request shapes, against wiremock on 127.0.0.1.

use std::time::Duration;

use serde_json::json;
use tandem::adapters::supabase::{ApiKey, SupabaseCloudSync, SupabaseConfig, SupabaseTimeouts};
use tandem::domain::backoff::RetryClass;
use tandem::ports::{AccessToken, CloudError, CloudSync};
use wiremock::matchers::{body_json, header, headers, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::rows;

const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ3aXJlLXRlc3QifQ.c2lnbmF0dXJlLWJ5dGVz";
const API_KEY: &str = "anon-key-for-wire-tests";

fn token() -> AccessToken {
    AccessToken::new(TOKEN)
}

fn plain(server: &MockServer) -> SupabaseCloudSync {
    SupabaseCloudSync::new(SupabaseConfig::postgrest(&server.uri()).expect("uri")).expect("client")
}

/// A server answering every request with `response`.
async fn answering(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

fn postgrest_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "code": code, "details": null, "hint": null, "message": message
    }))
}

/// Runs one representative call (a device listing) and returns its error.
async fn failure_of(server: &MockServer) -> CloudError {
    plain(server)
        .list_devices(&token())
        .await
        .expect_err("the server refused")
}

fn assert_no_secrets(err: &CloudError) {
    let text = format!("{err} / {err:?}");
    for secret in [TOKEN, API_KEY] {
        assert!(!text.contains(secret), "a secret leaked: {text}");
    }
    for part in TOKEN.split('.') {
        assert!(!text.contains(part), "a token part leaked: {text}");
    }
}

#[tokio::test]
async fn too_many_requests_is_transient_with_retry_after() {
    let server =
        answering(postgrest_error(429, "", "slow down").insert_header("Retry-After", "7")).await;
    let err = failure_of(&server).await;
    assert!(
        matches!(err, CloudError::Transient { status: 429, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.retry_class(),
        RetryClass::Transient {
            retry_after: Some(Duration::from_secs(7))
        }
    );
}

#[tokio::test]
async fn database_down_is_transient_with_its_code() {
    let server = answering(
        postgrest_error(
            503,
            "PGRST000",
            "Database connection error. Retrying the connection.",
        )
        .insert_header("Retry-After", "0"),
    )
    .await;
    let err = failure_of(&server).await;
    match &err {
        CloudError::Transient {
            status,
            code,
            retry_after,
            ..
        } => {
            assert_eq!(*status, 503);
            assert_eq!(code.as_deref(), Some("PGRST000"));
            assert_eq!(*retry_after, Some(Duration::ZERO));
        }
        other => panic!("expected Transient, got {other:?}"),
    }
}

#[tokio::test]
async fn a_timeout_is_transient() {
    let server = answering(ResponseTemplate::new(200).set_delay(Duration::from_secs(30))).await;
    let config = SupabaseConfig::postgrest(&server.uri())
        .expect("uri")
        .with_timeouts(SupabaseTimeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_millis(200),
        });
    let cloud = SupabaseCloudSync::new(config).expect("client");
    let started = std::time::Instant::now();
    let err = cloud.list_devices(&token()).await.expect_err("timed out");
    assert!(
        matches!(err, CloudError::Transient { status: 0, .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the timeout applied"
    );
}

#[tokio::test]
async fn a_closed_port_is_a_network_failure() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let cloud = SupabaseCloudSync::new(
        SupabaseConfig::postgrest(&format!("http://127.0.0.1:{port}/")).expect("uri"),
    )
    .expect("client");
    let err = cloud
        .upsert_messages(
            &token(),
            &[rows::message(rows::session_id(), 1, rows::device_id())],
        )
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, CloudError::Network(_)), "{err:?}");
    assert_eq!(err.retry_class(), RetryClass::Network);
    assert!(
        !err.to_string().contains(&port.to_string()),
        "no URL: {err}"
    );
}

#[tokio::test]
async fn a_bad_request_is_permanent() {
    let server = answering(postgrest_error(
        400,
        "22P02",
        "invalid input syntax for type uuid",
    ))
    .await;
    let err = failure_of(&server).await;
    assert!(
        matches!(&err, CloudError::Permanent { status: 400, code: Some(c), .. } if c == "22P02"),
        "{err:?}"
    );
}

#[tokio::test]
async fn policy_and_conflict_errors_are_permanent() {
    for (status, code) in [(403, "42501"), (409, "23505"), (404, "PGRST205")] {
        let server = answering(postgrest_error(status, code, "refused")).await;
        let err = failure_of(&server).await;
        assert!(
            matches!(&err, CloudError::Permanent { status: s, code: Some(c), .. } if *s == status && c == code),
            "{status} {code}: {err:?}"
        );
        assert_eq!(err.retry_class(), RetryClass::Permanent);
    }
}

#[tokio::test]
async fn refused_jwts_are_unauthenticated_whatever_the_code() {
    for code in ["PGRST301", "PGRST302", "PGRST303"] {
        let server = answering(postgrest_error(401, code, "JWT refused")).await;
        let err = failure_of(&server).await;
        assert!(
            matches!(&err, CloudError::Unauthenticated { code: Some(c), .. } if c == code),
            "{code}: {err:?}"
        );
        assert_eq!(err.retry_class(), RetryClass::Unauthenticated);
    }
    // A 401 without a PostgREST body (a gateway's answer) is the same.
    let server = answering(ResponseTemplate::new(401).set_body_string("Unauthorized")).await;
    assert!(matches!(
        failure_of(&server).await,
        CloudError::Unauthenticated { code: None, .. }
    ));
}

#[tokio::test]
async fn an_undecodable_success_body_is_a_backend_failure() {
    let server =
        answering(ResponseTemplate::new(200).set_body_string("<html>not json</html>")).await;
    let err = failure_of(&server).await;
    assert!(matches!(err, CloudError::Backend(_)), "{err:?}");
    assert_eq!(err.retry_class(), RetryClass::Permanent);
}

#[tokio::test]
async fn errors_never_show_the_token_or_the_key_even_when_the_server_echoes_them() {
    let server = answering(postgrest_error(
        401,
        "PGRST301",
        &format!("bad JWT {TOKEN}; key {API_KEY}"),
    ))
    .await;
    let config = SupabaseConfig::postgrest(&server.uri())
        .expect("uri")
        .with_api_key(ApiKey::new(API_KEY));
    let cloud = SupabaseCloudSync::new(config).expect("client");
    let err = cloud.list_devices(&token()).await.expect_err("refused");
    assert!(matches!(err, CloudError::Unauthenticated { .. }), "{err:?}");
    assert_no_secrets(&err);
    let debug = format!("{cloud:?}");
    assert!(!debug.contains(API_KEY), "{debug}");

    // A payload the server quotes in `details` does not reach the error either.
    let server = answering(ResponseTemplate::new(409).set_body_json(json!({
        "code": "23505", "details": "Failing row contains (c2VjcmV0)", "hint": null,
        "message": "duplicate key value"
    })))
    .await;
    let err = failure_of(&server).await;
    assert!(!format!("{err} {err:?}").contains("c2VjcmV0"), "{err:?}");
}

#[tokio::test]
async fn hosted_projects_are_reached_under_rest_v1_with_the_apikey_header() {
    let server = MockServer::start().await;
    let session = rows::session_id();
    let batch = rows::messages(session, 1, 2, rows::device_id());
    Mock::given(method("POST"))
        .and(path("/rest/v1/messages"))
        .and(query_param("on_conflict", "session_id,sequence_number"))
        .and(header("apikey", API_KEY))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(headers(
            "prefer",
            vec!["resolution=merge-duplicates", "return=minimal"],
        ))
        .and(header("content-type", "application/json"))
        .and(body_json(json!(batch)))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/rest/v1/messages"))
        .and(header("apikey", API_KEY))
        .and(query_param("session_id", format!("eq.{session}").as_str()))
        .and(query_param("sequence_number", "gt.0"))
        .and(query_param("order", "sequence_number.asc"))
        .and(query_param("limit", "10"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!(batch)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/rest/v1/sessions"))
        .and(header("apikey", API_KEY))
        .and(query_param("id", format!("eq.{session}").as_str()))
        .and(headers("prefer", vec!["return=minimal", "count=exact"]))
        .and(body_json(json!({"status": "ended", "ended_at_ms": 9})))
        .respond_with(ResponseTemplate::new(204).insert_header("Content-Range", "0-0/1"))
        .expect(1)
        .mount(&server)
        .await;

    let cloud = SupabaseCloudSync::new(
        SupabaseConfig::hosted(&server.uri(), ApiKey::new(API_KEY)).expect("uri"),
    )
    .expect("client");
    cloud
        .upsert_messages(&token(), &batch)
        .await
        .expect("upsert");
    assert_eq!(
        cloud
            .fetch_messages(&token(), session, 0, 10)
            .await
            .expect("fetch"),
        batch
    );
    assert!(cloud.end_session(&token(), session, 9).await.expect("end"));
    // `expect(1)` on each mock is verified when the server drops.
}

#[tokio::test]
async fn conditional_updates_read_the_count_from_content_range() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/sessions"))
        .and(query_param(
            "or",
            "(runtime_status_updated_at_ms.is.null,runtime_status_updated_at_ms.lt.77)",
        ))
        .and(body_json(
            json!({"runtime_status": {"s": 1}, "runtime_status_updated_at_ms": 77}),
        ))
        .respond_with(ResponseTemplate::new(204).insert_header("Content-Range", "*/0"))
        .expect(1)
        .mount(&server)
        .await;
    assert!(!plain(&server)
        .update_runtime_status(&token(), rows::session_id(), &json!({"s": 1}), 77)
        .await
        .expect("no row changed"));

    // Without a count the answer is undecodable, never a guess.
    let server = answering(ResponseTemplate::new(204)).await;
    let err = plain(&server)
        .end_session(&token(), rows::session_id(), 1)
        .await
        .expect_err("no Content-Range");
    assert!(matches!(err, CloudError::Backend(_)), "{err:?}");
}

//! A JWT that expires while the consumer runs: the real PostgREST refuses it with 401, the
//! consumer refreshes once through a Supabase-Auth-shaped token endpoint (wiremock on
//! 127.0.0.1, minting JWTs with PostgREST's secret) and the same batch lands at once.

use std::time::Duration;

use serde_json::json;
use tandem::adapters::supabase::{SupabaseConfig, SupabaseTokenRefresher};
use tandem::app::cold::TickOutcome;
use tandem::domain::ids::UserId;
use tokio::time::Instant;
use wiremock::matchers::{body_json, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::database::message_keys;
use super::device::{texts, DeviceSetup, LiveDevice};
use super::proxy::FaultProxy;
use crate::cloud_live::services::{unix_now, LiveServices};

/// PostgREST 12 accepts a JWT up to 30 s past its `exp` (allowed clock skew).
const POSTGREST_LEEWAY_S: i64 = 30;
/// How long the first token stays usable.
const LIFETIME_S: i64 = 6;
const FIRST_REFRESH: &str = "first-refresh-token-0123456789";
const ROTATED_REFRESH: &str = "rotated-refresh-token-9876543210";
const BUDGET: Duration = Duration::from_secs(60);

/// Supabase Auth's refresh answer with a fresh JWT for one user, signed with PostgREST's
/// secret.
struct MintingEndpoint {
    mint: Box<dyn Fn(UserId, i64) -> String + Send + Sync>,
    user: UserId,
}

impl Respond for MintingEndpoint {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        let expires_at = unix_now() + 3600;
        ResponseTemplate::new(200).set_body_json(json!({
            "access_token": (self.mint)(self.user, expires_at),
            "token_type": "bearer",
            "refresh_token": ROTATED_REFRESH,
            "expires_in": 3600,
            "expires_at": expires_at,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_jwt_is_refused_refreshed_once_and_the_batch_lands() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let user = live.new_user();
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/auth/v1/token"))
        .and(query_param("grant_type", "refresh_token"))
        .and(body_json(json!({ "refresh_token": FIRST_REFRESH })))
        .respond_with(MintingEndpoint {
            mint: Box::new(live.minter()),
            user: user.id,
        })
        .mount(&auth)
        .await;
    // A pass-through proxy, to see what PostgREST answered to each request.
    let proxy = FaultProxy::start(&live.postgrest_url, 0).await;
    let refresher = SupabaseTokenRefresher::new(
        SupabaseConfig::postgrest(&proxy.url())
            .and_then(|c| c.with_auth_url(&auth.uri()))
            .expect("URLs"),
    )
    .expect("refresher");
    let short_lived =
        live.mint_token_expiring_at(user.id, unix_now() - POSTGREST_LEEWAY_S + LIFETIME_S);
    let device = LiveDevice::open_with_token(
        &user,
        short_lived.clone(),
        FIRST_REFRESH,
        DeviceSetup {
            refresher: std::sync::Arc::new(refresher),
            ..DeviceSetup::via(&proxy.url())
        },
    );

    // While the token is valid: registration, the session rows and a first message.
    device.register().await;
    let (_, session) = device.session("token expiry");
    let sent = texts("expiry", 51, 3);
    device.append(&session, &sent[..1]);
    device.drain(BUDGET).await.expect("first drain");
    let first_phase = proxy.exchanges();
    assert!(first_phase.iter().all(|x| x.client_ok()), "{first_phase:?}");
    assert!(auth
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty());

    // Wait (bounded) until PostgREST refuses the token.
    let deadline = Instant::now() + Duration::from_secs((LIFETIME_S + 20) as u64);
    loop {
        let seen = live.get("sessions?select=id&limit=1", &short_lived).await;
        if seen.status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the token never expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // One full batch with the expired token: 401, one refresh, the same rows again, 201.
    let from = proxy.len();
    device.append(&session, &sent[1..]);
    let outcomes = device.drain(BUDGET).await.unwrap_or_else(|e| {
        panic!(
            "second drain: {e}; last error {:?}; requests {:?}",
            device.consumer.last_error(),
            proxy.exchanges_since(from)
        )
    });
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, TickOutcome::Delivered { items: 50, .. })),
        "{outcomes:?}"
    );
    assert!(
        !outcomes.iter().any(|o| matches!(
            o,
            TickOutcome::Failed { .. } | TickOutcome::DeadLettered { .. }
        )),
        "the refresh and the retry happen within one step: {outcomes:?}"
    );
    let refreshes = auth.received_requests().await.unwrap_or_default();
    assert_eq!(refreshes.len(), 1, "exactly one refresh");

    let context = device.consumer.auth().current().expect("still signed in");
    assert_eq!(context.refresh_token.expose_secret(), ROTATED_REFRESH);
    assert_ne!(context.access_token, short_lived);
    let upserts: Vec<_> = proxy
        .exchanges_since(from)
        .into_iter()
        .filter(|x| x.is_message_upsert())
        .collect();
    assert_eq!(upserts.len(), 2, "{upserts:?}");
    let (refused, retried) = (&upserts[0], &upserts[1]);
    assert!(refused.carried(short_lived.expose_secret()));
    assert_eq!(
        (refused.upstream_status, refused.upstream_code.as_deref()),
        (Some(401), Some("PGRST301")),
        "PostgREST itself refused the expired token"
    );
    assert!(retried.carried(context.access_token.expose_secret()));
    assert_eq!(retried.upstream_status, Some(201));
    assert_eq!(retried.body, refused.body, "the very same sealed rows");
    assert_eq!(retried.row_ids().len(), 50);

    assert_eq!(message_keys(&live, session.id).len(), 51);
    let page = device
        .reader()
        .read(session.id, 0, 100)
        .await
        .expect("read");
    let opened: Vec<String> = page.opened.iter().map(|m| m.content.to_string()).collect();
    assert_eq!(opened, sent);
}

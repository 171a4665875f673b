//! Interaction tests of the cold consumer with mocked ports: what it calls, and what it must
//! never call.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::*;
use crate::adapters::sqlite::{SqliteOptions, SqliteStore};
use crate::app::Engine;
use crate::domain::{DeviceId, EffectSeq, NewMessage, Role, UserId};
use crate::ports::auth::MockTokenRefresher;
use crate::ports::cloud::MockCloudSync;
use crate::ports::{AccessToken, AuthContext, CloudError, RefreshToken, TokenPair};

struct Fixture {
    _dir: tempfile::TempDir,
    engine: Arc<Engine>,
    consumer: ColdConsumer,
}

fn context(access: &str) -> AuthContext {
    AuthContext {
        access_token: AccessToken::new(access),
        refresh_token: RefreshToken::new(format!("refresh-{access}")),
        user_id: UserId::from_uuid(Uuid::from_u128(1)).unwrap(),
        device_id: DeviceId::from_uuid(Uuid::from_u128(2)).unwrap(),
    }
}

fn fixture(cloud: MockCloudSync, refresher: MockTokenRefresher) -> Fixture {
    fixture_with_jitter(cloud, refresher, 0.0)
}

fn fixture_with_jitter(
    cloud: MockCloudSync,
    refresher: MockTokenRefresher,
    jitter: f64,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let engine = Arc::new(Engine::builder(store).open().unwrap());
    let consumer = ColdConsumer::builder(
        Arc::new(cloud),
        Arc::new(refresher),
        &path,
        engine.effect_log(),
    )
    .jitter(Arc::new(FixedJitter(jitter)))
    .open()
    .unwrap();
    Fixture {
        _dir: dir,
        engine,
        consumer,
    }
}

fn unauthenticated() -> CloudError {
    CloudError::Unauthenticated {
        code: Some("PGRST301".into()),
        message: "JWT expired".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn without_an_auth_context_nothing_is_sent_and_the_cursor_stays() {
    // No expectations: any cloud or refresher call panics.
    let f = fixture(MockCloudSync::new(), MockTokenRefresher::new());
    let repo = f.engine.create_repository("r", None).unwrap();
    let session = f.engine.create_session(repo.id, "s").unwrap();
    f.engine
        .append_message(session.id, NewMessage::new(Role::User, "hi"))
        .unwrap();
    assert_eq!(f.consumer.tick().await, TickOutcome::NoContext);

    let ran = tokio::time::timeout(
        Duration::from_secs(3600),
        f.consumer.run(tokio::time::sleep(Duration::from_secs(600))),
    )
    .await;
    assert!(ran.is_ok(), "run returns at shutdown");
    assert_eq!(f.consumer.position().await.unwrap(), EffectSeq::ZERO);
    let lag = f.consumer.lag().await.unwrap();
    assert!(lag.waiting_for_auth);
    assert_eq!(lag.behind, 3);
}

#[tokio::test(start_paused = true)]
async fn a_refused_token_is_refreshed_once_and_the_retry_lands() {
    let mut cloud = MockCloudSync::new();
    cloud
        .expect_upsert_repository()
        .withf(|token, _| token.expose_secret() == "a1")
        .times(1)
        .returning(|_, _| Err(unauthenticated()));
    cloud
        .expect_upsert_repository()
        .withf(|token, _| token.expose_secret() == "a2")
        .times(1)
        .returning(|_, _| Ok(()));
    let mut refresher = MockTokenRefresher::new();
    refresher
        .expect_refresh()
        .withf(|r| r.expose_secret() == "refresh-a1")
        .times(1)
        .returning(|_| {
            Ok(TokenPair {
                access_token: AccessToken::new("a2"),
                refresh_token: RefreshToken::new("refresh-a2"),
                expires_at_ms: None,
            })
        });
    let f = fixture(cloud, refresher);
    f.consumer.auth().set(context("a1"));
    f.engine.create_repository("r", None).unwrap();

    let outcome = f.consumer.tick().await;
    assert_eq!(
        outcome,
        TickOutcome::Delivered {
            items: 1,
            through: EffectSeq::new(1)
        }
    );
    assert_eq!(
        f.consumer.auth().current().unwrap().refresh_token,
        RefreshToken::new("refresh-a2"),
        "the refresh token rotated"
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_refusal_backs_off_instead_of_refreshing_again() {
    let mut cloud = MockCloudSync::new();
    cloud
        .expect_upsert_repository()
        .times(2)
        .returning(|_, _| Err(unauthenticated()));
    let mut refresher = MockTokenRefresher::new();
    refresher.expect_refresh().times(1).returning(|_| {
        Ok(TokenPair {
            access_token: AccessToken::new("a2"),
            refresh_token: RefreshToken::new("refresh-a2"),
            expires_at_ms: None,
        })
    });
    let f = fixture(cloud, refresher);
    f.consumer.auth().set(context("a1"));
    f.engine.create_repository("r", None).unwrap();
    let before = tokio::time::Instant::now();
    match f.consumer.tick().await {
        TickOutcome::Failed {
            class: crate::domain::backoff::RetryClass::Unauthenticated,
            retry_at,
        } => assert_eq!(retry_at - before, Duration::from_secs(2)),
        other => panic!("expected an unauthenticated backoff, got {other:?}"),
    }
    assert!(matches!(
        f.consumer.tick().await,
        TickOutcome::BackingOff { .. }
    ));
    assert_eq!(f.consumer.position().await.unwrap(), EffectSeq::ZERO);
    assert!(f.consumer.last_error().unwrap().contains("refused"));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_dead_lettered_after_one_attempt_and_the_consumer_moves_on() {
    let mut cloud = MockCloudSync::new();
    cloud.expect_upsert_repository().times(1).returning(|_, _| {
        Err(CloudError::Permanent {
            status: 400,
            code: Some("22P02".into()),
            message: "invalid input".into(),
        })
    });
    cloud
        .expect_upsert_session()
        .times(1)
        .returning(|_, _| Ok(()));
    let f = fixture(cloud, MockTokenRefresher::new());
    f.consumer.auth().set(context("a1"));
    let repo = f.engine.create_repository("r", None).unwrap();
    f.engine.create_session(repo.id, "s").unwrap();

    assert_eq!(
        f.consumer.tick().await,
        TickOutcome::DeadLettered {
            items: 1,
            delivered: 0,
            through: EffectSeq::new(1)
        }
    );
    assert_eq!(
        f.consumer.tick().await,
        TickOutcome::Delivered {
            items: 1,
            through: EffectSeq::new(2)
        }
    );
    let letters = f.consumer.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 1);
    assert_eq!(letters[0].kind(), "repository_created");
    assert!(letters[0].reason.contains("invalid input"));
    assert_eq!(f.consumer.lag().await.unwrap().dead_letters, 1);
}

#[tokio::test(start_paused = true)]
async fn agent_status_changes_are_skipped_without_a_call() {
    let mut cloud = MockCloudSync::new();
    cloud
        .expect_upsert_repository()
        .times(1)
        .returning(|_, _| Ok(()));
    cloud
        .expect_upsert_session()
        .times(1)
        .returning(|_, _| Ok(()));
    let f = fixture(cloud, MockTokenRefresher::new());
    f.consumer.auth().set(context("a1"));
    let repo = f.engine.create_repository("r", None).unwrap();
    let session = f.engine.create_session(repo.id, "s").unwrap();
    let agent = crate::domain::AgentId::from_uuid(Uuid::from_u128(5)).unwrap();
    f.engine
        .report_agent_status(session.id, agent, "thinking")
        .unwrap();
    f.consumer.tick().await;
    f.consumer.tick().await;
    assert_eq!(
        f.consumer.tick().await,
        TickOutcome::Skipped {
            through: EffectSeq::new(3)
        }
    );
    assert_eq!(f.consumer.tick().await, TickOutcome::Idle);
}

#[tokio::test(start_paused = true)]
async fn the_injected_jitter_shapes_the_backoff() {
    let mut cloud = MockCloudSync::new();
    cloud
        .expect_upsert_repository()
        .times(2)
        .returning(|_, _| Err(CloudError::Network("connection refused".into())));
    let f = fixture_with_jitter(cloud, MockTokenRefresher::new(), 0.5);
    f.consumer.auth().set(context("a1"));
    f.engine.create_repository("r", None).unwrap();
    let mut delays = Vec::new();
    for _ in 0..2 {
        let before = tokio::time::Instant::now();
        match f.consumer.tick().await {
            TickOutcome::Failed { retry_at, .. } => {
                delays.push(retry_at - before);
                tokio::time::sleep_until(retry_at).await;
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
    // Equal jitter at 0.5 keeps three quarters of 2 s, then of 4 s.
    assert_eq!(
        delays,
        [Duration::from_millis(1500), Duration::from_millis(3000)]
    );
}

#[tokio::test(start_paused = true)]
async fn replay_needs_an_auth_context() {
    let f = fixture(MockCloudSync::new(), MockTokenRefresher::new());
    let err = f
        .consumer
        .replay(crate::adapters::sqlite::DeadLetterId::new(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ColdError::NotAuthenticated));
    f.consumer.auth().set(context("a1"));
    let err = f
        .consumer
        .replay(crate::adapters::sqlite::DeadLetterId::new(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ColdError::UnknownDeadLetter(_)));
}

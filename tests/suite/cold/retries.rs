//! Failures by class: idempotent re-sends, the backoff schedule and `Retry-After`, token
//! refresh, and waiting for an auth context.

use std::sync::Arc;
use std::time::Duration;

use tandem::domain::{NewMessage, Role};

use super::fake_cloud::{FakeCloud, Fault, Op};
use super::harness::{context, Device, FakeRefresher};

#[tokio::test(start_paused = true)]
async fn a_batch_applied_but_unanswered_is_resent_identically_and_lands_once() {
    let cloud = Arc::new(FakeCloud::new());
    cloud.fail_next(Op::UpsertMessages, [Fault::ApplyThenFail]);
    let dev = Device::new(&cloud, 1);
    let (_, session) = dev.session();
    let messages = (0..10)
        .map(|i| NewMessage::new(Role::User, format!("m{i}")))
        .collect();
    dev.engine.append_messages(session.id, messages).unwrap();
    let running = dev.start();
    cloud
        .wait_until("the batch was sent twice", Duration::from_secs(60), |c| {
            c.calls(Op::UpsertMessages).len() == 2
        })
        .await;
    running.stop().await;

    let batches = cloud.message_batches();
    assert_eq!(batches.len(), 2);
    assert_eq!(
        batches[0], batches[1],
        "the retry re-sends the same sealed rows"
    );
    assert_eq!(cloud.message_count(), 10, "exactly one row per message");
    let calls = cloud.calls(Op::UpsertMessages);
    assert_eq!(
        calls[1].at - calls[0].at,
        Duration::from_secs(2),
        "network backoff"
    );
    assert_eq!(dev.consumer.position().await.unwrap(), dev.head());
    assert_eq!(dev.consumer.last_error(), None, "cleared by the success");
}

/// The gaps between consecutive calls of `op`.
fn gaps(cloud: &FakeCloud, op: Op) -> Vec<Duration> {
    let calls = cloud.calls(op);
    calls.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test(start_paused = true)]
async fn backoff_honours_retry_after_and_doubles_from_two_seconds() {
    let cloud = Arc::new(FakeCloud::new());
    cloud.fail_next(
        Op::UpsertRepository,
        [
            Fault::Transient(Some(Duration::from_secs(10))),
            Fault::Transient(None),
            Fault::Network,
            Fault::Transient(Some(Duration::from_secs(1))),
            Fault::Network,
        ],
    );
    let dev = Device::new(&cloud, 1);
    dev.engine.create_repository("repo", None).unwrap();
    let running = dev.start();
    cloud
        .wait_until("the repository is up", Duration::from_secs(3600), |c| {
            c.calls(Op::UpsertRepository).iter().any(|call| call.ok)
        })
        .await;
    running.stop().await;

    // Retry-After 10 s beats 2 s; then 4 s, 8 s; Retry-After 1 s loses to 16 s; then 32 s.
    let expected = [10, 4, 8, 16, 32].map(Duration::from_secs);
    let got = gaps(&cloud, Op::UpsertRepository);
    assert_eq!(got.len(), expected.len(), "{got:?}");
    for (got, want) in got.iter().zip(expected) {
        assert!(
            *got >= want && *got < want + Duration::from_millis(20),
            "waited {got:?}, schedule says {want:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_wait_is_capped_at_five_minutes() {
    let cloud = Arc::new(FakeCloud::new());
    cloud.fail_next(Op::UpsertRepository, vec![Fault::Network; 10]);
    let dev = Device::new(&cloud, 1);
    dev.engine.create_repository("repo", None).unwrap();
    let running = dev.start();
    cloud
        .wait_until("the repository is up", Duration::from_secs(7200), |c| {
            c.calls(Op::UpsertRepository).iter().any(|call| call.ok)
        })
        .await;
    running.stop().await;
    let got: Vec<u64> = gaps(&cloud, Op::UpsertRepository)
        .iter()
        .map(Duration::as_secs)
        .collect();
    assert_eq!(got, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_is_refreshed_once_and_the_retry_lands() {
    let cloud = Arc::new(FakeCloud::new());
    cloud.accept_only("fresh");
    let refresher = Arc::new(FakeRefresher::issuing(&[("fresh", "refresh-2")]));
    let dev = Device::with(&cloud, 1, Arc::clone(&refresher), Some("stale"));
    let (_, session) = dev.session();
    dev.engine
        .append_message(session.id, NewMessage::new(Role::User, "hello"))
        .unwrap();
    let running = dev.start();
    cloud
        .wait_until("the message is up", Duration::from_secs(60), |c| {
            c.message_count() == 1
        })
        .await;
    running.stop().await;

    assert_eq!(refresher.calls(), 1, "one refresh for the burst of 401s");
    let calls = cloud.all_calls();
    assert_eq!(calls[0].token, "stale");
    assert!(!calls[0].ok);
    let refused: Vec<_> = calls.iter().filter(|c| !c.ok).collect();
    assert_eq!(
        refused.len(),
        1,
        "only the first call was refused: {calls:?}"
    );
    assert!(calls[1..].iter().all(|c| c.token == "fresh"));
    assert!(calls[1].at == calls[0].at, "retried at once, no backoff");
    assert_eq!(
        dev.consumer
            .auth()
            .current()
            .unwrap()
            .refresh_token
            .expose_secret(),
        "refresh-2"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_refresh_is_reported_and_the_context_stays() {
    let cloud = Arc::new(FakeCloud::new());
    cloud.accept_only("never");
    let refresher = Arc::new(FakeRefresher::issuing(&[]));
    let dev = Device::with(&cloud, 1, Arc::clone(&refresher), Some("stale"));
    dev.engine.create_repository("repo", None).unwrap();
    let running = dev.start();
    cloud
        .wait_until("three refused attempts", Duration::from_secs(60), |c| {
            c.calls(Op::UpsertRepository).len() >= 3
        })
        .await;
    running.stop().await;
    assert!(
        dev.consumer.auth().is_set(),
        "a refused refresh clears nothing"
    );
    let lag = dev.consumer.lag().await.unwrap();
    let reported = lag.last_error.expect("the failure is reported");
    assert!(reported.contains("refresh"), "{reported}");
    assert_eq!(lag.behind, 1);
    assert_eq!(refresher.calls(), 3, "one refresh per refusal, no more");
}

#[tokio::test(start_paused = true)]
async fn without_a_context_the_consumer_waits_then_resumes_where_it_was() {
    let cloud = Arc::new(FakeCloud::new());
    let dev = Device::with(&cloud, 1, Arc::new(FakeRefresher::default()), None);
    let (_, session) = dev.session();
    dev.engine
        .append_message(session.id, NewMessage::new(Role::User, "hi"))
        .unwrap();
    let running = dev.start();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        cloud.all_calls().is_empty(),
        "nothing sent while signed out"
    );
    assert_eq!(dev.consumer.position().await.unwrap().get(), 0);
    assert!(dev.consumer.lag().await.unwrap().waiting_for_auth);

    dev.consumer.auth().set(context(dev.id, "token"));
    cloud
        .wait_until("everything is up", Duration::from_secs(60), |c| {
            c.message_count() == 1
        })
        .await;
    running.stop().await;
    assert_eq!(dev.consumer.position().await.unwrap(), dev.head());
}

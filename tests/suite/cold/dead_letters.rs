//! Permanent failures: dead-lettered after one attempt, the consumer goes on, an operator
//! replays.

use std::sync::Arc;
use std::time::Duration;

use tandem::app::cold::ReplayOutcome;
use tandem::domain::{NewMessage, Role};

use super::fake_cloud::{FakeCloud, Fault, Op};
use super::harness::Device;

#[tokio::test(start_paused = true)]
async fn a_refused_batch_is_dead_lettered_after_one_attempt_and_the_consumer_goes_on() {
    let cloud = Arc::new(FakeCloud::new());
    cloud.fail_next(Op::UpsertMessages, [Fault::Permanent]);
    let dev = Device::new(&cloud, 1);
    let (_, session) = dev.session();
    let messages = (0..5)
        .map(|i| NewMessage::new(Role::User, format!("secret plan {i}")))
        .collect();
    dev.engine.append_messages(session.id, messages).unwrap();
    dev.engine.close_session(session.id).unwrap();
    let running = dev.start();
    cloud
        .wait_until("the session is ended", Duration::from_secs(60), |c| {
            !c.calls(Op::EndSession).is_empty()
        })
        .await;
    running.stop().await;

    assert_eq!(
        cloud.calls(Op::UpsertMessages).len(),
        1,
        "exactly one attempt"
    );
    assert_eq!(cloud.message_count(), 0);
    assert_eq!(
        dev.consumer.position().await.unwrap(),
        dev.head(),
        "moved on"
    );
    let letters = dev.consumer.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 5, "one per message effect");
    for letter in &letters {
        assert_eq!(letter.attempts, 1);
        assert_eq!(letter.kind(), "message_appended");
        assert!(
            letter.reason.contains("invalid input syntax"),
            "{}",
            letter.reason
        );
    }
    assert!(
        !format!("{letters:?}").contains("secret plan"),
        "dead letters hold ids, never content"
    );
    let lag = dev.consumer.lag().await.unwrap();
    assert_eq!(lag.dead_letters, 5);
    assert_eq!(lag.behind, 0);
}

#[tokio::test(start_paused = true)]
async fn replaying_dead_letters_delivers_them_and_removes_the_rows() {
    let cloud = Arc::new(FakeCloud::new());
    cloud.fail_next(Op::UpsertMessages, [Fault::Permanent]);
    let dev = Device::new(&cloud, 1);
    let (_, session) = dev.session();
    let messages = (0..3)
        .map(|i| NewMessage::new(Role::User, format!("m{i}")))
        .collect();
    dev.engine.append_messages(session.id, messages).unwrap();
    let running = dev.start();
    cloud
        .wait_until("the batch was refused", Duration::from_secs(60), |c| {
            !c.calls(Op::UpsertMessages).is_empty()
        })
        .await;
    running.stop().await;
    let letters = dev.consumer.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 3);

    // One replay that fails again keeps the row and counts the attempt.
    cloud.fail_next(Op::UpsertMessages, [Fault::Transient(None)]);
    match dev.consumer.replay(letters[0].id).await.unwrap() {
        ReplayOutcome::Failed { reason, .. } => assert!(reason.contains("unavailable")),
        other => panic!("expected a failed replay, got {other:?}"),
    }
    let again = dev.consumer.dead_letters().await.unwrap();
    assert_eq!(again[0].attempts, 2);

    assert_eq!(
        dev.consumer.replay(letters[0].id).await.unwrap(),
        ReplayOutcome::Delivered
    );
    let report = dev.consumer.replay_all().await.unwrap();
    assert_eq!(report.delivered.len(), 2);
    assert!(report.failed.is_empty());
    assert!(dev.consumer.dead_letters().await.unwrap().is_empty());
    assert_eq!(cloud.message_count(), 3);
    let seqs: Vec<u64> = cloud.messages().iter().map(|m| m.sequence_number).collect();
    assert_eq!(seqs, [1, 2, 3]);
}

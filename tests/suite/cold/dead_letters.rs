//! Permanent failures: a refused batch is split, what is refused on its own is dead-lettered
//! after one attempt, the consumer goes on, an operator replays.

use std::sync::Arc;
use std::time::Duration;

use tandem::app::cold::ReplayOutcome;
use tandem::domain::{NewMessage, Role};

use super::fake_cloud::{FakeCloud, Fault, Op};
use super::harness::Device;

#[tokio::test(start_paused = true)]
async fn a_refused_batch_is_split_and_only_what_is_refused_alone_is_dead_lettered() {
    let cloud = Arc::new(FakeCloud::new());
    // The batch, then its first message on its own.
    cloud.fail_next(Op::UpsertMessages, [Fault::Permanent, Fault::Permanent]);
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

    let sizes = cloud.message_upsert_sizes();
    assert_eq!(
        sizes,
        [5, 1, 1, 1, 1, 1],
        "the batch once, then each message once"
    );
    let seqs: Vec<u64> = cloud.messages().iter().map(|m| m.sequence_number).collect();
    assert_eq!(seqs, [2, 3, 4, 5], "all but the refused one landed");
    assert_eq!(
        dev.consumer.position().await.unwrap(),
        dev.head(),
        "moved on"
    );
    let letters = dev.consumer.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1, "only the message refused on its own");
    let letter = &letters[0];
    assert_eq!(letter.attempts, 1);
    assert_eq!(letter.kind(), "message_appended");
    assert!(
        letter.reason.contains("invalid input syntax"),
        "{}",
        letter.reason
    );
    assert!(
        !format!("{letters:?}").contains("secret plan"),
        "dead letters hold ids, never content"
    );
    let lag = dev.consumer.lag().await.unwrap();
    assert_eq!(lag.dead_letters, 1);
    assert_eq!(lag.behind, 0);
}

#[tokio::test(start_paused = true)]
async fn a_split_cut_short_by_a_transient_failure_dead_letters_nothing_and_retries_the_batch() {
    let cloud = Arc::new(FakeCloud::new());
    // The batch is refused, its first message too, then the second meets a 503.
    cloud.fail_next(
        Op::UpsertMessages,
        [Fault::Permanent, Fault::Permanent, Fault::Transient(None)],
    );
    let dev = Device::new(&cloud, 1);
    let (_, session) = dev.session();
    let messages = (0..4)
        .map(|i| NewMessage::new(Role::User, format!("m{i}")))
        .collect();
    dev.engine.append_messages(session.id, messages).unwrap();
    let running = dev.start();
    cloud
        .wait_until("every message landed", Duration::from_secs(600), |c| {
            c.message_count() == 4
        })
        .await;
    running.stop().await;

    let sizes = cloud.message_upsert_sizes();
    assert_eq!(
        sizes,
        [4, 1, 1, 4],
        "the split stopped, the batch was retried whole"
    );
    assert!(dev.consumer.dead_letters().await.unwrap().is_empty());
    assert_eq!(dev.consumer.position().await.unwrap(), dev.head());
}

#[tokio::test(start_paused = true)]
async fn replaying_dead_letters_delivers_them_and_removes_the_rows() {
    let cloud = Arc::new(FakeCloud::new());
    // The batch, then each of its messages on its own.
    cloud.fail_next(Op::UpsertMessages, std::iter::repeat_n(Fault::Permanent, 4));
    let dev = Device::new(&cloud, 1);
    let (_, session) = dev.session();
    let messages = (0..3)
        .map(|i| NewMessage::new(Role::User, format!("m{i}")))
        .collect();
    dev.engine.append_messages(session.id, messages).unwrap();
    let running = dev.start();
    cloud
        .wait_until("the batch was refused", Duration::from_secs(60), |c| {
            c.calls(Op::UpsertMessages).len() == 4
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

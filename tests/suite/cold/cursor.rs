//! The cursor commit of a delivered unit runs alongside the next upload: a step that sends
//! nothing finishes it first, a failed commit is reported and its unit sent again before
//! anything after it, and a crash before it finishes re-sends that unit and skips nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tandem::app::cold::TickOutcome;
use tandem::domain::backoff::RetryClass;
use tandem::domain::{EffectSeq, NewMessage, Role};

use super::fake_cloud::{FakeCloud, Op};
use super::harness::Device;

fn burst(n: usize) -> Vec<NewMessage> {
    (1..=n)
        .map(|i| NewMessage::new(Role::Tool, format!("line {i}")))
        .collect()
}

/// The first and last sequence number of each message batch the cloud received.
fn batch_spans(cloud: &FakeCloud) -> Vec<(u64, u64)> {
    cloud
        .message_batches()
        .iter()
        .map(|b| (b[0].sequence_number, b[b.len() - 1].sequence_number))
        .collect()
}

fn delivered(items: usize, through: u64) -> TickOutcome {
    TickOutcome::Delivered {
        items,
        through: EffectSeq::new(through),
    }
}

#[tokio::test(start_paused = true)]
async fn after_a_delivered_step_an_idle_step_leaves_the_position_at_the_last_unit() {
    let cloud = Arc::new(FakeCloud::new());
    let dev = Device::new(&cloud, 1);
    dev.engine.create_repository("repo", None).unwrap();
    assert_eq!(dev.consumer.tick().await, delivered(1, 1));
    assert_eq!(dev.consumer.tick().await, TickOutcome::Idle);
    assert_eq!(dev.consumer.position().await.unwrap(), EffectSeq::new(1));

    // Two full batches: the second is sealed ahead and uploads while the first one's cursor
    // commit runs.
    let (_, session) = dev.session();
    let base = dev.head().get();
    dev.engine.append_messages(session.id, burst(100)).unwrap();
    assert_eq!(dev.consumer.tick().await, delivered(1, base - 1));
    assert_eq!(dev.consumer.tick().await, delivered(1, base));
    assert_eq!(dev.consumer.tick().await, delivered(50, base + 50));
    assert_eq!(dev.consumer.tick().await, delivered(50, base + 100));
    assert_eq!(dev.consumer.tick().await, TickOutcome::Idle);
    assert_eq!(dev.consumer.position().await.unwrap(), dev.head());
    assert_eq!(dev.head(), EffectSeq::new(base + 100));
    assert_eq!(dev.consumer.lag().await.unwrap().behind, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_cursor_commit_is_reported_and_its_batch_sent_again_before_the_next() {
    let cloud = Arc::new(FakeCloud::new());
    let dev = Device::new(&cloud, 1);
    let (_, session) = dev.session();
    let base = dev.head().get();
    // One batch first: it creates and distributes the session key, so that every later batch
    // is sealed ahead of its turn and uploads alongside the commit before it.
    dev.engine.append_messages(session.id, burst(50)).unwrap();
    assert_eq!(dev.consumer.tick().await, delivered(1, base - 1));
    assert_eq!(dev.consumer.tick().await, delivered(1, base));
    assert_eq!(dev.consumer.tick().await, delivered(50, base + 50));

    let start = base + 50;
    dev.engine.append_messages(session.id, burst(150)).unwrap();
    dev.cursor.fail_advances_to(EffectSeq::new(start + 50), 1);
    assert_eq!(dev.consumer.tick().await, delivered(50, start + 50));
    // The next batch uploads while that commit fails: the step reports the failure.
    let retry_at = match dev.consumer.tick().await {
        TickOutcome::Failed {
            class: RetryClass::Transient { .. },
            retry_at,
        } => retry_at,
        other => panic!("expected the failed commit, got {other:?}"),
    };
    let reported = dev.consumer.last_error().expect("the failure is reported");
    assert!(reported.contains("advancing the cursor"), "{reported}");
    assert_eq!(
        dev.consumer.position().await.unwrap(),
        EffectSeq::new(start),
        "the cursor stays before the batch whose commit failed"
    );
    assert_eq!(batch_spans(&cloud), [(1, 50), (51, 100), (101, 150)]);

    tokio::time::sleep_until(retry_at).await;
    assert_eq!(dev.consumer.tick().await, delivered(50, start + 50));
    assert_eq!(dev.consumer.tick().await, delivered(50, start + 100));
    assert_eq!(dev.consumer.tick().await, delivered(50, start + 150));
    assert_eq!(dev.consumer.tick().await, TickOutcome::Idle);
    assert_eq!(dev.consumer.position().await.unwrap(), dev.head());
    assert_eq!(dev.consumer.last_error(), None, "cleared by the successes");

    assert_eq!(
        batch_spans(&cloud),
        [
            (1, 50),
            (51, 100),
            (101, 150),
            (51, 100),
            (101, 150),
            (151, 200)
        ],
        "the batch whose commit failed went again, then everything after it"
    );
    let batches = cloud.message_batches();
    assert_eq!(batches[3], batches[1], "the very same sealed rows");
    let ids: BTreeSet<_> = cloud.messages().iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 200, "one row per message");
}

#[tokio::test(start_paused = true)]
async fn a_step_that_sends_nothing_finishes_the_commit_and_reports_its_failure() {
    let cloud = Arc::new(FakeCloud::new());
    let dev = Device::new(&cloud, 1);
    dev.engine.create_repository("repo", None).unwrap();
    dev.cursor.fail_advances_to(EffectSeq::new(1), 1);

    assert_eq!(dev.consumer.tick().await, delivered(1, 1));
    let retry_at = match dev.consumer.tick().await {
        TickOutcome::Failed { retry_at, .. } => retry_at,
        other => panic!("an idle step must report the failed commit, got {other:?}"),
    };
    assert_eq!(dev.consumer.position().await.unwrap(), EffectSeq::ZERO);
    assert!(matches!(
        dev.consumer.tick().await,
        TickOutcome::BackingOff { .. }
    ));

    tokio::time::sleep_until(retry_at).await;
    assert_eq!(dev.consumer.tick().await, delivered(1, 1));
    assert_eq!(dev.consumer.tick().await, TickOutcome::Idle);
    assert_eq!(dev.consumer.position().await.unwrap(), EffectSeq::new(1));
    assert_eq!(
        cloud.calls(Op::UpsertRepository).len(),
        2,
        "sent again once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_before_a_cursor_commit_finished_resends_that_batch_and_skips_nothing() {
    let cloud = Arc::new(FakeCloud::new());
    let mut a = Device::new(&cloud, 1);
    let b = Device::new(&cloud, 2);
    a.register().await;
    b.register().await;
    let (_, session) = a.session();
    let base = a.head().get();
    let texts: Vec<String> = (1..=150).map(|i| format!("line {i}")).collect();
    a.engine.append_messages(session.id, burst(150)).unwrap();
    // The process dies before the first batch's commit lands.
    a.cursor.fail_advances_to(EffectSeq::new(base + 50), 1);

    assert_eq!(a.consumer.tick().await, delivered(1, base - 1));
    assert_eq!(a.consumer.tick().await, delivered(1, base));
    assert_eq!(a.consumer.tick().await, delivered(50, base + 50));
    a.restart();
    assert_eq!(
        a.consumer.position().await.unwrap(),
        EffectSeq::new(base),
        "the cursor is where the last finished commit left it"
    );

    let running = a.start();
    cloud
        .wait_until("all 150 are up", Duration::from_secs(60), |c| {
            c.calls(Op::UpsertMessages).len() == 4
        })
        .await;
    running.stop().await;
    assert_eq!(a.consumer.position().await.unwrap(), a.head());
    assert_eq!(
        batch_spans(&cloud),
        [(1, 50), (1, 50), (51, 100), (101, 150)],
        "only the batch without a finished commit was sent again"
    );
    let ids: BTreeSet<_> = cloud.messages().iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 150, "one row per message");

    assert_eq!(
        b.read_back(session.id).await,
        texts,
        "every line, once, in order, readable elsewhere"
    );
}

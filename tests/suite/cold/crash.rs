//! A crash mid-stream (drop everything, reopen from the SQLite file) loses nothing and
//! duplicates nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tandem::app::cold::TickOutcome;
use tandem::domain::crypto::KeyEpoch;
use tandem::domain::{NewMessage, Role};

use super::fake_cloud::{FakeCloud, Fault, Op};
use super::harness::Device;

#[tokio::test(start_paused = true)]
async fn a_crash_after_an_unacknowledged_upload_loses_and_duplicates_nothing() {
    let cloud = Arc::new(FakeCloud::new());
    let mut a = Device::new(&cloud, 1);
    let b = Device::new(&cloud, 2);
    a.register().await;
    b.register().await;
    let (_, session) = a.session();
    let texts: Vec<String> = (1..=150).map(|i| format!("line {i}")).collect();
    let messages = texts
        .iter()
        .map(|t| NewMessage::new(Role::Tool, t.clone()))
        .collect();
    a.engine.append_messages(session.id, messages).unwrap();

    // Deliver up to and including the first batch.
    let mut first_batch = false;
    for _ in 0..10 {
        if let TickOutcome::Delivered { items: 50, .. } = a.consumer.tick().await {
            first_batch = true;
            break;
        }
    }
    assert!(first_batch, "the first batch went out");
    // The second batch reaches the cloud but the answer is lost; then the process dies.
    cloud.fail_next(Op::UpsertMessages, [Fault::ApplyThenFail]);
    assert!(matches!(
        a.consumer.tick().await,
        TickOutcome::Failed { .. }
    ));
    assert_eq!(cloud.message_count(), 100);
    let acknowledged = a.consumer.position().await.unwrap();
    a.restart();
    assert_eq!(
        a.consumer.position().await.unwrap(),
        acknowledged,
        "the cursor survived"
    );

    let running = a.start();
    cloud
        .wait_until("all 150 are up", Duration::from_secs(60), |c| {
            c.message_count() == 150
        })
        .await;
    running.stop().await;
    assert_eq!(a.consumer.position().await.unwrap(), a.head());

    let batches: Vec<(u64, u64)> = cloud
        .message_batches()
        .iter()
        .map(|b| (b[0].sequence_number, b[b.len() - 1].sequence_number))
        .collect();
    assert_eq!(
        batches,
        [(1, 50), (51, 100), (51, 100), (101, 150)],
        "only the unacknowledged batch was sent again"
    );
    let ids: BTreeSet<_> = cloud.messages().iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 150, "one row per message");
    assert!(
        cloud
            .messages()
            .iter()
            .all(|m| m.key_epoch == KeyEpoch::FIRST),
        "the session key survived the restart: no second key"
    );
    let epochs: BTreeSet<_> = cloud.wraps().iter().map(|w| w.key_epoch).collect();
    assert_eq!(epochs, BTreeSet::from([KeyEpoch::FIRST]));

    assert_eq!(
        b.read_back(session.id).await,
        texts,
        "every line, once, in order, readable elsewhere"
    );
    assert!(a.consumer.dead_letters().await.unwrap().is_empty());
}

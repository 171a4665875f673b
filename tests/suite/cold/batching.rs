//! Message batches: at most 50 messages per upsert, a partial batch waits at most 500 ms.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tandem::domain::{NewMessage, Role};

use super::fake_cloud::{FakeCloud, Op};
use super::harness::Device;

fn burst(n: usize) -> Vec<NewMessage> {
    (0..n)
        .map(|i| NewMessage::new(Role::User, format!("message {i}")))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_burst_goes_out_in_batches_of_at_most_fifty() {
    let cloud = Arc::new(FakeCloud::new());
    let dev = Device::new(&cloud, 1);
    let (_, session) = dev.session();
    dev.engine.append_messages(session.id, burst(120)).unwrap();
    let start = Instant::now();
    let running = dev.start();
    cloud
        .wait_until("all 120 messages are up", Duration::from_secs(60), |c| {
            c.message_count() == 120
        })
        .await;
    running.stop().await;

    let sizes: Vec<usize> = cloud.message_batches().iter().map(Vec::len).collect();
    assert_eq!(sizes, [50, 50, 20]);
    let calls = cloud.calls(Op::UpsertMessages);
    assert!(
        calls[1].at - start < Duration::from_millis(50),
        "full batches go at once"
    );
    let partial_wait = calls[2].at - calls[1].at;
    assert!(
        partial_wait >= Duration::from_millis(500) && partial_wait < Duration::from_millis(550),
        "the partial batch waited {partial_wait:?}"
    );
    assert_eq!(dev.consumer.position().await.unwrap(), dev.head());
}

#[tokio::test(start_paused = true)]
async fn messages_trickling_in_share_one_batch_sent_500ms_after_the_first() {
    let cloud = Arc::new(FakeCloud::new());
    let dev = Device::new(&cloud, 1);
    let (_, session) = dev.session();
    let running = dev.start();
    cloud
        .wait_until("the session is up", Duration::from_secs(10), |c| {
            c.session(session.id).is_some()
        })
        .await;

    let first = Instant::now();
    for i in 0..4 {
        dev.engine
            .append_message(
                session.id,
                NewMessage::new(Role::Assistant, format!("part {i}")),
            )
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cloud
        .wait_until("the trickle is up", Duration::from_secs(10), |c| {
            c.message_count() == 4
        })
        .await;
    running.stop().await;

    let batches = cloud.message_batches();
    assert_eq!(batches.len(), 1, "one upsert for the whole trickle");
    assert_eq!(batches[0].len(), 4);
    let sent = cloud.calls(Op::UpsertMessages)[0].at - first;
    assert!(
        sent >= Duration::from_millis(500) && sent < Duration::from_millis(550),
        "sent {sent:?} after the first message"
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_stops_at_the_next_non_message_effect() {
    let cloud = Arc::new(FakeCloud::new());
    let dev = Device::new(&cloud, 1);
    let (_, session) = dev.session();
    dev.engine.append_messages(session.id, burst(3)).unwrap();
    dev.engine.close_session(session.id).unwrap();
    let running = dev.start();
    cloud
        .wait_until("the session is ended", Duration::from_secs(10), |c| {
            !c.calls(Op::EndSession).is_empty()
        })
        .await;
    running.stop().await;
    let calls = cloud.calls(Op::UpsertMessages);
    assert_eq!(calls.len(), 1);
    let end = cloud.calls(Op::EndSession)[0].at;
    assert!(
        end - calls[0].at < Duration::from_millis(50),
        "no window: the close follows the batch"
    );
}

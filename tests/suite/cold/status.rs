//! Runtime status: updates within the window coalesce, newest per session wins.

use std::sync::Arc;
use std::time::Duration;

use tandem::domain::{RuntimeState, RuntimeStatus};

use super::fake_cloud::{FakeCloud, Op};
use super::harness::Device;

fn status(state: RuntimeState) -> RuntimeStatus {
    RuntimeStatus {
        status: state,
        error_message: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_flurry_of_status_updates_sends_only_the_newest_per_session() {
    let cloud = Arc::new(FakeCloud::new());
    let dev = Device::new(&cloud, 1);
    let (repo, first) = dev.session();
    let second = dev.engine.create_session(repo.id, "second").unwrap();
    let running = dev.start();
    cloud
        .wait_until("both sessions are up", Duration::from_secs(10), |c| {
            c.session(first.id).is_some() && c.session(second.id).is_some()
        })
        .await;

    for state in [
        RuntimeState::Running,
        RuntimeState::Waiting,
        RuntimeState::Idle,
    ] {
        dev.engine
            .update_runtime_status(first.id, status(state))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dev.engine
        .update_runtime_status(second.id, status(RuntimeState::Error))
        .unwrap();
    cloud
        .wait_until("both statuses are up", Duration::from_secs(10), |c| {
            c.runtime_status(first.id).is_some() && c.runtime_status(second.id).is_some()
        })
        .await;
    running.stop().await;

    let calls = cloud.calls(Op::UpdateRuntimeStatus);
    assert_eq!(calls.len(), 2, "one update per session: {calls:?}");
    let (value, _) = cloud.runtime_status(first.id).unwrap();
    assert_eq!(value["coding_session"]["status"], "idle", "the newest wins");
    assert_eq!(value["schema_version"], 1);
    let (value, _) = cloud.runtime_status(second.id).unwrap();
    assert_eq!(value["coding_session"]["status"], "error");
    assert_eq!(dev.consumer.position().await.unwrap(), dev.head());
}

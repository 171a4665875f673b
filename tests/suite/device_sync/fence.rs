//! Leases and the dispatch fence across devices.

use std::sync::Arc;

use tandem::adapters::memory::MemoryRelay;
use tandem::app::sync::SyncError;
use tandem::domain::ids::{Epoch, RunId};
use tandem::domain::oplog::{
    DispatchDecision, Intent, IntentId, IntentStatus, LeaseError, Scope, VerifyError,
};
use tandem::ports::LeaseCoordinatorError;
use uuid::Uuid;

use super::harness::{clock, dev, with_a_runaway_clock, World};

fn run(n: u128) -> RunId {
    RunId::from_uuid(Uuid::from_u128(
        0x0A11_0000_0000_0000_0000_0000_0000_0000 | n,
    ))
    .expect("id")
}

fn intent(run_id: RunId, status: IntentStatus) -> Intent {
    Intent {
        intent_id: IntentId::parse("milo:run-1").expect("id"),
        run_id,
        status,
    }
}

#[tokio::test]
async fn the_fence_reads_the_committed_run_oracle_then_the_lease() {
    let clock = clock();
    let world = World::new(Arc::new(MemoryRelay::new()), Arc::clone(&clock));
    let mut a = world.device(1, &clock).await;
    let mut b = world.device(2, &clock).await;

    let lease = a.lease_acquire("milo", 10_000).await.expect("acquire");
    assert_eq!((lease.epoch, lease.holder), (Epoch::new(1), dev(1)));
    let e1 = lease.epoch;
    assert_eq!(
        a.fence_check("milo", run(1), e1).await.expect("fence"),
        DispatchDecision::Proceed
    );
    assert_eq!(
        b.fence_check("milo", run(1), e1).await.expect("fence"),
        DispatchDecision::NotHeld
    );
    assert_eq!(
        b.fence_check("milo", run(1), Epoch::ZERO)
            .await
            .expect("fence"),
        DispatchDecision::StaleEpoch { current: e1 }
    );
    assert!(matches!(
        b.lease_acquire("milo", 10_000).await,
        Err(SyncError::Lease(LeaseCoordinatorError::Refused(
            LeaseError::Held { .. }
        )))
    ));

    a.record_intent(Scope::Personal, &intent(run(1), IntentStatus::Committed))
        .await
        .expect("record")
        .expect("recorded");
    a.pump().await.expect("a pumps");
    b.pump().await.expect("b pumps");
    for d in [&a, &b] {
        assert_eq!(
            d.fence_check("milo", run(1), e1).await.expect("fence"),
            DispatchDecision::AlreadyCommitted
        );
    }
    // The terminal guard: a committed run is not sent back to pending.
    let ignored = b
        .record_intent(Scope::Personal, &intent(run(1), IntentStatus::Pending))
        .await
        .expect("record");
    assert_eq!(ignored, None);

    assert_eq!(
        b.lease_status("milo")
            .await
            .expect("status")
            .map(|l| l.holder),
        Some(dev(1))
    );
    a.lease_renew("milo", e1, 20_000).await.expect("renew");
    a.lease_release("milo", e1).await.expect("release");
    let next = b.lease_acquire("milo", 5_000).await.expect("b acquires");
    assert_eq!(next.epoch, Epoch::new(2));
    assert_eq!(
        b.fence_check("milo", run(2), next.epoch)
            .await
            .expect("fence"),
        DispatchDecision::Proceed
    );
    assert_eq!(
        a.fence_check("milo", run(2), e1).await.expect("fence"),
        DispatchDecision::StaleEpoch {
            current: next.epoch
        }
    );
}

#[tokio::test]
async fn the_fence_authorises_nothing_while_a_chain_is_held_back() {
    let (clock_a, _world, mut a, mut b) = with_a_runaway_clock().await;
    // B, its clock ahead past the drift bound, ran the effect and recorded the run committed.
    b.record_intent(Scope::Personal, &intent(run(7), IntentStatus::Committed))
        .await
        .expect("record")
        .expect("recorded");
    b.pump().await.expect("b pumps");

    assert!(matches!(
        a.pump().await,
        Err(SyncError::Verify(VerifyError::TooFarInFuture { .. }))
    ));
    assert_eq!(a.status().await.expect("status").held_back, vec![dev(2)]);
    let epoch = a
        .lease_acquire("milo", 60_000)
        .await
        .expect("acquire")
        .epoch;
    // Without b's chain the oracle cannot see the commit: no `proceed`.
    match a.fence_check("milo", run(7), epoch).await {
        Err(SyncError::FenceBlind { device }) => assert_eq!(device, dev(2)),
        other => panic!("expected FenceBlind, got {other:?}"),
    }
    // The refusals still stand while the chain is held back.
    assert_eq!(
        a.fence_check("milo", run(7), Epoch::ZERO)
            .await
            .expect("fence"),
        DispatchDecision::StaleEpoch { current: epoch }
    );

    clock_a.advance(20_000);
    a.pump().await.expect("b's chain comes through");
    assert!(a.status().await.expect("status").held_back.is_empty());
    assert_eq!(
        a.fence_check("milo", run(7), epoch).await.expect("fence"),
        DispatchDecision::AlreadyCommitted
    );
}

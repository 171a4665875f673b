//! The dispatch fence over a coordinator's linearizable read: every decision branch, computed
//! from `current()` and `check_dispatch`, on every adapter.

use tandem::domain::oplog::{check_dispatch, DispatchDecision};
use tandem::domain::{DeviceId, Epoch};
use tandem::ports::conformance::lease::LeaseFixture;
use uuid::Uuid;

use super::fixtures::{Memory, SqliteFile};

const RESOURCE: &str = "agent-fenced";
const TTL: u64 = 1_000;

fn device(n: u128) -> DeviceId {
    DeviceId::from_uuid(Uuid::from_u128(n)).expect("non-nil")
}

/// The fence as a dispatcher runs it: read the lease, then decide at the clock's time.
async fn fence(
    f: &dyn LeaseFixture,
    committed: bool,
    me: DeviceId,
    epoch: Epoch,
) -> DispatchDecision {
    let current = f.coordinator().current(RESOURCE).await.expect("current");
    check_dispatch(committed, current.as_ref(), me, epoch, f.now_ms())
}

async fn every_branch(f: &dyn LeaseFixture) {
    let c = f.coordinator();
    let (a, b) = (device(1), device(2));
    let (e1, e2) = (Epoch::new(1), Epoch::new(2));
    use DispatchDecision::{AlreadyCommitted, NotHeld, Proceed, StaleEpoch};

    assert_eq!(fence(f, false, a, e1).await, NotHeld, "never acquired");

    let lease = c.acquire(RESOURCE, a, TTL).await.expect("acquire");
    assert_eq!(lease.epoch, e1);
    assert_eq!(fence(f, false, a, e1).await, Proceed, "the holder");
    assert_eq!(
        fence(f, true, a, e1).await,
        AlreadyCommitted,
        "a committed run is never dispatched again, even by the holder"
    );
    assert_eq!(
        fence(f, false, b, e1).await,
        NotHeld,
        "another device claiming the holder's epoch"
    );

    f.advance_ms(TTL);
    assert_eq!(
        fence(f, false, a, e1).await,
        NotHeld,
        "the holder's lease expired"
    );

    let taken = c.acquire(RESOURCE, b, TTL).await.expect("take over");
    assert_eq!(taken.epoch, e2);
    assert_eq!(
        fence(f, false, a, e1).await,
        StaleEpoch { current: e2 },
        "the old holder is fenced out by the new epoch"
    );
    assert_eq!(
        fence(f, true, a, e1).await,
        AlreadyCommitted,
        "the committed-run oracle is read before the epoch"
    );
    assert_eq!(fence(f, false, b, e2).await, Proceed, "the new holder");

    c.release(RESOURCE, b, e2).await.expect("release");
    assert_eq!(
        fence(f, false, b, e2).await,
        NotHeld,
        "the holder released its lease"
    );
    assert_eq!(
        fence(f, false, a, e1).await,
        NotHeld,
        "nothing is held after a release"
    );
}

#[tokio::test]
async fn every_fence_branch_on_the_memory_coordinator() {
    every_branch(&Memory::new()).await;
}

#[tokio::test]
async fn every_fence_branch_on_the_sqlite_coordinator() {
    every_branch(&SqliteFile::new()).await;
}

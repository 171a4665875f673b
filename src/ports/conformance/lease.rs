//! Conformance suite for [`LeaseCoordinator`]: one function per contract clause of
//! [`ports::lease`](crate::ports::lease), each named after its clause.
//!
//! Adapter authors implement [`LeaseFixture`] (the coordinator under test, the time of the
//! clock it reads and a way to move that clock forward, and optionally a restart) and run the suite with
//! [`lease_conformance_tests!`](crate::lease_conformance_tests), which stamps one `#[test]` per
//! clause:
//!
//! ```
//! use std::sync::Arc;
//! use tandem::adapters::memory::InMemoryLeaseCoordinator;
//! use tandem::adapters::system::ManualClock;
//! use tandem::ports::conformance::lease::LeaseFixture;
//! use tandem::ports::{Clock, LeaseCoordinator};
//!
//! struct Memory(Arc<ManualClock>, InMemoryLeaseCoordinator);
//!
//! impl LeaseFixture for Memory {
//!     fn coordinator(&self) -> &dyn LeaseCoordinator {
//!         &self.1
//!     }
//!     fn now_ms(&self) -> u64 {
//!         self.0.now_ms() as u64
//!     }
//!     fn advance_ms(&self, ms: u64) {
//!         self.0.advance(ms as i64);
//!     }
//!     fn restart(&mut self) -> bool {
//!         false // nothing survives: the restart part of the suite is skipped
//!     }
//! }
//!
//! tandem::lease_conformance_tests!(memory, || {
//!     let clock = Arc::new(ManualClock::new(1_000));
//!     Memory(clock.clone(), InMemoryLeaseCoordinator::new(clock))
//! });
//! # fn main() {}
//! ```
//!
//! Each function receives a fresh coordinator that never issued a lease and a clock it may move
//! forward; it panics with a clause-specific message when the coordinator breaks the contract.

use std::future::Future;

use uuid::Uuid;

use crate::domain::ids::{DeviceId, Epoch};
use crate::domain::oplog::{Lease, LeaseError};
use crate::ports::{LeaseCoordinator, LeaseCoordinatorError};

/// What the suite needs from an adapter: the coordinator, the clock it reads, and a restart.
pub trait LeaseFixture: Send + Sync {
    /// The coordinator under test.
    fn coordinator(&self) -> &dyn LeaseCoordinator;

    /// The time of the clock the coordinator reads, in Unix milliseconds.
    fn now_ms(&self) -> u64;

    /// Moves the coordinator's clock forward by `ms` (the suite never moves it back).
    fn advance_ms(&self, ms: u64);

    /// Replaces the coordinator with a fresh one over the same storage and clock, as a
    /// restarted process would see it. Returns `false` (and changes nothing) for adapters
    /// whose state does not outlive them; the suite then skips its restart checks.
    fn restart(&mut self) -> bool;
}

/// Calls `$m!(clause)` for every clause, so the list lives in one place.
#[macro_export]
#[doc(hidden)]
macro_rules! __lease_clauses {
    ($m:ident) => {
        $m!(acquire_when_free_or_expired_only);
        $m!(epochs_strictly_increase_and_are_never_reused);
        $m!(renew_by_holder_before_expiry_only);
        $m!(release_by_holder_only);
        $m!(current_reads_the_latest_lease);
        $m!(resources_are_independent);
        $m!(zero_ttl_is_refused);
    };
}

/// Stamps a test module `$name` with one `#[test]` per [`LeaseCoordinator`] contract clause,
/// each run on a fresh fixture from `$factory`: a closure returning a value that implements
/// [`LeaseFixture`]. Each test drives its clause on its own single-threaded runtime.
#[macro_export]
macro_rules! lease_conformance_tests {
    ($name:ident, $factory:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            macro_rules! clause {
                ($clause:ident) => {
                    #[test]
                    fn $clause() {
                        let mut fixture = ($factory)();
                        $crate::ports::conformance::lease::run_clause(
                            $crate::ports::conformance::lease::$clause(&mut fixture),
                        );
                    }
                };
            }
            $crate::__lease_clauses!(clause);
        }
    };
}

/// Drives one clause to completion on a fresh current-thread runtime (used by
/// [`lease_conformance_tests!`](crate::lease_conformance_tests)).
#[doc(hidden)]
pub fn run_clause<F: Future<Output = ()>>(clause: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime for the lease conformance suite")
        .block_on(clause);
}

const RESOURCE: &str = "agent-conformance";
const TTL: u64 = 1_000;

fn device(n: u128) -> DeviceId {
    DeviceId::from_uuid(Uuid::from_u128(
        0x1EA5_0000_0000_0000_0000_0000_0000_0000 | n,
    ))
    .expect("non-nil")
}

/// The refusal behind `result`, or a panic naming `what` if it succeeded or failed otherwise.
fn refusal<T: std::fmt::Debug>(result: Result<T, LeaseCoordinatorError>, what: &str) -> LeaseError {
    match result {
        Err(LeaseCoordinatorError::Refused(e)) => e,
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

async fn acquire(f: &dyn LeaseFixture, resource: &str, holder: DeviceId, ttl: u64) -> Lease {
    f.coordinator()
        .acquire(resource, holder, ttl)
        .await
        .unwrap_or_else(|e| panic!("acquire of {resource:?} by {holder} refused: {e}"))
}

async fn current(f: &dyn LeaseFixture, resource: &str) -> Option<Lease> {
    f.coordinator()
        .current(resource)
        .await
        .unwrap_or_else(|e| panic!("current({resource:?}) failed: {e}"))
}

/// `acquire_when_free_or_expired_only`
pub async fn acquire_when_free_or_expired_only(f: &mut dyn LeaseFixture) {
    let (a, b) = (device(1), device(2));
    let t0 = f.now_ms();
    let first = acquire(f, RESOURCE, a, TTL).await;
    assert_eq!(
        (first.resource.as_str(), first.holder, first.epoch),
        (RESOURCE, a, Epoch::new(1)),
        "a free resource must be leased to the caller at epoch 1"
    );
    assert_eq!(first.expires_at_ms, t0 + TTL, "expiry is now + ttl");

    let held = LeaseError::Held {
        holder: a,
        epoch: first.epoch,
        expires_at_ms: first.expires_at_ms,
    };
    let err = refusal(
        f.coordinator().acquire(RESOURCE, b, TTL).await,
        "live lease",
    );
    assert_eq!(err, held, "a live lease must be refused, naming its holder");
    let err = refusal(f.coordinator().acquire(RESOURCE, a, TTL).await, "own lease");
    assert_eq!(err, held, "even the holder cannot re-acquire a live lease");

    f.advance_ms(TTL - 1);
    let err = refusal(f.coordinator().acquire(RESOURCE, b, TTL).await, "last ms");
    assert_eq!(err, held, "a lease is live until its expiry instant");
    assert_eq!(
        current(f, RESOURCE).await,
        Some(first.clone()),
        "a refused acquire changed the lease"
    );

    f.advance_ms(1);
    let second = acquire(f, RESOURCE, b, TTL).await;
    assert_eq!(
        (second.holder, second.epoch),
        (b, Epoch::new(2)),
        "an expired lease must be taken over at the next epoch"
    );

    f.coordinator()
        .release(RESOURCE, b, second.epoch)
        .await
        .expect("release by the holder");
    let third = acquire(f, RESOURCE, a, TTL).await;
    assert_eq!(
        third.epoch,
        Epoch::new(3),
        "a released resource is free at once, at the next epoch"
    );
}

/// `epochs_strictly_increase_and_are_never_reused`
pub async fn epochs_strictly_increase_and_are_never_reused(f: &mut dyn LeaseFixture) {
    let holders = [device(1), device(2), device(3)];
    let mut last = Epoch::ZERO;
    for round in 0..9u64 {
        let holder = holders[(round % 3) as usize];
        let lease = acquire(f, RESOURCE, holder, TTL).await;
        assert_eq!(
            lease.epoch,
            last.next(),
            "round {round}: epoch must be one past the highest ever issued"
        );
        last = lease.epoch;
        // Alternate the ways a lease ends: release, expiry, release after expiry.
        match round % 3 {
            0 => f
                .coordinator()
                .release(RESOURCE, holder, lease.epoch)
                .await
                .expect("release"),
            1 => f.advance_ms(TTL),
            _ => {
                f.advance_ms(TTL + 5);
                f.coordinator()
                    .release(RESOURCE, holder, lease.epoch)
                    .await
                    .expect("the holder may release after expiry");
            }
        }
    }

    if !f.restart() {
        return;
    }
    // Released: the highest epoch must survive the restart.
    let after_release = acquire(f, RESOURCE, holders[0], TTL).await;
    assert_eq!(
        after_release.epoch,
        last.next(),
        "after a restart the next epoch must still be one past the highest ever issued"
    );
    assert!(f.restart(), "a durable fixture restarts every time");
    assert_eq!(
        current(f, RESOURCE).await,
        Some(after_release.clone()),
        "a live lease must survive a restart"
    );
    let err = refusal(
        f.coordinator().acquire(RESOURCE, holders[1], TTL).await,
        "live lease after restart",
    );
    assert!(
        matches!(err, LeaseError::Held { holder, .. } if holder == holders[0]),
        "a live lease must still be held after a restart, got {err:?}"
    );
    f.advance_ms(TTL);
    assert!(f.restart(), "a durable fixture restarts every time");
    let after_expiry = acquire(f, RESOURCE, holders[1], TTL).await;
    assert_eq!(
        after_expiry.epoch,
        after_release.epoch.next(),
        "an expired lease's epoch must not be reissued after a restart"
    );
}

/// `renew_by_holder_before_expiry_only`
pub async fn renew_by_holder_before_expiry_only(f: &mut dyn LeaseFixture) {
    let (a, b) = (device(1), device(2));
    let c = f.coordinator();
    let err = refusal(c.renew(RESOURCE, a, Epoch::new(1), TTL).await, "unleased");
    assert_eq!(err, LeaseError::NotLeased, "nothing to renew");

    let lease = acquire(f, RESOURCE, a, TTL).await;
    f.advance_ms(TTL / 2);
    let renewed = f
        .coordinator()
        .renew(RESOURCE, a, lease.epoch, TTL)
        .await
        .expect("renew by the holder before expiry");
    assert_eq!(renewed.epoch, lease.epoch, "renew must keep the epoch");
    assert_eq!(renewed.holder, a);
    assert_eq!(
        renewed.expires_at_ms,
        f.now_ms() + TTL,
        "renew extends to now + ttl"
    );
    assert_eq!(current(f, RESOURCE).await, Some(renewed.clone()));

    let not_holder = LeaseError::NotHolder {
        holder: a,
        epoch: lease.epoch,
        claimed: lease.epoch,
    };
    let c = f.coordinator();
    let err = refusal(c.renew(RESOURCE, b, lease.epoch, TTL).await, "other device");
    assert_eq!(err, not_holder, "only the holder may renew");
    let wrong = lease.epoch.next();
    let err = refusal(c.renew(RESOURCE, a, wrong, TTL).await, "wrong epoch");
    assert_eq!(
        err,
        LeaseError::NotHolder {
            holder: a,
            epoch: lease.epoch,
            claimed: wrong
        },
        "renew must name the epoch it was asked for"
    );
    assert_eq!(
        current(f, RESOURCE).await,
        Some(renewed.clone()),
        "a refused renew changed the lease"
    );

    f.advance_ms(TTL);
    let err = refusal(
        f.coordinator().renew(RESOURCE, a, lease.epoch, TTL).await,
        "expired",
    );
    assert_eq!(
        err,
        LeaseError::Expired {
            epoch: lease.epoch,
            expires_at_ms: renewed.expires_at_ms
        },
        "an expired lease cannot be renewed"
    );
    assert_eq!(current(f, RESOURCE).await, Some(renewed));

    f.coordinator()
        .release(RESOURCE, a, lease.epoch)
        .await
        .expect("release after expiry");
    let err = refusal(
        f.coordinator().renew(RESOURCE, a, lease.epoch, TTL).await,
        "released",
    );
    assert_eq!(
        err,
        LeaseError::NotLeased,
        "a released lease cannot be renewed"
    );
}

/// `release_by_holder_only`
pub async fn release_by_holder_only(f: &mut dyn LeaseFixture) {
    let (a, b) = (device(1), device(2));
    let err = refusal(
        f.coordinator().release(RESOURCE, a, Epoch::new(1)).await,
        "unleased",
    );
    assert_eq!(err, LeaseError::NotLeased, "nothing to release");

    let lease = acquire(f, RESOURCE, a, TTL).await;
    let c = f.coordinator();
    let err = refusal(c.release(RESOURCE, b, lease.epoch).await, "other device");
    assert_eq!(
        err,
        LeaseError::NotHolder {
            holder: a,
            epoch: lease.epoch,
            claimed: lease.epoch
        },
        "only the holder may release"
    );
    let err = refusal(c.release(RESOURCE, a, Epoch::new(7)).await, "wrong epoch");
    assert!(
        matches!(err, LeaseError::NotHolder { claimed, .. } if claimed == Epoch::new(7)),
        "a release at another epoch must be refused, got {err:?}"
    );
    assert_eq!(
        current(f, RESOURCE).await,
        Some(lease.clone()),
        "a refused release changed the lease"
    );

    c.release(RESOURCE, a, lease.epoch)
        .await
        .expect("release by the holder");
    assert_eq!(
        current(f, RESOURCE).await,
        None,
        "release frees the resource"
    );
    let err = refusal(
        f.coordinator().release(RESOURCE, a, lease.epoch).await,
        "twice",
    );
    assert_eq!(err, LeaseError::NotLeased, "a second release finds nothing");

    // A holder fenced out by a later lease cannot release it.
    let old = acquire(f, RESOURCE, a, TTL).await;
    f.advance_ms(TTL);
    let newer = acquire(f, RESOURCE, b, TTL).await;
    let err = refusal(
        f.coordinator().release(RESOURCE, a, old.epoch).await,
        "stale holder",
    );
    assert_eq!(
        err,
        LeaseError::NotHolder {
            holder: b,
            epoch: newer.epoch,
            claimed: old.epoch
        },
        "a stale holder must not release the newer lease"
    );
    assert_eq!(current(f, RESOURCE).await, Some(newer));
}

/// `current_reads_the_latest_lease`
pub async fn current_reads_the_latest_lease(f: &mut dyn LeaseFixture) {
    let (a, b) = (device(1), device(2));
    assert_eq!(current(f, RESOURCE).await, None, "never leased");
    let lease = acquire(f, RESOURCE, a, TTL).await;
    assert_eq!(current(f, RESOURCE).await, Some(lease.clone()));

    f.advance_ms(10);
    let renewed = f
        .coordinator()
        .renew(RESOURCE, a, lease.epoch, TTL)
        .await
        .expect("renew");
    assert_eq!(current(f, RESOURCE).await, Some(renewed.clone()));

    f.advance_ms(TTL);
    assert_eq!(
        current(f, RESOURCE).await,
        Some(renewed.clone()),
        "an expired lease must still be reported, so the fence can tell lapsed from stale"
    );
    let taken = acquire(f, RESOURCE, b, TTL).await;
    assert_eq!(current(f, RESOURCE).await, Some(taken.clone()));

    f.coordinator()
        .release(RESOURCE, b, taken.epoch)
        .await
        .expect("release");
    assert_eq!(current(f, RESOURCE).await, None, "a released lease is gone");
}

/// `resources_are_independent`
pub async fn resources_are_independent(f: &mut dyn LeaseFixture) {
    let (a, b) = (device(1), device(2));
    let (one, two) = ("agent-one", "agent-two");
    let l1 = acquire(f, one, a, TTL).await;
    let l2 = acquire(f, two, b, TTL * 3).await;
    assert_eq!(
        (l1.epoch, l2.epoch),
        (Epoch::new(1), Epoch::new(1)),
        "each resource has its own epochs"
    );
    assert_eq!((l1.resource.as_str(), l2.resource.as_str()), (one, two));

    f.coordinator()
        .release(RESOURCE, a, l1.epoch)
        .await
        .expect_err("a lease on another resource must not be released");
    f.coordinator()
        .release(one, a, l1.epoch)
        .await
        .expect("release one");
    assert_eq!(current(f, one).await, None);
    assert_eq!(
        current(f, two).await,
        Some(l2.clone()),
        "releasing one resource touched another"
    );

    let again = acquire(f, one, b, TTL).await;
    assert_eq!(again.epoch, Epoch::new(2));
    f.advance_ms(TTL);
    assert!(
        f.coordinator()
            .renew(one, b, again.epoch, TTL)
            .await
            .is_err(),
        "lease on {one} should have expired"
    );
    let renewed = f
        .coordinator()
        .renew(two, b, l2.epoch, TTL)
        .await
        .expect("a longer lease on another resource is still live");
    assert_eq!(renewed.epoch, Epoch::new(1));
    assert_eq!(current(f, RESOURCE).await, None, "an untouched resource");
}

/// `zero_ttl_is_refused`
pub async fn zero_ttl_is_refused(f: &mut dyn LeaseFixture) {
    let a = device(1);
    let err = refusal(f.coordinator().acquire(RESOURCE, a, 0).await, "acquire");
    assert_eq!(err, LeaseError::ZeroTtl);
    assert_eq!(
        current(f, RESOURCE).await,
        None,
        "a refused acquire left a lease"
    );

    let lease = acquire(f, RESOURCE, a, TTL).await;
    assert_eq!(
        lease.epoch,
        Epoch::new(1),
        "a refused acquire used up an epoch"
    );
    let err = refusal(
        f.coordinator().renew(RESOURCE, a, lease.epoch, 0).await,
        "renew",
    );
    assert_eq!(err, LeaseError::ZeroTtl);
    assert_eq!(current(f, RESOURCE).await, Some(lease));
}

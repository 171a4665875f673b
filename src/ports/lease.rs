//! The `LeaseCoordinator` port: execution leases with monotone fencing epochs.
//!
//! A coordinator is the linearizable authority over [`Lease`]s: per resource at most one live
//! lease, and every lease it issues carries an epoch strictly higher than any it issued before
//! for that resource. The transitions themselves are the pure [`LeaseSlot`] ones; an adapter
//! only adds storage, atomicity and its clock.
//!
//! [`LeaseSlot`]: crate::domain::oplog::LeaseSlot
//!
//! # Contract
//!
//! Every clause below has a conformance test of the same name in
//! [`conformance::lease`](crate::ports::conformance::lease), run against every adapter.
//!
//! - `acquire_when_free_or_expired_only`: [`LeaseCoordinator::acquire`] MUST succeed only when
//!   the resource has no lease or its lease has expired by the coordinator's clock; otherwise it
//!   fails with [`LeaseError::Held`] naming the holder.
//! - `epochs_strictly_increase_and_are_never_reused`: each successful acquire MUST return an
//!   epoch one past the highest ever issued for that resource, also after a release, an expiry
//!   or (for durable adapters) a restart.
//! - `renew_by_holder_before_expiry_only`: [`LeaseCoordinator::renew`] MUST extend the lease
//!   (keeping its epoch) only for the holder at its epoch before expiry; otherwise
//!   [`LeaseError::NotHolder`], [`LeaseError::Expired`] or [`LeaseError::NotLeased`].
//! - `release_by_holder_only`: [`LeaseCoordinator::release`] MUST free the resource only for
//!   the holder at its epoch; anyone else gets [`LeaseError::NotHolder`].
//! - `current_reads_the_latest_lease`: [`LeaseCoordinator::current`] MUST return the lease as
//!   the last successful transition left it (expired leases included, so the fence can tell a
//!   stale epoch from a lapsed one), or `None` if none was ever issued or it was released.
//! - `resources_are_independent`: leases on different resources MUST NOT affect each other.
//! - `zero_ttl_is_refused`: a zero time-to-live MUST fail with [`LeaseError::ZeroTtl`].
//!
//! A refused transition changes nothing.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::domain::ids::{DeviceId, Epoch};
use crate::domain::oplog::{Lease, LeaseError};

/// Why a coordinator call failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseCoordinatorError {
    /// The transition was refused (the lease is held, expired, or held by someone else).
    #[error(transparent)]
    Refused(#[from] LeaseError),
    /// The backend failed (I/O, database, network).
    #[error("lease backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The authority over execution leases. See the module docs for the contract.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait LeaseCoordinator: Send + Sync + Debug + 'static {
    /// Leases `resource` to `holder` for `ttl_ms` under a new epoch.
    async fn acquire(
        &self,
        resource: &str,
        holder: DeviceId,
        ttl_ms: u64,
    ) -> Result<Lease, LeaseCoordinatorError>;

    /// Extends the holder's lease by `ttl_ms` from now, keeping its epoch.
    async fn renew(
        &self,
        resource: &str,
        holder: DeviceId,
        epoch: Epoch,
        ttl_ms: u64,
    ) -> Result<Lease, LeaseCoordinatorError>;

    /// Frees the resource.
    async fn release(
        &self,
        resource: &str,
        holder: DeviceId,
        epoch: Epoch,
    ) -> Result<(), LeaseCoordinatorError>;

    /// The current lease (live or expired), if any.
    async fn current(&self, resource: &str) -> Result<Option<Lease>, LeaseCoordinatorError>;
}

//! [`InMemoryLeaseCoordinator`]: leases held in a map, for tests and development.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::domain::ids::{DeviceId, Epoch};
use crate::domain::oplog::{Lease, LeaseError, LeaseSlot};
use crate::ports::{Clock, LeaseCoordinator, LeaseCoordinatorError};

/// A [`LeaseCoordinator`] over a map of [`LeaseSlot`]s behind one lock, reading an injected
/// [`Clock`].
///
/// **Test and development only**: it coordinates the tasks of one process, and its epochs
/// restart from 1 with the process. Use the SQLite coordinator to coordinate processes on one
/// host or to keep epochs across restarts.
#[derive(Debug)]
pub struct InMemoryLeaseCoordinator {
    slots: Mutex<HashMap<String, LeaseSlot>>,
    clock: Arc<dyn Clock>,
}

impl InMemoryLeaseCoordinator {
    /// An empty coordinator whose leases expire by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, LeaseSlot>> {
        // Every transition validates before it mutates, so a panic elsewhere while the lock was
        // held cannot have left a slot half-changed: a poisoned lock is safe to keep using.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one pure transition on `resource`'s slot under the lock, at the clock's current
    /// time. A slot is only stored once a transition on it succeeds.
    fn transition<T>(
        &self,
        resource: &str,
        apply: impl FnOnce(&mut LeaseSlot, u64) -> Result<T, LeaseError>,
    ) -> Result<T, LeaseCoordinatorError> {
        let mut slots = self.slots();
        // The clock is read under the lock, so the times transitions see follow their order.
        let now_ms = u64::try_from(self.clock.now_ms()).unwrap_or(0);
        if let Some(slot) = slots.get_mut(resource) {
            return Ok(apply(slot, now_ms)?);
        }
        let mut slot = LeaseSlot::new(resource);
        let out = apply(&mut slot, now_ms)?;
        slots.insert(resource.to_owned(), slot);
        Ok(out)
    }
}

#[async_trait]
impl LeaseCoordinator for InMemoryLeaseCoordinator {
    async fn acquire(
        &self,
        resource: &str,
        holder: DeviceId,
        ttl_ms: u64,
    ) -> Result<Lease, LeaseCoordinatorError> {
        self.transition(resource, |slot, now| slot.acquire(holder, now, ttl_ms))
    }

    async fn renew(
        &self,
        resource: &str,
        holder: DeviceId,
        epoch: Epoch,
        ttl_ms: u64,
    ) -> Result<Lease, LeaseCoordinatorError> {
        self.transition(resource, |slot, now| slot.renew(holder, epoch, now, ttl_ms))
    }

    async fn release(
        &self,
        resource: &str,
        holder: DeviceId,
        epoch: Epoch,
    ) -> Result<(), LeaseCoordinatorError> {
        self.transition(resource, |slot, _| slot.release(holder, epoch))
    }

    async fn current(&self, resource: &str) -> Result<Option<Lease>, LeaseCoordinatorError> {
        Ok(self
            .slots()
            .get(resource)
            .and_then(|slot| slot.current().cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::system::ManualClock;

    fn device() -> DeviceId {
        DeviceId::from_uuid(uuid::Uuid::from_u128(7)).expect("non-nil")
    }

    #[tokio::test]
    async fn refused_transitions_on_unknown_resources_store_nothing() {
        let c = InMemoryLeaseCoordinator::new(Arc::new(ManualClock::new(1_000)));
        let d = device();
        assert!(c.renew("r", d, Epoch::new(1), 10).await.is_err());
        assert!(c.release("r", d, Epoch::new(1)).await.is_err());
        assert!(c.acquire("r", d, 0).await.is_err());
        assert!(c.slots().is_empty());
    }

    #[tokio::test]
    async fn a_clock_before_the_unix_epoch_reads_as_zero() {
        let c = InMemoryLeaseCoordinator::new(Arc::new(ManualClock::new(-5)));
        let lease = c.acquire("r", device(), 10).await.expect("acquire");
        assert_eq!(lease.expires_at_ms, 10);
    }
}

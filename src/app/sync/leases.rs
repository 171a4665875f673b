//! Execution leases and the dispatch fence, as seen from this device.

use crate::domain::ids::{Epoch, RunId};
use crate::domain::oplog::{check_dispatch, DispatchDecision, Lease};

use super::{DeviceSync, SyncError};

impl DeviceSync {
    /// The dispatch fence for running `run_id` on `resource` at `epoch`: first the
    /// committed-run oracle of the folded intent ledger (a committed run is never dispatched
    /// again), then the coordinator's current lease. Only
    /// [`DispatchDecision::Proceed`] authorises the effect.
    ///
    /// The oracle knows what the last pump took. While that pump held a chain back (see
    /// [`DeviceSync::pump`]), a run committed on that chain may be unseen, so a decision that
    /// would be `Proceed` is [`SyncError::FenceBlind`] instead; the refusals stand as they are.
    pub async fn fence_check(
        &self,
        resource: &str,
        run_id: RunId,
        epoch: Epoch,
    ) -> Result<DispatchDecision, SyncError> {
        let committed = self.state.intents().is_run_committed(&run_id);
        let current = self.leases.current(resource).await?;
        let decision = check_dispatch(
            committed,
            current.as_ref(),
            self.device,
            epoch,
            self.now_ms(),
        );
        match self.held_back.first() {
            Some(device) if decision == DispatchDecision::Proceed => {
                Err(SyncError::FenceBlind { device: *device })
            }
            _ => Ok(decision),
        }
    }

    /// Leases `resource` to this device for `ttl_ms` under a new epoch.
    pub async fn lease_acquire(&self, resource: &str, ttl_ms: u64) -> Result<Lease, SyncError> {
        Ok(self.leases.acquire(resource, self.device, ttl_ms).await?)
    }

    /// Extends this device's lease on `resource` at `epoch` by `ttl_ms` from now.
    pub async fn lease_renew(
        &self,
        resource: &str,
        epoch: Epoch,
        ttl_ms: u64,
    ) -> Result<Lease, SyncError> {
        Ok(self
            .leases
            .renew(resource, self.device, epoch, ttl_ms)
            .await?)
    }

    /// Releases this device's lease on `resource` at `epoch`.
    pub async fn lease_release(&self, resource: &str, epoch: Epoch) -> Result<(), SyncError> {
        Ok(self.leases.release(resource, self.device, epoch).await?)
    }

    /// The current lease on `resource` (live or expired), if any.
    pub async fn lease_status(&self, resource: &str) -> Result<Option<Lease>, SyncError> {
        Ok(self.leases.current(resource).await?)
    }
}

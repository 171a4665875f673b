//! Execution leases and the dispatch fence.
//!
//! A [`Lease`] gives one device the right to run a resource's effects (for example one agent's
//! runs) until `expires_at_ms`, under a fencing [`Epoch`]. Epochs strictly increase per
//! resource and are never reused: [`LeaseSlot`] remembers the highest epoch it ever issued,
//! also after a release, so a coordinator that persists the slot keeps that promise across
//! restarts.
//!
//! The transitions are pure: every method takes `now_ms`, and on error the slot is unchanged.
//!
//! - [`LeaseSlot::acquire`]: only if the slot is free or the current lease has expired
//!   (`now_ms >= expires_at_ms`); the new epoch is one past the highest ever issued.
//! - [`LeaseSlot::renew`]: only by the holder, at its epoch, before expiry; the epoch is kept.
//! - [`LeaseSlot::release`]: only by the holder at its epoch (also after expiry, so a clean
//!   hand-off is always possible); the highest epoch is kept.
//!
//! # The dispatch fence
//!
//! [`check_dispatch`] is the last check before an effect runs. It consults, in order:
//!
//! 1. the committed-run oracle: a run already committed is never dispatched again, even by the
//!    legitimate holder ([`DispatchDecision::AlreadyCommitted`]);
//! 2. the current lease's epoch: a caller whose epoch is not the current one has been fenced
//!    out ([`DispatchDecision::StaleEpoch`]);
//! 3. the holder and expiry: no lease, an expired lease, or a lease at the caller's epoch held
//!    by another device (impossible with a correct coordinator) is
//!    [`DispatchDecision::NotHeld`].
//!
//! Only [`DispatchDecision::Proceed`] authorises the effect.

use serde::{Deserialize, Serialize};

use crate::domain::ids::{DeviceId, Epoch};

/// The right to run a resource's effects, fenced by an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// What is leased (for example an agent id).
    pub resource: String,
    /// The device holding it.
    pub holder: DeviceId,
    /// Its fencing epoch.
    pub epoch: Epoch,
    /// When it expires, Unix milliseconds (exclusive: expired at `now_ms >= expires_at_ms`).
    pub expires_at_ms: u64,
}

impl Lease {
    /// Whether the lease has expired at `now_ms`.
    pub const fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms
    }

    /// Whether `device` holds this lease at `epoch` and it is still live at `now_ms`.
    pub fn is_held_by(&self, device: DeviceId, epoch: Epoch, now_ms: u64) -> bool {
        self.holder == device && self.epoch == epoch && !self.is_expired(now_ms)
    }
}

/// Why a lease transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Someone holds a live lease.
    #[error("resource is leased to {holder} at epoch {epoch} until {expires_at_ms}")]
    Held {
        /// The holder.
        holder: DeviceId,
        /// Its epoch.
        epoch: Epoch,
        /// Its expiry.
        expires_at_ms: u64,
    },
    /// There is no lease to renew or release.
    #[error("resource is not leased")]
    NotLeased,
    /// The caller is not the holder at that epoch.
    #[error("lease is held by {holder} at epoch {epoch}, not by the caller at epoch {claimed}")]
    NotHolder {
        /// The actual holder.
        holder: DeviceId,
        /// The actual epoch.
        epoch: Epoch,
        /// The epoch the caller claimed.
        claimed: Epoch,
    },
    /// The lease expired before it was renewed.
    #[error("lease at epoch {epoch} expired at {expires_at_ms}")]
    Expired {
        /// Its epoch.
        epoch: Epoch,
        /// When it expired.
        expires_at_ms: u64,
    },
    /// A zero time-to-live was requested.
    #[error("a lease needs a positive time-to-live")]
    ZeroTtl,
    /// Every epoch was issued; the resource can never be leased again.
    #[error("no epoch left to issue")]
    EpochsExhausted,
}

/// The lease state of one resource: the current lease, if any, and the highest epoch issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSlot {
    resource: String,
    current: Option<Lease>,
    highest_epoch: Epoch,
}

impl LeaseSlot {
    /// A slot that never issued a lease (the first epoch issued will be 1).
    pub fn new(resource: impl Into<String>) -> Self {
        Self::restore(resource, None, Epoch::ZERO)
    }

    /// A slot read back from storage. `highest_epoch` is raised to the current lease's epoch if
    /// it is lower, so epochs stay monotone whatever was stored.
    pub fn restore(
        resource: impl Into<String>,
        current: Option<Lease>,
        highest_epoch: Epoch,
    ) -> Self {
        let highest_epoch = current
            .as_ref()
            .map_or(highest_epoch, |l| l.epoch.max(highest_epoch));
        Self {
            resource: resource.into(),
            current,
            highest_epoch,
        }
    }

    /// The resource.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The current lease, live or expired.
    pub fn current(&self) -> Option<&Lease> {
        self.current.as_ref()
    }

    /// The current lease if it is live at `now_ms`.
    pub fn live(&self, now_ms: u64) -> Option<&Lease> {
        self.current.as_ref().filter(|l| !l.is_expired(now_ms))
    }

    /// The highest epoch ever issued.
    pub fn highest_epoch(&self) -> Epoch {
        self.highest_epoch
    }

    /// Grants `holder` a new lease for `ttl_ms` if the slot is free or expired.
    pub fn acquire(
        &mut self,
        holder: DeviceId,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Lease, LeaseError> {
        if ttl_ms == 0 {
            return Err(LeaseError::ZeroTtl);
        }
        if let Some(l) = self.live(now_ms) {
            return Err(LeaseError::Held {
                holder: l.holder,
                epoch: l.epoch,
                expires_at_ms: l.expires_at_ms,
            });
        }
        if self.highest_epoch.get() == u64::MAX {
            return Err(LeaseError::EpochsExhausted);
        }
        let lease = Lease {
            resource: self.resource.clone(),
            holder,
            epoch: self.highest_epoch.next(),
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        };
        self.highest_epoch = lease.epoch;
        self.current = Some(lease.clone());
        Ok(lease)
    }

    /// Extends the holder's live lease to `now_ms + ttl_ms`, keeping its epoch.
    pub fn renew(
        &mut self,
        holder: DeviceId,
        epoch: Epoch,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Lease, LeaseError> {
        if ttl_ms == 0 {
            return Err(LeaseError::ZeroTtl);
        }
        let current = self.held_by(holder, epoch)?;
        if current.is_expired(now_ms) {
            return Err(LeaseError::Expired {
                epoch: current.epoch,
                expires_at_ms: current.expires_at_ms,
            });
        }
        let renewed = Lease {
            expires_at_ms: now_ms.saturating_add(ttl_ms).max(current.expires_at_ms),
            ..current.clone()
        };
        self.current = Some(renewed.clone());
        Ok(renewed)
    }

    /// Ends the holder's lease; the next acquire need not wait for expiry.
    pub fn release(&mut self, holder: DeviceId, epoch: Epoch) -> Result<(), LeaseError> {
        self.held_by(holder, epoch)?;
        self.current = None;
        Ok(())
    }

    fn held_by(&self, holder: DeviceId, epoch: Epoch) -> Result<&Lease, LeaseError> {
        let current = self.current.as_ref().ok_or(LeaseError::NotLeased)?;
        if current.holder != holder || current.epoch != epoch {
            return Err(LeaseError::NotHolder {
                holder: current.holder,
                epoch: current.epoch,
                claimed: epoch,
            });
        }
        Ok(current)
    }
}

/// What the dispatch fence decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum DispatchDecision {
    /// Run the effect.
    Proceed,
    /// The run is already committed: never run it again.
    AlreadyCommitted,
    /// The caller's epoch is not the current one.
    StaleEpoch {
        /// The current epoch.
        current: Epoch,
    },
    /// The caller does not hold a live lease.
    NotHeld,
}

impl DispatchDecision {
    /// Whether the effect may run.
    pub const fn may_dispatch(self) -> bool {
        matches!(self, Self::Proceed)
    }
}

/// The dispatch fence (see the module docs): `run_already_committed` is the committed-run
/// oracle's answer, `current_lease` the linearizable read of the lease.
pub fn check_dispatch(
    run_already_committed: bool,
    current_lease: Option<&Lease>,
    my_device: DeviceId,
    my_epoch: Epoch,
    now_ms: u64,
) -> DispatchDecision {
    if run_already_committed {
        return DispatchDecision::AlreadyCommitted;
    }
    let Some(lease) = current_lease else {
        return DispatchDecision::NotHeld;
    };
    if lease.epoch != my_epoch {
        return DispatchDecision::StaleEpoch {
            current: lease.epoch,
        };
    }
    if lease.is_held_by(my_device, my_epoch, now_ms) {
        DispatchDecision::Proceed
    } else {
        DispatchDecision::NotHeld
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::oplog::test_support::dev;

    #[test]
    fn acquire_only_when_free_or_expired_with_increasing_epochs() {
        let mut s = LeaseSlot::new("milo");
        let a = s.acquire(dev(1), 0, 100).unwrap();
        assert_eq!(
            (a.epoch, a.expires_at_ms, a.holder),
            (Epoch::new(1), 100, dev(1))
        );
        assert_eq!(
            s.acquire(dev(2), 99, 100),
            Err(LeaseError::Held {
                holder: dev(1),
                epoch: Epoch::new(1),
                expires_at_ms: 100
            })
        );
        // Even the holder cannot re-acquire a live lease: it renews instead.
        assert!(matches!(
            s.acquire(dev(1), 50, 100),
            Err(LeaseError::Held { .. })
        ));
        let b = s.acquire(dev(2), 100, 100).unwrap();
        assert_eq!(b.epoch, Epoch::new(2));
        s.release(dev(2), Epoch::new(2)).unwrap();
        assert_eq!(s.current(), None);
        let c = s.acquire(dev(1), 101, 10).unwrap();
        assert_eq!(
            c.epoch,
            Epoch::new(3),
            "epochs are never reused after a release"
        );
        assert_eq!(s.highest_epoch(), Epoch::new(3));
        assert_eq!(s.resource(), "milo");
    }

    #[test]
    fn renew_only_by_the_holder_at_its_epoch_before_expiry() {
        let mut s = LeaseSlot::new("milo");
        s.acquire(dev(1), 0, 100).unwrap();
        let r = s.renew(dev(1), Epoch::new(1), 50, 100).unwrap();
        assert_eq!((r.epoch, r.expires_at_ms), (Epoch::new(1), 150));
        assert!(matches!(
            s.renew(dev(2), Epoch::new(1), 60, 100),
            Err(LeaseError::NotHolder { .. })
        ));
        assert!(matches!(
            s.renew(dev(1), Epoch::new(2), 60, 100),
            Err(LeaseError::NotHolder { .. })
        ));
        assert_eq!(
            s.renew(dev(1), Epoch::new(1), 150, 100),
            Err(LeaseError::Expired {
                epoch: Epoch::new(1),
                expires_at_ms: 150
            })
        );
        assert_eq!(
            s.renew(dev(1), Epoch::new(1), 60, 0),
            Err(LeaseError::ZeroTtl)
        );
        // A short renewal never shortens the lease.
        assert_eq!(
            s.renew(dev(1), Epoch::new(1), 60, 1).unwrap().expires_at_ms,
            150
        );
    }

    #[test]
    fn release_only_by_the_holder_and_errors_leave_the_slot_unchanged() {
        let mut s = LeaseSlot::new("milo");
        assert_eq!(s.release(dev(1), Epoch::new(1)), Err(LeaseError::NotLeased));
        assert_eq!(
            s.renew(dev(1), Epoch::new(1), 0, 10),
            Err(LeaseError::NotLeased)
        );
        s.acquire(dev(1), 0, 100).unwrap();
        let before = s.clone();
        assert!(s.release(dev(2), Epoch::new(1)).is_err());
        assert!(s.acquire(dev(2), 1, 10).is_err());
        assert_eq!(s.acquire(dev(2), 1, 0), Err(LeaseError::ZeroTtl));
        assert_eq!(s, before);
        // The holder may release after expiry.
        assert_eq!(s.release(dev(1), Epoch::new(1)), Ok(()));
    }

    #[test]
    fn restore_keeps_epochs_monotone_and_exhaustion_is_an_error() {
        let lease = Lease {
            resource: "r".into(),
            holder: dev(1),
            epoch: Epoch::new(9),
            expires_at_ms: 5,
        };
        let s = LeaseSlot::restore("r", Some(lease.clone()), Epoch::new(2));
        assert_eq!(s.highest_epoch(), Epoch::new(9));
        assert_eq!(s.live(4), Some(&lease));
        assert_eq!(s.live(5), None);
        let mut s = LeaseSlot::restore("r", None, Epoch::new(u64::MAX));
        assert_eq!(s.acquire(dev(1), 0, 1), Err(LeaseError::EpochsExhausted));
        let mut s = LeaseSlot::new("r");
        assert_eq!(
            s.acquire(dev(1), u64::MAX - 1, 10).unwrap().expires_at_ms,
            u64::MAX
        );
    }

    #[test]
    fn the_fence_reads_the_oracle_first_then_the_epoch() {
        let lease = Lease {
            resource: "milo".into(),
            holder: dev(1),
            epoch: Epoch::new(2),
            expires_at_ms: 100,
        };
        let me = dev(1);
        assert_eq!(
            check_dispatch(false, Some(&lease), me, Epoch::new(2), 50),
            DispatchDecision::Proceed
        );
        assert!(DispatchDecision::Proceed.may_dispatch());
        // Committed beats everything, even the legitimate holder.
        assert_eq!(
            check_dispatch(true, Some(&lease), me, Epoch::new(2), 50),
            DispatchDecision::AlreadyCommitted
        );
        assert_eq!(
            check_dispatch(true, None, me, Epoch::new(1), 50),
            DispatchDecision::AlreadyCommitted
        );
        assert_eq!(
            check_dispatch(false, Some(&lease), me, Epoch::new(1), 50),
            DispatchDecision::StaleEpoch {
                current: Epoch::new(2)
            }
        );
        assert_eq!(
            check_dispatch(false, None, me, Epoch::new(2), 50),
            DispatchDecision::NotHeld
        );
        assert_eq!(
            check_dispatch(false, Some(&lease), me, Epoch::new(2), 100),
            DispatchDecision::NotHeld
        );
        assert_eq!(
            check_dispatch(false, Some(&lease), dev(2), Epoch::new(2), 50),
            DispatchDecision::NotHeld
        );
        for d in [
            DispatchDecision::AlreadyCommitted,
            DispatchDecision::NotHeld,
            DispatchDecision::StaleEpoch {
                current: Epoch::new(1),
            },
        ] {
            assert!(!d.may_dispatch());
        }
        let json = serde_json::to_value(DispatchDecision::StaleEpoch {
            current: Epoch::new(3),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"decision": "stale_epoch", "current": 3})
        );
    }
}

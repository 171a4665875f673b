//! Dispatch attempts: the lease, the fence, and the one invariant that matters most here:
//! a run never gets `proceed` twice.

use rand::Rng;
use tandem::app::sync::SyncError;
use tandem::domain::oplog::{DispatchDecision, Intent, IntentStatus, Scope, Surface};

use super::world::{World, AGENT};

impl World {
    /// A dispatch attempt by device `d` on a random run, as a correct caller makes it: pump,
    /// take (or keep) the lease, ask the fence, and only on `proceed` run the effect, record
    /// the run committed and push that before anything else happens. Sometimes the device
    /// asks with an epoch from the past instead (its own or another device's). Partitioned
    /// devices do not dispatch: they could not publish the commit before their lease passes
    /// on, and no fence can stop a second dispatch of a commit nobody can see.
    pub async fn dispatch(&mut self, d: usize) -> Result<(), String> {
        if self.runs.is_empty() || self.devices[d].relay.is_partitioned() {
            return self.append(d).await;
        }
        let r = self.rng.gen_range(0..self.runs.len());
        self.pump_fully(d).await?;
        let (holder, now) = (self.devices[d].id, self.devices[d].now_ms());
        let current = self
            .shared
            .leases
            .current(AGENT)
            .await
            .map_err(|e| self.fail(format!("lease current: {e}")))?;
        let mine = current.filter(|l| l.holder == holder && !l.is_expired(self.true_ms as u64));
        let legit = match mine {
            Some(lease) => Some(lease.epoch),
            None => {
                let ttl = self.rng.gen_range(500..5_000);
                match self.devices[d].sync.lease_acquire(AGENT, ttl).await {
                    Ok(lease) => {
                        self.epochs.push(lease.epoch);
                        self.stats.leases += 1;
                        Some(lease.epoch)
                    }
                    Err(e) => {
                        self.note(format!("device {d} could not lease: {e}"));
                        None
                    }
                }
            }
        };
        // Sometimes (and always without a lease of its own) the device presents a token from
        // the past, its own or another's: the fence must see through it.
        let past = (!self.epochs.is_empty() && (legit.is_none() || self.rng.gen_bool(0.3)))
            .then(|| self.epochs[self.rng.gen_range(0..self.epochs.len())]);
        let Some(epoch) = past.or(legit) else {
            return Ok(());
        };
        let run_id = self.runs[r].id;
        let decision = match self.devices[d].sync.fence_check(AGENT, run_id, epoch).await {
            Ok(decision) => decision,
            // The pump held a runaway chain back: a commit on it may be unseen.
            Err(e @ SyncError::FenceBlind { .. }) => {
                self.stats.blind_fences += 1;
                self.note(format!("device {d} asks to dispatch run {r}: {e}"));
                return Ok(());
            }
            Err(e) => return Err(self.fail(format!("device {d} fence_check: {e}"))),
        };
        self.note(format!(
            "device {d} (clock {now}) asks to dispatch run {r} at epoch {epoch}: {decision:?}"
        ));
        match decision {
            DispatchDecision::Proceed => {}
            DispatchDecision::AlreadyCommitted => {
                self.stats.already_committed += 1;
                return Ok(());
            }
            DispatchDecision::StaleEpoch { .. } => {
                self.stats.stale_epochs += 1;
                return Ok(());
            }
            DispatchDecision::NotHeld => {
                self.stats.not_held += 1;
                return Ok(());
            }
        }
        if let Some((first, first_epoch)) = self.runs[r].proceeded {
            return Err(self.fail(format!(
                "double dispatch: run {r} got proceed from device {first} at epoch \
                 {first_epoch} and now from device {d} at epoch {epoch}"
            )));
        }
        self.runs[r].proceeded = Some((d, epoch));
        self.stats.proceeds += 1;
        let intent_id = self.runs[r].intent.clone();
        for status in [IntentStatus::Dispatched { epoch }, IntentStatus::Committed] {
            let intent = Intent {
                intent_id: intent_id.clone(),
                run_id,
                status,
            };
            let recorded = self.devices[d]
                .sync
                .record_intent(Scope::Personal, &intent)
                .await
                .map_err(|e| self.fail(format!("device {d} record_intent: {e}")))?;
            if let Some(op) = recorded {
                self.devices[d].remember(&[op], &[Surface::Intent]);
            }
        }
        self.pump_fully(d).await?;
        if self.rng.gen_bool(0.5) {
            let released = self.devices[d].sync.lease_release(AGENT, epoch).await;
            self.note(format!(
                "device {d} released epoch {epoch}: {:?}",
                released.is_ok()
            ));
        }
        Ok(())
    }
}

//! The relay operations over the directory, blocking (the async facade runs them on tokio's
//! blocking pool).
//!
//! Lock order, to stay deadlock-free across processes: a chain lock, then the roster lock.
//! Roster and checkpoint files are replaced atomically, so reading them needs no lock.

use std::path::Path;

use super::chain_file::{ChainFiles, Counters, HeldOnDisk};
use super::checkpoint_file;
use super::layout::{devices_in, Layout};
use super::lock::FileLock;
use super::manifest::Manifest;
use super::roster;
use crate::adapters::atomic_file::{remove_stale_temps, STALE_TEMP_AGE};
use crate::adapters::relay_core;
use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::{ChainHead, Checkpoint, Frontier, OpRecord};
use crate::ports::{
    BatchLimit, GcReport, PullBatch, PullCursors, PushOutcome, RelayError, RosterEntry,
};

/// The state shared by every call: where the relay lives, its segment size, read counters.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) segment_ops: u64,
    pub(crate) counters: Counters,
}

impl Inner {
    /// Opens (creating if needed) the relay in `dir`.
    pub(crate) fn open(dir: &Path, segment_ops: u64) -> Result<Self, RelayError> {
        let (layout, segment_ops) = Layout::create(dir, segment_ops)?;
        // Temp files a crash left mid-write (roster entries, manifests, base files, the
        // checkpoint).
        let chains = devices_in(&layout.chains_dir(), "")?
            .into_iter()
            .map(|device| layout.chain_dir(device))
            .flat_map(|dir| [dir.join("bases"), dir]);
        let removed: usize = [layout.root().to_path_buf(), layout.roster_dir()]
            .into_iter()
            .chain(chains)
            .map(|dir| remove_stale_temps(&dir, STALE_TEMP_AGE))
            .sum();
        if removed > 0 {
            tracing::debug!(removed, "removed temp files left by an interrupted write");
        }
        Ok(Self {
            layout,
            segment_ops,
            counters: Counters::default(),
        })
    }

    fn chain(&self, device: DeviceId) -> ChainFiles<'_> {
        ChainFiles::new(
            self.layout.chain_dir(device),
            device,
            self.segment_ops,
            &self.counters,
        )
    }

    /// Refreshes a registered device's last-seen time after a push or pull, unless it is
    /// fresher than the resolution (then the roster is only read, not rewritten);
    /// unregistered devices are left alone.
    fn touch(&self, device: DeviceId, now_ms: u64) -> Result<(), RelayError> {
        // A lock-free probe first: most pushes and pulls fall within the resolution.
        let due = roster::read(&self.layout, device)?
            .is_some_and(|mut entry| relay_core::touch_lazily(&mut entry, now_ms));
        if !due {
            return Ok(());
        }
        roster::update(&self.layout, device, |current| {
            Ok(current.and_then(|mut entry| {
                relay_core::touch_lazily(&mut entry, now_ms).then_some(entry)
            }))
        })
    }

    pub(crate) fn register(&self, device: DeviceId, now_ms: u64) -> Result<(), RelayError> {
        roster::update(&self.layout, device, |current| {
            Ok(Some(relay_core::registered(current, device, now_ms)))
        })
    }

    pub(crate) fn push(
        &self,
        device: DeviceId,
        ops: &[OpRecord],
        now_ms: u64,
    ) -> Result<PushOutcome, RelayError> {
        roster::require(&self.layout, device)?;
        relay_core::check_own_ops(device, ops)?;
        let mut outcome = PushOutcome::default();
        if !ops.is_empty() {
            let files = self.chain(device);
            files.create_dir()?;
            let _lock = FileLock::exclusive(&files.lock_path())?;
            let manifest = files.manifest()?;
            files.check_head(&manifest)?;
            let mut held = HeldOnDisk {
                files: &files,
                manifest: &manifest,
            };
            let plan = relay_core::plan_push(device, ops, &mut held)?;
            let fresh = &ops[plan.duplicates..];
            if !fresh.is_empty() {
                files.append(&manifest, fresh)?;
                let committed = Manifest {
                    head: plan.tip.head,
                    ..manifest
                };
                committed.write(&files.manifest_path())?;
            }
            outcome = PushOutcome {
                accepted: fresh.len(),
                duplicates: plan.duplicates,
            };
        }
        self.touch(device, now_ms)?;
        Ok(outcome)
    }

    pub(crate) fn pull(
        &self,
        reader: DeviceId,
        cursors: &PullCursors,
        limit: BatchLimit,
        now_ms: u64,
    ) -> Result<PullBatch, RelayError> {
        let mut batch = PullBatch::default();
        let mut fill = limit.fill();
        for device in devices_in(&self.layout.chains_dir(), "")? {
            let files = self.chain(device);
            let _lock = FileLock::shared(&files.lock_path())?;
            let manifest = files.manifest()?;
            if manifest.head.is_none() {
                continue;
            }
            let cursor = cursors.get(&device).copied().unwrap_or(Seq::ZERO);
            relay_core::check_cursor(device, manifest.base, cursor)?;
            let available = manifest.next_seq().get().saturating_sub(cursor.get());
            let available = usize::try_from(available).unwrap_or(usize::MAX);
            if available == 0 {
                continue;
            }
            let ops = files.read_verified_into(&manifest, cursor, available, &mut fill)?;
            // Fewer ops with room left means committed data has not arrived in the folder
            // yet (see `read_verified`), which no limit cut short.
            batch.more |= ops.len() < available && fill.is_full();
            if !ops.is_empty() {
                batch.ops.insert(device, ops);
            }
        }
        self.touch(reader, now_ms)?;
        Ok(batch)
    }

    pub(crate) fn ack(
        &self,
        device: DeviceId,
        frontier: &Frontier,
        now_ms: u64,
    ) -> Result<(), RelayError> {
        roster::update(&self.layout, device, |current| {
            let mut entry = current.ok_or(RelayError::NotRegistered(device))?;
            relay_core::merge_ack(&mut entry.acked, frontier);
            relay_core::touch(&mut entry, now_ms);
            Ok(Some(entry))
        })
    }

    pub(crate) fn roster(&self) -> Result<Vec<RosterEntry>, RelayError> {
        roster::list(&self.layout)
    }

    pub(crate) fn stable_frontier(
        &self,
        now_ms: u64,
        horizon_ms: u64,
    ) -> Result<Frontier, RelayError> {
        let entries = roster::list(&self.layout)?;
        Ok(relay_core::stable_frontier(&entries, now_ms, horizon_ms))
    }

    pub(crate) fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), RelayError> {
        checkpoint.verify_id()?;
        checkpoint_file::put(&self.layout, checkpoint)
    }

    pub(crate) fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, RelayError> {
        checkpoint_file::read(&self.layout)
    }

    pub(crate) fn gc(&self, now_ms: u64, horizon_ms: u64) -> Result<GcReport, RelayError> {
        let mut report = GcReport::default();
        let Some(checkpoint) = checkpoint_file::read(&self.layout)? else {
            return Ok(report);
        };
        let entries = roster::list(&self.layout)?;
        let stable = relay_core::stable_frontier(&entries, now_ms, horizon_ms);
        for (device, cut) in relay_core::gc_cuts(checkpoint.frontier(), &stable) {
            if let Some((deleted, first_kept)) = self.gc_chain(device, cut)? {
                report.deleted += deleted;
                report.first_kept.insert(device, first_kept);
            }
        }
        Ok(report)
    }

    /// Deletes the whole segments of `device`'s chain that end at or before `cut`, except the
    /// one holding the head, after recording the new base in the base file. Returns
    /// how many ops went and the first seq kept, or `None` if nothing could go.
    fn gc_chain(
        &self,
        device: DeviceId,
        cut: ChainHead,
    ) -> Result<Option<(usize, Seq)>, RelayError> {
        let files = self.chain(device);
        if !files.exists() {
            return Ok(None);
        }
        let _lock = FileLock::exclusive(&files.lock_path())?;
        let manifest = files.manifest()?;
        let first = manifest.first_stored().get();
        let Some(head) = manifest.head else {
            return Ok(None);
        };
        if cut.seq.get() < first || cut.seq > head.seq {
            return Ok(None);
        }
        // Whole segments only, and never the head's: the chain's device reads its head before
        // appending, also on a synced folder that has the deletions but not yet the base file.
        let after_cut = cut.seq.get().saturating_add(1);
        let head_segment = head.seq.get() - head.seq.get() % self.segment_ops;
        let first_kept = (after_cut - after_cut % self.segment_ops).min(head_segment);
        if first_kept <= first {
            return Ok(None);
        }
        // The new base and everything up to the cut, verified; the cut must be our op.
        let new_base = Seq::new(first_kept - 1);
        let span = usize::try_from(cut.seq.get() - new_base.get() + 1).unwrap_or(usize::MAX);
        let ops = files.read_verified(&manifest, new_base, span)?;
        let bases = files.bases();
        match (ops.first(), ops.last()) {
            (Some(base), Some(last)) if ops.len() == span && last.op_id() == cut.op_id => {
                // A base file, not the manifest: only the chain's own device writes that.
                bases.write(device, ChainHead::of(base))?;
            }
            _ => return Ok(None),
        }
        files.delete_segments_below(first_kept)?;
        bases.remove_older_than(new_base)?;
        let deleted = usize::try_from(first_kept - first).unwrap_or(usize::MAX);
        Ok(Some((deleted, Seq::new(first_kept))))
    }
}

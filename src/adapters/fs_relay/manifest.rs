//! A chain's commit points, kept in two files so that no file ever has two writers:
//!
//! - `manifest.json`, written only by pushes of the chain's own device: the head (bytes past
//!   it in the segments are a torn tail), and the compaction base as that device last read it.
//! - `base.json`, written only by gc: the last op gc deleted (segments below the first stored
//!   seq are garbage).
//!
//! A reader joins the two: the newer base wins, and a manifest whose head is behind the base
//! file has not caught up yet (a synced folder delivers files in any order), so the chain is
//! read as ending at the base until it does. On a folder synced between machines, one
//! machine's gc and the owner's pushes on another therefore never rewrite the same file.
//! Format-2 relays kept the base in the manifest only; it is still read.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{corrupt, json_problem};
use super::files::{read_checked, write_checked};
use crate::adapters::relay_core;
use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::ChainHead;
use crate::ports::RelayError;

/// What a chain holds: ops `first_stored()..=head.seq`, continuing from `base`. Also the form
/// of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    /// The chain's device.
    pub(crate) device: DeviceId,
    /// The last op deleted by gc (the newer of the base file's and the manifest's own).
    pub(crate) base: Option<ChainHead>,
    /// The last op committed (equal to `base` when every op was compacted, as format-2 gc
    /// could, or while the manifest is behind the base file).
    pub(crate) head: Option<ChainHead>,
}

impl Manifest {
    /// The manifest of a chain nothing was pushed to.
    pub(crate) const fn empty(device: DeviceId) -> Self {
        Self {
            device,
            base: None,
            head: None,
        }
    }

    /// The first seq still stored.
    pub(crate) fn first_stored(&self) -> Seq {
        relay_core::first_stored(self.base)
    }

    /// The seq the next op gets.
    pub(crate) fn next_seq(&self) -> Seq {
        relay_core::next_seq(self.head)
    }

    /// Reads and checks the manifest at `path` and joins the base file at `base_path` (see the
    /// module docs); absent files are an empty chain and no gc yet.
    pub(crate) fn read(
        path: &Path,
        base_path: &Path,
        device: DeviceId,
    ) -> Result<Self, RelayError> {
        let mut manifest = match read_checked(path)? {
            Some(bytes) => {
                let manifest: Self =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(path, json_problem(&e)))?;
                manifest.check(device).map_err(|what| corrupt(path, what))?;
                manifest
            }
            None => Self::empty(device),
        };
        if let Some(bytes) = read_checked(base_path)? {
            let file: BaseFile =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(base_path, json_problem(&e)))?;
            if file.device != device || file.base.hlc.device != device {
                return Err(corrupt(base_path, "the base file names another device"));
            }
            manifest
                .join_base(file.base)
                .map_err(|what| corrupt(base_path, what))?;
        }
        Ok(manifest)
    }

    /// Replaces the manifest at `path` atomically. Only the chain's own pushes call this.
    pub(crate) fn write(&self, path: &Path) -> Result<(), RelayError> {
        let bytes = serde_json::to_vec(self).map_err(|e| corrupt(path, json_problem(&e)))?;
        write_checked(path, &bytes)
    }

    /// Replaces the base file at `path` atomically with `base`. Only gc calls this.
    pub(crate) fn write_base(
        path: &Path,
        device: DeviceId,
        base: ChainHead,
    ) -> Result<(), RelayError> {
        let file = BaseFile { device, base };
        let bytes = serde_json::to_vec(&file).map_err(|e| corrupt(path, json_problem(&e)))?;
        write_checked(path, &bytes)
    }

    /// Takes `base` from the base file if it is newer than the manifest's own.
    fn join_base(&mut self, base: ChainHead) -> Result<(), &'static str> {
        match self.base {
            Some(own) if own.seq > base.seq => return Ok(()),
            Some(own) if own.seq == base.seq => {
                return if own == base {
                    Ok(())
                } else {
                    Err("the base file and the manifest name different ops at one seq")
                };
            }
            _ => {}
        }
        match self.head {
            Some(head) if head.seq > base.seq => {}
            Some(head) if head.seq == base.seq && head != base => {
                return Err("the base file and the manifest's head differ at one seq");
            }
            // The manifest has not caught up with the gc that wrote the base file.
            _ => self.head = Some(base),
        }
        self.base = Some(base);
        Ok(())
    }

    fn check(&self, device: DeviceId) -> Result<(), &'static str> {
        if self.device != device {
            return Err("the manifest names another device");
        }
        let foreign = |h: &Option<ChainHead>| h.is_some_and(|h| h.hlc.device != device);
        if foreign(&self.base) || foreign(&self.head) {
            return Err("a head stamped by another device");
        }
        match (self.base, self.head) {
            (Some(_), None) => Err("a compaction base without a head"),
            (Some(b), Some(h)) if h.seq < b.seq || (h.seq == b.seq && h != b) => {
                Err("the head is behind the compaction base")
            }
            _ => Ok(()),
        }
    }
}

/// The form of `base.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaseFile {
    /// The chain's device.
    device: DeviceId,
    /// The last op deleted by gc.
    base: ChainHead,
}

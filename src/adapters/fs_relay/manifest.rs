//! A chain's manifest: its compaction base and head, replaced atomically. It is the commit
//! point of a push (segment bytes past the head are a torn tail) and of a gc (segments below
//! the first stored seq are garbage).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{corrupt, json_problem};
use super::files::{read_checked, write_checked};
use crate::adapters::relay_core;
use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::ChainHead;
use crate::ports::RelayError;

/// What a chain holds: ops `first_stored()..=head.seq`, continuing from `base`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    /// The chain's device.
    pub(crate) device: DeviceId,
    /// The last op deleted by gc.
    pub(crate) base: Option<ChainHead>,
    /// The last op committed (equal to `base` when every op was compacted).
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

    /// Reads and checks the manifest at `path`; an absent file is an empty chain.
    pub(crate) fn read(path: &Path, device: DeviceId) -> Result<Self, RelayError> {
        let Some(bytes) = read_checked(path)? else {
            return Ok(Self::empty(device));
        };
        let manifest: Self =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(path, json_problem(&e)))?;
        manifest.check(device).map_err(|what| corrupt(path, what))?;
        Ok(manifest)
    }

    /// Replaces the manifest at `path` atomically.
    pub(crate) fn write(&self, path: &Path) -> Result<(), RelayError> {
        let bytes = serde_json::to_vec(self).map_err(|e| corrupt(path, json_problem(&e)))?;
        write_checked(path, &bytes)
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

//! A chain's commit points, kept in files that never have two writers:
//!
//! - `manifest.json`, written only by pushes of the chain's own device: the head (bytes past
//!   it in the segments are a torn tail), and the compaction base as that device last read it.
//! - `bases/<seq>.json`, written only by gc, one immutable file per compaction base (the last
//!   op gc deleted; segments below the first stored seq are garbage). A base file is named by
//!   its seq and its bytes follow from the op alone, so two gcs recording the same base write
//!   identical files, and two gcs recording different bases write different files: a sync
//!   keeps both, and the newest wins. gc removes the base files its new base supersedes.
//!
//! A reader joins the manifest with the newest base file: the newer base wins, and a manifest
//! whose head is behind the base file has not caught up yet (a synced folder delivers files in
//! any order), so the chain is read as ending at the base until it does. On a folder synced
//! between machines, gc on one machine and the owner's pushes on another therefore never
//! rewrite the same file, and neither do two gcs. Format-2 relays kept the base in the
//! manifest only, and format-3 relays in a single `base.json`; both are still read.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{corrupt, io_err, json_problem};
use super::files::{
    numbered_files, read_checked, remove_if_present, sync_dir, write_checked, NUMBER_DIGITS,
};
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

    /// Reads and checks the manifest at `path` and joins the newest of `bases` (see the module
    /// docs); absent files are an empty chain and no gc yet.
    pub(crate) fn read(
        path: &Path,
        bases: &BaseFiles,
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
        for (base, file) in bases.newest(device)? {
            manifest
                .join_base(base)
                .map_err(|what| corrupt(&file, what))?;
        }
        Ok(manifest)
    }

    /// Replaces the manifest at `path` atomically. Only the chain's own pushes call this.
    pub(crate) fn write(&self, path: &Path) -> Result<(), RelayError> {
        let bytes = serde_json::to_vec(self).map_err(|e| corrupt(path, json_problem(&e)))?;
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

/// The form of a base file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaseFile {
    /// The chain's device.
    device: DeviceId,
    /// The last op deleted by gc.
    base: ChainHead,
}

/// A chain's base files: `bases/<seq, 20 digits>.json`, and the single `base.json` of format 3.
#[derive(Debug)]
pub(crate) struct BaseFiles {
    chain: PathBuf,
    dir: PathBuf,
    legacy: PathBuf,
}

impl BaseFiles {
    /// The base files of the chain stored in `chain_dir`.
    pub(crate) fn new(chain_dir: &Path) -> Self {
        Self {
            chain: chain_dir.to_path_buf(),
            dir: chain_dir.join("bases"),
            legacy: chain_dir.join("base.json"),
        }
    }

    /// The file recording a base at `seq`.
    fn path(&self, seq: Seq) -> PathBuf {
        self.dir
            .join(format!("{:0width$}.json", seq.get(), width = NUMBER_DIGITS))
    }

    /// Records `base` in a file of its own. Only gc calls this; a file already there for the
    /// same seq holds the same bytes (the chain has one op per seq).
    pub(crate) fn write(&self, device: DeviceId, base: ChainHead) -> Result<(), RelayError> {
        match fs::create_dir(&self.dir) {
            // The new directory's entry must survive a crash with the file in it.
            Ok(()) => sync_dir(&self.chain)?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create directory", &self.dir)(e)),
        }
        let path = self.path(base.seq);
        let file = BaseFile { device, base };
        let bytes = serde_json::to_vec(&file).map_err(|e| corrupt(&path, json_problem(&e)))?;
        write_checked(&path, &bytes)
    }

    /// Removes the base files older than `seq` (and format 3's `base.json`, which a base at
    /// `seq` supersedes), once a base at `seq` is recorded. The removals are not synced: a
    /// superseded file that comes back after a crash is read and loses to the newer one.
    pub(crate) fn remove_older_than(&self, seq: Seq) -> Result<(), RelayError> {
        for (_, path) in self.listed()?.into_iter().filter(|(s, _)| *s < seq) {
            remove_if_present(&path)?;
        }
        remove_if_present(&self.legacy)
    }

    /// The newest base recorded in `bases/` (a file listed but gone by the time it is read,
    /// as a synced folder may do, gives way to the next newest) and the one in format 3's
    /// `base.json`, each with its file. Each is checked: a digest that does not match, another
    /// device, or a name that is not the base's own seq is [`RelayError::Corrupt`].
    fn newest(&self, device: DeviceId) -> Result<Vec<(ChainHead, PathBuf)>, RelayError> {
        let mut found = Vec::with_capacity(2);
        let mut listed = self.listed()?;
        while let Some((seq, path)) = listed.pop() {
            if let Some(base) = read_base(&path, device)? {
                if base.seq != seq {
                    return Err(corrupt(&path, "the base file's name is not its base's seq"));
                }
                found.push((base, path));
                break;
            }
        }
        if let Some(base) = read_base(&self.legacy, device)? {
            found.push((base, self.legacy.clone()));
        }
        Ok(found)
    }

    /// The files in `bases/` named as base files, oldest first.
    fn listed(&self) -> Result<Vec<(Seq, PathBuf)>, RelayError> {
        let listed = numbered_files(&self.dir, &[".json"])?;
        Ok(listed.into_iter().map(|(n, p)| (Seq::new(n), p)).collect())
    }
}

/// Reads the base file at `path`; `None` if it does not exist.
fn read_base(path: &Path, device: DeviceId) -> Result<Option<ChainHead>, RelayError> {
    let Some(bytes) = read_checked(path)? else {
        return Ok(None);
    };
    let file: BaseFile =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(path, json_problem(&e)))?;
    if file.device != device || file.base.hlc.device != device {
        return Err(corrupt(path, "the base file names another device"));
    }
    Ok(Some(file.base))
}

//! Where everything lives in the relay directory, and the format file that fixes the segment
//! size for every process sharing it.
//!
//! ```text
//! <dir>/relay.json                 format: {"format":"tandem-fs-relay","version":4,"segment_ops":N}
//! <dir>/relay.lock                 serialises creation of relay.json
//! <dir>/roster/<device>.json       one roster entry per device (atomically replaced)
//! <dir>/roster.lock                serialises roster read-modify-writes
//! <dir>/checkpoint.json            the latest checkpoint (atomically replaced; see `checkpoint_file`)
//! <dir>/checkpoint.lock            serialises checkpoint puts
//! <dir>/chains/<device>/lock       the chain's lock: exclusive to push or gc, shared to read
//! <dir>/chains/<device>/manifest.json   the head: a push's commit point (the device's only)
//! <dir>/chains/<device>/bases/<seq, 20 digits>.json   a compaction base: gc's commit point
//!                                  (gc's only; one immutable file per base, the newest wins)
//! <dir>/chains/<device>/<first seq, 20 digits>.log   append-only segment: binary op records
//! <dir>/chains/<device>/<first seq, 20 digits>.idx   fixed-width index: u64 BE end offsets
//! ```
//!
//! The small files (`relay.json`, roster entries, manifests, base files, the checkpoint) are
//! digest-checked JSON (see the `files` module), except the checkpoint, whose digest-checked
//! body is a JSON header followed by the raw state bytes; segment records are ops in their
//! binary form ([`crate::domain::oplog::op_codec`]), each exactly as encoded.
//!
//! Version 1 wrote segment records as JSON lines and the checkpoint as one JSON document;
//! versions 1 and 2 had gc record the compaction base in the manifest, so gc and the chain's
//! own pushes rewrote one file; version 3 had every gc rewrite one `base.json` per chain, so
//! two gcs on machines sharing a synced folder could leave the older base behind. An older
//! directory is upgraded in place when opened: its `relay.json` is rewritten as version 4 (so
//! older builds refuse it instead of misreading binary records or missing a base file), and
//! its JSON records, JSON checkpoint, manifest bases and `base.json` files are still read.
//!
//! Segment `k` holds seqs `k * segment_ops ..= (k + 1) * segment_ops - 1`, so the segment and
//! index slot of any seq are computed, never searched for.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{corrupt, json_problem, FsRelayError};
use super::files::{ensure_dir, list_named, read_checked, write_checked};
use super::lock::FileLock;
use crate::domain::ids::DeviceId;
use crate::ports::RelayError;

/// The format name written into `relay.json`.
const FORMAT_NAME: &str = "tandem-fs-relay";
/// The on-disk format version this code writes.
const FORMAT_VERSION: u32 = 4;
/// The older versions this code reads (and upgrades when opened): 1 wrote JSON records, 2
/// kept the compaction base in the manifest, 3 in one `base.json` per chain.
const OLDER_VERSIONS: [u32; 3] = [1, 2, 3];
/// The largest segment size accepted from a format file.
pub(crate) const MAX_SEGMENT_OPS: u64 = 1 << 20;

/// Paths inside one relay directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FormatFile {
    format: String,
    version: u32,
    segment_ops: u64,
}

impl Layout {
    /// Creates the directory skeleton if missing and returns the segment size in force: the
    /// one recorded in `relay.json`, or `segment_ops` when this call creates it.
    pub(crate) fn create(root: &Path, segment_ops: u64) -> Result<(Self, u64), RelayError> {
        let layout = Self {
            root: root.to_path_buf(),
        };
        ensure_dir(root)?;
        ensure_dir(&layout.roster_dir())?;
        ensure_dir(&layout.chains_dir())?;
        let path = root.join("relay.json");
        let _lock = FileLock::exclusive(&root.join("relay.lock"))?;
        let format = match read_checked(&path)? {
            Some(bytes) => serde_json::from_slice::<FormatFile>(&bytes)
                .map_err(|e| corrupt(&path, json_problem(&e)))?,
            None => {
                if !(1..=MAX_SEGMENT_OPS).contains(&segment_ops) {
                    return Err(FsRelayError::Options("segment_ops must be 1 to 1048576").into());
                }
                let format = FormatFile {
                    format: FORMAT_NAME.to_owned(),
                    version: FORMAT_VERSION,
                    segment_ops,
                };
                let bytes =
                    serde_json::to_vec(&format).map_err(|e| corrupt(&path, json_problem(&e)))?;
                write_checked(&path, &bytes)?;
                format
            }
        };
        let known = format.version == FORMAT_VERSION || OLDER_VERSIONS.contains(&format.version);
        if format.format != FORMAT_NAME || !known {
            return Err(corrupt(&path, "not a supported relay format"));
        }
        if !(1..=MAX_SEGMENT_OPS).contains(&format.segment_ops) {
            return Err(corrupt(&path, "segment size out of range"));
        }
        if format.version != FORMAT_VERSION {
            let upgraded = FormatFile {
                version: FORMAT_VERSION,
                ..format
            };
            let bytes =
                serde_json::to_vec(&upgraded).map_err(|e| corrupt(&path, json_problem(&e)))?;
            write_checked(&path, &bytes)?;
            tracing::info!(
                relay = %root.display(),
                from = format.version,
                to = FORMAT_VERSION,
                "upgraded the relay directory's format"
            );
            return Ok((layout, upgraded.segment_ops));
        }
        Ok((layout, format.segment_ops))
    }

    /// The relay directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn roster_dir(&self) -> PathBuf {
        self.root.join("roster")
    }

    pub(crate) fn roster_file(&self, device: DeviceId) -> PathBuf {
        self.roster_dir().join(format!("{device}.json"))
    }

    pub(crate) fn roster_lock(&self) -> PathBuf {
        self.root.join("roster.lock")
    }

    pub(crate) fn checkpoint_file(&self) -> PathBuf {
        self.root.join("checkpoint.json")
    }

    pub(crate) fn checkpoint_lock(&self) -> PathBuf {
        self.root.join("checkpoint.lock")
    }

    pub(crate) fn chains_dir(&self) -> PathBuf {
        self.root.join("chains")
    }

    pub(crate) fn chain_dir(&self, device: DeviceId) -> PathBuf {
        self.chains_dir().join(device.to_string())
    }
}

/// The devices named by the entries of `dir` (`<device><suffix>`), sorted. Hidden and temp
/// files, and names that are not exactly a device id in canonical form, are skipped.
pub(crate) fn devices_in(dir: &Path, suffix: &str) -> Result<Vec<DeviceId>, RelayError> {
    let listed = list_named(dir, |name| {
        let stem = name.strip_suffix(suffix)?;
        DeviceId::parse(stem)
            .ok()
            .filter(|device| device.to_string() == stem)
    })?;
    Ok(listed.into_iter().map(|(device, _)| device).collect())
}

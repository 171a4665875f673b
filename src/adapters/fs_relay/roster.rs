//! The roster on disk: one small JSON file per device, replaced atomically, so devices acking
//! at the same time never rewrite each other's entries and readers need no lock.

use super::error::{corrupt, json_problem};
use super::files::{read_checked, write_checked};
use super::layout::{devices_in, Layout};
use super::lock::FileLock;
use crate::domain::ids::DeviceId;
use crate::ports::{RelayError, RosterEntry};

/// Reads `device`'s entry; `None` if it never registered.
pub(crate) fn read(layout: &Layout, device: DeviceId) -> Result<Option<RosterEntry>, RelayError> {
    let path = layout.roster_file(device);
    let Some(bytes) = read_checked(&path)? else {
        return Ok(None);
    };
    let entry: RosterEntry =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, json_problem(&e)))?;
    if entry.device != device {
        return Err(corrupt(&path, "the entry names another device"));
    }
    if entry.registered_at_ms > entry.last_seen_ms {
        return Err(corrupt(&path, "registered after last seen"));
    }
    Ok(Some(entry))
}

/// Fails with [`RelayError::NotRegistered`] unless `device` has an entry.
pub(crate) fn require(layout: &Layout, device: DeviceId) -> Result<RosterEntry, RelayError> {
    read(layout, device)?.ok_or(RelayError::NotRegistered(device))
}

/// Every entry, by device.
pub(crate) fn list(layout: &Layout) -> Result<Vec<RosterEntry>, RelayError> {
    let mut entries = Vec::new();
    for device in devices_in(&layout.roster_dir(), ".json")? {
        // An entry listed a moment ago cannot disappear (entries are never deleted), but a
        // concurrent rename may briefly hide it on some file systems: skip rather than fail.
        if let Some(entry) = read(layout, device)? {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// Read-modify-writes `device`'s entry under the roster lock. `change` gets the current entry
/// and returns the new one (`None`: leave the file as it is).
pub(crate) fn update(
    layout: &Layout,
    device: DeviceId,
    change: impl FnOnce(Option<RosterEntry>) -> Result<Option<RosterEntry>, RelayError>,
) -> Result<(), RelayError> {
    let _lock = FileLock::exclusive(&layout.roster_lock())?;
    let current = read(layout, device)?;
    let Some(next) = change(current.clone())? else {
        return Ok(());
    };
    if current.as_ref() == Some(&next) {
        return Ok(());
    }
    let path = layout.roster_file(device);
    let bytes = serde_json::to_vec(&next).map_err(|e| corrupt(&path, json_problem(&e)))?;
    write_checked(&path, &bytes)
}

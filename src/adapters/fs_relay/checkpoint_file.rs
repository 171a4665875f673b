//! The latest checkpoint on disk: one file, replaced atomically when a checkpoint covering
//! more ops arrives. Read back as untrusted bytes: its id is re-checked on every read.

use super::error::{corrupt, json_problem};
use super::files::{read_checked, write_checked};
use super::layout::Layout;
use super::lock::FileLock;
use crate::adapters::relay_core;
use crate::domain::oplog::Checkpoint;
use crate::ports::RelayError;

/// The stored checkpoint, if any, with its id verified.
pub(crate) fn read(layout: &Layout) -> Result<Option<Checkpoint>, RelayError> {
    let path = layout.checkpoint_file();
    let Some(bytes) = read_checked(&path)? else {
        return Ok(None);
    };
    let checkpoint: Checkpoint =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, json_problem(&e)))?;
    checkpoint
        .verify_id()
        .map_err(|e| corrupt(&path, format!("stored checkpoint does not verify: {e}")))?;
    Ok(Some(checkpoint))
}

/// Stores `checkpoint` (already verified) if it supersedes the stored one. A stored file that
/// no longer reads back is replaced.
pub(crate) fn put(layout: &Layout, checkpoint: &Checkpoint) -> Result<(), RelayError> {
    let _lock = FileLock::exclusive(&layout.checkpoint_lock())?;
    let held = match read(layout) {
        Ok(held) => held,
        Err(RelayError::Corrupt(_)) => None,
        Err(e) => return Err(e),
    };
    if !relay_core::supersedes(checkpoint, held.as_ref()) {
        return Ok(());
    }
    let path = layout.checkpoint_file();
    let bytes = serde_json::to_vec(checkpoint).map_err(|e| corrupt(&path, json_problem(&e)))?;
    write_checked(&path, &bytes)
}

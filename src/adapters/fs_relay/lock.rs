//! Cross-process locks on lock files (`flock`-style advisory locks through [`File::lock`]).
//!
//! Writers of a file group hold its lock exclusively; readers that must not see a writer's
//! intermediate state hold it shared. The lock is released when the guard drops (closing the
//! file releases it too, so a crashed process never leaves a lock behind).

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::error::io_err;
use crate::ports::RelayError;

/// A held lock; released on drop.
#[derive(Debug)]
pub(crate) struct FileLock {
    file: File,
}

impl FileLock {
    /// Blocks until `path` (created if missing) is locked exclusively.
    pub(crate) fn exclusive(path: &Path) -> Result<Self, RelayError> {
        let file = open(path)?;
        file.lock().map_err(io_err("lock", path))?;
        Ok(Self { file })
    }

    /// Blocks until `path` (created if missing) is locked shared.
    pub(crate) fn shared(path: &Path) -> Result<Self, RelayError> {
        let file = open(path)?;
        file.lock_shared().map_err(io_err("lock (shared)", path))?;
        Ok(Self { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file releases the lock anyway; unlocking first only makes it prompt.
        let _ = self.file.unlock();
    }
}

fn open(path: &Path) -> Result<File, RelayError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err("open lock file", path))
}

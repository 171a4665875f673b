//! The base checkpoint's state in a file beside a file-backed journal's database.
//!
//! A checkpoint's state can be tens of megabytes. Kept inline, every install would write it
//! through SQLite's page cache and WAL and copy it again at the next WAL checkpoint. Instead
//! the journal keeps it in `<database file name>-base/<checkpoint id>.state`, written
//! atomically (temp file, fsync, rename, directory fsync) *before* the transaction that makes
//! it the base commits, and the `oplog_base` row records that the state is in a file
//! (`state_file = 1`). A crash between the two leaves a file no row names; it is removed at the
//! next install or open, as is the previous base's file once a new base has committed. Temp
//! files of interrupted writes go once they are an hour old, as in the file relay.
//!
//! The file holds exactly [`Checkpoint::state_bytes`] (sealed under E2E). Nothing here checks
//! it: whoever reads the base verifies it against the checkpoint's state hash, so a damaged
//! file is caught there.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::adapters::atomic_file::{self, FileStepError};
use crate::domain::oplog::{Checkpoint, CheckpointId};
use crate::ports::{JournalError, StoreError};

const SUFFIX: &str = ".state";

/// The directory of base-state files of one database file.
#[derive(Debug, Clone)]
pub(super) struct BaseFiles {
    dir: PathBuf,
}

impl BaseFiles {
    /// The directory beside the database file `db`.
    pub(super) fn beside(db: &Path) -> Self {
        let mut name = db.file_name().unwrap_or_default().to_os_string();
        name.push("-base");
        Self {
            dir: db.with_file_name(name),
        }
    }

    fn path_of(&self, id: CheckpointId) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }

    /// Writes `cp`'s state durably under its id, replacing any earlier copy.
    pub(super) fn write(&self, cp: &Checkpoint) -> Result<(), JournalError> {
        fs::create_dir_all(&self.dir)
            .map_err(atomic_file::step("create directory", &self.dir))
            .map_err(store_error)?;
        atomic_file::replace(&self.path_of(cp.id()), cp.state_bytes()).map_err(store_error)
    }

    /// Makes sure a complete copy of `cp`'s state is on disk: one written by [`Self::write`]
    /// (a staging) is complete, because it only appears under its name after its fsync.
    pub(super) fn ensure(&self, cp: &Checkpoint) -> Result<(), JournalError> {
        if self.path_of(cp.id()).is_file() {
            return Ok(());
        }
        self.write(cp)
    }

    /// The state stored for `id`.
    pub(super) fn read(&self, id: CheckpointId) -> Result<Vec<u8>, JournalError> {
        let path = self.path_of(id);
        fs::read(&path).map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                JournalError::Store(StoreError::Corrupt(format!(
                    "the base checkpoint's state file {} is missing",
                    path.display()
                )))
            } else {
                store_error(atomic_file::step("read", &path)(e))
            }
        })
    }

    /// Whether the directory exists (it is created by the first install or staging).
    pub(super) fn exist(&self) -> bool {
        self.dir.is_dir()
    }

    /// Removes every state file but `keep`'s, and temp files old enough to be a crash's
    /// leftovers (a younger one may be a staging in progress, which runs outside the journal's
    /// write lock). Best effort: a file that cannot be removed now is tried again next time.
    pub(super) fn discard_except(&self, keep: Option<CheckpointId>) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let keep = keep.map(|id| format!("{id}{SUFFIX}"));
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(SUFFIX) && keep.as_deref() != Some(name) {
                if let Err(e) = fs::remove_file(entry.path()) {
                    tracing::debug!(file = name, error = %e, "could not remove a stale base state file");
                }
            }
        }
        atomic_file::remove_stale_temps(&self.dir, atomic_file::STALE_TEMP_AGE);
    }
}

fn store_error(e: FileStepError) -> JournalError {
    let kind = if e.source.kind() == ErrorKind::StorageFull {
        StoreError::DiskFull
    } else {
        StoreError::Backend(Box::new(e))
    };
    JournalError::Store(kind)
}

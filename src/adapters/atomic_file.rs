//! Replacing a file atomically on a local file system: write a temp file beside it, fsync it,
//! rename it over the target, fsync the directory. Readers see the old or the new content,
//! never a mix, and once a call returns the new content survives a crash.
//!
//! Shared by adapters that keep files of their own (the file relay's small files, the SQLite
//! journal's base checkpoint state). Errors name the step and the path; callers wrap them in
//! their own error types.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Prefix of temp files: directory listings skip names starting with a dot.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A failed file-system step: what was attempted, on which path.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub(crate) struct FileStepError {
    /// The step (`create`, `write`, `fsync`, `rename into`, `fsync directory`).
    pub(crate) op: &'static str,
    /// The path it was attempted on.
    pub(crate) path: PathBuf,
    /// The underlying error.
    #[source]
    pub(crate) source: io::Error,
}

/// Wraps an error of `op` on `path`.
pub(crate) fn step(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileStepError {
    let path = path.to_path_buf();
    move |source| FileStepError { op, path, source }
}

/// Replaces `path` with `bytes` atomically (see the module docs). On error the temp file is
/// removed and `path` is unchanged.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> Result<(), FileStepError> {
    let dir = parent(path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{name}-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(step("create", &temp))?;
        file.write_all(bytes).map_err(step("write", &temp))?;
        file.sync_all().map_err(step("fsync", &temp))?;
        drop(file);
        fs::rename(&temp, path).map_err(step("rename into", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Makes directory entries (creations, renames, removals) in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), FileStepError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(step("fsync directory", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Temp files older than this are leftovers of a crash: no atomic write takes that long.
pub(crate) const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);

/// Removes the temp files [`replace`] left in `dir` that were last modified more than `age`
/// ago (its write was interrupted before the rename); younger ones may belong to a write still
/// in progress, possibly in another process. Best effort: a file that cannot be removed now is
/// left for the next call. Returns how many were removed.
pub(crate) fn remove_stale_temps(dir: &Path, age: Duration) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX)) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|elapsed| elapsed > age);
        if old && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_swaps_the_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        replace(&path, b"one").unwrap();
        replace(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_failed_replace_names_the_step_and_keeps_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("f");
        let err = replace(&missing, b"x").unwrap_err();
        assert_eq!(err.op, "create");
        assert!(!missing.exists());
    }
}

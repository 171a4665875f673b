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

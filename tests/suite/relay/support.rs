//! Fixtures for the relay tests: relays in temp dirs, directory copies and chain file paths.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use tandem::adapters::fs_relay::{FsRelay, FsRelayOptions};
use tandem::domain::DeviceId;

/// A relay directory that is removed on drop.
pub struct TempDir {
    dir: tempfile::TempDir,
}

impl TempDir {
    /// A new, empty directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Opens (creating) a relay here with `segment_ops`.
    pub fn relay(&self, segment_ops: u64) -> FsRelay {
        FsRelay::open_with(self.path(), FsRelayOptions { segment_ops }).expect("open relay")
    }
}

/// Copies the regular files of `from` into `to`, recursively (lock and temp files included).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create copy dir");
    for entry in fs::read_dir(from).expect("list dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The directory holding `device`'s chain.
pub fn chain_dir(root: &Path, device: DeviceId) -> PathBuf {
    root.join("chains").join(device.to_string())
}

/// The log of the segment of `device`'s chain that starts at `first`.
pub fn segment_log(root: &Path, device: DeviceId, first: u64) -> PathBuf {
    chain_dir(root, device).join(format!("{first:020}.log"))
}

/// The index of the segment of `device`'s chain that starts at `first`.
pub fn segment_idx(root: &Path, device: DeviceId, first: u64) -> PathBuf {
    chain_dir(root, device).join(format!("{first:020}.idx"))
}

/// `device`'s chain manifest.
pub fn manifest(root: &Path, device: DeviceId) -> PathBuf {
    chain_dir(root, device).join("manifest.json")
}

/// The file recording a compaction base at `seq` on `device`'s chain (written by gc).
pub fn base_file(root: &Path, device: DeviceId, seq: u64) -> PathBuf {
    chain_dir(root, device)
        .join("bases")
        .join(format!("{seq:020}.json"))
}

/// `device`'s roster entry.
pub fn roster_file(root: &Path, device: DeviceId) -> PathBuf {
    root.join("roster").join(format!("{device}.json"))
}

/// The checkpoint file.
pub fn checkpoint_file(root: &Path) -> PathBuf {
    root.join("checkpoint.json")
}

/// A current-thread runtime for tests that drive a relay from synchronous code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Every file under `dir` except lock files, with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    // Bounded: the relay dir is a shallow tree of a few files.
    for _ in 0..64 {
        let Some(d) = stack.pop() else { break };
        for entry in fs::read_dir(&d).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.to_string_lossy().ends_with("lock") {
                files.insert(path.clone(), fs::read(&path).expect("read"));
            }
        }
    }
    assert!(stack.is_empty(), "the relay dir is deeper than expected");
    files
}

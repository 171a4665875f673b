//! Small-file helpers: atomic replacement (temp write, fsync, rename, fsync of the directory),
//! bounded reads that tell "absent" from "unreadable", and digest-checked small files.
//!
//! A checked file is `<SHA-256 of the body, 64 lowercase hex>\n<body>`: any damage to a roster
//! entry, manifest or checkpoint is caught on read, even one that would still parse.

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::{corrupt, io_err};
use crate::adapters::atomic_file;
use crate::domain::oplog::canonical::to_hex;
use crate::ports::RelayError;

/// Small files (roster entries, manifests, checkpoints) larger than this are refused as corrupt
/// rather than read into memory.
pub(crate) const MAX_SMALL_FILE: u64 = 256 * 1024 * 1024;

/// Replaces `path` with `bytes` atomically: readers see the old or the new content, never a
/// mix, and after return the new content survives a crash.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RelayError> {
    atomic_file::replace(path, bytes).map_err(step_err)
}

/// Reads a whole small file; `None` if it does not exist.
pub(crate) fn read_small(path: &Path) -> Result<Option<Vec<u8>>, RelayError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    // Sized from the file's length up front: a checkpoint can be tens of megabytes.
    let len = file
        .metadata()
        .map_or(0, |m| m.len())
        .min(MAX_SMALL_FILE + 1);
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(MAX_SMALL_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    if bytes.len() as u64 > MAX_SMALL_FILE {
        return Err(corrupt(path, "file is too large"));
    }
    Ok(Some(bytes))
}

/// Replaces `path` atomically with `body` and its digest (see the module docs).
pub(crate) fn write_checked(path: &Path, body: &[u8]) -> Result<(), RelayError> {
    let mut bytes = to_hex(&Sha256::digest(body)).into_bytes();
    bytes.push(b'\n');
    bytes.extend_from_slice(body);
    write_atomic(path, &bytes)
}

/// Reads a checked file's body; `None` if the file does not exist, [`RelayError::Corrupt`]
/// if its digest does not match.
pub(crate) fn read_checked(path: &Path) -> Result<Option<Vec<u8>>, RelayError> {
    let Some(mut bytes) = read_small(path)? else {
        return Ok(None);
    };
    const DIGEST_LINE: usize = 65;
    if bytes.len() < DIGEST_LINE || bytes[DIGEST_LINE - 1] != b'\n' {
        return Err(corrupt(path, "missing digest line"));
    }
    if bytes[..DIGEST_LINE - 1] != *to_hex(&Sha256::digest(&bytes[DIGEST_LINE..])).as_bytes() {
        return Err(corrupt(path, "content does not match its digest"));
    }
    // The body stays in the buffer it was read into instead of being copied out.
    bytes.drain(..DIGEST_LINE);
    Ok(Some(bytes))
}

/// Creates `dir` (and its parents) if missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), RelayError> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))
}

/// Makes directory entries (creations, renames, removals) in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), RelayError> {
    atomic_file::sync_dir(dir).map_err(step_err)
}

fn step_err(e: atomic_file::FileStepError) -> RelayError {
    io_err(e.op, &e.path)(e.source)
}

/// Whether a directory entry is a temp or hidden file that listings must skip.
pub(crate) fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

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

/// The length of a checked file's first line: 64 hex digits and a newline.
const DIGEST_LINE: usize = 65;

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
    // All head: a tail holds only what the file grew by since it was measured.
    Ok(
        read_checked_split(path, |_, len| len)?.map(|(mut head, tail)| {
            head.extend_from_slice(&tail);
            head
        }),
    )
}

/// A body read in two buffers: its first bytes and the rest.
pub(crate) type HeadAndTail = (Vec<u8>, Vec<u8>);

/// Reads a checked file's body into two buffers, `(head, tail)`, without moving the tail: a
/// checkpoint's state can be tens of megabytes, and shifting it down past the digest line and
/// header would copy all of it. `head_len` is shown the body's first bytes (up to 64 KiB, or
/// all of a smaller body) and the body's length, and says how many bytes the head takes (more
/// than it was shown is fine; more than the body is clamped). `None` if the file does not
/// exist; [`RelayError::Corrupt`] if its digest does not match.
pub(crate) fn read_checked_split(
    path: &Path,
    head_len: impl FnOnce(&[u8], usize) -> usize,
) -> Result<Option<HeadAndTail>, RelayError> {
    const PROBE: u64 = 64 * 1024;
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    if len > MAX_SMALL_FILE {
        return Err(corrupt(path, "file is too large"));
    }
    let mut head = Vec::new();
    (&mut file)
        .take(DIGEST_LINE as u64 + PROBE)
        .read_to_end(&mut head)
        .map_err(io_err("read", path))?;
    // A file that ended within the probe (every roster entry and manifest) is read whole.
    let whole = head.len() < DIGEST_LINE + PROBE as usize;
    if head.len() < DIGEST_LINE || head[DIGEST_LINE - 1] != b'\n' {
        return Err(corrupt(path, "missing digest line"));
    }
    let body_len = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .saturating_sub(DIGEST_LINE);
    let split = DIGEST_LINE + head_len(&head[DIGEST_LINE..], body_len).min(body_len);
    if split > head.len() && !whole {
        (&mut file)
            .take((split - head.len()) as u64)
            .read_to_end(&mut head)
            .map_err(io_err("read", path))?;
    }
    let mut tail = Vec::with_capacity((DIGEST_LINE + body_len).saturating_sub(split));
    tail.extend_from_slice(head.get(split..).unwrap_or_default());
    head.truncate(split);
    if !whole {
        // Bounded: the file may have grown since it was measured.
        file.take((MAX_SMALL_FILE + 1).saturating_sub((head.len() + tail.len()) as u64))
            .read_to_end(&mut tail)
            .map_err(io_err("read", path))?;
    }
    if (head.len() + tail.len()) as u64 > MAX_SMALL_FILE {
        return Err(corrupt(path, "file is too large"));
    }
    let digest = Sha256::new()
        .chain_update(&head[DIGEST_LINE..])
        .chain_update(&tail)
        .finalize();
    if head[..DIGEST_LINE - 1] != *to_hex(&digest).as_bytes() {
        return Err(corrupt(path, "content does not match its digest"));
    }
    head.drain(..DIGEST_LINE);
    Ok(Some((head, tail)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(dir: &Path, body: &[u8]) -> std::path::PathBuf {
        let path = dir.join("f");
        write_checked(&path, body).expect("write");
        path
    }

    #[test]
    fn a_split_read_returns_the_body_in_two_parts_whatever_the_split() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Larger than the probe, so some splits need a second head read.
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let path = checked(dir.path(), &body);
        for asked in [0, 1, 7, 65_536, 70_000, 100_000, 200_000] {
            let (head, tail) = read_checked_split(&path, |prefix, len| {
                assert_eq!(len, body.len());
                assert_eq!(prefix, &body[..prefix.len()]);
                asked
            })
            .expect("read")
            .expect("present");
            let split = asked.min(body.len());
            assert_eq!(
                (&head[..], &tail[..]),
                body.split_at(split),
                "split {asked}"
            );
        }
        let missing = read_checked_split(&dir.path().join("absent"), |_, len| len);
        assert!(missing.expect("absent is not an error").is_none());
    }

    #[test]
    fn a_split_read_refuses_what_a_whole_read_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = b"header|state bytes".to_vec();
        let path = checked(dir.path(), &body);
        let good = fs::read(&path).expect("read");
        let damaged = [
            good[..good.len() - 1].to_vec(),
            [&good[..], b"x"].concat(),
            good[1..].to_vec(),
            good[..40].to_vec(),
            {
                let mut flipped = good.clone();
                *flipped.last_mut().expect("byte") ^= 1;
                flipped
            },
        ];
        for bytes in damaged {
            fs::write(&path, &bytes).expect("write");
            let split = read_checked_split(&path, |_, _| 6);
            assert!(matches!(split, Err(RelayError::Corrupt(_))), "{split:?}");
            assert!(matches!(read_checked(&path), Err(RelayError::Corrupt(_))));
        }
    }
}

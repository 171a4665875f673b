//! Small-file helpers: atomic replacement (temp write, fsync, rename, fsync of the directory),
//! bounded reads that tell "absent" from "unreadable", and digest-checked small files.
//!
//! A checked file is `<SHA-256 of the body, 64 lowercase hex>\n<body>`: any damage to a roster
//! entry, manifest or checkpoint is caught on read, even one that would still parse.

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

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

/// The length of a checked file holding a body of `body_len` bytes.
pub(crate) fn checked_file_len(body_len: usize) -> u64 {
    u64::try_from(DIGEST_LINE + body_len).unwrap_or(u64::MAX)
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
        return Err(corrupt(
            path,
            format!("file is {len} bytes, over the limit of {MAX_SMALL_FILE}"),
        ));
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
    let mut hasher = Sha256::new();
    hasher.update(&head[DIGEST_LINE..split.min(head.len())]);
    let prefix = head.get(split..).unwrap_or_default();
    let tail = if whole {
        hasher.update(prefix);
        prefix.to_vec()
    } else {
        let measured = (DIGEST_LINE + body_len).saturating_sub(split);
        read_tail(&mut file, prefix, measured, split, &mut hasher).map_err(io_err("read", path))?
    };
    head.truncate(split);
    if (head.len() + tail.len()) as u64 > MAX_SMALL_FILE {
        return Err(corrupt(path, "file is too large"));
    }
    let digest = hasher.finalize();
    if head[..DIGEST_LINE - 1] != *to_hex(&digest).as_bytes() {
        return Err(corrupt(path, "content does not match its digest"));
    }
    head.drain(..DIGEST_LINE);
    Ok(Some((head, tail)))
}

/// From this many bytes on, the rest of a checked file is hashed on a second thread while it
/// is read (a checkpoint's state); below it, a thread costs more than it saves.
const PARALLEL_HASH_MIN: usize = 8 * 1024 * 1024;

/// Bytes per read while a second thread hashes what was read before.
const HASH_CHUNK: usize = 4 * 1024 * 1024;

/// Reads the rest of `file` into one buffer that starts with `prefix` (body bytes already read
/// with the head) and feeds all of it to `hasher`. `measured` is the buffer's length by the
/// file's size when it was opened, `before` how many bytes of the file come before the buffer.
/// A large rest is hashed on a second thread, one chunk behind the reads, so the digest adds
/// little to the read. The file may have shrunk or grown since it was measured: the buffer
/// holds what was there (bounded by [`MAX_SMALL_FILE`]) and the digest check decides.
fn read_tail(
    file: &mut File,
    prefix: &[u8],
    measured: usize,
    before: usize,
    hasher: &mut Sha256,
) -> std::io::Result<Vec<u8>> {
    hasher.update(prefix);
    let rest = measured.saturating_sub(prefix.len());
    let mut tail = if rest >= PARALLEL_HASH_MIN {
        // Zeroed by the allocator (fresh pages), not by a pass over the buffer.
        let mut tail = vec![0u8; measured];
        tail[..prefix.len()].copy_from_slice(prefix);
        let read = read_hashing(file, &mut tail[prefix.len()..], hasher)?;
        if read < rest {
            // The file ended early.
            tail.truncate(prefix.len() + read);
            return Ok(tail);
        }
        tail
    } else {
        let mut tail = Vec::with_capacity(measured);
        tail.extend_from_slice(prefix);
        tail
    };
    // All of a small rest, or what a large file grew by since it was measured; bounded, so a
    // growing file cannot grow the buffer without end.
    let hashed = tail.len();
    file.take((MAX_SMALL_FILE + 1).saturating_sub((before + hashed) as u64))
        .read_to_end(&mut tail)?;
    hasher.update(&tail[hashed..]);
    Ok(tail)
}

/// Fills `buf` from `file` chunk by chunk while a second thread feeds each filled chunk, in
/// order, to `hasher`. Returns how many bytes were read: less than `buf.len()` only if the file
/// ended first.
fn read_hashing(file: &mut File, buf: &mut [u8], hasher: &mut Sha256) -> std::io::Result<usize> {
    let mut own = std::mem::take(hasher);
    std::thread::scope(|scope| {
        let (chunks, received) = std::sync::mpsc::channel::<&[u8]>();
        let hashing = scope.spawn(move || {
            for chunk in received {
                own.update(chunk);
            }
            own
        });
        let mut read = Ok(0);
        for chunk in buf.chunks_mut(HASH_CHUNK) {
            let n = match fill(file, chunk) {
                Ok(n) => n,
                Err(e) => {
                    read = Err(e);
                    break;
                }
            };
            read = read.map(|total| total + n);
            let chunk: &[u8] = chunk;
            // A send fails only if the hashing thread panicked, which the join reports.
            let _ = chunks.send(&chunk[..n]);
            if n < chunk.len() {
                break;
            }
        }
        drop(chunks);
        *hasher = hashing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        read
    })
}

/// Reads from `file` until `buf` is full or the file ends; returns how many bytes it read.
fn fill(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
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

/// Removes the file at `path`; one already gone is fine (a crash, or another process, may
/// have removed it first).
pub(crate) fn remove_if_present(path: &Path) -> Result<(), RelayError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Whether a directory entry is a temp or hidden file that listings must skip.
pub(crate) fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// The entries of `dir` whose names `parse` accepts, with what it made of them, sorted.
/// Hidden and temp files are skipped; a missing directory holds none.
pub(crate) fn list_named<T: Ord>(
    dir: &Path,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<(T, PathBuf)>, RelayError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| !is_hidden(n)) else {
            continue;
        };
        if let Some(parsed) = parse(name) {
            found.push((parsed, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The files in `dir` named `<number, 20 digits><suffix>` for one of `suffixes` (segments,
/// their indexes, base files), with their numbers, sorted (see [`list_named`]).
pub(crate) fn numbered_files(
    dir: &Path,
    suffixes: &[&str],
) -> Result<Vec<(u64, PathBuf)>, RelayError> {
    list_named(dir, |name| {
        let stem = suffixes.iter().find_map(|s| name.strip_suffix(s))?;
        let digits = stem.len() == NUMBER_DIGITS && stem.bytes().all(|b| b.is_ascii_digit());
        digits.then(|| stem.parse().ok()).flatten()
    })
}

/// Width of the number in the names [`numbered_files`] lists.
pub(crate) const NUMBER_DIGITS: usize = 20;

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

    /// A body whose tail is hashed on a second thread, ending part-way through a chunk.
    fn large_body() -> Vec<u8> {
        let len = PARALLEL_HASH_MIN + HASH_CHUNK / 2 + 12_345;
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_large_tail_hashed_while_read_gives_the_same_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = large_body();
        let path = checked(dir.path(), &body);
        // The last split leaves a tail just too small for a second thread.
        let splits = [0, 70_000, body.len() - PARALLEL_HASH_MIN + 1, body.len()];
        for asked in splits {
            let (head, tail) = read_checked_split(&path, |_, _| asked)
                .expect("read")
                .expect("present");
            assert!(
                head == body[..asked] && tail == body[asked..],
                "split {asked}"
            );
        }
    }

    #[test]
    fn a_large_file_damaged_anywhere_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = checked(dir.path(), &large_body());
        let good = fs::read(&path).expect("read");
        let flipped = |at: usize| {
            let mut bytes = good.clone();
            bytes[at] ^= 1;
            bytes
        };
        let damaged = [
            flipped(DIGEST_LINE),
            flipped(DIGEST_LINE + 64 * 1024 + HASH_CHUNK + 1),
            flipped(good.len() - 1),
            good[..good.len() - 1].to_vec(),
            [&good[..], b"x"].concat(),
        ];
        for (i, bytes) in damaged.iter().enumerate() {
            fs::write(&path, bytes).expect("write");
            let split = read_checked_split(&path, |_, _| 6);
            assert!(matches!(split, Err(RelayError::Corrupt(_))), "case {i}");
        }
    }

    #[test]
    fn a_tail_that_shrank_or_grew_since_it_was_measured_is_read_as_it_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = large_body();
        let path = dir.path().join("raw");
        fs::write(&path, &body).expect("write");
        let before = 1000;
        for measured in [
            100,
            body.len() - 5000,
            body.len(),
            body.len() + 2 * HASH_CHUNK,
        ] {
            let mut file = File::open(&path).expect("open");
            let mut prefix = vec![0; before];
            file.read_exact(&mut prefix).expect("prefix");
            let mut hasher = Sha256::new();
            let tail = read_tail(&mut file, &prefix, measured, before, &mut hasher).expect("tail");
            assert!(tail == body, "measured {measured}");
            assert_eq!(
                hasher.finalize(),
                Sha256::digest(&body),
                "measured {measured}"
            );
        }
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

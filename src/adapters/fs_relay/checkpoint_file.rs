//! The latest checkpoint on disk: one file, replaced atomically when a checkpoint covering
//! more ops arrives. Read back as untrusted bytes: its id is re-checked on every read.
//!
//! The file is digest-checked (see the `files` module); its body is
//!
//! ```text
//! "TCK2" || u32 BE header length || header JSON {"id", "frontier", "state_hash"} || state bytes
//! ```
//!
//! so the state, which can be tens of megabytes, is stored as is rather than as hex inside
//! JSON. Format-1 relays wrote the whole checkpoint as JSON (body starting with `{`); such a
//! file is still read.

use serde::{Deserialize, Serialize};

use super::error::{corrupt, json_problem};
use super::files::{checked_file_len, read_checked_split, write_checked, MAX_SMALL_FILE};
use super::layout::Layout;
use super::lock::FileLock;
use crate::adapters::relay_core;
use crate::domain::oplog::canonical::{from_hex, to_hex};
use crate::domain::oplog::{Checkpoint, CheckpointId, Frontier};
use crate::ports::RelayError;

/// The first bytes of a checkpoint body written by format 2 and later.
const MAGIC: &[u8; 4] = b"TCK2";

/// Everything but the state.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    id: CheckpointId,
    frontier: Frontier,
    state_hash: String,
}

/// A checkpoint's header, encoded: its size is known before the body is built.
struct EncodedHeader(Vec<u8>);

impl EncodedHeader {
    fn of(checkpoint: &Checkpoint) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(&Header {
            id: checkpoint.id(),
            frontier: checkpoint.frontier().clone(),
            state_hash: to_hex(&checkpoint.state_hash()),
        })
        .map(Self)
    }

    /// The length of the body of `checkpoint` under this header.
    fn body_len(&self, checkpoint: &Checkpoint) -> usize {
        MAGIC.len() + 4 + self.0.len() + checkpoint.state_bytes().len()
    }
}

/// The body of `checkpoint` under its already encoded `header`.
fn encode_with(header: &EncodedHeader, checkpoint: &Checkpoint) -> Vec<u8> {
    let state = checkpoint.state_bytes();
    let mut body = Vec::with_capacity(header.body_len(checkpoint));
    let header = &header.0;
    body.extend_from_slice(MAGIC);
    // A header is a frontier of a few devices: far below 4 GiB.
    body.extend_from_slice(
        &u32::try_from(header.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    body.extend_from_slice(header);
    body.extend_from_slice(state);
    body
}

/// How many of a body's first bytes precede the state: for a body written by format 2 and later,
/// the magic, the length and the header; a format-1 body (or one too short to tell) is all head.
fn head_len(prefix: &[u8], body_len: usize) -> usize {
    match prefix
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.first_chunk::<4>())
    {
        Some(len) => {
            usize::try_from(u32::from_be_bytes(*len)).map_or(body_len, |len| MAGIC.len() + 4 + len)
        }
        None => body_len,
    }
}

/// Decodes a body read as `head` (see [`head_len`]) and `state`, the rest of it, which
/// becomes the checkpoint's state without being copied.
fn decode(head: Vec<u8>, state: Vec<u8>) -> Result<Checkpoint, String> {
    if head.first() == Some(&b'{') {
        let mut body = head;
        body.extend_from_slice(&state);
        return serde_json::from_slice(&body).map_err(|e| json_problem(&e));
    }
    let Some(rest) = head.strip_prefix(MAGIC) else {
        return Err("not a checkpoint file".into());
    };
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or("the checkpoint header is truncated")?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| "header too long")?;
    if rest.len() != len {
        return Err("the checkpoint header is truncated".into());
    }
    let header: Header = serde_json::from_slice(rest).map_err(|e| json_problem(&e))?;
    let state_hash = from_hex(&header.state_hash)
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or("invalid state hash")?;
    Ok(Checkpoint::from_parts(
        header.id,
        header.frontier,
        state_hash,
        state,
    ))
}

/// The stored checkpoint, if any, with its id verified.
pub(crate) fn read(layout: &Layout) -> Result<Option<Checkpoint>, RelayError> {
    let path = layout.checkpoint_file();
    // The state is read into its own buffer, which the checkpoint then owns.
    let Some((head, state)) = read_checked_split(&path, head_len)? else {
        return Ok(None);
    };
    let checkpoint = decode(head, state).map_err(|what| corrupt(&path, what))?;
    checkpoint
        .verify_id()
        .map_err(|e| corrupt(&path, format!("stored checkpoint does not verify: {e}")))?;
    Ok(Some(checkpoint))
}

/// Stores `checkpoint` (already verified) if it supersedes the stored one. A stored file that
/// no longer reads back is replaced. A checkpoint whose file would be larger than every reader
/// accepts ([`MAX_SMALL_FILE`]) is refused with [`RelayError::CheckpointTooLarge`].
pub(crate) fn put(layout: &Layout, checkpoint: &Checkpoint) -> Result<(), RelayError> {
    put_within(layout, checkpoint, MAX_SMALL_FILE)
}

/// [`put`] with the largest file it may write.
fn put_within(layout: &Layout, checkpoint: &Checkpoint, limit: u64) -> Result<(), RelayError> {
    let path = layout.checkpoint_file();
    let header = EncodedHeader::of(checkpoint).map_err(|e| corrupt(&path, json_problem(&e)))?;
    let file_len = checked_file_len(header.body_len(checkpoint));
    if file_len > limit {
        return Err(RelayError::CheckpointTooLarge {
            bytes: file_len,
            limit,
        });
    }
    let _lock = FileLock::exclusive(&layout.checkpoint_lock())?;
    let held = match read(layout) {
        Ok(held) => held,
        Err(RelayError::Corrupt(_)) => None,
        Err(e) => return Err(e),
    };
    if !relay_core::supersedes(checkpoint, held.as_ref()) {
        return Ok(());
    }
    write_checked(&path, &encode_with(&header, checkpoint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::oplog::{fold, State};
    use crate::ports::conformance::relay::{chain, device, frontier_of};

    /// The body a put writes for `checkpoint`.
    fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>, serde_json::Error> {
        Ok(encode_with(&EncodedHeader::of(checkpoint)?, checkpoint))
    }

    /// Splits `body` as a read does and decodes it.
    fn decode_body(mut body: Vec<u8>) -> Result<Checkpoint, String> {
        let split = head_len(&body, body.len()).min(body.len());
        let state = body.split_off(split);
        decode(body, state)
    }

    fn checkpoint() -> Checkpoint {
        covering(3)
    }

    /// A checkpoint of the first `n` ops of one chain.
    fn covering(n: usize) -> Checkpoint {
        let ops = chain(device(1), n, 1_000);
        Checkpoint::new(frontier_of(&[&ops]), &fold(&ops).expect("fold"))
    }

    #[test]
    fn a_checkpoint_over_the_limit_is_refused_and_the_stored_one_stays() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (layout, _) = Layout::create(dir.path(), 4).expect("layout");
        let (small, large) = (covering(2), covering(40));
        put(&layout, &small).expect("put");
        // The size of the large one's file, as stored by a relay without a tight limit.
        let elsewhere = tempfile::tempdir().expect("temp dir");
        let (other, _) = Layout::create(elsewhere.path(), 4).expect("layout");
        put(&other, &large).expect("put");
        let large_file = std::fs::metadata(other.checkpoint_file())
            .expect("stat")
            .len();
        let limit = large_file - 1;
        match put_within(&layout, &large, limit) {
            Err(RelayError::CheckpointTooLarge { bytes, limit: l }) => {
                assert_eq!((bytes, l), (large_file, limit));
            }
            other => panic!("expected CheckpointTooLarge, got {other:?}"),
        }
        assert_eq!(
            read(&layout).expect("read"),
            Some(small),
            "nothing was stored"
        );
        assert!(
            std::fs::read_dir(dir.path()).expect("list").all(|e| !e
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .contains(".tmp")),
            "no temp file was left behind"
        );
        // At exactly the limit it is stored, and its file has the size that was checked.
        put_within(&layout, &large, large_file).expect("put at the limit");
        assert_eq!(
            std::fs::metadata(layout.checkpoint_file())
                .expect("stat")
                .len(),
            large_file
        );
        assert_eq!(read(&layout).expect("read"), Some(large));
    }

    #[test]
    fn binary_and_format_1_bodies_decode_to_the_same_checkpoint() {
        let cp = checkpoint();
        let binary = encode(&cp).expect("encode");
        assert!(binary.starts_with(MAGIC));
        assert_eq!(decode_body(binary.clone()).expect("binary"), cp);
        let json = serde_json::to_vec(&cp).expect("json");
        assert!(binary.len() < json.len());
        assert_eq!(decode_body(json).expect("format 1"), cp);
        let empty = Checkpoint::new(Frontier::new(), &State::new());
        assert_eq!(
            decode_body(encode(&empty).expect("encode")).expect("empty"),
            empty
        );
    }

    #[test]
    fn damaged_bodies_are_refused_not_panicked_on() {
        let binary = encode(&checkpoint()).expect("encode");
        for cut in 0..MAGIC.len() + 8 {
            assert!(decode_body(binary[..cut].to_vec()).is_err(), "cut at {cut}");
        }
        let mut long = binary;
        long[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_body(long).is_err());
        assert!(decode_body(b"TCK3".to_vec()).is_err());
    }
}

//! End-to-end sealing of op payloads and checkpoint state under a scope key.
//!
//! Under end-to-end encryption a device seals each op's payload with the key of the op's scope
//! *at authoring time*, before the op id is computed, so the id (and every chain link after it)
//! covers the ciphertext: the relay checks ids and chains without ever seeing plaintext.
//!
//! # Op payloads
//!
//! [`author_sealed`] validates the plaintext against its surface, encodes it as canonical JSON,
//! seals it with XChaCha20-Poly1305 through the crate's
//! [`seal_with_aad`] and appends the op. The associated
//! data binds the ciphertext to every header field of its op (`lp(x) = u64_be(len(x)) || x`):
//!
//! ```text
//! op_aad = lp("tandem-op-seal-v1")       domain-separation tag and layout version
//!          lp(op_header_bytes)           the op-id recipe's header: tag, device, seq, prev,
//!                                        hlc (wall, counter, device), scope, surface
//!          lp(key_epoch)                 u32 big-endian
//!          lp("xchacha20poly1305")       the algorithm
//! ```
//!
//! (`seal_with_aad` frames this once more under `tandem-aad-v1`.) All of these are known
//! before sealing: the author's next seq and head give `seq` and `prev`, and the stamp the
//! author will issue is computed on a copy of its clock. A ciphertext moved to another op,
//! position, chain, scope, surface or key epoch no longer opens.
//!
//! [`open_op`] reverses it and returns the opened record (same op id, plaintext payload) or a
//! typed [`SealError`]: the key offered is for another epoch ([`SealError::WrongEpoch`]), or
//! authenticated decryption failed ([`SealError::Decrypt`]: wrong key, altered ciphertext or
//! altered header; the AEAD deliberately does not say which). Nothing is skipped silently.
//!
//! # Randomness
//!
//! The nonce is drawn from the caller's RNG *inside* the crypto helper (the crypto module's
//! rule: a nonce can be neither chosen nor reused by a caller). The domain still owns no
//! randomness: the RNG arrives as an argument, as time does.
//!
//! # Checkpoint state
//!
//! A checkpoint's id covers its frontier and the hash of its plaintext state, not the state
//! bytes themselves, so the state can travel sealed while the relay still checks the id and
//! garbage-collects by the frontier. [`seal_checkpoint`] replaces the state bytes with
//!
//! ```text
//! sealed_state = "TSS1" || key_epoch (u32 big-endian) || nonce (24 bytes) || ciphertext
//! state_aad    = lp("tandem-checkpoint-seal-v1") lp(canonical_json(frontier)) lp(state_hash)
//!                lp(scope) lp(key_epoch) lp("xchacha20poly1305")
//! ```
//!
//! Plain state bytes start with `TSL` (the binary layout) or `{` (the JSON layout), so a
//! sealed state can never be mistaken for a plain one. [`open_checkpoint`] restores the plaintext; [`Checkpoint::to_state`] then checks
//! it against the state hash.

use serde_json::Value;
use zeroize::Zeroizing;

use super::author::OpAuthor;
use super::canonical::{canonical_json, canonical_json_text, op_header_bytes, Framer};
use super::canonical_check::check_canonical_json;
use super::checkpoint::{Checkpoint, CheckpointId};
use super::op::{OpError, OpId, OpPayload, OpRecord, SEALED_NONCE_LEN};
use super::payload::validate_payload;
use super::scope::Scope;
use super::surface::Surface;
use crate::domain::crypto::{
    open_parts_with_aad, seal_with_aad, Algorithm, CryptoError, KeyEpoch, SessionKey,
};

/// Domain-separation tag of an op payload's associated data.
pub const OP_SEAL_AAD_TAG: &str = "tandem-op-seal-v1";
/// Domain-separation tag of a checkpoint state's associated data.
pub const CHECKPOINT_SEAL_AAD_TAG: &str = "tandem-checkpoint-seal-v1";
/// The first bytes of a sealed checkpoint state.
pub const SEALED_STATE_MAGIC: &[u8; 4] = b"TSS1";

const SEALED_STATE_HEADER: usize = SEALED_STATE_MAGIC.len() + 4 + SEALED_NONCE_LEN;

/// Why sealing or opening failed. Never carries key material, plaintext or ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The op's payload is plaintext where a sealed one was expected.
    #[error("op {op_id} is not sealed")]
    NotSealed {
        /// The op.
        op_id: OpId,
    },
    /// The key offered belongs to another epoch than the one the payload was sealed under.
    #[error("op {op_id} is sealed under key epoch {sealed}, not {offered}")]
    WrongEpoch {
        /// The op.
        op_id: OpId,
        /// The epoch named by the payload.
        sealed: KeyEpoch,
        /// The epoch of the key offered.
        offered: KeyEpoch,
    },
    /// Authenticated decryption failed: wrong key, altered ciphertext, or an op header that
    /// differs from the one sealed against. Deliberately does not say which.
    #[error("op {op_id} does not open: wrong key, altered ciphertext or altered header")]
    Decrypt {
        /// The op.
        op_id: OpId,
    },
    /// The payload opened but is not JSON (only a buggy or hostile author can cause this).
    #[error("op {op_id} opened to bytes that are not JSON")]
    MalformedPlaintext {
        /// The op.
        op_id: OpId,
    },
    /// The op could not be authored (invalid payload for its surface, broken chain position).
    #[error(transparent)]
    Op(#[from] OpError),
    /// The AEAD refused to encrypt (input beyond its limit).
    #[error("sealing failed: {0}")]
    Encrypt(CryptoError),
    /// The author issued another stamp than the one sealed against (a broken invariant of
    /// [`OpAuthor`]); nothing was appended.
    #[error("the op stamp changed between sealing and appending; nothing was appended")]
    StampMismatch,
    /// A checkpoint's state is plaintext where a sealed one was expected.
    #[error("checkpoint {id}: state is not sealed")]
    CheckpointNotSealed {
        /// The checkpoint.
        id: CheckpointId,
    },
    /// A checkpoint's state is already sealed.
    #[error("checkpoint {id}: state is already sealed")]
    CheckpointAlreadySealed {
        /// The checkpoint.
        id: CheckpointId,
    },
    /// A sealed checkpoint state is too short to hold its envelope.
    #[error("checkpoint {id}: sealed state is truncated")]
    CheckpointTruncated {
        /// The checkpoint.
        id: CheckpointId,
    },
    /// The key offered for a checkpoint belongs to another epoch.
    #[error("checkpoint {id} is sealed under key epoch {sealed}, not {offered}")]
    CheckpointWrongEpoch {
        /// The checkpoint.
        id: CheckpointId,
        /// The epoch named by the envelope.
        sealed: KeyEpoch,
        /// The epoch of the key offered.
        offered: KeyEpoch,
    },
    /// A checkpoint's state does not open: wrong key, scope, or altered bytes or frontier.
    #[error("checkpoint {id} does not open: wrong key or altered state")]
    CheckpointDecrypt {
        /// The checkpoint.
        id: CheckpointId,
    },
}

/// The associated data binding a sealed payload to its op header (see the module docs).
pub fn op_seal_aad(header_bytes: &[u8], key_epoch: KeyEpoch) -> Vec<u8> {
    let mut f = Framer::new(OP_SEAL_AAD_TAG);
    f.field(header_bytes)
        .field(&key_epoch.get().to_be_bytes())
        .field(Algorithm::XChaCha20Poly1305.as_str().as_bytes());
    f.finish()
}

/// Appends an op whose payload is `plaintext` sealed under `key` (of `key_epoch`, the key of
/// `scope`) at physical time `now_ms`. On error the author is unchanged.
#[allow(clippy::too_many_arguments)]
pub fn author_sealed(
    author: &mut OpAuthor,
    now_ms: u64,
    scope: Scope,
    surface: Surface,
    plaintext: &Value,
    key_epoch: KeyEpoch,
    key: &SessionKey,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Result<OpRecord, SealError> {
    author_sealed_text(
        author, now_ms, scope, surface, plaintext, key_epoch, key, rng,
    )
    .map(|(op, _)| op)
}

/// [`author_sealed`], also returning the plaintext as the canonical JSON text that was sealed
/// (what [`open_op_text`] gives back), so the author can fold its own op without encoding the
/// payload again.
#[allow(clippy::too_many_arguments)]
pub(crate) fn author_sealed_text(
    author: &mut OpAuthor,
    now_ms: u64,
    scope: Scope,
    surface: Surface,
    plaintext: &Value,
    key_epoch: KeyEpoch,
    key: &SessionKey,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Result<(OpRecord, Zeroizing<String>), SealError> {
    validate_payload(&surface, plaintext).map_err(|source| OpError::InvalidPayload {
        surface: surface.clone(),
        source,
    })?;
    let mut next = author.clone();
    let stamp = next.clock().clone().tick(now_ms);
    let header = op_header_bytes(
        next.device(),
        next.next_seq(),
        next.head().as_ref(),
        &stamp,
        &scope,
        &surface,
    );
    let text = Zeroizing::new(canonical_json_text(plaintext));
    let sealed = seal_with_aad(key, &op_seal_aad(&header, key_epoch), text.as_bytes(), rng)
        .map_err(SealError::Encrypt)?;
    let payload = OpPayload::Sealed {
        key_epoch: key_epoch.get(),
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext,
    };
    let op = next.append(now_ms, scope, surface, payload)?;
    if op.hlc() != stamp {
        return Err(SealError::StampMismatch);
    }
    *author = next;
    Ok((op, text))
}

/// The key epoch a sealed op names, or `None` for a plaintext op.
pub fn sealed_epoch(op: &OpRecord) -> Option<KeyEpoch> {
    match op.payload() {
        OpPayload::Sealed { key_epoch, .. } => Some(KeyEpoch::new(*key_epoch)),
        OpPayload::Plain(_) => None,
    }
}

/// Opens a sealed op with the key of `key_epoch`: the same op (same id) with its plaintext
/// payload, ready to fold. See the module docs for the errors.
pub fn open_op(
    op: &OpRecord,
    key_epoch: KeyEpoch,
    key: &SessionKey,
) -> Result<OpRecord, SealError> {
    let plaintext = open_payload(op, key_epoch, key)?;
    let value: Value = serde_json::from_slice(&plaintext)
        .map_err(|_| SealError::MalformedPlaintext { op_id: op.op_id() })?;
    Ok(op.opened_copy(value))
}

/// The plaintext bytes of a sealed op's payload (see [`open_op`] for the errors).
fn open_payload(
    op: &OpRecord,
    key_epoch: KeyEpoch,
    key: &SessionKey,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let op_id = op.op_id();
    let OpPayload::Sealed {
        key_epoch: sealed,
        nonce,
        ciphertext,
    } = op.payload()
    else {
        return Err(SealError::NotSealed { op_id });
    };
    let sealed = KeyEpoch::new(*sealed);
    if sealed != key_epoch {
        return Err(SealError::WrongEpoch {
            op_id,
            sealed,
            offered: key_epoch,
        });
    }
    open_parts_with_aad(
        key,
        &op_seal_aad(&op.header_bytes(), sealed),
        nonce,
        ciphertext,
    )
    .map_err(|_| SealError::Decrypt { op_id })
}

/// [`open_op`] for folding: the plaintext payload as canonical JSON text, without building a
/// JSON tree when the author sealed canonical JSON (as [`author_sealed`] does). Other JSON is
/// re-encoded canonically, so the answer is the text [`open_op`]'s payload encodes to.
pub(crate) fn open_op_text(
    op: &OpRecord,
    key_epoch: KeyEpoch,
    key: &SessionKey,
) -> Result<Zeroizing<String>, SealError> {
    let op_id = op.op_id();
    let mut plaintext = open_payload(op, key_epoch, key)?;
    if check_canonical_json(&plaintext).is_ok() {
        // Checked above: canonical JSON is UTF-8. Moved out, not copied; the emptied buffer
        // is wiped as it drops.
        let text = String::from_utf8(std::mem::take(&mut *plaintext))
            .map_err(|_| SealError::MalformedPlaintext { op_id })?;
        return Ok(Zeroizing::new(text));
    }
    let value: Value =
        serde_json::from_slice(&plaintext).map_err(|_| SealError::MalformedPlaintext { op_id })?;
    Ok(Zeroizing::new(canonical_json_text(&value)))
}

/// The associated data binding a sealed checkpoint state (see the module docs).
fn checkpoint_aad(cp: &Checkpoint, scope: &Scope, key_epoch: KeyEpoch) -> Vec<u8> {
    let mut f = Framer::new(CHECKPOINT_SEAL_AAD_TAG);
    f.field(&canonical_json(&cp.frontier().to_canonical_json()))
        .field(&cp.state_hash())
        .field(scope.to_string().as_bytes())
        .field(&key_epoch.get().to_be_bytes())
        .field(Algorithm::XChaCha20Poly1305.as_str().as_bytes());
    f.finish()
}

/// Whether a checkpoint's state bytes are sealed.
pub fn is_sealed_checkpoint(cp: &Checkpoint) -> bool {
    cp.state_bytes().starts_with(SEALED_STATE_MAGIC)
}

/// The key epoch a sealed checkpoint names, `None` if its state is plaintext.
pub fn checkpoint_epoch(cp: &Checkpoint) -> Result<Option<KeyEpoch>, SealError> {
    if !is_sealed_checkpoint(cp) {
        return Ok(None);
    }
    Ok(Some(split_sealed_state(cp)?.0))
}

/// The same checkpoint (same id, frontier and state hash) with its state sealed under `key`,
/// the key of `scope` at `key_epoch`.
pub fn seal_checkpoint(
    cp: &Checkpoint,
    scope: &Scope,
    key_epoch: KeyEpoch,
    key: &SessionKey,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Result<Checkpoint, SealError> {
    if is_sealed_checkpoint(cp) {
        return Err(SealError::CheckpointAlreadySealed { id: cp.id() });
    }
    let sealed = seal_with_aad(
        key,
        &checkpoint_aad(cp, scope, key_epoch),
        cp.state_bytes(),
        rng,
    )
    .map_err(SealError::Encrypt)?;
    let mut bytes = Vec::with_capacity(SEALED_STATE_HEADER + sealed.ciphertext.len());
    bytes.extend_from_slice(SEALED_STATE_MAGIC);
    bytes.extend_from_slice(&key_epoch.get().to_be_bytes());
    bytes.extend_from_slice(&sealed.nonce);
    bytes.extend_from_slice(&sealed.ciphertext);
    Ok(Checkpoint::from_parts(
        cp.id(),
        cp.frontier().clone(),
        cp.state_hash(),
        bytes,
    ))
}

/// The same checkpoint with its state opened with `key` (of `scope` at `key_epoch`). The
/// result is unverified: [`Checkpoint::to_state`] checks the plaintext against the state hash.
pub fn open_checkpoint(
    cp: &Checkpoint,
    scope: &Scope,
    key_epoch: KeyEpoch,
    key: &SessionKey,
) -> Result<Checkpoint, SealError> {
    let id = cp.id();
    if !is_sealed_checkpoint(cp) {
        return Err(SealError::CheckpointNotSealed { id });
    }
    let (sealed, nonce, ciphertext) = split_sealed_state(cp)?;
    if sealed != key_epoch {
        return Err(SealError::CheckpointWrongEpoch {
            id,
            sealed,
            offered: key_epoch,
        });
    }
    let mut plaintext = open_parts_with_aad(
        key,
        &checkpoint_aad(cp, scope, key_epoch),
        &nonce,
        ciphertext,
    )
    .map_err(|_| SealError::CheckpointDecrypt { id })?;
    // The state leaves the zeroizing wrapper whole instead of being copied out of it: a
    // checkpoint's plaintext lives on as the returned checkpoint's state either way.
    let state = std::mem::take(&mut *plaintext);
    Ok(Checkpoint::from_parts(
        id,
        cp.frontier().clone(),
        cp.state_hash(),
        state,
    ))
}

fn split_sealed_state(
    cp: &Checkpoint,
) -> Result<(KeyEpoch, [u8; SEALED_NONCE_LEN], &[u8]), SealError> {
    let bytes = cp.state_bytes();
    let truncated = || SealError::CheckpointTruncated { id: cp.id() };
    let rest = bytes
        .strip_prefix(SEALED_STATE_MAGIC.as_slice())
        .ok_or_else(truncated)?;
    if rest.len() < 4 + SEALED_NONCE_LEN {
        return Err(truncated());
    }
    let (epoch, rest) = rest.split_at(4);
    let (nonce, ciphertext) = rest.split_at(SEALED_NONCE_LEN);
    let epoch: [u8; 4] = epoch.try_into().map_err(|_| truncated())?;
    let nonce: [u8; SEALED_NONCE_LEN] = nonce.try_into().map_err(|_| truncated())?;
    Ok((KeyEpoch::new(u32::from_be_bytes(epoch)), nonce, ciphertext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::Seq;
    use crate::domain::oplog::fold::{fold, State};
    use crate::domain::oplog::frontier::Frontier;
    use crate::domain::oplog::hlc::Hlc;
    use crate::domain::oplog::test_support::dev;
    use crate::domain::oplog::verify::verify_chain;
    use crate::domain::oplog::ChainTip;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::json;

    const CANARY: &str = "canary-7f3a9c";

    fn key(n: u8) -> SessionKey {
        SessionKey::from_bytes([n; 32])
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn turn() -> Value {
        json!({"conversation_id": "c1", "role": "user", "text": CANARY})
    }

    /// A sealed op at seq 1 (so `prev` is set), scope shared:acme, epoch 3.
    fn sealed_pair() -> (OpRecord, OpRecord) {
        let mut a = OpAuthor::new(dev(1));
        let e = KeyEpoch::new(3);
        let scope = Scope::shared("acme").unwrap();
        let first = author_sealed(
            &mut a,
            1_000,
            scope.clone(),
            Surface::Conversation,
            &turn(),
            e,
            &key(1),
            &mut rng(),
        )
        .unwrap();
        let second = author_sealed(
            &mut a,
            1_001,
            scope,
            Surface::Conversation,
            &turn(),
            e,
            &key(1),
            &mut rng(),
        )
        .unwrap();
        (first, second)
    }

    /// The same sealed payload under another header (a valid id: the relay could build it).
    fn rehome(op: &OpRecord, edit: impl FnOnce(&mut Parts)) -> OpRecord {
        let mut p = Parts {
            hlc: op.hlc(),
            seq: op.seq(),
            prev: op.prev(),
            scope: op.scope().clone(),
            surface: op.surface().clone(),
            payload: op.payload().clone(),
        };
        edit(&mut p);
        OpRecord::new(p.hlc, p.seq, p.prev, p.scope, p.surface, p.payload).unwrap()
    }

    struct Parts {
        hlc: Hlc,
        seq: Seq,
        prev: Option<OpId>,
        scope: Scope,
        surface: Surface,
        payload: OpPayload,
    }

    #[test]
    fn sealed_ops_chain_verify_and_open() {
        let (a, b) = sealed_pair();
        verify_chain(&[a, b.clone()], &ChainTip::genesis(dev(1)), None).unwrap();
        assert!(!serde_json::to_string(&b).unwrap().contains(CANARY));
        assert_eq!(sealed_epoch(&b), Some(KeyEpoch::new(3)));
        let opened = open_op(&b, KeyEpoch::new(3), &key(1)).unwrap();
        assert_eq!(opened.op_id(), b.op_id());
        assert_eq!(opened.payload().as_plain(), Some(&turn()));
        let state = fold([&opened]).unwrap();
        assert_eq!(state.events(&Surface::Conversation).count(), 1);
    }

    #[test]
    fn every_header_field_is_bound() {
        let (_, op) = sealed_pair();
        let e = KeyEpoch::new(3);
        let d2 = dev(2);
        type Edit = Box<dyn FnOnce(&mut Parts)>;
        let edits: Vec<(&str, Edit)> = vec![
            (
                "device",
                Box::new(move |p: &mut Parts| p.hlc = Hlc::new(p.hlc.wall_ms, p.hlc.counter, d2)),
            ),
            ("seq", Box::new(|p: &mut Parts| p.seq = Seq::new(5))),
            (
                "prev",
                Box::new(|p: &mut Parts| p.prev = Some(OpId::from_bytes([9; 32]))),
            ),
            ("hlc wall", Box::new(|p: &mut Parts| p.hlc.wall_ms += 1)),
            ("hlc counter", Box::new(|p: &mut Parts| p.hlc.counter += 1)),
            ("scope", Box::new(|p: &mut Parts| p.scope = Scope::Personal)),
            (
                "surface",
                Box::new(|p: &mut Parts| p.surface = Surface::Trajectory),
            ),
        ];
        for (field, edit) in edits {
            let moved = rehome(&op, edit);
            assert_eq!(
                open_op(&moved, e, &key(1)),
                Err(SealError::Decrypt {
                    op_id: moved.op_id()
                }),
                "changing {field} must break the seal"
            );
        }
        // The key epoch is bound too: relabelling the payload fails even with a key offered
        // under the new label.
        let relabelled = rehome(&op, |p| {
            if let OpPayload::Sealed { key_epoch, .. } = &mut p.payload {
                *key_epoch = 4;
            }
        });
        assert!(matches!(
            open_op(&relabelled, KeyEpoch::new(4), &key(1)),
            Err(SealError::Decrypt { .. })
        ));
    }

    #[test]
    fn wrong_key_wrong_epoch_and_flipped_bytes_fail_typed() {
        let (_, op) = sealed_pair();
        let e = KeyEpoch::new(3);
        assert_eq!(
            open_op(&op, e, &key(2)),
            Err(SealError::Decrypt { op_id: op.op_id() })
        );
        assert_eq!(
            open_op(&op, KeyEpoch::new(2), &key(1)),
            Err(SealError::WrongEpoch {
                op_id: op.op_id(),
                sealed: e,
                offered: KeyEpoch::new(2)
            })
        );
        let OpPayload::Sealed {
            nonce, ciphertext, ..
        } = op.payload().clone()
        else {
            panic!("sealed");
        };
        for i in [0, ciphertext.len() / 2, ciphertext.len() - 1] {
            let mut flipped = ciphertext.clone();
            flipped[i] ^= 0x01;
            let tampered = rehome(&op, |p| {
                p.payload = OpPayload::Sealed {
                    key_epoch: 3,
                    nonce,
                    ciphertext: flipped,
                }
            });
            assert!(matches!(
                open_op(&tampered, e, &key(1)),
                Err(SealError::Decrypt { .. })
            ));
        }
        let mut bad_nonce = nonce;
        bad_nonce[0] ^= 0x80;
        let tampered = rehome(&op, |p| {
            p.payload = OpPayload::Sealed {
                key_epoch: 3,
                nonce: bad_nonce,
                ciphertext: ciphertext.clone(),
            }
        });
        assert!(open_op(&tampered, e, &key(1)).is_err());
        let plain = op.clone().opened(json!(1));
        assert_eq!(
            open_op(&plain, e, &key(1)),
            Err(SealError::NotSealed { op_id: op.op_id() })
        );
        let msg = format!(
            "{:?} {}",
            open_op(&op, e, &key(2)),
            SealError::StampMismatch
        );
        assert!(!msg.contains(CANARY));
    }

    /// `op` with `plaintext` sealed in its place under the same header and epoch 3: what an
    /// author holding the key could write by hand.
    fn resealed(op: &OpRecord, plaintext: &[u8]) -> OpRecord {
        let aad = op_seal_aad(&op.header_bytes(), KeyEpoch::new(3));
        let sealed = seal_with_aad(&key(1), &aad, plaintext, &mut rng()).unwrap();
        rehome(op, |p| {
            p.payload = OpPayload::Sealed {
                key_epoch: 3,
                nonce: sealed.nonce,
                ciphertext: sealed.ciphertext,
            }
        })
    }

    #[test]
    fn open_op_text_is_the_canonical_text_of_what_open_op_opens() {
        let (_, op) = sealed_pair();
        let e = KeyEpoch::new(3);
        let text = open_op_text(&op, e, &key(1)).unwrap();
        assert_eq!(text.as_bytes(), canonical_json(&turn()));
        // JSON that is not canonical (spacing, key order, number form, escapes) is re-encoded.
        let plaintexts: [&[u8]; 5] = [
            br#"{"text":"canary-7f3a9c","role":"user","conversation_id":"c1"}"#,
            br#" {"conversation_id": "c1", "role": "user", "text": "canary-7f3a9c"} "#,
            br#"{"conversation_id":"c1","role":"user","text":"canary-\u0037f3a9c"}"#,
            br#"{"conversation_id":"c1","role":"user","text":"x","n":1.50}"#,
            br#"{"conversation_id":"c1","role":"user","text":"x","n":1E2}"#,
        ];
        for plaintext in plaintexts {
            let moved = resealed(&op, plaintext);
            let opened = open_op(&moved, e, &key(1)).unwrap();
            let expected = canonical_json(opened.payload().as_plain().unwrap());
            let text = open_op_text(&moved, e, &key(1)).unwrap();
            assert_eq!(
                text.as_bytes(),
                expected,
                "{}",
                String::from_utf8_lossy(plaintext)
            );
            assert_ne!(text.as_bytes(), plaintext);
        }
        // What `open_op` refuses, `open_op_text` refuses with the same error.
        let mut deep = vec![b'['; 128];
        deep.extend([b']'; 128]);
        let refused = [
            resealed(&op, b"not json"),
            resealed(&op, b"{\"a\":1"),
            resealed(&op, b"\"\xff\""),
            resealed(&op, &deep),
        ];
        for moved in &refused {
            let expected = SealError::MalformedPlaintext {
                op_id: moved.op_id(),
            };
            assert_eq!(open_op(moved, e, &key(1)).err(), Some(expected.clone()));
            assert_eq!(open_op_text(moved, e, &key(1)).err(), Some(expected));
        }
        let plain = op.clone().opened(json!(1));
        for (op, epoch, key) in [
            (&op, e, key(2)),
            (&op, KeyEpoch::new(2), key(1)),
            (&plain, e, key(1)),
        ] {
            assert_eq!(
                open_op_text(op, epoch, &key).err(),
                open_op(op, epoch, &key).err()
            );
        }
    }

    #[test]
    fn invalid_plaintext_is_refused_before_anything_changes() {
        let mut a = OpAuthor::new(dev(1));
        let before = a.clone();
        let err = author_sealed(
            &mut a,
            5,
            Scope::Personal,
            Surface::Knowledge,
            &json!({"body": "no key"}),
            KeyEpoch::FIRST,
            &key(1),
            &mut rng(),
        )
        .unwrap_err();
        assert!(matches!(err, SealError::Op(OpError::InvalidPayload { .. })));
        assert_eq!(a, before);
    }

    #[test]
    fn nonces_come_from_the_rng() {
        let mut a = OpAuthor::new(dev(1));
        let mut r = rng();
        let ops: Vec<_> = (0..3)
            .map(|i| {
                author_sealed(
                    &mut a,
                    10 + i,
                    Scope::Personal,
                    Surface::Run,
                    &json!("same"),
                    KeyEpoch::FIRST,
                    &key(1),
                    &mut r,
                )
                .unwrap()
            })
            .collect();
        let nonces: std::collections::BTreeSet<_> = ops
            .iter()
            .map(|op| match op.payload() {
                OpPayload::Sealed { nonce, .. } => *nonce,
                OpPayload::Plain(_) => [0; SEALED_NONCE_LEN],
            })
            .collect();
        assert_eq!(nonces.len(), 3);
    }

    fn checkpoint() -> (Checkpoint, State) {
        let (a, b) = sealed_pair();
        let opened: Vec<_> = [&a, &b]
            .iter()
            .map(|op| open_op(op, KeyEpoch::new(3), &key(1)).unwrap())
            .collect();
        let state = fold(&opened).unwrap();
        let mut frontier = Frontier::new();
        frontier.advance(&a);
        frontier.advance(&b);
        (Checkpoint::new(frontier, &state), state)
    }

    #[test]
    fn checkpoints_seal_keep_their_id_and_open_back() {
        let (cp, state) = checkpoint();
        let e = KeyEpoch::new(2);
        let sealed = seal_checkpoint(&cp, &Scope::Personal, e, &key(5), &mut rng()).unwrap();
        assert_eq!(sealed.id(), cp.id());
        sealed.verify_id().unwrap();
        assert!(sealed.verify().is_err(), "the hash covers the plaintext");
        assert!(is_sealed_checkpoint(&sealed) && !is_sealed_checkpoint(&cp));
        assert_eq!(checkpoint_epoch(&sealed), Ok(Some(e)));
        assert_eq!(checkpoint_epoch(&cp), Ok(None));
        assert!(!String::from_utf8_lossy(sealed.state_bytes()).contains(CANARY));
        let opened = open_checkpoint(&sealed, &Scope::Personal, e, &key(5)).unwrap();
        assert_eq!(opened.to_state().unwrap(), state);
        assert!(matches!(
            seal_checkpoint(&sealed, &Scope::Personal, e, &key(5), &mut rng()),
            Err(SealError::CheckpointAlreadySealed { .. })
        ));
    }

    #[test]
    fn checkpoint_opening_fails_typed() {
        let (cp, _) = checkpoint();
        let e = KeyEpoch::new(2);
        let sealed = seal_checkpoint(&cp, &Scope::Personal, e, &key(5), &mut rng()).unwrap();
        let id = cp.id();
        assert_eq!(
            open_checkpoint(&sealed, &Scope::Personal, e, &key(6)),
            Err(SealError::CheckpointDecrypt { id })
        );
        let org = Scope::shared("acme").unwrap();
        assert_eq!(
            open_checkpoint(&sealed, &org, e, &key(5)),
            Err(SealError::CheckpointDecrypt { id })
        );
        assert_eq!(
            open_checkpoint(&sealed, &Scope::Personal, KeyEpoch::FIRST, &key(5)),
            Err(SealError::CheckpointWrongEpoch {
                id,
                sealed: e,
                offered: KeyEpoch::FIRST
            })
        );
        assert_eq!(
            open_checkpoint(&cp, &Scope::Personal, e, &key(5)),
            Err(SealError::CheckpointNotSealed { id })
        );
        let mut flipped = sealed.state_bytes().to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let tampered = Checkpoint::from_parts(id, cp.frontier().clone(), cp.state_hash(), flipped);
        assert_eq!(
            open_checkpoint(&tampered, &Scope::Personal, e, &key(5)),
            Err(SealError::CheckpointDecrypt { id })
        );
        let short = Checkpoint::from_parts(
            id,
            cp.frontier().clone(),
            cp.state_hash(),
            SEALED_STATE_MAGIC.to_vec(),
        );
        assert_eq!(
            checkpoint_epoch(&short),
            Err(SealError::CheckpointTruncated { id })
        );
    }
}

//! Checkpoints: a folded state at a frontier, content-addressed, for cold bootstrap and gc.
//!
//! A [`Checkpoint`] is `{frontier, state_hash, state}` where `state` is the canonical state
//! bytes (the binary layout of the `state_binary` module; checkpoints written before it hold
//! the JSON layout of the `state_codec` module, and still open) of the fold of exactly the ops
//! up to `frontier`, and
//! `state_hash` is [`hash_state_bytes`] of them. Its id is
//!
//! ```text
//! id = SHA-256( lp("tandem-checkpoint-v1") || lp(canonical_json(frontier)) || lp(state_hash) )
//! ```
//!
//! with `lp(x) = u64_be(len(x)) || x` and the frontier encoding of the `frontier` module.
//! The id covers the state through `state_hash` rather than directly: under end-to-end
//! encryption the state bytes travel sealed, and the relay can still check the id and the
//! frontier (to gc the ops the checkpoint covers) without the plaintext, while a device that
//! opens the state checks it against `state_hash` ([`Checkpoint::verify`]).
//!
//! Resuming from a checkpoint is exact: folding the tail (the ops after the frontier) into the
//! checkpoint's state gives the same state, and the same state hash, as folding every op. The
//! state keeps what that needs (every event, every intent op, each record's winner).

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::canonical::{canonical_json, from_hex_array, hex_serde, to_hex, Framer};
use super::fold::{hash_state_bytes, State};
use super::frontier::Frontier;
use super::state_binary::Input;
use super::state_codec::StateDecodeError;
use crate::domain::ids::IdError;

/// Domain-separation tag of checkpoint ids.
pub const CHECKPOINT_ID_TAG: &str = "tandem-checkpoint-v1";

/// From this state size on, [`Checkpoint::to_state`] hashes the state beside decoding it.
const PARALLEL_HASH_MIN_BYTES: usize = 1 << 20;

/// The content address of a checkpoint, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CheckpointId([u8; 32]);

impl CheckpointId {
    /// The raw digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 lowercase hex characters.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        from_hex_array(s).map(Self).ok_or(IdError {
            kind: "checkpoint",
            reason: "must be 64 lowercase hex characters",
        })
    }
}

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointId({self})")
    }
}

impl FromStr for CheckpointId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for CheckpointId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<CheckpointId> for String {
    fn from(id: CheckpointId) -> String {
        id.to_string()
    }
}

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The id does not match the frontier and state hash.
    #[error("checkpoint id {claimed} does not match its content ({computed})")]
    IdMismatch {
        /// The id the checkpoint carries.
        claimed: CheckpointId,
        /// The id recomputed from its content.
        computed: CheckpointId,
    },
    /// The state bytes do not hash to the state hash.
    #[error("checkpoint {id}: state bytes do not match the state hash")]
    StateHashMismatch {
        /// The checkpoint.
        id: CheckpointId,
    },
    /// The state bytes are not a canonical state.
    #[error("checkpoint {id}: {source}")]
    State {
        /// The checkpoint.
        id: CheckpointId,
        /// What was wrong with the bytes.
        source: StateDecodeError,
    },
}

/// A content-addressed checkpoint. See the module docs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    id: CheckpointId,
    frontier: Frontier,
    #[serde(
        serialize_with = "hex_serde::serialize",
        deserialize_with = "hex_serde::deserialize_array"
    )]
    state_hash: [u8; 32],
    #[serde(
        serialize_with = "hex_serde::serialize",
        deserialize_with = "hex_serde::deserialize_vec"
    )]
    state: Vec<u8>,
}

impl Checkpoint {
    /// A checkpoint of `state`, which must be the fold of exactly the ops up to `frontier`.
    pub fn new(frontier: Frontier, state: &State) -> Self {
        let bytes = state.to_canonical_bytes();
        let state_hash = hash_state_bytes(&bytes);
        let id = checkpoint_id(&frontier, &state_hash);
        Self {
            id,
            frontier,
            state_hash,
            state: bytes,
        }
    }

    /// A checkpoint as read from storage, unverified: call [`Checkpoint::verify`].
    pub fn from_parts(
        id: CheckpointId,
        frontier: Frontier,
        state_hash: [u8; 32],
        state: Vec<u8>,
    ) -> Self {
        Self {
            id,
            frontier,
            state_hash,
            state,
        }
    }

    /// The id it carries.
    pub fn id(&self) -> CheckpointId {
        self.id
    }

    /// The frontier it covers.
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// The hash of its state bytes.
    pub fn state_hash(&self) -> [u8; 32] {
        self.state_hash
    }

    /// The canonical state bytes.
    pub fn state_bytes(&self) -> &[u8] {
        &self.state
    }

    /// Checks the id against the frontier and state hash only (what a relay can check without
    /// the state plaintext).
    pub fn verify_id(&self) -> Result<(), CheckpointError> {
        let computed = checkpoint_id(&self.frontier, &self.state_hash);
        if computed != self.id {
            return Err(CheckpointError::IdMismatch {
                claimed: self.id,
                computed,
            });
        }
        Ok(())
    }

    /// Recomputes the id and the state hash.
    pub fn verify(&self) -> Result<(), CheckpointError> {
        self.verify_id()?;
        self.check_state_hash(hash_state_bytes(&self.state))
    }

    /// Whether `hash`, computed over the state bytes, is the state hash the checkpoint claims.
    fn check_state_hash(&self, hash: [u8; 32]) -> Result<(), CheckpointError> {
        if hash != self.state_hash {
            return Err(CheckpointError::StateHashMismatch { id: self.id });
        }
        Ok(())
    }

    /// Verifies the checkpoint and decodes its state. A large state is hashed on a thread of
    /// its own while it decodes; a hash mismatch is reported ahead of any decoding error, as if
    /// the two had run in turn.
    pub fn to_state(&self) -> Result<State, CheckpointError> {
        self.verify_id()?;
        self.checked_decode(Input::Copied(&self.state))
    }

    /// [`Checkpoint::to_state`] for a checkpoint that is not needed afterwards: the state keeps
    /// the state bytes and its payloads point into them, instead of each payload being copied
    /// out. Decoding then needs about the payloads' size less memory and no allocation per
    /// payload; the bytes stay allocated as long as the state holds any payload decoded from
    /// them.
    pub fn into_state(mut self) -> Result<State, CheckpointError> {
        self.verify_id()?;
        let bytes = Bytes::from(std::mem::take(&mut self.state));
        self.checked_decode(Input::Shared(&bytes))
    }

    /// Decodes `input` (this checkpoint's state bytes) while they are hashed, and checks the
    /// hash first. See [`Checkpoint::to_state`].
    fn checked_decode(&self, input: Input<'_>) -> Result<State, CheckpointError> {
        let bytes = input.bytes();
        let decode = || State::decode(input);
        let (hash, decoded) = if bytes.len() < PARALLEL_HASH_MIN_BYTES {
            (hash_state_bytes(bytes), decode())
        } else {
            std::thread::scope(|s| {
                let hash = s.spawn(|| hash_state_bytes(bytes));
                let decoded = decode();
                let hash = hash.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                (hash, decoded)
            })
        };
        self.check_state_hash(hash)?;
        decoded.map_err(|source| CheckpointError::State {
            id: self.id,
            source,
        })
    }
}

// The state bytes are user data: `Debug` shows their size only.
impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("id", &self.id)
            .field("frontier", &self.frontier)
            .field("state_hash", &to_hex(&self.state_hash))
            .field("state", &format_args!("<{} bytes>", self.state.len()))
            .finish()
    }
}

fn checkpoint_id(frontier: &Frontier, state_hash: &[u8; 32]) -> CheckpointId {
    let mut f = Framer::hashing(CHECKPOINT_ID_TAG);
    f.field(&canonical_json(&frontier.to_canonical_json()))
        .field(state_hash);
    CheckpointId(f.digest())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::oplog::fold::{fold, state_hash};
    use crate::domain::oplog::frontier::ChainHead;
    use crate::domain::oplog::op::OpRecord;
    use crate::domain::oplog::test_support::{arb_chains, author};
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn frontier_of(chains: &[Vec<OpRecord>]) -> Frontier {
        let mut f = Frontier::new();
        for chain in chains {
            for op in chain {
                f.advance(op);
            }
        }
        f
    }

    fn sample() -> (Vec<Vec<OpRecord>>, Checkpoint) {
        use crate::domain::oplog::test_support::OpSpec;
        let chains = author(&[vec![
            (1, OpSpec::Turn { role: 0, text: 1 }),
            (
                1,
                OpSpec::Fact {
                    key: 0,
                    value: 1,
                    deleted: false,
                },
            ),
        ]]);
        let ops: Vec<_> = chains.iter().flatten().collect();
        let cp = Checkpoint::new(frontier_of(&chains), &fold(ops).unwrap());
        (chains, cp)
    }

    #[test]
    fn a_fresh_checkpoint_verifies_and_restores_its_state() {
        let (chains, cp) = sample();
        cp.verify().unwrap();
        let ops: Vec<_> = chains.iter().flatten().collect();
        let state = fold(ops).unwrap();
        assert_eq!(cp.to_state().unwrap(), state);
        assert_eq!(cp.state_hash(), state_hash(&state));
        assert_eq!(
            cp.frontier().head(chains[0][1].device()),
            Some(&ChainHead::of(&chains[0][1]))
        );
        assert_eq!(cp.state_bytes(), state.to_canonical_bytes());
    }

    #[test]
    fn a_checkpoint_written_in_the_json_layout_still_opens() {
        let (chains, cp) = sample();
        let state = cp.to_state().unwrap();
        let json = state.json_layout_bytes();
        let hash = hash_state_bytes(&json);
        let frontier = frontier_of(&chains);
        let old = Checkpoint::from_parts(checkpoint_id(&frontier, &hash), frontier, hash, json);
        old.verify().unwrap();
        assert_ne!(old.id(), cp.id(), "the layouts hash apart");
        assert_eq!(old.to_state().unwrap(), state);
    }

    #[test]
    fn tampered_state_is_a_state_hash_mismatch() {
        let (_, cp) = sample();
        let mut bytes = cp.state_bytes().to_vec();
        bytes.push(b' ');
        let bad = Checkpoint::from_parts(cp.id(), cp.frontier().clone(), cp.state_hash(), bytes);
        assert!(bad.verify_id().is_ok(), "a relay cannot tell");
        assert_eq!(
            bad.verify(),
            Err(CheckpointError::StateHashMismatch { id: cp.id() })
        );
        assert!(bad.to_state().is_err());
    }

    #[test]
    fn a_large_state_hashed_beside_its_decoding_is_still_checked() {
        let (state, cp) = large();
        assert_eq!(cp.to_state().unwrap(), state);
        // Same length, one letter changed: still decodes, but not to the hashed state.
        let mut bytes = cp.state_bytes().to_vec();
        let at = bytes.len() / 2;
        let at = at + bytes[at..].iter().position(|b| *b == b'z').unwrap();
        bytes[at] = b'y';
        let bad = Checkpoint::from_parts(cp.id(), cp.frontier().clone(), cp.state_hash(), bytes);
        assert_eq!(
            bad.to_state(),
            Err(CheckpointError::StateHashMismatch { id: cp.id() })
        );
        // Not even JSON: the hash mismatch is still what is reported.
        let mut bytes = cp.state_bytes().to_vec();
        bytes[0] = b'x';
        let bad = Checkpoint::from_parts(cp.id(), cp.frontier().clone(), cp.state_hash(), bytes);
        assert_eq!(
            bad.to_state(),
            Err(CheckpointError::StateHashMismatch { id: cp.id() })
        );
    }

    /// A checkpoint of chat turns large enough to be hashed beside its decoding.
    fn large() -> (State, Checkpoint) {
        let ops = crate::domain::oplog::test_support::user_turns(5, 2600, |i| {
            format!("turn {i} {}", "z".repeat(400))
        });
        let state = fold(&ops).unwrap();
        let cp = Checkpoint::new(frontier_of(&[ops]), &state);
        assert!(cp.state_bytes().len() >= PARALLEL_HASH_MIN_BYTES);
        (state, cp)
    }

    #[test]
    fn into_state_decodes_as_to_state_does_with_payloads_in_the_state_bytes() {
        for cp in [sample().1, large().1] {
            let owned = cp.clone();
            let bytes = owned.state_bytes().as_ptr_range();
            let state = owned.into_state().unwrap();
            assert_eq!(state, cp.to_state().unwrap());
            let mut shared = 0;
            for entry in state.events(&crate::domain::oplog::Surface::Conversation) {
                assert!(
                    bytes.contains(&entry.payload.as_str().as_ptr()),
                    "a copied payload"
                );
                shared += 1;
            }
            assert!(shared > 0);
        }
    }

    #[test]
    fn into_state_refuses_what_to_state_refuses() {
        let (_, cp) = large();
        let (_, small) = sample();
        let altered = |cp: &Checkpoint, at: usize, to: u8| {
            let mut bytes = cp.state_bytes().to_vec();
            bytes[at] = to;
            Checkpoint::from_parts(cp.id(), cp.frontier().clone(), cp.state_hash(), bytes)
        };
        let at = cp.state_bytes().len() / 2;
        let z = at
            + cp.state_bytes()[at..]
                .iter()
                .position(|b| *b == b'z')
                .unwrap();
        let non_canonical = {
            let bytes = b"{\"v\": 1}".to_vec();
            let hash = hash_state_bytes(&bytes);
            let id = checkpoint_id(small.frontier(), &hash);
            Checkpoint::from_parts(id, small.frontier().clone(), hash, bytes)
        };
        let cases = [
            altered(&cp, z, b'y'),
            altered(&cp, 0, b'x'),
            altered(&small, 1, b'x'),
            non_canonical,
            Checkpoint::from_parts(
                small.id(),
                Frontier::new(),
                small.state_hash(),
                small.state_bytes().to_vec(),
            ),
        ];
        for bad in cases {
            let expected = bad.to_state().unwrap_err();
            assert_eq!(bad.into_state().unwrap_err(), expected);
        }
    }

    #[test]
    fn tampered_frontier_or_hash_is_an_id_mismatch() {
        let (_, cp) = sample();
        let bad = Checkpoint::from_parts(
            cp.id(),
            Frontier::new(),
            cp.state_hash(),
            cp.state_bytes().to_vec(),
        );
        assert!(
            matches!(bad.verify(), Err(CheckpointError::IdMismatch { claimed, .. }) if claimed == cp.id())
        );
        let bad = Checkpoint::from_parts(
            cp.id(),
            cp.frontier().clone(),
            [0; 32],
            cp.state_bytes().to_vec(),
        );
        assert!(matches!(
            bad.verify_id(),
            Err(CheckpointError::IdMismatch { .. })
        ));
    }

    #[test]
    fn consistent_but_non_canonical_state_bytes_are_refused_on_restore() {
        let (_, cp) = sample();
        let bytes = b"{\"v\": 1}".to_vec();
        let hash = hash_state_bytes(&bytes);
        let id = checkpoint_id(cp.frontier(), &hash);
        let odd = Checkpoint::from_parts(id, cp.frontier().clone(), hash, bytes);
        odd.verify().unwrap();
        assert!(matches!(
            odd.to_state(),
            Err(CheckpointError::State {
                source: StateDecodeError::NonCanonical,
                ..
            })
        ));
    }

    #[test]
    fn ids_serde_and_debug() {
        let (_, cp) = sample();
        let json = serde_json::to_string(&cp).unwrap();
        let back: Checkpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cp);
        back.verify().unwrap();
        assert_eq!(CheckpointId::parse(&cp.id().to_string()).unwrap(), cp.id());
        assert_eq!(cp.id().as_bytes().len(), 32);
        assert!(CheckpointId::parse("00").is_err());
        let dbg = format!("{cp:?}");
        assert!(dbg.contains("bytes>") && !dbg.contains("t1"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// (d) fold(checkpoint state at any frontier, tail ops) == fold(all ops).
        #[test]
        fn checkpoint_plus_tail_equals_full_fold(chains in arb_chains(8), seed in any::<u64>()) {
            let chains = author(&chains);
            let all: Vec<&OpRecord> = chains.iter().flatten().collect();
            let full = fold(all.iter().copied()).unwrap();

            // Cut every chain at an arbitrary point: the prefix is covered by the checkpoint.
            let mut rng = StdRng::seed_from_u64(seed);
            let cuts: Vec<usize> = chains.iter().map(|c| rng.gen_range(0..=c.len())).collect();
            let prefix: Vec<&OpRecord> =
                chains.iter().zip(&cuts).flat_map(|(c, &n)| &c[..n]).collect();
            let tail: Vec<&OpRecord> =
                chains.iter().zip(&cuts).flat_map(|(c, &n)| &c[n..]).collect();
            let mut frontier = Frontier::new();
            for op in &prefix {
                prop_assert!(frontier.advance(op));
            }
            let cp = Checkpoint::new(frontier, &fold(prefix.iter().copied()).unwrap());

            // A device bootstrapping from the (serialized) checkpoint.
            let wire = serde_json::to_vec(&cp).unwrap();
            let received: Checkpoint = serde_json::from_slice(&wire).unwrap();
            // The tail folds onto a state whose payloads share the checkpoint's bytes.
            let mut state = received.clone().into_state().unwrap();
            prop_assert_eq!(&state, &received.to_state().unwrap());
            for op in &tail {
                prop_assert!(!received.frontier().covers(op.device(), op.seq()));
            }
            state.apply_all(tail.iter().copied()).unwrap();
            prop_assert_eq!(state_hash(&state), state_hash(&full));
            prop_assert_eq!(state, full);
        }
    }
}

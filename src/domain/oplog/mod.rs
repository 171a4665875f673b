//! Device-sync oplog: HLC, ops, verification, fold, checkpoints, transcript repair, intents and
//! leases.
//!
//! Every device appends its own ops to a hash-chained log (seq contiguous from 0, each op naming
//! its predecessor, each op id a SHA-256 content address over header and payload). Devices
//! exchange ops through a relay, **verify** them ([`verify_chain`]), open sealed payloads, and
//! **fold** them ([`fold()`], [`State`]) into a state that depends only on the set of ops held,
//! so every device holding the same ops computes the same [`state_hash`].
//!
//! ```text
//!  author ──► OpRecord ──► relay ──► verify_chain ──► open ──► State::apply_all ──► state_hash
//!  (HlcClock,   (op id =                (ids, seqs,           (event streams,       Checkpoint
//!   OpAuthor)    canonical recipe)       prev, HLC, drift)     LWW records, intents)
//! ```
//!
//! Everything here is pure: no I/O, no clock reads, no randomness. Time arrives as `now_ms`,
//! decisions ([`check_dispatch`], [`resume`]) and errors are returned as data.
//!
//! | file            | concept                                                            |
//! |-----------------|--------------------------------------------------------------------|
//! | `hlc`           | hybrid logical clock with a max-drift guard                        |
//! | `scope`         | personal / shared-with-org scopes                                  |
//! | `surface`       | surfaces and their fold tiers                                      |
//! | `op`            | op ids, payloads, op records                                       |
//! | `canonical`     | canonical JSON and the op-id recipe                                |
//! | `author`        | appending this device's ops                                        |
//! | `frontier`      | chain heads, tips and frontiers                                    |
//! | `verify`        | chain verification (tamper, gap, fork, HLC order, drift)           |
//! | `payload`       | per-surface payload shapes                                         |
//! | `fold`          | the deterministic fold and the state hash                          |
//! | `state_codec`   | state bytes: the JSON layout, decoding either layout               |
//! | `state_binary`  | the binary state layout: the canonical state bytes                 |
//! | `checkpoint`    | content-addressed checkpoints                                      |
//! | `intent`        | the intent ledger and committed-run oracle                         |
//! | `lease`         | execution leases and the dispatch fence                            |
//! | `transcript`    | conversation turns and provider-valid resume                       |
//! | `seal`          | end-to-end sealing of op payloads and checkpoint state             |

pub mod author;
mod binary;
pub mod canonical;
mod canonical_check;
pub mod checkpoint;
pub mod fold;
pub mod frontier;
pub mod hlc;
pub mod intent;
pub mod lease;
pub mod op;
pub mod op_codec;
pub mod payload;
pub mod scope;
pub mod seal;
mod state_binary;
pub mod state_codec;
pub mod surface;
pub mod transcript;
pub mod verify;

#[cfg(test)]
mod test_support;

pub use author::OpAuthor;
pub use canonical::{canonical_json, op_header_bytes, op_id_from_header, OP_ID_TAG};
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointId, CHECKPOINT_ID_TAG};
pub(crate) use fold::ReadyOp;
pub use fold::{
    fold, hash_state_bytes, state_hash, EventEntry, FoldError, FoldSummary, RecordEntry, State,
    STATE_HASH_TAG,
};
pub use frontier::{ChainHead, ChainTip, Frontier};
pub use hlc::{check_drift, Hlc, HlcClock, HlcError, DEFAULT_MAX_DRIFT_MS};
pub use intent::{
    IgnoreReason, IgnoredTransition, Intent, IntentEntry, IntentId, IntentLedger, IntentStatus,
    IntentView,
};
pub use lease::{check_dispatch, DispatchDecision, Lease, LeaseError, LeaseSlot};
pub use op::{OpError, OpId, OpPayload, OpRecord, SEALED_NONCE_LEN};
pub use op_codec::{
    claimed_op_id, decode_op, encode_op, encode_op_into, encoded_len, OpDecodeError, OP_FORMAT,
};
pub use payload::{
    validate_payload, Payload, PayloadError, MAX_PAYLOAD_DEPTH, RECORD_KEY_FIELD, TOMBSTONE_FIELD,
};
pub use scope::{OrgId, Scope};
pub use seal::{
    author_sealed, checkpoint_epoch, is_sealed_checkpoint, op_seal_aad, open_checkpoint, open_op,
    seal_checkpoint, sealed_epoch, SealError,
};
pub(crate) use seal::{author_sealed_text, open_op_text};
pub use state_codec::StateDecodeError;
pub use surface::{FoldTier, RegistryKind, Surface};
pub use transcript::{
    conversation_turns, is_provider_valid, resume, CallRepair, ConversationTurn, MergeRepair,
    RepairReport, ResultRepair, ResumeMessage, ToolCall, Turn,
};
pub use verify::{check_against_held, verify_batch, verify_chain, DriftGuard, VerifyError};

//! Synchronous work run on blocking workers: opening sealed ops and checkpoints, ingesting a
//! pulled batch, and rebuilding the fold from the journal.
//!
//! Nothing here touches the async runtime: every function takes the ports it needs and is
//! called through [`blocking`], which moves it onto tokio's blocking pool.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinError;

use crate::domain::crypto::{KeyEpoch, SessionKey};
use crate::domain::ids::{DeviceId, Seq};
use crate::domain::oplog::{
    check_against_held, is_sealed_checkpoint, open_checkpoint, verify_chain, ChainTip, Checkpoint,
    CheckpointId, DriftGuard, Frontier, OpPayload, OpRecord, Scope, State, VerifyError,
};
use crate::domain::oplog::{open_op_text, ReadyOp};
use crate::ports::{BatchLimit, Journal, KeyError, KeyProvider};

use super::error::SyncError;
use super::SyncConfig;

/// Ops read from the journal per query while replaying, at most.
const PAGE_OPS: usize = 512;

/// What one journal query reads while replaying: up to [`PAGE_OPS`] ops within the
/// configured batch bytes, so a replay of large messages holds no more at once than a pull.
pub(super) fn replay_page(config: &SyncConfig) -> BatchLimit {
    BatchLimit::new(PAGE_OPS, config.batch_bytes)
}

/// Runs `work` on tokio's blocking pool. A panic in `work` is resumed on the caller.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SyncError> + Send + 'static,
) -> Result<T, SyncError> {
    joined(tokio::task::spawn_blocking(work)).await?
}

/// What a spawned task (its handle, or a borrow of it) returned. A panic in the task is
/// resumed on the caller.
pub(super) async fn joined<T>(
    task: impl Future<Output = Result<T, JoinError>>,
) -> Result<T, SyncError> {
    match task.await {
        Ok(output) => Ok(output),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(SyncError::Worker(e.to_string())),
    }
}

/// Opens sealed ops and checkpoints, fetching each scope key once.
pub(super) struct Opener {
    keys: Arc<dyn KeyProvider>,
    cache: BTreeMap<(Scope, KeyEpoch), SessionKey>,
}

impl Opener {
    pub(super) fn new(keys: Arc<dyn KeyProvider>) -> Self {
        Self {
            keys,
            cache: BTreeMap::new(),
        }
    }

    fn key(&mut self, scope: &Scope, epoch: KeyEpoch) -> Result<SessionKey, SyncError> {
        if let Some(key) = self.cache.get(&(scope.clone(), epoch)) {
            return Ok(key.clone());
        }
        let key = self.keys.key(scope, epoch)?;
        self.cache.insert((scope.clone(), epoch), key.clone());
        Ok(key)
    }

    /// The op opened (if sealed) and checked against its surface, ready to fold; a plaintext
    /// op only if `plaintext_ok`.
    pub(super) fn open(&mut self, op: &OpRecord, plaintext_ok: bool) -> Result<ReadyOp, SyncError> {
        match op.payload() {
            OpPayload::Sealed { key_epoch, .. } => {
                let epoch = KeyEpoch::new(*key_epoch);
                let key = self.key(op.scope(), epoch)?;
                let text = open_op_text(op, epoch, &key)?;
                Ok(ReadyOp::from_text(op, &text)?)
            }
            OpPayload::Plain(_) if plaintext_ok => Ok(ReadyOp::from_plain(op)?),
            OpPayload::Plain(_) => Err(SyncError::PlaintextRefused { op_id: op.op_id() }),
        }
    }

    /// The checkpoint's state, opened (personal scope key) if sealed and checked against its
    /// id and state hash; a plaintext state only if `plaintext_ok`.
    pub(super) fn checkpoint_state(
        &mut self,
        cp: &Checkpoint,
        plaintext_ok: bool,
    ) -> Result<State, SyncError> {
        if !is_sealed_checkpoint(cp) {
            if !plaintext_ok {
                return Err(SyncError::PlaintextCheckpoint { id: cp.id() });
            }
            return Ok(cp.to_state()?);
        }
        let epoch = crate::domain::oplog::checkpoint_epoch(cp)?
            .ok_or(SyncError::PlaintextCheckpoint { id: cp.id() })?;
        let key = self.key(&Scope::Personal, epoch)?;
        let opened = open_checkpoint(cp, &Scope::Personal, epoch, &key)?;
        // The opened plaintext is this call's own: the state keeps it rather than copying
        // every payload out of it.
        Ok(opened.into_state()?)
    }
}

/// The state the journal describes: its base checkpoint's state plus every op after the
/// base's frontier. Returns the state and the base's id.
pub(super) fn rebuild(
    journal: &dyn Journal,
    opener: &mut Opener,
    page: BatchLimit,
) -> Result<(State, Frontier, Option<CheckpointId>), SyncError> {
    let base = journal.base_checkpoint()?;
    let (state, base_frontier, base_id) = match &base {
        // The base was verified when it was installed; plaintext bases are accepted because
        // the device accepted them then.
        Some(cp) => (
            opener.checkpoint_state(cp, true)?,
            cp.frontier().clone(),
            Some(cp.id()),
        ),
        None => (State::new(), Frontier::new(), None),
    };
    let (state, frontier) = fold_tail(journal, opener, state, &base_frontier, page)?;
    Ok((state, frontier, base_id))
}

/// Folds every journaled op after `base_frontier` into `state` (the base's opened state),
/// returning it with the journal's frontier. [`rebuild`] without decoding the base again.
pub(super) fn fold_tail(
    journal: &dyn Journal,
    opener: &mut Opener,
    mut state: State,
    base_frontier: &Frontier,
    page: BatchLimit,
) -> Result<(State, Frontier), SyncError> {
    let frontier = journal.frontier()?;
    for (device, head) in frontier.iter() {
        let from = base_frontier.tip(*device).next_seq();
        fold_range(journal, opener, &mut state, *device, from, head.seq, page)?;
    }
    Ok((state, frontier))
}

/// Folds a chain's journaled ops with `from <= seq <= to` into `state`.
pub(super) fn fold_range(
    journal: &dyn Journal,
    opener: &mut Opener,
    state: &mut State,
    device: DeviceId,
    from: Seq,
    to: Seq,
    page: BatchLimit,
) -> Result<(), SyncError> {
    let mut next = from;
    // `ops_from` returns seqs >= `next`, so every round moves `next` past at least one op:
    // the loop ends after at most `to - from + 1` ops.
    while next <= to {
        let ops = journal.ops_from(device, next, page)?;
        let Some(last) = ops.last().map(OpRecord::seq) else {
            break;
        };
        let opened = ops
            .iter()
            .filter(|op| op.seq() <= to)
            .map(|op| opener.open(op, true))
            .collect::<Result<Vec<_>, _>>()?;
        state.apply_ready(opened);
        next = last.next();
    }
    Ok(())
}

/// What ingesting a pulled batch produced.
pub(super) struct Ingested {
    /// The batch's new ops, opened and checked against their surfaces.
    pub(super) opened: Vec<ReadyOp>,
    /// Ops newly journaled.
    pub(super) journaled: usize,
    /// The journal's frontier, read back after the commit.
    pub(super) frontier: Frontier,
    /// Chains this device cannot take yet (see [`take_chain`]), each with why: the batch's
    /// ops on them from the first such op on were left out.
    pub(super) held: Vec<(DeviceId, SyncError)>,
}

/// Verifies, opens and journals a pulled batch in one journal transaction. Ops at or below the
/// journal frontier are dropped (a re-delivery), unless they contradict the held head (a fork).
///
/// A chain that cannot be taken *yet* is held back from its first such op on, and the other
/// chains are journaled (see [`take_chain`]); any other error fails the whole batch and
/// nothing is journaled.
pub(super) fn ingest(
    journal: &dyn Journal,
    opener: &mut Opener,
    ops: Vec<OpRecord>,
    drift: DriftGuard,
    plaintext_ok: bool,
) -> Result<Ingested, SyncError> {
    let frontier = journal.frontier()?;
    let mut chains: BTreeMap<DeviceId, Vec<OpRecord>> = BTreeMap::new();
    for op in ops {
        match frontier.head(op.device()) {
            Some(head) if op.seq() == head.seq && op.op_id() != head.op_id => {
                return Err(VerifyError::Fork {
                    device: op.device(),
                    seq: op.seq(),
                    held: head.op_id,
                    incoming: op.op_id(),
                }
                .into());
            }
            Some(head) if op.seq() <= head.seq => {
                if op.seq() == head.seq {
                    // Same id: still make sure the content really hashes to it.
                    let held = journal.ops_from(op.device(), op.seq(), BatchLimit::ops(1))?;
                    if let Some(held) = held.first() {
                        check_against_held(&op, held)?;
                    }
                }
            }
            _ => chains.entry(op.device()).or_default().push(op),
        }
    }
    let mut fresh = Vec::new();
    let mut opened = Vec::new();
    let mut held = Vec::new();
    for (device, mut chain) in chains {
        chain.sort_by_key(OpRecord::seq);
        let (open, not_yet) =
            take_chain(&chain, &frontier.tip(device), drift, opener, plaintext_ok)?;
        chain.truncate(open.len());
        fresh.append(&mut chain);
        opened.extend(open);
        if let Some(why) = not_yet {
            held.push((device, why));
        }
    }
    if fresh.is_empty() {
        return Ok(Ingested {
            opened,
            journaled: 0,
            frontier,
            held,
        });
    }
    let commit = journal.commit(&fresh)?;
    Ok(Ingested {
        opened,
        journaled: commit.inserted,
        frontier: journal.frontier()?,
        held,
    })
}

/// Whether `error` says an op cannot be opened *yet*: it is sealed under a scope key this
/// device does not hold (the key arrives later), through no fault of the relay or the op.
fn is_key_not_held_yet(error: &SyncError) -> bool {
    matches!(
        error,
        SyncError::Keys(KeyError::NoKey { .. } | KeyError::UnknownEpoch { .. })
    )
}

/// Verifies one chain's new ops (in seq order) against its journaled `tip`, opens them and
/// checks their payloads against their surfaces.
/// Returns the opened ops that can be taken now, a prefix of `ops`, and, if that is not all
/// of them, why the next one cannot be taken *yet*: its stamp is further ahead of local time
/// than the drift bound (local time catches up), or its scope key is not held yet. Any other
/// error is returned.
fn take_chain(
    ops: &[OpRecord],
    tip: &ChainTip,
    drift: DriftGuard,
    opener: &mut Opener,
    plaintext_ok: bool,
) -> Result<(Vec<ReadyOp>, Option<SyncError>), SyncError> {
    let (verified, mut not_yet) = match verify_chain(ops, tip, Some(drift)) {
        Ok(_) => (ops.len(), None),
        // Every op before it passed every check.
        Err(e @ VerifyError::TooFarInFuture { seq, .. }) => (
            ops.iter().take_while(|op| op.seq() < seq).count(),
            Some(e.into()),
        ),
        Err(e) => return Err(e.into()),
    };
    let mut opened = Vec::with_capacity(verified);
    for op in &ops[..verified] {
        match opener.open(op, plaintext_ok) {
            Ok(op) => opened.push(op),
            Err(e) if is_key_not_held_yet(&e) => {
                not_yet = Some(e);
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok((opened, not_yet))
}

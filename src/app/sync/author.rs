//! Authoring: appending this device's ops (sealed under E2E), one transaction per batch.

use std::sync::Arc;

use serde_json::Value;

use crate::domain::crypto::{KeyEpoch, SessionKey};
use crate::domain::oplog::{author_sealed_text, ReadyOp};
use crate::domain::oplog::{
    ChainHead, ChainTip, ConversationTurn, Intent, IntentStatus, OpPayload, OpRecord, Scope,
    SealError, Surface, Turn,
};

use super::replay::blocking;
use super::{AppendedOp, DeviceSync, SyncError};

impl DeviceSync {
    /// Appends one op on `surface` in `scope`. See [`DeviceSync::append_batch`].
    pub async fn append(
        &mut self,
        scope: Scope,
        surface: Surface,
        payload: Value,
    ) -> Result<AppendedOp, SyncError> {
        let mut ops = self.append_batch(vec![(scope, surface, payload)]).await?;
        ops.pop()
            .ok_or(SyncError::Internal("an appended op went missing"))
    }

    /// Appends many ops in one journal transaction (group commit), in order. Each payload is
    /// checked against its surface and, under E2E, sealed with its scope's current key. On
    /// error nothing is journaled and nothing changes.
    pub async fn append_batch(
        &mut self,
        entries: Vec<(Scope, Surface, Value)>,
    ) -> Result<Vec<AppendedOp>, SyncError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        if self.config.e2e {
            let scopes = entries.iter().map(|(scope, _, _)| scope.clone()).collect();
            self.load_current_keys(scopes).await?;
        }
        let now = self.now_ms();
        let mut author = self.author.clone();
        let mut stored = Vec::with_capacity(entries.len());
        let mut opened = Vec::with_capacity(entries.len());
        for (scope, surface, payload) in entries {
            // Each op is checked against its surface as it is authored; the fold checks the
            // same rules again on the canonical text, without building a JSON tree.
            let (op, ready) = if self.config.e2e {
                let (epoch, key) = self.current_key(&scope)?;
                let mut rng: &mut (dyn rand_core::CryptoRngCore + Send + Sync) = &mut *self.rng;
                let (op, text) = author_sealed_text(
                    &mut author,
                    now,
                    scope,
                    surface,
                    &payload,
                    epoch,
                    &key,
                    &mut rng,
                )
                .map_err(|e| match e {
                    // A payload that does not fit its surface is the same error with or
                    // without E2E.
                    SealError::Op(op) => SyncError::Op(op),
                    other => SyncError::Seal(other),
                })?;
                let ready = ReadyOp::from_text(&op, &text)?;
                (op, ready)
            } else {
                let op = author.append(now, scope, surface, OpPayload::Plain(payload))?;
                let ready = ReadyOp::from_plain(&op)?;
                (op, ready)
            };
            opened.push(ready);
            stored.push(op);
        }
        let journal = Arc::clone(&self.journal);
        // Moved to the worker and handed back, not cloned: a batch carries every ciphertext.
        let stored = blocking(move || {
            journal.commit(&stored)?;
            Ok(stored)
        })
        .await?;
        self.author = author;
        if let Some(last) = stored.last() {
            self.frontier.set(ChainTip {
                device: self.device,
                head: Some(ChainHead::of(last)),
            });
        }
        self.state.apply_ready(opened);
        self.report_clock_ahead();
        Ok(stored.iter().map(appended).collect())
    }

    /// Records a conversation turn (role, text, tool calls or the call a tool result answers).
    pub async fn record_turn(
        &mut self,
        scope: Scope,
        conversation_id: &str,
        turn: Turn,
    ) -> Result<AppendedOp, SyncError> {
        let payload = ConversationTurn {
            conversation_id: conversation_id.to_owned(),
            turn,
        }
        .to_payload();
        self.append(scope, Surface::Conversation, payload).await
    }

    /// Records an intent on the intent ledger. The terminal guard applies before anything is
    /// written: a non-`committed` statement about a run this device already knows committed
    /// is not recorded (`Ok(None)`), since the ledger would ignore it anyway.
    pub async fn record_intent(
        &mut self,
        scope: Scope,
        intent: &Intent,
    ) -> Result<Option<AppendedOp>, SyncError> {
        if intent.status != IntentStatus::Committed
            && self.state.intents().is_run_committed(&intent.run_id)
        {
            return Ok(None);
        }
        self.append(scope, Surface::Intent, intent.to_payload())
            .await
            .map(Some)
    }

    /// Makes sure the current key of every scope in `scopes` is cached.
    pub(super) async fn load_current_keys(
        &mut self,
        mut scopes: Vec<Scope>,
    ) -> Result<(), SyncError> {
        scopes.retain(|s| !self.current_keys.contains_key(s));
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Ok(());
        }
        let keys = Arc::clone(&self.keys);
        let fetched = blocking(move || {
            scopes
                .into_iter()
                .map(|scope| {
                    let current = keys.current(&scope)?;
                    Ok((scope, current))
                })
                .collect::<Result<Vec<_>, SyncError>>()
        })
        .await?;
        self.current_keys.extend(fetched);
        Ok(())
    }

    /// Re-reads the current key of every cached scope (picks up rotations).
    pub(super) async fn refresh_current_keys(&mut self) -> Result<(), SyncError> {
        let scopes: Vec<Scope> = self.current_keys.keys().cloned().collect();
        self.current_keys.clear();
        self.load_current_keys(scopes).await
    }

    fn current_key(&self, scope: &Scope) -> Result<(KeyEpoch, SessionKey), SyncError> {
        self.current_keys
            .get(scope)
            .cloned()
            .ok_or(SyncError::Internal(
                "a scope key was used before it was loaded",
            ))
    }
}

fn appended(op: &OpRecord) -> AppendedOp {
    AppendedOp {
        op_id: op.op_id(),
        seq: op.seq(),
        hlc: op.hlc(),
    }
}

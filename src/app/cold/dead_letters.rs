//! The operator's side of dead letters: list them, replay one or all.
//!
//! A replay runs the dead-lettered effect again now, through the same path as the consumer
//! (same sealing, same single token refresh), without touching the cursor: the effect is
//! already behind it. Success removes the row; failure records the attempt and keeps it.

use std::sync::Arc;

use crate::adapters::sqlite::{DeadLetter, DeadLetterId};
use crate::domain::backoff::RetryClass;
use crate::domain::EffectRecord;

use super::consumer::{blocking_store, ColdConsumer};
use super::error::ColdError;
use super::execute::{Failure, Pending};
use super::plan::Unit;

/// What replaying one dead letter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Delivered; the dead letter is gone.
    Delivered,
    /// Failed again; the dead letter stays with the new reason and attempt count.
    Failed {
        /// How the failure was classified.
        class: RetryClass,
        /// Why it failed.
        reason: String,
    },
}

/// What [`ColdConsumer::replay_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters delivered and removed.
    pub delivered: Vec<DeadLetterId>,
    /// Dead letters that failed again, with the reason.
    pub failed: Vec<(DeadLetterId, String)>,
}

impl ColdConsumer {
    /// This consumer's dead letters, in effect order.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, ColdError> {
        let (store, consumer) = (Arc::clone(self.store()), self.config().consumer.clone());
        Ok(blocking_store(move || store.dead_letters(&consumer)).await?)
    }

    /// Retries one dead letter now.
    pub async fn replay(&self, id: DeadLetterId) -> Result<ReplayOutcome, ColdError> {
        let context = self.auth().current().ok_or(ColdError::NotAuthenticated)?;
        let store = Arc::clone(self.store());
        let letter = blocking_store(move || store.dead_letter(id))
            .await?
            .filter(|l| l.consumer == self.config().consumer)
            .ok_or(ColdError::UnknownDeadLetter(id))?;
        let mut pending = Pending::new(Unit::for_effect(EffectRecord {
            seq: letter.effect_seq,
            effect: letter.effect,
            committed_at_ms: letter.created_at_ms,
        }));
        let store = Arc::clone(self.store());
        match self.attempt(&mut pending, &context).await {
            Ok(()) => {
                blocking_store(move || store.remove_dead_letter(id)).await?;
                tracing::info!(%id, "dead letter replayed");
                Ok(ReplayOutcome::Delivered)
            }
            Err(Failure::NoContext) => Err(ColdError::NotAuthenticated),
            Err(Failure::Retry { class, reason }) => {
                let (at, why) = (self.now_ms(), reason.clone());
                blocking_store(move || store.record_dead_letter_attempt(id, &why, &class, at))
                    .await?;
                Ok(ReplayOutcome::Failed { class, reason })
            }
        }
    }

    /// Retries every dead letter now, in effect order.
    pub async fn replay_all(&self) -> Result<ReplayReport, ColdError> {
        let mut report = ReplayReport::default();
        for letter in self.dead_letters().await? {
            match self.replay(letter.id).await? {
                ReplayOutcome::Delivered => report.delivered.push(letter.id),
                ReplayOutcome::Failed { reason, .. } => report.failed.push((letter.id, reason)),
            }
        }
        Ok(report)
    }
}

//! The durable effect log, as seen by its consumers.
//!
//! Each consumer has a named cursor: the last effect it has fully handled. It reads the effects
//! after its cursor, does its work (idempotently: delivery is at-least-once), then advances the
//! cursor durably. Consumers progress independently; a crash between handling and advancing
//! means the effect is handled again, never that it is lost.

use std::sync::Arc;

use crate::domain::{ConsumerName, EffectRecord, EffectSeq};
use crate::ports::{Store, StoreError};

/// Access to the effect log for consumers.
#[derive(Debug, Clone)]
pub struct EffectLog {
    store: Arc<dyn Store>,
}

impl EffectLog {
    /// The log kept by `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// A handle for one named consumer.
    pub fn consumer(&self, name: ConsumerName) -> EffectConsumer {
        EffectConsumer {
            store: Arc::clone(&self.store),
            name,
        }
    }

    /// The newest committed effect.
    pub fn head(&self) -> Result<EffectSeq, StoreError> {
        self.store.effect_head()
    }

    /// Effects after `after`, at most `limit`.
    pub fn read_after(
        &self,
        after: EffectSeq,
        limit: usize,
    ) -> Result<Vec<EffectRecord>, StoreError> {
        self.store.effects_after(after, limit)
    }

    /// Every consumer with a cursor, and its position.
    pub fn cursors(&self) -> Result<Vec<(ConsumerName, EffectSeq)>, StoreError> {
        self.store.cursors()
    }
}

/// One consumer's view of the log.
#[derive(Debug, Clone)]
pub struct EffectConsumer {
    store: Arc<dyn Store>,
    name: ConsumerName,
}

impl EffectConsumer {
    /// The consumer's name.
    pub fn name(&self) -> &ConsumerName {
        &self.name
    }

    /// The last effect this consumer has acknowledged.
    pub fn position(&self) -> Result<EffectSeq, StoreError> {
        self.store.cursor(&self.name)
    }

    /// The next effects after the cursor, at most `limit`. Reading does not move the cursor.
    pub fn read(&self, limit: usize) -> Result<Vec<EffectRecord>, StoreError> {
        let from = self.position()?;
        self.store.effects_after(from, limit)
    }

    /// The effects after `after`, at most `limit` (for a consumer that knows where its
    /// cursor is about to be). Reading does not move the cursor.
    pub fn read_after(
        &self,
        after: EffectSeq,
        limit: usize,
    ) -> Result<Vec<EffectRecord>, StoreError> {
        self.store.effects_after(after, limit)
    }

    /// Durably marks everything up to and including `up_to` as handled.
    pub fn ack(&self, up_to: EffectSeq) -> Result<(), StoreError> {
        self.store.advance_cursor(&self.name, up_to)
    }

    /// How many effects are committed but not yet acknowledged by this consumer (an upper
    /// bound: the log may have gaps).
    pub fn lag(&self) -> Result<u64, StoreError> {
        let head = self.store.effect_head()?;
        Ok(head.get().saturating_sub(self.position()?.get()))
    }
}

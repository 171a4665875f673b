//! [`Doorbell`]: wakes a waiting consumer when the engine commits an effect.

use tokio::sync::Notify;

use crate::domain::EffectRecord;
use crate::ports::SideEffectSink;

/// A [`SideEffectSink`] that only rings: the consumer then reads the durable log by cursor.
///
/// Give the same doorbell to the engine (as its sink, or inside a fan-out sink) and to the
/// consumer; without one the consumer falls back to polling every
/// [`idle_poll`](super::ColdConfig::idle_poll). A ring while nobody waits is remembered, so
/// an effect committed between a read and the next wait is never missed.
#[derive(Debug, Default)]
pub struct Doorbell {
    notify: Notify,
}

impl Doorbell {
    /// A doorbell nobody has rung.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rings it.
    pub fn ring(&self) {
        self.notify.notify_one();
    }

    /// Waits for the next ring (or returns at once for a ring nobody has heard yet).
    pub async fn rung(&self) {
        self.notify.notified().await;
    }
}

impl SideEffectSink for Doorbell {
    fn emit(&self, _effect: &EffectRecord) {
        self.ring();
    }
}

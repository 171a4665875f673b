//! In-process [`SideEffectSink`]s: discard, record, fan out.

use std::sync::{Arc, Mutex};

use crate::domain::EffectRecord;
use crate::ports::SideEffectSink;

/// Discards every effect (recovery, or when only the durable log is read).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl SideEffectSink for NullSink {
    fn emit(&self, _effect: &EffectRecord) {}
}

/// Keeps every emitted effect in memory, for tests and diagnostics. Grows without bound: do not
/// use it in a long-running process.
#[derive(Debug, Default)]
pub struct RecordingSink {
    effects: Mutex<Vec<EffectRecord>>,
}

impl RecordingSink {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything emitted so far, in emission order.
    pub fn effects(&self) -> Vec<EffectRecord> {
        self.lock().clone()
    }

    /// How many effects were emitted.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Forgets everything recorded.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<EffectRecord>> {
        self.effects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SideEffectSink for RecordingSink {
    fn emit(&self, effect: &EffectRecord) {
        self.lock().push(effect.clone());
    }
}

/// Emits every effect to each of several sinks, in order.
#[derive(Debug, Default, Clone)]
pub struct FanoutSink {
    sinks: Vec<Arc<dyn SideEffectSink>>,
}

impl FanoutSink {
    /// Fans out to `sinks`.
    pub fn new(sinks: Vec<Arc<dyn SideEffectSink>>) -> Self {
        Self { sinks }
    }

    /// Adds one more sink.
    #[must_use]
    pub fn with(mut self, sink: Arc<dyn SideEffectSink>) -> Self {
        self.sinks.push(sink);
        self
    }
}

impl SideEffectSink for FanoutSink {
    fn emit(&self, effect: &EffectRecord) {
        for sink in &self.sinks {
            sink.emit(effect);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EffectSeq, RepositoryId, SideEffect};

    #[test]
    fn fanout_reaches_every_sink_in_order() {
        let a = Arc::new(RecordingSink::new());
        let b = Arc::new(RecordingSink::new());
        let fan = FanoutSink::new(vec![a.clone()])
            .with(b.clone())
            .with(Arc::new(NullSink));
        let rec = EffectRecord {
            seq: EffectSeq::new(1),
            effect: SideEffect::RepositoryCreated {
                repository_id: RepositoryId::from_uuid(uuid::Uuid::from_u128(1)).unwrap(),
            },
            committed_at_ms: 0,
        };
        fan.emit(&rec);
        assert_eq!(a.effects(), vec![rec.clone()]);
        assert_eq!(b.effects(), vec![rec]);
    }
}

//! Fault-injecting decorators for tests: wrap a real adapter and make chosen calls fail the way
//! a busy database or a crash between two commits would, with nothing else changed.
//!
//! [`CursorFaults`] wraps a [`Store`] and fails chosen consumer-cursor advances. An effect
//! consumer that commits its own work and then advances its cursor sees exactly what a crash
//! between the two leaves behind, so its tests can check that a retry (or a restart) neither
//! loses nor repeats anything.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::domain::effect::EffectRecord;
use crate::domain::ids::{ConsumerName, DeviceId, EffectSeq, MessageId, Seq, SessionId};
use crate::domain::message::Message;
use crate::ports::{Store, StoreContents, StoreError, WriteBatch};

/// A [`Store`] that passes every call to `inner`, except the cursor advances it was told to
/// fail: those return [`StoreError::Busy`] and change nothing.
#[derive(Debug)]
pub struct CursorFaults {
    inner: Arc<dyn Store>,
    faults: Mutex<Faults>,
}

#[derive(Debug, Default)]
struct Faults {
    /// Advances of any cursor to any position still to fail.
    any: usize,
    /// Advances of any cursor to exactly this position still to fail.
    to: BTreeMap<EffectSeq, usize>,
}

impl CursorFaults {
    /// Wraps `inner`, failing nothing yet.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            faults: Mutex::new(Faults::default()),
        }
    }

    /// The next `times` advances of any cursor fail.
    pub fn fail_next_advances(&self, times: usize) {
        self.faults().any += times;
    }

    /// The next `times` advances of any cursor to exactly `to` fail.
    pub fn fail_advances_to(&self, to: EffectSeq, times: usize) {
        *self.faults().to.entry(to).or_default() += times;
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        // The counters stay consistent whatever panicked while holding the lock.
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this advance to `to` is one to fail (and counts it).
    fn take_fault(&self, to: EffectSeq) -> bool {
        let mut faults = self.faults();
        if let Some(left) = faults.to.get_mut(&to).filter(|left| **left > 0) {
            *left -= 1;
            return true;
        }
        if faults.any > 0 {
            faults.any -= 1;
            return true;
        }
        false
    }
}

impl Store for CursorFaults {
    fn load(&self) -> Result<StoreContents, StoreError> {
        self.inner.load()
    }
    fn commit(&self, batch: &WriteBatch) -> Result<Vec<EffectRecord>, StoreError> {
        self.inner.commit(batch)
    }
    fn messages_after(
        &self,
        session: SessionId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.inner.messages_after(session, after, limit)
    }
    fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        self.inner.message(id)
    }
    fn effects_after(
        &self,
        after: EffectSeq,
        limit: usize,
    ) -> Result<Vec<EffectRecord>, StoreError> {
        self.inner.effects_after(after, limit)
    }
    fn effect_head(&self) -> Result<EffectSeq, StoreError> {
        self.inner.effect_head()
    }
    fn cursor(&self, consumer: &ConsumerName) -> Result<EffectSeq, StoreError> {
        self.inner.cursor(consumer)
    }
    fn advance_cursor(&self, consumer: &ConsumerName, to: EffectSeq) -> Result<(), StoreError> {
        if self.take_fault(to) {
            return Err(StoreError::Busy);
        }
        self.inner.advance_cursor(consumer, to)
    }
    fn cursors(&self) -> Result<Vec<(ConsumerName, EffectSeq)>, StoreError> {
        self.inner.cursors()
    }
    fn local_device_id(&self, candidate: DeviceId) -> Result<DeviceId, StoreError> {
        self.inner.local_device_id(candidate)
    }
}

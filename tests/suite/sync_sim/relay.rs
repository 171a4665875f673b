//! [`SimRelay`]: one device's line to the shared relay, which the simulation can cut
//! (a partition) or break right after the relay applied a call (a crash mid-pump).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tandem::domain::ids::DeviceId;
use tandem::domain::oplog::{Checkpoint, Frontier, OpRecord};
use tandem::ports::{
    BatchLimit, GcReport, PullBatch, PullCursors, PushOutcome, Relay, RelayError, RosterEntry,
};

/// A device's view of the shared relay.
#[derive(Debug)]
pub struct SimRelay {
    inner: Arc<dyn Relay>,
    partitioned: AtomicBool,
    /// Calls still allowed through before the next one is applied and then fails.
    crash_in: Mutex<Option<usize>>,
    crashed: AtomicBool,
}

impl SimRelay {
    /// A working line to `inner`.
    pub fn new(inner: Arc<dyn Relay>) -> Self {
        Self {
            inner,
            partitioned: AtomicBool::new(false),
            crash_in: Mutex::new(None),
            crashed: AtomicBool::new(false),
        }
    }

    /// Cuts or restores the line: while cut, every call fails and reaches nothing.
    pub fn set_partitioned(&self, on: bool) {
        self.partitioned.store(on, Ordering::SeqCst);
    }

    /// Whether the line is cut.
    pub fn is_partitioned(&self) -> bool {
        self.partitioned.load(Ordering::SeqCst)
    }

    /// Lets `calls` more calls through; the one after is applied by the relay and then fails,
    /// as if the device died before reading the reply.
    pub fn crash_after(&self, calls: usize) {
        *self.crash_in.lock().unwrap_or_else(|p| p.into_inner()) = Some(calls);
        self.crashed.store(false, Ordering::SeqCst);
    }

    /// Disarms a pending crash; returns whether one fired since [`SimRelay::crash_after`].
    pub fn disarm(&self) -> bool {
        *self.crash_in.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.crashed.swap(false, Ordering::SeqCst)
    }

    fn gate(&self) -> Result<(), RelayError> {
        if self.is_partitioned() {
            return Err(RelayError::Backend("partitioned".into()));
        }
        Ok(())
    }

    /// After a call was applied: whether its reply is lost.
    fn after<T>(&self, result: Result<T, RelayError>) -> Result<T, RelayError> {
        let mut crash_in = self.crash_in.lock().unwrap_or_else(|p| p.into_inner());
        match *crash_in {
            Some(0) => {
                *crash_in = None;
                self.crashed.store(true, Ordering::SeqCst);
                Err(RelayError::Backend(
                    "crashed after the relay applied the call".into(),
                ))
            }
            Some(n) => {
                *crash_in = Some(n - 1);
                result
            }
            None => result,
        }
    }
}

#[async_trait]
impl Relay for SimRelay {
    async fn register(&self, device: DeviceId, now_ms: u64) -> Result<(), RelayError> {
        self.gate()?;
        self.after(self.inner.register(device, now_ms).await)
    }

    async fn push(
        &self,
        device: DeviceId,
        ops: &[OpRecord],
        now_ms: u64,
    ) -> Result<PushOutcome, RelayError> {
        self.gate()?;
        self.after(self.inner.push(device, ops, now_ms).await)
    }

    async fn pull(
        &self,
        reader: DeviceId,
        cursors: &PullCursors,
        limit: BatchLimit,
        now_ms: u64,
    ) -> Result<PullBatch, RelayError> {
        self.gate()?;
        self.after(self.inner.pull(reader, cursors, limit, now_ms).await)
    }

    async fn ack(
        &self,
        device: DeviceId,
        frontier: &Frontier,
        now_ms: u64,
    ) -> Result<(), RelayError> {
        self.gate()?;
        self.after(self.inner.ack(device, frontier, now_ms).await)
    }

    async fn roster(&self) -> Result<Vec<RosterEntry>, RelayError> {
        self.gate()?;
        self.after(self.inner.roster().await)
    }

    async fn stable_frontier(&self, now_ms: u64, horizon_ms: u64) -> Result<Frontier, RelayError> {
        self.gate()?;
        self.after(self.inner.stable_frontier(now_ms, horizon_ms).await)
    }

    async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), RelayError> {
        self.gate()?;
        self.after(self.inner.put_checkpoint(checkpoint).await)
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, RelayError> {
        self.gate()?;
        self.after(self.inner.latest_checkpoint().await)
    }

    async fn gc(&self, now_ms: u64, horizon_ms: u64) -> Result<GcReport, RelayError> {
        self.gate()?;
        self.after(self.inner.gc(now_ms, horizon_ms).await)
    }
}

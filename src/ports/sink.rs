//! The `SideEffectSink` port: an in-process doorbell rung after every commit.
//!
//! # Contract
//!
//! - `emit` MUST NOT block and MUST NOT fail: it runs on the writer's path after the commit.
//!   Slow work belongs to consumers that read the durable effect log by cursor.
//! - `emit` is called once per committed effect, in [`EffectSeq`](crate::domain::EffectSeq)
//!   order, and never for an effect that was not committed. Recovery on open emits nothing.
//! - A sink MAY drop effects (a crash can always lose an in-memory emit); the effect log is the
//!   durable record, so consumers that need every effect read it instead of relying on `emit`.

use std::fmt::Debug;

use crate::domain::EffectRecord;

/// Receives committed effects. See the module docs for the contract.
pub trait SideEffectSink: Send + Sync + Debug + 'static {
    /// Called after `effect` was committed. Must return quickly without blocking.
    fn emit(&self, effect: &EffectRecord);
}

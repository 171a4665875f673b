//! The `IdGen` port: fresh UUIDs for new entities, injected so tests are deterministic.
//!
//! # Contract
//! - `next_uuid` MUST NOT return the nil UUID and MUST NOT repeat a value within a process.

use std::fmt::Debug;

use uuid::Uuid;

/// A source of fresh UUIDs.
pub trait IdGen: Send + Sync + Debug + 'static {
    /// A UUID never returned before.
    fn next_uuid(&self) -> Uuid;
}

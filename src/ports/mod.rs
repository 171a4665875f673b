//! Ports: the traits the app depends on, each with its contract and error type.
//!
//! Adapters in [`crate::adapters`] implement them; the shared conformance suites in
//! [`conformance`] check every adapter against the same clauses.

pub mod clock;
pub mod conformance;
pub mod id_gen;
pub mod sink;
pub mod store;

pub use clock::Clock;
pub use id_gen::IdGen;
pub use sink::SideEffectSink;
pub use store::{Fact, Store, StoreContents, StoreError, WriteBatch};

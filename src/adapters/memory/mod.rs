//! In-memory adapters for tests and development: no I/O, state lost on drop.

pub mod relay;

pub use relay::MemoryRelay;

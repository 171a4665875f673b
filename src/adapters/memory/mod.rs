//! In-memory adapters: fast, dependency-free implementations of the ports for tests,
//! simulations and development. Nothing here survives the process; production wiring uses the
//! durable adapters.

mod lease;
pub mod relay;

pub use lease::InMemoryLeaseCoordinator;
pub use relay::MemoryRelay;

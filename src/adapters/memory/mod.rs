//! In-memory adapters: fast, dependency-free implementations of the ports for tests,
//! simulations and development. Nothing here survives the process; production wiring uses the
//! durable adapters.

mod lease;

pub use lease::InMemoryLeaseCoordinator;

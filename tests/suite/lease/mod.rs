//! Leases: the LeaseCoordinator conformance suite on every adapter, processes contending on one
//! SQLite file, epochs across reopen, and the dispatch fence over a coordinator's reads.

mod conformance;
mod contention;
mod durability;
mod fence;
mod fixtures;

//! Shared conformance suites: one function per contract clause, run against every adapter.
pub mod journal;
pub mod keys;
pub mod lease;
pub mod relay;
pub mod session_metadata;
pub mod store;

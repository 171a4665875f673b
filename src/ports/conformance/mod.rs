//! Shared conformance suites: one function per contract clause, run against every adapter.
pub mod session_metadata;
pub mod store;

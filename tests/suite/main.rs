//! Integration tests: one binary, a module per area.

mod crash_safety;
mod device_sync;
mod disk_full;
mod engine_invariants;
mod lease;
mod relay;
mod store_conformance;
mod support;

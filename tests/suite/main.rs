//! Integration tests: one binary, a module per area.

mod cloud_live;
mod crash_safety;
mod disk_full;
mod engine_invariants;
mod store_conformance;
mod support;

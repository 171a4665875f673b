//! Integration tests: one binary, a module per area.

mod cloud_live;
mod cold;
mod cold_live;
mod crash_safety;
mod device_sync;
mod disk_full;
mod engine_invariants;
mod faults;
mod lease;
mod relay;
mod store_conformance;
mod support;
mod sync_cli;
mod sync_crash;
mod sync_sim;

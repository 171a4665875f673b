//! Integration tests: one binary, a module per area.

mod engine_invariants;
mod store_conformance;
mod support;

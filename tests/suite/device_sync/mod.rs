//! Device sync: key providers, the SQLite journal and the `DeviceSync` session.

mod batches;
mod checkpoints;
mod convergence;
mod fence;
mod harness;
mod integrity;
mod journal_conformance;
mod key_conformance;
mod recovery;

//! Device sync: key providers, the SQLite journal and the `DeviceSync` session.

mod journal_conformance;
mod key_conformance;

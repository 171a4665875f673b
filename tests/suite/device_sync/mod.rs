//! Device sync: key providers, the SQLite journal and the `DeviceSync` session.

mod key_conformance;

//! The cold path against an in-memory fake cloud, in paused tokio time: batching, retries
//! and backoff, dead letters, status coalescing, key distribution across devices, and
//! crash recovery from the SQLite file.

mod batching;
mod crash;
mod cursor;
mod dead_letters;
mod devices;
mod fake_cloud;
mod harness;
mod metadata_conformance;
mod retries;
mod status;
mod store_file;

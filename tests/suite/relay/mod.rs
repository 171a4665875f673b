//! The relay adapters beyond the conformance suite: tampered and torn files, refused pushes
//! that must leave the directory untouched, two processes sharing one directory, a folder
//! synced between machines, and read cost.

mod concurrent;
mod cost;
mod refusals;
mod support;
mod synced_folder;
mod tamper;
mod torn_tail;

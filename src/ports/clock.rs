//! The `Clock` port: wall-clock time, injected so tests control it.
//!
//! # Contract
//! - `now_ms` returns Unix milliseconds. It MAY go backwards (wall clocks do); callers that
//!   need monotonicity enforce it themselves.

use std::fmt::Debug;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Current time in Unix milliseconds.
    fn now_ms(&self) -> i64;
}

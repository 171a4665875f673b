//! Where backoff jitter comes from: the OS in production, a constant in tests.

use std::fmt::Debug;

use rand_core::{OsRng, RngCore};

/// A source of jitter values in `[0, 1)` for [`Backoff::delay`](crate::domain::backoff::Backoff::delay).
pub trait Jitter: Send + Sync + Debug + 'static {
    /// A value in `[0, 1)`.
    fn sample(&self) -> f64;
}

/// Uniform jitter from the operating system's random source.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsJitter;

impl Jitter for OsJitter {
    fn sample(&self) -> f64 {
        // 53 random bits scaled into [0, 1): every value is exactly representable.
        let bits = OsRng.next_u64() >> 11;
        #[allow(clippy::cast_precision_loss)]
        let value = bits as f64 / (1u64 << 53) as f64;
        value
    }
}

/// The same jitter every time (tests; `0.0` gives the nominal schedule).
#[derive(Debug, Default, Clone, Copy)]
pub struct FixedJitter(pub f64);

impl Jitter for FixedJitter {
    fn sample(&self) -> f64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_jitter_stays_in_the_unit_interval() {
        for _ in 0..1000 {
            let j = OsJitter.sample();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
        assert_eq!(FixedJitter(0.25).sample(), 0.25);
    }
}

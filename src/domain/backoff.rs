//! Retry backoff policy (pure; jitter passed in).
//!
//! Workers that talk to the network (the cold path, the hot path, relays) classify each
//! failure once, in the adapter, as a [`RetryClass`], and ask [`Backoff::next_delay`] how long
//! to wait. The policy is a pure function of the class, the attempt number and a jitter value
//! the caller draws (from `rand` in production, a constant in tests), so schedules are exactly
//! reproducible and can be tested without a clock.
//!
//! # Formula
//!
//! For attempt `n` (1-based: the first retry after the first failure is `n = 1`):
//!
//! ```text
//! nominal(n) = min(base · 2^(n-1), max)                 (saturating: never overflows)
//! delay(n,j) = nominal(n) − ⌊⌊nominal(n)/2⌋ · j⌋         j = jitter clamped to [0, 1]
//! ```
//!
//! This is "equal jitter": half of the nominal delay is always waited, the other half is
//! scaled by `1 − j`. With `j = 0` the schedule is exactly the nominal one (2 s, 4 s, 8 s, …,
//! 256 s, then 300 s with the defaults); with `j` uniform in `[0, 1)` delays spread over
//! `(nominal/2, nominal]`, which de-synchronises devices that failed together. A delay never
//! exceeds `max` (except to honour a longer `Retry-After`, see [`Backoff::next_delay`]).
//! Attempt `0` is treated as attempt `1`; a NaN jitter as `0`.

use std::time::Duration;

/// How a failed remote operation may be retried. Decided once, in the adapter that saw the
/// failure; workers act on the class, never on error strings.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RetryClass {
    /// The service is temporarily unable (5xx, 408, 429, timeouts). `retry_after` is the
    /// server's `Retry-After`, if it sent one.
    Transient {
        /// The minimum wait the server asked for.
        retry_after: Option<Duration>,
    },
    /// The request never got an answer (connection refused, reset, DNS failure).
    Network,
    /// The credentials were refused (401). The worker refreshes its token once and retries
    /// immediately; if the refreshed token is refused too, it backs off like a transient
    /// failure (and the app may clear the auth context, which pauses the worker).
    Unauthenticated,
    /// Retrying cannot help (other 4xx, malformed data): the item goes to the dead-letter
    /// table with its reason, and the worker moves on.
    Permanent,
}

/// Exponential backoff with a cap and caller-supplied equal jitter.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Backoff {
    /// The delay before the first retry (default 2 s).
    pub base: Duration,
    /// The longest computed delay (default 300 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Backoff {
    /// 2 s doubling up to 300 s, the cold path's schedule.
    pub const DEFAULT: Self = Self {
        base: Duration::from_secs(2),
        max: Duration::from_secs(300),
    };

    /// A policy with the given base and cap.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The un-jittered delay before retry `attempt`: `min(base · 2^(attempt-1), max)`.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let shift = attempt.max(1) - 1;
        let cap = self.max.as_nanos();
        let base = self.base.as_nanos();
        // A zero base stays zero however large the attempt; otherwise overflow means "capped".
        let grown = if base == 0 {
            0
        } else {
            1u128
                .checked_shl(shift)
                .and_then(|factor| base.checked_mul(factor))
                .unwrap_or(cap)
        };
        duration_from_nanos(grown.min(cap))
    }

    /// The delay before retry `attempt` with equal jitter `jitter` (see the module docs).
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let nominal = self.nominal(attempt).as_nanos();
        let half = nominal / 2;
        let j = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        // `as` saturates on the way back to an integer; the `min` absorbs float rounding.
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let cut = ((half as f64 * j) as u128).min(half);
        duration_from_nanos(nominal - cut)
    }

    /// How long to wait before retry `attempt` after a failure of class `class`, or `None`
    /// when the item must not be retried (it goes to the dead-letter table).
    ///
    /// - `Transient`: [`Backoff::delay`], but never less than `retry_after` when given. A
    ///   `Retry-After` longer than `max` is honoured in full: retrying earlier would only
    ///   earn another refusal.
    /// - `Network`: [`Backoff::delay`].
    /// - `Unauthenticated`: zero for attempt 1 (refresh the token, then retry at once);
    ///   from attempt 2 on, the refreshed token was refused as well and the worker backs off
    ///   with `delay(attempt - 1)`, starting again from `base`.
    /// - `Permanent`: `None`.
    pub fn next_delay(&self, class: &RetryClass, attempt: u32, jitter: f64) -> Option<Duration> {
        match *class {
            RetryClass::Permanent => None,
            RetryClass::Network => Some(self.delay(attempt, jitter)),
            RetryClass::Transient { retry_after } => {
                let delay = self.delay(attempt, jitter);
                Some(retry_after.map_or(delay, |floor| delay.max(floor)))
            }
            RetryClass::Unauthenticated if attempt <= 1 => Some(Duration::ZERO),
            RetryClass::Unauthenticated => Some(self.delay(attempt - 1, jitter)),
        }
    }
}

/// Converts nanoseconds that came from (at most) an existing `Duration` back to one.
fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits in u32 and `Duration::new` cannot carry over.
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Duration::new(secs, subsec)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn default_schedule_doubles_from_two_seconds_up_to_the_cap() {
        let b = Backoff::default();
        let got: Vec<u64> = (1..=10).map(|n| b.delay(n, 0.0).as_secs()).collect();
        assert_eq!(got, vec![2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.nominal(0), S(2));
    }

    #[test]
    fn large_attempts_and_durations_never_overflow() {
        let b = Backoff::default();
        for n in [31, 32, 63, 64, 65, 127, 128, 129, 1000, u32::MAX] {
            assert_eq!(b.delay(n, 0.0), S(300), "attempt {n}");
        }
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.delay(u32::MAX, 0.0), Duration::MAX);
        assert_eq!(huge.delay(1, 0.0), Duration::MAX);
        let zero = Backoff::new(Duration::ZERO, S(10));
        assert_eq!(zero.delay(u32::MAX, 0.5), Duration::ZERO);
    }

    #[test]
    fn a_base_above_the_cap_is_capped() {
        let b = Backoff::new(S(10), S(3));
        assert_eq!(b.delay(1, 0.0), S(3));
    }

    #[test]
    fn equal_jitter_keeps_half_of_the_delay() {
        let b = Backoff::default();
        assert_eq!(b.delay(3, 0.0), S(8));
        assert_eq!(b.delay(3, 0.5), S(6));
        assert_eq!(
            b.delay(3, 0.999_999_999),
            Duration::from_nanos(4_000_000_004)
        );
        assert_eq!(b.delay(20, 0.5), Duration::from_millis(225_000));
        // Out-of-contract jitter is clamped, not trusted.
        assert_eq!(b.delay(3, 1.0), S(4));
        assert_eq!(b.delay(3, 7.0), S(4));
        assert_eq!(b.delay(3, -1.0), S(8));
        assert_eq!(b.delay(3, f64::NAN), S(8));
        assert_eq!(b.delay(3, f64::INFINITY), S(4));
    }

    #[test]
    fn transient_failures_wait_at_least_retry_after() {
        let b = Backoff::default();
        let class = |secs| RetryClass::Transient {
            retry_after: Some(S(secs)),
        };
        assert_eq!(b.next_delay(&class(30), 1, 0.0), Some(S(30)));
        assert_eq!(b.next_delay(&class(1), 3, 0.0), Some(S(8)));
        assert_eq!(b.next_delay(&class(3600), 20, 0.0), Some(S(3600)));
        let none = RetryClass::Transient { retry_after: None };
        assert_eq!(b.next_delay(&none, 2, 0.0), Some(S(4)));
    }

    #[test]
    fn network_failures_back_off() {
        let b = Backoff::default();
        assert_eq!(b.next_delay(&RetryClass::Network, 1, 0.0), Some(S(2)));
        assert_eq!(b.next_delay(&RetryClass::Network, 9, 0.5), Some(S(225)));
    }

    #[test]
    fn unauthenticated_retries_at_once_then_backs_off() {
        let b = Backoff::default();
        let class = RetryClass::Unauthenticated;
        assert_eq!(b.next_delay(&class, 0, 0.9), Some(Duration::ZERO));
        assert_eq!(b.next_delay(&class, 1, 0.9), Some(Duration::ZERO));
        assert_eq!(b.next_delay(&class, 2, 0.0), Some(S(2)));
        assert_eq!(b.next_delay(&class, 3, 0.0), Some(S(4)));
    }

    #[test]
    fn permanent_failures_are_dead_lettered() {
        let b = Backoff::default();
        for n in [0, 1, 2, u32::MAX] {
            assert_eq!(b.next_delay(&RetryClass::Permanent, n, 0.3), None);
        }
    }

    fn any_class() -> impl Strategy<Value = RetryClass> {
        prop_oneof![
            proptest::option::of(0u64..5_000_000).prop_map(|ms| RetryClass::Transient {
                retry_after: ms.map(Duration::from_millis)
            }),
            Just(RetryClass::Network),
            Just(RetryClass::Unauthenticated),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn delays_stay_within_their_bounds(
            base_ms in 0u64..20_000,
            max_ms in 0u64..1_000_000,
            attempt in any::<u32>(),
            jitter in 0.0f64..1.0,
            class in any_class(),
        ) {
            let b = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            let nominal = b.nominal(attempt);
            let delay = b.delay(attempt, jitter);
            prop_assert!(nominal <= b.max);
            prop_assert!(delay <= nominal);
            prop_assert!(delay >= nominal / 2);

            let next = b.next_delay(&class, attempt, jitter).unwrap();
            match class {
                RetryClass::Transient { retry_after: Some(floor) } => {
                    prop_assert!(next >= floor);
                    prop_assert!(next <= b.max.max(floor));
                }
                _ => prop_assert!(next <= b.max),
            }
        }

        #[test]
        fn without_jitter_delays_never_decrease(
            base_ms in 0u64..20_000,
            max_ms in 0u64..1_000_000,
            attempt in 0u32..200,
        ) {
            let b = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            prop_assert!(b.delay(attempt, 0.0) <= b.delay(attempt + 1, 0.0));
            prop_assert_eq!(b.delay(attempt, 0.0), b.nominal(attempt));
            for class in [RetryClass::Network, RetryClass::Unauthenticated] {
                prop_assert!(
                    b.next_delay(&class, attempt, 0.0) <= b.next_delay(&class, attempt + 1, 0.0)
                );
            }
        }
    }
}

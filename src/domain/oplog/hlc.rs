//! Hybrid logical clocks: causally ordered, totally ordered timestamps for ops.
//!
//! An [`Hlc`] is `(wall_ms, counter, device)`, compared in that order. `wall_ms` tracks the
//! physical clock when it moves forward; `counter` orders events within one millisecond (or
//! while the physical clock lags behind a stamp already seen); `device` breaks the last tie so
//! two devices can never produce equal stamps.
//!
//! [`HlcClock`] is the per-device clock state. It never reads a clock itself: every call takes
//! `now_ms`, the caller's physical time in Unix milliseconds.
//!
//! - [`HlcClock::tick`] stamps a local event. The stamp is strictly greater than every stamp the
//!   clock has issued or observed.
//! - [`HlcClock::observe`] merges a remote stamp on receipt, so that everything this device
//!   authors afterwards sorts after the remote event.
//!
//! # The drift guard
//!
//! A remote stamp far ahead of local physical time would drag this device's clock (and so every
//! op it authors from then on) into the future, and nothing could ever pull it back. `observe`
//! therefore refuses a stamp whose `wall_ms` is more than `max_drift_ms` ahead of `now_ms` with
//! [`HlcError::TooFarInFuture`] and leaves the clock state unchanged. The bound is configurable;
//! [`DEFAULT_MAX_DRIFT_MS`] is one minute. [`check_drift`] exposes the same test on its own so
//! verification can apply it to whole chains.
//!
//! # Saturation
//!
//! Arithmetic never panics. If `counter` would pass `u32::MAX` within one millisecond, the clock
//! moves `wall_ms` one millisecond ahead and restarts the counter at 0, which keeps stamps
//! strictly increasing. Only a clock already at `wall_ms = u64::MAX, counter = u32::MAX` (which
//! the drift guard keeps out of reach of any sane input) stops advancing.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::ids::DeviceId;

/// Default bound on how far ahead of local physical time a remote stamp may be: one minute.
pub const DEFAULT_MAX_DRIFT_MS: u64 = 60_000;

/// A hybrid logical clock stamp. Ordered by `(wall_ms, counter, device)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hlc {
    /// Physical component, Unix milliseconds.
    pub wall_ms: u64,
    /// Logical component: orders stamps that share `wall_ms`.
    pub counter: u32,
    /// The device that issued the stamp; the final tie-breaker.
    pub device: DeviceId,
}

impl Hlc {
    /// A stamp from its three parts.
    pub const fn new(wall_ms: u64, counter: u32, device: DeviceId) -> Self {
        Self {
            wall_ms,
            counter,
            device,
        }
    }

    /// The smallest stamp a device can hold: `(0, 0, device)`.
    pub const fn zero(device: DeviceId) -> Self {
        Self::new(0, 0, device)
    }

    /// The `(wall_ms, counter)` pair, ignoring the device.
    fn logical(&self) -> (u64, u32) {
        (self.wall_ms, self.counter)
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms, self.counter, self.device)
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({self})")
    }
}

/// Why a stamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlcError {
    /// The stamp is further ahead of local physical time than the drift guard allows. The clock
    /// state was not changed.
    #[error(
        "stamp {stamp} is more than {max_drift_ms} ms ahead of local time {now_ms} ms; not adopted"
    )]
    TooFarInFuture {
        /// The refused stamp.
        stamp: Hlc,
        /// Local physical time when it was refused.
        now_ms: u64,
        /// The drift bound in force.
        max_drift_ms: u64,
    },
}

/// Checks `stamp` against the drift guard: `stamp.wall_ms <= now_ms + max_drift_ms`.
pub fn check_drift(stamp: &Hlc, now_ms: u64, max_drift_ms: u64) -> Result<(), HlcError> {
    if stamp.wall_ms > now_ms.saturating_add(max_drift_ms) {
        return Err(HlcError::TooFarInFuture {
            stamp: *stamp,
            now_ms,
            max_drift_ms,
        });
    }
    Ok(())
}

/// One device's hybrid logical clock. Pure state: time arrives as `now_ms` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlcClock {
    last: Hlc,
    max_drift_ms: u64,
}

impl HlcClock {
    /// A fresh clock for `device` with the default drift bound.
    pub const fn new(device: DeviceId) -> Self {
        Self::resume(Hlc::zero(device), DEFAULT_MAX_DRIFT_MS)
    }

    /// A clock that continues after `last` (for example the stamp of the newest op this device
    /// has authored or observed, read back after a restart). The clock's device is
    /// `last.device`.
    pub const fn resume(last: Hlc, max_drift_ms: u64) -> Self {
        Self { last, max_drift_ms }
    }

    /// The same clock with a different drift bound.
    #[must_use]
    pub const fn with_max_drift(mut self, max_drift_ms: u64) -> Self {
        self.max_drift_ms = max_drift_ms;
        self
    }

    /// The device this clock stamps for.
    pub const fn device(&self) -> DeviceId {
        self.last.device
    }

    /// The greatest stamp issued by (or merged into) this clock so far.
    pub const fn last(&self) -> Hlc {
        self.last
    }

    /// The drift bound applied by [`HlcClock::observe`].
    pub const fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    /// Stamps a local event at physical time `now_ms`. The result is strictly greater than
    /// every stamp this clock issued or observed before (see the module docs for saturation).
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        let (last_wall, last_counter) = self.last.logical();
        let next = if now_ms > last_wall {
            (now_ms, 0)
        } else {
            bump(last_wall, last_counter)
        };
        self.adopt(next)
    }

    /// Merges a remote stamp received at physical time `now_ms` and returns the resulting local
    /// stamp, which is strictly greater than both `remote` and every earlier local stamp.
    ///
    /// A stamp more than `max_drift_ms` ahead of `now_ms` is refused with
    /// [`HlcError::TooFarInFuture`] and the clock is left exactly as it was.
    pub fn observe(&mut self, remote: &Hlc, now_ms: u64) -> Result<Hlc, HlcError> {
        check_drift(remote, now_ms, self.max_drift_ms)?;
        let local = self.last.logical();
        let theirs = remote.logical();
        let wall = local.0.max(theirs.0).max(now_ms);
        let next = if wall == now_ms && wall > local.0 && wall > theirs.0 {
            (wall, 0)
        } else {
            // The largest logical pair at `wall` is the one to step past.
            let base = match local.cmp(&theirs) {
                Ordering::Less => theirs,
                Ordering::Equal | Ordering::Greater => local,
            };
            bump(base.0, base.1)
        };
        Ok(self.adopt(next))
    }

    fn adopt(&mut self, (wall_ms, counter): (u64, u32)) -> Hlc {
        let candidate = Hlc::new(wall_ms, counter, self.last.device);
        if candidate > self.last {
            self.last = candidate;
        }
        self.last
    }
}

/// The logical successor of `(wall, counter)`: the next counter, or the next millisecond when
/// the counter is exhausted. Saturates at the maximum pair.
fn bump(wall: u64, counter: u32) -> (u64, u32) {
    match counter.checked_add(1) {
        Some(c) => (wall, c),
        None => match wall.checked_add(1) {
            Some(w) => (w, 0),
            None => (wall, counter),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::oplog::test_support::dev;

    #[test]
    fn order_is_wall_then_counter_then_device() {
        let (a, b) = (dev(1), dev(2));
        assert!(Hlc::new(1, 9, b) < Hlc::new(2, 0, a));
        assert!(Hlc::new(2, 0, b) < Hlc::new(2, 1, a));
        assert!(Hlc::new(2, 1, a) < Hlc::new(2, 1, b));
    }

    #[test]
    fn tick_follows_physical_time_and_counts_within_a_millisecond() {
        let mut c = HlcClock::new(dev(1));
        assert_eq!(c.tick(100), Hlc::new(100, 0, dev(1)));
        assert_eq!(c.tick(100), Hlc::new(100, 1, dev(1)));
        // Physical clock went backwards: logical time keeps increasing.
        assert_eq!(c.tick(50), Hlc::new(100, 2, dev(1)));
        assert_eq!(c.tick(101), Hlc::new(101, 0, dev(1)));
    }

    #[test]
    fn tick_at_time_zero_still_increases() {
        let mut c = HlcClock::new(dev(1));
        let a = c.tick(0);
        let b = c.tick(0);
        assert!(a > Hlc::zero(dev(1)) && b > a);
    }

    #[test]
    fn observe_moves_past_the_remote_stamp() {
        let mut c = HlcClock::new(dev(1));
        c.tick(100);
        let remote = Hlc::new(150, 7, dev(2));
        let got = c.observe(&remote, 120).unwrap();
        assert_eq!(got, Hlc::new(150, 8, dev(1)));
        assert!(got > remote);
        // A later local event stays ahead.
        assert_eq!(c.tick(120), Hlc::new(150, 9, dev(1)));
    }

    #[test]
    fn observe_uses_physical_time_when_it_is_ahead_of_both() {
        let mut c = HlcClock::new(dev(1));
        c.tick(100);
        let got = c.observe(&Hlc::new(90, 3, dev(2)), 200).unwrap();
        assert_eq!(got, Hlc::new(200, 0, dev(1)));
    }

    #[test]
    fn observe_with_equal_walls_takes_the_larger_counter() {
        let mut c = HlcClock::new(dev(1));
        c.tick(100); // (100, 0)
        c.tick(100); // (100, 1)
        let got = c.observe(&Hlc::new(100, 5, dev(2)), 100).unwrap();
        assert_eq!(got, Hlc::new(100, 6, dev(1)));
        let got = c.observe(&Hlc::new(100, 2, dev(2)), 100).unwrap();
        assert_eq!(got, Hlc::new(100, 7, dev(1)));
    }

    #[test]
    fn far_future_stamp_is_refused_and_not_adopted() {
        let mut c = HlcClock::new(dev(1));
        c.tick(1_000);
        let before = c.clone();
        let remote = Hlc::new(1_000 + DEFAULT_MAX_DRIFT_MS + 1, 0, dev(2));
        let err = c.observe(&remote, 1_000).unwrap_err();
        assert_eq!(
            err,
            HlcError::TooFarInFuture {
                stamp: remote,
                now_ms: 1_000,
                max_drift_ms: DEFAULT_MAX_DRIFT_MS
            }
        );
        assert_eq!(c, before);
        assert!(err.to_string().contains("not adopted"));
        // Exactly at the bound is accepted.
        let edge = Hlc::new(1_000 + DEFAULT_MAX_DRIFT_MS, 0, dev(2));
        assert!(c.observe(&edge, 1_000).is_ok());
    }

    #[test]
    fn drift_bound_is_configurable() {
        let mut c = HlcClock::new(dev(1)).with_max_drift(10);
        assert_eq!(c.max_drift_ms(), 10);
        assert!(c.observe(&Hlc::new(111, 0, dev(2)), 100).is_err());
        assert!(c.observe(&Hlc::new(110, 0, dev(2)), 100).is_ok());
        assert!(check_drift(&Hlc::new(u64::MAX, 0, dev(2)), u64::MAX, 0).is_ok());
    }

    #[test]
    fn counter_overflow_moves_to_the_next_millisecond() {
        let mut c = HlcClock::resume(Hlc::new(5, u32::MAX, dev(1)), DEFAULT_MAX_DRIFT_MS);
        assert_eq!(c.tick(5), Hlc::new(6, 0, dev(1)));
        let mut c = HlcClock::resume(Hlc::new(5, 0, dev(1)), DEFAULT_MAX_DRIFT_MS);
        let got = c.observe(&Hlc::new(5, u32::MAX, dev(2)), 5).unwrap();
        assert_eq!(got, Hlc::new(6, 0, dev(1)));
    }

    #[test]
    fn the_maximum_stamp_saturates_without_panicking() {
        let top = Hlc::new(u64::MAX, u32::MAX, dev(1));
        let mut c = HlcClock::resume(top, 0);
        assert_eq!(c.tick(u64::MAX), top);
        assert_eq!(c.observe(&top, u64::MAX).unwrap(), top);
        assert_eq!(c.device(), dev(1));
        assert_eq!(c.last(), top);
    }

    #[test]
    fn serde_and_display() {
        let h = Hlc::new(7, 3, dev(1));
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Hlc>(&json).unwrap(), h);
        assert_eq!(h.to_string(), "7.3@00000000-0000-0000-0000-000000000001");
        assert!(format!("{h:?}").starts_with("Hlc(7.3@"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever the physical clock and remote stamps do, issued stamps strictly increase,
        /// stay ahead of every observed stamp, and refused stamps change nothing.
        #[test]
        fn stamps_strictly_increase(
            events in proptest::collection::vec((0u64..200, proptest::option::of((0u64..400, 0u32..4))), 1..40)
        ) {
            let mut c = HlcClock::new(dev(1)).with_max_drift(100);
            let mut last = c.last();
            for (now, remote) in events {
                let next = match remote {
                    None => c.tick(now),
                    Some((wall, counter)) => {
                        let r = Hlc::new(wall, counter, dev(2));
                        let before = c.clone();
                        match c.observe(&r, now) {
                            Ok(h) => {
                                proptest::prop_assert!(h > r);
                                h
                            }
                            Err(_) => {
                                proptest::prop_assert!(wall > now + 100);
                                proptest::prop_assert_eq!(&c, &before);
                                continue;
                            }
                        }
                    }
                };
                proptest::prop_assert!(next > last);
                proptest::prop_assert!(next.wall_ms >= now);
                last = next;
            }
        }
    }
}

//! Time for drivers that wait on hardware: [`Delay`], a monotonic clock plus what to do between
//! two polls of a register.
//!
//! A driver waits during bring-up (a reset to finish, a queue to enable, the link to come up)
//! and, rarely, on the datapath (`tx_flush` waiting for the device to reach the tail). The core
//! never sleeps by itself: an OS backend pauses by sleeping a little (so bring-up does not burn a
//! core), a bare-metal image spins with [`Spin`] over its calibrated clock.

use core::time::Duration;
use erpc_dataplane::clock::Clock;

/// A monotonic clock and a pause between polls.
pub trait Delay {
    /// Nanoseconds from any fixed origin; never goes backwards.
    fn now_ns(&self) -> u64;

    /// Called between two polls while waiting for the device, for at most a few hundred
    /// microseconds: sleep on an OS, a spin-loop hint on bare metal (the default).
    fn pause(&self) {
        core::hint::spin_loop()
    }
}

impl<T: Delay + ?Sized> Delay for &T {
    #[inline]
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }

    #[inline]
    fn pause(&self) {
        (**self).pause()
    }
}

/// Any dataplane [`Clock`] as a [`Delay`] that spins between polls: what a bare-metal image with
/// a calibrated TSC uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spin<C>(pub C);

impl<C: Clock> Delay for Spin<C> {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.0.now_ns()
    }
}

/// Polls `done` until it holds (true) or `timeout` has passed since the call (false). `done` is
/// checked first, and once more after the last pause, so a condition that holds in time is never
/// reported late.
pub fn poll_until(d: &impl Delay, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t0 = d.now_ns();
    let limit = duration_ns(timeout);
    loop {
        if done() {
            return true;
        }
        if d.now_ns().saturating_sub(t0) > limit {
            return done();
        }
        d.pause();
    }
}

/// Waits for `dur` (pausing as [`Delay::pause`] says): the fixed delays a datasheet asks for,
/// such as after a reset.
pub fn sleep(d: &impl Delay, dur: Duration) {
    let t0 = d.now_ns();
    let ns = duration_ns(dur);
    while d.now_ns().saturating_sub(t0) < ns {
        d.pause();
    }
}

/// `dur` in nanoseconds, saturating (a timeout of centuries is forever).
pub(crate) fn duration_ns(dur: Duration) -> u64 {
    u64::try_from(dur.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    /// A clock that moves 100 µs per pause, counting pauses.
    #[derive(Default)]
    struct Steps {
        ns: Cell<u64>,
        pauses: Cell<u32>,
    }

    impl Delay for Steps {
        fn now_ns(&self) -> u64 {
            self.ns.get()
        }

        fn pause(&self) {
            self.ns.set(self.ns.get() + 100_000);
            self.pauses.set(self.pauses.get() + 1);
        }
    }

    #[test]
    fn poll_until_gives_up_after_the_timeout_and_not_before() {
        let d = Steps::default();
        assert!(!poll_until(&d, Duration::from_millis(1), || false));
        // 1 ms is 10 pauses; the first check after it finds the time passed.
        assert_eq!(d.pauses.get(), 11);
        let d = Steps::default();
        let calls = Cell::new(0);
        assert!(poll_until(&d, Duration::from_millis(1), || {
            calls.set(calls.get() + 1);
            calls.get() == 5
        }));
        assert_eq!(d.pauses.get(), 4, "stops polling once done");
    }

    #[test]
    fn sleep_waits_its_duration() {
        let d = Steps::default();
        sleep(&d, Duration::from_micros(1_050));
        assert_eq!(d.now_ns(), 1_100_000);
        sleep(&d, Duration::ZERO);
        assert_eq!(d.pauses.get(), 11, "a zero sleep does not pause");
    }

    #[test]
    fn spin_reads_the_dataplane_clock() {
        let c = erpc_dataplane::clock::SimClock::new();
        c.set(42);
        assert_eq!(Spin(&c).now_ns(), 42);
    }
}

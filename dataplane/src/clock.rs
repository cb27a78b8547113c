//! Time, through a trait: the TSC under Linux, a simulated clock in tests and simulations.

use core::cell::Cell;

/// A monotonic clock in nanoseconds. The event loop reads it once per iteration and once per RX
/// batch, so an implementation should be cheap (a TSC read and a multiply).
pub trait Clock {
    fn now_ns(&self) -> u64;
}

impl<C: Clock + ?Sized> Clock for &C {
    #[inline]
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
}

/// A clock shared by the endpoints and fabric of one thread (a [`SimClock`] in tests).
#[cfg(feature = "std")]
impl<C: Clock + ?Sized> Clock for std::rc::Rc<C> {
    #[inline]
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
}

/// A clock shared across threads.
#[cfg(feature = "std")]
impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    #[inline]
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
}

/// A clock that moves only when told to. Shared by reference between the endpoints and the
/// simulated fabric of one test, so every run is reproducible.
#[derive(Debug, Default)]
pub struct SimClock {
    ns: Cell<u64>,
}

impl SimClock {
    pub const fn new() -> Self {
        SimClock { ns: Cell::new(0) }
    }

    pub fn advance(&self, ns: u64) {
        self.ns.set(self.ns.get() + ns);
    }

    pub fn set(&self, ns: u64) {
        self.ns.set(ns);
    }
}

impl Clock for SimClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.ns.get()
    }
}

/// Wall-clock time from `std::time::Instant` (portable; slower than the TSC).
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug)]
pub struct StdClock {
    start: std::time::Instant,
}

#[cfg(feature = "std")]
impl Default for StdClock {
    fn default() -> Self {
        StdClock { start: std::time::Instant::now() }
    }
}

#[cfg(feature = "std")]
impl Clock for StdClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// The x86 time-stamp counter, scaled to nanoseconds with a factor measured against
/// `std::time::Instant` at construction (requires an invariant TSC, as on every x86 server of
/// the last decade).
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[derive(Clone, Copy, Debug)]
pub struct TscClock {
    /// Nanoseconds per tick, as a 32.32 fixed-point number.
    mult: u64,
    base: u64,
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
impl TscClock {
    /// Calibrates over about 10 ms.
    pub fn calibrate() -> Self {
        let t0 = std::time::Instant::now();
        let c0 = rdtsc();
        while t0.elapsed() < std::time::Duration::from_millis(10) {
            core::hint::spin_loop();
        }
        let ns = t0.elapsed().as_nanos() as u64;
        let ticks = rdtsc() - c0;
        TscClock { mult: ((ns as u128) << 32).div_ceil(ticks.max(1) as u128) as u64, base: c0 }
    }

    /// Ticks per microsecond, for display.
    pub fn ghz(&self) -> f64 {
        (1u64 << 32) as f64 / self.mult as f64
    }
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[inline]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86_64; it only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
impl Clock for TscClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        (((rdtsc() - self.base) as u128 * self.mult as u128) >> 32) as u64
    }
}

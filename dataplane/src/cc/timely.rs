//! Timely (Mittal et al., SIGCOMM 2015): RTT-gradient rate control, one instance per client
//! session, with the original eRPC's parameters as defaults (erpc-io/eRPC `src/cc/timely.h`).
//! Rates are bytes per second, times nanoseconds.
//!
//! Each RTT sample updates the rate:
//! * below `t_low`: additive increase;
//! * above `t_high`: multiplicative decrease by `beta * (1 - t_high / rtt)`;
//! * otherwise by the EWMA of RTT differences, normalised by `min_rtt`: increase while it is not
//!   positive (five-fold "hyper-active" after `hai_thresh` consecutive negative steps), else
//!   decrease by `beta * gradient`.
//!
//! Every step is scaled by `min(1, time since last update / min_rtt)`, and the result is clamped
//! to `[max(rate / 2, min_rate), link_rate]`.

/// Timely's parameters. `Default` gives the original eRPC's values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimelyParams {
    pub t_low_ns: f64,
    pub t_high_ns: f64,
    pub min_rtt_ns: f64,
    /// Multiplicative-decrease factor.
    pub beta: f64,
    /// EWMA weight of the newest RTT difference.
    pub ewma_alpha: f64,
    /// Additive increase step, bytes per second.
    pub add_rate: f64,
    pub min_rate: f64,
    /// Consecutive negative-gradient steps before increasing five-fold.
    pub hai_thresh: u32,
}

impl Default for TimelyParams {
    fn default() -> Self {
        TimelyParams {
            t_low_ns: 50_000.0,
            t_high_ns: 1_000_000.0,
            min_rtt_ns: 2_000.0,
            beta: 0.26,
            ewma_alpha: 0.46,
            add_rate: 5e6,
            min_rate: 15e6,
            hai_thresh: 5,
        }
    }
}

/// The rate state of one session. Fixed layout: the two fields [`Timely::at_link_rate`] reads
/// come first ([`Timely::HOT_BYTES`]).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Timely {
    rate: f64,
    link_rate: f64,
    prev_rtt: f64,
    avg_rtt_diff: f64,
    last_update_ns: u64,
    neg_steps: u32,
}

const _: () = assert!(core::mem::offset_of!(Timely, link_rate) + 8 <= Timely::HOT_BYTES);

impl Timely {
    /// Leading bytes holding `rate` and `link_rate`.
    pub const HOT_BYTES: usize = 16;

    /// Starts at the link rate (bytes per second).
    pub const fn new(link_rate: f64, now_ns: u64) -> Self {
        Timely { rate: link_rate, link_rate, prev_rtt: 0.0, avg_rtt_diff: 0.0, neg_steps: 0, last_update_ns: now_ns }
    }

    /// Current rate, bytes per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn link_rate(&self) -> f64 {
        self.link_rate
    }

    /// Sets the rate (clamped to `[min_rate, link_rate]`): for experiments and tests.
    pub fn set_rate(&mut self, rate: f64, p: &TimelyParams) {
        self.rate = rate.max(p.min_rate).min(self.link_rate);
    }

    /// Whether the session runs at full rate (the "uncongested" bypasses apply).
    pub fn at_link_rate(&self) -> bool {
        self.rate >= self.link_rate
    }

    /// Folds one RTT sample taken at `now_ns` into the rate.
    pub fn update(&mut self, rtt_ns: u64, now_ns: u64, p: &TimelyParams) {
        let rtt = rtt_ns as f64;
        if self.prev_rtt == 0.0 {
            self.prev_rtt = rtt;
        }
        let diff = rtt - self.prev_rtt;
        self.neg_steps = if diff < 0.0 { self.neg_steps + 1 } else { 0 };
        self.avg_rtt_diff = (1.0 - p.ewma_alpha) * self.avg_rtt_diff + p.ewma_alpha * diff;
        let gradient = self.avg_rtt_diff / p.min_rtt_ns;
        let elapsed = now_ns.saturating_sub(self.last_update_ns) as f64;
        let delta = (elapsed / p.min_rtt_ns).min(1.0);
        let new_rate = if rtt < p.t_low_ns {
            self.rate + p.add_rate * delta
        } else if rtt > p.t_high_ns {
            self.rate * (1.0 - delta * p.beta * (1.0 - p.t_high_ns / rtt))
        } else if gradient <= 0.0 {
            let n = if self.neg_steps >= p.hai_thresh { 5.0 } else { 1.0 };
            self.rate + n * p.add_rate * delta
        } else {
            self.rate * (1.0 - delta * p.beta * gradient)
        };
        self.prev_rtt = rtt;
        self.last_update_ns = now_ns;
        self.rate = new_rate.max(self.rate * 0.5).max(p.min_rate).min(self.link_rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: f64 = 25e9 / 8.0;

    /// Feeds `n` samples of `rtt_us`, 10 µs apart, and returns the final time.
    fn feed(t: &mut Timely, mut now: u64, n: usize, rtt_us: u64) -> u64 {
        let p = TimelyParams::default();
        for _ in 0..n {
            now += 10_000;
            t.update(rtt_us * 1000, now, &p);
        }
        now
    }

    #[test]
    fn stays_at_link_rate_when_uncongested() {
        let mut t = Timely::new(LINK, 0);
        feed(&mut t, 0, 1000, 10);
        assert!(t.at_link_rate());
    }

    #[test]
    fn rising_rtt_decreases_then_falling_rtt_returns_to_link_rate() {
        let mut t = Timely::new(LINK, 0);
        // The first sample has no gradient yet.
        let mut now = feed(&mut t, 0, 1, 60);
        let mut last = t.rate();
        // RTT rising from 80 to 900 µs: the gradient is positive, the rate falls every step.
        for rtt in (80..900).step_by(20) {
            now = feed(&mut t, now, 1, rtt);
            let floor = TimelyParams::default().min_rate;
            assert!(t.rate() < last || t.rate() == floor, "rate did not fall at rtt {rtt}");
            last = t.rate();
        }
        assert!(t.rate() < LINK * 0.1, "rate {} after a long RTT rise", t.rate());
        // Far above T_high the rate stays at its floor (the exact cut is checked below).
        now = feed(&mut t, now, 5, 3000);
        assert_eq!(t.rate(), TimelyParams::default().min_rate);
        // RTT back below T_low: additive increase (with the hyper-active boost) back to link rate.
        let low = t.rate();
        now = feed(&mut t, now, 1, 20);
        assert!(t.rate() > low);
        let mut steps = 0;
        while !t.at_link_rate() {
            now = feed(&mut t, now, 1, 20);
            steps += 1;
            assert!(steps < 1_000_000, "never returned to link rate");
        }
        assert_eq!(t.rate(), LINK);
    }

    #[test]
    fn falling_rtt_in_band_turns_hyper_active() {
        let p = TimelyParams::default();
        let mut t = Timely::new(LINK, 0);
        let mut now = feed(&mut t, 0, 50, 800);
        now = feed(&mut t, now, 1, 900);
        let base = t.rate();
        // Each step lowers the RTT: after `hai_thresh` negative steps increases are 5x.
        let mut incs = [0.0; 8];
        let mut prev = base;
        for (i, inc) in incs.iter_mut().enumerate() {
            now = feed(&mut t, now, 1, 880 - 20 * i as u64);
            *inc = t.rate() - prev;
            prev = t.rate();
        }
        // Step 0 still sees the positive average gradient of the jump to 900 µs (a decrease);
        // steps 1..4 add `add_rate`; from the fifth consecutive negative step on, 5x.
        let hai = p.hai_thresh as usize;
        assert!(incs[0] < 0.0, "{incs:?}");
        assert!(incs[1..hai - 1].iter().all(|&d| (d - p.add_rate).abs() < 1.0), "{incs:?}");
        assert!(incs[hai - 1..].iter().all(|&d| (d - 5.0 * p.add_rate).abs() < 1.0), "{incs:?}");
    }

    #[test]
    fn halving_bound_and_min_rate() {
        let p = TimelyParams::default();
        let mut t = Timely::new(LINK, 0);
        t.update(60_000, 10_000, &p);
        // A jump to 999 µs: the normalised gradient (0.46 * 939 / 2 = 216) would cut the rate
        // below zero; it is at most halved per step.
        t.update(999_000, 20_000, &p);
        assert_eq!(t.rate(), LINK / 2.0);
        // Above T_high the cut is beta * (1 - T_high / rtt).
        let r = t.rate();
        t.update(2_000_000, 30_000, &p);
        assert!((t.rate() - r * (1.0 - 0.26 * 0.5)).abs() < 1.0);
        for i in 0..200 {
            t.update(900_000_000, 40_000 + i * 10_000, &p);
        }
        assert_eq!(t.rate(), p.min_rate);
    }
}

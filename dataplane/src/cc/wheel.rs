//! The Carousel timing wheel (Saeed et al., SIGCOMM 2017) that paces packets for the rate limiter.
//!
//! Time is cut into [`SLOT_NS`] slots; an entry scheduled at `t` goes into the slot that covers
//! `t` (entries beyond the horizon go into the last slot, entries in the past into the current
//! one). [`TimingWheel::reap`] returns, in time order, the entries of every slot that has begun
//! by `now`. Entries are `u32` ids (the endpoint uses global slot indices); the list links live in
//! the caller's records through [`WheelLinks`], so the wheel itself allocates nothing.

/// Slot width: 0.5 µs, as in the original.
pub const SLOT_NS: u64 = 500;
/// Slots in the wheel: a horizon of 4096 * 0.5 µs = 2.048 ms.
pub const NUM_SLOTS: usize = 4096;
const NIL: u32 = u32::MAX;
/// Words of the occupancy bitmap (a bit per slot).
const WORDS: usize = NUM_SLOTS / 64;

/// Access to the `next` link that each scheduled record carries.
pub trait WheelLinks {
    fn next(&self, id: u32) -> u32;
    fn set_next(&mut self, id: u32, next: u32);
}

/// A timing wheel of [`NUM_SLOTS`] slots of [`SLOT_NS`] each.
pub struct TimingWheel {
    heads: [u32; NUM_SLOTS],
    tails: [u32; NUM_SLOTS],
    /// Bit `s` set: slot `s` holds an entry. Lets `reap` and `next_due_ns` jump over a run of
    /// empty slots (a paced flow's gap, an idle stretch) in one scan instead of a step per slot.
    occupied: [u64; WORDS],
    /// Start time of slot `cursor`.
    base_ns: u64,
    cursor: usize,
    len: usize,
}

impl TimingWheel {
    /// An empty wheel whose current slot starts at `now_ns`.
    pub fn new(now_ns: u64) -> Self {
        TimingWheel {
            heads: [NIL; NUM_SLOTS],
            tails: [NIL; NUM_SLOTS],
            occupied: [0; WORDS],
            base_ns: now_ns,
            cursor: 0,
            len: 0,
        }
    }

    /// Entries scheduled and not yet reaped.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start time of the earliest slot holding an entry (the time from which `reap` returns it),
    /// or `None` if the wheel is empty. Scans forward from the current slot.
    pub fn next_due_ns(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        self.slots_to_occupied().map(|k| self.base_ns + k as u64 * SLOT_NS)
    }

    /// How many slots from the current one (0: the current slot) to the first that holds an
    /// entry, going round the wheel once; `None` if none does.
    fn slots_to_occupied(&self) -> Option<usize> {
        let (w0, b0) = (self.cursor / 64, self.cursor % 64);
        let first = self.occupied[w0] & (!0u64 << b0);
        if first != 0 {
            return Some(w0 * 64 + first.trailing_zeros() as usize - self.cursor);
        }
        for i in 1..=WORDS {
            let w = (w0 + i) % WORDS;
            let mut m = self.occupied[w];
            if i == WORDS {
                // Back at the first word: only the slots before the cursor are left.
                m &= (1u64 << b0).wrapping_sub(1);
            }
            if m != 0 {
                let slot = w * 64 + m.trailing_zeros() as usize;
                return Some((slot + NUM_SLOTS - self.cursor) % NUM_SLOTS);
            }
        }
        None
    }

    /// Schedules `id` for `at_ns`. `id` must not be `u32::MAX`, the wheel's end-of-list mark.
    pub fn insert<L: WheelLinks + ?Sized>(&mut self, links: &mut L, id: u32, at_ns: u64) {
        debug_assert_ne!(id, NIL, "u32::MAX marks the end of a slot's list");
        let ahead = (at_ns.saturating_sub(self.base_ns) / SLOT_NS).min(NUM_SLOTS as u64 - 1) as usize;
        let s = (self.cursor + ahead) % NUM_SLOTS;
        links.set_next(id, NIL);
        if self.tails[s] == NIL {
            self.heads[s] = id;
            self.occupied[s / 64] |= 1u64 << (s % 64);
        } else {
            links.set_next(self.tails[s], id);
        }
        self.tails[s] = id;
        self.len += 1;
    }

    /// Calls `f` for every entry whose slot has begun by `now_ns`, earliest slot first and in
    /// insertion order within a slot, up to `max` entries (the rest stay for the next call). `f`
    /// gets the links only; entries scheduled after a call (at the same `now_ns`) land in later
    /// slots, or in the current one if due, and the next call returns those.
    pub fn reap<L: WheelLinks + ?Sized>(
        &mut self,
        links: &mut L,
        now_ns: u64,
        max: usize,
        mut f: impl FnMut(&mut L, u32),
    ) {
        let mut done = 0;
        loop {
            // Drain the current slot (it has begun: base_ns <= now).
            while self.heads[self.cursor] != NIL {
                if done == max {
                    return;
                }
                done += 1;
                let id = self.heads[self.cursor];
                self.heads[self.cursor] = links.next(id);
                if self.heads[self.cursor] == NIL {
                    self.tails[self.cursor] = NIL;
                    self.occupied[self.cursor / 64] &= !(1u64 << (self.cursor % 64));
                }
                self.len -= 1;
                f(links, id);
            }
            if self.base_ns + SLOT_NS > now_ns {
                return;
            }
            if self.len == 0 {
                // Nothing scheduled: jump the wheel to now.
                self.base_ns = now_ns;
                return;
            }
            // The current slot is empty and over: go to the next slot that holds an entry, or
            // to the one that covers `now` if that comes first, in one move (what stepping a
            // slot at a time would reach, without visiting the empty ones).
            let elapsed = (now_ns - self.base_ns) / SLOT_NS;
            let Some(to_next) = self.slots_to_occupied() else {
                // Unreachable (entries are scheduled, so a slot holds them); as if empty.
                self.base_ns = now_ns;
                return;
            };
            // At least one slot (`to_next` is, as the current slot is empty; the bound keeps the
            // loop moving even if an id of `u32::MAX` had been inserted and lost).
            let k = (to_next as u64).min(elapsed).max(1);
            self.cursor = (self.cursor + k as usize) % NUM_SLOTS;
            self.base_ns += k * SLOT_NS;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    struct Links(Vec<u32>);
    impl WheelLinks for Links {
        fn next(&self, id: u32) -> u32 {
            self.0[id as usize]
        }
        fn set_next(&mut self, id: u32, next: u32) {
            self.0[id as usize] = next;
        }
    }

    /// The wheel before the occupancy bitmap: `reap` steps one slot at a time and
    /// `next_due_ns` scans the heads. The bitmap wheel must do exactly what it did.
    struct SteppingWheel {
        heads: Vec<u32>,
        tails: Vec<u32>,
        base_ns: u64,
        cursor: usize,
        len: usize,
    }

    impl SteppingWheel {
        fn new(now_ns: u64) -> Self {
            SteppingWheel {
                heads: vec![NIL; NUM_SLOTS],
                tails: vec![NIL; NUM_SLOTS],
                base_ns: now_ns,
                cursor: 0,
                len: 0,
            }
        }
        fn next_due_ns(&self) -> Option<u64> {
            if self.len == 0 {
                return None;
            }
            (0..NUM_SLOTS)
                .find(|k| self.heads[(self.cursor + k) % NUM_SLOTS] != NIL)
                .map(|k| self.base_ns + k as u64 * SLOT_NS)
        }
        fn insert(&mut self, links: &mut Links, id: u32, at_ns: u64) {
            let ahead = (at_ns.saturating_sub(self.base_ns) / SLOT_NS).min(NUM_SLOTS as u64 - 1) as usize;
            let s = (self.cursor + ahead) % NUM_SLOTS;
            links.set_next(id, NIL);
            if self.tails[s] == NIL {
                self.heads[s] = id;
            } else {
                links.set_next(self.tails[s], id);
            }
            self.tails[s] = id;
            self.len += 1;
        }
        fn reap(&mut self, links: &mut Links, now_ns: u64, max: usize, out: &mut Vec<u32>) {
            let mut done = 0;
            loop {
                while self.heads[self.cursor] != NIL {
                    if done == max {
                        return;
                    }
                    done += 1;
                    let id = self.heads[self.cursor];
                    self.heads[self.cursor] = links.next(id);
                    if self.heads[self.cursor] == NIL {
                        self.tails[self.cursor] = NIL;
                    }
                    self.len -= 1;
                    out.push(id);
                }
                if self.base_ns + SLOT_NS > now_ns {
                    return;
                }
                if self.len == 0 {
                    self.base_ns = now_ns;
                    return;
                }
                self.cursor = (self.cursor + 1) % NUM_SLOTS;
                self.base_ns += SLOT_NS;
            }
        }
    }

    /// Random inserts (in the past, within the horizon, beyond it), clock advances (small
    /// steps, gaps longer than the wheel, long idle stretches) and reaps of random sizes: the
    /// wheel returns the same entries in the same order, and reports the same next due time, as
    /// the stepping wheel, including once the cursor has gone round several times.
    #[test]
    fn jumping_over_empty_slots_matches_stepping_through_them() {
        for seed in [0x9E37_79B9_7F4A_7C15u64, 1, 0xDEAD_BEEF, 0x1234_5678_9ABC_DEF0] {
            differential_run(seed);
        }
    }

    fn differential_run(mut seed: u64) {
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        // What the run went through, required below: cursor wrap-arounds, inserts clamped to
        // the horizon and in the past, reaps cut short by `max`.
        let (mut wraps, mut clamped, mut past, mut cut) = (0, 0, 0, 0);
        const IDS: usize = 20_000;
        let (mut la, mut lb) = (Links(vec![NIL; IDS]), Links(vec![NIL; IDS]));
        let mut now = 5_000_000u64;
        let (mut a, mut b) = (TimingWheel::new(now), SteppingWheel::new(now));
        let (mut next_id, mut reaped) = (0u32, 0usize);
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        for step in 0..60_000 {
            assert_eq!(a.next_due_ns(), b.next_due_ns(), "step {step}");
            match rnd(10) {
                0..=3 if (next_id as usize) < IDS => {
                    let at = match rnd(6) {
                        0 => now.saturating_sub(rnd(20_000)),
                        1 => now + NUM_SLOTS as u64 * SLOT_NS + rnd(5_000_000),
                        _ => now + rnd(300_000),
                    };
                    if at < a.base_ns {
                        past += 1;
                    }
                    if (at.saturating_sub(a.base_ns) / SLOT_NS) >= NUM_SLOTS as u64 - 1 {
                        clamped += 1;
                    }
                    a.insert(&mut la, next_id, at);
                    b.insert(&mut lb, next_id, at);
                    next_id += 1;
                }
                4..=6 => {
                    now += match rnd(20) {
                        0 => 3_000_000 + rnd(10_000_000),
                        1..=3 => rnd(400_000),
                        _ => rnd(3_000),
                    };
                }
                _ => {
                    let max = match rnd(20) {
                        0 => 0,
                        1 => usize::MAX,
                        _ => 1 + rnd(40) as usize,
                    };
                    out_a.clear();
                    out_b.clear();
                    let before = a.cursor;
                    a.reap(&mut la, now, max, |_, id| out_a.push(id));
                    b.reap(&mut lb, now, max, &mut out_b);
                    assert_eq!(out_a, out_b, "step {step}: reap at {now} of at most {max}");
                    reaped += out_a.len();
                    wraps += usize::from(a.cursor < before);
                    cut += usize::from(max > 0 && out_a.len() == max);
                }
            }
            assert_eq!(a.len(), b.len, "step {step}");
            assert_eq!((a.cursor, a.base_ns), (b.cursor, b.base_ns), "step {step}");
            if step % 16 == 0 {
                for s in 0..NUM_SLOTS {
                    assert_eq!(a.occupied[s / 64] >> (s % 64) & 1 == 1, a.heads[s] != NIL, "step {step}: slot {s}");
                }
            }
        }
        assert!(wraps > 0 && clamped > 0 && past > 0 && cut > 0, "{wraps} {clamped} {past} {cut}");
        assert!(
            next_id as usize > IDS / 2 && reaped > IDS / 2,
            "the run exercised the wheel: {next_id} in, {reaped} out"
        );
    }

    /// `slots_to_occupied` at the edges of the bitmap's words: every cursor position against
    /// every distance to the one occupied slot, and `None` when no slot is.
    #[test]
    fn the_next_occupied_slot_is_found_across_word_edges() {
        let mut w = TimingWheel::new(0);
        for c in [0, 1, 62, 63, 64, 65, 4031, 4032, 4095] {
            w.cursor = c;
            w.occupied = [0; WORDS];
            assert_eq!(w.slots_to_occupied(), None, "cursor {c}");
            for d in [0, 1, 62, 63, 64, 65, 4032, 4094, 4095] {
                w.occupied = [0; WORDS];
                let s = (c + d) % NUM_SLOTS;
                w.occupied[s / 64] |= 1u64 << (s % 64);
                assert_eq!(w.slots_to_occupied(), Some(d), "cursor {c}, occupied slot {s}");
            }
        }
    }

    #[test]
    fn reaps_in_time_order_never_early() {
        let mut links = Links(vec![NIL; 1000]);
        let t0 = 1_000_000;
        let mut w = TimingWheel::new(t0);
        let mut due = Vec::new();
        for id in 0..1000u32 {
            // Pseudo-random times within 1.5 ms.
            let at = t0 + (id as u64 * 7919 % 1000) * 1_500;
            due.push(at);
            w.insert(&mut links, id, at);
        }
        assert_eq!(w.len(), 1000);
        let mut out: Vec<(u64, u32)> = Vec::new();
        let mut now = t0;
        while !w.is_empty() {
            now += 300;
            w.reap(&mut links, now, usize::MAX, |_, id| out.push((now, id)));
        }
        assert_eq!(out.len(), 1000);
        for (i, &(t, id)) in out.iter().enumerate() {
            let d = due[id as usize];
            assert!(t >= d - d % SLOT_NS, "entry {id} due {d} reaped early at {t}");
            assert!(t < d + SLOT_NS + 300, "entry {id} due {d} reaped late at {t}");
            if i > 0 {
                let prev = due[out[i - 1].1 as usize];
                assert!(prev / SLOT_NS <= d / SLOT_NS, "out of time order");
            }
        }
    }

    #[test]
    fn paces_a_flow_at_the_configured_rate() {
        // One flow of 1024-byte packets at 1 GB/s: one packet every 1024 ns, rescheduled from the
        // reap callback as the endpoint does (desired = max(prev + size/rate, now)).
        let mut links = Links(vec![NIL; 1]);
        let mut w = TimingWheel::new(0);
        let gap = 1024u64;
        let mut prev = 0u64;
        let mut sent = Vec::new();
        w.insert(&mut links, 0, 0);
        let mut now = 0;
        while sent.len() < 1000 {
            now += 100;
            w.reap(&mut links, now, usize::MAX, |_, _| {
                sent.push(now);
                prev = (prev + gap).max(now);
            });
            if w.is_empty() && sent.len() < 1000 {
                w.insert(&mut links, 0, prev);
            }
        }
        let span = sent[999] - sent[0];
        let expect = 999 * gap;
        assert!(span.abs_diff(expect) < expect / 50, "span {span} vs {expect}");
    }

    #[test]
    fn next_due_is_the_earliest_occupied_slot() {
        let mut links = Links(vec![NIL; 3]);
        let mut w = TimingWheel::new(1_000);
        assert_eq!(w.next_due_ns(), None);
        w.insert(&mut links, 0, 1_000 + 7 * SLOT_NS + 10);
        w.insert(&mut links, 1, 1_000 + 3 * SLOT_NS + 499);
        assert_eq!(w.next_due_ns(), Some(1_000 + 3 * SLOT_NS));
        let mut got = Vec::new();
        w.reap(&mut links, 1_000 + 3 * SLOT_NS, usize::MAX, |_, id| got.push(id));
        assert_eq!(got, vec![1]);
        assert_eq!(w.next_due_ns(), Some(1_000 + 7 * SLOT_NS));
        w.reap(&mut links, 1_000 + 7 * SLOT_NS - 1, usize::MAX, |_, id| got.push(id));
        assert_eq!(got, vec![1], "reaped before its slot began");
        w.reap(&mut links, 1_000 + 7 * SLOT_NS, usize::MAX, |_, id| got.push(id));
        assert_eq!(got, vec![1, 0]);
        assert_eq!(w.next_due_ns(), None);
    }

    #[test]
    fn beyond_horizon_clamps_and_past_is_due_now() {
        let mut links = Links(vec![NIL; 3]);
        let mut w = TimingWheel::new(10_000);
        w.insert(&mut links, 0, 10_000 + 10 * NUM_SLOTS as u64 * SLOT_NS);
        w.insert(&mut links, 1, 0);
        let mut got = Vec::new();
        w.reap(&mut links, 10_000, usize::MAX, |_, id| got.push(id));
        assert_eq!(got, vec![1]);
        w.reap(&mut links, 10_000 + NUM_SLOTS as u64 * SLOT_NS, 1, |_, id| got.push(id));
        assert_eq!(got, vec![1, 0]);
        assert!(w.is_empty());
    }
}

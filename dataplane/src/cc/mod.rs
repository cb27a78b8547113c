//! Congestion control: Timely per client session and a Carousel timing wheel that paces packets.
//!
//! As in the original (erpc-io/eRPC `src/cc/timely.h`, `src/cc/timing_wheel.h`, `src/tweakme.h`), and optimised for the common,
//! uncongested case, with each bypass on by default and switchable in [`CcConfig`]:
//! * **Timely bypass**: no rate update for an RTT sample below `t_low` while the session runs at
//!   the link rate.
//! * **Wheel bypass**: a session at the link rate sends directly; only a slowed-down session's
//!   packets go through the wheel.
//! * **Batched timestamps**: RTT samples and pacing use the event loop's one clock reading per
//!   RX batch instead of reading the clock per packet.
//!
//! Pacing is per session: the next packet of a slot is due at
//! `max(previous due time + bytes / rate, now)`. A slot has at most one entry in the wheel (its
//! next packet); when the wheel reaps it the packet is sent (spending its credit then) and the
//! slot's following packet is scheduled. RTT samples come from one timestamped packet per slot
//! at a time (a credit return or response for it gives `now - sent`); packets re-sent by a
//! rollback are never sampled. A slot whose next packet waits in the wheel is not rolled back
//! (the original does the same).

pub mod timely;
pub mod wheel;

use crate::clock::Clock;
use crate::rpc::Rpc;
use crate::session::{Session, SlotId, SlotState};
use crate::transport::Transport;
use timely::{Timely, TimelyParams};
use wheel::WheelLinks;

/// TX timestamps kept per slot: packet `n` is timed in entry `n % RTT_TS`, as in the original
/// (which keeps one per credit). With more credits than this, a packet whose entry a later packet
/// reused is not sampled.
pub const RTT_TS: usize = 32;

/// Congestion-control settings. `Default` gives the original's: everything on, Timely with its
/// default parameters, a 25 Gb/s link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CcConfig {
    /// Run Timely and pace slowed-down sessions. Off: every session sends at once, always.
    pub enabled: bool,
    /// The link rate in bytes per second: where Timely starts and what it never exceeds.
    pub link_rate: f64,
    pub timely: TimelyParams,
    pub timely_bypass: bool,
    pub wheel_bypass: bool,
    pub batch_timestamps: bool,
}

impl Default for CcConfig {
    fn default() -> Self {
        CcConfig {
            enabled: true,
            link_rate: 25e9 / 8.0,
            timely: TimelyParams::default(),
            timely_bypass: true,
            wheel_bypass: true,
            batch_timestamps: true,
        }
    }
}

/// Counters of the congestion-control machinery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CcStats {
    /// Timely rate updates run.
    pub rate_updates: u64,
    /// RTT samples that skipped the update (Timely bypass).
    pub timely_bypassed: u64,
    /// Packets sent directly because their session was at the link rate (wheel bypass).
    pub wheel_bypassed: u64,
    /// Packets scheduled in the wheel.
    pub paced: u64,
    /// Rollbacks skipped because the slot's next packet was still in the wheel.
    pub retx_skipped_in_wheel: u64,
}

/// Per-session congestion-control state. Fixed layout: what the common case reads (the Timely
/// rate and link rate, [`SessionCc::HOT_BYTES`]) comes first, so the session can keep it in a
/// cache line every packet touches anyway.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct SessionCc {
    pub(crate) timely: Timely,
    /// Due time of the session's last paced packet.
    pub(crate) next_tx_ns: u64,
}

impl SessionCc {
    /// Leading bytes read by the bypass checks ([`Timely::at_link_rate`]).
    pub const HOT_BYTES: usize = timely::Timely::HOT_BYTES;

    pub const EMPTY: SessionCc = SessionCc { timely: Timely::new(0.0, 0), next_tx_ns: 0 };

    pub(crate) fn new(link_rate: f64, now_ns: u64) -> Self {
        SessionCc { timely: Timely::new(link_rate, now_ns), next_tx_ns: now_ns }
    }
}

/// The wheel's list links live in the slots, named by their [`SlotId`].
pub(crate) struct SlotLinks<'a>(pub(crate) &'a mut [Session]);

impl WheelLinks for SlotLinks<'_> {
    #[inline]
    fn next(&self, id: u32) -> u32 {
        let id = SlotId::from_raw(id);
        self.0[id.session()].slots[id.slot()].wheel_next
    }
    #[inline]
    fn set_next(&mut self, id: u32, next: u32) {
        let id = SlotId::from_raw(id);
        self.0[id.session()].slots[id.slot()].wheel_next = next;
    }
}

impl<'m, T: Transport, C: Clock, Ctx> Rpc<'m, T, C, Ctx> {
    #[inline]
    fn cc_now(&self) -> u64 {
        if self.cfg.cc.batch_timestamps {
            self.now
        } else {
            self.clock.now_ns()
        }
    }

    /// Whether the next packet (`bytes` on the wire) of slot `i` may go now. If not, the slot is
    /// put in the wheel at the packet's due time and the caller must stop sending for it.
    #[inline]
    pub(crate) fn cc_may_send(&mut self, s: usize, i: usize, bytes: usize) -> bool {
        if !self.cfg.cc.enabled {
            return true;
        }
        let sess = &self.sessions[s];
        if self.cfg.cc.wheel_bypass && sess.cc.timely.at_link_rate() {
            self.stats.cc.wheel_bypassed += 1;
            return true;
        }
        let now = self.cc_now();
        let sess = &mut self.sessions[s];
        let gap = (bytes as f64 * 1e9 / sess.cc.timely.rate()) as u64;
        let due = (sess.cc.next_tx_ns + gap).max(now);
        sess.cc.next_tx_ns = due;
        if due <= now {
            return true;
        }
        sess.slots[i].in_wheel = true;
        self.stats.cc.paced += 1;
        self.wheel.insert(&mut SlotLinks(self.sessions.as_mut_slice()), SlotId::new(s, i).raw(), due);
        false
    }

    /// The TX timestamp of a packet being sent, for its slot's `tx_ts[pkt_num % RTT_TS]`
    /// (`None` without congestion control): `send_next` records it with the rest of the slot's
    /// bookkeeping.
    #[inline(always)]
    pub(crate) fn cc_tx_stamp(&self) -> Option<u32> {
        self.cfg.cc.enabled.then(|| self.cc_now() as u32)
    }

    /// Packet `pkt_num` of slot `i` was acknowledged (credit return or response): one RTT
    /// sample, unless the packet was sent twice or its timestamp entry was reused since.
    #[inline]
    pub(crate) fn cc_on_ack(&mut self, s: usize, i: usize, pkt_num: u16) {
        if !self.cfg.cc.enabled {
            return;
        }
        let sl = &self.sessions[s].slots[i];
        if pkt_num < sl.untimed_below || sl.num_tx as usize > pkt_num as usize + RTT_TS {
            return;
        }
        let now = self.cc_now();
        let cfg = self.cfg.cc;
        let sess = &mut self.sessions[s];
        let sl = &sess.slots[i];
        let rtt = (now as u32).wrapping_sub(sl.tx_ts[pkt_num as usize % RTT_TS]) as u64;
        if cfg.timely_bypass && sess.cc.timely.at_link_rate() && (rtt as f64) < cfg.timely.t_low_ns {
            self.stats.cc.timely_bypassed += 1;
            return;
        }
        sess.cc.timely.update(rtt, now, &cfg.timely);
        self.stats.cc.rate_updates += 1;
    }

    /// Sends the packets whose time has come.
    pub(crate) fn reap_wheel(&mut self) {
        let now = self.cc_now();
        loop {
            let mut due: heapless::Vec<u32, 32> = heapless::Vec::new();
            self.wheel.reap(&mut SlotLinks(self.sessions.as_mut_slice()), now, 32, |_, id| {
                let _ = due.push(id);
            });
            if due.is_empty() {
                return;
            }
            for id in due {
                let id = SlotId::from_raw(id);
                let (s, i) = (id.session(), id.slot());
                self.sessions[s].slots[i].in_wheel = false;
                // The slot may have completed, failed or been reused meanwhile: send whatever its
                // current request needs next, if anything.
                let sess = &mut self.sessions[s];
                if sess.slots[i].state != SlotState::Active || !sess.slots[i].wants_tx() {
                    continue;
                }
                if sess.credits == 0 {
                    sess.stalled |= 1 << i;
                    continue;
                }
                self.send_next(s, i);
                self.kick(s, i);
            }
        }
    }

    /// The current Timely rate of a client session, bytes per second.
    pub fn session_rate(&self, s: crate::SessionId) -> Option<f64> {
        self.sessions.get(s.0 as usize).map(|x| x.cc.timely.rate())
    }

    /// Sets a session's rate (for experiments; Timely moves it from there).
    pub fn set_session_rate(&mut self, s: crate::SessionId, rate: f64) {
        let p = self.cfg.cc.timely;
        if let Some(x) = self.sessions.get_mut(s.0 as usize) {
            x.cc.timely.set_rate(rate, &p);
        }
    }
}

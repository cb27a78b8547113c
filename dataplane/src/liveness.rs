//! Liveness: keepalive pings on idle client sessions, idle server sessions freed, and client
//! sessions reset when their server is gone.
//!
//! * A client session with requests pending whose server has said nothing for
//!   `session_timeout_ns` is reset by the loss scan ([`crate::reliability`]).
//! * A client session without requests pings its server after `keepalive_ns` of silence, then
//!   every `keepalive_ns / 4`; after `keepalive_ns + session_timeout_ns` and two unanswered
//!   pings it is reset. A server that answers a ping saying it no longer has the session (it
//!   restarted) gets the session reset at once ([`crate::sm`]).
//! * A server session whose client has been silent for `server_idle_timeout_ns` is freed with
//!   its buffers (its client crashed, or its disconnect was lost).
//!
//! A reset fails every pending continuation with
//! [`crate::RpcError::SessionReset`] and reports
//! [`crate::SessionEvent::Reset`]. The idle scan walks the session table a
//! few sessions at a time, so its cost per iteration does not grow with the number of sessions.

use crate::clock::Clock;
use crate::error::RpcError;
use crate::event::{ResetReason, SessionEvent};
use crate::rpc::Rpc;
use crate::session::{Role, SessionId, SessionState, SlotState};
use crate::sm::SmPktType;
use crate::transport::Transport;

/// Sessions looked at per idle-scan step.
const IDLE_SCAN_STEP: usize = 32;

/// Where the idle scan is in the session table, and when it runs next.
pub(crate) struct IdleScan {
    next_ns: u64,
    cursor: usize,
}

impl IdleScan {
    pub(crate) fn new(now: u64) -> Self {
        IdleScan { next_ns: now, cursor: 0 }
    }

    #[inline]
    pub(crate) fn next_ns(&self) -> u64 {
        self.next_ns
    }
}

impl<'m, T: Transport, C: Clock, Ctx> Rpc<'m, T, C, Ctx> {
    /// One step of the idle scan: the next [`IDLE_SCAN_STEP`] sessions. The whole table is swept
    /// once per `keepalive_ns / 4`.
    pub(crate) fn idle_scan_step(&mut self) {
        let steps = (self.sessions.len() as u64).div_ceil(IDLE_SCAN_STEP as u64);
        self.idle.next_ns = self.now + (self.cfg.keepalive_ns / 4 / steps).max(1);
        self.idle_scan(IDLE_SCAN_STEP);
    }

    /// Pings idle client sessions, resets client sessions whose server stopped answering, and
    /// frees server sessions whose client went silent; `count` sessions from the cursor on.
    pub(crate) fn idle_scan(&mut self, count: usize) {
        let now = self.now;
        let n = self.sessions.len();
        for _ in 0..count.min(n) {
            let s = self.idle.cursor;
            self.idle.cursor = (s + 1) % n;
            let sess = &self.sessions[s];
            if sess.state != SessionState::Connected {
                continue;
            }
            let silent = now.saturating_sub(sess.last_heard_ns);
            match sess.role {
                // With requests pending, the loss scan judges liveness; this covers idle sessions.
                Role::Client if sess.active == 0 => {
                    // Reset only after two pings went unanswered (one may be lost).
                    if silent > self.cfg.keepalive_ns + self.cfg.session_timeout_ns && sess.pings >= 2 {
                        self.reset_client_session(s, ResetReason::PeerTimeout);
                    } else if silent > self.cfg.keepalive_ns && now >= sess.sm_next_ns {
                        let sess = &mut self.sessions[s];
                        sess.sm_next_ns = now + self.cfg.keepalive_ns / 4;
                        sess.pings = sess.pings.saturating_add(1);
                        self.send_sm_client(s, SmPktType::Ping);
                    }
                }
                Role::Client => {}
                Role::Server => {
                    // Whatever its slots hold: a request half received, or one whose handler has
                    // not answered (its handle goes stale; a worker's job is freed when it
                    // comes back). A live client is never silent this long: it retransmits
                    // while it waits, and pings while it is idle.
                    if silent > self.cfg.server_idle_timeout_ns {
                        log::warn!("server session {s}: client {} silent for {silent} ns, freeing", sess.peer);
                        self.release_session(s);
                    }
                }
            }
        }
    }

    /// Fails everything pending on client session `s`, tells the peer (once, best effort) and
    /// the application, and frees the session.
    pub(crate) fn reset_client_session(&mut self, s: usize, why: ResetReason) {
        self.reset_client_session_for(s, why, None);
    }

    /// As [`Rpc::reset_client_session`]; the request in slot `stuck` (if any) fails with
    /// [`RpcError::TimedOut`] first, the others with `SessionReset`.
    pub(crate) fn reset_client_session_for(&mut self, s: usize, why: ResetReason, stuck: Option<usize>) {
        if self.sessions[s].state != SessionState::Connected {
            return;
        }
        self.sessions[s].state = SessionState::Resetting;
        self.stats.sessions_reset += 1;
        let peer = self.sessions[s].peer;
        match why {
            ResetReason::PeerTimeout => {
                log::warn!("session {s} to {peer}: peer silent for {} ns, resetting", self.cfg.session_timeout_ns)
            }
            ResetReason::PeerLostSession => log::warn!("session {s} to {peer}: the server lost it, resetting"),
            ResetReason::RequestTimedOut => log::warn!(
                "session {s} to {peer}: a request made no progress for {} ns, resetting",
                self.cfg.request_timeout_ns
            ),
        }
        // Request buffers go back to the application: the device must be done with them.
        self.drain_tx_and_dma();
        if let Some(i) = stuck {
            if self.sessions[s].slots[i].state == SlotState::Active {
                self.stats.requests_timed_out += 1;
                self.complete(s, i, Err(RpcError::TimedOut));
            }
        }
        self.fail_all(s, RpcError::SessionReset);
        self.send_sm_disconnect(s);
        self.release_session(s);
        self.emit(SessionEvent::Reset(SessionId(s as u16), why));
    }
}

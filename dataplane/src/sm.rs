//! Session management over the datapath.
//!
//! The original runs connect and disconnect handshakes over a separate kernel UDP "control
//! network". A bare-metal appliance has only its NIC, so here they travel on the datapath:
//! a session-management packet is an eRPC packet with `dest_session_num = 0xFFFF`, `req_type`
//! = the [`SmPktType`], and a [`SmBody`] as its 40 data bytes.
//!
//! * **Connect.** `create_session` picks a local session, a fresh random token, and sends
//!   `ConnectReq`, resent every `sm_retry_ns` up to `sm_max_attempts` times (then
//!   [`SmError::RemoteUnreachable`]). The server detects duplicates by (token, client address,
//!   client session), answering them with the same response. Otherwise it first makes the client
//!   prove that it receives packets at the address it claims, keeping no state (as TCP SYN
//!   cookies and QUIC's Retry do): a request without a valid cookie is answered with
//!   `ConnectRetry`, a frame of the request's size carrying a cookie (a keyed hash of the
//!   client's address, session and token and the time, valid 8.6 to 17 s) in the header's
//!   `req_num`; the client repeats its request with the cookie at once. Only then does the
//!   server apply its accept policy (an endpoint without request handlers, or whose application
//!   turned sessions off or filtered the address out, answers [`SmError::Refused`]), the
//!   per-address cap ([`SmError::TooManySessionsFromClient`]), and allocate a session (or
//!   answer `OutOfSessions` / `OutOfMemory`), replying with its session number. So a forged
//!   source address gets no session and no packet larger than the one it sent.
//! * **Disconnect.** `destroy_session` (client only, no pending requests) sends
//!   `DisconnectReq`, resent likewise. The server frees the session if the token matches and
//!   always replies, so a duplicate still gets an answer.

use crate::clock::Clock;
use crate::config::SLOTS_PER_SESSION;
use crate::error::{RpcError, SessionError, SmError};
use crate::event::{ResetReason, SessionEvent};
use crate::rpc::Rpc;
use crate::session::{Role, SessionId, SessionState, SlotState};
use crate::stats::DropReason;
use crate::transport::{EndpointAddr, ResolveError, RxPacket, Transport};
use crate::wire::{ErpcHdr, PktHdr, PktType, RoutingInfo, ERPC_HDR_LEN, HEADROOM, PKT_HDR_LEN, SM_SESSION_NUM};
use zerocopy::byteorder::{LittleEndian, U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Session-management packet types (carried in `req_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SmPktType {
    ConnectReq = 1,
    ConnectResp = 2,
    DisconnectReq = 3,
    DisconnectResp = 4,
    /// Keepalive from a client session (body as for a disconnect request).
    Ping = 5,
    /// Answer to a ping; `err` = [`ERR_UNKNOWN_SESSION`] if the server has no such session.
    PingResp = 6,
    /// Answer to a connect request without a valid cookie: the cookie to repeat (in the
    /// header's `req_num`), and nothing else. The server keeps no state for it.
    ConnectRetry = 7,
    /// Server to client: the request numbered in the header's `req_num` is refused, for the
    /// reason in `err` ([`ERR_NO_HANDLER`]). Sent for the request's first packet and for every
    /// copy of it the client resends; the client fails the request at once instead of resending
    /// it until it times out.
    Refused = 8,
}

/// `SmBody::err` of a ping response for a session the server does not have.
pub const ERR_UNKNOWN_SESSION: u8 = 5;

/// `SmBody::err` of a [`SmPktType::Refused`]: the server has no handler for the request's type.
pub const ERR_NO_HANDLER: u8 = 8;

impl SmPktType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => SmPktType::ConnectReq,
            2 => SmPktType::ConnectResp,
            3 => SmPktType::DisconnectReq,
            4 => SmPktType::DisconnectResp,
            5 => SmPktType::Ping,
            6 => SmPktType::PingResp,
            7 => SmPktType::ConnectRetry,
            8 => SmPktType::Refused,
            _ => return None,
        })
    }
}

/// An endpoint address on the wire (12 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AddrWire {
    pub mac: [u8; 6],
    pub ipv4: [u8; 4],
    pub udp_port: U16<LittleEndian>,
}

impl From<EndpointAddr> for AddrWire {
    fn from(a: EndpointAddr) -> Self {
        AddrWire { mac: a.mac, ipv4: a.ipv4, udp_port: U16::new(a.udp_port) }
    }
}

impl From<AddrWire> for EndpointAddr {
    fn from(a: AddrWire) -> Self {
        EndpointAddr { mac: a.mac, ipv4: a.ipv4, udp_port: a.udp_port.get() }
    }
}

/// The body of a session-management packet (this project's format; the original's `SmPkt` was a
/// host-order C struct on a separate UDP port).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SmBody {
    /// 0 = success, else an [`SmError`] code (responses only).
    pub err: u8,
    pub _pad: [u8; 3],
    pub client_session: U16<LittleEndian>,
    pub server_session: U16<LittleEndian>,
    pub token: U64<LittleEndian>,
    pub client: AddrWire,
    pub server: AddrWire,
}

const _: () = assert!(core::mem::size_of::<AddrWire>() == 12);
const _: () = assert!(core::mem::size_of::<SmBody>() == 40);
/// Bytes of a session-management frame.
pub const SM_FRAME_LEN: usize = PKT_HDR_LEN + core::mem::size_of::<SmBody>();

fn err_code(e: Option<SmError>) -> u8 {
    match e {
        None => 0,
        Some(SmError::RemoteUnreachable) => 1,
        Some(SmError::OutOfSessions) => 2,
        Some(SmError::OutOfMemory) => 3,
        Some(SmError::RoutingFailed) => 4,
        Some(SmError::Refused) => 6,
        Some(SmError::TooManySessionsFromClient) => 7,
    }
}

fn err_from(c: u8) -> Option<SmError> {
    match c {
        0 => None,
        2 => Some(SmError::OutOfSessions),
        3 => Some(SmError::OutOfMemory),
        4 => Some(SmError::RoutingFailed),
        6 => Some(SmError::Refused),
        7 => Some(SmError::TooManySessionsFromClient),
        _ => Some(SmError::RemoteUnreachable),
    }
}

impl<'m, T: Transport, C: Clock, Ctx> Rpc<'m, T, C, Ctx> {
    /// Starts connecting a client session to the endpoint at `remote`. The session is usable
    /// once [`SessionEvent::Connected`] arrives (or `is_connected` says so); failure comes as
    /// [`SessionEvent::ConnectFailed`].
    pub fn create_session(&mut self, remote: EndpointAddr) -> Result<SessionId, SessionError> {
        let routing = self.route_to(&remote)?;
        let s = self.sessions.alloc().ok_or(SessionError::OutOfSessions)?;
        let token = self.random_u64();
        self.now = self.clock.now_ns();
        let credits = self.cfg.session_credits;
        let sess = &mut self.sessions[s];
        sess.reinit(Role::Client, SessionState::ConnectInProgress, credits);
        sess.set_token(token);
        sess.cc = crate::cc::SessionCc::new(self.cfg.cc.link_rate, self.now);
        sess.peer = remote;
        sess.routing = routing;
        sess.remote_session = 0;
        sess.sm_attempts = 1;
        sess.sm_next_ns = self.now + self.cfg.sm_retry_ns;
        self.sm_pending += 1;
        self.send_sm_client(s, SmPktType::ConnectReq);
        Ok(SessionId(s as u16))
    }

    /// Starts disconnecting a client session; [`SessionEvent::Disconnected`] follows.
    /// Refused while requests are pending on it.
    pub fn destroy_session(&mut self, session: SessionId) -> Result<(), SessionError> {
        let s = session.0 as usize;
        let Some(sess) = self.sessions.get_mut(s) else { return Err(SessionError::InvalidSession) };
        if sess.role != Role::Client || sess.state == SessionState::Free {
            return Err(SessionError::InvalidSession);
        }
        if sess.state != SessionState::Connected {
            return Err(SessionError::NotConnected);
        }
        if sess.active > 0 || sess.backlog_len > 0 {
            return Err(SessionError::Busy);
        }
        sess.state = SessionState::DisconnectInProgress;
        sess.sm_attempts = 1;
        sess.sm_next_ns = self.clock.now_ns() + self.cfg.sm_retry_ns;
        self.sm_pending += 1;
        self.send_sm_client(s, SmPktType::DisconnectReq);
        Ok(())
    }

    pub(crate) fn send_sm_client(&mut self, s: usize, kind: SmPktType) {
        let sess = &self.sessions[s];
        let cookie = if kind == SmPktType::ConnectReq { sess.cookie } else { 0 };
        let body = SmBody {
            err: 0,
            _pad: [0; 3],
            client_session: U16::new(s as u16),
            server_session: U16::new(sess.remote_session),
            token: U64::new(sess.token),
            client: self.local.into(),
            server: sess.peer.into(),
        };
        let routing = sess.routing;
        self.send_sm(&routing, kind, &body, cookie, Some(s));
    }

    /// Server: tells the client of session `s` that its request `req_num` is refused (`err`).
    pub(crate) fn send_sm_refusal(&mut self, s: usize, req_num: u64, err: u8) {
        let sess = &self.sessions[s];
        let body = SmBody {
            err,
            _pad: [0; 3],
            client_session: U16::new(sess.remote_session),
            server_session: U16::new(s as u16),
            token: U64::new(sess.token),
            client: sess.peer.into(),
            server: self.local.into(),
        };
        let routing = sess.routing;
        self.send_sm(&routing, SmPktType::Refused, &body, req_num, Some(s));
    }

    /// Best-effort single disconnect request for a session being reset.
    pub(crate) fn send_sm_disconnect(&mut self, s: usize) {
        self.send_sm_client(s, SmPktType::DisconnectReq);
        self.flush_tx();
    }

    /// Sends a session-management frame; `cookie` goes in the header's `req_num`.
    fn send_sm(&mut self, routing: &RoutingInfo, kind: SmPktType, body: &SmBody, cookie: u64, s: Option<usize>) {
        let mut f = [0u8; SM_FRAME_LEN];
        let (hr, rest) = f.split_at_mut(HEADROOM);
        routing.write(hr.try_into().expect("42"), ERPC_HDR_LEN + core::mem::size_of::<SmBody>());
        let eh =
            ErpcHdr::new(kind as u8, core::mem::size_of::<SmBody>() as u32, SM_SESSION_NUM, PktType::Req, 0, cookie);
        rest[..ERPC_HDR_LEN].copy_from_slice(eh.as_bytes());
        rest[ERPC_HDR_LEN..].copy_from_slice(body.as_bytes());
        let pkt = self.tx.ctrl_frame(self.heap.region(), &f);
        self.stats.sm_pkts_tx += 1;
        match s {
            Some(s) => self.push_tx(pkt, s),
            None => self.tx.push(&mut self.transport, &mut self.stats, pkt),
        }
    }

    /// A session-management packet.
    pub(crate) fn process_sm(&mut self, p: &RxPacket, hdr: &PktHdr, h: &crate::wire::Header) {
        let blen = core::mem::size_of::<SmBody>();
        if (p.len as usize) < SM_FRAME_LEN || h.msg_size as usize != blen {
            return self.drop_pkt(None, DropReason::BadSm);
        }
        // SAFETY: the frame holds SM_FRAME_LEN lent bytes (checked above); read them through a
        // raw pointer into a local copy (device-writable memory is never behind a reference).
        let bytes: [u8; 40] = unsafe { core::ptr::read_unaligned(p.data.as_ptr().add(PKT_HDR_LEN) as *const [u8; 40]) };
        let body = SmBody::read_from_bytes(&bytes).expect("40 bytes");
        let Some(kind) = SmPktType::from_u8(h.req_type) else {
            return self.drop_pkt(None, DropReason::BadSm);
        };
        // The sender must be who the body says it is: replies go to that address, so a forged
        // body must not turn this endpoint into a reflector.
        let src = hdr.src();
        let claimed: EndpointAddr = match kind {
            SmPktType::ConnectReq | SmPktType::DisconnectReq | SmPktType::Ping => body.client.into(),
            SmPktType::ConnectResp
            | SmPktType::DisconnectResp
            | SmPktType::PingResp
            | SmPktType::ConnectRetry
            | SmPktType::Refused => body.server.into(),
        };
        if claimed.ipv4 != src.ipv4 || claimed.udp_port != src.udp_port {
            return self.drop_pkt(None, DropReason::BadSm);
        }
        self.stats.sm_pkts_rx += 1;
        match kind {
            SmPktType::ConnectReq => self.sm_connect_req(&body, h.req_num),
            SmPktType::ConnectRetry => self.sm_connect_retry(&body, h.req_num),
            SmPktType::DisconnectReq => self.sm_disconnect_req(&body),
            SmPktType::ConnectResp => self.sm_connect_resp(&body),
            SmPktType::DisconnectResp => self.sm_disconnect_resp(&body),
            SmPktType::Ping => self.sm_ping(&body),
            SmPktType::PingResp => self.sm_ping_resp(&body),
            SmPktType::Refused => self.sm_refused(&body, h.req_num),
        }
    }

    fn reply(&mut self, req: &SmBody, kind: SmPktType, server_session: u16, err: Option<SmError>) {
        self.reply_code(req, kind, server_session, err_code(err));
    }

    fn reply_code(&mut self, req: &SmBody, kind: SmPktType, server_session: u16, err: u8) {
        self.reply_with_cookie(req, kind, server_session, err, 0);
    }

    /// The routing info of `remote`, which must be a unicast endpoint address: a session is
    /// never made, and nothing is ever sent, to port 0, a broadcast or a multicast group (a
    /// forged connect request naming one as its client gets no answer).
    fn route_to(&mut self, remote: &EndpointAddr) -> Result<RoutingInfo, SessionError> {
        if !remote.is_unicast() {
            return Err(SessionError::InvalidAddress);
        }
        self.transport.resolve(remote).map_err(|e| match e {
            ResolveError::Unreachable => SessionError::Unroutable,
            ResolveError::InvalidAddress => SessionError::InvalidAddress,
        })
    }

    fn reply_with_cookie(&mut self, req: &SmBody, kind: SmPktType, server_session: u16, err: u8, cookie: u64) {
        let client: EndpointAddr = req.client.into();
        let Ok(routing) = self.route_to(&client) else {
            return self.drop_pkt(None, DropReason::BadSm);
        };
        let body = SmBody { err, server_session: U16::new(server_session), ..*req };
        self.send_sm(&routing, kind, &body, cookie, None);
    }

    fn sm_connect_req(&mut self, b: &SmBody, cookie: u64) {
        let server: EndpointAddr = b.server.into();
        if server.udp_port != self.local.udp_port || server.ipv4 != self.local.ipv4 {
            return self.drop_pkt(None, DropReason::BadSm);
        }
        let client: EndpointAddr = b.client.into();
        if !client.is_unicast() {
            // Never answered (see `route_to`): refused before anything is counted or kept.
            return self.drop_pkt(None, DropReason::BadSm);
        }
        let (token, csess) = (b.token.get(), b.client_session.get());
        if let Some(s) = self.sessions.token_find(token, &client, csess) {
            return self.reply(b, SmPktType::ConnectResp, s as u16, None);
        }
        // No state, and nothing larger than the request, for an address that has not shown it
        // receives our packets.
        let epoch = self.now >> COOKIE_EPOCH_SHIFT;
        if cookie == 0
            || (cookie != self.cookies.make(b, epoch) && cookie != self.cookies.make(b, epoch.wrapping_sub(1)))
        {
            self.stats.sm_cookies_sent += 1;
            let c = self.cookies.make(b, epoch);
            return self.reply_with_cookie(b, SmPktType::ConnectRetry, 0, 0, c);
        }
        if !self.handlers.accepts(&client) {
            self.stats.sessions_refused += 1;
            return self.reply(b, SmPktType::ConnectResp, 0, Some(SmError::Refused));
        }
        let cap = self.cfg.max_sessions_per_client as usize;
        if self.sessions.ip_count(client.ipv4) >= cap {
            self.stats.sessions_refused += 1;
            log::warn!("connect from {client} refused: its address holds {cap} sessions already");
            return self.reply(b, SmPktType::ConnectResp, 0, Some(SmError::TooManySessionsFromClient));
        }
        let Ok(routing) = self.route_to(&client) else {
            return self.drop_pkt(None, DropReason::BadSm);
        };
        let Some(s) = self.sessions.alloc() else {
            log::warn!("connect from {client} refused: all {} sessions in use", self.sessions.len());
            return self.reply(b, SmPktType::ConnectResp, 0, Some(SmError::OutOfSessions));
        };
        // Every server session needs at least one one-packet buffer: check now, not mid-request.
        let Ok(pre) = self.alloc_msg_buffer(self.data_per_pkt) else {
            self.sessions[s].state = SessionState::Free;
            self.release_session(s);
            return self.reply(b, SmPktType::ConnectResp, 0, Some(SmError::OutOfMemory));
        };
        let credits = self.cfg.session_credits;
        let now = self.clock.now_ns();
        let sess = &mut self.sessions[s];
        sess.reinit(Role::Server, SessionState::Connected, credits);
        sess.set_token(token);
        sess.cc = crate::cc::SessionCc::new(self.cfg.cc.link_rate, self.now);
        sess.peer = client;
        sess.routing = routing;
        sess.remote_session = csess;
        sess.last_heard_ns = now;
        sess.slots[0].pre_resp = Some(pre);
        self.sessions.token_insert(s);
        self.sessions.ip_insert(s);
        self.reply(b, SmPktType::ConnectResp, s as u16, None);
    }

    fn sm_disconnect_req(&mut self, b: &SmBody) {
        if let Some(s) = self.server_session_for(b) {
            self.release_session(s);
        }
        self.reply(b, SmPktType::DisconnectResp, b.server_session.get(), None);
    }

    /// The client session a response is for, if it matches one we have.
    fn client_session_for(&self, b: &SmBody, want: SessionState) -> Option<usize> {
        let s = b.client_session.get() as usize;
        let sess = self.sessions.get(s)?;
        let from: EndpointAddr = b.server.into();
        (sess.role == Role::Client && sess.state == want && sess.token == b.token.get() && sess.peer == from)
            .then_some(s)
    }

    fn sm_connect_resp(&mut self, b: &SmBody) {
        let Some(s) = self.client_session_for(b, SessionState::ConnectInProgress) else {
            return; // duplicate or stale response
        };
        if b.err == 0 && b.server_session.get() == SM_SESSION_NUM {
            return self.drop_pkt(None, DropReason::BadSm);
        }
        self.sm_pending -= 1;
        match err_from(b.err) {
            Some(e) => {
                self.release_session(s);
                self.emit(SessionEvent::ConnectFailed(SessionId(s as u16), e));
            }
            None => {
                let now = self.clock.now_ns();
                let sess = &mut self.sessions[s];
                sess.remote_session = b.server_session.get();
                sess.state = SessionState::Connected;
                sess.last_heard_ns = now;
                self.emit(SessionEvent::Connected(SessionId(s as u16)));
            }
        }
    }

    /// The server wants our connect request again, with its cookie.
    fn sm_connect_retry(&mut self, b: &SmBody, cookie: u64) {
        let Some(s) = self.client_session_for(b, SessionState::ConnectInProgress) else {
            return; // stale, or not for us
        };
        let sess = &mut self.sessions[s];
        if cookie == 0 || cookie == sess.cookie || sess.sm_attempts >= self.cfg.sm_max_attempts {
            return; // the retry scan gives up when attempts run out
        }
        sess.cookie = cookie;
        sess.sm_attempts += 1;
        sess.sm_next_ns = self.now + self.cfg.sm_retry_ns;
        self.send_sm_client(s, SmPktType::ConnectReq);
    }

    fn sm_disconnect_resp(&mut self, b: &SmBody) {
        let Some(s) = self.client_session_for(b, SessionState::DisconnectInProgress) else {
            return;
        };
        self.sm_pending -= 1;
        self.release_session(s);
        self.emit(SessionEvent::Disconnected { session: SessionId(s as u16), clean: true });
    }

    /// The server session a client's disconnect request or ping names, if it is ours.
    fn server_session_for(&self, b: &SmBody) -> Option<usize> {
        let s = b.server_session.get() as usize;
        let sess = self.sessions.get(s)?;
        let client: EndpointAddr = b.client.into();
        (sess.role == Role::Server
            && sess.state == SessionState::Connected
            && sess.token == b.token.get()
            && sess.peer == client
            && sess.remote_session == b.client_session.get())
        .then_some(s)
    }

    fn sm_ping(&mut self, b: &SmBody) {
        match self.server_session_for(b) {
            Some(s) => {
                self.sessions[s].last_heard_ns = self.now;
                self.reply_code(b, SmPktType::PingResp, s as u16, 0);
            }
            None => self.reply_code(b, SmPktType::PingResp, b.server_session.get(), ERR_UNKNOWN_SESSION),
        }
    }

    fn sm_ping_resp(&mut self, b: &SmBody) {
        let Some(s) = self.client_session_for(b, SessionState::Connected) else { return };
        if self.sessions[s].remote_session != b.server_session.get() {
            return;
        }
        if b.err == ERR_UNKNOWN_SESSION {
            log::warn!("session {s}: server {} no longer has it", self.sessions[s].peer);
            return self.reset_client_session(s, ResetReason::PeerLostSession);
        }
        self.sessions[s].last_heard_ns = self.now;
        self.sessions[s].pings = 0;
    }

    /// The server refused request `req_num` of one of our sessions: it fails now, and the
    /// session carries on. A refusal for a request that is not in flight (answered, failed, or
    /// never sent) changes nothing.
    fn sm_refused(&mut self, b: &SmBody, req_num: u64) {
        let Some(s) = self.client_session_for(b, SessionState::Connected) else {
            return self.drop_pkt(None, DropReason::Stale);
        };
        if self.sessions[s].remote_session != b.server_session.get() || b.err != ERR_NO_HANDLER {
            return self.drop_pkt(Some(s), DropReason::BadSm);
        }
        let i = (req_num % SLOTS_PER_SESSION as u64) as usize;
        let sl = &self.sessions[s].slots[i];
        if sl.state != SlotState::Active || sl.cur_req_num != req_num {
            return self.drop_pkt(Some(s), DropReason::Stale);
        }
        let req_type = sl.req_type;
        self.stats.rpcs_refused += 1;
        // The request buffer goes back to the application, and the device may still be reading
        // it: the client can be sending the later packets of a multi-packet request.
        self.drain_tx_and_dma();
        self.complete(s, i, Err(RpcError::NoHandler { req_type }));
    }

    /// Resends connect/disconnect requests that have waited `sm_retry_ns`, and gives up on those
    /// that have used all their attempts.
    pub(crate) fn sm_retry_scan(&mut self) {
        let now = self.now;
        for s in 0..self.sessions.len() {
            let sess = &mut self.sessions[s];
            if sess.role != Role::Client
                || !matches!(sess.state, SessionState::ConnectInProgress | SessionState::DisconnectInProgress)
                || now < sess.sm_next_ns
            {
                continue;
            }
            let connecting = sess.state == SessionState::ConnectInProgress;
            if sess.sm_attempts >= self.cfg.sm_max_attempts {
                log::warn!("session {s}: no answer from {} after {} attempts", sess.peer, sess.sm_attempts);
                self.sm_pending -= 1;
                self.release_session(s);
                let id = SessionId(s as u16);
                self.emit(if connecting {
                    SessionEvent::ConnectFailed(id, SmError::RemoteUnreachable)
                } else {
                    SessionEvent::Disconnected { session: id, clean: false }
                });
                continue;
            }
            sess.sm_attempts += 1;
            sess.sm_next_ns = now + self.cfg.sm_retry_ns;
            self.send_sm_client(s, if connecting { SmPktType::ConnectReq } else { SmPktType::DisconnectReq });
        }
    }
}

/// Connect cookies are valid in the epoch they were made in and the next (`now >> 33`: epochs of
/// 8.6 s), so a cookie lives 8.6 to 17 s.
const COOKIE_EPOCH_SHIFT: u32 = 33;

/// Makes and checks connect cookies: a keyed hash (SipHash-1-3, with a random key of this
/// endpoint) of what a connect request names — the client's address, session and token — and
/// the epoch, cut to the 44 bits of `req_num`. Only someone who received the server's
/// `ConnectRetry` at that address can repeat it.
pub(crate) struct Cookies {
    hasher: siphasher::sip::SipHasher13,
}

impl Cookies {
    pub(crate) fn new(key: [u64; 2]) -> Self {
        Cookies { hasher: siphasher::sip::SipHasher13::new_with_keys(key[0], key[1]) }
    }

    fn make(&self, b: &SmBody, epoch: u64) -> u64 {
        let mut m = [0u8; 32];
        m[..12].copy_from_slice(b.client.as_bytes());
        m[12..14].copy_from_slice(b.client_session.as_bytes());
        m[14..22].copy_from_slice(b.token.as_bytes());
        m[22..30].copy_from_slice(&epoch.to_le_bytes());
        // Never 0: 0 means "no cookie".
        (self.hasher.hash(&m) & crate::wire::MAX_REQ_NUM).max(1)
    }
}

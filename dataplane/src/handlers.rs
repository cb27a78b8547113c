//! What the application registers: request handlers by request type, the continuations its
//! requests name, and the session-event handler.

use crate::clock::Clock;
use crate::event::{Completion, SessionEvent};
use crate::rpc::Rpc;
use crate::session::{SessionId, SlotId};
use crate::transport::{EndpointAddr, Transport};

/// Distinct continuation functions one endpoint can use.
pub const MAX_CONTINUATIONS: usize = 64;

/// A request handler. It reads the request with [`Rpc::request`] and answers, now or later, with
/// [`Rpc::enqueue_response`] or [`Rpc::enqueue_response_prealloc`]; it may issue RPCs first.
pub type ReqHandler<'m, T, C, Ctx> = fn(&mut Rpc<'m, T, C, Ctx>, ReqHandle);
/// A continuation: runs on the endpoint's thread when an RPC completes or fails.
pub type Continuation<'m, T, C, Ctx> = fn(&mut Rpc<'m, T, C, Ctx>, Completion);
/// Receives session events (connected, connect failed, disconnected, reset).
pub type SessionHandler<'m, T, C, Ctx> = fn(&mut Rpc<'m, T, C, Ctx>, SessionEvent);

/// Where a request type's handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerMode {
    /// On the dispatch thread, inside the event loop (short handlers: a few microseconds).
    Foreground,
    /// On a worker thread: the request is handed over through the endpoint's
    /// [`BgQueues`](crate::worker::BgQueues) with a response buffer of `max_resp_size` bytes, and
    /// the response comes back to the dispatch thread.
    Background { max_resp_size: usize },
}

/// Identifies a request being handled on a server session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReqHandle {
    pub(crate) slot: SlotId,
    pub(crate) req_type: u8,
    pub(crate) generation: u32,
    pub(crate) req_num: u64,
}

impl ReqHandle {
    pub fn session(&self) -> SessionId {
        self.slot.session_id()
    }
    pub fn req_type(&self) -> u8 {
        self.req_type
    }
}

/// A request type's registration.
pub(crate) struct HandlerEntry<'m, T: Transport, C: Clock, Ctx> {
    pub(crate) f: Option<ReqHandler<'m, T, C, Ctx>>,
    pub(crate) mode: HandlerMode,
}

// Manual impls: a derive would require T, C, Ctx: Copy, but only the fn pointer is copied.
impl<T: Transport, C: Clock, Ctx> Clone for HandlerEntry<'_, T, C, Ctx> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Transport, C: Clock, Ctx> Copy for HandlerEntry<'_, T, C, Ctx> {}

/// Decides whether a client at this address may open a session (see
/// [`Rpc::set_session_filter`]).
pub type SessionFilter = fn(&EndpointAddr) -> bool;

/// The endpoint's handler table, continuation table, session-event handler and accept policy.
pub(crate) struct Handlers<'m, T: Transport, C: Clock, Ctx> {
    by_type: [HandlerEntry<'m, T, C, Ctx>; 256],
    conts: heapless::Vec<Continuation<'m, T, C, Ctx>, MAX_CONTINUATIONS>,
    session: Option<SessionHandler<'m, T, C, Ctx>>,
    /// Whether any request handler is registered: an endpoint that serves nothing accepts no
    /// sessions.
    serves: bool,
    accept: bool,
    filter: Option<SessionFilter>,
}

impl<'m, T: Transport, C: Clock, Ctx> Handlers<'m, T, C, Ctx> {
    pub(crate) fn new() -> Self {
        Handlers {
            by_type: [HandlerEntry { f: None, mode: HandlerMode::Foreground }; 256],
            conts: heapless::Vec::new(),
            session: None,
            serves: false,
            accept: true,
            filter: None,
        }
    }

    pub(crate) fn register(&mut self, req_type: u8, f: ReqHandler<'m, T, C, Ctx>, mode: HandlerMode) {
        self.by_type[req_type as usize] = HandlerEntry { f: Some(f), mode };
        self.serves = true;
    }

    pub(crate) fn set_accept(&mut self, accept: bool) {
        self.accept = accept;
    }

    pub(crate) fn set_filter(&mut self, filter: Option<SessionFilter>) {
        self.filter = filter;
    }

    /// Whether a client at `addr` may open a session.
    pub(crate) fn accepts(&self, addr: &EndpointAddr) -> bool {
        self.serves && self.accept && self.filter.map_or(true, |f| f(addr))
    }

    #[inline]
    pub(crate) fn get(&self, req_type: u8) -> HandlerEntry<'m, T, C, Ctx> {
        self.by_type[req_type as usize]
    }

    /// Whether a handler is registered for `req_type`.
    #[inline]
    pub(crate) fn has(&self, req_type: u8) -> bool {
        self.by_type[req_type as usize].f.is_some()
    }

    /// Index of a continuation in the table, adding it if new (`None`: the table is full).
    #[inline]
    pub(crate) fn cont_index(&mut self, f: Continuation<'m, T, C, Ctx>) -> Option<u8> {
        let key = f as usize;
        if let Some(i) = self.conts.iter().position(|g| *g as usize == key) {
            return Some(i as u8);
        }
        self.conts.push(f).ok()?;
        Some((self.conts.len() - 1) as u8)
    }

    #[inline]
    pub(crate) fn cont(&self, i: u8) -> Continuation<'m, T, C, Ctx> {
        self.conts[i as usize]
    }

    pub(crate) fn set_session_handler(&mut self, f: SessionHandler<'m, T, C, Ctx>) {
        self.session = Some(f);
    }

    pub(crate) fn session_handler(&self) -> Option<SessionHandler<'m, T, C, Ctx>> {
        self.session
    }
}

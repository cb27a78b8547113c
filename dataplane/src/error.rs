//! Every error the endpoint returns, each with a message that says what to do.
//!
//! Refusals that carry buffers ([`EnqueueError`], [`RespondError`]) hand them back: nothing the
//! caller gave is lost. All types implement `Display` and [`core::error::Error`].

use crate::msgbuf::MsgBuf;
use core::fmt;

/// Why an RPC failed (in [`Completion::result`](crate::Completion)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcError {
    /// The session was reset: its peer stopped answering for `session_timeout_ns`.
    SessionReset,
    /// The response is larger than the response buffer given to `enqueue_request`.
    ResponseTooLarge { size: usize, capacity: usize },
    /// The request made no progress for `request_timeout_ns` (its server kept it waiting, or
    /// answers that do not fit it kept arriving); its session was reset.
    TimedOut,
    /// The server has no handler for the request's type and refused it. The session stays
    /// connected.
    NoHandler { req_type: u8 },
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::SessionReset => {
                f.write_str("the session was reset: its server stopped answering (create a new session to retry)")
            }
            RpcError::TimedOut => f.write_str(
                "the request made no progress within request_timeout_ns and its session was reset (raise \
                 request_timeout_ns for handlers that run longer)",
            ),
            RpcError::ResponseTooLarge { size, capacity } => write!(
                f,
                "the {size}-byte response does not fit the {capacity}-byte response buffer (enqueue the request \
                 with a larger one)"
            ),
            RpcError::NoHandler { req_type } => write!(
                f,
                "the server has no handler for request type {req_type} and refused the request (register one \
                 there, or send a type it serves); the session is still usable"
            ),
        }
    }
}

impl core::error::Error for RpcError {}

/// Why `enqueue_request` refused a request. The buffers come back in [`EnqueueError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnqueueErrorKind {
    /// No such session, or not a client session.
    InvalidSession,
    /// The session is not connected (connecting, disconnecting, reset or failed).
    NotConnected,
    /// All eight slots are busy and the backlog (its size is the caller's) is full.
    BacklogFull,
    /// Request larger than the endpoint's maximum message size, or request and response
    /// buffer together need more than 16383 packets.
    TooLarge,
    /// More than [`MAX_CONTINUATIONS`](crate::handlers::MAX_CONTINUATIONS) distinct continuation
    /// functions.
    TooManyContinuations,
    /// A msgbuf allocated by another endpoint (the device cannot reach it).
    ForeignBuffer,
}

impl fmt::Display for EnqueueErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EnqueueErrorKind::InvalidSession => "no such client session",
            EnqueueErrorKind::NotConnected => {
                "the session is not connected (wait for SessionEvent::Connected, or create a new session)"
            }
            EnqueueErrorKind::BacklogFull => {
                "all 8 slots of the session are busy and the backlog is full (run the event loop until requests \
                 complete, or give the endpoint more backlog storage)"
            }
            EnqueueErrorKind::TooLarge => {
                "the request is larger than the endpoint's maximum message size, or request and response buffer \
                 together exceed 16383 packets"
            }
            EnqueueErrorKind::TooManyContinuations => "more than 64 distinct continuation functions on one endpoint",
            EnqueueErrorKind::ForeignBuffer => "a msgbuf of another endpoint (allocate it from this endpoint)",
        })
    }
}

impl core::error::Error for EnqueueErrorKind {}

/// A refused request, with its buffers.
#[derive(Debug)]
#[must_use = "the error carries the request and response buffers: free or reuse them"]
pub struct EnqueueError {
    pub kind: EnqueueErrorKind,
    pub req: MsgBuf,
    pub resp: MsgBuf,
}

impl fmt::Display for EnqueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request refused: {}", self.kind)
    }
}

impl core::error::Error for EnqueueError {}

/// Why `enqueue_response` refused a response. The buffer comes back in [`RespondError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RespondErrorKind {
    /// The handle is stale: its session was disconnected or it was answered already.
    InvalidHandle,
    /// Beyond the maximum message size or the 16383-packet bound, or (prealloc) beyond one packet.
    TooLarge,
    /// A msgbuf allocated by another endpoint (the device cannot reach it).
    ForeignBuffer,
    /// (prealloc) No msgbuf memory for the response buffer; the request stays pending, so the
    /// caller may retry later or answer with a buffer of its own.
    OutOfMemory,
}

impl fmt::Display for RespondErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RespondErrorKind::InvalidHandle => "the request handle is stale (answered already, or its session is gone)",
            RespondErrorKind::TooLarge => {
                "the response is larger than the maximum message size or the 16383-packet bound (or, preallocated, \
                 than one packet)"
            }
            RespondErrorKind::ForeignBuffer => "a msgbuf of another endpoint (allocate it from this endpoint)",
            RespondErrorKind::OutOfMemory => {
                "no msgbuf memory for the response (the request stays pending: retry later or answer with your own \
                 buffer)"
            }
        })
    }
}

impl core::error::Error for RespondErrorKind {}

/// A refused response, with its buffer.
#[derive(Debug)]
#[must_use = "the error may carry the response buffer: free or reuse it"]
pub struct RespondError {
    pub kind: RespondErrorKind,
    /// The response buffer (None for `enqueue_response_prealloc`).
    pub resp: Option<MsgBuf>,
}

impl fmt::Display for RespondError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "response refused: {}", self.kind)
    }
}

impl core::error::Error for RespondError {}

/// Why a session call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// Every session slot of this endpoint is in use.
    OutOfSessions,
    /// The transport cannot route to that address (yet: a transport that resolves MAC addresses
    /// without waiting reports this until the neighbour answers).
    Unroutable,
    /// That cannot be an endpoint's address: UDP port 0, or an IPv4 address that is not
    /// unicast (see [`crate::transport::EndpointAddr::is_unicast`]), or one the transport finds
    /// malformed.
    InvalidAddress,
    /// No such session, or not a client session.
    InvalidSession,
    /// Requests are pending on the session.
    Busy,
    /// The session is not connected (still connecting, or already disconnecting).
    NotConnected,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionError::OutOfSessions => {
                "every session of this endpoint is in use (destroy idle sessions, or give the endpoint more session \
                 storage)"
            }
            SessionError::Unroutable => "the transport has no route to that address (is the peer's MAC resolvable?)",
            SessionError::InvalidAddress => {
                "that is not an endpoint's address (give the server's unicast IPv4 address and its UDP port, not 0)"
            }
            SessionError::InvalidSession => "no such client session",
            SessionError::Busy => "requests are pending on the session (wait for their continuations)",
            SessionError::NotConnected => "the session is not connected (still connecting, or disconnecting)",
        })
    }
}

impl core::error::Error for SessionError {}

/// Why a connect attempt failed (reported by the server, or locally).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmError {
    /// No answer after `sm_max_attempts` tries: no endpoint at that address, or unreachable.
    RemoteUnreachable,
    /// The server has no free session.
    OutOfSessions,
    /// The server has no memory for the session's buffers.
    OutOfMemory,
    /// The server cannot route back to us.
    RoutingFailed,
    /// The server accepts no sessions from this client (it serves no requests, or its
    /// application turned sessions off or filtered this address out).
    Refused,
    /// This client address already holds the server's maximum of sessions
    /// (`max_sessions_per_client`).
    TooManySessionsFromClient,
}

impl fmt::Display for SmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SmError::RemoteUnreachable => {
                "no eRPC endpoint answered at that address (is the server running, and the address and port right?)"
            }
            SmError::OutOfSessions => "the server refused: all its sessions are in use",
            SmError::OutOfMemory => "the server refused: it has no msgbuf memory for another session",
            SmError::RoutingFailed => "the server refused: it cannot route back to this endpoint",
            SmError::Refused => "the server refused: it accepts no sessions from this address",
            SmError::TooManySessionsFromClient => {
                "the server refused: this client address already holds its maximum of sessions \
                 (max_sessions_per_client)"
            }
        })
    }
}

impl core::error::Error for SmError {}

/// Why a handler registration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// A background handler needs worker queues: call `attach_workers` first.
    NoWorkers,
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::NoWorkers => {
                f.write_str("a background handler needs worker queues: call Rpc::attach_workers first")
            }
        }
    }
}

impl core::error::Error for RegisterError {}

/// Why an endpoint could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// The DMA region cannot hold the allocator's metadata and the control-packet ring.
    RegionTooSmall,
    /// Session storage is empty or has more than 65535 entries.
    BadSessionCount,
    /// The transport's (or configured) MTU is too small for headers plus data.
    MtuTooSmall,
    /// A configuration value is out of range: credits 1..=1024, max message size, keepalive
    /// timing (`session_timeout >= keepalive / 2`, `server_idle_timeout >= 2 * keepalive +
    /// session_timeout + rto`), `request_timeout >= 2 * rto`, `max_sessions_per_client >= 1`.
    BadConfig,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InitError::RegionTooSmall => {
                "the DMA region is too small for the allocator's metadata and the control-packet ring (give it more \
                 memory)"
            }
            InitError::BadSessionCount => "session storage must hold 1 to 65535 sessions",
            InitError::MtuTooSmall => "the MTU is too small for the 56 header bytes plus 64 data bytes",
            InitError::BadConfig => {
                "a configuration value is out of range: credits 1..=1024, a non-zero maximum message size and \
                 keepalive, session_timeout >= keepalive / 2, server_idle_timeout >= 2 * keepalive + session_timeout \
                 + rto, request_timeout >= 2 * rto, max_sessions_per_client >= 1"
            }
        })
    }
}

impl core::error::Error for InitError {}

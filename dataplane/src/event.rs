//! What the endpoint tells the application: RPC completions and session events.

use crate::error::{RpcError, SmError};
use crate::msgbuf::MsgBuf;
use crate::session::SessionId;

/// What a continuation receives: the caller's tag and buffers back, and the result.
#[derive(Debug)]
pub struct Completion {
    pub session: SessionId,
    pub tag: u64,
    /// `Ok(response length)`, or why the RPC failed.
    pub result: Result<usize, RpcError>,
    pub req: MsgBuf,
    pub resp: MsgBuf,
}

/// Why a session was reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetReason {
    /// Nothing heard from the peer for `session_timeout_ns` (with requests pending, or
    /// keepalive pings unanswered).
    PeerTimeout,
    /// The server answered a keepalive saying it no longer has the session (it restarted, or
    /// freed the session as idle).
    PeerLostSession,
    /// A request made no progress for `request_timeout_ns`; it failed with
    /// [`crate::RpcError::TimedOut`], the others with `SessionReset`.
    RequestTimedOut,
}

/// A session event, delivered to the handler set with
/// [`Rpc::set_session_handler`](crate::Rpc::set_session_handler).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    Connected(SessionId),
    ConnectFailed(SessionId, SmError),
    /// `clean` is false when the server never confirmed the disconnect.
    Disconnected {
        session: SessionId,
        clean: bool,
    },
    /// Every pending continuation has run with [`RpcError::SessionReset`]; the session is gone.
    Reset(SessionId, ResetReason),
}

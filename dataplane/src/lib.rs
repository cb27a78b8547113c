//! # erpc-dataplane: the eRPC protocol engine
//!
//! A reimplementation of eRPC (Kalia, Kaminsky, Andersen, NSDI 2019): RPCs over unreliable
//! packet I/O with client-driven flow control, Go-Back-N reliability and at-most-once execution.
//! `#![no_std]`, and no allocator: every capacity is fixed at construction from memory the
//! caller provides (a hugepage region under Linux, static arrays in a bare-metal image).
//!
//! | concept | module |
//! |---|---|
//! | packet headers (bit-exact with the original's `pkthdr_t`) | [`wire`] |
//! | the NIC boundary and its buffer-ownership contract | [`transport`] |
//! | DMA memory, msgbufs and their allocator | [`dma`], [`msgbuf`] |
//! | sessions, slots, the session table, the request backlog | [`session`] |
//! | the endpoint, its API and event loop | [`rpc`] |
//! | errors, completions and session events | [`error`], [`event`] |
//! | request handlers and continuations | [`handlers`] |
//! | transmit batching, deferred frees, framing | `tx` (internal) |
//! | client protocol: credits, RFRs, completion | [`client`] |
//! | server protocol: handlers, responses, at-most-once | [`server`] |
//! | retransmission, Go-Back-N | [`reliability`] |
//! | keepalives, idle sessions, session reset | [`liveness`] |
//! | connect/disconnect over the datapath | [`sm`] |
//! | long-running handlers on worker threads | [`worker`] |
//! | congestion control: Timely, Carousel timing wheel, bypasses | [`cc`] |
//! | time | [`clock`] |
//! | counters | [`stats`] |
//! | in-memory NIC and simulated fabric | [`fabric`] |
//! | fault injection around any transport | [`fault`] |
//!
//! ## Threading model
//!
//! One [`Rpc`] endpoint per thread; it is not `Sync` and every call on it — the event loop,
//! `create_session`, `enqueue_request`, `enqueue_response`, msgbuf allocation — happens on the
//! thread that owns it. Handlers and continuations run on that thread, inside
//! `run_event_loop_once`, and may call the endpoint (nested RPCs included). Handlers registered
//! as [`HandlerMode::Background`] run on worker threads instead: only the request and response
//! msgbufs cross to the worker and back through [`worker::BgQueues`]; the response is sent by
//! the dispatch thread's event loop. A server that wants to call its client opens its own
//! session back to it.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "std")]
extern crate std;

pub mod arch;
pub mod cc;
pub mod client;
pub mod clock;
pub mod config;
pub mod dma;
pub mod error;
pub mod event;
pub mod fabric;
pub mod fault;
pub mod handlers;
pub mod liveness;
pub mod msgbuf;
pub mod reliability;
pub mod rpc;
pub mod server;
pub mod session;
pub mod sm;
pub mod stats;
mod storage;
pub mod transport;
mod tx;
pub mod wire;
pub mod worker;

pub use clock::{Clock, SimClock};
pub use config::RpcConfig;
pub use dma::DmaRegion;
pub use error::{
    EnqueueError, EnqueueErrorKind, InitError, RegisterError, RespondError, RespondErrorKind, RpcError, SessionError,
    SmError,
};
pub use event::{Completion, ResetReason, SessionEvent};
pub use handlers::{HandlerMode, ReqHandle};
pub use msgbuf::{AllocError, MsgBuf};
#[cfg(feature = "std")]
pub use rpc::OwnedMemory;
pub use rpc::{EndpointMemory, Rpc, RpcMemory, Waited};
pub use session::{BacklogEntry, Session, SessionId, SessionState};
pub use stats::{DropReason, RpcStats};
pub use transport::{EndpointAddr, RxPacket, Transport, TxPacket};

//! Protocol-level tests, after the original eRPC's `tests/protocol_tests` (erpc-io/eRPC): one
//! endpoint on a [`ScriptNic`](erpc_tests::ScriptNic), crafted frames in, the exact frames it
//! sends, its counters and its handler/continuation calls checked.
//!
//! Layout: [`harness`] (constants and the test context, frame builders and decoders, the
//! [`harness::Bench`]: one endpoint plus its script, with server/client session setup, handlers
//! and continuations, back-to-back wiring and a fuzz frame generator); then one module per area.
//!
//! `cargo test -p erpc-tests --test protocol`.
//!
//! Conventions: the endpoint under test is at [`harness::ME`]; the fake peer at [`harness::PEER`]. Every request
//! uses req_type [`harness::RT`]. Slot `i`'s first request has req_num `base + i + 8` (the session's
//! token-derived base; the [`harness::Bench`] helpers add it).

mod harness;

mod client;
mod end_to_end;
mod fuzz;
mod hostile_peers;
mod malformed;
mod retransmission;
mod server_requests;
mod server_responses;
mod session_lifecycle;
mod session_management;
mod tx_buffers;

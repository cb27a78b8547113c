//! # erpc-kv: a replicated key-value store, tikv's raft-rs over eRPC
//!
//! The article's headline application ("Raft over eRPC"): state machine replication with an
//! existing Raft implementation used as is — here tikv's `raft` crate 0.7, unmodified — over this
//! project's eRPC endpoints. A replica is an endpoint whose context holds the Raft node
//! ([`replica`]); Raft messages travel as eRPC requests, batched per peer per event-loop
//! iteration, with the receiver's messages back to the sender in the response ([`codec`]).
//! Clients ([`client`]) put, get and delete keys; writes are applied exactly once across retries
//! and leader changes ([`state`]), reads are linearizable (Raft's read index). The log is in
//! memory or made durable with tikv's `raft-engine` ([`storage`]). [`cluster`] polls replicas
//! and clients on one thread, on the simulated fabric (the tests) or any transport. Failures to
//! start or to go on are an [`Error`] whose cause is its `source()`.
//!
//! | module | what |
//! |---|---|
//! | [`proto`] | request types, client request/response layouts |
//! | [`codec`] | Raft messages on the wire (no protobuf parser on network input) |
//! | [`state`] | the key-value map and the exactly-once client table, snapshots |
//! | [`storage`] | raft-rs `Storage`: in memory, or durable with raft-engine |
//! | [`replica`] | a replica's endpoint context, handlers and loop |
//! | [`client`] | logical clients: redirects, retries, recorded histories |
//! | [`cluster`] | endpoints, and clusters polled round-robin (simulated fabric or any transport) |
//! | [`error`] | the store's error type |

pub mod client;
pub mod cluster;
pub mod codec;
pub mod error;
pub use erpc_kv_proto as proto;
pub mod replica;
pub mod state;
pub mod storage;

pub use client::{ClientConfig, Done, KvClient, Op, Outcome};
pub use cluster::{Cluster, SimOptions};
pub use error::Error;
pub use replica::{ReadMode, Replica, ReplicaConfig};
pub use storage::Durability;

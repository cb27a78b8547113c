//! The `erpc` command's library: benchmarks (and the gRPC peer benchmark), the simulated datacenter and NIC management, usable
//! from tests.

pub mod bench;
mod bench_udp;
pub mod grpc_bench;
pub mod nic;
pub mod sim;

/// Which packet I/O to run over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// The in-memory NIC (both endpoints in this process, on one core).
    Sim,
    /// Kernel UDP sockets (sendmmsg/recvmmsg): loopback, or between machines.
    Udp,
}

//! The `erpc` command's library: benchmarks (and the gRPC peer benchmark), packet capture, the
//! simulated datacenter, the replicated key-value store's commands and NIC management, usable
//! from tests.

pub mod bench;
mod bench_afxdp;
mod bench_mlx5;
mod bench_udp;
pub mod capture;
pub mod grpc_bench;
pub mod kv;
mod kv_etcd;
pub mod netns;
pub mod nic;
pub mod sim;

/// Which packet I/O to run over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// The in-memory NIC (both endpoints in this process, on one core).
    Sim,
    /// Kernel UDP sockets (sendmmsg/recvmmsg): loopback, or between machines.
    Udp,
    /// AF_XDP sockets with an XDP program (root): on a veth pair between two network namespaces
    /// when both ends run here, or on real interfaces with --interface.
    Afxdp,
    /// A ConnectX NIC bound to vfio-pci, driven from userspace (--pci; one end per machine).
    Mlx5,
}

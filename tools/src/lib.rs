//! The `erpc` command's library: benchmarks (and the gRPC peer benchmark), packet capture, the
//! simulated datacenter, the replicated key-value store's commands and NIC management, usable
//! from tests.

pub mod bench;
pub mod capture;
pub mod echo;
mod endpoints;
pub mod grpc_bench;
pub mod jitter;
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

impl TransportKind {
    /// The name on the command line.
    pub fn name(self) -> String {
        value_name(&self)
    }
}

/// The name of a value on the command line, as clap spells it.
pub(crate) fn value_name(v: &impl clap::ValueEnum) -> String {
    v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
}

/// An error and its causes on one line, as `erpc` prints it: "what failed: why: what to do". A
/// cause whose text the line holds already is left out, and a driver's error ends the line: its
/// message says what to do and holds the OS or device error where that helps (its `source()` is
/// there for programs that match on it).
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = String::new();
    let mut next = Some(e);
    while let Some(c) = next {
        let m = c.to_string();
        if s.is_empty() {
            s = m;
        } else if !s.contains(&m) {
            s = format!("{s}: {m}");
        }
        next = if is_driver_error(c) { None } else { c.source() };
    }
    s.replace('\n', " ")
}

/// Whether `e` is one of the drivers' (or the DMA memory's) errors.
fn is_driver_error(e: &(dyn std::error::Error + 'static)) -> bool {
    use erpc_driver::{afxdp, intel, mlx5, pci, udp, vfio};
    e.is::<udp::UdpError>()
        || e.is::<afxdp::AfXdpError>()
        || e.is::<vfio::DeviceError>()
        || e.is::<pci::PciError>()
        || e.is::<intel::IntelError>()
        || e.is::<mlx5::Mlx5Error>()
        || e.is::<erpc_hugepages::DmaError>()
}

#[cfg(test)]
mod tests {
    use anyhow::Context;
    use std::{fmt, io};

    /// An error that, like the drivers', both says its cause and returns it from `source()`.
    #[derive(Debug)]
    struct Bind(io::Error);

    impl fmt::Display for Bind {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "binding UDP 10.0.0.1:1 failed: {}", self.0)
        }
    }

    impl std::error::Error for Bind {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_driver_error_ends_the_line() {
        let in_use = erpc_driver::udp::UdpError::Bind {
            addr: "127.0.0.1:31850".parse().unwrap(),
            error: io::Error::from(io::ErrorKind::AddrInUse),
        };
        let e = Err::<(), _>(in_use).context("starting the server").unwrap_err();
        assert_eq!(
            super::one_line(&*e),
            "starting the server: UDP 127.0.0.1:31850 is in use by another process: pick another port (or 0 for any)"
        );
    }

    #[test]
    fn one_line_says_each_cause_once() {
        let denied = || io::Error::new(io::ErrorKind::PermissionDenied, "Permission denied\n(os error 13)");
        let e = Err::<(), _>(Bind(denied())).context("starting the server").unwrap_err();
        assert_eq!(
            super::one_line(&*e),
            "starting the server: binding UDP 10.0.0.1:1 failed: Permission denied (os error 13)"
        );
        let e = Err::<(), _>(denied()).context("cannot create x.pcap").unwrap_err();
        assert_eq!(super::one_line(&*e), "cannot create x.pcap: Permission denied (os error 13)");
    }
}

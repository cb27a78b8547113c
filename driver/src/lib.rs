//! Packet I/O for the eRPC dataplane: userspace VFIO drivers and kernel transports, each
//! implementing [`erpc_dataplane::transport::Transport`].
//!
//! * [`pci`]: PCI network devices in sysfs; binding them to vfio-pci.
//! * [`vfio`]: opening a function through VFIO (container, group, device), BARs, config space.
//! * [`mmio`]: register access ([`mmio::RegisterIo`], and [`mmio::RegisterIo64`] for 64-bit
//!   doorbells), volatile over a BAR or faked in tests.
//! * [`intel`]: the igb (82576, I350) and ixgbe (82599, X540) driver.
//! * [`mlx5`]: the NVIDIA ConnectX-4 Lx/5/6/7 driver: firmware command interface, HCA
//!   bring-up, one send queue and one striding receive queue.
//! * [`udp`]: a kernel UDP socket (`sendmmsg`/`recvmmsg`), for machines without a spare NIC.
//! * [`afxdp`]: an AF_XDP socket with its XDP program (raw eBPF, no libbpf): raw frames of one
//!   interface queue without a NIC given to VFIO.

pub mod afxdp;
pub mod intel;
pub mod mlx5;
pub mod mmio;
pub mod pci;
pub mod udp;
pub mod vfio;

/// Sleeps until `fd` is readable or about `timeout_ns` has passed (or a signal comes): the
/// kernel transports' `wait_rx`.
pub(crate) fn poll_in(fd: std::os::fd::RawFd, timeout_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000).min(i32::MAX as u64) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one live pollfd and a live timespec, no signal mask; an error (EINTR) only ends
    // the wait early, which callers allow.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}

//! A kernel UDP socket as a [`Transport`]: for machines without a NIC to hand to VFIO. Works on
//! loopback and between machines.
//!
//! The eRPC packet (header and data) is the UDP payload; the Ethernet/IPv4/UDP headroom of the
//! dataplane's frames is stripped on send (the kernel builds its own) and synthesised on receive
//! from the datagram's source address, so the protocol sees the same frames as over a NIC.
//! The socket is non-blocking and batched: `sendmmsg(2)` sends a whole burst, gathering each
//! packet's header and data segments without copying them in user space; `recvmmsg(2)` fills a
//! burst of receive buffers that are then lent to the dataplane until it releases them.
//!
//! The kernel copies a datagram when `sendmmsg` returns, so nothing is read later:
//! [`Transport::max_tx_in_flight`] is 0 and `tx_flush` has nothing to wait for.
//!
//! Tests: `tests/tests/udp.rs` (the loopback scenarios with 3 MB messages and 1% loss, the
//! synthesised headroom, oversized and garbage datagrams dropped and counted, bind errors);
//! `tests/tests/hostile_udp.rs` (a live client and server under a flood of forged, replayed and
//! truncated datagrams); `examples/` and `tools/tests/` run their endpoints over it too.

use erpc_dataplane::transport::{EndpointAddr, RxPacket, Transport, TxPacket};
use erpc_dataplane::wire::{RoutingInfo, HEADROOM};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// Settings of a [`UdpTransport`].
#[derive(Clone, Copy, Debug)]
pub struct UdpConfig {
    /// The address to bind: a specific IPv4 address peers can reach (not 0.0.0.0), and a port
    /// (0 picks a free one).
    pub bind: SocketAddrV4,
    /// Largest frame including the 42-byte headroom; the datagram is 42 bytes shorter. 1514
    /// keeps datagrams within a 1500-byte Ethernet MTU; loopback allows up to 65,535.
    pub mtu: usize,
    /// Receive buffers (the most frames lent at once plus those being filled).
    pub rx_buffers: usize,
    /// Most datagrams per `sendmmsg`/`recvmmsg` call.
    pub batch: usize,
    /// Kernel socket buffer sizes (`SO_RCVBUF`/`SO_SNDBUF`), 0 to keep the system default.
    pub socket_buffer: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 31850),
            mtu: 1514,
            rx_buffers: 512,
            batch: 32,
            socket_buffer: 4 << 20,
        }
    }
}

/// Why a UDP transport could not be created. Each message says what to do.
#[derive(Debug)]
pub enum UdpError {
    /// 0.0.0.0 cannot be told to peers as this endpoint's address.
    Unspecified,
    /// Binding failed (address in use, not local, no permission for a low port).
    Bind { addr: SocketAddrV4, error: io::Error },
    /// A setting out of range.
    Config(String),
    /// A socket option could not be set.
    Socket(io::Error),
}

impl fmt::Display for UdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UdpError::Unspecified => write!(
                f,
                "bind to a specific IPv4 address peers can reach (e.g. 127.0.0.1 or the \
                 interface's address), not 0.0.0.0: it is this endpoint's address in sessions"
            ),
            UdpError::Bind { addr, error } => match error.kind() {
                io::ErrorKind::AddrInUse => {
                    write!(f, "UDP {addr} is in use by another process: pick another port (or 0 for any)")
                }
                io::ErrorKind::AddrNotAvailable => {
                    write!(f, "{} is not an address of this machine: use one that `ip -4 addr` lists", addr.ip())
                }
                _ => write!(f, "binding UDP {addr} failed: {error}"),
            },
            UdpError::Config(m) => write!(f, "bad UDP transport setting: {m}"),
            UdpError::Socket(e) => write!(f, "setting up the UDP socket failed: {e}"),
        }
    }
}

impl std::error::Error for UdpError {
    /// The OS error underneath (its text is part of this error's message where it helps).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UdpError::Bind { error, .. } | UdpError::Socket(error) => Some(error),
            _ => None,
        }
    }
}

/// Counters of what the transport itself dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    pub tx_datagrams: u64,
    pub rx_datagrams: u64,
    /// Datagrams the kernel refused to send (errors other than a full socket buffer).
    pub tx_errors: u64,
    /// Packets that were not eRPC frames to send: larger than the MTU or without headroom.
    pub tx_malformed: u64,
    /// Datagrams longer than a receive buffer (truncated by the kernel), dropped.
    pub rx_truncated: u64,
    /// Datagrams from a non-IPv4 source, dropped.
    pub rx_bad_source: u64,
    /// `rx_release` of an id that was not lent, ignored.
    pub rx_bad_release: u64,
}

/// A UDP socket implementing [`Transport`].
pub struct UdpTransport {
    sock: UdpSocket,
    local: EndpointAddr,
    mtu: usize,
    batch: usize,
    /// `nbufs` receive buffers of `buf_size` bytes each, reached through raw pointers only
    /// (lent to the dataplane while it reads them).
    bufs: NonNull<u8>,
    nbufs: usize,
    buf_size: usize,
    /// Buffers neither lent nor posted.
    free: Vec<u32>,
    lent: Vec<bool>,
    // The receive slots handed to `recvmmsg`, set up once and kept posted: slot `k < posted`
    // holds buffer `rx_idx[k]`, so polling an empty socket prepares nothing.
    rx_hdrs: Vec<libc::mmsghdr>,
    rx_iov: Vec<libc::iovec>,
    rx_addr: Vec<libc::sockaddr_in>,
    rx_idx: Vec<u32>,
    posted: usize,
    /// The last poll found nothing: the next waits for one datagram with `recvfrom`, whose
    /// empty call costs less than `recvmmsg`'s (no message headers copied in), so a spinning
    /// latency-bound endpoint notices an arrival sooner.
    rx_idle: bool,
    // Scratch for `sendmmsg`, allocated once.
    tx_hdrs: Vec<libc::mmsghdr>,
    tx_iov: Vec<libc::iovec>,
    tx_addr: Vec<libc::sockaddr_in>,
    accepted: u64,
    stats: UdpStats,
}

// SAFETY: the raw pointers point into this value's own heap allocations (receive buffers and
// system-call scratch), which move with it.
unsafe impl Send for UdpTransport {}

fn sockaddr(ip: [u8; 4], port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip) },
        sin_zero: [0; 8],
    }
}

fn empty_hdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct for which all-zero bytes are a valid (empty) value.
    unsafe { std::mem::zeroed() }
}

impl UdpTransport {
    /// Binds the socket and allocates the receive buffers.
    pub fn bind(cfg: UdpConfig) -> Result<UdpTransport, UdpError> {
        if cfg.bind.ip().is_unspecified() {
            return Err(UdpError::Unspecified);
        }
        if !(HEADROOM + 64..=65535).contains(&cfg.mtu) {
            return Err(UdpError::Config(format!("mtu = {}: use {}..=65535", cfg.mtu, HEADROOM + 64)));
        }
        if !(1..=1024).contains(&cfg.batch) || cfg.rx_buffers < cfg.batch || cfg.rx_buffers > 1 << 20 {
            return Err(UdpError::Config(format!(
                "batch = {}, rx_buffers = {}: use 1..=1024 and batch..=1048576",
                cfg.batch, cfg.rx_buffers
            )));
        }
        let sock = UdpSocket::bind(cfg.bind).map_err(|error| UdpError::Bind { addr: cfg.bind, error })?;
        sock.set_nonblocking(true).map_err(UdpError::Socket)?;
        if cfg.socket_buffer > 0 {
            for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
                let v = cfg.socket_buffer.min(i32::MAX as usize) as libc::c_int;
                // SAFETY: setsockopt on our socket with a pointer to a c_int of its size.
                let r = unsafe {
                    libc::setsockopt(
                        sock.as_raw_fd(),
                        libc::SOL_SOCKET,
                        opt,
                        (&v as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                if r != 0 {
                    return Err(UdpError::Socket(io::Error::last_os_error()));
                }
            }
        }
        let port = match sock.local_addr().map_err(UdpError::Socket)? {
            std::net::SocketAddr::V4(a) => a.port(),
            std::net::SocketAddr::V6(_) => return Err(UdpError::Unspecified),
        };
        let local = EndpointAddr { mac: [0; 6], ipv4: cfg.bind.ip().octets(), udp_port: port };
        let buf_size = cfg.mtu.next_multiple_of(64);
        let bufs = vec![0u8; buf_size * cfg.rx_buffers].into_boxed_slice();
        // Owned through the raw pointer from here on; freed in Drop.
        let bufs = NonNull::new(Box::into_raw(bufs).cast::<u8>()).expect("Box pointers are non-null");
        let b = cfg.batch;
        let mut t = UdpTransport {
            sock,
            local,
            mtu: cfg.mtu,
            batch: b,
            bufs,
            nbufs: cfg.rx_buffers,
            buf_size,
            free: (0..cfg.rx_buffers as u32).rev().collect(),
            lent: vec![false; cfg.rx_buffers],
            rx_hdrs: vec![empty_hdr(); b],
            rx_iov: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; b],
            rx_addr: vec![sockaddr([0; 4], 0); b],
            rx_idx: vec![0; b],
            posted: 0,
            rx_idle: false,
            tx_hdrs: vec![empty_hdr(); b],
            tx_iov: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2 * b],
            tx_addr: vec![sockaddr([0; 4], 0); b],
            accepted: 0,
            stats: UdpStats::default(),
        };
        // The slots' headers point at their own address and iovec entries for good (the
        // vectors' heap storage never moves).
        for k in 0..b {
            t.rx_iov[k].iov_len = t.buf_size - HEADROOM;
            let h = &mut t.rx_hdrs[k].msg_hdr;
            h.msg_name = (&mut t.rx_addr[k] as *mut libc::sockaddr_in).cast();
            h.msg_iov = &mut t.rx_iov[k];
            h.msg_iovlen = 1;
        }
        t.repost();
        Ok(t)
    }

    /// Puts buffer `i` into receive slot `k`.
    fn post(&mut self, k: usize, i: u32) {
        self.rx_idx[k] = i;
        // SAFETY: inside buffer `i`, which is ours (not lent).
        self.rx_iov[k].iov_base = unsafe { self.buf(i).add(HEADROOM) }.cast();
        self.rx_hdrs[k].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    }

    /// Receives up to `want` datagrams into the first posted slots with one `recvmmsg`.
    fn recv_many(&mut self, want: usize) -> usize {
        // SAFETY: the first `want` headers point at live slot entries and at posted receive
        // buffers, which are ours (not lent).
        let r = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                self.rx_hdrs.as_mut_ptr(),
                want as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        r.max(0) as usize
    }

    /// Receives one datagram into posted slot 0 with `recvfrom`, filling in its header as
    /// `recvmmsg` would (length, truncation, source address).
    fn recv_one(&mut self) -> usize {
        let iov = self.rx_iov[0];
        let mut alen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: the iovec of slot 0 points at a posted receive buffer, ours (not lent), of
        // `iov_len` bytes; the address goes to slot 0's live `sockaddr_in`. MSG_TRUNC makes the
        // call return the datagram's full length, so a truncated one is recognised.
        let r = unsafe {
            libc::recvfrom(
                self.sock.as_raw_fd(),
                iov.iov_base,
                iov.iov_len,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                (&mut self.rx_addr[0] as *mut libc::sockaddr_in).cast(),
                &mut alen,
            )
        };
        if r < 0 {
            return 0;
        }
        let h = &mut self.rx_hdrs[0];
        h.msg_len = r as u32;
        h.msg_hdr.msg_flags = if r as usize > iov.iov_len { libc::MSG_TRUNC } else { 0 };
        1
    }

    /// Fills empty receive slots from the free buffers.
    fn repost(&mut self) {
        while self.posted < self.batch {
            let Some(i) = self.free.pop() else { break };
            self.post(self.posted, i);
            self.posted += 1;
        }
    }

    /// The transport's own counters.
    pub fn stats(&self) -> UdpStats {
        self.stats
    }

    fn buf(&self, i: u32) -> *mut u8 {
        // SAFETY: `i < nbufs`, so the offset stays inside the buffer allocation.
        unsafe { self.bufs.as_ptr().add(i as usize * self.buf_size) }
    }

    /// Fills the scratch entry `k` for packet `p`; false if it is not a frame we can send.
    fn prepare_tx(&mut self, k: usize, p: &TxPacket) -> bool {
        let s0 = p.segs[0];
        if p.len() > self.mtu || (s0.len as usize) < HEADROOM {
            return false;
        }
        // The destination IPv4 address and UDP port: bytes 30..38 of the headroom.
        let mut dst = [0u8; 8];
        // SAFETY: the dataplane guarantees the segment is readable for its length (>= HEADROOM).
        unsafe { std::ptr::copy_nonoverlapping(s0.vaddr.add(30), dst.as_mut_ptr(), 8) };
        let ip = [dst[0], dst[1], dst[2], dst[3]];
        let port = u16::from_be_bytes([dst[6], dst[7]]);
        self.tx_addr[k] = sockaddr(ip, port);
        // SAFETY: still inside segment 0 (len >= HEADROOM).
        let data0 = unsafe { s0.vaddr.add(HEADROOM) };
        self.tx_iov[2 * k] = libc::iovec { iov_base: data0 as *mut _, iov_len: s0.len as usize - HEADROOM };
        self.tx_iov[2 * k + 1] = libc::iovec { iov_base: p.segs[1].vaddr as *mut _, iov_len: p.segs[1].len as usize };
        let h = &mut self.tx_hdrs[k].msg_hdr;
        h.msg_name = (&mut self.tx_addr[k] as *mut libc::sockaddr_in).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_iov = &mut self.tx_iov[2 * k];
        h.msg_iovlen = if p.segs[1].len > 0 { 2 } else { 1 };
        true
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR))
}

impl Transport for UdpTransport {
    fn mtu(&self) -> usize {
        self.mtu
    }

    fn local_addr(&self) -> EndpointAddr {
        self.local
    }

    fn max_tx_in_flight(&self) -> usize {
        0 // sendmmsg copies the datagrams before it returns
    }

    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        let mut done = 0;
        while done < pkts.len() {
            // Build a batch of sendable packets; a malformed one is dropped (and counted) on its
            // own, as a NIC would drop a bad descriptor.
            let mut m = 0;
            while m < self.batch && done + m < pkts.len() && self.prepare_tx(m, &pkts[done + m]) {
                m += 1;
            }
            if m == 0 {
                self.stats.tx_malformed += 1;
                done += 1;
                continue;
            }
            let r = if m == 1 && self.tx_hdrs[0].msg_hdr.msg_iovlen == 1 {
                // One single-segment datagram (the latency-bound case): `sendto` skips the
                // kernel's copying-in of a message header and iovec array.
                let iov = self.tx_iov[0];
                // SAFETY: the iovec and address of scratch entry 0 point at the packet's data,
                // readable as the dataplane guarantees until this call returns, and at a live
                // `sockaddr_in`.
                let r = unsafe {
                    libc::sendto(
                        self.sock.as_raw_fd(),
                        iov.iov_base,
                        iov.iov_len,
                        libc::MSG_DONTWAIT,
                        (&self.tx_addr[0] as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                };
                if r >= 0 {
                    1
                } else {
                    -1
                }
            } else {
                // SAFETY: the first `m` headers point at live scratch entries and at the packets'
                // segments, readable as the dataplane guarantees until this call returns.
                unsafe {
                    libc::sendmmsg(self.sock.as_raw_fd(), self.tx_hdrs.as_mut_ptr(), m as u32, libc::MSG_DONTWAIT)
                }
            };
            if r > 0 {
                done += r as usize;
                self.stats.tx_datagrams += r as u64;
                if (r as usize) < m {
                    break; // the socket buffer is full: the rest waits for the next burst
                }
            } else {
                let e = io::Error::last_os_error();
                if would_block(&e) {
                    break;
                }
                // Refused by the kernel (e.g. no route): lost, as on a wire.
                self.stats.tx_errors += 1;
                done += 1;
            }
        }
        self.accepted += done as u64;
        done
    }

    fn tx_flush(&mut self) {}

    fn tx_reclaimed(&self) -> u64 {
        self.accepted
    }

    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        if self.posted < self.batch {
            self.repost();
        }
        let want = out.len().min(self.posted);
        if want == 0 {
            return 0;
        }
        let got = if self.rx_idle { self.recv_one() } else { self.recv_many(want) };
        self.rx_idle = got == 0;
        let mut n = 0;
        for k in 0..got {
            let i = self.rx_idx[k];
            let h = &self.rx_hdrs[k];
            let len = h.msg_len as usize;
            self.stats.rx_datagrams += 1;
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > self.mtu - HEADROOM {
                self.stats.rx_truncated += 1;
                self.free.push(i);
                continue;
            }
            let a = self.rx_addr[k];
            if a.sin_family != libc::AF_INET as libc::sa_family_t {
                self.stats.rx_bad_source += 1;
                self.free.push(i);
                continue;
            }
            let src =
                EndpointAddr { mac: [0; 6], ipv4: a.sin_addr.s_addr.to_ne_bytes(), udp_port: u16::from_be(a.sin_port) };
            let mut hr = [0u8; HEADROOM];
            RoutingInfo::new(&src, &self.local).write(&mut hr, len);
            // SAFETY: the first HEADROOM bytes of buffer `i`, which is still ours.
            unsafe { std::ptr::copy_nonoverlapping(hr.as_ptr(), self.buf(i), HEADROOM) };
            self.lent[i as usize] = true;
            let data = NonNull::new(self.buf(i)).expect("inside a live allocation");
            out[n] = RxPacket { data, len: (HEADROOM + len) as u32, id: i };
            n += 1;
        }
        // Slots 0..got are empty now: refill them, or, short of free buffers, move the still
        // posted slots down so the posted ones stay a prefix.
        let mut k = 0;
        while k < got {
            let Some(i) = self.free.pop() else { break };
            self.post(k, i);
            k += 1;
        }
        if k < got {
            for j in got..self.posted {
                let i = self.rx_idx[j];
                self.post(k + j - got, i);
            }
            self.posted = k + self.posted - got;
        }
        n
    }

    fn rx_release(&mut self, pkts: &[RxPacket]) {
        for p in pkts {
            match self.lent.get_mut(p.id as usize) {
                Some(l @ true) => {
                    *l = false;
                    self.free.push(p.id);
                }
                _ => self.stats.rx_bad_release += 1,
            }
        }
    }
}

impl Drop for UdpTransport {
    fn drop(&mut self) {
        let len = self.buf_size * self.nbufs;
        // SAFETY: rebuilds the Box leaked in `bind` (same pointer and length) to free it.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.bufs.as_ptr(), len)) });
    }
}

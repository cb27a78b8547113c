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
//! A run of packets to one destination whose payloads are all as long as the first's (but for a
//! shorter last one) goes as one `UDP_SEGMENT` message (`udp(7)`, Linux 4.18): the kernel, or a
//! NIC with UDP segmentation offload, cuts it into the datagrams. Once a receive brings
//! [`GRO_AFTER`] datagrams at once, the socket turns `UDP_GRO` on (Linux 5.0): a run from one
//! source may then arrive as one buffer with its segment size in a control message; each
//! receive slot has a second iovec (a 64 KiB spill area) for it, the first packet stays in the
//! slot's buffer and the others are copied into buffers of their own, handed over in order
//! (those that do not fit the caller's burst at the next call).
//!
//! The kernel copies a datagram when `sendmmsg` returns, so nothing is read later:
//! [`Transport::max_tx_in_flight`] is 0 and `tx_flush` has nothing to wait for.
//!
//! Tests: `tests/tests/udp.rs` (the loopback scenarios with 3 MB messages and 1% loss, the
//! synthesised headroom, oversized and garbage datagrams dropped and counted, bind errors,
//! GSO runs and coalesced receives split in order in bursts of any size, a coalesced run
//! beyond the free buffers);
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
    /// Send a run of equal-sized packets to one destination as one UDP_SEGMENT (GSO) datagram
    /// that the kernel (or the NIC) cuts into the packets, when the kernel has it (Linux 4.18);
    /// off, or where the kernel refuses it, each packet is its own datagram.
    pub gso: bool,
    /// Let the kernel hand over a run of datagrams from one source as one (UDP_GRO, Linux 5.0)
    /// once a receive brings [`GRO_AFTER`] or more datagrams at once (bulk traffic), from then
    /// on: its first packet stays where it landed, the others are copied into receive buffers
    /// of their own. A socket with UDP_GRO must be read with `recvmsg`, which costs a spinning,
    /// latency-bound endpoint more than `recvfrom` (about 0.2 µs a call here), so an endpoint
    /// that only ever receives one datagram at a time never turns it on. Off, or on a kernel
    /// without it, each datagram is received on its own.
    pub gro: bool,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 31850),
            mtu: 1514,
            // With UDP_GRO, a receive takes at most one datagram per 64 free buffers (the most
            // packets one can bring): 2048 keep a batch of 32 whole.
            rx_buffers: 2048,
            batch: 32,
            socket_buffer: 4 << 20,
            gso: true,
            gro: true,
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
    /// UDP_SEGMENT sends (each two or more packets).
    pub tx_gso_sends: u64,
    /// Packets sent in them.
    pub tx_gso_datagrams: u64,
    /// 1 once the kernel refused a UDP_SEGMENT send and the transport went back to a datagram
    /// per packet.
    pub tx_gso_refused: u64,
    /// 1 once UDP_GRO is on.
    pub rx_gro_on: u64,
    /// Coalesced (UDP_GRO) receives of two or more packets.
    pub rx_gro_receives: u64,
    /// Packets in them.
    pub rx_gro_datagrams: u64,
    /// Packets of a coalesced receive dropped because no receive buffer was free for them.
    pub rx_no_buffer: u64,
    /// `wait_rx` calls that blocked in `ppoll`.
    pub rx_waits: u64,
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
    /// With UDP_GRO on: each slot's second iovec is its
    /// part of `spill` (the coalesced packets past the first), and `rx_ctrl` its control message
    /// (the segment size).
    gro: Gro,
    spill: NonNull<u8>,
    spill_len: usize,
    rx_ctrl: Vec<GroCmsg>,
    /// Packets of a coalesced receive that did not fit the caller's burst: lent, handed over
    /// first at the next `rx_burst`.
    pending: std::collections::VecDeque<RxPacket>,
    /// The last poll found nothing: the next waits for one datagram with `recvfrom`, whose
    /// empty call costs less than `recvmmsg`'s (no message headers copied in), so a spinning
    /// latency-bound endpoint notices an arrival sooner.
    rx_idle: bool,
    /// The headroom template of the last source received from (its address, its template):
    /// most datagrams come from the peer before, and building a template costs an IPv4
    /// header checksum.
    rx_route: (EndpointAddr, RoutingInfo),
    // Scratch for `sendmmsg`, allocated once: a message per datagram, or per run of packets
    // sent as one UDP_SEGMENT datagram (`tx_pkts` of them, `tx_ctrl` its control message).
    tx_hdrs: Vec<libc::mmsghdr>,
    tx_iov: Vec<libc::iovec>,
    tx_addr: Vec<libc::sockaddr_in>,
    tx_pkts: Vec<u32>,
    tx_ctrl: Vec<GsoCmsg>,
    gso: Gso,
    accepted: u64,
    stats: UdpStats,
}

// SAFETY: the raw pointers point into this value's own heap allocations (receive buffers and
// system-call scratch), which move with it.
unsafe impl Send for UdpTransport {}

/// Whether runs of packets go as UDP_SEGMENT sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gso {
    On,
    /// A run the kernel refused as one UDP_SEGMENT send is being sent again unsegmented.
    Probing,
    /// Configured off, missing from the kernel, or refused by it.
    Off,
}

/// Whether the socket has UDP_GRO on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gro {
    /// Turned on once a receive brings [`GRO_AFTER`] datagrams.
    Later,
    On,
    /// Configured off, or missing from the kernel.
    Off,
}

/// Most packets in one UDP_SEGMENT send: the kernel's `UDP_MAX_SEGMENTS`
/// (`include/linux/udp.h`: 64 before Linux 6.9, 128 since).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one UDP_SEGMENT send: an IPv4 datagram's 65,535 bytes less the IPv4 and
/// UDP headers (`udp(7)`, UDP_SEGMENT).
const GSO_MAX_BYTES: usize = 65_535 - 20 - 8;

/// A control message carrying UDP_SEGMENT's segment size (`udp(7)`): a `cmsghdr` and a `u16`,
/// padded to `CMSG_SPACE(2)` on 64-bit Linux.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct GsoCmsg {
    hdr: libc::cmsghdr,
    size: u16,
    _pad: [u8; 6],
}

const _: () = assert!(std::mem::size_of::<GsoCmsg>() == 24);

impl GsoCmsg {
    fn new() -> GsoCmsg {
        let mut hdr = zeroed_cmsghdr();
        hdr.cmsg_len = std::mem::size_of::<libc::cmsghdr>() + 2; // CMSG_LEN(2)
        hdr.cmsg_level = libc::SOL_UDP;
        hdr.cmsg_type = libc::UDP_SEGMENT;
        GsoCmsg { hdr, size: 0, _pad: [0; 6] }
    }
}

/// Datagrams one receive must bring for the transport to turn UDP_GRO on (see [`UdpConfig::gro`]).
pub const GRO_AFTER: usize = 4;

/// Bytes of a slot's spill area: the largest UDP payload.
const SPILL: usize = 65_536;

/// Room for the control message UDP_GRO returns (`udp(7)`): a `cmsghdr` and the segment size as
/// an `int`, `CMSG_SPACE(4)` on 64-bit Linux.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct GroCmsg {
    hdr: libc::cmsghdr,
    size: i32,
    _pad: [u8; 4],
}

const _: () = assert!(std::mem::size_of::<GroCmsg>() == 24);

impl GroCmsg {
    /// The segment size if the kernel wrote a UDP_GRO message of `controllen` bytes.
    fn size(&self, controllen: usize) -> Option<usize> {
        let h = &self.hdr;
        (controllen >= std::mem::size_of::<libc::cmsghdr>() + 4
            && h.cmsg_level == libc::SOL_UDP
            && h.cmsg_type == libc::UDP_GRO
            && self.size > 0)
            .then_some(self.size as usize)
    }
}

fn sockaddr(ip: [u8; 4], port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip) },
        sin_zero: [0; 8],
    }
}

/// Sets an `int` socket option.
fn set_int_opt(sock: &UdpSocket, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt on our socket with a pointer to a c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn zeroed_cmsghdr() -> libc::cmsghdr {
    // SAFETY: cmsghdr is a plain C struct for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
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
                set_int_opt(&sock, libc::SOL_SOCKET, opt, v).map_err(UdpError::Socket)?;
            }
        }
        // UDP_SEGMENT set to 0 on the socket changes nothing; a kernel without it refuses.
        let gso = cfg.gso && set_int_opt(&sock, libc::SOL_UDP, libc::UDP_SEGMENT, 0).is_ok();
        let port = match sock.local_addr().map_err(UdpError::Socket)? {
            std::net::SocketAddr::V4(a) => a.port(),
            std::net::SocketAddr::V6(_) => return Err(UdpError::Unspecified),
        };
        let local = EndpointAddr::from(std::net::SocketAddrV4::new(*cfg.bind.ip(), port));
        let buf_size = cfg.mtu.next_multiple_of(64);
        let bufs = vec![0u8; buf_size * cfg.rx_buffers].into_boxed_slice();
        // Owned through the raw pointer from here on; freed in Drop.
        let bufs = NonNull::new(Box::into_raw(bufs).cast::<u8>()).expect("Box pointers are non-null");
        let b = cfg.batch;
        let spill_len = if cfg.gro { SPILL * b } else { 1 };
        // Owned through the raw pointer from here on (the kernel writes it); freed in Drop.
        let spill = Box::into_raw(vec![0u8; spill_len].into_boxed_slice()).cast::<u8>();
        let spill = NonNull::new(spill).expect("Box pointers are non-null");
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
            rx_iov: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2 * b],
            rx_addr: vec![sockaddr([0; 4], 0); b],
            rx_idx: vec![0; b],
            posted: 0,
            gro: if cfg.gro { Gro::Later } else { Gro::Off },
            spill,
            spill_len,
            rx_ctrl: vec![GroCmsg { hdr: zeroed_cmsghdr(), size: 0, _pad: [0; 4] }; b],
            pending: std::collections::VecDeque::with_capacity(SPILL / 64),
            rx_idle: false,
            // Coherent from the start: the key's own template.
            rx_route: (EndpointAddr::default(), RoutingInfo::new(&EndpointAddr::default(), &local)),
            tx_hdrs: vec![empty_hdr(); b],
            tx_iov: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2 * b],
            tx_addr: vec![sockaddr([0; 4], 0); b],
            tx_pkts: vec![0; b],
            tx_ctrl: vec![GsoCmsg::new(); b],
            gso: if gso { Gso::On } else { Gso::Off },
            accepted: 0,
            stats: UdpStats::default(),
        };
        // The slots' headers point at their own address, iovec entries and control message for
        // good (the vectors' heap storage never moves).
        for k in 0..b {
            t.rx_iov[2 * k].iov_len = t.buf_size - HEADROOM;
            if cfg.gro {
                // SAFETY: slot k's part of the spill allocation.
                let at = unsafe { t.spill.as_ptr().add(k * SPILL) };
                t.rx_iov[2 * k + 1] = libc::iovec { iov_base: at.cast(), iov_len: SPILL };
            }
            let h = &mut t.rx_hdrs[k].msg_hdr;
            h.msg_name = (&mut t.rx_addr[k] as *mut libc::sockaddr_in).cast();
            h.msg_iov = &mut t.rx_iov[2 * k];
            h.msg_iovlen = 1;
        }
        t.repost();
        Ok(t)
    }

    /// Puts buffer `i` into receive slot `k`.
    fn post(&mut self, k: usize, i: u32) {
        self.rx_idx[k] = i;
        // SAFETY: inside buffer `i`, which is ours (not lent).
        self.rx_iov[2 * k].iov_base = unsafe { self.buf(i).add(HEADROOM) }.cast();
        let h = &mut self.rx_hdrs[k].msg_hdr;
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if self.gro == Gro::On {
            h.msg_controllen = std::mem::size_of::<GroCmsg>();
        }
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

    /// Receives one datagram into posted slot 0 with `recvfrom` (with UDP_GRO, `recvmsg`, which
    /// returns the segment size), filling in its header as `recvmmsg` would (length, truncation,
    /// source address).
    fn recv_one(&mut self) -> usize {
        if self.gro == Gro::On {
            // SAFETY: slot 0's header points at its live address, iovecs (a posted receive
            // buffer, ours, and slot 0's spill) and control message.
            let r = unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut self.rx_hdrs[0].msg_hdr, libc::MSG_DONTWAIT) };
            if r < 0 {
                return 0;
            }
            self.rx_hdrs[0].msg_len = r as u32;
            return 1;
        }
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

    /// Lends buffer `i`, holding a `len`-byte payload, with the headroom synthesised from
    /// `route` (its source to us).
    fn lend(&mut self, i: u32, route: &RoutingInfo, len: usize) -> RxPacket {
        let mut hr = [0u8; HEADROOM];
        route.write(&mut hr, len);
        // SAFETY: the first HEADROOM bytes of buffer `i`, which is still ours.
        unsafe { std::ptr::copy_nonoverlapping(hr.as_ptr(), self.buf(i), HEADROOM) };
        self.lent[i as usize] = true;
        let data = NonNull::new(self.buf(i)).expect("inside a live allocation");
        RxPacket { data, len: (HEADROOM + len) as u32, id: i }
    }

    /// Puts lent packet `p` into `out[n]` if there is room, else behind what waits; the new
    /// `n`. Arrival order is kept: a receive starts with nothing pending, and once `out` is full
    /// every later packet of the call waits.
    fn hand_over(&mut self, out: &mut [RxPacket], n: usize, p: RxPacket) -> usize {
        if n < out.len() {
            out[n] = p;
            n + 1
        } else {
            self.pending.push_back(p);
            n
        }
    }

    /// Copies bytes `from..to` of the coalesced payload slot `k` received (its first part in
    /// buffer `i` past the headroom, the rest in the slot's spill) to `dst`.
    fn copy_coalesced(&self, k: usize, i: u32, from: usize, to: usize, dst: *mut u8) {
        let first = self.buf_size - HEADROOM;
        let (a, b) = (from.min(first), to.min(first));
        // SAFETY: `from..to` lies within the `len` bytes the kernel wrote, `first` of them in
        // buffer `i` (ours until lent; only its first packet's bytes are lent) and the rest in
        // slot k's spill; `dst` is a free buffer of `buf_size` bytes, `to - from` of which fit
        // past its headroom (at most a packet).
        unsafe {
            if a < b {
                std::ptr::copy_nonoverlapping(self.buf(i).add(HEADROOM + a), dst, b - a);
            }
            let spill = self.spill.as_ptr().add(k * SPILL);
            let (c, d) = (from.max(first) - first, to.max(first) - first);
            if c < d {
                std::ptr::copy_nonoverlapping(spill.add(c), dst.add(b - a), d - c);
            }
        }
    }

    /// Turns UDP_GRO on, and the slots' second iovec (the spill) and control message with it; a
    /// kernel without it leaves the socket as it was, for good.
    fn enable_gro(&mut self) {
        self.gro = Gro::Off;
        if set_int_opt(&self.sock, libc::SOL_UDP, libc::UDP_GRO, 1).is_err() {
            return;
        }
        self.gro = Gro::On;
        self.stats.rx_gro_on = 1;
        for k in 0..self.batch {
            let h = &mut self.rx_hdrs[k].msg_hdr;
            h.msg_iovlen = 2;
            h.msg_control = (&mut self.rx_ctrl[k] as *mut GroCmsg).cast();
            h.msg_controllen = std::mem::size_of::<GroCmsg>();
        }
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

    /// The destination and UDP payload length of packet `p`; `None` if it is not a frame we can
    /// send.
    fn check_tx(&self, p: &TxPacket) -> Option<(libc::sockaddr_in, usize)> {
        let s0 = p.segs[0];
        if p.len() > self.mtu || (s0.len as usize) < HEADROOM {
            return None;
        }
        // The destination IPv4 address and UDP port: bytes 30..38 of the headroom.
        let mut dst = [0u8; 8];
        // SAFETY: the dataplane guarantees the segment is readable for its length (>= HEADROOM).
        unsafe { std::ptr::copy_nonoverlapping(s0.vaddr.add(30), dst.as_mut_ptr(), 8) };
        let ip = [dst[0], dst[1], dst[2], dst[3]];
        let port = u16::from_be_bytes([dst[6], dst[7]]);
        Some((sockaddr(ip, port), p.len() - HEADROOM))
    }

    /// Sends `len` bytes at `data` as one datagram to `to` with `sendto`, which skips the
    /// kernel's copying-in of a message header and iovec array; the call's result.
    ///
    /// # Safety
    /// `data` must point at `len` readable bytes until the call returns.
    unsafe fn send_one(&self, data: *const u8, len: usize, to: &libc::sockaddr_in) -> isize {
        // SAFETY: `data` holds `len` readable bytes (the caller's promise); `to` is a live
        // `sockaddr_in` of the length passed.
        unsafe {
            libc::sendto(
                self.sock.as_raw_fd(),
                data.cast(),
                len,
                libc::MSG_DONTWAIT,
                (to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
    }

    /// Puts packet `p`'s payload (its segments past the headroom) into the iovecs from `at`;
    /// how many it took.
    fn push_iov(&mut self, at: usize, p: &TxPacket) -> usize {
        let s0 = p.segs[0];
        // SAFETY: inside segment 0 (len >= HEADROOM, checked by `check_tx`).
        let data0 = unsafe { s0.vaddr.add(HEADROOM) };
        self.tx_iov[at] = libc::iovec { iov_base: data0 as *mut _, iov_len: s0.len as usize - HEADROOM };
        if p.segs[1].len == 0 {
            return 1;
        }
        self.tx_iov[at + 1] = libc::iovec { iov_base: p.segs[1].vaddr as *mut _, iov_len: p.segs[1].len as usize };
        2
    }

    /// Fills the scratch messages with up to `batch` packets from `pkts`: a message per packet,
    /// or, with GSO, one per run of packets to the same destination whose payloads are all as
    /// long as the first's but for a shorter last one (what UDP_SEGMENT cuts a datagram into).
    /// Stops before a packet that is not a frame to send. The number of messages and packets.
    fn build_tx(&mut self, pkts: &[TxPacket]) -> (usize, usize) {
        let (mut m, mut n, mut iov) = (0usize, 0usize, 0usize);
        // The open message's segment size and payload bytes; 0: none open.
        let (mut seg, mut bytes) = (0usize, 0usize);
        while n < self.batch && n < pkts.len() {
            let Some((addr, plen)) = self.check_tx(&pkts[n]) else { break };
            let prev = m.wrapping_sub(1);
            let joins = seg != 0
                && plen <= seg
                && (self.tx_pkts[prev] as usize) < GSO_MAX_SEGMENTS
                && bytes + plen <= GSO_MAX_BYTES
                && addr.sin_addr.s_addr == self.tx_addr[prev].sin_addr.s_addr
                && addr.sin_port == self.tx_addr[prev].sin_port;
            if !joins {
                self.tx_addr[m] = addr;
                self.tx_pkts[m] = 0;
                let h = &mut self.tx_hdrs[m].msg_hdr;
                h.msg_name = (&mut self.tx_addr[m] as *mut libc::sockaddr_in).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                h.msg_iov = &mut self.tx_iov[iov];
                h.msg_iovlen = 0;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                self.tx_ctrl[m].size = plen as u16;
                (seg, bytes) = (if self.gso == Gso::On { plen } else { 0 }, 0);
                m += 1;
            }
            let k = self.push_iov(iov, &pkts[n]);
            iov += k;
            self.tx_hdrs[m - 1].msg_hdr.msg_iovlen += k;
            self.tx_pkts[m - 1] += 1;
            bytes += plen;
            if plen < seg {
                seg = 0; // a shorter packet ends the run
            }
            n += 1;
        }
        for k in 0..m {
            if self.tx_pkts[k] > 1 {
                // Several packets: the first one's payload size is the segment size.
                let h = &mut self.tx_hdrs[k].msg_hdr;
                h.msg_control = (&mut self.tx_ctrl[k] as *mut GsoCmsg).cast();
                h.msg_controllen = std::mem::size_of::<GsoCmsg>();
            }
        }
        (m, n)
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
        if let [p] = pkts {
            // One single-segment packet (the latency-bound case): straight to `sendto`, without
            // filling the `sendmmsg` scratch. Any error takes the general path below, which
            // sends it again and handles the error (so does a GSO probe in progress, which only
            // the general path concludes).
            if p.segs[1].len == 0 && self.gso != Gso::Probing {
                if let Some((addr, plen)) = self.check_tx(p) {
                    // SAFETY: the packet's payload (past the headroom, `plen` bytes inside
                    // segment 0, checked by `check_tx`) is readable as the dataplane guarantees
                    // until this call returns.
                    let r = unsafe { self.send_one(p.segs[0].vaddr.add(HEADROOM), plen, &addr) };
                    if r >= 0 {
                        self.stats.tx_datagrams += 1;
                        self.accepted += 1;
                        return 1;
                    }
                }
            }
        }
        let mut done = 0;
        while done < pkts.len() {
            // Build a batch of sendable packets; a malformed one is dropped (and counted) on its
            // own, as a NIC would drop a bad descriptor.
            let (m, n) = self.build_tx(&pkts[done..]);
            if n == 0 {
                self.stats.tx_malformed += 1;
                done += 1;
                continue;
            }
            let r = if n == 1 && self.tx_hdrs[0].msg_hdr.msg_iovlen == 1 {
                // One single-segment datagram (the latency-bound case): `sendto` skips the
                // kernel's copying-in of a message header and iovec array.
                let iov = self.tx_iov[0];
                // SAFETY: the iovec of scratch entry 0 points at the packet's data, readable as
                // the dataplane guarantees until this call returns.
                let r = unsafe { self.send_one(iov.iov_base as *const u8, iov.iov_len, &self.tx_addr[0]) };
                if r >= 0 {
                    1
                } else {
                    -1
                }
            } else {
                // SAFETY: the first `m` headers point at live scratch entries (addresses,
                // iovecs, control messages) and at the packets' segments, readable as the
                // dataplane guarantees until this call returns.
                unsafe {
                    libc::sendmmsg(self.sock.as_raw_fd(), self.tx_hdrs.as_mut_ptr(), m as u32, libc::MSG_DONTWAIT)
                }
            };
            if r > 0 {
                if self.gso == Gso::Probing {
                    // The run the kernel refused as one UDP_SEGMENT send went out unsegmented:
                    // it was UDP_SEGMENT it refused, for this socket's path. Off for good.
                    self.gso = Gso::Off;
                    self.stats.tx_gso_refused = 1;
                }
                let sent: usize = self.tx_pkts[..r as usize].iter().map(|&k| k as usize).sum();
                for &k in self.tx_pkts[..r as usize].iter().filter(|&&k| k > 1) {
                    self.stats.tx_gso_sends += 1;
                    self.stats.tx_gso_datagrams += k as u64;
                }
                done += sent;
                self.stats.tx_datagrams += sent as u64;
                if (r as usize) < m {
                    break; // the socket buffer is full: the rest waits for the next burst
                }
            } else {
                let e = io::Error::last_os_error();
                if would_block(&e) {
                    break;
                }
                let refusal = matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::EIO) | Some(libc::EMSGSIZE) | Some(libc::EOPNOTSUPP)
                );
                if self.tx_pkts[0] > 1 && refusal {
                    // The kernel refused the run as one UDP_SEGMENT send (EINVAL: a path MTU
                    // below the segment size; EIO: the route's device cannot checksum), or
                    // refused its destination: send the run again a datagram per packet to
                    // tell which.
                    self.gso = Gso::Probing;
                    continue;
                }
                if self.gso == Gso::Probing {
                    // Refused unsegmented too: the destination, not UDP_SEGMENT. GSO stays on.
                    self.gso = Gso::On;
                }
                // Refused by the kernel (e.g. no route): the message's packets are lost, as on
                // a wire.
                self.stats.tx_errors += self.tx_pkts[0] as u64;
                done += self.tx_pkts[0] as usize;
            }
        }
        self.accepted += done as u64;
        done
    }

    fn tx_flush(&mut self) {}

    fn tx_reclaimed(&self) -> u64 {
        self.accepted
    }

    /// Sleeps in `ppoll` until the socket has a datagram, or the timeout.
    fn wait_rx(&mut self, timeout_ns: u64) -> bool {
        if !self.pending.is_empty() {
            return true;
        }
        crate::poll_in(self.sock.as_raw_fd(), timeout_ns);
        self.stats.rx_waits += 1;
        true
    }

    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        // Packets of an earlier coalesced receive first; more are received once none wait.
        let mut n = 0;
        while n < out.len() {
            let Some(p) = self.pending.pop_front() else { break };
            out[n] = p;
            n += 1;
        }
        if !self.pending.is_empty() || n == out.len() {
            return n;
        }
        if self.posted < self.batch {
            self.repost();
        }
        // With UDP_GRO one datagram may bring up to GSO_MAX_SEGMENTS packets, each needing a
        // free buffer: take no more datagrams than the free buffers can hold, and leave the rest
        // queued in the kernel rather than drop their packets here.
        let mut want = (out.len() - n).min(self.posted);
        if self.gro == Gro::On {
            want = want.min((self.free.len() / GSO_MAX_SEGMENTS).max(1));
        }
        if want == 0 {
            return n;
        }
        let got = if self.rx_idle { self.recv_one() } else { self.recv_many(want) };
        self.rx_idle = got == 0;
        let payload_max = self.mtu - HEADROOM;
        for k in 0..got {
            let i = self.rx_idx[k];
            let h = &self.rx_hdrs[k];
            let len = h.msg_len as usize;
            // The segment size if the kernel coalesced packets (a single one has none, or one
            // no shorter than the datagram).
            let seg = if self.gro == Gro::On { self.rx_ctrl[k].size(h.msg_hdr.msg_controllen) } else { None };
            let seg = seg.filter(|&g| g < len);
            self.stats.rx_datagrams += 1;
            let first = seg.unwrap_or(len);
            // MSG_CTRUNC: a control message did not fit (another socket option's), so the
            // segment size may be missing: the datagram cannot be split safely.
            if h.msg_hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || first > payload_max {
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
            // One template for every packet of the datagram.
            if src != self.rx_route.0 {
                self.rx_route = (src, RoutingInfo::new(&src, &self.local));
            }
            let route = self.rx_route.1;
            let p = self.lend(i, &route, first);
            n = self.hand_over(out, n, p);
            if let Some(seg) = seg {
                // Packets 2.. of a coalesced receive, each copied into a buffer of its own (the
                // first one's buffer holds the start of the second: only its first `seg` bytes
                // are lent).
                let segs = len.div_ceil(seg);
                self.stats.rx_gro_receives += 1;
                self.stats.rx_gro_datagrams += segs as u64;
                self.stats.rx_datagrams += segs as u64 - 1;
                for j in 1..segs {
                    let Some(b) = self.free.pop() else {
                        self.stats.rx_no_buffer += (segs - j) as u64;
                        break;
                    };
                    let (from, to) = (j * seg, ((j + 1) * seg).min(len));
                    // SAFETY: inside buffer `b`, which is free (ours).
                    self.copy_coalesced(k, i, from, to, unsafe { self.buf(b).add(HEADROOM) });
                    let p = self.lend(b, &route, to - from);
                    n = self.hand_over(out, n, p);
                }
            }
        }
        if got >= GRO_AFTER && self.gro == Gro::Later {
            self.enable_gro();
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

/// The socket, for a program that waits on it (`epoll`, `poll`) while the endpoint is idle.
/// Reading or writing it directly would take datagrams from the endpoint or put unframed ones
/// on the wire. Do not turn on options that add receive control messages (timestamps, packet
/// info): once UDP_GRO is on, they crowd out its control message, and every datagram is then
/// dropped and counted as truncated.
impl std::os::fd::AsFd for UdpTransport {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Drop for UdpTransport {
    fn drop(&mut self) {
        let len = self.buf_size * self.nbufs;
        // SAFETY: rebuilds the Box leaked in `bind` (same pointer and length) to free it.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.bufs.as_ptr(), len)) });
        let len = self.spill_len;
        // SAFETY: rebuilds the Box leaked in `bind` for the spill areas (same pointer, length).
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.spill.as_ptr(), len)) });
    }
}

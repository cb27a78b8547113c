//! [`Capture`]: a [`Transport`] wrapper that writes every frame an endpoint sends and receives to
//! a pcap stream.
//!
//! It copies each frame as the dataplane sees it — the 42-byte Ethernet/IPv4/UDP headroom, the
//! eRPC header, the data — into a classic pcap stream (`LINKTYPE_ETHERNET`, nanosecond
//! timestamps). The datapath is unchanged: the wrapper copies after the inner transport accepted
//! a TX burst and before a lent RX frame reaches the dataplane. Wireshark decodes the UDP layer
//! and hands the payload to the eRPC dissector in `tools/wireshark/erpc.lua`.
//!
//! The headroom of transmitted frames is the one `RoutingInfo::write` builds per packet (IPv4
//! total length, UDP length and IPv4 checksum filled in); the UDP transport synthesises received
//! frames' headroom the same way. So the frames are written as they are, without fix-ups. (Over
//! kernel UDP sockets the MAC addresses are zero: the kernel, not eRPC, builds the real frames.)
//!
//! Wrap the transport before handing it to the endpoint, and finish the capture when done:
//!
//! ```
//! use erpc_dataplane::clock::SimClock;
//! use erpc_dataplane::fabric::{Fabric, RxBuf};
//! use erpc_tools::capture::Capture;
//!
//! let fabric = Fabric::new(SimClock::new(), 1);
//! let mut ring = RxBuf::storage(64);
//! let port = fabric.attach(&mut ring);
//! // Any transport, any `io::Write` (a file, standard output, memory).
//! let mut nic = Capture::new(fabric.nic(port, 0), Vec::new())?;
//! // ... `Rpc::new(nic, ..)`, run the endpoint, then `rpc.transport_mut().finish()` ...
//! let pcap: Vec<u8> = nic.finish()?;
//! assert_eq!(pcap.len(), 24, "the file header; no frame passed");
//! # Ok::<(), std::io::Error>(())
//! ```

use erpc_dataplane::transport::{EndpointAddr, ResolveError, RxPacket, Transport, TxPacket};
use erpc_dataplane::wire::RoutingInfo;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, PcapError, TsResolution};
use std::io::{self, Write};
use std::time::SystemTime;

/// Longest frame kept whole; longer ones are cut here and recorded with their full length
/// (262,144 is Wireshark's largest snapshot length for Ethernet).
pub const SNAPLEN: u32 = 262_144;

/// What a [`Capture`] has written so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames accepted by the inner transport's `tx_burst`.
    pub sent: u64,
    /// Frames lent by the inner transport's `rx_burst`.
    pub received: u64,
    /// Frames longer than [`SNAPLEN`], written cut short.
    pub truncated: u64,
}

impl CaptureStats {
    pub fn packets(&self) -> u64 {
        self.sent + self.received
    }
}

/// A [`Transport`] that writes every frame sent and received through `T` to a pcap stream.
///
/// Methods delegate to `T` (including `resolve`, `max_tx_in_flight` and `tx_reclaimed`, so the
/// dataplane behaves as over `T` itself). A write error stops the capture, not the endpoint: it
/// is kept and returned by [`Capture::finish`], which also ends the capture.
pub struct Capture<T, W: Write> {
    inner: T,
    /// `None` once finished.
    out: Option<PcapWriter<W>>,
    frame: Vec<u8>,
    stats: CaptureStats,
    error: Option<io::Error>,
}

/// pcap-file's error as the I/O error it is (its other kinds are about reading).
fn pcap_error(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        e => io::Error::other(e),
    }
}

impl<T: Transport, W: Write> Capture<T, W> {
    /// Wraps `inner` and writes the pcap file header to `out`.
    pub fn new(inner: T, out: W) -> io::Result<Self> {
        let header = PcapHeader {
            snaplen: SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            ..Default::default()
        };
        let out = PcapWriter::with_header(out, header).map_err(pcap_error)?;
        Ok(Capture { inner, out: Some(out), frame: vec![0; 2048], stats: CaptureStats::default(), error: None })
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    pub fn stats(&self) -> CaptureStats {
        self.stats
    }

    /// Ends the capture (later frames pass through unrecorded), flushes the stream and returns
    /// it; or the first write error. What was written stays in [`Capture::stats`].
    pub fn finish(&mut self) -> io::Result<W> {
        let out = self.out.take();
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let mut w = out.ok_or_else(|| io::Error::other("the capture was already finished"))?.into_writer();
        w.flush()?;
        Ok(w)
    }

    /// Room for a frame of `len` bytes in the scratch buffer.
    fn scratch(&mut self, len: usize) -> &mut [u8] {
        if self.frame.len() < len {
            self.frame.resize(len, 0);
        }
        &mut self.frame[..len]
    }

    /// Writes the first `len` bytes of the scratch buffer as one packet stamped now.
    fn write_scratch(&mut self, len: usize) -> bool {
        let Some(out) = self.out.as_mut().filter(|_| self.error.is_none()) else {
            return false;
        };
        let ts = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let kept = len.min(SNAPLEN as usize);
        let pkt = PcapPacket::new(ts, len as u32, &self.frame[..kept]);
        match out.write_packet(&pkt) {
            Ok(_) => {
                self.stats.truncated += (kept < len) as u64;
                true
            }
            Err(e) => {
                self.error = Some(pcap_error(e));
                false
            }
        }
    }
}

impl<T: Transport, W: Write> Transport for Capture<T, W> {
    fn mtu(&self) -> usize {
        self.inner.mtu()
    }

    fn local_addr(&self) -> EndpointAddr {
        self.inner.local_addr()
    }

    fn resolve(&mut self, remote: &EndpointAddr) -> Result<RoutingInfo, ResolveError> {
        self.inner.resolve(remote)
    }

    fn max_tx_in_flight(&self) -> usize {
        self.inner.max_tx_in_flight()
    }

    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        let n = self.inner.tx_burst(pkts);
        for p in &pkts[..n] {
            let len = p.len();
            let buf = self.scratch(len);
            // SAFETY: the dataplane keeps an accepted packet's segments readable at least until
            // `tx_burst` returns (see `Transport`); this is still inside that call, and `buf` has
            // `len()` bytes.
            unsafe { p.copy_to(buf) };
            self.stats.sent += self.write_scratch(len) as u64;
        }
        n
    }

    fn tx_flush(&mut self) {
        self.inner.tx_flush()
    }

    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        let n = self.inner.rx_burst(out);
        for p in &out[..n] {
            let len = p.len as usize;
            let buf = self.scratch(len);
            // SAFETY: the transport lent `p.len` bytes at `p.data` until `rx_release`, which has
            // not happened yet. The memory is device-writable, so it is read through the raw
            // pointer (a byte copy, no reference to it); `buf` has `len` bytes and is our own.
            unsafe { core::ptr::copy_nonoverlapping(p.data.as_ptr().cast_const(), buf.as_mut_ptr(), len) };
            self.stats.received += self.write_scratch(len) as u64;
        }
        n
    }

    fn rx_release(&mut self, pkts: &[RxPacket]) {
        self.inner.rx_release(pkts)
    }

    fn tx_reclaimed(&self) -> u64 {
        self.inner.tx_reclaimed()
    }

    fn wait_rx(&mut self, timeout_ns: u64) -> bool {
        self.inner.wait_rx(timeout_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use erpc_dataplane::clock::SimClock;
    use erpc_dataplane::fabric::{Fabric, RxBuf, SimNic};
    use erpc_dataplane::transport::Segment;
    use erpc_dataplane::wire::{ErpcHdr, PktType, HEADROOM, PKT_HDR_LEN};
    use pcap_file::pcap::PcapReader;
    use std::time::Duration;
    use zerocopy::IntoBytes;

    type TestNic = SimNic<'static, 'static, SimClock>;

    fn fabric() -> (TestNic, TestNic) {
        // Leaked: both NICs borrow the fabric, and the fabric each port's receive ring.
        let fab: &'static Fabric<'static, SimClock> = Box::leak(Box::new(Fabric::new(SimClock::new(), 7)));
        let pa = fab.attach(RxBuf::storage(8).leak());
        let pb = fab.attach(RxBuf::storage(8).leak());
        (fab.nic(pa, 0), fab.nic(pb, 0))
    }

    /// A frame from `src` to `dst` with `data` bytes of 0..: headroom, header, data.
    fn frame(src: &EndpointAddr, dst: &EndpointAddr, pkt_type: PktType, data: usize) -> Vec<u8> {
        let mut f = vec![0u8; PKT_HDR_LEN + data];
        let mut hr = [0u8; HEADROOM];
        RoutingInfo::new(src, dst).write(&mut hr, 14 + data);
        f[..HEADROOM].copy_from_slice(&hr);
        f[HEADROOM..PKT_HDR_LEN].copy_from_slice(ErpcHdr::new(1, data as u32, 3, pkt_type, 0, 8).as_bytes());
        for (k, b) in f[PKT_HDR_LEN..].iter_mut().enumerate() {
            *b = k as u8;
        }
        f
    }

    fn seg(b: &[u8]) -> Segment {
        Segment { vaddr: b.as_ptr(), iova: 0, len: b.len() as u32 }
    }

    #[test]
    fn writes_every_frame_sent_and_received_byte_for_byte() {
        let (a, mut b) = fabric();
        let (aa, ba) = (a.local_addr(), b.local_addr());
        let mut a = Capture::new(a, Vec::new()).unwrap();
        // A two-segment packet (header, then data elsewhere), as the dataplane sends packets 1..n.
        let req = frame(&aa, &ba, PktType::Req, 100);
        let (hdr, data) = req.split_at(PKT_HDR_LEN);
        let pkt = TxPacket { segs: [seg(hdr), seg(data)] };
        assert_eq!(a.tx_burst(&[pkt]), 1);
        let mut rx = [RxPacket::EMPTY; 4];
        let n = b.rx_burst(&mut rx);
        assert_eq!(n, 1);
        b.rx_release(&rx[..n]);
        let resp = frame(&ba, &aa, PktType::Resp, 20);
        assert_eq!(b.tx_burst(&[TxPacket { segs: [seg(&resp), Segment::EMPTY] }]), 1);
        let n = a.rx_burst(&mut rx);
        assert_eq!(n, 1);
        a.rx_release(&rx[..n]);
        assert_eq!(a.stats(), CaptureStats { sent: 1, received: 1, truncated: 0 });

        let bytes = a.finish().unwrap();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header().datalink, DataLink::ETHERNET);
        assert_eq!(r.header().ts_resolution, TsResolution::NanoSecond);
        let p1 = r.next_packet().unwrap().unwrap().into_owned();
        assert_eq!(&p1.data[..], &req[..]);
        assert_eq!(p1.orig_len as usize, req.len());
        let p2 = r.next_packet().unwrap().unwrap().into_owned();
        assert_eq!(&p2.data[..], &resp[..]);
        assert!(p2.timestamp >= p1.timestamp && p1.timestamp > Duration::from_secs(1_600_000_000));
        assert!(r.next_packet().is_none());
        // Finished: frames still pass, unrecorded.
        assert_eq!(a.tx_burst(&[pkt]), 1);
        assert_eq!(a.stats().sent, 1);
        assert!(a.finish().is_err());
    }

    /// A stream with room for `.0` more bytes, then "no space left on device".
    #[derive(Debug)]
    struct Limited(usize);

    impl Write for Limited {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.0 < b.len() {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.0 -= b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_error_stops_the_capture_not_the_endpoint() {
        let (a, b) = fabric();
        let e = Capture::new(fabric().0, Limited(0)).err().expect("no room for the file header").to_string();
        assert!(e.contains("No space left on device"), "{e}");
        // The 24-byte file header fits; the first packet does not.
        let (aa, ba) = (a.local_addr(), b.local_addr());
        let mut a = Capture::new(a, Limited(24)).unwrap();
        let f = frame(&aa, &ba, PktType::Req, 10);
        let pkt = TxPacket { segs: [seg(&f), Segment::EMPTY] };
        assert_eq!(a.tx_burst(&[pkt, pkt]), 2, "the inner transport still sends");
        assert_eq!(a.stats().sent, 0);
        let e = a.finish().expect_err("the write error").to_string();
        assert!(e.contains("No space left on device"), "{e}");
    }
}

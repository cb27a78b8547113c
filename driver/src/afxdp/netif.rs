//! What the kernel knows about a network interface and its neighbours, read in the calling
//! thread's network namespace (so a thread that entered a namespace with `setns` sees that
//! namespace's interfaces, unlike `/sys/class/net` of the mount).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// The interface index of `name`, or `None` if it does not exist here.
pub(crate) fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Runs interface ioctl `req` on `name` (with a socket of this namespace) and returns the
/// 40-byte `struct ifreq` (`linux/if.h`: 16 bytes of name, then the 24-byte union) it filled.
fn ifreq(name: &str, req: libc::c_ulong) -> io::Result<[u8; 40]> {
    use std::os::fd::AsRawFd;
    let s = UdpSocket::bind("0.0.0.0:0")?;
    let mut r = [0u8; 40];
    let n = name.len().min(15);
    r[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: the interface ioctls used here read the name and write into the union of a
    // 40-byte `struct ifreq` we own.
    if unsafe { libc::ioctl(s.as_raw_fd(), req, r.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// The interface's MAC address: `SIOCGIFHWADDR` fills a `struct sockaddr` whose `sa_data`
/// (after the 2-byte family) holds it.
pub(crate) fn mac(name: &str) -> io::Result<[u8; 6]> {
    let r = ifreq(name, libc::SIOCGIFHWADDR)?;
    let mut m = [0u8; 6];
    m.copy_from_slice(&r[18..24]);
    Ok(m)
}

/// The interface's MTU (`SIOCGIFMTU`: an int at the start of the union).
pub(crate) fn mtu(name: &str) -> io::Result<usize> {
    let r = ifreq(name, libc::SIOCGIFMTU)?;
    Ok(i32::from_ne_bytes([r[16], r[17], r[18], r[19]]).max(0) as usize)
}

/// The first IPv4 address of the interface.
pub(crate) fn ipv4(name: &str) -> io::Result<Option<Ipv4Addr>> {
    Ok(ipv4s(name)?.first().copied())
}

/// The interface's IPv4 addresses, in the kernel's order.
pub(crate) fn ipv4s(name: &str) -> io::Result<Vec<Ipv4Addr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    if unsafe { libc::getifaddrs(&mut list) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = Vec::new();
    let mut p = list;
    while !p.is_null() {
        // SAFETY: `p` walks the list getifaddrs returned, which stays valid until freed.
        let ifa = unsafe { &*p };
        // SAFETY: `ifa_name` is a NUL-terminated string of the list.
        let n = unsafe { CStr::from_ptr(ifa.ifa_name) };
        if n.to_bytes() == name.as_bytes() && !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null `ifa_addr` points to a sockaddr of its family.
            let fam = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if fam == libc::AF_INET {
                // SAFETY: an AF_INET address is a `sockaddr_in`.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                found.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: frees the list getifaddrs allocated; no references into it remain.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

/// The complete entries of this namespace's neighbour table (`/proc/thread-self/net/arp`) on
/// `ifname`, at most `max` of them.
fn arp_table(ifname: &str, max: usize) -> HashMap<Ipv4Addr, [u8; 6]> {
    let mut out = HashMap::new();
    let Ok(t) = std::fs::read_to_string("/proc/thread-self/net/arp") else { return out };
    for line in t.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // IP address, HW type, Flags, HW address, Mask, Device
        if f.len() < 6 || f[5] != ifname || f[2] == "0x0" {
            continue;
        }
        let (Ok(ip), Some(mac)) = (f[0].parse::<Ipv4Addr>(), parse_mac(f[3])) else { continue };
        if out.len() < max {
            out.insert(ip, mac);
        }
    }
    out
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    for (o, p) in m.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    (m != [0; 6]).then_some(m)
}

/// Makes the kernel resolve `ip` with ARP: one empty UDP datagram to its discard port (9).
fn ask(ip: Ipv4Addr) {
    if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
        let _ = s.send_to(&[], SocketAddrV4::new(ip, 9));
    }
}

/// How long a table read is used for addresses it holds.
const FOUND_FRESH: Duration = Duration::from_secs(5);
/// Least time between two reads of the table: one read serves every address asked for meanwhile.
const MIN_GAP: Duration = Duration::from_millis(1);
/// Least time between two ARP requests for one address.
const ASK_GAP: Duration = Duration::from_millis(10);
/// Most ARP requests per [`ASK_WINDOW`], whatever the addresses.
const ASKS_PER_WINDOW: u32 = 16;
const ASK_WINDOW: Duration = Duration::from_millis(10);
/// Most addresses remembered (table entries, and addresses asked for).
const MAX_ENTRIES: usize = 1024;

/// Peers' MACs from the kernel's neighbour table, so that resolving never waits: an address the
/// table lacks is reported unreachable at once while the kernel asks for it (ARP), and found on
/// a later try (a connect is retried). The table is read whole, at most once per [`MIN_GAP`],
/// and ARP asked at most [`ASKS_PER_WINDOW`] times per [`ASK_WINDOW`] and once per [`ASK_GAP`]
/// for an address, so forged connect requests from made-up addresses cost bounded work and
/// memory.
#[derive(Default)]
pub(crate) struct Neighbours {
    table: HashMap<Ipv4Addr, [u8; 6]>,
    read_at: Option<Instant>,
    asked: HashMap<Ipv4Addr, Instant>,
    window: Option<(Instant, u32)>,
}

impl Neighbours {
    /// `ip`'s MAC on `ifname` if known, without waiting.
    pub(crate) fn mac(&mut self, ip: Ipv4Addr, ifname: &str) -> Option<[u8; 6]> {
        let now = Instant::now();
        let age = self.read_at.map(|t| now.duration_since(t));
        if let (Some(m), Some(a)) = (self.table.get(&ip), age) {
            if a < FOUND_FRESH {
                return Some(*m);
            }
        }
        if age.map_or(true, |a| a >= MIN_GAP) {
            self.table = arp_table(ifname, MAX_ENTRIES);
            self.read_at = Some(now);
            if let Some(m) = self.table.get(&ip) {
                return Some(*m);
            }
        }
        self.ask(ip, now);
        None
    }

    /// Makes the kernel ask for `ip` with ARP, within the limits.
    fn ask(&mut self, ip: Ipv4Addr, now: Instant) {
        if self.asked.get(&ip).is_some_and(|t| now.duration_since(*t) < ASK_GAP) {
            return;
        }
        let (start, n) = match self.window {
            Some((start, n)) if now.duration_since(start) < ASK_WINDOW => (start, n),
            _ => (now, 0),
        };
        if n >= ASKS_PER_WINDOW {
            return;
        }
        self.window = Some((start, n + 1));
        if self.asked.len() >= MAX_ENTRIES {
            self.asked.retain(|_, t| now.duration_since(*t) < ASK_GAP);
            if self.asked.len() >= MAX_ENTRIES {
                self.asked.clear();
            }
        }
        self.asked.insert(ip, now);
        ask(ip);
    }
}

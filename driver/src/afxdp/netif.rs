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

/// The MAC of `ip` in this namespace's neighbour table (`/proc/thread-self/net/arp`), if it is
/// complete there.
fn arp_lookup(ip: Ipv4Addr, ifname: &str) -> Option<[u8; 6]> {
    let t = std::fs::read_to_string("/proc/thread-self/net/arp").ok()?;
    for line in t.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // IP address, HW type, Flags, HW address, Mask, Device
        if f.len() >= 6 && f[0] == ip.to_string() && f[5] == ifname && f[2] != "0x0" {
            let mut m = [0u8; 6];
            let parts: Vec<&str> = f[3].split(':').collect();
            if parts.len() != 6 {
                return None;
            }
            for (o, p) in m.iter_mut().zip(parts) {
                *o = u8::from_str_radix(p, 16).ok()?;
            }
            return (m != [0; 6]).then_some(m);
        }
    }
    None
}

/// Makes the kernel resolve `ip` with ARP: one empty UDP datagram to its discard port (9).
fn ask(ip: Ipv4Addr) {
    if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
        let _ = s.send_to(&[], SocketAddrV4::new(ip, 9));
    }
}

/// How long a MAC read from the kernel's table is used without reading it again.
const FOUND_FRESH: Duration = Duration::from_secs(5);
/// How long an address missing from the table is reported unreachable without looking again.
const MISSING_FRESH: Duration = Duration::from_millis(10);
/// Least time between two reads of the table (a flood of new addresses costs at most this).
const MIN_GAP: Duration = Duration::from_millis(1);
/// Most addresses remembered.
const MAX_ENTRIES: usize = 256;

/// Peers' MACs as the kernel's neighbour table gave them, so that resolving never waits: an
/// address missing from the table is reported unreachable at once while the kernel asks for it
/// (ARP), and found on a later try (a connect is retried). The table is read at most once per
/// [`MIN_GAP`], and an address at most once per [`MISSING_FRESH`] while missing, so forged
/// connect requests from made-up addresses cost bounded work and bounded memory.
#[derive(Default)]
pub(crate) struct Neighbours {
    entries: HashMap<Ipv4Addr, (Option<[u8; 6]>, Instant)>,
    last_read: Option<Instant>,
}

impl Neighbours {
    /// `ip`'s MAC on `ifname` if known, without waiting.
    pub(crate) fn mac(&mut self, ip: Ipv4Addr, ifname: &str) -> Option<[u8; 6]> {
        let now = Instant::now();
        if let Some(&(mac, at)) = self.entries.get(&ip) {
            let fresh = if mac.is_some() { FOUND_FRESH } else { MISSING_FRESH };
            if now.duration_since(at) < fresh {
                return mac;
            }
        }
        if self.last_read.is_some_and(|t| now.duration_since(t) < MIN_GAP) {
            return None;
        }
        self.last_read = Some(now);
        let mac = arp_lookup(ip, ifname);
        if mac.is_none() {
            ask(ip);
        }
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&ip) {
            self.entries.retain(|_, &mut (m, at)| m.is_some() && now.duration_since(at) < FOUND_FRESH);
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
        }
        self.entries.insert(ip, (mac, now));
        mac
    }
}

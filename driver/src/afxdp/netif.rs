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

/// A zeroed 40-byte `struct ifreq` (`linux/if.h`) holding interface name `name` (at most 15
/// bytes, NUL-terminated).
fn named_ifreq(name: &str) -> [u8; 40] {
    let mut r = [0u8; 40];
    let n = name.len().min(15);
    r[..n].copy_from_slice(&name.as_bytes()[..n]);
    r
}

/// Runs interface ioctl `req` on `name` (with a socket of this namespace) and returns the
/// 40-byte `struct ifreq` (`linux/if.h`: 16 bytes of name, then the 24-byte union) it filled.
fn ifreq(name: &str, req: libc::c_ulong) -> io::Result<[u8; 40]> {
    use std::os::fd::AsRawFd;
    let s = UdpSocket::bind("0.0.0.0:0")?;
    let mut r = named_ifreq(name);
    // SAFETY: the interface ioctls used here read the name and write into the union of a
    // 40-byte `struct ifreq` we own.
    if unsafe { libc::ioctl(s.as_raw_fd(), req, r.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Runs ethtool get command `cmd` on `name` through `SIOCETHTOOL` and returns the command's
/// struct as the kernel filled it: `N` must be that struct's size in `linux/ethtool.h` (the
/// callers below give it), and the `struct ifreq` carries a pointer to it.
fn ethtool<const N: usize>(name: &str, cmd: u32) -> io::Result<[u8; N]> {
    use std::os::fd::AsRawFd;
    const { assert!(N >= 4, "an ethtool struct starts with its u32 command") };
    let s = UdpSocket::bind("0.0.0.0:0")?;
    let mut data = [0u8; N];
    data[..4].copy_from_slice(&cmd.to_ne_bytes());
    let mut r = named_ifreq(name);
    let p = (data.as_mut_ptr() as usize).to_ne_bytes();
    r[16..16 + p.len()].copy_from_slice(&p);
    // SAFETY: the ethtool get commands used here write their struct, `N` bytes, through the
    // pointer in the `struct ifreq` we own, into `data`, which outlives the call.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCETHTOOL, r.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

/// The name of the interface's driver (`veth`, `igb`, `mlx5_core`, ...): `ETHTOOL_GDRVINFO`
/// (command 3) fills `struct ethtool_drvinfo` (`linux/ethtool.h`, 196 bytes), whose `driver`
/// field is the 32 bytes after the command.
pub(crate) fn driver(name: &str) -> io::Result<String> {
    let d = ethtool::<196>(name, 3)?;
    let field = &d[4..36];
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    Ok(String::from_utf8_lossy(&field[..end]).into_owned())
}

/// The receive queues the interface uses: `ETHTOOL_GCHANNELS` (command 0x3c) fills `struct
/// ethtool_channels` (`linux/ethtool.h`: nine `u32`s: cmd, max_rx, max_tx, max_other,
/// max_combined, rx_count, tx_count, other_count, combined_count). Drivers with combined
/// queues report them as `combined_count`; the larger of the two counts is the answer.
pub(crate) fn rx_queues(name: &str) -> io::Result<u32> {
    let d = ethtool::<36>(name, 0x3c)?;
    let word = |i: usize| u32::from_ne_bytes([d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3]]);
    Ok(word(5).max(word(8)))
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
    Ok(ipv4_nets(name)?.first().map(|n| n.0))
}

/// The interface's IPv4 addresses and their netmasks, in the kernel's order, labelled ones
/// (`eth1:0`) included.
pub(crate) fn ipv4_nets(name: &str) -> io::Result<Vec<(Ipv4Addr, Ipv4Addr)>> {
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
        let n = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_bytes();
        // glibc names an address by its label, which is the interface's name or `name:...`.
        let ours = n == name.as_bytes() || (n.starts_with(name.as_bytes()) && n.get(name.len()) == Some(&b':'));
        if ours && !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null `ifa_addr` points to a sockaddr of its family.
            let fam = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if fam == libc::AF_INET {
                // SAFETY: an AF_INET address is a `sockaddr_in`.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let mask = if ifa.ifa_netmask.is_null() {
                    Ipv4Addr::BROADCAST
                } else {
                    // SAFETY: the netmask of an AF_INET address is a `sockaddr_in` too.
                    let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
                    Ipv4Addr::from(u32::from_be(m.sin_addr.s_addr))
                };
                found.push((Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)), mask));
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: frees the list getifaddrs allocated; no references into it remain.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

/// Whether `ip` is an address of this host (in the calling thread's network namespace): the
/// kernel lets a socket bind to it.
pub(crate) fn is_local(ip: Ipv4Addr) -> bool {
    !ip.is_unspecified() && UdpSocket::bind(SocketAddrV4::new(ip, 0)).is_ok()
}

/// Whether ARP may be asked for `ip` on an interface with addresses `nets`: a unicast address on
/// one of its subnets, not one of its own, not a subnet's network or broadcast address.
pub(crate) fn on_link(ip: Ipv4Addr, nets: &[(Ipv4Addr, Ipv4Addr)]) -> bool {
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
        return false;
    }
    let x = u32::from(ip);
    nets.iter().any(|&(a, m)| {
        let (a, m) = (u32::from(a), u32::from(m));
        let host = x & !m;
        x != a && x & m == a & m && (m >= 0xFFFF_FFFE || (host != 0 && host != !m))
    })
}

/// The complete entries of this namespace's neighbour table (`/proc/thread-self/net/arp`) on
/// `ifname`: at most `max` of them, `want`'s always; `None` if the table cannot be read.
fn arp_table(ifname: &str, want: Ipv4Addr, max: usize) -> Option<HashMap<Ipv4Addr, [u8; 6]>> {
    let mut out = HashMap::new();
    let t = std::fs::read_to_string("/proc/thread-self/net/arp").ok()?;
    for line in t.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // IP address, HW type, Flags, HW address, Mask, Device
        if f.len() < 6 || f[5] != ifname || f[2] == "0x0" {
            continue;
        }
        let (Ok(ip), Some(mac)) = (f[0].parse::<Ipv4Addr>(), parse_mac(f[3])) else { continue };
        if out.len() < max || ip == want {
            out.insert(ip, mac);
        }
    }
    Some(out)
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
/// Most ARP requests per [`ASK_WINDOW`], whatever the addresses: a flood of forged addresses
/// on the subnet leaves at most a few hundred incomplete entries in the kernel's table (each
/// lives about 3 s), well below its default limit of 1024.
const ASKS_PER_WINDOW: u32 = 4;
const ASK_WINDOW: Duration = Duration::from_millis(10);
/// Most addresses remembered (table entries, and addresses asked for).
const MAX_ENTRIES: usize = 1024;

/// Peers' MACs from the kernel's neighbour table, so that resolving never waits: an address the
/// table lacks is reported unreachable at once while the kernel asks for it (ARP), and found on
/// a later try (a connect is retried). The table is read whole, at most once per [`MIN_GAP`];
/// ARP is asked only for addresses on the interface's subnets ([`on_link`]), at most
/// [`ASKS_PER_WINDOW`] times per [`ASK_WINDOW`] and once per [`ASK_GAP`] for an address, so
/// forged connect requests from made-up addresses cost bounded work and memory and send nothing
/// off the subnet.
#[derive(Default)]
pub(crate) struct Neighbours {
    /// The interface's addresses and netmasks.
    nets: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Reads of the table that failed (it is kept as it was).
    pub(crate) read_failures: u64,
    table: HashMap<Ipv4Addr, [u8; 6]>,
    read_at: Option<Instant>,
    asked: HashMap<Ipv4Addr, Instant>,
    window: Option<(Instant, u32)>,
}

impl Neighbours {
    /// For an interface with addresses and netmasks `nets` (ARP is asked only on these subnets).
    pub(crate) fn new(nets: Vec<(Ipv4Addr, Ipv4Addr)>) -> Neighbours {
        Neighbours { nets, ..Default::default() }
    }

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
            self.read_at = Some(now);
            match arp_table(ifname, ip, MAX_ENTRIES) {
                Some(t) => self.table = t,
                None => {
                    if self.read_failures == 0 {
                        log::warn!("cannot read /proc/thread-self/net/arp: peers' MACs must be given");
                    }
                    self.read_failures += 1;
                }
            }
            if let Some(m) = self.table.get(&ip) {
                return Some(*m);
            }
        }
        if on_link(ip, &self.nets) {
            self.ask(ip, now);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_is_asked_only_for_unicast_neighbours_on_the_subnets() {
        let nets = [(Ipv4Addr::new(10, 211, 0, 1), Ipv4Addr::new(255, 255, 255, 0))];
        assert!(on_link(Ipv4Addr::new(10, 211, 0, 2), &nets));
        assert!(on_link(Ipv4Addr::new(10, 211, 0, 254), &nets));
        for no in [
            Ipv4Addr::new(10, 211, 0, 1),   // ourselves
            Ipv4Addr::new(10, 211, 0, 0),   // the network
            Ipv4Addr::new(10, 211, 0, 255), // its broadcast
            Ipv4Addr::new(10, 211, 1, 2),   // another subnet
            Ipv4Addr::new(8, 8, 8, 8),
            Ipv4Addr::new(224, 0, 0, 1),
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::BROADCAST,
            Ipv4Addr::UNSPECIFIED,
        ] {
            assert!(!on_link(no, &nets), "{no}");
        }
        // A point-to-point /31 has no network or broadcast address.
        let p2p = [(Ipv4Addr::new(192, 0, 2, 0), Ipv4Addr::new(255, 255, 255, 254))];
        assert!(on_link(Ipv4Addr::new(192, 0, 2, 1), &p2p));
        assert!(!on_link(Ipv4Addr::new(10, 0, 0, 1), &[]), "no addresses, no subnet");
    }
}

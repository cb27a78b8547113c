//! Two network namespaces joined by a veth pair: a two-machine network on one host, for the
//! AF_XDP and UDP tests and for `erpc bench --transport afxdp`; and [`Lan`], several namespaces
//! on one bridged segment, for `erpc kv` over AF_XDP (a replica per machine).
//!
//! Built with iproute2 (`ip netns`, `ip link`, `ip addr`) and deleted on drop, which also
//! deletes the veth pairs and the bridge. Namespaces are named `erpc-<pid>-<n>`; creating a pair first deletes
//! those left behind by processes that no longer exist (killed before their drop ran), so
//! nothing accumulates. A thread joins a namespace with [`enter`] (`setns(2)` moves only the
//! calling thread).

use anyhow::{anyhow, bail, Context};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// One end of the pair.
#[derive(Clone, Debug)]
pub struct End {
    pub netns: String,
    pub interface: String,
    pub ipv4: Ipv4Addr,
}

/// Two namespaces, `a` and `b`, joined by a veth pair with 10.211.0.1/24 and 10.211.0.2/24.
#[derive(Debug)]
pub struct VethPair {
    pub a: End,
    pub b: End,
}

const PREFIX: &str = "erpc-";

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("the `ip` command is missing: install iproute2 (apt-get install iproute2)")
        } else {
            anyhow!(e).context("running ip")
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let hint = if err.contains("Operation not permitted") || err.contains("Permission denied") {
            " (network namespaces need root)"
        } else {
            ""
        };
        bail!("`ip {}` failed: {err}{hint}", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Our namespaces whose creating process is gone.
fn stale_namespaces() -> Vec<String> {
    let Ok(list) = ip(&["netns", "list"]) else { return Vec::new() };
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .filter(|n| {
            let pid = n[PREFIX.len()..].split('-').next().and_then(|p| p.parse::<u32>().ok());
            pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        })
        .map(str::to_string)
        .collect()
}

/// A number for this process's next namespaces, after deleting those of dead processes.
fn next_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    for n in stale_namespaces() {
        let _ = ip(&["netns", "del", &n]);
    }
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl VethPair {
    /// Creates the namespaces and the pair, addresses it and brings it up.
    pub fn create() -> anyhow::Result<VethPair> {
        VethPair::with_queues(1)
    }

    /// The same with `queues` receive and transmit queues on each end (veth hands a frame sent
    /// on transmit queue *k* of one end to receive queue *k* of the other).
    pub fn with_queues(queues: u32) -> anyhow::Result<VethPair> {
        let (pid, k) = (std::process::id(), next_id());
        let mk = |side: &str, host: u8| End {
            netns: format!("{PREFIX}{pid}-{k}{side}"),
            interface: format!("erpc-{side}"),
            ipv4: Ipv4Addr::new(10, 211, 0, host),
        };
        let pair = VethPair { a: mk("a", 1), b: mk("b", 2) };
        // From here on, drop deletes whatever was created.
        ip(&["netns", "add", &pair.a.netns])?;
        ip(&["netns", "add", &pair.b.netns])?;
        let q = queues.to_string();
        let qs: &[&str] = if queues > 1 { &["numtxqueues", &q, "numrxqueues", &q] } else { &[] };
        let mut args = vec!["link", "add", "name", &pair.a.interface, "netns", &pair.a.netns];
        args.extend_from_slice(qs);
        args.extend_from_slice(&["type", "veth", "peer", "name", &pair.b.interface, "netns", &pair.b.netns]);
        args.extend_from_slice(qs);
        ip(&args)?;
        for e in [&pair.a, &pair.b] {
            let cidr = format!("{}/24", e.ipv4);
            ip(&["-n", &e.netns, "addr", "add", &cidr, "dev", &e.interface])?;
            ip(&["-n", &e.netns, "link", "set", "dev", &e.interface, "up"])?;
            ip(&["-n", &e.netns, "link", "set", "dev", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// Whether an XDP program is attached to `end`'s interface (`ip -d link` shows it).
    pub fn xdp_attached(end: &End) -> anyhow::Result<bool> {
        let out = ip(&["-n", &end.netns, "-d", "link", "show", "dev", &end.interface])?;
        Ok(out.contains("prog/xdp") || out.contains(" xdp"))
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for e in [&self.a, &self.b] {
            let _ = ip(&["netns", "del", &e.netns]);
        }
    }
}

/// `n` namespaces on one Ethernet segment, as `n` machines on a switch: in each, interface
/// `erpc-lan` with 10.212.0.*k*/24 (*k* = 1..=n), whose veth peer is a port of a bridge in a
/// further (hub) namespace.
#[derive(Debug)]
pub struct Lan {
    pub hub: String,
    pub ends: Vec<End>,
}

impl Lan {
    /// Creates the namespaces, the bridge and the pairs, addresses them and brings them up.
    pub fn create(n: usize) -> anyhow::Result<Lan> {
        if n == 0 || n > 250 {
            bail!("a LAN has 1 to 250 namespaces, not {n}");
        }
        let (pid, k) = (std::process::id(), next_id());
        let mut lan = Lan { hub: format!("{PREFIX}{pid}-{k}hub"), ends: Vec::new() };
        // From here on, drop deletes whatever was created.
        ip(&["netns", "add", &lan.hub])?;
        ip(&["-n", &lan.hub, "link", "add", "name", "br0", "type", "bridge"])?;
        ip(&["-n", &lan.hub, "link", "set", "dev", "br0", "up"])?;
        for i in 0..n {
            let e = End {
                netns: format!("{PREFIX}{pid}-{k}m{i}"),
                interface: "erpc-lan".into(),
                ipv4: Ipv4Addr::new(10, 212, 0, i as u8 + 1),
            };
            ip(&["netns", "add", &e.netns])?;
            lan.ends.push(e.clone());
            let port = format!("p{i}");
            ip(&[
                "link",
                "add",
                "name",
                &e.interface,
                "netns",
                &e.netns,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &lan.hub,
            ])?;
            ip(&["-n", &lan.hub, "link", "set", "dev", &port, "master", "br0", "up"])?;
            ip(&["-n", &e.netns, "addr", "add", &format!("{}/24", e.ipv4), "dev", &e.interface])?;
            ip(&["-n", &e.netns, "link", "set", "dev", &e.interface, "up"])?;
            ip(&["-n", &e.netns, "link", "set", "dev", "lo", "up"])?;
        }
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for e in &self.ends {
            let _ = ip(&["netns", "del", &e.netns]);
        }
        let _ = ip(&["netns", "del", &self.hub]);
    }
}

/// Moves the calling thread into network namespace `netns` (as `ip netns` names it).
pub fn enter(netns: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{netns}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a namespace file we hold open; it changes only this thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        bail!("entering network namespace {netns}: {}: run as root", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a namespace of that name exists.
pub fn exists(netns: &str) -> bool {
    std::path::Path::new(&format!("/run/netns/{netns}")).exists()
}

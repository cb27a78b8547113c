//! `erpc bench --transport mlx5`: eRPC over a ConnectX NIC driven from userspace through VFIO.
//!
//! One end per machine: `--server IP:PORT --pci BDF` serves and prints its MAC;
//! `--connect IP:PORT --peer-mac MAC --bind IP:PORT --pci BDF` measures against it. The NIC
//! must be bound to vfio-pci (`erpc nic bind BDF`), with the IOMMU on and 2 MiB hugepages
//! reserved; each missing piece is reported with what to do.

use super::{run_client, BenchArgs, Report};
use crate::endpoints::{memory_in, region_bytes, serve_until, server};
use anyhow::{bail, Context};
use erpc_dataplane::transport::EndpointAddr;
use erpc_driver::mlx5::{Mlx5Config, Mlx5Nic};
use erpc_driver::vfio::open_container;
use erpc_hugepages::{DmaSpace, PageSize};
use std::net::SocketAddrV4;

/// Parses `aa:bb:cc:dd:ee:ff`.
pub(crate) fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let bad = || anyhow::anyhow!("--peer-mac {s}: write it as aa:bb:cc:dd:ee:ff");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub(crate) fn run(a: &BenchArgs, req: usize, conc: usize) -> anyhow::Result<Report> {
    let bdf = a.pci.clone().context("--transport mlx5 needs --pci BDF (the ConnectX function, bound to vfio-pci)")?;
    let (me, peer) = match (a.server, a.connect) {
        (Some(s), None) => (s, None),
        (None, Some(to)) => {
            let bind = a.bind.context("--transport mlx5 with --connect needs --bind IP:PORT (this end's address)")?;
            let mac = parse_mac(a.peer_mac.as_deref().context("--connect needs --peer-mac (printed by the server)")?)?;
            (bind, Some(EndpointAddr { mac, ipv4: to.ip().octets(), udp_port: to.port() }))
        }
        _ => bail!(
            "--transport mlx5 runs one end per machine: --server IP:PORT on one, --connect IP:PORT --peer-mac MAC \
             --bind IP:PORT on the other"
        ),
    };
    let container = open_container()?;
    let space = DmaSpace::vfio(container.clone());
    let cfg = Mlx5Config { ipv4: me.ip().octets(), udp_port: me.port(), ..Default::default() };
    let nic = Mlx5Nic::open(&container, &space, &bdf, cfg).with_context(|| format!("opening {bdf}"))?;
    let bytes = region_bytes(req, a.resp_size, conc, 1400);
    let mem = space.alloc(bytes, PageSize::Huge2M).context("allocating the endpoint's DMA memory")?;
    // Leaked: msgbufs carry no lifetime and may outlive their endpoint (see `DmaRegion`).
    let mem = Box::leak(Box::new(mem));
    // SAFETY: leaked, so it outlives the endpoint; the device only reads it.
    let mem = memory_in(unsafe { mem.dataplane_region() });
    let cfg = a.rpc_config();
    match peer {
        None => {
            let mac = erpc_dataplane::Transport::local_addr(&nic).mac;
            let mut srv = server(nic, a.resp_size, mem, cfg)?;
            eprintln!(
                "erpc bench: serving on mlx5 {bdf} {me}, MAC {} (clients: --connect {me} --peer-mac {}) (Ctrl-C to stop)",
                mac_str(mac),
                mac_str(mac)
            );
            serve_until(&mut srv, None);
            unreachable!("the server runs until killed");
        }
        Some(to) => {
            let what = format!("mlx5 {}", SocketAddrV4::new(to.ipv4.into(), to.udp_port));
            let (r, cli) = run_client(nic, mem, cfg, a, to, &what, req, conc)?;
            let s = cli.transport().stats();
            if s.tx_flush_timeouts + s.rx_error_cqes + s.tx_error_cqes > 0 {
                eprintln!(
                    "erpc bench: mlx5: {} TX flush timeouts, {} RX and {} TX error completions",
                    s.tx_flush_timeouts, s.rx_error_cqes, s.tx_error_cqes
                );
            }
            Ok(r)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn macs_parse_and_bad_ones_say_how_to_write_them() {
        assert_eq!(super::parse_mac("02:00:0a:0b:0c:ff").unwrap(), [2, 0, 0xa, 0xb, 0xc, 0xff]);
        assert!(super::parse_mac("02:00:0a").unwrap_err().to_string().contains("aa:bb:cc:dd:ee:ff"));
        assert!(super::parse_mac("zz:00:0a:0b:0c:ff").is_err());
    }
}

//! `erpc bench --transport mlx5`: eRPC over a ConnectX NIC driven from userspace through VFIO.
//!
//! One end per machine: `--server IP:PORT --pci BDF` serves and prints its MAC;
//! `--connect IP:PORT --peer-mac MAC --bind IP:PORT --pci BDF` measures against it. The NIC
//! must be bound to vfio-pci (`erpc nic bind BDF`), with the IOMMU on and 2 MiB hugepages
//! reserved; each missing piece is reported with what to do.

use super::{run_client, BenchArgs, Report};
use crate::endpoints::{mac_text, memory_in, mlx5, parse_mac, region_bytes, serve_until, server};
use anyhow::{bail, Context};
use erpc_dataplane::transport::EndpointAddr;
use std::net::SocketAddrV4;

pub(crate) fn run(a: &BenchArgs, req: usize, conc: usize) -> anyhow::Result<Report> {
    let bdf = a.pci.clone().context("--transport mlx5 needs --pci BDF (the ConnectX function, bound to vfio-pci)")?;
    let (me, peer) = match (a.server, a.connect) {
        (Some(s), None) => (s, None),
        (None, Some(to)) => {
            let bind = a.bind.context("--transport mlx5 with --connect needs --bind IP:PORT (this end's address)")?;
            let mac = parse_mac(a.peer_mac.as_deref().context("--connect needs --peer-mac (printed by the server)")?)
                .context("--peer-mac")?;
            (bind, Some(EndpointAddr { mac, ipv4: to.ip().octets(), udp_port: to.port() }))
        }
        _ => bail!(
            "--transport mlx5 runs one end per machine: --server IP:PORT on one, --connect IP:PORT --peer-mac MAC \
             --bind IP:PORT on the other"
        ),
    };
    let (nic, region) = mlx5(&bdf, me, region_bytes(req, a.resp_size, conc, 1400))?;
    let mem = memory_in(region);
    let cfg = a.rpc_config();
    match peer {
        None => {
            let mac = erpc_dataplane::Transport::local_addr(&nic).mac;
            let mut srv = server(nic, a.resp_size, mem, cfg)?;
            eprintln!(
                "erpc bench: serving on mlx5 {bdf} {me}, MAC {} (clients: --connect {me} --peer-mac {}) (Ctrl-C to stop)",
                mac_text(mac),
                mac_text(mac)
            );
            serve_until(&mut srv, None);
            unreachable!("the server runs until killed");
        }
        Some(to) => {
            let what = format!("mlx5 {}", SocketAddrV4::from(to));
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

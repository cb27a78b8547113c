//! `erpc nic`: list the PCI network devices, hand one to `vfio-pci` for a userspace driver, and
//! give it back. The sysfs work is in [`erpc_driver::pci`].

use anyhow::Context;
use clap::{Args, Subcommand};
use erpc_driver::pci::{Bdf, BindOutcome, PciDevice, Sysfs, UnbindOutcome, ID_UNKNOWN, VFIO_PCI};
use serde_json::{json, Value};
use std::io::{self, Write};

#[derive(Args, Debug)]
pub struct NicArgs {
    #[command(subcommand)]
    pub cmd: NicCmd,
}

#[derive(Subcommand, Debug, Clone)]
pub enum NicCmd {
    /// PCI network devices: address, ids, driver, IOMMU group, NUMA node, support by erpc.
    List {
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Bind a network device to vfio-pci, recording its driver for `erpc nic unbind`.
    Bind {
        /// PCI address: 0000:03:00.0, or 03:00.0 for domain 0.
        bdf: Bdf,
    },
    /// Take a device from vfio-pci and give it back to the driver it had before `erpc nic bind`.
    Unbind {
        /// PCI address: 0000:03:00.0, or 03:00.0 for domain 0.
        bdf: Bdf,
    },
}

/// Runs `erpc nic` on this machine's sysfs, printing to stdout.
pub fn run(a: NicArgs) -> anyhow::Result<()> {
    run_with(&Sysfs::new(), &a.cmd, &mut io::stdout().lock())
}

/// Runs an `erpc nic` command on `sys`, printing to `out`.
pub fn run_with(sys: &Sysfs, cmd: &NicCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        NicCmd::List { json } => list(sys, *json, out),
        NicCmd::Bind { bdf } => bind(sys, bdf, out),
        NicCmd::Unbind { bdf } => unbind(sys, bdf, out),
    }
}

/// The list as JSON: one object per network device.
pub fn list_json(sys: &Sysfs) -> anyhow::Result<Value> {
    let devs = sys.network_devices()?;
    Ok(Value::Array(devs.iter().map(|d| device_json(sys, d)).collect()))
}

fn device_json(sys: &Sysfs, d: &PciDevice) -> Value {
    let id = |v: u16| (v != ID_UNKNOWN).then(|| format!("{v:#06x}"));
    json!({
        "bdf": d.bdf.to_string(),
        "vendor": id(d.vendor),
        "device": id(d.device),
        "class": format!("{:#08x}", d.class),
        "driver": d.driver,
        "previous_driver": previous_driver(sys, d),
        "iommu_group": d.iommu_group,
        "numa_node": d.numa_node,
        "family": d.family.map(|f| f.name()),
        "model": d.model(),
        "supported": d.family.is_some_and(|f| f.has_driver()),
    })
}

/// The driver `erpc nic bind` recorded for a device it bound to vfio-pci.
fn previous_driver(sys: &Sysfs, d: &PciDevice) -> Option<String> {
    if !d.is_vfio() {
        return None;
    }
    sys.recorded_driver(&d.bdf).map(|p| p.unwrap_or_else(|| "none".to_string()))
}

fn list(sys: &Sysfs, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if json {
        let v = list_json(sys)?;
        return writeln!(out, "{v}").context("writing the output");
    }
    let devs = sys.network_devices()?;
    let dash = || "-".to_string();
    let hex = |v: u16| if v == ID_UNKNOWN { "????".to_string() } else { format!("{v:04x}") };
    let mut rows = vec![["BDF", "ID", "DRIVER", "IOMMU", "NUMA", "ERPC SUPPORT"].map(str::to_string)];
    for d in &devs {
        let driver = match (&d.driver, previous_driver(sys, d)) {
            (Some(drv), Some(prev)) => format!("{drv} (was {prev})"),
            (Some(drv), None) => drv.clone(),
            (None, _) => dash(),
        };
        let support = match d.family {
            Some(f) => format!("{}: {} ({})", f, d.model().unwrap_or("?"), f.driver_status()),
            None => "no driver in erpc".to_string(),
        };
        rows.push([
            d.bdf.to_string(),
            format!("{}:{}", hex(d.vendor), hex(d.device)),
            driver,
            d.iommu_group.map_or_else(dash, |g| g.to_string()),
            d.numa_node.map_or_else(dash, |n| n.to_string()),
            support,
        ]);
    }
    let mut width = [0; 6];
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                line += &format!("{c:<w$}  ", w = width[i]);
            } else {
                line += c;
            }
        }
        writeln!(out, "{}", line.trim_end()).context("writing the output")?;
    }
    if devs.is_empty() {
        writeln!(out, "no PCI network devices found").context("writing the output")?;
    }
    Ok(())
}

fn bind(sys: &Sysfs, bdf: &Bdf, out: &mut dyn Write) -> anyhow::Result<()> {
    match sys.bind_vfio(bdf)? {
        BindOutcome::AlreadyBound { iommu_group } => {
            let group = iommu_group.map_or_else(String::new, |g| format!(" (IOMMU group {g})"));
            writeln!(out, "{bdf} is already bound to {VFIO_PCI}{group}; nothing to do").context("writing the output")
        }
        BindOutcome::Bound { previous_driver, iommu_group } => {
            writeln!(
                out,
                "{bdf}: bound to {VFIO_PCI} (was {}); VFIO group {}",
                previous_driver.as_deref().unwrap_or("unbound"),
                sys.vfio_group_path(iommu_group).display()
            )
            .context("writing the output")?;
            for other in sys.iommu_group_devices(iommu_group) {
                if other == *bdf {
                    continue;
                }
                let driver = sys.device(&other).ok().and_then(|d| d.driver);
                if let Some(drv) = driver.filter(|d| !matches!(d.as_str(), VFIO_PCI | "pci-stub" | "pcieport")) {
                    writeln!(
                        out,
                        "note: IOMMU group {iommu_group} also holds {other} (bound to {drv}); VFIO can open the \
                         group only when every device in it is bound to {VFIO_PCI} or has no driver"
                    )
                    .context("writing the output")?;
                }
            }
            Ok(())
        }
    }
}

fn unbind(sys: &Sysfs, bdf: &Bdf, out: &mut dyn Write) -> anyhow::Result<()> {
    let msg = match sys.unbind_vfio(bdf)? {
        UnbindOutcome::NotBound { driver } => {
            format!("{bdf} is not bound to {VFIO_PCI} (driver: {}); nothing to do", driver.as_deref().unwrap_or("none"))
        }
        UnbindOutcome::Released { driver: Some(d), from_record: true } => {
            format!("{bdf}: released from {VFIO_PCI}, bound to {d} again")
        }
        UnbindOutcome::Released { driver: None, from_record: true } => {
            format!("{bdf}: released from {VFIO_PCI}; left without a driver, as before `erpc nic bind`")
        }
        UnbindOutcome::Released { driver, from_record: false } => format!(
            "{bdf}: released from {VFIO_PCI}; no record of its previous driver, the kernel chose: {}",
            driver.as_deref().unwrap_or("none")
        ),
    };
    writeln!(out, "{msg}").context("writing the output")
}

//! `erpc nic` and `erpc_driver::pci` on a fake sysfs tree in a temporary directory, with a fake
//! kernel (a write hook) that reacts to `unbind`, `bind` and `drivers_probe` the way Linux does;
//! and `erpc nic list` on this machine.

use erpc_driver::pci::*;
use erpc_tools::nic::{list_json, run_with, NicCmd};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ----- the fake tree -----

struct Tree {
    root: PathBuf,
    kernel: Arc<Mutex<Kernel>>,
}

/// The fake kernel's state: every write seen, and knobs for failures.
#[derive(Default)]
struct Kernel {
    /// (path relative to the root, value) for each write, in order.
    writes: Vec<(String, String)>,
    /// The driver `drivers_probe` binds when there is no `driver_override`.
    default_driver: Option<String>,
    /// vfio-pci refuses to probe.
    vfio_probe_fails: bool,
    /// vfio-pci does not create `/dev/vfio/<group>`.
    no_group_dev: bool,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn bdf(s: &str) -> Bdf {
    Bdf::parse(s).unwrap()
}

/// Binds `dev` (the device's directory) to `driver` as the kernel shows it: a `driver` symlink.
fn link_driver(dev: &Path, driver: &str) {
    symlink(format!("../../../bus/pci/drivers/{driver}"), dev.join("driver")).unwrap();
}

impl Tree {
    fn new(name: &str) -> Tree {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("erpc-nic-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        fs::create_dir_all(root.join("sys/devices/pci0000:00")).unwrap();
        fs::create_dir_all(root.join("sys/kernel/iommu_groups")).unwrap();
        fs::create_dir_all(root.join("dev/vfio")).unwrap();
        write(&root.join("sys/bus/pci/drivers_probe"), "");
        let kernel = Arc::new(Mutex::new(Kernel { default_driver: Some("igb".into()), ..Kernel::default() }));
        let t = Tree { root, kernel };
        t.add_driver(VFIO_PCI);
        t
    }

    /// The sysfs view with the fake kernel attached.
    fn sysfs(&self) -> Sysfs {
        let root = self.root.clone();
        let kernel = self.kernel.clone();
        Sysfs::at(&self.root)
            .with_settle_timeout(Duration::from_millis(50))
            .with_write_hook(move |path, value| react(&root, &mut kernel.lock().unwrap(), path, value))
    }

    fn add_driver(&self, name: &str) {
        let d = self.root.join("sys/bus/pci/drivers").join(name);
        write(&d.join("bind"), "");
        write(&d.join("unbind"), "");
    }

    fn remove_driver(&self, name: &str) {
        fs::remove_dir_all(self.root.join("sys/bus/pci/drivers").join(name)).unwrap();
    }

    /// The device's real directory (`sys/bus/pci/devices/<bdf>` links to it).
    fn dev_dir(&self, bdf: &str) -> PathBuf {
        self.root.join("sys/devices/pci0000:00").join(bdf)
    }

    /// Adds a device as Linux shows it: ids, class, NUMA node, `driver_override` unset, the
    /// `driver` and `iommu_group` links, and the group's `devices` entry and `/dev/vfio` node.
    fn add_device(&self, bdf: &str, vendor: u16, device: u16, class: u32, driver: Option<&str>, group: Option<u32>) {
        let d = self.dev_dir(bdf);
        write(&d.join("vendor"), &format!("{vendor:#06x}\n"));
        write(&d.join("device"), &format!("{device:#06x}\n"));
        write(&d.join("class"), &format!("{class:#08x}\n"));
        write(&d.join("numa_node"), "-1\n");
        write(&d.join("driver_override"), "(null)\n");
        symlink(format!("../../../devices/pci0000:00/{bdf}"), self.root.join("sys/bus/pci/devices").join(bdf)).unwrap();
        if let Some(drv) = driver {
            if !self.root.join("sys/bus/pci/drivers").join(drv).exists() {
                self.add_driver(drv);
            }
            link_driver(&d, drv);
        }
        if let Some(g) = group {
            let gd = self.root.join("sys/kernel/iommu_groups").join(g.to_string()).join("devices");
            fs::create_dir_all(&gd).unwrap();
            symlink(format!("../../../../devices/pci0000:00/{bdf}"), gd.join(bdf)).unwrap();
            symlink(format!("../../../kernel/iommu_groups/{g}"), d.join("iommu_group")).unwrap();
            if driver == Some(VFIO_PCI) {
                write(&self.root.join("dev/vfio").join(g.to_string()), "");
            }
        }
    }

    fn add_igb(&self, bdf: &str, group: Option<u32>) {
        self.add_device(bdf, 0x8086, 0x10c9, 0x020000, Some("igb"), group);
    }

    fn driver_of(&self, bdf: &str) -> Option<String> {
        fs::read_link(self.dev_dir(bdf).join("driver")).ok().map(|p| p.file_name().unwrap().to_str().unwrap().into())
    }

    fn writes(&self) -> Vec<(String, String)> {
        std::mem::take(&mut self.kernel.lock().unwrap().writes)
    }
}

/// The fake kernel: what Linux does on writes to `unbind`, `bind` and `drivers_probe`.
fn react(root: &Path, k: &mut Kernel, path: &Path, value: &str) {
    let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_string();
    k.writes.push((rel.clone(), value.to_string()));
    let devs = root.join("sys/bus/pci/devices");
    let override_of = |dev: &Path| {
        let s = fs::read_to_string(dev.join("driver_override")).unwrap_or_default();
        let s = s.trim();
        (!s.is_empty() && s != "(null)").then(|| s.to_string())
    };
    let attach = |k: &Kernel, dev: &Path, drv: &str| {
        if dev.join("driver").symlink_metadata().is_ok() || !root.join("sys/bus/pci/drivers").join(drv).is_dir() {
            return;
        }
        if override_of(dev).is_some_and(|o| o != drv) || (drv == VFIO_PCI && k.vfio_probe_fails) {
            return;
        }
        link_driver(&fs::canonicalize(dev).unwrap(), drv);
        if drv == VFIO_PCI && !k.no_group_dev {
            if let Ok(g) = fs::read_link(dev.join("iommu_group")) {
                write(&root.join("dev/vfio").join(g.file_name().unwrap()), "");
            }
        }
    };
    if rel == "sys/bus/pci/drivers_probe" {
        let dev = devs.join(value);
        if let Some(drv) = override_of(&dev).or_else(|| k.default_driver.clone()) {
            attach(k, &dev, &drv);
        }
    } else if let Some(drv) = rel.strip_prefix("sys/bus/pci/drivers/").and_then(|r| r.strip_suffix("/bind")) {
        attach(k, &devs.join(value), drv);
    } else if rel.ends_with("/driver/unbind") {
        let link = path.parent().unwrap();
        assert!(rel.starts_with(&format!("sys/bus/pci/devices/{value}/")), "unbind of {value} written to {rel}");
        fs::remove_file(link).unwrap();
    }
}

fn w(path: &str, value: &str) -> (String, String) {
    (path.to_string(), value.to_string())
}

// ----- listing -----

#[test]
fn list_shows_network_devices_with_their_fields() {
    let t = Tree::new("list");
    t.add_igb("0000:03:00.0", Some(12));
    write(&t.dev_dir("0000:03:00.0").join("numa_node"), "1\n");
    t.add_device("0000:04:00.0", 0x15b3, 0x1017, 0x020000, Some("mlx5_core"), None);
    t.add_device("0000:05:00.0", 0x8086, 0x10fb, 0x020000, None, Some(3));
    t.add_device("0000:00:03.0", 0x1af4, 0x1041, 0x020000, Some("virtio-pci"), None);
    t.add_device("0000:00:00.0", 0x8086, 0x29c0, 0x060000, None, None); // host bridge
    t.add_device("0000:00:1f.2", 0x8086, 0x2922, 0x010601, Some("ahci"), Some(4)); // SATA
    t.add_device("0000:00:02.0", 0x8086, 0x10c9, 0x030000, None, None); // an igb id, but a display class
    let sys = t.sysfs();

    let devs = sys.network_devices().unwrap();
    let bdfs: Vec<String> = devs.iter().map(|d| d.bdf.to_string()).collect();
    assert_eq!(bdfs, ["0000:00:03.0", "0000:03:00.0", "0000:04:00.0", "0000:05:00.0"]);
    assert_eq!(
        devs[1],
        PciDevice {
            bdf: bdf("0000:03:00.0"),
            vendor: 0x8086,
            device: 0x10c9,
            class: 0x020000,
            driver: Some("igb".into()),
            iommu_group: Some(12),
            numa_node: Some(1),
            family: Some(NicFamily::Igb),
        }
    );
    assert_eq!(devs[1].model(), Some("Intel 82576"));
    assert_eq!(
        (devs[2].family, devs[2].driver.as_deref(), devs[2].iommu_group),
        (Some(NicFamily::Mlx5), Some("mlx5_core"), None)
    );
    assert_eq!(
        (devs[3].family, devs[3].driver.as_deref(), devs[3].iommu_group),
        (Some(NicFamily::Ixgbe), None, Some(3))
    );
    assert_eq!((devs[0].family, devs[0].numa_node), (None, None));
    assert_eq!(sys.devices().unwrap().len(), 7);

    let mut out = Vec::new();
    run_with(&sys, &NicCmd::List { json: false }, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("BDF") && lines[0].contains("DRIVER") && lines[0].contains("IOMMU"), "{text}");
    let cols = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(cols(lines[2])[..5], ["0000:03:00.0", "8086:10c9", "igb", "12", "1"], "{text}");
    assert!(lines[2].ends_with("igb: Intel 82576 (supported)"), "{text}");
    assert!(lines[3].ends_with("mlx5: ConnectX-5 (supported)"), "{text}");
    assert_eq!(cols(lines[3])[..5], ["0000:04:00.0", "15b3:1017", "mlx5_core", "-", "-"], "{text}");
    assert!(lines[4].contains("ixgbe: Intel 82599 (SFP+) (supported)"), "{text}");
    assert!(lines[1].ends_with("no driver in erpc"), "{text}");

    let mut out = Vec::new();
    run_with(&sys, &NicCmd::List { json: true }, &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 4);
    assert_eq!(a[1]["bdf"], "0000:03:00.0");
    assert_eq!(a[1]["vendor"], "0x8086");
    assert_eq!(a[1]["device"], "0x10c9");
    assert_eq!(a[1]["class"], "0x020000");
    assert_eq!(a[1]["driver"], "igb");
    assert_eq!(a[1]["iommu_group"], 12);
    assert_eq!(a[1]["numa_node"], 1);
    assert_eq!(a[1]["family"], "igb");
    assert_eq!(a[1]["supported"], true);
    assert_eq!(a[2]["family"], "mlx5");
    assert_eq!(a[2]["supported"], true);
    assert_eq!(a[2]["iommu_group"], serde_json::Value::Null);
    assert_eq!(a[3]["driver"], serde_json::Value::Null);
    assert_eq!(a[0]["family"], serde_json::Value::Null);
}

#[test]
fn list_tolerates_garbage_and_missing_files() {
    let t = Tree::new("garbage");
    t.add_igb("0000:03:00.0", Some(1));
    let d = t.dev_dir("0000:03:00.0");
    write(&d.join("vendor"), "not hex\n");
    write(&d.join("numa_node"), "lots\n");
    fs::remove_file(d.join("device")).unwrap();
    fs::remove_file(d.join("iommu_group")).unwrap();
    write(&d.join("iommu_group"), "12\n"); // a file, not a link
                                           // Missing class: not known to be a network device.
    t.add_igb("0000:03:00.1", None);
    fs::remove_file(t.dev_dir("0000:03:00.1").join("class")).unwrap();
    // Garbage class.
    t.add_igb("0000:03:00.2", None);
    write(&t.dev_dir("0000:03:00.2").join("class"), "\u{fffd}\u{0}zz");
    // A class too wide to be one.
    t.add_igb("0000:03:00.3", None);
    write(&t.dev_dir("0000:03:00.3").join("class"), "0x1020000");
    // A dangling driver link, a group link to a non-number, binary garbage in the ids.
    t.add_device("0000:06:00.0", 0x8086, 0x1521, 0x020000, None, None);
    let d6 = t.dev_dir("0000:06:00.0");
    symlink("../../../bus/pci/drivers/gone", d6.join("driver")).unwrap();
    symlink("../../../kernel/iommu_groups/abc", d6.join("iommu_group")).unwrap();
    fs::write(d6.join("device"), [0xff, 0xfe, 0x00]).unwrap();
    // Entries that are not addresses.
    fs::create_dir_all(t.root.join("sys/bus/pci/devices/not-a-bdf")).unwrap();
    write(&t.root.join("sys/bus/pci/devices/0000:07:00.0"), "a file, with no attributes");

    let sys = t.sysfs();
    let devs = sys.network_devices().unwrap();
    let bdfs: Vec<String> = devs.iter().map(|d| d.bdf.to_string()).collect();
    assert_eq!(bdfs, ["0000:03:00.0", "0000:06:00.0"]);
    let d = &devs[0];
    assert_eq!((d.vendor, d.device, d.family, d.iommu_group, d.numa_node), (ID_UNKNOWN, ID_UNKNOWN, None, None, None));
    assert_eq!(d.driver.as_deref(), Some("igb"));
    let d = &devs[1];
    assert_eq!((d.vendor, d.device, d.iommu_group, d.driver.as_deref()), (0x8086, ID_UNKNOWN, None, Some("gone")));
    let all = sys.devices().unwrap();
    assert_eq!(all.len(), 6);
    let wide = all.iter().find(|d| d.bdf == bdf("0000:03:00.3")).unwrap();
    assert_eq!(wide.class, CLASS_UNKNOWN);
    let odd = all.iter().find(|d| d.bdf == bdf("0000:07:00.0")).unwrap();
    assert_eq!(
        (odd.vendor, odd.class, odd.driver.as_deref(), odd.is_network()),
        (ID_UNKNOWN, CLASS_UNKNOWN, None, false)
    );

    let mut out = Vec::new();
    run_with(&sys, &NicCmd::List { json: false }, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("0000:03:00.0  ????:????  igb"), "{text}");
    let v = list_json(&sys).unwrap();
    assert_eq!(v[0]["vendor"], serde_json::Value::Null);
    assert_eq!(v.as_array().unwrap().len(), 2);
}

#[test]
fn list_without_network_devices_says_so() {
    let t = Tree::new("empty");
    t.add_device("0000:00:00.0", 0x8086, 0x29c0, 0x060000, None, None);
    let sys = t.sysfs();
    let mut out = Vec::new();
    run_with(&sys, &NicCmd::List { json: false }, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("BDF"), "{text}");
    assert_eq!(lines[1], "no PCI network devices found");
    assert_eq!(list_json(&sys).unwrap(), serde_json::json!([]));
}

#[test]
fn list_without_sysfs_is_a_clear_error() {
    let t = Tree::new("nosys");
    fs::remove_dir_all(t.root.join("sys")).unwrap();
    let e = t.sysfs().network_devices().unwrap_err();
    assert!(matches!(e, PciError::SysfsRead { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("sys/bus/pci/devices") && msg.contains("mount -t sysfs"), "{msg}");
    let mut out = Vec::new();
    assert_eq!(run_with(&t.sysfs(), &NicCmd::List { json: false }, &mut out).unwrap_err().to_string(), msg);
}

#[test]
fn iommu_group_devices_lists_the_group() {
    let t = Tree::new("group");
    t.add_igb("0000:03:00.1", Some(9));
    t.add_igb("0000:03:00.0", Some(9));
    t.add_igb("0000:04:00.0", Some(10));
    write(&t.root.join("sys/kernel/iommu_groups/9/devices/garbage"), "");
    let sys = t.sysfs();
    assert_eq!(sys.iommu_group_devices(9), [bdf("0000:03:00.0"), bdf("0000:03:00.1")]);
    assert_eq!(sys.iommu_group_devices(10), [bdf("0000:04:00.0")]);
    assert_eq!(sys.iommu_group_devices(11), []);
    assert_eq!(sys.pci_device_path(&bdf("03:00.1")), t.root.join("sys/bus/pci/devices/0000:03:00.1"));
}

// ----- bind and unbind -----

#[test]
fn bind_then_unbind_restores_the_previous_driver() {
    let t = Tree::new("bind");
    t.add_igb("0000:03:00.0", Some(7));
    let sys = t.sysfs();
    let b = bdf("03:00.0"); // the short form

    assert_eq!(sys.bind_vfio(&b).unwrap(), BindOutcome::Bound { previous_driver: Some("igb".into()), iommu_group: 7 });
    let dev = "sys/bus/pci/devices/0000:03:00.0";
    assert_eq!(
        t.writes(),
        [
            w(&format!("{dev}/driver/unbind"), "0000:03:00.0"),
            w(&format!("{dev}/driver_override"), "vfio-pci"),
            w("sys/bus/pci/drivers_probe", "0000:03:00.0"),
        ]
    );
    // The unbind went to igb's file, through the link.
    assert_eq!(read(&t.root.join("sys/bus/pci/drivers/igb/unbind")), "0000:03:00.0");
    assert_eq!(read(&t.dev_dir("0000:03:00.0").join("driver_override")), "vfio-pci");
    assert_eq!(t.driver_of("0000:03:00.0").as_deref(), Some(VFIO_PCI));
    assert_eq!(sys.state_file(&b), t.root.join("run/erpc/0000:03:00.0.prev-driver"));
    assert_eq!(read(&sys.state_file(&b)), "previous_driver=igb\n");
    assert_eq!(sys.recorded_driver(&b), Some(Some("igb".into())));
    let d = sys.device(&b).unwrap();
    assert!(d.is_vfio());

    // The list shows where it came from.
    let mut out = Vec::new();
    run_with(&sys, &NicCmd::List { json: false }, &mut out).unwrap();
    assert!(String::from_utf8(out).unwrap().contains("vfio-pci (was igb)"));
    assert_eq!(list_json(&sys).unwrap()[0]["previous_driver"], "igb");

    assert_eq!(sys.unbind_vfio(&b).unwrap(), UnbindOutcome::Released { driver: Some("igb".into()), from_record: true });
    assert_eq!(
        t.writes(),
        [
            w(&format!("{dev}/driver/unbind"), "0000:03:00.0"),
            w(&format!("{dev}/driver_override"), "\n"),
            w("sys/bus/pci/drivers/igb/bind", "0000:03:00.0"),
        ]
    );
    assert_eq!(read(&t.root.join("sys/bus/pci/drivers/vfio-pci/unbind")), "0000:03:00.0");
    assert_eq!(read(&t.dev_dir("0000:03:00.0").join("driver_override")), "\n");
    assert_eq!(t.driver_of("0000:03:00.0").as_deref(), Some("igb"));
    assert!(!sys.state_file(&b).exists());
    assert_eq!(sys.recorded_driver(&b), None);
}

#[test]
fn bind_and_unbind_through_the_command() {
    let t = Tree::new("cmd");
    t.add_igb("0000:03:00.0", Some(7));
    t.add_device("0000:03:00.1", 0x8086, 0x10c9, 0x020000, Some("igb"), Some(7));
    t.add_device("0000:00:1c.0", 0x8086, 0x2940, 0x060400, Some("pcieport"), Some(7));
    let sys = t.sysfs();
    let b = bdf("0000:03:00.0");
    let run = |cmd: NicCmd| {
        let mut out = Vec::new();
        run_with(&sys, &cmd, &mut out).map(|()| String::from_utf8(out).unwrap())
    };
    let text = run(NicCmd::Bind { bdf: b }).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        lines[0],
        format!("0000:03:00.0: bound to vfio-pci (was igb); VFIO group {}", t.root.join("dev/vfio/7").display())
    );
    assert!(lines[1].starts_with("note: IOMMU group 7 also holds 0000:03:00.1 (bound to igb)"), "{text}");
    assert_eq!(
        run(NicCmd::Bind { bdf: b }).unwrap(),
        "0000:03:00.0 is already bound to vfio-pci (IOMMU group 7); nothing to do\n"
    );
    assert_eq!(run(NicCmd::Unbind { bdf: b }).unwrap(), "0000:03:00.0: released from vfio-pci, bound to igb again\n");
    assert_eq!(
        run(NicCmd::Unbind { bdf: b }).unwrap(),
        "0000:03:00.0 is not bound to vfio-pci (driver: igb); nothing to do\n"
    );
    let e = run(NicCmd::Bind { bdf: bdf("0000:09:00.0") }).unwrap_err();
    let e = e.to_string();
    assert!(e.contains("0000:09:00.0") && e.contains("erpc nic list"), "{e}");
    assert_eq!(t.driver_of("0000:03:00.0").as_deref(), Some("igb"));
}

#[test]
fn bind_of_a_device_without_a_driver_and_back() {
    let t = Tree::new("nodriver");
    t.add_device("0000:05:00.0", 0x8086, 0x10fb, 0x020000, None, Some(3));
    let sys = t.sysfs();
    let b = bdf("0000:05:00.0");
    assert_eq!(sys.bind_vfio(&b).unwrap(), BindOutcome::Bound { previous_driver: None, iommu_group: 3 });
    let dev = "sys/bus/pci/devices/0000:05:00.0";
    assert_eq!(
        t.writes(),
        [w(&format!("{dev}/driver_override"), "vfio-pci"), w("sys/bus/pci/drivers_probe", "0000:05:00.0")]
    );
    assert_eq!(read(&sys.state_file(&b)), "previous_driver=\n");
    assert_eq!(sys.recorded_driver(&b), Some(None));

    assert_eq!(sys.unbind_vfio(&b).unwrap(), UnbindOutcome::Released { driver: None, from_record: true });
    assert_eq!(
        t.writes(),
        [w(&format!("{dev}/driver/unbind"), "0000:05:00.0"), w(&format!("{dev}/driver_override"), "\n")]
    );
    assert_eq!(t.driver_of("0000:05:00.0"), None);
    assert!(!sys.state_file(&b).exists());
}

#[test]
fn unbind_without_a_record_lets_the_kernel_choose() {
    let t = Tree::new("norecord");
    t.add_device("0000:03:00.0", 0x8086, 0x10c9, 0x020000, Some(VFIO_PCI), Some(4));
    write(&t.dev_dir("0000:03:00.0").join("driver_override"), "vfio-pci\n");
    t.add_driver("igb");
    let sys = t.sysfs();
    let b = bdf("0000:03:00.0");
    assert_eq!(
        sys.unbind_vfio(&b).unwrap(),
        UnbindOutcome::Released { driver: Some("igb".into()), from_record: false }
    );
    let dev = "sys/bus/pci/devices/0000:03:00.0";
    assert_eq!(
        t.writes(),
        [
            w(&format!("{dev}/driver/unbind"), "0000:03:00.0"),
            w(&format!("{dev}/driver_override"), "\n"),
            w("sys/bus/pci/drivers_probe", "0000:03:00.0"),
        ]
    );
    assert_eq!(t.driver_of("0000:03:00.0").as_deref(), Some("igb"));
}

#[test]
fn unbind_clears_a_leftover_override_on_an_unbound_device() {
    let t = Tree::new("leftover");
    t.add_device("0000:03:00.0", 0x8086, 0x10c9, 0x020000, None, Some(4));
    write(&t.dev_dir("0000:03:00.0").join("driver_override"), "vfio-pci\n");
    t.add_driver("igb");
    let sys = t.sysfs();
    let r = sys.unbind_vfio(&bdf("0000:03:00.0")).unwrap();
    assert_eq!(r, UnbindOutcome::Released { driver: Some("igb".into()), from_record: false });
    let dev = "sys/bus/pci/devices/0000:03:00.0";
    assert_eq!(
        t.writes(),
        [w(&format!("{dev}/driver_override"), "\n"), w("sys/bus/pci/drivers_probe", "0000:03:00.0")]
    );
}

#[test]
fn already_bound_and_not_bound_are_no_ops() {
    let t = Tree::new("noop");
    t.add_device("0000:03:00.0", 0x8086, 0x10c9, 0x020000, Some(VFIO_PCI), Some(4));
    t.add_igb("0000:04:00.0", Some(5));
    let sys = t.sysfs();
    assert_eq!(sys.bind_vfio(&bdf("0000:03:00.0")).unwrap(), BindOutcome::AlreadyBound { iommu_group: Some(4) });
    assert_eq!(sys.unbind_vfio(&bdf("0000:04:00.0")).unwrap(), UnbindOutcome::NotBound { driver: Some("igb".into()) });
    assert_eq!(t.writes(), []);
    assert!(!sys.state_file(&bdf("0000:03:00.0")).exists());
    assert!(!sys.state_dir().exists());
}

#[test]
fn state_dir_can_be_moved() {
    let t = Tree::new("state");
    t.add_igb("0000:03:00.0", Some(7));
    let dir = t.root.join("elsewhere/state");
    let sys = t.sysfs().with_state_dir(&dir);
    let b = bdf("0000:03:00.0");
    sys.bind_vfio(&b).unwrap();
    assert_eq!(read(&dir.join("0000:03:00.0.prev-driver")), "previous_driver=igb\n");
    assert!(!t.root.join("run").exists());
    sys.unbind_vfio(&b).unwrap();
    assert!(!dir.join("0000:03:00.0.prev-driver").exists());

    // Sysfs::new() takes it from the environment.
    std::env::set_var(STATE_DIR_ENV, &dir);
    let from_env = Sysfs::new();
    std::env::remove_var(STATE_DIR_ENV);
    assert_eq!(from_env.state_dir(), dir);
    assert_eq!(from_env.root(), Path::new("/"));
}

// ----- errors -----

#[test]
fn bind_errors_say_what_to_do_and_write_nothing() {
    let t = Tree::new("errors");
    t.add_igb("0000:03:00.0", None); // no IOMMU group
    t.add_igb("0000:04:00.0", Some(5));
    t.add_device("0000:00:1f.2", 0x8086, 0x2922, 0x010601, Some("ahci"), Some(6));
    let sys = t.sysfs();

    let e = sys.bind_vfio(&bdf("0000:09:00.0")).unwrap_err();
    assert!(matches!(e, PciError::DeviceNotFound { bdf: b } if b == bdf("0000:09:00.0")), "{e:?}");
    assert!(e.to_string().contains("erpc nic list"), "{e}");
    assert!(matches!(sys.unbind_vfio(&bdf("09:00.0")), Err(PciError::DeviceNotFound { .. })));
    assert!(matches!(sys.device(&bdf("09:00.0")), Err(PciError::DeviceNotFound { .. })));

    let e = sys.bind_vfio(&bdf("0000:03:00.0")).unwrap_err();
    assert!(matches!(e, PciError::NoIommuGroup { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("intel_iommu=on") && msg.contains("amd_iommu=on") && msg.contains("BIOS"), "{msg}");

    let e = sys.bind_vfio(&bdf("0000:00:1f.2")).unwrap_err();
    assert!(matches!(e, PciError::NotNetworkDevice { class: 0x010601, .. }), "{e:?}");
    assert!(e.to_string().contains("not a network device"), "{e}");

    t.remove_driver(VFIO_PCI);
    let e = sys.bind_vfio(&bdf("0000:04:00.0")).unwrap_err();
    assert!(matches!(e, PciError::VfioPciNotLoaded), "{e:?}");
    assert!(e.to_string().contains("modprobe vfio-pci"), "{e}");

    assert_eq!(t.writes(), []);
    assert_eq!(t.driver_of("0000:03:00.0").as_deref(), Some("igb"));
    assert_eq!(t.driver_of("0000:04:00.0").as_deref(), Some("igb"));
    assert!(!sys.state_dir().exists());
}

#[test]
fn malformed_addresses_are_rejected() {
    for s in ["", "03:00", "0000:03:00.8", "0000:03:20.0", "0000:3g:00.0", "eth0", "0000:03:00.0.0", "1:2:3:4.0"] {
        let e = Bdf::parse(s).unwrap_err();
        assert!(matches!(&e, PciError::InvalidBdf { input, .. } if input == s), "{s:?}: {e:?}");
        assert!(e.to_string().contains("expected DDDD:BB:DD.F or BB:DD.F"), "{e}");
        assert!(s.parse::<Bdf>().is_err());
    }
    assert_eq!(bdf("3:0.1").to_string(), "0000:03:00.1");
}

#[test]
fn a_failed_probe_gives_the_device_back() {
    let t = Tree::new("probefail");
    t.add_igb("0000:03:00.0", Some(7));
    t.kernel.lock().unwrap().vfio_probe_fails = true;
    let sys = t.sysfs();
    let b = bdf("0000:03:00.0");
    let e = sys.bind_vfio(&b).unwrap_err();
    match &e {
        PciError::WrongDriver { bdf: x, expected, found } => {
            assert_eq!((x, expected.as_str(), found), (&b, VFIO_PCI, &None));
        }
        _ => panic!("{e:?}"),
    }
    assert!(e.to_string().contains("dmesg"), "{e}");
    let dev = "sys/bus/pci/devices/0000:03:00.0";
    assert_eq!(
        t.writes(),
        [
            w(&format!("{dev}/driver/unbind"), "0000:03:00.0"),
            w(&format!("{dev}/driver_override"), "vfio-pci"),
            w("sys/bus/pci/drivers_probe", "0000:03:00.0"),
            w(&format!("{dev}/driver_override"), "\n"),
            w("sys/bus/pci/drivers/igb/bind", "0000:03:00.0"),
        ]
    );
    assert_eq!(t.driver_of("0000:03:00.0").as_deref(), Some("igb"));
    assert!(!sys.state_file(&b).exists());
}

#[test]
fn a_missing_vfio_group_device_is_reported_and_unbind_recovers() {
    let t = Tree::new("nogroupdev");
    t.add_igb("0000:03:00.0", Some(7));
    t.kernel.lock().unwrap().no_group_dev = true;
    let sys = t.sysfs();
    let b = bdf("0000:03:00.0");
    let e = sys.bind_vfio(&b).unwrap_err();
    assert!(matches!(&e, PciError::VfioGroupMissing { path, .. } if *path == t.root.join("dev/vfio/7")), "{e:?}");
    assert!(e.to_string().contains("erpc nic unbind 0000:03:00.0"), "{e}");
    assert_eq!(t.driver_of("0000:03:00.0").as_deref(), Some(VFIO_PCI));
    assert_eq!(sys.unbind_vfio(&b).unwrap(), UnbindOutcome::Released { driver: Some("igb".into()), from_record: true });
    assert_eq!(t.driver_of("0000:03:00.0").as_deref(), Some("igb"));
}

#[test]
fn a_failed_sysfs_write_names_the_file() {
    let t = Tree::new("writefail");
    t.add_igb("0000:03:00.0", Some(7));
    let probe = t.root.join("sys/bus/pci/drivers_probe");
    fs::remove_file(&probe).unwrap();
    fs::create_dir(&probe).unwrap(); // writing it fails (EISDIR)
    let sys = t.sysfs();
    let b = bdf("0000:03:00.0");
    let e = sys.bind_vfio(&b).unwrap_err();
    assert!(matches!(&e, PciError::SysfsWrite { path, .. } if *path == probe), "{e:?}");
    assert!(e.to_string().contains(&probe.display().to_string()), "{e}");
    // Given back to igb.
    assert_eq!(t.driver_of("0000:03:00.0").as_deref(), Some("igb"));
    assert_eq!(read(&t.dev_dir("0000:03:00.0").join("driver_override")), "\n");
    assert!(!sys.state_file(&b).exists());
}

#[test]
fn unbind_needs_the_recorded_driver_loaded() {
    let t = Tree::new("prevgone");
    t.add_igb("0000:03:00.0", Some(7));
    let sys = t.sysfs();
    let b = bdf("0000:03:00.0");
    sys.bind_vfio(&b).unwrap();
    t.writes();
    t.remove_driver("igb");
    let e = sys.unbind_vfio(&b).unwrap_err();
    assert!(matches!(&e, PciError::DriverNotLoaded { driver, .. } if driver == "igb"), "{e:?}");
    assert!(e.to_string().contains("modprobe igb"), "{e}");
    assert_eq!(t.writes(), []);
    assert_eq!(t.driver_of("0000:03:00.0").as_deref(), Some(VFIO_PCI));
    assert!(sys.state_file(&b).exists());
}

// ----- this machine -----

/// `erpc nic list` on the real sysfs: every network device found by reading the class files
/// here appears, in the table and in the JSON.
#[test]
fn list_on_this_machine() {
    let sys = Sysfs::new();
    let dir = Path::new("/sys/bus/pci/devices");
    let mut out = Vec::new();
    let r = run_with(&sys, &NicCmd::List { json: false }, &mut out);
    let Ok(entries) = fs::read_dir(dir) else {
        let e = r.unwrap_err();
        assert!(e.to_string().contains("/sys/bus/pci/devices"), "{e}");
        return;
    };
    r.unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut want: Vec<String> = entries
        .filter_map(|e| {
            let e = e.unwrap();
            let class = fs::read_to_string(e.path().join("class")).ok()?;
            class.trim().starts_with("0x02").then(|| e.file_name().into_string().unwrap())
        })
        .collect();
    want.sort();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("BDF"), "{text}");
    if want.is_empty() {
        assert_eq!(lines[1..], ["no PCI network devices found"], "{text}");
    } else {
        let got: Vec<&str> = lines[1..].iter().map(|l| l.split_whitespace().next().unwrap()).collect();
        assert_eq!(got, want, "{text}");
    }
    let v = list_json(&sys).unwrap();
    let got: Vec<&str> = v.as_array().unwrap().iter().map(|d| d["bdf"].as_str().unwrap()).collect();
    assert_eq!(got, want);
}

//! `erpc kv` as a user runs it: a cluster of `serve` processes over UDP on loopback with `put`,
//! `get`, `del` and `bench` against it (and a dead leader), `local`, and one-line errors.

mod common;

use common::{erpc, json};
use erpc_tools::netns::Lan;
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `n` UDP ports free on 127.0.0.1 right now.
fn free_ports(n: usize) -> Vec<u16> {
    let socks: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    socks.iter().map(|s| s.local_addr().unwrap().port()).collect()
}

/// Waits until some socket is bound to UDP 127.0.0.1:`port` (read from /proc/net/udp, so that
/// probing never takes the port itself), while `child` runs; 30 s at most.
fn wait_bound(port: u16, child: &mut Child) {
    let want = format!("0100007F:{port:04X}");
    let t0 = Instant::now();
    loop {
        let table = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp");
        if table.lines().skip(1).any(|l| l.split_whitespace().nth(1) == Some(want.as_str())) {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "it exited before binding 127.0.0.1:{port}");
        assert!(t0.elapsed() < Duration::from_secs(30), "nothing bound 127.0.0.1:{port} within 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Replica processes, killed when dropped.
struct Replicas<'a> {
    peers: String,
    dir: tempfile::TempDir,
    procs: Vec<Option<Child>>,
    /// Over AF_XDP: the segment, replica *i* in namespace *i*, the client in the last.
    lan: Option<&'a Lan>,
}

/// The options that put `erpc kv` on AF_XDP on the segment's interface.
const AFXDP: [&str; 4] = ["--transport", "afxdp", "--interface", "erpc-lan"];

impl<'a> Replicas<'a> {
    fn start(n: usize) -> Replicas<'a> {
        let peers = free_ports(n).iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        Replicas::start_with(peers, None)
    }

    /// Replicas at 10.212.0.1 to .n, port 31850, in the first `n` namespaces of `lan`.
    fn start_on(lan: &'a Lan, n: usize) -> Replicas<'a> {
        let peers = lan.ends[..n].iter().map(|e| format!("{}:31850", e.ipv4)).collect::<Vec<_>>().join(",");
        Replicas::start_with(peers, Some(lan))
    }

    fn start_with(peers: String, lan: Option<&'a Lan>) -> Replicas<'a> {
        let n = peers.split(',').count();
        let mut r = Replicas { peers, dir: tempfile::tempdir().unwrap(), procs: (0..n).map(|_| None).collect(), lan };
        for i in 0..n {
            r.spawn(i);
        }
        r
    }

    /// `erpc` in namespace `i` of the segment (over AF_XDP), or here.
    fn command(&self, i: usize) -> Command {
        match self.lan {
            Some(lan) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &lan.ends[i].netns, env!("CARGO_BIN_EXE_erpc")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_erpc")),
        }
    }

    fn net(&self) -> &'static [&'static str] {
        if self.lan.is_some() {
            &AFXDP
        } else {
            &[]
        }
    }

    fn spawn(&mut self, i: usize) {
        let dir = self.dir.path().join(format!("r{}", i + 1));
        let c = self
            .command(i)
            .args(["kv", "serve", "--id", &(i + 1).to_string(), "--peers", &self.peers])
            .args(["--durability", "fsync", "--dir", dir.to_str().unwrap(), "--idle-wait-us", "100"])
            .args(self.net())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("erpc kv serve");
        self.procs[i] = Some(c);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Over AF_XDP, sets replica `i`'s interface `up` or `down` (its machine on or off the
    /// network); nothing over UDP.
    fn link(&self, i: usize, state: &str) {
        if let Some(lan) = self.lan {
            let e = &lan.ends[i];
            let out = Command::new("ip").args(["-n", &e.netns, "link", "set", &e.interface, state]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }

    /// Over AF_XDP, makes every other namespace forget replica `i`'s MAC (as its kernel does a
    /// while after the machine went away): resolving it must not stall anyone.
    fn forget(&self, i: usize) {
        if let Some(lan) = self.lan {
            let ip = lan.ends[i].ipv4.to_string();
            for e in lan.ends.iter().filter(|e| e.ipv4 != lan.ends[i].ipv4) {
                let out = Command::new("ip").args(["-n", &e.netns, "neigh", "flush", "to", &ip]).output().unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }

    fn kv(&self, args: &[&str]) -> std::process::Output {
        let mut v = vec!["kv", args[0], "--peers", &self.peers];
        v.extend_from_slice(self.net());
        v.extend_from_slice(&args[1..]);
        match self.lan {
            Some(lan) => self.command(lan.ends.len() - 1).args(&v).output().expect("erpc kv"),
            None => erpc(&v),
        }
    }

    /// `erpc kv ARGS` must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kv(args);
        assert!(out.status.success(), "erpc kv {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Replicas<'_> {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}

#[test]
fn serve_processes_over_udp_answer_put_get_del_and_outlive_their_leader() {
    put_get_del_and_failover(&mut Replicas::start(3));
}

/// As over UDP, with every replica and the client on AF_XDP in a namespace of its own, the
/// namespaces on one bridged segment: a machine each on one switch.
#[test]
fn serve_processes_over_afxdp_answer_put_get_del_and_outlive_their_leader() {
    let lan = Lan::create(4).expect("network namespaces (root)");
    let names: Vec<String> = std::iter::once(lan.hub.clone()).chain(lan.ends.iter().map(|e| e.netns.clone())).collect();
    let mut r = Replicas::start_on(&lan, 3);
    put_get_del_and_failover(&mut r);
    // The replicas ran on AF_XDP: each interface carries their XDP program. The restarted one
    // may still be starting (the cluster served without it): it gets a few seconds.
    for e in &lan.ends[..3] {
        let t0 = Instant::now();
        while !erpc_tools::netns::VethPair::xdp_attached(e).unwrap() {
            assert!(t0.elapsed() < Duration::from_secs(10), "no XDP program on {}", e.netns);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(r);
    drop(lan);
    for n in names {
        assert!(!std::path::Path::new(&format!("/run/netns/{n}")).exists(), "{n} deleted");
    }
}

fn put_get_del_and_failover(r: &mut Replicas) {
    assert_eq!(r.ok(&["put", "greeting", "hello"]), "OK");
    assert_eq!(r.ok(&["get", "greeting"]), "hello");
    assert_eq!(r.ok(&["del", "greeting"]), "OK");
    let out = r.kv(&["get", "greeting"]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "erpc: not found");
    assert_eq!(r.ok(&["put", "k2", "v2"]), "OK");

    let v: serde_json::Value = serde_json::from_str(&r.ok(&["bench", "--duration", "0.3", "--json"])).unwrap();
    assert_eq!(v["durability"], "fsync");
    assert_eq!(v["failed"], 0);
    assert!(v["ops"].as_u64().unwrap() > 5, "{v}");
    for k in ["p50_us", "p99_us", "leader_commit_p50_us", "rtt_p50_us", "ratio_p50"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {v}");
    }
    assert!(v["p50_us"].as_f64() <= v["p99_us"].as_f64(), "{v}");

    // Kill the leader: the others elect one and the data is still there.
    let leader = v["leader"].as_u64().unwrap() as usize - 1;
    r.kill(leader);
    // Over AF_XDP its machine goes too: nothing answers ARP for its address any more, so the
    // others must not stall resolving it.
    r.link(leader, "down");
    r.forget(leader);
    let t0 = Instant::now();
    assert_eq!(r.ok(&["put", "after", "failover"]), "OK");
    assert!(t0.elapsed() < Duration::from_secs(10));
    let t1 = Instant::now();
    for k in 0..20 {
        assert_eq!(r.ok(&["put", &format!("w{k}"), "v"]), "OK");
    }
    assert!(t1.elapsed() < Duration::from_secs(20), "20 writes with a machine gone: {:?}", t1.elapsed());
    assert_eq!(r.ok(&["get", "k2"]), "v2");
    // It comes back from its log and the cluster goes on.
    r.link(leader, "up");
    r.spawn(leader);
    assert_eq!(r.ok(&["put", "k3", "v3"]), "OK");
    assert_eq!(r.ok(&["get", "after"]), "failover");
}

#[test]
fn kv_local_runs_three_replicas_and_a_client_on_one_thread() {
    for t in ["udp", "sim"] {
        let v = json(&["kv", "local", "--transport", t, "--duration", "0.3", "--json"]);
        assert_eq!(v["transport"], t);
        assert_eq!(v["durability"], "none");
        assert_eq!(v["failed"], 0, "{v}");
        assert!(v["ops"].as_u64().unwrap() > 10, "{v}");
        assert!(v["p50_us"].as_f64() <= v["p99_us"].as_f64(), "{v}");
        // Two network round trips and Raft's work against one round trip.
        assert!(v["ratio_p50"].as_f64().unwrap() > 1.0, "{v}");
        assert!(v["leader_commits"].as_u64().unwrap() >= v["ops"].as_u64().unwrap(), "{v}");
    }
    let v = json(&[
        "kv",
        "local",
        "--durability",
        "fsync",
        "--clients",
        "4",
        "--get-pct",
        "50",
        "--duration",
        "0.3",
        "--json",
    ]);
    assert_eq!(v["durability"], "fsync");
    assert!(v["get_p50_us"].as_f64().is_some() && v["put_p50_us"].as_f64().is_some(), "{v}");
    assert_eq!(v["failed"], 0);
}

/// `local` over AF_XDP (root): the four endpoints on one thread, each on an interface of its
/// own; the namespaces are gone afterwards.
#[test]
fn kv_local_runs_over_afxdp_on_a_segment_of_namespaces() {
    // Auto (generic on these single-queue veths), and native as `--xdp-mode` asks: the report
    // says which every endpoint got.
    for (mode, attached) in [("auto", "generic"), ("native", "native")] {
        let v = json(&["kv", "local", "--transport", "afxdp", "--xdp-mode", mode, "--duration", "0.3", "--json"]);
        assert_eq!(v["transport"], "afxdp");
        assert_eq!(v["xdp_attach"], attached, "{mode}: {v}");
        assert_eq!(v["failed"], 0, "{mode}: {v}");
        assert!(v["ops"].as_u64().unwrap() > 10, "{mode}: {v}");
        assert!(v["rtt_p50_us"].as_f64().is_some_and(|x| x > 0.0), "{mode}: {v}");
    }
    let left = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    let me = format!("erpc-{}-", std::process::id());
    assert!(!String::from_utf8_lossy(&left.stdout).contains(&me), "nothing of this test process is left");
}

#[test]
fn kv_user_mistakes_get_one_line_and_a_failure_exit() {
    let [p1, p2, p3] = free_ports(3)[..] else { unreachable!() };
    let peers = format!("127.0.0.1:{p1},127.0.0.1:{p2},127.0.0.1:{p3}");
    for (args, want) in [
        (vec!["kv", "serve", "--id", "4", "--peers", &peers], "--id must be 1..=3"),
        (vec!["kv", "serve", "--id", "1", "--peers", "127.0.0.1:0"], "a port other than 0"),
        (vec!["kv", "serve", "--id", "1", "--peers", "224.0.0.1:31850"], "not an address a replica can be reached at"),
        (vec!["kv", "serve", "--id", "1", "--peers", "127.0.0.1:5,127.0.0.1:5"], "twice"),
        (vec!["kv", "serve", "--id", "1", "--peers", &peers, "--durability", "fsync"], "needs --dir"),
        (vec!["kv", "put", "--peers", &peers, "k"], "put needs a KEY and a VALUE"),
        (vec!["kv", "get", "--peers", &peers, "k", "v"], "get takes a KEY only"),
        (vec!["kv", "get", "--peers", &peers, "--connect-timeout", "1", "k"], "no replica answered"),
        (vec!["kv", "get", "--peers", &peers, "--connect-timeout", "0", "k"], "--connect-timeout must be between"),
        (vec!["kv", "bench", "--peers", &peers, "--clients", "0"], "--clients must be"),
        (vec!["kv", "local", "--get-pct", "101"], "--get-pct"),
        (vec!["kv", "get", "--peers", "10.9.9.9:31850", "k"], "need --bind"),
        (
            vec!["kv", "serve", "--id", "1", "--peers", &peers, "--interface", "lo"],
            "--interface applies to --transport afxdp",
        ),
        (vec!["kv", "get", "--peers", &peers, "--transport", "afxdp", "k"], "--transport afxdp needs --interface"),
        (
            vec!["kv", "put", "--peers", &peers, "--xdp-mode", "native", "k", "v"],
            "--xdp-mode applies to --transport afxdp",
        ),
        (vec!["kv", "local", "--transport", "sim", "--xdp-mode", "generic"], "--xdp-mode applies to --transport afxdp"),
        (
            vec!["kv", "serve", "--id", "1", "--peers", &peers, "--transport", "afxdp", "--interface", "nope0"],
            "starting replica 1 on afxdp 127.0.0.1",
        ),
        (
            vec!["kv", "serve", "--id", "1", "--peers", "10.9.9.9:5", "--transport", "afxdp", "--interface", "lo"],
            "10.9.9.9 is not an address of this host, so nothing could reach the endpoint there: use one of \
             `lo`'s (127.0.0.1)",
        ),
        (
            vec![
                "kv",
                "get",
                "--peers",
                &peers,
                "--transport",
                "mlx5",
                "--pci",
                "x",
                "--peer-macs",
                "2:0:0:0:0:1,2:0:0:0:0:2,2:0:0:0:0:3",
                "--bind",
                "0.0.0.0:0",
                "k",
            ],
            "--transport mlx5 needs --bind <this NIC's IP>:0, not 0.0.0.0:0",
        ),
        (vec!["kv", "bench", "--peers", &peers, "--pci", "0000:01:00.0"], "--pci applies to --transport mlx5"),
        (vec!["kv", "serve", "--id", "1", "--peers", &peers, "--transport", "mlx5"], "needs --pci"),
        (
            vec!["kv", "put", "--peers", &peers, "--transport", "mlx5", "--pci", "0000:01:00.0", "k", "v"],
            "needs --peer-macs with one MAC per --peers address (0 given, 3 needed)",
        ),
        (
            vec![
                "kv",
                "get",
                "--peers",
                "10.0.0.1:5",
                "--transport",
                "mlx5",
                "--pci",
                "x",
                "--peer-macs",
                "02:00",
                "k",
            ],
            "MAC `02:00`: write it as aa:bb:cc:dd:ee:ff",
        ),
        (vec!["kv", "etcd-bench", "--endpoints", &format!("127.0.0.1:{p1}"), "--duration", "0.1"], "no etcd answered"),
    ] {
        let out = erpc(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn no_leader_is_an_error_that_says_so() {
    // One replica of three: it answers, but can never be elected.
    let mut r = Replicas::start(3);
    r.kill(1);
    r.kill(2);
    let out = r.kv(&["put", "--timeout", "1", "k", "v"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no leader answered within 1 s"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn an_endpoint_that_is_no_replica_is_reported_as_refusing() {
    // A client waiting for replicas that do not exist: an eRPC endpoint that serves no requests.
    let [other, nobody] = free_ports(2)[..] else { unreachable!() };
    let mut waiting = Command::new(env!("CARGO_BIN_EXE_erpc"))
        .args(["kv", "get", "--peers", &format!("127.0.0.1:{nobody}"), "--bind", &format!("127.0.0.1:{other}"), "k"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("erpc kv get");
    // Ask once it has its socket (a connect sent before then would be lost and resent).
    wait_bound(other, &mut waiting);
    let t0 = Instant::now();
    let out = erpc(&["kv", "get", "--connect-timeout", "60", "--peers", &format!("127.0.0.1:{other}"), "k"]);
    let _ = waiting.kill();
    let _ = waiting.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.starts_with(&format!("erpc: connecting to replica 1 at 127.0.0.1:{other}: the server refused")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Said at once, not after the 60 s a silent address gets (the bound leaves a busy machine
    // time to start the client).
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
}

/// An eRPC server that accepts sessions but serves other request types (the benchmark's), at
/// `addr`; killed when dropped.
struct OtherServer(Child);

impl OtherServer {
    fn start(addr: &str) -> OtherServer {
        let mut s = OtherServer(
            Command::new(env!("CARGO_BIN_EXE_erpc"))
                .args(["bench", "latency", "--transport", "udp", "--server", addr])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("erpc bench --server"),
        );
        // It says on stderr when it serves (or why not, and exits: then the line says so).
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(s.0.stderr.take().unwrap()), &mut line).unwrap();
        assert!(line.contains("serving on"), "{line}");
        s
    }
}

impl Drop for OtherServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_rpc_server_of_something_else_is_no_replica_and_says_so_at_once() {
    let [port] = free_ports(1)[..] else { unreachable!() };
    let addr = format!("127.0.0.1:{port}");
    let _other = OtherServer::start(&addr);
    let t0 = Instant::now();
    let out = erpc(&["kv", "put", "--peers", &addr, "k", "v"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("{addr} is not a replica of this store")), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // The server refused the request at once: no waiting out the 10 s for a leader (the bound
    // leaves a busy machine time to start the client).
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
}

#[test]
fn a_wrong_address_among_the_peers_does_not_fail_operations() {
    let [p1, p2, p3, port, me] = free_ports(5)[..] else { unreachable!() };
    let wrong = format!("127.0.0.1:{port}");
    let _other = OtherServer::start(&wrong);
    // The wrong one first, then the replicas in reverse: the client finds the leader by the
    // address in a redirect, not by its position.
    let replicas = format!("127.0.0.1:{p1},127.0.0.1:{p2},127.0.0.1:{p3}");
    let mut peers: Vec<&str> = replicas.split(',').rev().collect();
    peers.insert(0, &wrong);
    let peers = peers.join(",");
    // A put started before any replica runs: the wrong peer is the only one that takes its
    // session, so the put is asked there first and refused. It goes through once the replicas
    // are up, and warns which address is wrong.
    let bind = format!("127.0.0.1:{me}");
    let mut put = Command::new(env!("CARGO_BIN_EXE_erpc"))
        .args(["kv", "put", "--peers", &peers, "--bind", &bind, "--timeout", "30", "k", "v"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("erpc kv put");
    wait_bound(me, &mut put);
    // Its connect and the refusal take a round trip or two once it is bound: 3 s leave a
    // loaded machine room to schedule it.
    std::thread::sleep(Duration::from_secs(3));
    let _r = Replicas::start_with(replicas, None);
    let out = put.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    let t = erpc_kv::proto::REQ_CLIENT;
    let want = format!("erpc: warning: {wrong} is not a replica of this store: it serves no request of type {t}");
    assert_eq!(err.trim(), format!("{want} (check the peers)"));
    // Later operations may or may not ask the wrong peer (whichever session comes up first);
    // either way they succeed.
    let get = erpc(&["kv", "get", "--peers", &peers, "--timeout", "20", "k"]);
    assert!(get.status.success(), "{}", String::from_utf8_lossy(&get.stderr));
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "v");
}

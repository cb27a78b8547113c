//! `erpc capture` writes pcap files that tshark reads, and the Wireshark dissector
//! `tools/wireshark/erpc.lua` decodes every eRPC header field in them as the Rust wire module
//! (`erpc_dataplane::wire`) does, with the values the run sent.
//!
//! These tests need tshark (`apt-get install -y tshark`); without it they fail and say so.
//!
//! What it covers: `apt-get install -y tshark`; `tests/setup` installs it, and the tests fail,
//! saying so, without it): `erpc capture` over UDP, the in-memory fabric and to standard output,
//! and over AF_XDP on a veth pair (real MAC and IP addresses); tshark with
//! `tools/wireshark/erpc.lua` reads every file, and every frame's eRPC fields equal what the Rust
//! wire module decodes from the same bytes; the run's concrete values (request type 1,
//! 3000/2000-byte messages, the session numbers of the summary and of the connect response, request
//! numbers derived from the session token, exactly the Req, ExplCR, Resp and RFR packets with the
//! packet numbers eRPC sends) and sound IPv4/UDP layers (lengths, IPv4 checksum); decoding by port
//! alone and by the heuristic alone; one-line errors (unwritable path, port in use, bad sizes). The
//! `Capture` wrapper's unit tests check byte-exact frames of both directions and that a full disk
//! stops the capture, not the endpoint.

use erpc_dataplane::session::req_num_base;
use erpc_dataplane::wire::{Packet, PktType, PKT_HDR_LEN, SM_SESSION_NUM};
use pcap_file::pcap::PcapReader;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

const LUA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/wireshark/erpc.lua");

/// Runs of `erpc capture` one at a time: they busy-poll, and two must not pick the same port.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The fields compared, in `-T fields` order.
const FIELDS: &[&str] = &[
    "frame.len",
    "eth.src",
    "eth.dst",
    "ip.src",
    "ip.dst",
    "ip.len",
    "ip.checksum.status",
    "udp.srcport",
    "udp.dstport",
    "udp.length",
    "erpc.req_type",
    "erpc.msg_size",
    "erpc.dest_session",
    "erpc.pkt_type",
    "erpc.pkt_num",
    "erpc.req_num",
    "erpc.magic",
    "erpc.data_len",
    "erpc.sm.type",
    "erpc.sm.err",
    "erpc.sm.client_session",
    "erpc.sm.server_session",
    "erpc.sm.token",
    "erpc.sm.client.port",
    "erpc.sm.server.port",
    "_ws.expert",
];

fn erpc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_erpc")).args(args).output().expect("run erpc")
}

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}.pcap", std::process::id()))
}

/// Runs tshark with the dissector loaded; fails the test with what to do if tshark is missing or
/// did not load the Lua script.
fn tshark(args: &[&str]) -> String {
    let script = format!("lua_script:{LUA}");
    let out = match Command::new("tshark").arg("-X").arg(&script).args(args).stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "tshark is not installed, and this test decodes captures with it: install it \
             (Debian/Ubuntu: apt-get install -y tshark) and run the test again"
        ),
        Err(e) => panic!("running tshark failed: {e}"),
    };
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if err.contains("erpc.") {
            panic!(
                "tshark did not load {LUA}: Lua is disabled in this Wireshark (its init.lua: \
                 enable_lua, or run_user_scripts_when_superuser when running as root): {err}"
            );
        }
        panic!("tshark {args:?} failed: {err}");
    }
    String::from_utf8(out.stdout).expect("tshark prints UTF-8")
}

/// One row per frame: field name to value (empty when the frame has no such field).
fn decode(file: &Path, extra: &[&str]) -> Vec<BTreeMap<&'static str, String>> {
    let mut args = vec!["-r", file.to_str().unwrap(), "-o", "ip.check_checksum:TRUE", "-T", "fields"];
    args.extend_from_slice(&["-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=|"]);
    args.extend_from_slice(extra);
    for f in FIELDS {
        args.extend_from_slice(&["-e", f]);
    }
    tshark(&args)
        .lines()
        .map(|l| {
            let vals: Vec<&str> = l.split('\t').collect();
            assert_eq!(vals.len(), FIELDS.len(), "a row per frame, a column per field: {l:?}");
            FIELDS.iter().zip(vals).map(|(f, v)| (*f, v.to_string())).collect()
        })
        .collect()
}

/// Runs `erpc capture ARGS --json` and returns its summary.
fn capture(args: &[&str]) -> serde_json::Value {
    let out = erpc(&[&["capture", "--json"], args].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "erpc capture {args:?}: {err}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().lines().count(), 1, "one JSON line: {text}");
    serde_json::from_str(text.trim()).expect("JSON summary")
}

/// A free UDP port in the dissector's default range (31850-31881), so tshark decodes by port;
/// any client port the kernel picks (32768 and up) is higher, and Wireshark tries the lower first.
fn free_default_port() -> u16 {
    (31850..=31881)
        .find(|&p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok())
        .expect("a free UDP port in 31850..=31881 on 127.0.0.1")
}

/// Runs a UDP capture on a free port of the default range (retrying if another process takes
/// the port between the probe and the bind).
fn udp_capture(file: &Path, extra: &[&str]) -> serde_json::Value {
    for _ in 0..5 {
        let port = free_default_port().to_string();
        let args = [&["--pcap", file.to_str().unwrap(), "--port", &port][..], extra].concat();
        let out = erpc(&[&["capture", "--json"], &args[..]].concat());
        if String::from_utf8_lossy(&out.stderr).contains("in use") {
            continue;
        }
        assert!(out.status.success(), "erpc capture {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        return serde_json::from_slice(&out.stdout).expect("JSON summary");
    }
    panic!("no free UDP port in 31850..=31881 stayed free");
}

fn num(row: &BTreeMap<&str, String>, f: &str) -> u64 {
    let v = &row[f];
    let v = v.strip_prefix("0x").map_or_else(|| v.parse(), |h| u64::from_str_radix(h, 16));
    v.unwrap_or_else(|_| panic!("{f} = {:?} is not a number in {row:?}", row[f]))
}

/// The frames of a pcap file, read with the pcap crate.
fn frames(file: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(std::fs::File::open(file).unwrap()).expect("a pcap file");
    let mut v = Vec::new();
    while let Some(p) = r.next_packet() {
        v.push(p.unwrap().data.into_owned());
    }
    v
}

/// Checks a capture of `erpc capture` (summary `s`, frames of at most `mtu` bytes) decoded by
/// tshark, field by field against the Rust decoder and against what the run sent.
fn check(file: &Path, s: &serde_json::Value, rows: &[BTreeMap<&str, String>], mtu: usize) {
    let raw = frames(file);
    assert_eq!(raw.len() as u64, s["packets"].as_u64().unwrap(), "{s}");
    assert_eq!(rows.len(), raw.len(), "tshark reads every frame");
    let (req, resp, count) =
        (s["req_size"].as_u64().unwrap(), s["resp_size"].as_u64().unwrap(), s["rpcs"].as_u64().unwrap());
    let (cs, ss) = (s["client_session"].as_u64().unwrap(), s["server_session"].as_u64().unwrap());
    let (cport, sport) = (s["client_port"].as_u64().unwrap(), s["server_port"].as_u64().unwrap());

    // 1. Every frame: tshark's view equals the Rust wire module's, and the IPv4/UDP layers are
    //    sound (lengths, checksum), with no expert warnings.
    for (i, (f, row)) in raw.iter().zip(rows).enumerate() {
        let p = Packet::new_checked(&f[..]).unwrap_or_else(|e| panic!("frame {}: {e:?}", i + 1));
        let h = p.header();
        let want = [
            ("frame.len", f.len() as u64),
            ("ip.len", f.len() as u64 - 14),
            ("udp.length", f.len() as u64 - 34),
            ("ip.checksum.status", 1), // Good
            ("erpc.req_type", h.req_type as u64),
            ("erpc.msg_size", h.msg_size as u64),
            ("erpc.dest_session", h.dest_session_num as u64),
            ("erpc.pkt_type", h.pkt_type as u64),
            ("erpc.pkt_num", h.pkt_num as u64),
            ("erpc.req_num", h.req_num),
            ("erpc.magic", 11),
            ("erpc.data_len", (f.len() - PKT_HDR_LEN) as u64),
        ];
        for (field, v) in want {
            assert_eq!(num(row, field), v, "frame {}: {field} in {row:?}", i + 1);
        }
        // Wireshark's UDP dissector notes any datagram with a port in 33434..=33534 as a
        // "Possible traceroute" (a Chat-level note, not a warning); the kernel may pick such a port.
        let expert: Vec<&str> =
            row["_ws.expert"].split('|').filter(|e| !e.is_empty() && !e.contains("Possible traceroute")).collect();
        assert!(expert.is_empty(), "frame {}: expert info {expert:?} in {row:?}", i + 1);
        let to_server = num(row, "udp.dstport") == sport;
        assert_eq!(num(row, if to_server { "udp.srcport" } else { "udp.dstport" }), cport, "{row:?}");
    }

    // 2. Session management: connect first, disconnect last, with the sessions of the summary.
    let sm: Vec<_> = rows.iter().filter(|r| num(r, "erpc.dest_session") == SM_SESSION_NUM as u64).collect();
    let mut types: Vec<u64> = sm.iter().map(|r| num(r, "erpc.sm.type")).collect();
    types.dedup(); // a request resent after `sm_retry_ns` on a stalled machine, and its answer
    assert_eq!(
        types,
        [1, 7, 1, 2, 3, 4],
        "ConnectReq, ConnectRetry (the cookie), ConnectReq with the cookie, ConnectResp, DisconnectReq, \
         DisconnectResp"
    );
    let (retry, second) = (sm[1], sm.iter().filter(|r| num(r, "erpc.sm.type") == 1).nth(1).unwrap());
    assert_ne!(num(retry, "erpc.req_num"), 0, "the retry carries a cookie");
    assert_eq!(num(second, "erpc.req_num"), num(retry, "erpc.req_num"), "and the request repeats it");
    assert_eq!(num(&rows[0], "erpc.sm.type"), 1, "the capture starts with the connect request");
    assert_eq!(num(rows.last().unwrap(), "erpc.sm.type"), 4, "and ends with the disconnect response");
    for r in &sm {
        assert_eq!((num(r, "erpc.msg_size"), num(r, "erpc.sm.err")), (40, 0), "{r:?}");
        assert_eq!(num(r, "erpc.sm.client.port"), cport, "{r:?}");
        assert_eq!(num(r, "erpc.sm.server.port"), sport, "{r:?}");
        assert_eq!(num(r, "erpc.sm.client_session"), cs, "{r:?}");
    }
    let connect_resp = sm.iter().find(|r| num(r, "erpc.sm.type") == 2).unwrap();
    assert_eq!(num(connect_resp, "erpc.sm.server_session"), ss, "the connect response names the server session");
    let token = num(sm[0], "erpc.sm.token");

    // 3. The RPCs: request numbers follow from the token (slot 0, one RPC at a time: base + 8,
    //    + 16, ...), and each RPC has exactly the packets eRPC sends for these sizes.
    let dpp = (mtu - PKT_HDR_LEN) as u64;
    let pkts = |n: u64| n.div_ceil(dpp).max(1);
    let (rq, rp) = (pkts(req), pkts(resp));
    let mut want: Vec<(PktType, u64, u64)> = Vec::new(); // (type, pkt_num, msg_size)
    want.extend((0..rq).map(|k| (PktType::Req, k, req)));
    want.extend((0..rq - 1).map(|k| (PktType::ExplCr, k, 0)));
    want.extend((rq - 1..rq - 1 + rp).map(|k| (PktType::Resp, k, resp)));
    want.extend((rq..rq - 1 + rp).map(|k| (PktType::Rfr, k, 0)));
    want.sort_by_key(|w| (w.0 as u8, w.1));
    assert!(rq >= 2 && rp >= 2, "the run must show credit returns and RFRs: {rq} and {rp} packets");
    let mut by_req: BTreeMap<u64, Vec<(PktType, u64, u64)>> = BTreeMap::new();
    for r in rows.iter().filter(|r| num(r, "erpc.dest_session") != SM_SESSION_NUM as u64) {
        let t = match num(r, "erpc.pkt_type") {
            0 => PktType::Req,
            1 => PktType::Rfr,
            2 => PktType::ExplCr,
            _ => PktType::Resp,
        };
        assert_eq!(num(r, "erpc.req_type"), s["req_type"].as_u64().unwrap(), "{r:?}");
        // Requests and RFRs go to the server's session, credit returns and responses to ours.
        let to_server = matches!(t, PktType::Req | PktType::Rfr);
        assert_eq!(num(r, "erpc.dest_session"), if to_server { ss } else { cs }, "{r:?}");
        assert_eq!(num(r, "udp.dstport") == sport, to_server, "direction of {r:?}");
        by_req.entry(num(r, "erpc.req_num")).or_default().push((t, num(r, "erpc.pkt_num"), num(r, "erpc.msg_size")));
    }
    let req_nums: Vec<u64> = by_req.keys().copied().collect();
    let expect_nums: Vec<u64> = (1..=count).map(|i| req_num_base(token) + 8 * i).collect();
    assert_eq!(req_nums, expect_nums, "request numbers from the token {token:#x}");
    let clean = s["retransmissions"] == 0;
    for (n, mut got) in by_req {
        got.sort_by_key(|g| (g.0 as u8, g.1));
        if clean {
            assert_eq!(got, want, "packets of request {n}");
        } else {
            // Retransmissions repeat packets, never invent others.
            got.dedup();
            assert_eq!(got, want, "packets of request {n} (with retransmissions)");
        }
    }
}

#[test]
fn tshark_decodes_a_udp_capture_field_by_field() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let file = tmp("udp");
    let s = udp_capture(&file, &["--size", "3000", "--resp-size", "2000", "--count", "3"]);
    assert_eq!(
        (s["transport"].as_str(), s["rpcs"].as_u64(), s["req_size"].as_u64()),
        (Some("udp"), Some(3), Some(3000))
    );
    assert_eq!(s["sent"].as_u64().unwrap() + s["received"].as_u64().unwrap(), s["packets"].as_u64().unwrap());
    // Decoded through the port registration alone (heuristic off).
    let rows = decode(&file, &["--disable-heuristic", "erpc_udp"]);
    check(&file, &s, &rows, 1514);
    // Concrete values of this run: 3 RPCs x (3 request packets, 2 credit returns, 2 response
    // packets, 1 RFR) + 6 session-management packets (the connect takes a cookie round trip).
    if s["retransmissions"] == 0 {
        assert_eq!(rows.len(), 3 * 8 + 6);
    }
    let third = &rows[4];
    assert_eq!(
        ["erpc.req_type", "erpc.msg_size", "erpc.pkt_type", "erpc.pkt_num", "erpc.data_len"].map(|f| num(third, f)),
        [1, 3000, 0, 0, 1458],
        "the first request packet: type 1, 3000 B message, Req, packet 0, 1458 B of data"
    );
    assert_eq!(third["eth.src"], "00:00:00:00:00:00", "kernel UDP: no MAC addresses");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn the_heuristic_finds_erpc_on_any_port() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let file = tmp("heur");
    let s = capture(&["--pcap", file.to_str().unwrap(), "--port", "0", "--count", "2", "--size", "4000"]);
    assert!(s["server_port"].as_u64().unwrap() > 0);
    // No ports registered, heuristics tried before any dissector registered on either port.
    let no_ports = ["-o", "erpc.udp_ports:", "-o", "udp.try_heuristic_first:TRUE"];
    let rows = decode(&file, &no_ports);
    check(&file, &s, &rows, 1514);
    // And with the heuristic off, nothing is eRPC: it was the heuristic.
    let rows = decode(&file, &[&no_ports[..], &["--disable-heuristic", "erpc_udp"]].concat());
    assert_eq!(rows.len() as u64, s["packets"].as_u64().unwrap());
    assert!(rows.iter().all(|r| r["erpc.req_type"].is_empty()), "{:?}", rows[0]);
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn a_simulated_fabric_capture_decodes_too() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let file = tmp("sim");
    let s = capture(&["--transport", "sim", "--pcap", file.to_str().unwrap(), "--count", "2"]);
    assert_eq!((s["client_port"].as_u64(), s["server_port"].as_u64()), (Some(31850), Some(31851)));
    let rows = decode(&file, &["--disable-heuristic", "erpc_udp"]);
    check(&file, &s, &rows, erpc_dataplane::config::DEFAULT_MTU);
    assert_eq!(rows[0]["eth.src"], "02:00:00:00:00:00", "the fabric's MAC of port 0");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn an_afxdp_capture_on_a_veth_pair_decodes_with_real_addresses() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let c = erpc_hugepages::HugepageCounts::reserve_free(erpc_hugepages::PageSize::Huge2M, 32).expect("hugepages");
    assert!(c.free >= 32, "{c:?}");
    let file = tmp("afxdp");
    let s = capture(&["--transport", "afxdp", "--pcap", file.to_str().unwrap(), "--count", "2"]);
    assert_eq!((s["client_port"].as_u64(), s["server_port"].as_u64()), (Some(31851), Some(31850)));
    let rows = decode(&file, &["--disable-heuristic", "erpc_udp"]);
    check(&file, &s, &rows, 1514);
    // Raw frames: the veth pair's own MACs and the namespaces' addresses, not synthesised ones.
    assert_ne!(rows[0]["eth.src"], "00:00:00:00:00:00");
    assert_ne!(rows[0]["eth.src"], rows[0]["eth.dst"]);
    assert_eq!((rows[0]["ip.src"].as_str(), rows[0]["ip.dst"].as_str()), ("10.211.0.1", "10.211.0.2"));
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn pcap_to_standard_output() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = erpc(&["capture", "--pcap", "-", "--port", "0", "--count", "1", "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let s: serde_json::Value = serde_json::from_str(err.trim()).expect("the summary on standard error");
    let file = tmp("stdout");
    std::fs::write(&file, &out.stdout).unwrap();
    assert_eq!(frames(&file).len() as u64, s["packets"].as_u64().unwrap());
    let rows = decode(&file, &["-o", "udp.try_heuristic_first:TRUE"]);
    check(&file, &s, &rows, 1514);
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn user_mistakes_get_one_line_and_a_failure_exit() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    let dir = env!("CARGO_TARGET_TMPDIR");
    let f = tmp("mistakes");
    let f = f.to_str().unwrap();
    for (args, want) in [
        (vec!["--pcap", "/nonexistent-dir/x.pcap"], "cannot create /nonexistent-dir/x.pcap: No such file or directory"),
        (vec!["--pcap", dir], "Is a directory"),
        (vec!["--pcap", f, "--transport", "sim", "--port", "5"], "apply to --transport udp"),
        (vec!["--pcap", f, "--count", "0"], "--count must be 1..=100000"),
        (vec!["--pcap", f, "--size", "9000000"], "message sizes are limited to 8388608 bytes"),
        (vec!["--pcap", f, "--port", &taken_port], "is in use by another process"),
        (vec!["--pcap", f, "--transport", "sim", "--size", "8000000", "--resp-size", "8000000"], "16383 packets"),
        (vec!["--pcap", f, "--connect", "10.0.0.9:31850"], "needs --bind"),
        (vec!["--pcap", f, "--bind", "0.0.0.0:0"], "not 0.0.0.0"),
    ] {
        let out = erpc(&[&["capture"], &args[..]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let _ = std::fs::remove_file(f);
}

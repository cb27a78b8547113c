//! `erpc`: benchmarks and tools for the eRPC dataplane.

use clap::{Parser, Subcommand};
use erpc_tools::{bench, capture, echo, grpc_bench, jitter, kv, nic, sim};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "erpc", version, about = "eRPC in Rust: benchmarks, demos and NIC tools")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure RPC latency, rate or bandwidth.
    Bench(bench::BenchArgs),
    /// Make a few RPCs and write the client's packets to a pcap file (see tools/wireshark/erpc.lua).
    Capture(capture::CaptureArgs),
    /// Check a server byte for byte: echo requests of given sizes, and optionally shut it down.
    Echo(echo::EchoArgs),
    /// The same echo benchmark with gRPC (tonic over TCP on loopback), for comparison.
    GrpcBench(grpc_bench::GrpcBenchArgs),
    /// Run the dataplane in a simulated datacenter: incast, loss, scale.
    Sim(sim::SimArgs),
    /// The replicated key-value store (raft-rs over eRPC): serve, put, get, del, bench, local.
    Kv(kv::KvArgs),
    /// List NICs and bind them to vfio-pci.
    Nic(nic::NicArgs),
    /// How often this machine stops a spinning thread, and the tail that gives fixed work.
    Jitter(jitter::JitterArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Bench(a) => bench::run(a),
        Cmd::Capture(a) => capture::run(a),
        Cmd::Echo(a) => echo::run(a),
        Cmd::GrpcBench(a) => grpc_bench::run(a),
        Cmd::Sim(a) => sim::run(a),
        Cmd::Kv(a) => kv::run(a),
        Cmd::Nic(a) => nic::run(a),
        Cmd::Jitter(a) => jitter::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // What failed, why, what to do: the error and its causes, on one line.
            eprintln!("erpc: {}", erpc_tools::one_line(&*e));
            ExitCode::FAILURE
        }
    }
}

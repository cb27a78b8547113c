//! `erpc`: benchmarks and tools for the eRPC dataplane.

mod bench;

use clap::{Parser, Subcommand, ValueEnum};
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
}

/// Which packet I/O to run over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    /// The in-memory NIC (both endpoints in this process, on one core).
    Sim,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Bench(a) => bench::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("erpc: {e}");
            ExitCode::FAILURE
        }
    }
}

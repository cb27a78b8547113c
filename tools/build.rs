//! Generates the tonic stubs of `erpc grpc-bench`'s echo service with tonic-build's manual
//! builder: the same server and client code `tonic-build` makes from a `.proto` file, without
//! needing `protoc`. The messages are hand-written prost structs (`src/grpc_bench.rs`).

fn main() {
    let echo = tonic_build::manual::Method::builder()
        .name("echo")
        .route_name("Echo")
        .input_type("crate::grpc_bench::EchoRequest")
        .output_type("crate::grpc_bench::EchoResponse")
        .codec_path("tonic_prost::ProstCodec")
        .build();
    let service = tonic_build::manual::Service::builder().name("Echo").package("erpc.bench").method(echo).build();
    tonic_build::manual::Builder::new().build_transport(false).compile(&[service]);
    println!("cargo:rerun-if-changed=build.rs");
}

//! Generates the tonic stubs of `erpc grpc-bench`'s echo service with tonic-build's manual
//! builder: the same server and client code `tonic-build` makes from a `.proto` file, without
//! needing `protoc`. The messages are hand-written prost structs (`src/grpc_bench.rs`). Also the
//! client of etcd's KV service for `erpc kv etcd-bench` (`src/kv_etcd.rs`).

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
    // `erpc kv etcd-bench`: the client of etcd's KV service (etcdserverpb.KV, its Put and Range
    // methods), with hand-written prost messages in src/kv_etcd.rs.
    let method = |name: &str, route: &str, req: &str, resp: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("crate::kv_etcd::{req}"))
            .output_type(format!("crate::kv_etcd::{resp}"))
            .codec_path("tonic_prost::ProstCodec")
            .build()
    };
    let kv = tonic_build::manual::Service::builder()
        .name("KV")
        .package("etcdserverpb")
        .method(method("put", "Put", "PutRequest", "PutResponse"))
        .method(method("range", "Range", "RangeRequest", "RangeResponse"))
        .build();
    tonic_build::manual::Builder::new().build_server(false).build_transport(false).compile(&[kv]);
    println!("cargo:rerun-if-changed=build.rs");
}

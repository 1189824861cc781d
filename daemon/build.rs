//! Compiles the Kubernetes CRI v1 protocol (`proto/cri/v1/api.proto`, vendored from
//! kubernetes/cri-api) into a tonic client with protox, a pure-Rust protobuf compiler, so that
//! building habitd needs no `protoc`.

fn main() {
    let proto = "proto/cri/v1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = match protox::compile([proto], ["proto"]) {
        Ok(d) => d,
        Err(e) => panic!("cannot compile {proto}: {e}"),
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .compile_fds(descriptors)
    {
        panic!("cannot generate the CRI client from {proto}: {e}");
    }
}

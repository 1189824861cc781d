//! Compiles the CRI v1 protocol (the daemon's vendored `daemon/proto/cri/v1/api.proto`) into a
//! tonic client for the end-to-end tests, which create pods and containers through CRI. protox
//! is a pure-Rust protobuf compiler: no `protoc` needed.

fn main() {
    let proto = "daemon/proto/cri/v1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = match protox::compile([proto], ["daemon/proto"]) {
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

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
        .compile_fds(descriptors.clone())
    {
        panic!("cannot generate the CRI client from {proto}: {e}");
    }
    // A server for the unit tests' fake runtimes (compiled only under cfg(test)).
    let Some(out) = std::env::var_os("OUT_DIR") else {
        panic!("cargo sets OUT_DIR for build scripts");
    };
    let server_dir = std::path::Path::new(&out).join("server");
    if let Err(e) = std::fs::create_dir_all(&server_dir) {
        panic!("cannot create {}: {e}", server_dir.display());
    }
    if let Err(e) = tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .build_transport(false)
        .generate_default_stubs(true)
        .out_dir(&server_dir)
        .compile_fds(descriptors)
    {
        panic!("cannot generate the CRI test server from {proto}: {e}");
    }
}

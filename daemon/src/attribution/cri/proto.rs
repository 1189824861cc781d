//! The Kubernetes CRI v1 messages and the `RuntimeService` gRPC client, generated at build
//! time from `proto/cri/v1/api.proto` (see `build.rs`).

#![allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    dead_code
)]

tonic::include_proto!("runtime.v1");

/// The same protocol's server side, for fake runtimes in tests.
#[cfg(test)]
pub mod server {
    #![allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/server/runtime.v1.rs"));
}

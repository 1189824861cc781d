//! habitd, the daemon: probes -> workload attribution -> (learning, scoring) -> alerts, metrics.
//!
//! The binary (`main.rs`) only parses flags; everything here is a library so that tests drive
//! the same code.

pub mod config;
pub mod daemon;
pub mod http;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod proctable;
pub mod resolve;

//! habitd, the daemon: probes -> workload attribution -> (learning, scoring) -> alerts, metrics.
//!
//! The binary (`main.rs`) only parses flags; everything here is a library so that tests drive
//! the same code.

pub mod alerting;
pub mod alerts;
pub mod api;
pub mod config;
pub mod daemon;
pub mod default_rules;
pub mod fusion;
pub mod http;
pub mod learning;
pub mod listeners;
pub mod metrics;
pub mod observe;
pub mod output;
pub mod pipeline;
pub mod proctable;
pub mod rates;
pub mod resolve;
pub mod rule_fields;
pub mod sequence;

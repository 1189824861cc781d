//! habitd, the daemon: probes -> workload attribution -> (learning, scoring) -> alerts, metrics.
//!
//! The binary (`main.rs`) parses flags into a [`Config`] and calls [`run`]. Modules are private
//! so that the compiler reports code nobody calls; each folder is one job:
//!
//! - `config`: every setting, its default and its validation;
//! - `app`: the running process (start-up, the event loop, shutdown);
//! - `attribution`: cgroup id -> workload (cgroup index, container runtimes);
//! - `process`: the process table, `/proc` seeding, existing listeners;
//! - `pipeline`: per event: attribute -> rules -> learn or score -> fuse;
//! - `falco`: the one Falco view of an event (fields for rules, JSON for output);
//! - `rules`: built-in and operator rules, fusion of rule hits with baselines;
//! - `learning`: per-workload lifecycle, observation, held items, operator commands, views;
//! - `sequences`, `rates`: the syscall-sequence and rate models' daemon side;
//! - `alerts`: the alert record, aggregation of repeats, sinks;
//! - `response`: the opt-in response to certain alerts (kill, pause, stop), its policy and limit;
//! - `tamper`: tamper evidence (probes detached, maps written by others) as alerts and health;
//! - `http`: `/healthz`, `/metrics` and the `/api/v1` routes; `metrics`: the Prometheus registry.

mod alerts;
mod app;
mod attribution;
mod config;
mod falco;
mod heap;
mod host;
mod http;
mod learning;
mod metrics;
mod notify;
mod pipeline;
mod process;
mod rates;
mod response;
mod rules;
mod sequences;
mod tamper;

pub use app::run;
pub use config::{Config, Flags, default_toml};

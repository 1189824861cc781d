//! Workload identity and profiles.
pub mod api;
pub mod baseline;
pub mod error;
pub mod export;
pub mod generalise;
pub mod held;
pub mod observation;
pub mod profile;
pub mod store;
pub mod workload;

//! habitd's eBPF probes and their user-space side.
//!
//! - `probes/bpf/` holds the C programs (CO-RE) and `lib/events.h`, the event ABI;
//! - [`abi`] mirrors that header with `#[repr(C)]` types;
//! - [`decode`] turns ring-buffer records into typed [`event::Event`]s, rejecting bad ones;
//! - [`loader`] loads and attaches the programs with aya and exposes the event stream and the
//!   in-kernel maps, one module per map family (counters, sequences, open de-duplication,
//!   listeners);
//! - [`kernel_features`] reports the optional program types (fentry, BPF-LSM) this kernel
//!   allows, probed at load (not Linux `CAP_*` capabilities).

pub mod abi;
pub mod decode;
pub mod errno_names;
pub mod event;
pub mod kernel_features;
pub mod loader;
pub mod syscall_names;

pub use event::{Event, EventBody, FileChange, FileOp, Header, PrivOp, Protocol};
pub use kernel_features::KernelFeatures;
pub use loader::{
    BenchFloor, EventStream, KernelCounters, LostDelta, ProbeConfig, ProbeError, Probes,
    ResultHook, SequenceMaps, SyscallDelta, Tamper,
};

//! Loading and attaching the probes with aya, and the typed handles user space keeps.
//!
//! Every program is a `tp_btf` program: on these kernels they need neither tracefs nor kprobes,
//! and they are the cheapest way to sit on `sys_enter`. Dropping [`Probes`] detaches everything.
//!
//! This module loads the object, attaches the programs and owns the result ([`Probes`]); each
//! family of maps that user space reads or writes has its own module, named after its job:
//!
//! - `events` ([`EventStream`]): the ring buffer, decoded into events;
//! - `counters` ([`KernelCounters`]): syscalls per cgroup slot, the slot bookkeeping, drops per
//!   CPU, records lost per cgroup slot and kind;
//! - `sequences` ([`SequenceMaps`]): per-slot sequence modes and the (workload, 6-gram) table;
//! - `dedup`: the open de-duplication interval ([`Probes::set_epoch`]);
//! - `listeners`: listeners seeded from /proc ([`Probes::seed_listener`]);
//! - `integrity` ([`Tamper`]): whether the programs are still attached and the maps only user
//!   space writes still hold what it wrote ([`Probes::check_integrity`]).
//!
//! Maps only the kernel uses (task storage, scratch, the open LRU) have no handle here.

mod counters;
mod dedup;
mod events;
mod integrity;
mod listeners;
mod sequences;

use aya::maps::{Map, MapError, RingBuf};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};

pub use counters::{KernelCounters, LostDelta, SyscallDelta};
pub use events::EventStream;
pub use integrity::Tamper;
pub use sequences::SequenceMaps;

use crate::abi;
use crate::kernel_features::KernelFeatures;
use dedup::DedupEpoch;
use integrity::AttachedPrograms;
use listeners::Listeners;

/// The compiled probes object (built by build.rs from probes/bpf, or the checked-in copy).
static PROBES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/habit.bpf.o"));

/// Programs attached by [`Probes::load`] and the kernel tracepoint each one sits on.
pub const PROGRAMS: [(&str, &str); 5] = [
    ("habit_exec", "sched_process_exec"),
    ("habit_fork", "sched_process_fork"),
    ("habit_exit", "sched_process_exit"),
    ("habit_sock_state", "inet_sock_set_state"),
    ("habit_sys_enter", "sys_enter"),
];

/// Errors of loading, attaching and reading the probes.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The kernel exposes no BTF (`/sys/kernel/btf/vmlinux`): tp_btf programs and CO-RE need it.
    #[error("kernel BTF is not available (/sys/kernel/btf/vmlinux): {0}")]
    Btf(#[source] aya::BtfError),
    /// The object could not be loaded (verifier rejection, missing privilege, bad relocation).
    #[error("loading the probes object failed (are you root?): {0}")]
    Load(#[source] aya::EbpfError),
    /// A program is missing from the object (object and binary out of step).
    #[error("program {0} is missing from the probes object")]
    MissingProgram(&'static str),
    /// A map is missing from the object or has an unexpected type.
    #[error("map {name} is missing or has the wrong type: {detail}")]
    Map { name: &'static str, detail: String },
    /// The verifier or the kernel refused a program.
    #[error("program {program} on tracepoint {tracepoint}: {source}")]
    Program {
        program: &'static str,
        tracepoint: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map operation failed at run time.
    #[error("map {name}: {source}")]
    MapOp {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// Registering the ring buffer with the async reactor failed.
    #[error("ring buffer: {0}")]
    Io(#[from] std::io::Error),
}

/// How to load the probes.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Process id whose activity the probes ignore (habitd itself).
    pub self_tgid: u32,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// Attach only the empty `sys_enter` program (overhead benchmark reference).
    pub empty_only: bool,
    /// An object to load instead of the built-in one, with the same programs and maps: the
    /// overhead benchmark measures a reference build (the previous release's prebuilt
    /// object) beside this one. `None`: the built-in object.
    pub object: Option<&'static [u8]>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            self_tgid: std::process::id(),
            ring_buffer_bytes: 8 << 20,
            empty_only: false,
            object: None,
        }
    }
}

/// Loaded and attached probes with the user-space handles of their maps.
pub struct Probes {
    /// Owns the programs: dropping it detaches them.
    _ebpf: Ebpf,
    ring: Option<RingBuf<aya::maps::MapData>>,
    pub counters: KernelCounters,
    pub sequences: SequenceMaps,
    epoch: DedupEpoch,
    listeners: Listeners,
    kernel_features: KernelFeatures,
    attached: AttachedPrograms,
}

/// Takes map `name` out of the object and converts it to its typed handle.
fn take_typed<M, E: std::fmt::Display>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(Map) -> Result<M, E>,
) -> Result<M, ProbeError> {
    let map = ebpf.take_map(name).ok_or(ProbeError::Map {
        name,
        detail: "missing".into(),
    })?;
    convert(map).map_err(|e| ProbeError::Map {
        name,
        detail: e.to_string(),
    })
}

/// Wraps a failed operation on map `name`.
fn map_op(name: &'static str) -> impl Fn(MapError) -> ProbeError {
    move |source| ProbeError::MapOp { name, source }
}

impl Probes {
    /// Loads the object into the running kernel and attaches every program.
    pub fn load(config: &ProbeConfig) -> Result<Probes, ProbeError> {
        let btf = Btf::from_sys_fs().map_err(ProbeError::Btf)?;
        let attach_ns = monotonic_ns();
        let wakeup_bytes = events::wakeup_bytes(config.ring_buffer_bytes);
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            // Task storage (the per-task counter-slot cache) has no aya wrapper; the kernel side
            // is all that uses it.
            .allow_unsupported_maps()
            .override_global("habit_self_tgid", &config.self_tgid, true)
            .override_global("habit_attach_ns", &attach_ns, true)
            .override_global("habit_wakeup_bytes", &wakeup_bytes, true)
            .map_max_entries("habit_events", config.ring_buffer_bytes)
            .load(config.object.unwrap_or(PROBES_OBJECT))
            .map_err(ProbeError::Load)?;

        let programs: &[(&'static str, &'static str)] = if config.empty_only {
            &[("habit_bench_empty", "sys_enter")]
        } else {
            &PROGRAMS
        };
        // The free counter slots are queued before anything is attached: a syscall counted
        // before then would find no slot and be recorded as a drop.
        let counters = KernelCounters::new(&mut ebpf)?;
        let mut attached = AttachedPrograms::default();
        for &(name, tracepoint) in programs {
            attach(&mut ebpf, &btf, name, tracepoint)?;
            match ebpf.program(name).map(|p| p.info()) {
                Some(Ok(info)) => attached.add(name, tracepoint, info.id()),
                _ => tracing::warn!(
                    message =
                        "Cannot read a program's id: whether it stays attached is not checked.",
                    program = name
                ),
            }
        }
        let kernel_features = if config.empty_only {
            KernelFeatures::not_probed()
        } else {
            KernelFeatures::detect(&mut ebpf, &btf)
        };

        let ring = take_typed(&mut ebpf, "habit_events", RingBuf::try_from)?;
        let epoch = DedupEpoch::new(&mut ebpf)?;
        let listeners = Listeners::new(&mut ebpf)?;
        let sequences = SequenceMaps::new(&mut ebpf)?;
        Ok(Probes {
            _ebpf: ebpf,
            ring: Some(ring),
            counters,
            sequences,
            epoch,
            listeners,
            kernel_features,
            attached,
        })
    }

    /// Tamper evidence (see `integrity`): the programs no longer attached and the map entries
    /// someone else wrote (those are written back). Empty when all is as habitd left it.
    pub fn check_integrity(&mut self) -> Result<Vec<Tamper>, ProbeError> {
        let mut found = self.attached.detached().unwrap_or_default();
        found.extend(self.epoch.check()?);
        found.extend(self.sequences.check_slots()?);
        Ok(found)
    }

    /// What the kernel offers beyond what habitd requires (program types detected at load).
    pub fn kernel_features(&self) -> &KernelFeatures {
        &self.kernel_features
    }

    /// The event stream; it can be taken once.
    pub fn take_events(&mut self) -> Result<EventStream, ProbeError> {
        let ring = self.ring.take().ok_or(ProbeError::Map {
            name: "habit_events",
            detail: "event stream already taken".into(),
        })?;
        EventStream::new(ring)
    }

    /// Starts a new de-duplication interval: the kernel resends each open once in it.
    pub fn set_epoch(&mut self, epoch: u64) -> Result<(), ProbeError> {
        self.epoch.set(epoch)
    }

    /// Records a listener the kernel could not see start (it listened before habitd), so that
    /// its inbound connections are attributed to it.
    pub fn seed_listener(
        &mut self,
        key: abi::ListenerKey,
        owner: abi::Hdr,
    ) -> Result<(), ProbeError> {
        self.listeners.seed(key, owner)
    }

    /// Forgets a cgroup that no longer exists: its slot's sequence mode is switched off before
    /// the slot goes back to the free queue (a new cgroup must not inherit it). Returns the
    /// cgroup's records lost since the last [`KernelCounters::read_lost`], if any.
    pub fn release_cgroup(&mut self, cgroup_id: u64) -> Result<Option<LostDelta>, ProbeError> {
        if let Some(slot) = self.counters.slot_of(cgroup_id) {
            self.sequences.set_slot(slot, abi::SeqSlot::default())?;
        }
        self.counters.release_cgroup(cgroup_id)
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `task_struct::start_time`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn attach(
    ebpf: &mut Ebpf,
    btf: &Btf,
    name: &'static str,
    tracepoint: &'static str,
) -> Result<(), ProbeError> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(|source| ProbeError::Program {
            program: name,
            tracepoint,
            source,
        })?;
    program
        .load(tracepoint, btf)
        .and_then(|()| program.attach().map(drop))
        .map_err(|source| ProbeError::Program {
            program: name,
            tracepoint,
            source,
        })
}

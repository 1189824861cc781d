//! Loading and attaching the probes with aya, and the typed handles user space keeps.
//!
//! Every program is a `tp_btf` program: on these kernels they need neither tracefs nor kprobes,
//! and they are the cheapest way to sit on `sys_enter` and `sys_exit`. Dropping [`Probes`]
//! detaches everything. (The overhead benchmark alone attaches a plain tracepoint program, the
//! floor of the per-syscall exit tracepoints habitd does not use: see [`BenchFloor`].)
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
use aya::programs::{BtfTracePoint, TracePoint};
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

/// The per-syscall exit tracepoints of the syscalls habitd reports at exit, with their
/// results (see [`ResultHook`]).
const RESULT_SYSCALLS: [&str; 9] = [
    "sys_exit_open",
    "sys_exit_openat",
    "sys_exit_openat2",
    "sys_exit_creat",
    "sys_exit_connect",
    "sys_exit_bind",
    "sys_exit_dup",
    "sys_exit_dup2",
    "sys_exit_dup3",
];

/// Where the results of opens, connect and bind are read (`probes/bpf/syscalls.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultHook {
    /// `habit_sys_exit_tp` on each per-syscall exit tracepoint (`syscalls/sys_exit_openat`,
    /// ...): other syscalls pay only the kernel's per-syscall filter. Needs tracefs.
    ExitTracepoints,
    /// `habit_sys_exit` on `tp_btf/sys_exit`, when tracefs is not available: runs on every
    /// syscall's exit and returns at once for the others (measured dearer).
    BtfSysExit,
}

impl ResultHook {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultHook::ExitTracepoints => "syscalls/sys_exit_* tracepoints",
            ResultHook::BtfSysExit => "tp_btf/sys_exit",
        }
    }
}

/// Which empty programs the overhead benchmark's floor configurations attach
/// ([`ProbeConfig::empty_only`]): the cost of a hook itself, before any work in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BenchFloor {
    /// The empty `tp_btf/sys_enter` program only.
    #[default]
    SysEnter,
    /// It and an empty `tp_btf/sys_exit` program (runs on every syscall's exit).
    SysEnterAndExit,
    /// It and an empty program on each per-syscall exit tracepoint of [`RESULT_SYSCALLS`]
    /// (`tracepoint/syscalls/sys_exit_openat`, ...; needs tracefs at /sys/kernel/tracing).
    SysEnterAndExitTracepoints,
}

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
    /// Attach only empty programs (overhead benchmark reference), those `bench_floor` names.
    pub empty_only: bool,
    /// Which empty programs `empty_only` attaches.
    pub bench_floor: BenchFloor,
    /// Read results on `tp_btf/sys_exit` even where the exit tracepoints can be used: the
    /// fallback's own test (it is otherwise taken only on hosts without tracefs).
    pub force_btf_sys_exit: bool,
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
            bench_floor: BenchFloor::SysEnter,
            force_btf_sys_exit: false,
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
    result_hook: Option<ResultHook>,
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

        let programs: &[(&'static str, &'static str)] =
            match (config.empty_only, config.bench_floor) {
                (false, _) => &PROGRAMS,
                (true, BenchFloor::SysEnterAndExit) => &[
                    ("habit_bench_empty", "sys_enter"),
                    ("habit_bench_empty_exit", "sys_exit"),
                ],
                (true, _) => &[("habit_bench_empty", "sys_enter")],
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
        if config.empty_only && config.bench_floor == BenchFloor::SysEnterAndExitTracepoints {
            attach_exit_tracepoints(&mut ebpf, "habit_bench_empty_exit_tp")?;
        }
        // An object from before results (a benchmark's reference build) reports its opens
        // and connects at entry and has no result programs.
        let has_result_programs = ebpf.program("habit_sys_exit").is_some();
        let result_hook = if config.empty_only || (config.object.is_some() && !has_result_programs)
        {
            None
        } else {
            Some(attach_result_hook(
                &mut ebpf,
                &btf,
                config.force_btf_sys_exit,
            )?)
        };
        // The result program is watched like the others (tamper evidence) where it has a link.
        if let Some(hook) = result_hook {
            let (program, tracepoint) = match hook {
                ResultHook::BtfSysExit => ("habit_sys_exit", "sys_exit"),
                ResultHook::ExitTracepoints => ("habit_sys_exit_tp", "syscalls/sys_exit_*"),
            };
            let watched = match ebpf.program(program).map(|p| p.info()) {
                Some(Ok(info)) => attached.add_if_linked(program, tracepoint, info.id()),
                _ => false,
            };
            if !watched {
                tracing::warn!(
                    message = "The result program has no BPF link to watch: whether it stays attached is not checked.",
                    program
                );
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
            result_hook,
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

    /// Where syscall results are read (`None` for the benchmark's empty programs, and for a
    /// reference object built before results were reported).
    pub fn result_hook(&self) -> Option<ResultHook> {
        self.result_hook
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

/// The result programs: on the per-syscall exit tracepoints (mounting tracefs at
/// /sys/kernel/tracing if it is not there), or, when that fails or `force_btf` asks, on
/// `tp_btf/sys_exit`.
fn attach_result_hook(
    ebpf: &mut Ebpf,
    btf: &Btf,
    force_btf: bool,
) -> Result<ResultHook, ProbeError> {
    const TP: &str = "habit_sys_exit_tp";
    if force_btf {
        attach(ebpf, btf, "habit_sys_exit", "sys_exit")?;
        return Ok(ResultHook::BtfSysExit);
    }
    let tracepoints = ensure_tracefs()
        .and_then(|()| attach_exit_tracepoints(ebpf, TP).map_err(|e| e.to_string()));
    match tracepoints {
        Ok(()) => Ok(ResultHook::ExitTracepoints),
        Err(why) => {
            // Unloading detaches whatever part was attached: no result is reported twice.
            if let Some(p) = ebpf.program_mut(TP) {
                let tp: Result<&mut TracePoint, _> = p.try_into();
                if let Ok(tp) = tp {
                    let _ = tp.unload();
                }
            }
            tracing::warn!(
                message = "Per-syscall exit tracepoints unavailable; reading results on tp_btf/sys_exit (dearer for every syscall).",
                %why
            );
            attach(ebpf, btf, "habit_sys_exit", "sys_exit")?;
            Ok(ResultHook::BtfSysExit)
        }
    }
}

/// Mounts tracefs at /sys/kernel/tracing unless it is there (these machines do not mount it
/// by default); errors say why the per-syscall tracepoints cannot be used.
pub fn ensure_tracefs() -> Result<(), String> {
    const EVENTS: &str = "/sys/kernel/tracing/events/syscalls";
    if std::path::Path::new(EVENTS).exists() {
        return Ok(());
    }
    // SAFETY: NUL-terminated literals; no data argument.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "mounting tracefs at /sys/kernel/tracing: {}",
            std::io::Error::last_os_error()
        ));
    }
    if !std::path::Path::new(EVENTS).exists() {
        return Err(format!(
            "{EVENTS} is missing (kernel without CONFIG_FTRACE_SYSCALLS)"
        ));
    }
    Ok(())
}

/// Program `name` (a `tracepoint` program) attached to each of [`RESULT_SYSCALLS`]'s exit
/// tracepoints: habitd's result program, or the benchmark's empty one.
fn attach_exit_tracepoints(ebpf: &mut Ebpf, name: &'static str) -> Result<(), ProbeError> {
    const NAME: &str = "syscalls";
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(|source| ProbeError::Program {
            program: name,
            tracepoint: NAME,
            source,
        })?;
    program.load().map_err(|source| ProbeError::Program {
        program: name,
        tracepoint: NAME,
        source,
    })?;
    for tracepoint in RESULT_SYSCALLS {
        program
            .attach(NAME, tracepoint)
            .map_err(|source| ProbeError::Program {
                program: name,
                tracepoint,
                source,
            })?;
    }
    Ok(())
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

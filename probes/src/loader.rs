//! Loading and attaching the probes with aya, and the typed handles user space keeps.
//!
//! Every program is a `tp_btf` program: on these kernels they need neither tracefs nor kprobes,
//! and they are the cheapest way to sit on `sys_enter`. Dropping [`Probes`] detaches everything.

use std::collections::HashMap as StdHashMap;
use std::os::fd::AsRawFd;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, Queue, RingBuf};
use aya::programs::BtfTracePoint;
use aya::util::nr_cpus;
use aya::{Btf, Ebpf, EbpfLoader};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::abi;
use crate::capabilities::Capabilities;
use crate::decode::{DecodeError, decode};
use crate::event::Event;

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
        source: aya::maps::MapError,
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
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            self_tgid: std::process::id(),
            ring_buffer_bytes: 8 << 20,
            empty_only: false,
        }
    }
}

/// Loaded and attached probes with the user-space handles of their maps.
pub struct Probes {
    /// Owns the programs: dropping it detaches them.
    _ebpf: Ebpf,
    ring: Option<RingBuf<MapData>>,
    pub counters: KernelCounters,
    pub sequences: SequenceMaps,
    epoch: Array<MapData, u64>,
    listeners: HashMap<MapData, abi::ListenerKey, abi::Hdr>,
    capabilities: Capabilities,
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::Map {
        name,
        detail: "missing".into(),
    })
}

fn typed<M, E: std::fmt::Display>(name: &'static str, r: Result<M, E>) -> Result<M, ProbeError> {
    r.map_err(|e| ProbeError::Map {
        name,
        detail: e.to_string(),
    })
}

impl Probes {
    /// Loads the object into the running kernel and attaches every program.
    pub fn load(config: &ProbeConfig) -> Result<Probes, ProbeError> {
        let btf = Btf::from_sys_fs().map_err(ProbeError::Btf)?;
        let attach_ns = monotonic_ns();
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            // Task storage (the per-task counter-slot cache) has no aya wrapper; the kernel side
            // is all that uses it.
            .allow_unsupported_maps()
            .override_global("habit_self_tgid", &config.self_tgid, true)
            .override_global("habit_attach_ns", &attach_ns, true)
            .map_max_entries("habit_events", config.ring_buffer_bytes)
            .load(PROBES_OBJECT)
            .map_err(ProbeError::Load)?;

        let programs: &[(&'static str, &'static str)] = if config.empty_only {
            &[("habit_bench_empty", "sys_enter")]
        } else {
            &PROGRAMS
        };
        // The free counter slots are queued before anything is attached: a syscall counted
        // before then would find no slot and be recorded as a drop.
        let counters = KernelCounters::new(&mut ebpf)?;
        for &(name, tracepoint) in programs {
            attach(&mut ebpf, &btf, name, tracepoint)?;
        }
        let capabilities = if config.empty_only {
            Capabilities {
                lockdown: String::new(),
                fentry: Err("not probed".into()),
                lsm: Err("not probed".into()),
                kprobes: false,
                tracefs: false,
            }
        } else {
            Capabilities::detect(&mut ebpf, &btf)
        };

        let ring = typed(
            "habit_events",
            RingBuf::try_from(take_map(&mut ebpf, "habit_events")?),
        )?;
        let epoch = typed(
            "habit_epoch",
            Array::try_from(take_map(&mut ebpf, "habit_epoch")?),
        )?;
        let listeners = typed(
            "habit_listeners",
            HashMap::try_from(take_map(&mut ebpf, "habit_listeners")?),
        )?;
        let sequences = SequenceMaps::new(&mut ebpf)?;
        Ok(Probes {
            _ebpf: ebpf,
            ring: Some(ring),
            counters,
            sequences,
            epoch,
            listeners,
            capabilities,
        })
    }

    /// What the kernel offers beyond what habitd requires (detected at load).
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The event stream; it can be taken once.
    pub fn take_events(&mut self) -> Result<EventStream, ProbeError> {
        let ring = self.ring.take().ok_or(ProbeError::Map {
            name: "habit_events",
            detail: "event stream already taken".into(),
        })?;
        // SAFETY: the RingBuf owns its map's file descriptor, which stays open and unchanged for
        // as long as the RingBuf (and so the AsyncFd that owns it) lives.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(EventStream { ring })
    }

    /// Starts a new de-duplication interval: the kernel resends each open once in it.
    pub fn set_epoch(&mut self, epoch: u64) -> Result<(), ProbeError> {
        self.epoch
            .set(0, epoch, 0)
            .map_err(|source| ProbeError::MapOp {
                name: "habit_epoch",
                source,
            })
    }

    /// Records a listener the kernel could not see start (it listened before habitd), so that
    /// its inbound connections are attributed to it.
    pub fn seed_listener(
        &mut self,
        key: abi::ListenerKey,
        owner: abi::Hdr,
    ) -> Result<(), ProbeError> {
        self.listeners
            .insert(key, owner, 1) // BPF_NOEXIST: never overwrite what the kernel saw
            .or_else(|e| match e {
                aya::maps::MapError::SyscallError(ref s)
                    if s.io_error.raw_os_error() == Some(libc::EEXIST) =>
                {
                    Ok(())
                }
                source => Err(ProbeError::MapOp {
                    name: "habit_listeners",
                    source,
                }),
            })
    }
}

impl Probes {
    /// Forgets a cgroup that no longer exists: its slot's sequence mode is switched off before
    /// the slot goes back to the free queue (a new cgroup must not inherit it).
    pub fn release_cgroup(&mut self, cgroup_id: u64) -> Result<(), ProbeError> {
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

/// Async stream of decoded events from the ring buffer.
pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventStream {
    /// Waits for records, then decodes everything available into `out` (cleared first).
    /// Records that fail to decode are passed to `on_error` and skipped.
    pub async fn next_batch(
        &mut self,
        out: &mut Vec<Event>,
        mut on_error: impl FnMut(DecodeError),
    ) -> Result<(), ProbeError> {
        out.clear();
        loop {
            let mut guard = self.ring.readable_mut().await?;
            let ring = guard.get_inner_mut();
            while let Some(record) = ring.next() {
                match decode(&record) {
                    Ok(ev) => out.push(ev),
                    Err(e) => on_error(e),
                }
                if out.len() >= 4096 {
                    return Ok(());
                }
            }
            guard.clear_ready();
            if !out.is_empty() {
                return Ok(());
            }
        }
    }

    /// The ring buffer's file descriptor (for diagnostics).
    pub fn raw_fd(&self) -> i32 {
        self.ring.get_ref().as_raw_fd()
    }
}

/// Aggregated in-kernel counters: syscalls per (cgroup, syscall) and drops per (reason, CPU).
pub struct KernelCounters {
    counts: PerCpuArray<MapData, [u64; abi::MAX_SYSCALLS as usize]>,
    slots: HashMap<MapData, u64, u32>,
    free_slots: Queue<MapData, u32>,
    drops: PerCpuArray<MapData, u64>,
    /// Totals seen at the previous read, per slot, to report deltas.
    previous: StdHashMap<u32, Box<[u64; abi::MAX_SYSCALLS as usize]>>,
}

/// Syscalls made by one cgroup since the previous read: (syscall number, count), non-zero only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallDelta {
    pub cgroup_id: u64,
    pub counts: Vec<(u32, u64)>,
}

impl KernelCounters {
    fn new(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let counts = typed(
            "habit_syscall_counts",
            PerCpuArray::try_from(take_map(ebpf, "habit_syscall_counts")?),
        )?;
        let slots = typed(
            "habit_cgroup_slots",
            HashMap::try_from(take_map(ebpf, "habit_cgroup_slots")?),
        )?;
        let mut free_slots: Queue<MapData, u32> = typed(
            "habit_free_slots",
            Queue::try_from(take_map(ebpf, "habit_free_slots")?),
        )?;
        let drops = typed(
            "habit_drops",
            PerCpuArray::try_from(take_map(ebpf, "habit_drops")?),
        )?;
        for slot in 0..abi::MAX_CGROUP_SLOTS {
            free_slots
                .push(slot, 0)
                .map_err(|source| ProbeError::MapOp {
                    name: "habit_free_slots",
                    source,
                })?;
        }
        Ok(Self {
            counts,
            slots,
            free_slots,
            drops,
            previous: StdHashMap::new(),
        })
    }

    /// Reads every cgroup's syscall counts and returns what changed since the previous read.
    pub fn read_syscalls(&mut self) -> Result<Vec<SyscallDelta>, ProbeError> {
        let mut deltas = Vec::new();
        let slots: Vec<(u64, u32)> = self.slots.iter().filter_map(Result::ok).collect();
        for (cgroup_id, slot) in slots {
            let per_cpu = self
                .counts
                .get(&slot, 0)
                .map_err(|source| ProbeError::MapOp {
                    name: "habit_syscall_counts",
                    source,
                })?;
            let mut total = Box::new([0u64; abi::MAX_SYSCALLS as usize]);
            for row in per_cpu.iter() {
                for (t, c) in total.iter_mut().zip(row.iter()) {
                    *t += c;
                }
            }
            let previous = self
                .previous
                .entry(slot)
                .or_insert_with(|| Box::new([0u64; abi::MAX_SYSCALLS as usize]));
            let counts: Vec<(u32, u64)> = total
                .iter()
                .zip(previous.iter())
                .enumerate()
                .filter(|(_, (t, p))| t > p)
                .map(|(nr, (t, p))| (nr as u32, t - p))
                .collect();
            *previous = total;
            if !counts.is_empty() {
                deltas.push(SyscallDelta { cgroup_id, counts });
            }
        }
        Ok(deltas)
    }

    /// Puts a delta back: the next [`read_syscalls`](Self::read_syscalls) reports it again
    /// (for counts that cannot be attributed yet, e.g. a container its runtime does not know).
    pub fn defer(&mut self, delta: &SyscallDelta) {
        let slot = match self.slots.get(&delta.cgroup_id, 0) {
            Ok(slot) => slot,
            Err(_) => return,
        };
        if let Some(previous) = self.previous.get_mut(&slot) {
            for &(nr, count) in &delta.counts {
                if let Some(p) = previous.get_mut(nr as usize) {
                    *p = p.saturating_sub(count);
                }
            }
        }
    }

    /// The counter slot of a cgroup, if it has one.
    pub fn slot_of(&self, cgroup_id: u64) -> Option<u32> {
        self.slots.get(&cgroup_id, 0).ok()
    }

    /// Every (cgroup id, slot) pair the kernel has assigned.
    pub fn slots(&self) -> Vec<(u64, u32)> {
        self.slots.iter().filter_map(Result::ok).collect()
    }

    /// Returns the slot of a cgroup that no longer exists to the free queue (counts zeroed).
    fn release_cgroup(&mut self, cgroup_id: u64) -> Result<(), ProbeError> {
        let map_err = |name| move |source| ProbeError::MapOp { name, source };
        let slot = match self.slots.get(&cgroup_id, 0) {
            Ok(slot) => slot,
            Err(_) => return Ok(()),
        };
        self.slots
            .remove(&cgroup_id)
            .map_err(map_err("habit_cgroup_slots"))?;
        let zeros = PerCpuValues::try_from(vec![[0u64; abi::MAX_SYSCALLS as usize]; cpu_count()])
            .map_err(|e| ProbeError::Map {
            name: "habit_syscall_counts",
            detail: e.to_string(),
        })?;
        self.counts
            .set(slot, zeros, 0)
            .map_err(map_err("habit_syscall_counts"))?;
        self.previous.remove(&slot);
        self.free_slots
            .push(slot, 0)
            .map_err(map_err("habit_free_slots"))
    }

    /// Drops by (reason, CPU): cumulative counts since load.
    pub fn read_drops(&self) -> Result<Vec<(&'static str, usize, u64)>, ProbeError> {
        let mut out = Vec::new();
        for (reason_idx, reason) in abi::DROP_REASONS.iter().enumerate() {
            let per_cpu =
                self.drops
                    .get(&(reason_idx as u32), 0)
                    .map_err(|source| ProbeError::MapOp {
                        name: "habit_drops",
                        source,
                    })?;
            for (cpu, v) in per_cpu.iter().enumerate() {
                out.push((*reason, cpu, *v));
            }
        }
        Ok(out)
    }
}

/// Number of possible CPUs: the length of every per-CPU value.
fn cpu_count() -> usize {
    nr_cpus().unwrap_or(1)
}

/// The syscall-sequence maps: per-slot modes and the (workload, 6-gram) table.
pub struct SequenceMaps {
    slots: Array<MapData, abi::SeqSlot>,
    grams: HashMap<MapData, abi::GramKey, abi::GramVal>,
}

impl SequenceMaps {
    fn new(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        Ok(Self {
            slots: typed(
                "habit_seq_slots",
                Array::try_from(take_map(ebpf, "habit_seq_slots")?),
            )?,
            grams: typed(
                "habit_grams",
                HashMap::try_from(take_map(ebpf, "habit_grams")?),
            )?,
        })
    }

    /// Sets what the threads of a cgroup slot do with their 6-grams.
    pub fn set_slot(&mut self, slot: u32, config: abi::SeqSlot) -> Result<(), ProbeError> {
        self.slots
            .set(slot, config, 0)
            .map_err(|source| ProbeError::MapOp {
                name: "habit_seq_slots",
                source,
            })
    }

    /// Every (workload id, 6-gram key, occurrences since the key was inserted) in the map.
    pub fn all_counts(&self) -> Vec<(u32, u64, u64)> {
        self.grams
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.wid, k.gram, v.count))
            .collect()
    }

    /// Removes every 6-gram of a workload (it starts learning afresh, or is gone).
    pub fn clear(&mut self, wid: u32) -> Result<usize, ProbeError> {
        let keys: Vec<abi::GramKey> = self
            .grams
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.wid == wid)
            .collect();
        for key in &keys {
            match self.grams.remove(key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(aya::maps::MapError::SyscallError(ref s))
                    if s.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(source) => {
                    return Err(ProbeError::MapOp {
                        name: "habit_grams",
                        source,
                    });
                }
            }
        }
        Ok(keys.len())
    }

    /// Gives 6-grams of a workload their value (micro-nats) for detection; `learned` false marks
    /// a gram that was not learned (an unknown gram seen once, valued so that it need not cross
    /// the ring buffer again). Stops at the first failure (a full map).
    pub fn set_values(
        &mut self,
        wid: u32,
        values: impl IntoIterator<Item = (u64, u32, bool)>,
    ) -> Result<usize, ProbeError> {
        let mut written = 0;
        for (gram, value, learned) in values {
            let key = abi::GramKey { wid, _pad: 0, gram };
            let flags = abi::GRAM_VALUED | if learned { 0 } else { abi::GRAM_UNLEARNED };
            let val = abi::GramVal {
                count: 0,
                value,
                flags,
            };
            self.grams
                .insert(key, val, 0)
                .map_err(|source| ProbeError::MapOp {
                    name: "habit_grams",
                    source,
                })?;
            written += 1;
        }
        Ok(written)
    }
}

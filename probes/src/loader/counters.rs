//! The in-kernel counters: syscalls per (cgroup slot, syscall number), drops per (reason, CPU)
//! and records lost on a full ring buffer per (cgroup slot, event kind).
//!
//! Counting every syscall is the one job that must never cost a ring-buffer record (DESIGN.md,
//! principle 1), so the kernel counts in a per-CPU array with one row per cgroup *slot*, and user
//! space owns the slot bookkeeping: it fills the free-slot queue before anything is attached,
//! reads whole rows and turns them into deltas, and gives a slot back (zeroed) when its cgroup
//! goes away. The lost records of a slot's cgroup are counted by kind in the same slot's row of
//! `habit_lost` (one more row for records of no slot), so that a loss is told to the workload it
//! belongs to. Maps: `habit_syscall_counts`, `habit_cgroup_slots`, `habit_free_slots`,
//! `habit_drops`, `habit_lost`.

use std::collections::HashMap as StdHashMap;

use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, Queue};
use aya::util::nr_cpus;

use super::{ProbeError, map_op, take_typed};
use crate::abi;

/// One slot's counters: a count per syscall number.
type Row = [u64; abi::MAX_SYSCALLS as usize];

/// Aggregated in-kernel counters: syscalls per (cgroup, syscall) and drops per (reason, CPU).
pub struct KernelCounters {
    counts: PerCpuArray<MapData, Row>,
    slots: HashMap<MapData, u64, u32>,
    free_slots: Queue<MapData, u32>,
    drops: PerCpuArray<MapData, u64>,
    lost: Array<MapData, abi::LostRow>,
    /// Totals seen at the previous read, per slot, to report deltas.
    previous: StdHashMap<u32, Box<Row>>,
    /// Lost records seen at the previous read, per `habit_lost` row, to report deltas.
    previous_lost: StdHashMap<u32, abi::LostRow>,
}

/// Records of one cgroup lost on a full ring buffer since the previous read: (event kind
/// `abi::EV_*`, count), non-zero only. `cgroup_id` is `None` for records of no counter slot
/// (a cgroup that found none, an accepted connection whose listener is unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostDelta {
    pub cgroup_id: Option<u64>,
    pub counts: Vec<(u32, u64)>,
}

/// Syscalls made by one cgroup since the previous read: (syscall number, count), non-zero only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallDelta {
    pub cgroup_id: u64,
    pub counts: Vec<(u32, u64)>,
}

impl KernelCounters {
    /// Takes the counter maps and queues every slot as free. Must run before any program is
    /// attached: a syscall counted before then would find no slot and be recorded as a drop.
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let counts = take_typed(ebpf, "habit_syscall_counts", PerCpuArray::try_from)?;
        let slots = take_typed(ebpf, "habit_cgroup_slots", HashMap::try_from)?;
        let mut free_slots: Queue<MapData, u32> =
            take_typed(ebpf, "habit_free_slots", Queue::try_from)?;
        let drops = take_typed(ebpf, "habit_drops", PerCpuArray::try_from)?;
        let lost = take_typed(ebpf, "habit_lost", Array::try_from)?;
        for slot in 0..abi::MAX_CGROUP_SLOTS {
            free_slots
                .push(slot, 0)
                .map_err(map_op("habit_free_slots"))?;
        }
        Ok(Self {
            counts,
            slots,
            free_slots,
            drops,
            lost,
            previous: StdHashMap::new(),
            previous_lost: StdHashMap::new(),
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
                .map_err(map_op("habit_syscall_counts"))?;
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

    /// Records lost on a full ring buffer since the previous read, per cgroup with a slot,
    /// then those of no slot; each delta is reported once (see [`defer_lost`](Self::defer_lost)).
    pub fn read_lost(&mut self) -> Result<Vec<LostDelta>, ProbeError> {
        let mut rows: Vec<(Option<u64>, u32)> = self
            .slots
            .iter()
            .filter_map(Result::ok)
            .map(|(cgroup_id, slot)| (Some(cgroup_id), slot))
            .collect();
        rows.push((None, abi::LOST_NO_SLOT));
        let mut deltas = Vec::new();
        for (cgroup_id, row) in rows {
            if let Some(counts) = self.lost_since_previous(row)? {
                deltas.push(LostDelta { cgroup_id, counts });
            }
        }
        Ok(deltas)
    }

    /// The non-zero increases of row `row` of `habit_lost` since the previous read, which
    /// becomes this one.
    fn lost_since_previous(&mut self, row: u32) -> Result<Option<Vec<(u32, u64)>>, ProbeError> {
        let now = self.lost.get(&row, 0).map_err(map_op("habit_lost"))?;
        let previous = self.previous_lost.entry(row).or_default();
        let counts: Vec<(u32, u64)> = now
            .kind
            .iter()
            .zip(previous.kind.iter())
            .enumerate()
            .filter(|(_, (n, p))| n > p)
            .map(|(kind, (n, p))| (kind as u32, n - p))
            .collect();
        *previous = now;
        Ok((!counts.is_empty()).then_some(counts))
    }

    /// Puts a lost-records delta back: the next [`read_lost`](Self::read_lost) reports it again
    /// (for a cgroup that cannot be attributed yet).
    pub fn defer_lost(&mut self, delta: &LostDelta) {
        let row = match delta.cgroup_id {
            Some(cgroup_id) => match self.slots.get(&cgroup_id, 0) {
                Ok(slot) => slot,
                Err(_) => return,
            },
            None => abi::LOST_NO_SLOT,
        };
        if let Some(previous) = self.previous_lost.get_mut(&row) {
            for &(kind, count) in &delta.counts {
                if let Some(p) = previous.kind.get_mut(kind as usize) {
                    *p = p.saturating_sub(count);
                }
            }
        }
    }

    /// Returns the slot of a cgroup that no longer exists to the free queue (counts zeroed).
    /// Only [`Probes::release_cgroup`](super::Probes::release_cgroup) calls it, after switching
    /// the slot's sequence mode off. Returns the records of the cgroup lost since the last
    /// [`read_lost`](Self::read_lost), which would otherwise be forgotten with the slot.
    pub(super) fn release_cgroup(
        &mut self,
        cgroup_id: u64,
    ) -> Result<Option<LostDelta>, ProbeError> {
        let slot = match self.slots.get(&cgroup_id, 0) {
            Ok(slot) => slot,
            Err(_) => return Ok(None),
        };
        self.slots
            .remove(&cgroup_id)
            .map_err(map_op("habit_cgroup_slots"))?;
        // The cgroup is gone and its slot unmapped: nothing more is counted in its row.
        let residual = self.lost_since_previous(slot)?.map(|counts| LostDelta {
            cgroup_id: Some(cgroup_id),
            counts,
        });
        self.lost
            .set(slot, abi::LostRow::default(), 0)
            .map_err(map_op("habit_lost"))?;
        self.previous_lost.remove(&slot);
        let zeros = PerCpuValues::try_from(vec![[0u64; abi::MAX_SYSCALLS as usize]; cpu_count()])
            .map_err(|e| ProbeError::Map {
            name: "habit_syscall_counts",
            detail: e.to_string(),
        })?;
        self.counts
            .set(slot, zeros, 0)
            .map_err(map_op("habit_syscall_counts"))?;
        self.previous.remove(&slot);
        self.free_slots
            .push(slot, 0)
            .map_err(map_op("habit_free_slots"))?;
        Ok(residual)
    }

    /// Drops by (reason, CPU): cumulative counts since load.
    pub fn read_drops(&self) -> Result<Vec<(&'static str, usize, u64)>, ProbeError> {
        let mut out = Vec::new();
        for (reason_idx, reason) in abi::DROP_REASONS.iter().enumerate() {
            let per_cpu = self
                .drops
                .get(&(reason_idx as u32), 0)
                .map_err(map_op("habit_drops"))?;
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

//! The open de-duplication interval (`habit_epoch`).
//!
//! The kernel sends each (workload, path, access mode) open once per interval and remembers what
//! it sent in an LRU map (probes/bpf/file.h), so a process opening one file a million times
//! costs one record per interval. User space alone decides when an interval ends (the daemon
//! advances it on its learning-interval tick) by writing a new epoch number here: a path still
//! in use is then reported again, once, in the new interval.

use aya::Ebpf;
use aya::maps::{Array, MapData};

use super::{ProbeError, map_op, take_typed};

/// The epoch array's handle: index 0 holds the current interval.
pub(super) struct DedupEpoch {
    epoch: Array<MapData, u64>,
}

impl DedupEpoch {
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        Ok(Self {
            epoch: take_typed(ebpf, "habit_epoch", Array::try_from)?,
        })
    }

    /// Starts interval `epoch`.
    pub(super) fn set(&mut self, epoch: u64) -> Result<(), ProbeError> {
        self.epoch.set(0, epoch, 0).map_err(map_op("habit_epoch"))
    }
}

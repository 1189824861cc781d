//! The open de-duplication interval (`habit_epoch`).
//!
//! The kernel sends each (workload, path, access mode) open once per interval and remembers what
//! it sent in an LRU map (probes/bpf/file.h), so a process opening one file a million times
//! costs one record per interval. User space alone decides when an interval ends (the daemon
//! advances it on its learning-interval tick) by writing a new epoch number here: a path still
//! in use is then reported again, once, in the new interval.

use aya::Ebpf;
use aya::maps::{Array, MapData};

use super::integrity::Tamper;
use super::{ProbeError, map_op, take_typed};

/// The epoch array's handle: index 0 holds the current interval.
pub(super) struct DedupEpoch {
    epoch: Array<MapData, u64>,
    /// The last interval written (0: the map's initial value).
    written: u64,
    /// Tampering found when starting an interval, for the next check to report.
    found: Option<Tamper>,
}

impl DedupEpoch {
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        Ok(Self {
            epoch: take_typed(ebpf, "habit_epoch", Array::try_from)?,
            written: 0,
            found: None,
        })
    }

    /// Starts interval `epoch`. The map is checked first, so that a foreign write just before
    /// is not overwritten unseen.
    pub(super) fn set(&mut self, epoch: u64) -> Result<(), ProbeError> {
        if let Some(t) = self.compare()? {
            self.found.get_or_insert(t);
        }
        self.write(epoch)
    }

    fn write(&mut self, epoch: u64) -> Result<(), ProbeError> {
        self.epoch.set(0, epoch, 0).map_err(map_op("habit_epoch"))?;
        self.written = epoch;
        Ok(())
    }

    /// The tampering when the map does not hold the interval last written.
    fn compare(&self) -> Result<Option<Tamper>, ProbeError> {
        let found = self.epoch.get(&0, 0).map_err(map_op("habit_epoch"))?;
        Ok((found != self.written).then(|| Tamper::MapWritten {
            map: "habit_epoch",
            entry: "index 0".into(),
            expected: self.written.to_string(),
            found: found.to_string(),
        }))
    }

    /// Whether the map was written by someone else since the last check; if it still holds
    /// a foreign value, the interval last written is put back.
    pub(super) fn check(&mut self) -> Result<Option<Tamper>, ProbeError> {
        let now = self.compare()?;
        if now.is_some() {
            self.write(self.written)?;
        }
        Ok(self.found.take().or(now))
    }
}

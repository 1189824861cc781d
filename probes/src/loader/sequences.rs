//! The syscall-sequence maps: each cgroup slot's mode (`habit_seq_slots`) and the
//! (workload, 6-gram) table (`habit_grams`).
//!
//! The kernel hashes every thread's last six syscalls itself (probes/bpf/sequence.h); user space
//! steers it through these two maps: it sets a slot to learning or detection, reads the counts
//! learned, and in detection writes each known gram's value so that only unknown grams cross the
//! ring buffer.

use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData, MapError};

use super::integrity::Tamper;
use super::{ProbeError, map_op, take_typed};
use crate::abi;

/// The syscall-sequence maps: per-slot modes and the (workload, 6-gram) table.
pub struct SequenceMaps {
    slots: Array<MapData, abi::SeqSlot>,
    grams: HashMap<MapData, abi::GramKey, abi::GramVal>,
    /// What was last written to each slot (mode and workload id), for the integrity check.
    written: std::collections::HashMap<u32, abi::SeqSlot>,
}

impl SequenceMaps {
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        Ok(Self {
            slots: take_typed(ebpf, "habit_seq_slots", Array::try_from)?,
            grams: take_typed(ebpf, "habit_grams", HashMap::try_from)?,
            written: std::collections::HashMap::new(),
        })
    }

    /// The slots whose mode or workload id is not what was last written (the kernel only
    /// counts `samples` down); each is written back.
    pub(super) fn check_slots(&mut self) -> Result<Vec<Tamper>, ProbeError> {
        let mut found = Vec::new();
        for (&slot, written) in &self.written {
            let now = self
                .slots
                .get(&slot, 0)
                .map_err(map_op("habit_seq_slots"))?;
            if (now.mode, now.wid) != (written.mode, written.wid) {
                found.push((slot, *written, now));
            }
        }
        let mut tampered = Vec::with_capacity(found.len());
        for (slot, written, now) in found {
            self.set_slot(slot, written)?;
            tampered.push(Tamper::MapWritten {
                map: "habit_seq_slots",
                entry: format!("slot {slot}"),
                expected: format!("mode {} workload {}", written.mode, written.wid),
                found: format!("mode {} workload {}", now.mode, now.wid),
            });
        }
        Ok(tampered)
    }

    /// Sets what the threads of a cgroup slot do with their 6-grams.
    pub fn set_slot(&mut self, slot: u32, config: abi::SeqSlot) -> Result<(), ProbeError> {
        self.slots
            .set(slot, config, 0)
            .map_err(map_op("habit_seq_slots"))?;
        self.written.insert(slot, config);
        Ok(())
    }

    /// The new 6-grams a slot inserted since it was last written (the kernel stops at
    /// [`abi::SEQ_SLOT_GRAMS`]).
    pub fn slot_grams(&self, slot: u32) -> Result<u32, ProbeError> {
        Ok(self
            .slots
            .get(&slot, 0)
            .map_err(map_op("habit_seq_slots"))?
            .grams)
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
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(MapError::SyscallError(ref s))
                    if s.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(source) => return Err(map_op("habit_grams")(source)),
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
                .map_err(map_op("habit_grams"))?;
            written += 1;
        }
        Ok(written)
    }
}

//! The syscall-sequence maps: each cgroup slot's mode (`habit_seq_slots`) and the
//! (workload, 6-gram) table (`habit_grams`).
//!
//! The kernel hashes every thread's last six syscalls itself (probes/bpf/sequence.h); user space
//! steers it through these two maps: it sets a slot to learning or detection, reads the counts
//! learned, and in detection writes each known gram's value so that only unknown grams cross the
//! ring buffer. Every change of a workload's grams ends with a bump of its generation in
//! `habit_gram_gens`, which invalidates the kernel's per-CPU cache of them (sequence.h).

use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData, MapError};

use super::integrity::Tamper;
use super::{ProbeError, map_op, take_typed};
use crate::abi;

/// The syscall-sequence maps: per-slot modes and the (workload, 6-gram) table.
pub struct SequenceMaps {
    slots: Array<MapData, abi::SeqSlot>,
    grams: HashMap<MapData, abi::GramKey, abi::GramVal>,
    /// `None` for an object built before the detection cache (an earlier build's object loaded
    /// through `ProbeConfig::object`, as `benches/overhead.rs --reference-object` does): its
    /// kernel reads the 6-gram map directly and has nothing to invalidate.
    gens: Option<Array<MapData, abi::GramGen>>,
    /// What was last written to each slot (mode and workload id), for the integrity check.
    written: std::collections::HashMap<u32, abi::SeqSlot>,
}

impl SequenceMaps {
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        Ok(Self {
            slots: take_typed(ebpf, "habit_seq_slots", Array::try_from)?,
            grams: take_typed(ebpf, "habit_grams", HashMap::try_from)?,
            gens: match ebpf.map("habit_gram_gens") {
                Some(_) => Some(take_typed(ebpf, "habit_gram_gens", Array::try_from)?),
                None => None,
            },
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

    /// Advances the generation of a workload's grams: the kernel's cached copies of them stop
    /// being used. Called after the last write of a change, so a cache entry filled from the
    /// map before that write carries the old generation.
    fn bump_generation(&mut self, wid: u32) -> Result<(), ProbeError> {
        let Some(gens) = &mut self.gens else {
            return Ok(());
        };
        let index = wid & (abi::GRAM_GENS - 1);
        let now = gens.get(&index, 0).map_err(map_op("habit_gram_gens"))?;
        gens.set(index, now.next(), 0)
            .map_err(map_op("habit_gram_gens"))
    }

    /// The generation of a workload's grams (tests: that a change bumped it); `None` for an
    /// object without the detection cache.
    pub fn generation(&self, wid: u32) -> Result<Option<u32>, ProbeError> {
        let Some(gens) = &self.gens else {
            return Ok(None);
        };
        Ok(Some(
            gens.get(&(wid & (abi::GRAM_GENS - 1)), 0)
                .map_err(map_op("habit_gram_gens"))?
                .generation,
        ))
    }

    /// Removes every 6-gram of a workload (it starts learning afresh, or is gone).
    pub fn clear(&mut self, wid: u32) -> Result<usize, ProbeError> {
        let removed = self.remove_all(wid);
        // Even after a failure part of the grams may be gone: the cache must not keep them.
        self.bump_generation(wid)?;
        removed
    }

    fn remove_all(&mut self, wid: u32) -> Result<usize, ProbeError> {
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
        let written = self.insert_values(wid, values);
        // Even after a failure the grams written so far changed: the cache must see them.
        self.bump_generation(wid)?;
        written
    }

    fn insert_values(
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

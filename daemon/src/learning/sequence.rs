//! Syscall sequences in learning: the 6-gram counts and calibration traces a learning workload
//! collects for the sequence model, and what the kernel should do with a workload's sequences.
//!
//! Apart from the rest of learning because the sequence model learns from its own stream (gram
//! counts read from kernel maps, whole traces of sampled threads), not from observations.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use habit_models::sequence::{self, SequenceConfig, SequenceModel};
use habit_profiles::baseline::Baseline;
use habit_profiles::profile::UnstableReason;
use habit_profiles::store::WorkloadState;
use habit_profiles::workload::WorkloadKey;

use super::score::model_of;
use super::{Engine, Entry, Phase};

/// What a workload's syscall sequences are used for right now (its kernel mode).
#[derive(Clone)]
pub enum SequenceMode {
    /// Not followed (unstable, or in detection without a sequence model).
    Off,
    /// Counted; `samples` more new threads may be traced whole for calibration.
    Learn { samples: usize },
    /// Scored against this model.
    Detect(Arc<SequenceModel>),
}

/// Most calibration traces kept per learning workload (see [`SequenceLearning`]).
const MAX_SEQUENCE_TRACES: usize = 64;

/// Most distinct 6-grams a learning workload keeps (a quarter of the kernel's shared map; a
/// busy real server makes a few thousand).
pub const MAX_LEARNED_GRAMS: usize = 65_536;
/// The name of the sequence model in a baseline's `models`.
pub(super) const SEQUENCE_MODEL: &str = "sequence";

/// What learning collects for the sequence model: 6-gram counts read from the kernel, and
/// whole traces of a few threads that started during learning (the model's calibration).
/// Checkpointed with the profile (see `checkpoint::ModelLearningData`).
#[derive(Default)]
pub(super) struct SequenceLearning {
    grams: BTreeMap<u64, u64>,
    traces: Vec<Vec<u32>>,
    /// Traces still growing, by thread id.
    open: HashMap<u32, Vec<u32>>,
}

impl SequenceLearning {
    fn room(&self) -> usize {
        MAX_SEQUENCE_TRACES.saturating_sub(self.traces.len() + self.open.len())
    }

    /// One gram of a sampled thread's trace (`nsys` counts from 1 at the thread's start). A
    /// gap (a lost record) discards the trace; `end` closes it.
    fn trace_gram(&mut self, tid: u32, nsys: u64, gram: u64, end: bool) {
        if end {
            if let Some(trace) = self.open.remove(&tid)
                && !trace.is_empty()
                && self.traces.len() < MAX_SEQUENCE_TRACES
            {
                self.traces.push(trace);
            }
            return;
        }
        if nsys == 1 && self.room() == 0 && !self.open.contains_key(&tid) {
            return;
        }
        let trace = self.open.entry(tid).or_default();
        if nsys != trace.len() as u64 + 1 {
            self.open.remove(&tid);
            return;
        }
        if let Some(nr) = sequence::gram::lane_nr(gram) {
            trace.push(nr);
        }
    }

    /// The gram counts and the traces, for a checkpoint.
    pub(super) fn snapshot(&self) -> (Vec<(u64, u64)>, Vec<Vec<u32>>) {
        let grams = self.grams.iter().map(|(&k, &v)| (k, v)).collect();
        (grams, self.traces())
    }

    /// Learning resumed from a checkpoint's [`SequenceLearning::snapshot`].
    pub(super) fn restored(grams: Vec<(u64, u64)>, mut traces: Vec<Vec<u32>>) -> Self {
        traces.truncate(MAX_SEQUENCE_TRACES);
        SequenceLearning {
            grams: grams.into_iter().collect(),
            traces,
            open: HashMap::new(),
        }
    }

    /// The number of distinct 6-grams and of calibration traces learned so far.
    pub(super) fn sizes(&self) -> (usize, usize) {
        (self.grams.len(), self.traces.len() + self.open.len())
    }

    /// The calibration traces collected so far: the finished ones, and those still growing
    /// as far as they got (after a freeze or a restart the kernel traces them no further).
    pub(super) fn traces(&self) -> Vec<Vec<u32>> {
        let mut traces = self.traces.clone();
        traces.extend(self.open.values().filter(|t| !t.is_empty()).cloned());
        traces
    }

    /// Learns the model: counts (plus a carried model's), calibrated on the traces.
    #[cfg(test)]
    pub(super) fn fit(
        &self,
        carried: Option<&SequenceModel>,
    ) -> Result<SequenceModel, sequence::SequenceError> {
        self.fit_with(carried, &self.traces())
    }

    /// [`SequenceLearning::fit`] on these traces. Leaves the learning data as it is (a
    /// freeze that cannot be stored keeps learning).
    pub(super) fn fit_with(
        &self,
        carried: Option<&SequenceModel>,
        traces: &[Vec<u32>],
    ) -> Result<SequenceModel, sequence::SequenceError> {
        let mut grams = self.grams.clone();
        if let Some(previous) = carried {
            for (key, count) in previous.known_grams() {
                *grams.entry(key).or_insert(0) += count;
            }
        }
        let syscalls = grams.values().sum();
        let mut model = SequenceModel::from_counts(
            SequenceConfig::default(),
            grams,
            traces.len() as u64,
            syscalls,
        )?;
        model.calibrate_on_traces(traces)?;
        Ok(model)
    }
}

/// The sequence model stored in a baseline, if it has one that loads.
pub(super) fn sequence_model_of(baseline: &Baseline) -> Option<SequenceModel> {
    model_of(baseline, SEQUENCE_MODEL)
}

impl Engine {
    /// What the kernel should do with a workload's syscall sequences.
    pub fn sequence_mode(&self, key: &WorkloadKey) -> SequenceMode {
        let Some(entry) = self.workloads.get(key) else {
            return SequenceMode::Off;
        };
        match &entry.phase {
            // A flood of new syscall orders (or of anything else) must not fill the kernel's
            // 6-gram map that every workload shares.
            Phase::Learning { .. } if entry.record.state == WorkloadState::Unstable => {
                SequenceMode::Off
            }
            Phase::Learning { .. } => SequenceMode::Learn {
                samples: entry.sequence.room(),
            },
            Phase::Detecting {
                sequence: Some(model),
                ..
            } if entry.record.state == WorkloadState::Stable => SequenceMode::Detect(model.clone()),
            Phase::Detecting { .. } => SequenceMode::Off,
        }
    }

    /// A learning workload's sequence learning reached `limit` new 6-grams (in total, or in
    /// one counters interval of one cgroup: the kernel's bound): it is unstable, its sequence
    /// learning stops and its grams leave the kernel map (`Engine::sequence_mode`).
    pub fn sequence_limit_reached(&mut self, key: &WorkloadKey, limit: u32) {
        if let Some(entry) = self.learning_entry(key) {
            if let Phase::Learning { profile, .. } = &mut entry.phase {
                profile.mark_unstable(UnstableReason::SequenceLimit { limit });
            }
            entry.dirty = true;
        }
    }

    /// Adds 6-gram counts read from the kernel to a learning workload. Past
    /// [`MAX_LEARNED_GRAMS`] distinct grams the workload is unstable.
    pub fn learn_grams(&mut self, key: &WorkloadKey, counts: &[(u64, u64)]) {
        let mut full = false;
        if let Some(entry) = self.learning_entry(key) {
            entry.dirty |= !counts.is_empty();
            for &(gram, count) in counts {
                if entry.sequence.grams.len() >= MAX_LEARNED_GRAMS
                    && !entry.sequence.grams.contains_key(&gram)
                {
                    full = true;
                    break;
                }
                let total = entry.sequence.grams.entry(gram).or_insert(0);
                *total = total.saturating_add(count);
            }
        }
        if full {
            self.sequence_limit_reached(key, MAX_LEARNED_GRAMS as u32);
        }
    }

    /// One gram of a sampled thread's trace (see [`SequenceLearning::trace_gram`]).
    pub fn trace_gram(&mut self, key: &WorkloadKey, tid: u32, nsys: u64, gram: u64, end: bool) {
        if let Some(entry) = self.learning_entry(key) {
            entry.dirty = true;
            entry.sequence.trace_gram(tid, nsys, gram, end);
        }
    }

    fn learning_entry(&mut self, key: &WorkloadKey) -> Option<&mut Entry> {
        self.workloads
            .get_mut(key)
            .filter(|e| matches!(e.phase, Phase::Learning { .. }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use habit_models::sequence::gram_keys;

    /// Feeds a trace as the kernel sends a sampled thread: one record per gram, then the end.
    fn send(learning: &mut SequenceLearning, tid: u32, trace: &[u32]) {
        for (i, key) in gram_keys(trace).enumerate() {
            learning.trace_gram(tid, i as u64 + 1, key, false);
        }
        learning.trace_gram(tid, trace.len() as u64, 0, true);
    }

    #[test]
    fn traces_are_rebuilt_from_grams_and_gaps_discard_them() {
        let mut learning = SequenceLearning::default();
        send(&mut learning, 7, &[0, 1, 2, 3]);
        assert_eq!(learning.traces, vec![vec![0, 1, 2, 3]]);
        // A lost record: the trace is dropped, not learned with a hole.
        let keys: Vec<u64> = gram_keys(&[5, 6, 7]).collect();
        learning.trace_gram(8, 1, keys[0], false);
        learning.trace_gram(8, 3, keys[2], false);
        learning.trace_gram(8, 3, 0, true);
        assert_eq!(learning.traces.len(), 1);
        assert!(learning.open.is_empty());
    }

    #[test]
    fn fit_uses_counts_traces_and_a_carried_model() {
        let path: Vec<u32> = (0..40).map(|i| [0, 1, 2, 3][i % 4]).collect();
        let mut learning = SequenceLearning::default();
        for tid in 0..6 {
            send(&mut learning, tid, &path);
        }
        learning.grams = gram_keys(&path).fold(Default::default(), |mut m, k| {
            *m.entry(k).or_insert(0) += 6;
            m
        });
        let first = learning.fit(None).unwrap();
        let calibration = first.calibration().unwrap();
        assert_eq!(calibration.held_out, 6);
        // Extending a baseline: the carried model's grams count too.
        let mut more = SequenceLearning::default();
        more.grams.insert(gram_keys(&[9]).next().unwrap(), 1);
        let extended = more.fit(Some(&first)).unwrap();
        assert_eq!(extended.known_len(), first.known_len() + 1);
    }
}

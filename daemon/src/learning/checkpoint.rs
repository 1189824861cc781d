//! The end of learning and persistence: when a learning workload has converged (or is out of
//! time, or an operator forces it) its profile is frozen into a calibrated baseline with its
//! rate and sequence models; until then, progress is checkpointed to sled.
//!
//! Apart from observation because this is the only code that writes the store on the engine's
//! task, on the tick (and at shutdown), never per event.

use std::time::SystemTime;

use habit_models::calibrate::calibrate;
use habit_models::rate::{RateConfig, RateModel};
use habit_profiles::baseline::Baseline;
use habit_profiles::error::ProfileError;
use habit_profiles::profile::UnixMillis;
use habit_profiles::store::ForcedMode;
use habit_profiles::workload::WorkloadKey;

use super::score::{RATE_MODEL, detecting};
use super::sequence::{SEQUENCE_MODEL, SequenceLearning, sequence_model_of};
use super::{Engine, Phase, unix_ms};

impl Engine {
    /// Moves one learning workload on: unstable when a limit was hit, frozen when converged
    /// (or forced, or out of time).
    pub(super) fn advance(
        &mut self,
        key: &WorkloadKey,
        now: UnixMillis,
    ) -> Result<(), ProfileError> {
        let min = self.config.min.as_millis() as u64;
        let stable = self.config.stable.as_millis() as u64;
        let max = self.config.max.as_millis() as u64;
        let Some(entry) = self.workloads.get_mut(key) else {
            return Ok(());
        };
        let Phase::Learning { profile, .. } = &entry.phase else {
            return Ok(());
        };
        entry.record.update_from_profile(profile, now);
        let elapsed = now.saturating_sub(entry.record.learning_started_at);
        let quiet = now.saturating_sub(
            entry
                .record
                .last_new_item_at
                .unwrap_or(entry.record.learning_started_at),
        );
        let converged = elapsed >= min && quiet >= stable;
        let freeze = match entry.record.mode_forced {
            Some(ForcedMode::Learn) => None,
            Some(ForcedMode::Detect) => Some(!converged),
            None if converged => Some(false),
            None if elapsed >= max => Some(true),
            None => None,
        };
        if let Some(partial) = freeze {
            self.freeze(key, now, partial)?;
        }
        Ok(())
    }

    /// Ends learning: baseline (merged with a carried one), calibration, stored atomically.
    fn freeze(
        &mut self,
        key: &WorkloadKey,
        now: UnixMillis,
        partial: bool,
    ) -> Result<(), ProfileError> {
        let Some(entry) = self.workloads.get_mut(key) else {
            return Ok(());
        };
        let Phase::Learning { profile, carried } = &entry.phase else {
            return Ok(());
        };
        let mut baseline = Baseline::freeze(profile, now, partial);
        if let Some(previous) = carried {
            baseline = habit_profiles::baseline::merge(previous, &baseline)?;
        }
        calibrate(&mut baseline, self.config.false_alarm_rate);
        match RateModel::fit(&entry.intervals, &RateConfig::default()) {
            Ok(model) => {
                let model = encode_model("rate model", key, &model)?;
                baseline.models.insert(RATE_MODEL.into(), model);
            }
            Err(e) => tracing::info!(message = "No rate model.", workload = %key, reason = %e),
        }
        let carried_sequence = carried.as_deref().and_then(sequence_model_of);
        match entry.sequence.fit(carried_sequence.as_ref()) {
            Ok(model) => {
                tracing::info!(
                    message = "Sequence model learned.",
                    workload = %key,
                    grams = model.known_len(),
                    calibration_traces = model.calibration().map_or(0, |c| c.held_out),
                );
                let model = encode_model("sequence model", key, &model)?;
                baseline.models.insert(SEQUENCE_MODEL.into(), model);
            }
            Err(e) => {
                tracing::info!(message = "No sequence model.", workload = %key, reason = %e)
            }
        }
        let mut record = entry.record.clone();
        record.update_from_baseline(&baseline, now);
        record.mode_forced = None;
        self.store.freeze(&record, &baseline)?;
        tracing::info!(
            message = "Learning done: detecting.",
            workload = %key,
            items = baseline.items_total(),
            partial,
            state = record.state.name()
        );
        entry.record = record;
        entry.phase = detecting(baseline);
        entry.intervals = Vec::new();
        entry.sequence = SequenceLearning::default();
        entry.dirty = false;
        Ok(())
    }

    /// Writes every learning workload that changed, then flushes once.
    pub(super) fn checkpoint(&mut self, now: UnixMillis) {
        let mut wrote = false;
        for entry in self.workloads.values_mut() {
            if !entry.dirty {
                continue;
            }
            let Phase::Learning { profile, .. } = &entry.phase else {
                continue;
            };
            entry.record.update_from_profile(profile, now);
            let saved = self
                .store
                .checkpoint(&entry.record, profile)
                .and_then(|()| self.store.held().put(&entry.record.key, &entry.held));
            match saved {
                Ok(()) => {
                    entry.dirty = false;
                    wrote = true;
                }
                Err(e) => {
                    tracing::error!(message = "Checkpoint failed.", workload = %entry.record.key, %e)
                }
            }
        }
        if wrote && let Err(e) = self.store.flush() {
            tracing::error!(message = "Flushing the store failed.", %e);
        }
    }

    /// Saves everything (at shutdown).
    pub fn shutdown(&mut self) {
        self.checkpoint(unix_ms(SystemTime::now()));
    }
}

/// A model as it is stored in a baseline's `models`.
fn encode_model(
    what: &'static str,
    key: &WorkloadKey,
    model: &impl serde::Serialize,
) -> Result<serde_json::Value, ProfileError> {
    serde_json::to_value(model).map_err(|source| ProfileError::Encode {
        what,
        key: key.to_string(),
        source,
    })
}

//! The end of learning and persistence: when a learning workload has converged (or is out of
//! time, or an operator forces it) its profile is frozen into a calibrated baseline with its
//! rate and sequence models; until then, progress is checkpointed to sled.
//!
//! Apart from observation because this is the only code that writes the store on the engine's
//! task, on the tick (and at shutdown), never per event.

use std::time::SystemTime;

use habit_models::artifact::{LearningData, TimedInterval, merge_baselines, store_models};
use habit_models::calibrate::calibrate;
use habit_models::rate::{FeatureVector, RateConfig, RateModel};
use habit_profiles::baseline::Baseline;
use habit_profiles::error::ProfileError;
use habit_profiles::profile::{Introduced, Profile, UnixMillis};
use habit_profiles::store::{ForcedMode, WorkloadRecord, WorkloadState};
use habit_profiles::workload::WorkloadKey;

use super::inherit::last_change;
use super::score::detecting;
use super::sequence::SequenceLearning;
use super::{Engine, Entry, Phase, unix_ms};
use crate::config::Learning;
use crate::metrics::{Limit, Metrics};

/// Copies a learning profile's progress into its record. When that makes the workload
/// unstable (a profile limit was hit: a flood of distinct paths, destinations, executables…)
/// it is said once, as it happens: a warning naming the workload and the limit,
/// `habitd_limit_reached_total{limit="profile"}`, and (returned, for an alert) the reason.
/// From then on the workload learns nothing new and is matched by rules only.
fn update_record(
    record: &mut WorkloadRecord,
    profile: &Profile,
    now: UnixMillis,
    metrics: &Metrics,
) -> Option<(WorkloadKey, String)> {
    let was = record.state;
    record.update_from_profile(profile, now);
    let became = was != WorkloadState::Unstable && record.state == WorkloadState::Unstable;
    if became {
        metrics
            .limit_reached
            .with_label_values(&[Limit::Profile.label()])
            .inc();
        tracing::warn!(
            message = "Workload unstable: a profile limit was reached; it learns nothing new and is matched by rules only.",
            workload = %record.key,
            reason = %record.unstable_reason.map(|r| r.to_string()).unwrap_or_default(),
            items = record.items
        );
    }
    became.then(|| {
        let reason = record.unstable_reason.map(|r| r.to_string());
        (record.key.clone(), reason.unwrap_or_default())
    })
}

/// The convergence test of one learning workload: learned for `min`, and nothing new since
/// `quiet_since` for `stable` (all in milliseconds).
pub(super) struct Windows {
    pub min: u64,
    pub stable: u64,
    pub quiet_since: UnixMillis,
}

/// The windows of `entry`: the configured ones, or for an inheriting workload
/// `inherit_window` times them, quiet counted from the last item its predecessor did not
/// know (rollout inheritance), and not before its first event was learned (never, while
/// only its counters were: `quiet_since` is then in the future).
pub(super) fn windows(config: &Learning, entry: &Entry) -> Windows {
    let started = entry.record.learning_started_at;
    let millis = |d: std::time::Duration| d.as_millis() as u64;
    match &entry.phase {
        Phase::Learning {
            profile,
            carried: Some(previous),
        } if entry.inheriting() => {
            let scale = config.inherit_window.clamp(0.0, 1.0);
            Windows {
                min: (millis(config.min) as f64 * scale) as u64,
                stable: (millis(config.stable) as f64 * scale) as u64,
                quiet_since: last_change(profile, previous)
                    .map_or(started, |t| t.max(started))
                    .max(entry.events_since.unwrap_or(UnixMillis::MAX)),
            }
        }
        _ => Windows {
            min: millis(config.min),
            stable: millis(config.stable),
            quiet_since: entry.record.last_new_item_at.unwrap_or(started),
        },
    }
}

impl Engine {
    /// Moves one learning workload on: unstable when a limit was hit, frozen when converged
    /// (or forced, or out of time).
    pub(super) fn advance(
        &mut self,
        key: &WorkloadKey,
        now: UnixMillis,
    ) -> Result<(), ProfileError> {
        let Some(entry) = self.workloads.get_mut(key) else {
            return Ok(());
        };
        let max = self.config.max.as_millis() as u64;
        let Phase::Learning { profile, .. } = &entry.phase else {
            return Ok(());
        };
        if let Some(became) = update_record(&mut entry.record, profile, now, &self.metrics) {
            self.became_unstable.push(became);
        }
        // An inheriting workload learns only what changed: shorter windows.
        let Windows {
            min,
            stable,
            quiet_since,
        } = windows(&self.config, entry);
        let elapsed = now.saturating_sub(entry.record.learning_started_at);
        let quiet = now.saturating_sub(quiet_since);
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
        // This learning's baseline and models, with their learning data (so that a merge
        // or an extension can pool it); then merged with a carried baseline, models too.
        let mut baseline = Baseline::freeze(profile, now, partial);
        calibrate(&mut baseline, self.config.false_alarm_rate);
        let rate = match RateModel::fit(&entry.intervals, &RateConfig::default()) {
            Ok(model) => Some(model),
            Err(e) => {
                tracing::info!(message = "No rate model.", workload = %key, reason = %e);
                None
            }
        };
        let traces = entry.sequence.take_traces();
        let sequence = match entry.sequence.fit_with(None, &traces) {
            Ok(model) => {
                tracing::info!(
                    message = "Sequence model learned.",
                    workload = %key,
                    grams = model.known_len(),
                    calibration_traces = model.calibration().map_or(0, |c| c.held_out),
                );
                Some(model)
            }
            Err(e) => {
                tracing::info!(message = "No sequence model.", workload = %key, reason = %e);
                None
            }
        };
        let data = LearningData {
            traces,
            intervals: timed_intervals(std::mem::take(&mut entry.intervals), now),
        };
        store_models(&mut baseline, sequence.as_ref(), rate.as_ref(), data)?;
        if let Some(previous) = carried {
            // Rollout inheritance: what this version adds over its predecessor names it.
            let introduced = entry.record.inheriting_from.is_some().then(|| Introduced {
                version: key.to_string(),
                digest: baseline.metadata.digests.first().cloned(),
                image_id: baseline.metadata.image_ids.first().cloned(),
            });
            let (merged, report) = merge_baselines(&[(**previous).clone(), baseline])?;
            for note in report.notes {
                tracing::info!(message = "Extending the baseline.", workload = %key, %note);
            }
            baseline = merged;
            if let Some(version) = introduced {
                let added = baseline.mark_introduced(previous, &version);
                tracing::info!(
                    message = "New version learned: the items it added name it.",
                    workload = %key,
                    inherits = ?entry.record.inheriting_from,
                    added
                );
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
            if let Some(became) = update_record(&mut entry.record, profile, now, &self.metrics) {
                self.became_unstable.push(became);
            }
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

/// Learning intervals (oldest first, the last ending at `now`) with when each ended.
fn timed_intervals(intervals: Vec<FeatureVector>, now: UnixMillis) -> Vec<TimedInterval> {
    let mut at = now;
    let mut timed: Vec<TimedInterval> = intervals
        .into_iter()
        .rev()
        .map(|features| {
            let this = at;
            at = at.saturating_sub((features.interval_secs() * 1000.0) as u64);
            TimedInterval { at: this, features }
        })
        .collect();
    timed.reverse();
    timed
}

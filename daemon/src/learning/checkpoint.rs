//! The end of learning and persistence: when a learning workload has converged (or is out of
//! time, or an operator forces it) its profile is frozen into a calibrated baseline with its
//! rate and sequence models; until then, progress is checkpointed to sled.
//!
//! Apart from observation because this is the only code that writes the store on the engine's
//! task, on the tick (and at shutdown), never per event.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use habit_models::artifact::{LearningData, TimedInterval, merge_baselines, store_models};
use habit_models::calibrate::calibrate;
use habit_models::rate::{FeatureVector, RateConfig, RateModel};
use habit_profiles::baseline::Baseline;
use habit_profiles::error::ProfileError;
use habit_profiles::profile::{Introduced, Profile, UnixMillis};
use habit_profiles::store::{ForcedMode, WorkloadRecord, WorkloadState};
use habit_profiles::workload::WorkloadKey;

use super::inherit::last_change;
use super::paused::is_store_failure;
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

/// What the models learn from while the profile is learned, checkpointed with it in one
/// transaction: a restart during learning resumes the rate intervals, the 6-gram counts and
/// the calibration traces where the last checkpoint left them, not from nothing.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModelLearningData {
    /// The rate model's learning intervals, oldest first.
    intervals: Vec<FeatureVector>,
    /// The sequence model's 6-gram counts (gram key, count).
    grams: Vec<(u64, u64)>,
    /// The sequence model's calibration traces (syscall numbers).
    traces: Vec<Vec<u32>>,
}

impl ModelLearningData {
    fn of(entry: &Entry) -> ModelLearningData {
        let (grams, traces) = entry.sequence.snapshot();
        ModelLearningData {
            intervals: entry.intervals.clone(),
            grams,
            traces,
        }
    }

    /// Reads a checkpoint back into `entry` (a damaged value is named and ignored: the
    /// profile still resumes, the models learn again from now).
    pub(super) fn restore(entry: &mut Entry, bytes: &[u8]) {
        match serde_json::from_slice::<ModelLearningData>(bytes) {
            Ok(data) => {
                entry.intervals = data.intervals;
                entry.sequence = SequenceLearning::restored(data.grams, data.traces);
            }
            Err(e) => tracing::error!(
                message = "The models' learning data in the store cannot be read; they learn \
                           again from now (the profile is resumed).",
                workload = %entry.record.key,
                tree = "model_learning",
                %e
            ),
        }
    }
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
        // Copies, not taken out: a freeze the store refuses (a full disk) keeps learning.
        let traces = entry.sequence.traces();
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
            intervals: timed_intervals(entry.intervals.clone(), now),
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
        self.freed_encodings = true;
        Ok(())
    }

    /// Writes every learning workload that changed, then flushes once (nothing while the
    /// store cannot be written: see `paused`).
    pub(super) fn checkpoint(&mut self, now: UnixMillis) {
        let wall = std::time::UNIX_EPOCH + std::time::Duration::from_millis(now);
        if !self.store_writable(wall) {
            return;
        }
        let mut wrote = false;
        let mut failed = None;
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
            let models = match serde_json::to_vec(&ModelLearningData::of(entry)) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    tracing::error!(
                        message = "The models' learning data cannot be encoded; the profile is \
                                   checkpointed without it.",
                        workload = %entry.record.key,
                        %e
                    );
                    None
                }
            };
            let saved = self
                .store
                .checkpoint(&entry.record, profile, models.as_deref())
                .and_then(|()| self.store.held().put(&entry.record.key, &entry.held));
            match saved {
                Ok(()) => {
                    entry.dirty = false;
                    wrote = true;
                    self.freed_encodings = true;
                }
                Err(e) => {
                    tracing::error!(message = "Checkpoint failed.", workload = %entry.record.key, %e);
                    if is_store_failure(&e) {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        if failed.is_none()
            && wrote
            && let Err(e) = self.store.flush()
        {
            tracing::error!(message = "Flushing the store failed.", %e);
            failed = Some(e);
        }
        match failed {
            Some(e) => self.store_failed(&e, wall),
            None => self.metrics.store_checkpoints.inc(),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use habit_models::rate::IntervalFeatures;
    use habit_models::sequence::gram_keys;
    use habit_profiles::observation::Observation;
    use habit_profiles::store::ProfileStore;

    use super::*;
    use crate::metrics::Metrics;

    fn open(store: &Arc<ProfileStore>) -> Engine {
        let config = Learning {
            min: Duration::from_secs(3600),
            stable: Duration::from_secs(3600),
            ..Learning::default()
        };
        let metrics = Arc::new(Metrics::new().unwrap());
        Engine::open(store.clone(), config, "node-a".into(), metrics).unwrap()
    }

    fn data(engine: &Engine, key: &WorkloadKey) -> ModelLearningData {
        ModelLearningData::of(&engine.workloads[key])
    }

    #[test]
    fn the_models_learning_data_resumes_from_the_last_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ProfileStore::open(dir.path().join("db")).unwrap());
        let key = WorkloadKey::from_raw("docker.io/library/app:1");
        let now = SystemTime::now();
        let mut engine = open(&store);
        let mut findings = Vec::new();
        let exec = [Observation::exec("/usr/bin/app")];
        engine.observe(&key, None, &exec, unix_ms(now), &mut findings);
        let mut interval = IntervalFeatures::new(10.0);
        interval.add_syscall("read", 400);
        for _ in 0..3 {
            engine.observe_interval(&key, interval.finish(), unix_ms(now));
        }
        engine.learn_grams(&key, &[(11, 5), (12, 7)]);
        // One finished trace and one still growing when the checkpoint is taken.
        let trace: Vec<u64> = gram_keys(&[0, 1, 2, 3, 4, 5, 6]).collect();
        for (i, &gram) in trace.iter().enumerate() {
            engine.trace_gram(&key, 7, i as u64 + 1, gram, false);
        }
        engine.trace_gram(&key, 7, trace.len() as u64, 0, true);
        engine.trace_gram(&key, 8, 1, trace[0], false);
        engine.tick(now + Duration::from_secs(3));
        let saved = data(&engine, &key);
        assert_eq!(saved.intervals.len(), 3);
        assert_eq!(saved.grams, [(11, 5), (12, 7)]);
        assert_eq!(saved.traces.len(), 2);

        // Learned after the checkpoint: lost by a crash (at most one checkpoint interval).
        engine.learn_grams(&key, &[(13, 1)]);
        drop(engine); // no shutdown: as `kill -9` leaves it
        let mut engine = open(&store);
        assert_eq!(data(&engine, &key), saved);
        let models = engine.view_of(&key, now).unwrap().learning.models.unwrap();
        assert_eq!(models.rate_intervals, 3);
        assert_eq!(models.sequence_grams, 2);
        assert_eq!(models.sequence_traces, 2);

        // Learning goes on from there, and freezing ends it: the data leaves the store.
        engine.learn_grams(&key, &[(11, 1)]);
        assert_eq!(data(&engine, &key).grams, [(11, 6), (12, 7)]);
        engine.freeze(&key, unix_ms(now), true).unwrap();
        assert!(store.model_learning().get(&key).unwrap().is_none());
    }

    /// In detection the baseline kept in memory leaves its encoded models out (issue 13: they
    /// were most of a small workload's memory); what extends or inherits the baseline reads it
    /// whole from the store, models and learning data included.
    #[test]
    fn detection_leaves_the_models_in_the_store_and_extensions_carry_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ProfileStore::open(dir.path().join("db")).unwrap());
        let key = WorkloadKey::from_raw("docker.io/library/app:1");
        let now = SystemTime::now();
        let mut engine = open(&store);
        let exec = [Observation::exec("/usr/bin/app")];
        engine.observe(&key, None, &exec, unix_ms(now), &mut Vec::new());
        let mut interval = IntervalFeatures::new(10.0);
        interval.add_syscall("read", 400);
        for _ in 0..3 {
            engine.observe_interval(&key, interval.finish(), unix_ms(now));
        }
        engine.freeze(&key, unix_ms(now), false).unwrap();
        let stored = store.baselines().get(&key).unwrap().unwrap();
        assert!(
            !stored.models.is_empty(),
            "the learning intervals are stored"
        );
        let Phase::Detecting { baseline, .. } = &engine.workloads[&key].phase else {
            panic!("detecting")
        };
        assert!(baseline.models.is_empty());
        assert_eq!(baseline.items_total(), stored.items_total());

        // A new version inherits the stored baseline whole.
        let next = WorkloadKey::from_raw("docker.io/library/app:2");
        let (from, inherited) = engine.predecessor(&next).unwrap();
        assert_eq!(from, key);
        assert_eq!(inherited.models, stored.models);

        // `mode learn` extends it whole.
        let (reply, _answer) = tokio::sync::oneshot::channel();
        engine.command(super::super::Command::SetMode {
            key: key.clone(),
            mode: habit_profiles::api::Mode::Learn,
            reply,
        });
        let Phase::Learning {
            carried: Some(carried),
            ..
        } = &engine.workloads[&key].phase
        else {
            panic!("extending")
        };
        assert_eq!(carried.models, stored.models);
    }

    #[test]
    fn a_damaged_learning_data_value_resumes_the_profile_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ProfileStore::open(dir.path().join("db")).unwrap());
        let key = WorkloadKey::from_raw("docker.io/library/app:1");
        let mut engine = open(&store);
        let exec = [Observation::exec("/usr/bin/app")];
        engine.observe(&key, None, &exec, 1_000, &mut Vec::new());
        engine.learn_grams(&key, &[(11, 5)]);
        engine.shutdown();
        let entry = &engine.workloads[&key];
        let Phase::Learning { profile, .. } = &entry.phase else {
            panic!("learning")
        };
        store
            .checkpoint(&entry.record, profile, Some(b"{\"grams\": 7}"))
            .unwrap();
        drop(engine);
        let engine = open(&store);
        assert_eq!(engine.workloads[&key].record.items, 1);
        assert_eq!(data(&engine, &key), ModelLearningData::default());
    }
}

//! Observation: each event's observations (and each interval's counts) are learned into the
//! profile of a learning workload, or scored against the baseline of a stable one; novel
//! behaviour becomes a [`Finding`]. Also how a baseline becomes the detection phase (its
//! novelty scorer and the models stored in it).
//!
//! Apart from the lifecycle because this is the per-event hot path: it must stay cheap and
//! never touch the store.

use std::sync::Arc;
use std::time::Duration;

use habit_models::novelty::NoveltyScorer;
use habit_models::priority::Priority;
use habit_models::rate::{FeatureVector, RateModel, RateScore};
use habit_profiles::baseline::Baseline;
use habit_profiles::observation::{Dimension, Observation};
use habit_profiles::profile::{Observed, Provenance, UnixMillis};
use habit_profiles::store::WorkloadState;
use habit_profiles::workload::WorkloadKey;

use super::sequence::sequence_model_of;
use super::{Engine, Phase};

/// Most learning intervals kept for fitting the rate model (8 h of 10-s intervals).
const MAX_RATE_INTERVALS: usize = 2880;
/// The name of the rate model in a baseline's `models`.
pub(super) const RATE_MODEL: &str = "rate";

/// A novel observation of a workload in detection: what an anomaly alert reports.
#[derive(Debug, Clone)]
pub struct Finding {
    pub workload: WorkloadKey,
    pub baseline_state: WorkloadState,
    pub dimension: Dimension,
    pub item: String,
    pub score: f64,
    pub priority: Priority,
    /// The score reaches the dimension's calibrated threshold: novel enough to alert on its
    /// own. (Fused with a rule hit, any novelty counts.)
    pub alert: bool,
}

impl Engine {
    /// One counters interval of a workload: kept for the rate model while learning, scored
    /// against it in detection. Returns the score of an anomalous interval.
    pub fn observe_interval(
        &mut self,
        key: &WorkloadKey,
        features: FeatureVector,
        now: UnixMillis,
    ) -> Option<RateScore> {
        self.ensure(key, now);
        let entry = self.workloads.get_mut(key)?;
        match &entry.phase {
            Phase::Learning { .. } => {
                if entry.intervals.len() < MAX_RATE_INTERVALS {
                    entry.intervals.push(features);
                    entry.dirty = true;
                }
                None
            }
            Phase::Detecting { rate, .. } => {
                if entry.record.state != WorkloadState::Stable {
                    return None;
                }
                let score = rate.as_ref()?.score(&features);
                tracing::debug!(
                    message = "Interval rates scored.",
                    workload = %key,
                    statistic = score.statistic,
                    threshold = score.threshold,
                    anomalous = score.anomalous
                );
                score.anomalous.then_some(score)
            }
        }
    }

    /// Learns or scores the observations of one event. Findings (novel behaviour of a stable
    /// workload) are appended to `findings`.
    pub fn observe(
        &mut self,
        key: &WorkloadKey,
        container_id: Option<&str>,
        observations: &[Observation],
        now: UnixMillis,
        findings: &mut Vec<Finding>,
    ) {
        if observations.is_empty() {
            return;
        }
        self.ensure(key, now);
        let provenance = Provenance::new(self.node.clone(), container_id);
        let Engine {
            workloads,
            scratch,
            metrics,
            ..
        } = self;
        let Some(entry) = workloads.get_mut(key) else {
            return;
        };
        match &mut entry.phase {
            Phase::Learning { profile, .. } => {
                // The wall clock, not the event's time (see `Entry::events_since`).
                entry
                    .events_since
                    .get_or_insert_with(|| super::unix_ms(std::time::SystemTime::now()));
                for obs in observations {
                    match profile.observe(obs, now, &provenance) {
                        Observed::New | Observed::LimitReached => entry.dirty = true,
                        Observed::Known => {}
                    }
                }
            }
            Phase::Detecting { scorer, .. } => {
                if entry.record.state != WorkloadState::Stable {
                    return; // unstable: rules only, never novelty
                }
                let started = std::time::Instant::now();
                for obs in observations {
                    let score = scorer.score(obs, scratch);
                    metrics.anomaly_score.observe(score.score);
                    if score.is_novel() {
                        findings.push(Finding {
                            workload: key.clone(),
                            baseline_state: entry.record.state,
                            dimension: score.dimension,
                            item: score.item.to_owned(),
                            score: score.score,
                            priority: score.priority(),
                            alert: scorer.is_alert(&score),
                        });
                        entry.record.alerts += 1;
                    }
                }
                metrics
                    .scorer_seconds
                    .observe(started.elapsed().as_secs_f64() / observations.len() as f64);
            }
        }
    }

    /// Learns one interval of syscall counts, or scores the syscalls of a stable workload.
    pub fn observe_syscalls(
        &mut self,
        key: &WorkloadKey,
        container_id: Option<&str>,
        counts: &[(String, u64)],
        interval: Duration,
        now: UnixMillis,
        findings: &mut Vec<Finding>,
    ) {
        self.ensure(key, now);
        let provenance = Provenance::new(self.node.clone(), container_id);
        let Some(entry) = self.workloads.get_mut(key) else {
            return;
        };
        if let Phase::Learning { profile, .. } = &mut entry.phase {
            match profile.observe_syscall_counts(counts, interval.as_secs_f64(), now, &provenance) {
                Ok(r) if r.new_syscalls > 0 || r.limit_reached => entry.dirty = true,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(message = "Syscall counts not learned.", workload = %key, %e)
                }
            }
            return;
        }
        let observations: Vec<Observation> = counts
            .iter()
            .map(|(name, _)| Observation::syscall(name))
            .collect();
        self.observe(key, container_id, &observations, now, findings);
    }
}

/// The detection phase of a baseline: its novelty scorer and the models stored in it.
///
/// The baseline kept in memory leaves its `models` out: detection uses them parsed (`rate`,
/// `sequence`), and their encoded form with its learning data (calibration traces, rate
/// intervals) as a JSON tree was most of a small workload's memory in detection (issue 13).
/// What needs the baseline whole (`mode learn` extending it, a new version inheriting it)
/// reads it back from the store, which always holds it (see [`Engine::stored_baseline`]).
pub(super) fn detecting(mut baseline: Baseline) -> Phase {
    let scorer = Box::new(NoveltyScorer::new(&baseline));
    let rate = model_of::<RateModel>(&baseline, RATE_MODEL).map(Box::new);
    let sequence = sequence_model_of(&baseline).map(Arc::new);
    baseline.models = Default::default();
    Phase::Detecting {
        baseline: Arc::new(baseline),
        scorer,
        rate,
        sequence,
    }
}

/// A model stored in a baseline's `models`; one that does not load is logged and left out
/// (the rest of the baseline still detects).
pub(super) fn model_of<M: serde::de::DeserializeOwned>(
    baseline: &Baseline,
    name: &str,
) -> Option<M> {
    let value = baseline.models.get(name)?;
    serde_json::from_value::<M>(value.clone())
        .map_err(|e| {
            tracing::warn!(
                message = "A model of the baseline does not load; it is not used.",
                workload = %baseline.workload,
                model = name,
                %e
            )
        })
        .ok()
}

//! Baselines as portable artifacts: the models of a baseline file, their learning data, how
//! whole baselines merge (items *and* models), and how an imported file's models are checked.
//!
//! # What a baseline's `models` hold
//!
//! | name | content |
//! |---|---|
//! | `sequence` | the [`SequenceModel`] file form (6-gram counts, configuration, calibration) |
//! | `sequence_traces` | the calibration traces it was calibrated on: whole syscall traces of sampled learning threads (syscall numbers), at most [`MAX_TRACES`] of at most [`MAX_TRACE_LEN`] syscalls |
//! | `rate` | the fitted [`RateModel`] |
//! | `rate_intervals` | the learning intervals it was fitted on: `{ "at": unix ms, "features": FeatureVector }`, oldest first, at most [`MAX_INTERVALS`] (the newest); present without `rate` when learning had too few intervals to fit one (a merge or an extension pools them) |
//!
//! The learning data is what makes merging sound: a model cannot be averaged, but its data
//! can be pooled and the model refitted.
//!
//! # Merge ([`merge_baselines`])
//!
//! * Items, statistics and metadata: [`habit_profiles::baseline::merge`] (counts summed, first
//!   seen min, last seen max, provenance kept).
//! * Sequence model: the 6-gram counts of every input summed and the Kneser–Ney model rebuilt
//!   from them; the calibration traces pooled and the model calibrated again on them by
//!   cross-fitting. If an input has a sequence model but no traces (a file from an older
//!   habitd), the held-out scores of the inputs' calibrations are pooled instead.
//! * Rate model: the learning intervals pooled (ordered by time) and the model refitted with
//!   the inputs' false-alarm rate. If an input has a rate model but no intervals, the merged
//!   baseline has no rate model (it cannot be refitted soundly), and the report says so.
//! * The baseline's novelty calibration is recomputed on the merged items, with the inputs'
//!   target false-alarm rate.
//!
//! Pooled data is kept in a canonical order and bounded by a canonical choice (traces: the
//! [`MAX_TRACES`] with the smallest content hash; intervals: the newest), so the result
//! depends only on the set of inputs: the merge is commutative and associative (up to float
//! rounding in the syscall-rate statistics), and replicas and nodes merge in any order.

use std::collections::BTreeMap;

use habit_profiles::baseline::{self, Baseline};
use habit_profiles::error::ProfileError;
use serde::{Deserialize, Serialize};

use crate::calibrate::calibrate;
use crate::rate::{FeatureVector, RateConfig, RateModel};
use crate::sequence::{SequenceCalibration, SequenceModel};

/// The sequence model's name in `models`.
pub const SEQUENCE_MODEL: &str = "sequence";
/// Its calibration traces' name in `models`.
pub const SEQUENCE_TRACES: &str = "sequence_traces";
/// The rate model's name in `models`.
pub const RATE_MODEL: &str = "rate";
/// Its learning intervals' name in `models`.
pub const RATE_INTERVALS: &str = "rate_intervals";
/// Every name `models` may hold.
pub const MODEL_NAMES: [&str; 4] = [SEQUENCE_MODEL, SEQUENCE_TRACES, RATE_MODEL, RATE_INTERVALS];

/// Most calibration traces stored.
pub const MAX_TRACES: usize = 64;
/// Most syscalls stored per calibration trace (longer traces keep their beginning).
pub const MAX_TRACE_LEN: usize = 4096;
/// Most learning intervals stored (8 h of 10-s intervals).
pub const MAX_INTERVALS: usize = 2880;
/// The calibration method of a sequence model whose inputs had no traces to pool.
pub const POOLED_SCORES_METHOD: &str = "habitd/sequence-pooled-scores/1";

/// One learning interval of the rate model, with when it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimedInterval {
    /// When the interval ended (unix ms).
    pub at: u64,
    /// What the workload did in it.
    pub features: FeatureVector,
}

/// The learning data stored beside the models.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LearningData {
    /// Calibration traces of the sequence model.
    pub traces: Vec<Vec<u32>>,
    /// Learning intervals of the rate model.
    pub intervals: Vec<TimedInterval>,
}

/// FNV-1a over a trace: a fixed hash (no per-process key), so that the choice of traces to
/// keep is the same everywhere.
fn trace_hash(trace: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for nr in trace {
        for b in nr.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Traces in canonical order, bounded canonically (see the module documentation).
pub fn canonical_traces(mut traces: Vec<Vec<u32>>) -> Vec<Vec<u32>> {
    for t in &mut traces {
        t.truncate(MAX_TRACE_LEN);
    }
    traces.retain(|t| !t.is_empty());
    traces.sort_by_cached_key(|t| (trace_hash(t), t.clone()));
    traces.truncate(MAX_TRACES);
    traces
}

/// Intervals in time order, the newest [`MAX_INTERVALS`] kept; ties ordered by content.
pub fn canonical_intervals(mut intervals: Vec<TimedInterval>) -> Vec<TimedInterval> {
    let bits = |i: &TimedInterval| -> Vec<u64> {
        let mut v: Vec<u64> = i.features.values().iter().map(|x| x.to_bits()).collect();
        v.push(i.features.interval_secs().to_bits());
        v.push(u64::from(i.features.has_bytes()));
        v.push(u64::from(i.features.saturated()));
        v
    };
    intervals.sort_by_cached_key(|i| (i.at, bits(i)));
    let excess = intervals.len().saturating_sub(MAX_INTERVALS);
    intervals.drain(..excess);
    intervals
}

fn model_error(field: &str, reason: impl std::fmt::Display) -> ProfileError {
    ProfileError::BaselineInvalid {
        field: format!("models.{field}"),
        reason: reason.to_string(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    baseline: &Baseline,
    name: &str,
) -> Result<Option<T>, ProfileError> {
    baseline
        .models
        .get(name)
        .map(|v| serde_json::from_value::<T>(v.clone()).map_err(|e| model_error(name, e)))
        .transpose()
}

fn encode(name: &str, value: &impl Serialize) -> Result<serde_json::Value, ProfileError> {
    serde_json::to_value(value).map_err(|e| model_error(name, e))
}

/// The models of a baseline, loaded and checked.
#[derive(Debug, Clone, Default)]
pub struct Models {
    /// The sequence model.
    pub sequence: Option<SequenceModel>,
    /// The rate model.
    pub rate: Option<RateModel>,
    /// Their learning data (empty when the file has none).
    pub data: LearningData,
    /// Whether the file had `sequence_traces` / `rate_intervals` at all.
    pub has_traces: bool,
    /// See `has_traces`.
    pub has_intervals: bool,
}

/// Loads and checks every model of a baseline: only known names, each of the right shape
/// (the models' own validation: finite numbers, grams of six syscalls, features this build
/// knows…), learning data within bounds. The error names the field (`models.rate: …`).
pub fn load_models(baseline: &Baseline) -> Result<Models, ProfileError> {
    if let Some(name) = baseline
        .models
        .keys()
        .find(|n| !MODEL_NAMES.contains(&n.as_str()))
    {
        return Err(model_error(
            name,
            format!(
                "is not a model this habitd knows ({})",
                MODEL_NAMES.join(", ")
            ),
        ));
    }
    let sequence: Option<SequenceModel> = decode(baseline, SEQUENCE_MODEL)?;
    let rate: Option<RateModel> = decode(baseline, RATE_MODEL)?;
    let traces: Option<Vec<Vec<u32>>> = decode(baseline, SEQUENCE_TRACES)?;
    let intervals: Option<Vec<TimedInterval>> = decode(baseline, RATE_INTERVALS)?;
    if let Some(traces) = &traces {
        if traces.len() > MAX_TRACES {
            return Err(model_error(
                SEQUENCE_TRACES,
                format!("has {} traces, more than {MAX_TRACES}", traces.len()),
            ));
        }
        if let Some(i) = traces.iter().position(|t| t.len() > MAX_TRACE_LEN) {
            return Err(model_error(
                &format!("{SEQUENCE_TRACES}[{i}]"),
                format!("is longer than {MAX_TRACE_LEN} syscalls"),
            ));
        }
        if sequence.is_none() {
            return Err(model_error(SEQUENCE_TRACES, "without a sequence model"));
        }
    }
    if let Some(intervals) = &intervals
        && intervals.len() > MAX_INTERVALS
    {
        return Err(model_error(
            RATE_INTERVALS,
            format!(
                "has {} intervals, more than {MAX_INTERVALS}",
                intervals.len()
            ),
        ));
    }
    Ok(Models {
        sequence,
        rate,
        has_traces: traces.is_some(),
        has_intervals: intervals.is_some(),
        data: LearningData {
            traces: traces.unwrap_or_default(),
            intervals: intervals.unwrap_or_default(),
        },
    })
}

/// Stores models and their learning data in a baseline (canonical order, bounded).
pub fn store_models(
    baseline: &mut Baseline,
    sequence: Option<&SequenceModel>,
    rate: Option<&RateModel>,
    data: LearningData,
) -> Result<(), ProfileError> {
    for name in MODEL_NAMES {
        baseline.models.remove(name);
    }
    if let Some(model) = sequence {
        baseline
            .models
            .insert(SEQUENCE_MODEL.into(), encode(SEQUENCE_MODEL, model)?);
        let traces = canonical_traces(data.traces);
        if !traces.is_empty() {
            baseline
                .models
                .insert(SEQUENCE_TRACES.into(), encode(SEQUENCE_TRACES, &traces)?);
        }
    }
    if let Some(model) = rate {
        baseline
            .models
            .insert(RATE_MODEL.into(), encode(RATE_MODEL, model)?);
    }
    // Kept even without a model (too few to fit one): a merge or an extension pools them.
    let intervals = canonical_intervals(data.intervals);
    if !intervals.is_empty() {
        baseline
            .models
            .insert(RATE_INTERVALS.into(), encode(RATE_INTERVALS, &intervals)?);
    }
    Ok(())
}

/// What a merge did beyond the items, for the operator.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergeReport {
    /// Notes (a model dropped or calibrated from pooled scores, and why).
    pub notes: Vec<String>,
}

/// Merges baselines of one workload: items, metadata and models (see the module
/// documentation). The result depends only on the set of inputs, not their order.
pub fn merge_baselines(inputs: &[Baseline]) -> Result<(Baseline, MergeReport), ProfileError> {
    let Some((first, rest)) = inputs.split_first() else {
        return Err(ProfileError::BaselineInvalid {
            field: "(inputs)".into(),
            reason: "nothing to merge".into(),
        });
    };
    let mut merged = first.clone();
    for other in rest {
        merged = baseline::merge(&merged, other)?;
    }
    let models: Vec<Models> = inputs.iter().map(load_models).collect::<Result<_, _>>()?;
    let mut report = MergeReport::default();

    // Sequence: counts summed, model rebuilt, calibration traces pooled.
    let with_sequence: Vec<&Models> = models.iter().filter(|m| m.sequence.is_some()).collect();
    let mut sequence = None;
    let mut traces = Vec::new();
    if let Some(config) = with_sequence
        .iter()
        .find_map(|m| m.sequence.as_ref().map(|s| s.config().clone()))
    {
        let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
        let (mut learned_traces, mut syscalls) = (0u64, 0u64);
        for m in &with_sequence {
            let Some(s) = &m.sequence else { continue };
            if *s.config() != config {
                return Err(model_error(
                    SEQUENCE_MODEL,
                    "the inputs' sequence models have different configurations",
                ));
            }
            for (key, count) in s.known_grams() {
                let total = counts.entry(key).or_insert(0);
                *total = total.saturating_add(count);
            }
            let (t, n) = s.learned_from();
            learned_traces = learned_traces.saturating_add(t);
            syscalls = syscalls.saturating_add(n);
        }
        let mut model = SequenceModel::from_counts(config, counts, learned_traces, syscalls)
            .map_err(|e| model_error(SEQUENCE_MODEL, e))?;
        if with_sequence.iter().all(|m| m.has_traces) {
            traces = canonical_traces(
                with_sequence
                    .iter()
                    .flat_map(|m| m.data.traces.iter().cloned())
                    .collect(),
            );
            model
                .calibrate_on_traces(&traces)
                .map_err(|e| model_error(SEQUENCE_MODEL, e))?;
        } else {
            let scores: Vec<f64> = with_sequence
                .iter()
                .filter_map(|m| m.sequence.as_ref()?.calibration())
                .flat_map(|c: &SequenceCalibration| c.scores.iter().copied())
                .collect();
            if !scores.is_empty() {
                model.calibrate_with(POOLED_SCORES_METHOD, scores);
            }
            report.notes.push(
                "sequence model: an input has no calibration traces (an older file): its \
                 calibration pools the inputs' held-out scores instead"
                    .into(),
            );
        }
        sequence = Some(model);
    }

    // Rate: learning intervals pooled, model refitted. An input may have intervals and no
    // model (too few intervals to fit one alone): they count too.
    let with_rate: Vec<&Models> = models
        .iter()
        .filter(|m| m.rate.is_some() || m.has_intervals)
        .collect();
    let mut rate = None;
    let mut intervals = Vec::new();
    if with_rate.iter().all(|m| m.has_intervals) {
        intervals = canonical_intervals(
            with_rate
                .iter()
                .flat_map(|m| m.data.intervals.iter().cloned())
                .collect(),
        );
        let false_alarm_rate = with_rate
            .iter()
            .filter_map(|m| m.rate.as_ref())
            .map(|r| r.calibration().false_alarm_rate)
            .fold(None, |acc: Option<f64>, x| {
                Some(acc.map_or(x, |a| a.min(x)))
            });
        let config = RateConfig {
            false_alarm_rate: false_alarm_rate.unwrap_or(RateConfig::default().false_alarm_rate),
            ..RateConfig::default()
        };
        let vectors: Vec<FeatureVector> = intervals.iter().map(|i| i.features.clone()).collect();
        match RateModel::fit(&vectors, &config) {
            Ok(model) => rate = Some(model),
            Err(crate::rate::RateError::TooFewIntervals { .. }) => {}
            Err(e) => return Err(model_error(RATE_MODEL, e)),
        }
    } else {
        report.notes.push(
            "rate model dropped: an input has no learning intervals (an older file), so the \
             model cannot be refitted on all inputs"
                .into(),
        );
    }
    store_models(
        &mut merged,
        sequence.as_ref(),
        rate.as_ref(),
        LearningData { traces, intervals },
    )?;

    // Novelty calibration on the merged items.
    let target = inputs
        .iter()
        .filter_map(|b| b.calibration.as_ref().map(|c| c.target_false_alarm_rate))
        .fold(None, |acc: Option<f64>, x| {
            Some(acc.map_or(x, |a| a.min(x)))
        });
    if let Some(target) = target {
        calibrate(&mut merged, target);
    }
    Ok((merged, report))
}

#[cfg(test)]
#[path = "artifact_tests.rs"]
mod tests;

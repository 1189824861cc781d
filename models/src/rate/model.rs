//! Fitting, calibrating, scoring and storing the rate model (see the module documentation of
//! [`crate::rate`] for the method and why).

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::Array2;
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::RateError;
use super::explain::{FeatureDeviation, RateDirection, RateScore};
use super::features::{FEATURE_COUNT, Feature, FeatureVector, RateKind, Transform};

/// Version of the serialised form.
pub const FORMAT: u32 = 1;

/// The name and version of the method, recorded in the serialised model; a model whose method
/// this build does not implement is refused on load rather than scored wrongly.
pub const METHOD: &str = "habitd/rate-kmeans-diag/1";

/// Smallest tail scale of the calibration, in units of the statistic (a sum of squared
/// standardised deviations). A chi-square statistic has an exponential tail of scale 2; a
/// smaller fitted scale (few or identical held-out intervals) would extrapolate a threshold
/// barely above the largest learning value.
const MIN_TAIL_SCALE: f64 = 2.0;

/// Fraction of held-out statistics above which the tail is modelled as exponential.
const TAIL_FRACTION: f64 = 0.2;

/// Held-out statistics kept in the serialised model (evenly spaced order statistics when
/// there are more), enough for a smooth empirical p-value without growing the baseline file.
const MAX_STORED_HELDOUT: usize = 512;

/// Smallest held-out statistic of a learning interval set aside as a transient: ten spreads
/// on one feature, or two on every feature at once (about `1e-11` for a chi-square statistic
/// of 23 features), far beyond what a calibrated threshold is meant to separate.
const TRANSIENT_MIN_STATISTIC: f64 = 100.0;

/// Tukey's "far out" fence on `ln(1 + statistic)` of the held-out intervals: beyond the
/// upper quartile by this many interquartile ranges.
const TRANSIENT_IQR_FACTOR: f64 = 3.0;

/// Rounds of setting transients aside and cross-validating again (a gross transient inflates
/// the spreads of the models that score the others, which can hide a smaller one).
const TRANSIENT_ROUNDS: usize = 3;

/// At most one learning interval in this many is a transient. A one-off (a start-up, a
/// deploy's migration) is rare; what recurs more often (a periodic job, a maintenance round)
/// is a regime the model must see. Measured: a service whose maintenance ran in 3 of its 15
/// learning intervals had it set aside under the earlier bound (a quarter), kept only its
/// identical steady intervals, and alerted on every benign change of mix in detection.
const TRANSIENT_MAX_SHARE: usize = 10;

/// An event rate that the nearest mode had less than once per interval is named before the
/// other deviations once it is at least this many spreads above (several events in the
/// interval: one or two stray events are not "frequent").
const RARE_EVENT_MIN_Z: f64 = 3.0;

/// A rate this many spreads above its mode makes an anomalous interval a rise.
const RISE_MIN_Z: f64 = 3.0;

/// Knobs of fitting and calibration. Every field has a default (see [`Default`]), so a TOML
/// section may set only some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateConfig {
    /// Target false alarms per normal interval and workload, in `(0, 0.5]`. The default,
    /// 0.001, is at most about 9 a day per workload at 10-s intervals (0.01 would be 86).
    /// The [`min_threshold`](Self::min_threshold) floor can only lower the real rate.
    pub false_alarm_rate: f64,
    /// Fewest learning intervals to fit (never fewer than 2: calibration needs an interval
    /// held out). Below it, [`RateModel::fit`] returns [`RateError::TooFewIntervals`].
    pub min_intervals: usize,
    /// Folds of the cross-validation that produces the held-out statistics (at least 2;
    /// capped at the number of intervals). Folds are contiguous blocks of time, so that
    /// held-out intervals are not near-copies of their neighbours in the training part.
    pub folds: usize,
    /// Most normal modes (k-means clusters) a workload may have.
    pub max_clusters: usize,
    /// Learning intervals per cluster at least: `k ≤ intervals / min_cluster_size`.
    pub min_cluster_size: usize,
    /// Pseudo-intervals of the pooled within-cluster variance added to each cluster's own, so
    /// that a small cluster does not get an overconfident (tiny) spread.
    pub shrinkage: f64,
    /// Floor on a share feature's spread, in √share units (0.02: about ±2 percentage points
    /// around a 25 % share, ±0.4 around 1 %, and 0 → 0.04 %): smaller changes are noise,
    /// however constant learning was. The floor is also at least the sampling noise of a
    /// share of the median number of syscalls per interval, `1 / (2√N)`.
    pub min_share_std: f64,
    /// Floor on a rate feature's spread in log units (0.05 ≈ 5 % relative). The floor is also
    /// at least the log change of one more event per interval at the median rate, so that rare
    /// events (an exec every few minutes) do not look alarming for one extra occurrence, and
    /// at least the Poisson noise of the median count per interval.
    pub min_log_rate_std: f64,
    /// Smallest threshold on the statistic: 25 = one feature 5 spreads off. Decides only
    /// when held-out intervals barely vary (identical intervals, tiny learning sets).
    pub min_threshold: f64,
    /// How many deviating features a score names.
    pub top_features: usize,
    /// How much more *load* a mode tolerates before a rise counts: the rates that follow the
    /// number of clients ([`RateKind::follows_load`]: all syscalls, bytes, accepts, opens,
    /// connects) may rise up to `load_headroom` times their mode's level without counting;
    /// above it only the excess counts (at least 1; 1 turns it off). Scoring applies it, not
    /// the calibration (so the false-alarm rate stays at most the target). A service learned under one load meets more clients at its peak, and
    /// three times the clients made a real redis make 2.4 times its syscalls ("syscall rate
    /// 2.4× baseline"); without headroom that was an alert. 4 keeps the rises that mean
    /// something: a scan's 40× connects count as 37×, a rate the mode never had has no
    /// headroom, and the rates that do not follow load (execs, distinct destinations and
    /// files) and the syscall mix are scored as before.
    pub load_headroom: f64,
    /// Seed of the k-means initialisation (fitting is deterministic for a given seed).
    pub seed: u64,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            false_alarm_rate: 0.001,
            min_intervals: 10,
            folds: 5,
            max_clusters: 4,
            min_cluster_size: 10,
            shrinkage: 5.0,
            min_share_std: 0.02,
            min_log_rate_std: 0.05,
            min_threshold: 25.0,
            top_features: 3,
            load_headroom: DEFAULT_LOAD_HEADROOM,
            seed: 0x6861_6269_7464,
        }
    }
}

impl RateConfig {
    fn validate(&self) -> Result<(), RateError> {
        let bad = |what: &str| Err(RateError::InvalidConfig(what.to_owned()));
        if !(self.false_alarm_rate > 0.0 && self.false_alarm_rate <= 0.5) {
            return bad("false_alarm_rate must be in (0, 0.5]");
        }
        if self.folds < 2 {
            return bad("folds must be at least 2");
        }
        if self.max_clusters == 0 || self.min_cluster_size == 0 {
            return bad("max_clusters and min_cluster_size must be at least 1");
        }
        if !(self.shrinkage.is_finite() && self.shrinkage >= 0.0) {
            return bad("shrinkage must be a finite non-negative number");
        }
        for (name, value) in [
            ("min_share_std", self.min_share_std),
            ("min_log_rate_std", self.min_log_rate_std),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(RateError::InvalidConfig(format!(
                    "{name} must be a finite positive number"
                )));
            }
        }
        if !(self.min_threshold.is_finite() && self.min_threshold >= 0.0) {
            return bad("min_threshold must be a finite non-negative number");
        }
        if !(self.load_headroom.is_finite() && self.load_headroom >= 1.0) {
            return bad("load_headroom must be a finite number of at least 1");
        }
        if self.top_features > FEATURE_COUNT {
            return bad("top_features must be at most the number of features");
        }
        Ok(())
    }
}

/// Baseline statistics of one feature in its natural unit (for explanations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureBaseline {
    /// The feature (serialised as its name).
    pub feature: Feature,
    /// How the model sees it (recorded so that a changed transform is detected on load).
    pub transform: Transform,
    /// Mean over the learning intervals.
    pub mean: f64,
    /// Standard deviation over the learning intervals.
    pub std: f64,
    /// Largest learning value.
    pub max: f64,
}

/// One normal mode: a diagonal Gaussian in model units (after each feature's transform).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cluster {
    /// Share of the learning intervals in this mode.
    weight: f64,
    /// Learning intervals in this mode.
    size: usize,
    /// Mean per feature (same order as the model's features).
    center: Vec<f64>,
    /// Spread per feature: shrunk towards the pooled spread, floored, always positive.
    scale: Vec<f64>,
    /// Mean per feature in natural units over the learning intervals nearest to this mode:
    /// the baseline an explanation quotes (a busy interval is compared with busy intervals).
    mean: Vec<f64>,
}

impl Cluster {
    /// Sum of squared standardised deviations of `row`, skipping feature `skip`, with the
    /// load `headroom`.
    fn distance(&self, row: &[f64], skip: Option<usize>, headroom: &Headroom<'_>) -> f64 {
        row.iter()
            .zip(self.center.iter().zip(&self.scale))
            .enumerate()
            .filter(|(j, _)| Some(*j) != skip)
            .map(|(j, (x, (c, s)))| {
                let z = headroom.deviation(j, *x, *c) / s;
                z * z
            })
            .sum()
    }
}

/// The threshold and the held-out statistics it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateCalibration {
    /// Target false alarms per normal interval.
    pub false_alarm_rate: f64,
    /// Alert when the statistic exceeds this.
    pub threshold: f64,
    /// The floor the threshold was held to ([`RateConfig::min_threshold`]).
    pub min_threshold: f64,
    /// Number of held-out intervals scored.
    pub heldout_count: usize,
    /// Their statistics, ascending (at most 512 evenly spaced order statistics).
    pub heldout: Vec<f64>,
    /// Where the exponential tail starts (the 80th percentile of the held-out statistics).
    pub tail_start: f64,
    /// Scale of the exponential tail (mean excess over `tail_start`, at least 2).
    pub tail_scale: f64,
    /// Estimated probability that a normal interval exceeds `tail_start`.
    pub tail_probability: f64,
    /// Learning intervals set aside as transients before fitting (a container's start-up, a
    /// one-off burst): fewer than can form a mode of their own, each far beyond the others'
    /// held-out statistics. They are neither in the modes nor in the held-out statistics, so
    /// that one start-up does not inflate every spread and the threshold; they are kept with
    /// the model, and an interval like them (or between a mode and them) in detection is
    /// explained.
    #[serde(default)]
    pub transients: usize,
}

impl RateCalibration {
    /// Calibrates from held-out statistics (finite, any order).
    fn from_heldout(
        mut stats: Vec<f64>,
        false_alarm_rate: f64,
        min_threshold: f64,
        transients: usize,
    ) -> Self {
        stats.retain(|s| s.is_finite());
        stats.sort_by(f64::total_cmp);
        let n = stats.len();
        let tail_start = stats
            .get(((n.saturating_sub(1)) as f64 * (1.0 - TAIL_FRACTION)).floor() as usize)
            .copied()
            .unwrap_or(0.0);
        let above: Vec<f64> = stats
            .iter()
            .filter(|&&s| s > tail_start)
            .map(|s| s - tail_start)
            .collect();
        let tail_scale = if above.is_empty() {
            MIN_TAIL_SCALE
        } else {
            (above.iter().sum::<f64>() / above.len() as f64).max(MIN_TAIL_SCALE)
        };
        let tail_probability = (1.0 + above.len() as f64) / (n as f64 + 1.0);
        let heldout = if n > MAX_STORED_HELDOUT {
            (0..MAX_STORED_HELDOUT)
                .filter_map(|i| stats.get(i * (n - 1) / (MAX_STORED_HELDOUT - 1)).copied())
                .collect()
        } else {
            stats
        };
        let mut calibration = Self {
            false_alarm_rate,
            threshold: min_threshold,
            min_threshold,
            heldout_count: n,
            heldout,
            tail_start,
            tail_scale,
            tail_probability,
            transients,
        };
        calibration.threshold = calibration.threshold_for(false_alarm_rate);
        calibration
    }

    /// The threshold whose estimated false-alarm rate is `rate`, held to the floor.
    fn threshold_for(&self, rate: f64) -> f64 {
        let t = if rate < self.tail_probability {
            self.tail_start + self.tail_scale * (self.tail_probability / rate).ln()
        } else {
            quantile(&self.heldout, 1.0 - rate)
        };
        t.max(self.min_threshold)
    }

    /// Estimated probability that a normal interval's statistic is at least `stat`.
    pub fn exceedance(&self, stat: f64) -> f64 {
        if stat.is_nan() {
            return 1.0;
        }
        if stat > self.tail_start {
            return (self.tail_probability * (-(stat - self.tail_start) / self.tail_scale).exp())
                .clamp(0.0, 1.0);
        }
        let stored = self.heldout.len();
        if stored == 0 {
            return 1.0;
        }
        let at_least = stored - self.heldout.partition_point(|&h| h < stat);
        let n = self.heldout_count.max(stored) as f64;
        let count = at_least as f64 / stored as f64 * n;
        ((1.0 + count) / (n + 1.0)).clamp(0.0, 1.0)
    }

    fn validate(&self) -> Result<(), String> {
        let finite = |name: &str, x: f64| {
            if x.is_finite() {
                Ok(())
            } else {
                Err(format!("calibration {name} is not finite"))
            }
        };
        finite("threshold", self.threshold)?;
        finite("min_threshold", self.min_threshold)?;
        finite("tail_start", self.tail_start)?;
        if !(self.false_alarm_rate > 0.0 && self.false_alarm_rate < 1.0) {
            return Err("calibration false_alarm_rate must be in (0, 1)".into());
        }
        if !(self.tail_scale.is_finite() && self.tail_scale > 0.0) {
            return Err("calibration tail_scale must be positive".into());
        }
        if !(self.tail_probability > 0.0 && self.tail_probability <= 1.0) {
            return Err("calibration tail_probability must be in (0, 1]".into());
        }
        if self.heldout.iter().any(|h| !h.is_finite())
            || self.heldout.windows(2).any(|w| w[0] > w[1])
        {
            return Err("calibration heldout must be finite and ascending".into());
        }
        if self.heldout_count < self.heldout.len() {
            return Err("calibration heldout_count is smaller than heldout".into());
        }
        Ok(())
    }
}

/// Linear-interpolated quantile of ascending values (0 for none).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    let pos = q.clamp(0.0, 1.0) * last as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(last);
    let frac = pos - lo as f64;
    match (sorted.get(lo), sorted.get(hi)) {
        (Some(a), Some(b)) => a + (b - a) * frac,
        _ => 0.0,
    }
}

/// The default [`RateConfig::load_headroom`].
pub const DEFAULT_LOAD_HEADROOM: f64 = 4.0;

fn default_load_headroom() -> f64 {
    DEFAULT_LOAD_HEADROOM
}

/// What scoring forgives a feature (see [`Headroom`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leeway {
    /// Nothing: every deviation counts.
    None,
    /// A rate that follows load: up to the headroom factor above its mode.
    Load,
    /// A share of the syscall mix: a fall. Shares sum to 1, so what a change adds shows as a
    /// share that rises, which counts; a share that falls is the other side of it, or activity
    /// that did not happen this interval (a health check's helper process that did not run,
    /// under three times the requests: "share of memory syscalls fell to 0 %" on redis).
    Share,
}

/// The leeway scoring gives a model's features (see [`RateConfig::load_headroom`]): which
/// features follow load, the factor, and the shares whose falls do not count.
#[derive(Debug, Clone, Copy)]
struct Headroom<'a> {
    leeway: &'a [Leeway],
    factor: f64,
}

impl<'a> Headroom<'a> {
    /// No leeway (fitting and calibrating: the learning intervals are what they are).
    const NONE: Headroom<'static> = Headroom {
        leeway: &[],
        factor: 1.0,
    };

    /// Each feature's leeway, in the model's feature order.
    fn leeway(features: impl Iterator<Item = Feature>) -> Vec<Leeway> {
        features
            .map(|f| match f {
                Feature::Rate(k) if k.follows_load() => Leeway::Load,
                Feature::Share(_) => Leeway::Share,
                Feature::Rate(_) => Leeway::None,
            })
            .collect()
    }

    fn new(leeway: &'a [Leeway], factor: f64) -> Self {
        Self { leeway, factor }
    }

    /// The deviation `x' − center` of feature `j` (model units, `ln(1 + rate)` for rates,
    /// `√share` for shares): a load-following rate up to `factor` times the mode's level
    /// (`e^center − 1`) is no deviation; above it, only the excess counts
    /// (`rate − (factor − 1) · level`), so the score is continuous and a rise far beyond the
    /// headroom keeps nearly all of its weight. A mode that never had the rate (level 0) has
    /// no headroom for it. A share below its mode is no deviation.
    fn deviation(&self, j: usize, x: f64, center: f64) -> f64 {
        match self.leeway.get(j).copied().unwrap_or(Leeway::None) {
            Leeway::Load if x > center && self.factor > 1.0 => {
                let level = center.exp_m1().max(0.0);
                let excess = (x.exp_m1() - (self.factor - 1.0) * level).max(level);
                excess.ln_1p() - center
            }
            Leeway::Share if x < center => 0.0,
            _ => x - center,
        }
    }
}

/// The fields of a model, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RateModelData {
    format: u32,
    method: String,
    /// Mean interval length of learning, seconds.
    interval_secs: f64,
    /// Learning intervals the model was fitted on.
    intervals: usize,
    /// How many deviating features a score names.
    top_features: usize,
    /// [`RateConfig::load_headroom`] (models stored before it get the default).
    #[serde(default = "default_load_headroom")]
    load_headroom: f64,
    /// The features the model uses (`rate.bytes` only if every learning interval had it).
    features: Vec<FeatureBaseline>,
    clusters: Vec<Cluster>,
    calibration: RateCalibration,
    /// The learning intervals set aside as transients, in model units (at most
    /// `min_cluster_size − 1`): what explains them again in detection (see
    /// [`RateModel::score`]). Models stored before them have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    transients: Vec<Vec<f64>>,
}

/// A fitted per-workload rate model. Plain data: scoring needs no linfa, and the serialised
/// form (JSON inside the baseline file) holds only finite numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct RateModel {
    data: RateModelData,
}

impl Serialize for RateModel {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.data.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RateModel {
    /// Deserialises and validates: a model whose numbers are not finite, whose shapes do not
    /// match, or whose method or features this build does not know is refused, so that
    /// [`RateModel::score`] can be infallible.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let data = RateModelData::deserialize(deserializer)?;
        Self::from_data(data).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Feature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Feature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Feature::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown rate-model feature {name:?} (a model from a newer habitd?)"
            ))
        })
    }
}

impl RateModel {
    /// Fits a model to a workload's learning intervals (oldest first) and calibrates its
    /// threshold on held-out intervals.
    ///
    /// Errors only for too few intervals, a bad configuration or invalid input; degenerate
    /// but valid data (identical intervals, constant features, an idle workload) gives a
    /// model whose spreads sit at their floors.
    pub fn fit(intervals: &[FeatureVector], config: &RateConfig) -> Result<RateModel, RateError> {
        config.validate()?;
        let need = config.min_intervals.max(2);
        if intervals.len() < need {
            return Err(RateError::TooFewIntervals {
                got: intervals.len(),
                need,
            });
        }
        let with_bytes = intervals.iter().all(FeatureVector::has_bytes);
        let features: Vec<Feature> = Feature::ALL
            .into_iter()
            .filter(|f| with_bytes || *f != Feature::Rate(RateKind::Bytes))
            .collect();
        let interval_secs = mean_interval_secs(intervals);

        // Floors from the median interval: robust to the transients not yet set aside.
        let median_syscalls = median(
            intervals
                .iter()
                .map(|v| v.get(Feature::Rate(RateKind::Syscalls))),
        );
        let floors: Vec<f64> = features
            .iter()
            .map(|&f| {
                let typical = median(intervals.iter().map(|v| v.get(f)));
                spread_floor(f, typical, median_syscalls, interval_secs, config)
            })
            .collect();
        let all_rows: Vec<Vec<f64>> = intervals.iter().map(|v| model_row(v, &features)).collect();

        let (kept, heldout) = set_aside_transients(&all_rows, &floors, config);
        let transients = intervals.len() - kept.len();
        let transient_rows: Vec<Vec<f64>> = all_rows
            .iter()
            .enumerate()
            .filter(|(i, _)| kept.binary_search(i).is_err())
            .map(|(_, row)| row.clone())
            .collect();
        let intervals: Vec<FeatureVector> = kept
            .iter()
            .filter_map(|&i| intervals.get(i).cloned())
            .collect();
        let rows: Vec<Vec<f64>> = kept
            .iter()
            .filter_map(|&i| all_rows.get(i).cloned())
            .collect();
        let interval_secs = if transients > 0 {
            mean_interval_secs(&intervals)
        } else {
            interval_secs
        };

        let baselines: Vec<FeatureBaseline> = features
            .iter()
            .map(|&feature| {
                let values = intervals.iter().map(|v| v.get(feature));
                let (mean, var) = mean_var(values.clone());
                FeatureBaseline {
                    feature,
                    transform: feature.transform(),
                    mean,
                    std: var.sqrt(),
                    max: values.fold(0.0, f64::max),
                }
            })
            .collect();
        let calibration = RateCalibration::from_heldout(
            heldout,
            config.false_alarm_rate,
            config.min_threshold,
            transients,
        );
        let mut clusters = fit_clusters(&rows, &floors, config);
        set_natural_means(&mut clusters, &intervals, &rows, &baselines);

        Self::from_data(RateModelData {
            format: FORMAT,
            method: METHOD.to_owned(),
            interval_secs,
            intervals: intervals.len(),
            top_features: config.top_features,
            load_headroom: config.load_headroom,
            features: baselines,
            clusters,
            calibration,
            transients: transient_rows,
        })
        .map_err(RateError::InvalidModel)
    }

    /// Validates stored data (also the result of fitting: no NaN ever leaves this module).
    fn from_data(data: RateModelData) -> Result<Self, String> {
        if data.format != FORMAT {
            return Err(format!(
                "rate model format {} is not supported (this build reads {FORMAT})",
                data.format
            ));
        }
        if data.method != METHOD {
            return Err(format!(
                "rate model method {:?} is not implemented by this build ({METHOD:?})",
                data.method
            ));
        }
        if !(data.interval_secs.is_finite() && data.interval_secs > 0.0) {
            return Err("interval_secs must be positive".into());
        }
        if data.top_features > FEATURE_COUNT {
            return Err("top_features exceeds the number of features".into());
        }
        if data.features.is_empty() {
            return Err("a rate model needs at least one feature".into());
        }
        for (i, f) in data.features.iter().enumerate() {
            if data.features[..i].iter().any(|g| g.feature == f.feature) {
                return Err(format!("feature {} appears twice", f.feature.name()));
            }
            if f.transform != f.feature.transform() {
                return Err(format!(
                    "feature {} was fitted with transform {:?}, this build uses {:?}",
                    f.feature.name(),
                    f.transform,
                    f.feature.transform()
                ));
            }
            if ![f.mean, f.std, f.max].iter().all(|x| x.is_finite()) || f.std < 0.0 {
                return Err(format!(
                    "feature {} has non-finite statistics",
                    f.feature.name()
                ));
            }
        }
        if data.clusters.is_empty() {
            return Err("a rate model needs at least one cluster".into());
        }
        let d = data.features.len();
        for c in &data.clusters {
            if c.center.len() != d || c.scale.len() != d || c.mean.len() != d {
                return Err("cluster dimensions do not match the features".into());
            }
            let valid = c.center.iter().chain(&c.mean).all(|x| x.is_finite())
                && c.scale.iter().all(|s| s.is_finite() && *s > 0.0)
                && c.weight.is_finite()
                && (0.0..=1.0).contains(&c.weight);
            if !valid {
                return Err("cluster parameters must be finite with positive scales".into());
            }
        }
        if data
            .transients
            .iter()
            .any(|t| t.len() != d || !t.iter().all(|x| x.is_finite()))
        {
            return Err("transient intervals must be finite rows of the model's features".into());
        }
        data.calibration.validate()?;
        Ok(Self { data })
    }

    /// Scores one interval.
    pub fn score(&self, interval: &FeatureVector) -> RateScore {
        let features: Vec<Feature> = self.data.features.iter().map(|b| b.feature).collect();
        let row = model_row(interval, &features);
        // A model that uses bytes scoring an interval without them: leave that feature out
        // rather than read the missing value as 0 B/s.
        let skip = if interval.has_bytes() {
            None
        } else {
            features
                .iter()
                .position(|&f| f == Feature::Rate(RateKind::Bytes))
        };
        // Load-following rates above their mode get the headroom (see
        // `RateConfig::load_headroom`), shares below it do not count. Only here: the
        // threshold is calibrated on held-out statistics without either, so they can only
        // lower the false-alarm rate below the target (measured in the tests), never raise it.
        let leeway = Headroom::leeway(features.iter().copied());
        let headroom = Headroom::new(&leeway, self.data.load_headroom);
        let (statistic, nearest) = nearest_cluster(&self.data.clusters, &row, skip, &headroom);
        let calibration = &self.data.calibration;
        let score = (1.0 - calibration.exceedance(statistic)).clamp(0.0, 1.0);
        let anomalous = statistic > calibration.threshold
            && !self.like_a_transient(&row, skip, calibration.threshold);

        // Rank first; only the named few become (allocated) deviations. A kind of event the
        // mode had less than once per interval, now several times, comes first: its z is held
        // down by the one-event floor (300 execs in a 1-s interval from none are 8 spreads),
        // while the aggregates that move with it (all syscalls, the shares, the accepts that
        // the connects cause) can be 20 to 80. It is the specific, actionable item.
        let rare_per_second = 1.0 / self.data.interval_secs;
        let mut ranked: Vec<(usize, f64, bool)> = match nearest {
            Some(cluster) => row
                .iter()
                .zip(cluster.center.iter().zip(&cluster.scale))
                .enumerate()
                .filter(|(j, _)| Some(*j) != skip)
                .map(|(j, (x, (center, scale)))| {
                    let z = headroom.deviation(j, *x, *center) / scale;
                    let event = self.data.features.get(j).is_some_and(
                        |b| matches!(b.feature, Feature::Rate(k) if k.is_event_rate()),
                    );
                    let was_rare = cluster.mean.get(j).is_some_and(|m| *m < rare_per_second);
                    (j, z, event && was_rare && z >= RARE_EVENT_MIN_Z)
                })
                .collect(),
            None => Vec::new(),
        };
        let direction = self.direction(&ranked, calibration.threshold);
        ranked.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| b.1.abs().total_cmp(&a.1.abs())));
        ranked.truncate(self.data.top_features);
        let top = ranked
            .into_iter()
            .filter_map(|(j, z, _)| {
                let baseline = self.data.features.get(j)?;
                let mean = *nearest?.mean.get(j)?;
                let observed = interval.get(baseline.feature);
                Some(FeatureDeviation {
                    name: baseline.feature.name().to_owned(),
                    label: baseline.feature.label(),
                    unit: baseline.feature.unit(),
                    baseline_mean: mean,
                    baseline_std: baseline.std,
                    baseline_max: baseline.max,
                    observed,
                    ratio: (mean > 0.0).then(|| observed / mean),
                    z,
                })
            })
            .collect();

        RateScore {
            score,
            anomalous,
            statistic,
            threshold: calibration.threshold,
            direction,
            top,
        }
    }

    /// Whether an interval beyond the threshold is explained by a transient set aside while
    /// learning: within the threshold of the segment from a normal mode to that transient
    /// (scaled by the mode's spreads). A periodic job or maintenance round seen while
    /// learning was set aside so that it would not inflate the modes; when it recurs, whole
    /// or split across two intervals (part job, part normal work: a point between the two
    /// in model units), it is not new. What learning never showed is as far as before.
    fn like_a_transient(&self, row: &[f64], skip: Option<usize>, threshold: f64) -> bool {
        let used = |j: &usize| Some(*j) != skip;
        self.data.clusters.iter().any(|c| {
            self.data.transients.iter().any(|t| {
                // The point of the segment c → t nearest to `row`: a = Σ w(x−c)(t−c) / Σ w(t−c)²,
                // w = 1/σ², clamped to the segment.
                let (mut num, mut den) = (0.0, 0.0);
                for j in (0..row.len()).filter(used) {
                    let (Some(x), Some(cj), Some(tj), Some(sj)) =
                        (row.get(j), c.center.get(j), t.get(j), c.scale.get(j))
                    else {
                        continue;
                    };
                    let w = 1.0 / (sj * sj);
                    num += w * (x - cj) * (tj - cj);
                    den += w * (tj - cj) * (tj - cj);
                }
                let a = if den > 0.0 {
                    (num / den).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let distance: f64 = (0..row.len())
                    .filter(used)
                    .filter_map(|j| {
                        let (x, cj, tj, sj) =
                            (row.get(j)?, c.center.get(j)?, t.get(j)?, c.scale.get(j)?);
                        let z = (x - (cj + a * (tj - cj))) / sj;
                        Some(z * z)
                    })
                    .sum();
                distance <= threshold
            })
        })
    }

    /// Which way an interval deviates, from its features' signed `z` (`(index, z, _)`):
    /// a **drop** when the syscall rate is below its mode and the rates that rose, alone
    /// (`Σ max(z, 0)²` over the rate features), stay below the threshold: what is left of
    /// the deviation is less activity and the change of syscall mix that comes with it (an
    /// idle server polls and keeps time instead of reading and writing); a **rise** when some
    /// rate is at least [`RISE_MIN_Z`] spreads above its mode; otherwise a change of **mix**.
    fn direction(&self, ranked: &[(usize, f64, bool)], threshold: f64) -> RateDirection {
        let kind = |j: usize| match self.data.features.get(j).map(|b| b.feature) {
            Some(Feature::Rate(k)) => Some(k),
            _ => None,
        };
        let mut syscalls_z = 0.0;
        let mut rising = 0.0;
        let mut rose = false;
        for &(j, z, _) in ranked {
            let Some(k) = kind(j) else { continue };
            if k == RateKind::Syscalls {
                syscalls_z = z;
            }
            if z > 0.0 {
                rising += z * z;
                rose |= z >= RISE_MIN_Z;
            }
        }
        if syscalls_z < 0.0 && rising <= threshold {
            RateDirection::Drop
        } else if rose {
            RateDirection::Rise
        } else {
            RateDirection::Mix
        }
    }

    /// The same model calibrated for another false-alarm rate (from the stored held-out
    /// statistics: no refit, no learning data needed).
    pub fn with_false_alarm_rate(&self, false_alarm_rate: f64) -> Result<RateModel, RateError> {
        if !(false_alarm_rate > 0.0 && false_alarm_rate <= 0.5) {
            return Err(RateError::InvalidConfig(
                "false_alarm_rate must be in (0, 0.5]".into(),
            ));
        }
        let mut model = self.clone();
        let calibration = &mut model.data.calibration;
        calibration.false_alarm_rate = false_alarm_rate;
        calibration.threshold = calibration.threshold_for(false_alarm_rate);
        Ok(model)
    }

    /// Per-feature baseline statistics in natural units.
    pub fn baselines(&self) -> &[FeatureBaseline] {
        &self.data.features
    }

    /// The baseline of one feature, if the model uses it.
    pub fn baseline(&self, feature: Feature) -> Option<&FeatureBaseline> {
        self.data.features.iter().find(|b| b.feature == feature)
    }

    /// The calibration.
    pub fn calibration(&self) -> &RateCalibration {
        &self.data.calibration
    }

    /// Number of normal modes found.
    pub fn clusters(&self) -> usize {
        self.data.clusters.len()
    }

    /// Learning intervals the model was fitted on.
    pub fn intervals(&self) -> usize {
        self.data.intervals
    }

    /// Mean learning interval length, seconds.
    pub fn interval_secs(&self) -> f64 {
        self.data.interval_secs
    }
}

/// A vector's values for `features`, transformed to model units.
fn model_row(vector: &FeatureVector, features: &[Feature]) -> Vec<f64> {
    features
        .iter()
        .map(|&f| f.transform().apply(vector.get(f)))
        .collect()
}

/// Population mean and variance (0, 0 for no values).
/// Constant values give exactly their value and 0 (not a rounding residue), so identical
/// intervals score exactly 0.
fn mean_var(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let (count, sum, min, max) = values.clone().fold(
        (0usize, 0.0, f64::INFINITY, f64::NEG_INFINITY),
        |(c, s, lo, hi), x| (c + 1, s + x, lo.min(x), hi.max(x)),
    );
    if count == 0 {
        return (0.0, 0.0);
    }
    if min == max {
        return (min, 0.0);
    }
    let mean = sum / count as f64;
    let var = values.map(|x| (x - mean) * (x - mean)).sum::<f64>() / count as f64;
    (mean, var)
}

/// The smallest spread a feature may have, in model units (see [`RateConfig`]): the
/// configured floor, and never less than the counting noise of an interval at the typical
/// rate (`rate` of this feature, `syscalls` per second in all), however regular learning was.
fn spread_floor(
    feature: Feature,
    rate: f64,
    syscalls: f64,
    interval_secs: f64,
    config: &RateConfig,
) -> f64 {
    match feature.transform() {
        Transform::Sqrt => {
            // A share of N syscalls is a multinomial proportion: sd(√p̂) ≈ 1 / (2√N) whatever
            // p is. At 100 syscalls per interval that is 0.05 (a workload this quiet moves its
            // shares by several points from one request more or less); from 625 on the
            // configured floor decides.
            let calls = syscalls.max(0.0) * interval_secs;
            let sampling = if calls >= 1.0 {
                0.5 / calls.sqrt()
            } else {
                0.0
            };
            config.min_share_std.max(sampling)
        }
        Transform::Log1p => {
            let m = rate.max(0.0);
            // ln(1 + m + 1/T) − ln(1 + m): one more event per interval at the typical rate m.
            let one_event = (1.0 / interval_secs / (1.0 + m)).ln_1p();
            // Poisson noise of a count of mT events, seen as ln(1 + count/T): √(m/T) / (1 + m)
            // (10 % at 100 events per interval; a lower bound, real counts come in bundles).
            let counting = (m / interval_secs).sqrt() / (1.0 + m);
            config.min_log_rate_std.max(one_event).max(counting)
        }
    }
}

/// Mean interval length, seconds.
fn mean_interval_secs(intervals: &[FeatureVector]) -> f64 {
    intervals
        .iter()
        .map(FeatureVector::interval_secs)
        .sum::<f64>()
        / intervals.len().max(1) as f64
}

/// Median (0 for no values).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    quantile(&sorted, 0.5)
}

/// Sets transients aside: learning intervals whose held-out statistic is beyond Tukey's far-out
/// fence of the others (on a log scale) and at least [`TRANSIENT_MIN_STATISTIC`], when they are
/// few: at most `min_cluster_size − 1` (fewer than a mode of their own) and one interval in
/// [`TRANSIENT_MAX_SHARE`]. More than that far out is not a transient but a regime the model must see, and
/// nothing is set aside. Returns the rows kept (indices, ascending) and their held-out
/// statistics.
///
/// Why: a container's first intervals (the runtime setting it up, the entrypoint loading)
/// can be a hundred times any later one. Kept, such an interval inflates the spreads of the
/// one mode a short learning phase has, and its held-out statistic (scored by a model fitted
/// on the steady intervals) dominates the exponential tail: thresholds in the thousands, which
/// no burst reaches.
fn set_aside_transients(
    rows: &[Vec<f64>],
    floors: &[f64],
    config: &RateConfig,
) -> (Vec<usize>, Vec<f64>) {
    let n = rows.len();
    let cap = config
        .min_cluster_size
        .saturating_sub(1)
        .min(n / TRANSIENT_MAX_SHARE);
    let mut kept: Vec<usize> = (0..n).collect();
    let mut heldout = cross_validate(rows, floors, config);
    for _ in 0..TRANSIENT_ROUNDS {
        let room = cap.saturating_sub(n - kept.len());
        if room == 0 || heldout.len() != kept.len() {
            break;
        }
        let fence = transient_fence(&heldout);
        let far: Vec<usize> = heldout
            .iter()
            .enumerate()
            .filter(|(_, s)| **s > fence)
            .map(|(i, _)| i)
            .collect();
        if far.is_empty() || far.len() > room {
            break;
        }
        let next: Vec<usize> = kept
            .iter()
            .enumerate()
            .filter(|(i, _)| !far.contains(i))
            .map(|(_, &row)| row)
            .collect();
        let next_rows: Vec<Vec<f64>> = next.iter().filter_map(|&i| rows.get(i).cloned()).collect();
        let next_heldout = cross_validate(&next_rows, floors, config);
        if next_heldout.len() != next.len() {
            break;
        }
        kept = next;
        heldout = next_heldout;
    }
    (kept, heldout)
}

/// The statistic above which a held-out learning interval is a transient.
fn transient_fence(heldout: &[f64]) -> f64 {
    let mut logs: Vec<f64> = heldout.iter().map(|s| s.max(0.0).ln_1p()).collect();
    logs.sort_by(f64::total_cmp);
    let (q1, q3) = (quantile(&logs, 0.25), quantile(&logs, 0.75));
    let far = (q3 + TRANSIENT_IQR_FACTOR * (q3 - q1)).exp_m1();
    if far.is_finite() {
        far.max(TRANSIENT_MIN_STATISTIC)
    } else {
        f64::INFINITY
    }
}

/// Sets each cluster's natural-unit means from the learning intervals nearest to it (as
/// scoring assigns them); a cluster nearest to none gets the overall means.
fn set_natural_means(
    clusters: &mut [Cluster],
    intervals: &[FeatureVector],
    rows: &[Vec<f64>],
    baselines: &[FeatureBaseline],
) {
    let d = baselines.len();
    let mut sums = vec![(0usize, vec![0.0; d]); clusters.len()];
    for (interval, row) in intervals.iter().zip(rows) {
        let nearest = clusters
            .iter()
            .enumerate()
            .map(|(c, cluster)| (c, cluster.distance(row, None, &Headroom::NONE)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(c, _)| c);
        if let Some((count, sum)) = nearest.and_then(|c| sums.get_mut(c)) {
            *count += 1;
            for (total, b) in sum.iter_mut().zip(baselines) {
                *total += interval.get(b.feature);
            }
        }
    }
    for (cluster, (count, sum)) in clusters.iter_mut().zip(sums) {
        cluster.mean = if count == 0 {
            baselines.iter().map(|b| b.mean).collect()
        } else {
            sum.iter().map(|total| total / count as f64).collect()
        };
    }
}

/// Statistic of `row` against the nearest cluster, and that cluster.
fn nearest_cluster<'a>(
    clusters: &'a [Cluster],
    row: &[f64],
    skip: Option<usize>,
    headroom: &Headroom<'_>,
) -> (f64, Option<&'a Cluster>) {
    clusters
        .iter()
        .map(|c| (c.distance(row, skip, headroom), c))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map_or((0.0, None), |(d, c)| (d, Some(c)))
}

/// Held-out statistics, in row order: each contiguous block of intervals scored by a model
/// fitted on the others. Slightly pessimistic (the models are fitted on less data than the
/// final one), which errs towards fewer false alarms.
fn cross_validate(rows: &[Vec<f64>], floors: &[f64], config: &RateConfig) -> Vec<f64> {
    let n = rows.len();
    let folds = config.folds.min(n);
    let mut stats = Vec::with_capacity(n);
    for fold in 0..folds {
        let (lo, hi) = (fold * n / folds, (fold + 1) * n / folds);
        let (Some(before), Some(held), Some(after)) =
            (rows.get(..lo), rows.get(lo..hi), rows.get(hi..))
        else {
            continue;
        };
        let train: Vec<Vec<f64>> = before.iter().chain(after).cloned().collect();
        if train.is_empty() || held.is_empty() {
            continue;
        }
        let clusters = fit_clusters(&train, floors, config);
        stats.extend(
            held.iter()
                .map(|row| nearest_cluster(&clusters, row, None, &Headroom::NONE).0),
        );
    }
    stats
}

/// Fits the normal modes: k-means (linfa) on globally standardised rows for k = 1..=k_max,
/// each clustering turned into diagonal Gaussians, the k with the lowest BIC kept.
fn fit_clusters(rows: &[Vec<f64>], floors: &[f64], config: &RateConfig) -> Vec<Cluster> {
    let n = rows.len();
    let d = floors.len();
    let columns = |j: usize| rows.iter().filter_map(move |r| r.get(j).copied());
    let global: Vec<(f64, f64)> = (0..d).map(|j| mean_var(columns(j))).collect();
    // Standardise for clustering only, so that no feature dominates the k-means distance by
    // its units; the floors keep constant features from dividing by zero.
    let standardised: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .zip(global.iter().zip(floors))
                .map(|(x, ((mean, var), floor))| (x - mean) / var.sqrt().max(*floor))
                .collect()
        })
        .collect();

    let k_max = config
        .max_clusters
        .min(n / config.min_cluster_size)
        .min(distinct_rows(&standardised))
        .max(1);
    let mut best: Option<(f64, Vec<Cluster>)> = None;
    for k in 1..=k_max {
        let assignment = if k == 1 {
            vec![0; n]
        } else {
            match kmeans_assign(&standardised, k, config.seed) {
                Some(assignment) => assignment,
                None => continue,
            }
        };
        let clusters = gaussians(rows, &assignment, k, floors, config.shrinkage);
        let bic = bic(rows, &clusters);
        if bic.is_finite() && best.as_ref().is_none_or(|(b, _)| bic < *b) {
            best = Some((bic, clusters));
        }
    }
    match best {
        Some((_, clusters)) => clusters,
        None => gaussians(rows, &vec![0; n], 1, floors, config.shrinkage),
    }
}

/// Number of distinct rows (k-means cannot place more centres than there are points).
fn distinct_rows(rows: &[Vec<f64>]) -> usize {
    let mut keys: Vec<Vec<u64>> = rows
        .iter()
        .map(|r| r.iter().map(|x| x.to_bits()).collect())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.len()
}

/// k-means with linfa; returns each row's nearest centre, or `None` if linfa fails.
fn kmeans_assign(rows: &[Vec<f64>], k: usize, seed: u64) -> Option<Vec<usize>> {
    let d = rows.first()?.len();
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    let records = Array2::from_shape_vec((rows.len(), d), flat).ok()?;
    let dataset = DatasetBase::from(records);
    let model = KMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(seed))
        .init_method(KMeansInit::KMeansPlusPlus)
        .n_runs(8)
        .max_n_iterations(200)
        .tolerance(1e-9)
        .fit(&dataset)
        .ok()?;
    let centroids = model.centroids();
    if centroids.iter().any(|x| !x.is_finite()) {
        return None;
    }
    Some(
        rows.iter()
            .map(|row| {
                centroids
                    .rows()
                    .into_iter()
                    .enumerate()
                    .map(|(c, centre)| {
                        let dist: f64 =
                            centre.iter().zip(row).map(|(a, b)| (a - b) * (a - b)).sum();
                        (c, dist)
                    })
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map_or(0, |(c, _)| c)
            })
            .collect(),
    )
}

/// Diagonal Gaussians from a clustering: per-cluster means, variances shrunk towards the
/// pooled within-cluster variance by `shrinkage` pseudo-intervals, spreads floored. Empty
/// clusters are dropped.
fn gaussians(
    rows: &[Vec<f64>],
    assignment: &[usize],
    k: usize,
    floors: &[f64],
    shrinkage: f64,
) -> Vec<Cluster> {
    let n = rows.len().max(1) as f64;
    let d = floors.len();
    let members = |c: usize| {
        rows.iter()
            .zip(assignment)
            .filter(move |(_, a)| **a == c)
            .map(|(r, _)| r)
    };
    let stats: Vec<(usize, Vec<(f64, f64)>)> = (0..k)
        .map(|c| {
            let size = members(c).count();
            let per_feature = (0..d)
                .map(|j| mean_var(members(c).filter_map(move |r| r.get(j).copied())))
                .collect();
            (size, per_feature)
        })
        .filter(|(size, _)| *size > 0)
        .collect();
    let pooled: Vec<f64> = (0..d)
        .map(|j| {
            stats
                .iter()
                .filter_map(|(size, per)| per.get(j).map(|(_, var)| *size as f64 * var))
                .sum::<f64>()
                / n
        })
        .collect();
    stats
        .into_iter()
        .map(|(size, per)| {
            let m = size as f64;
            Cluster {
                weight: m / n,
                size,
                center: per.iter().map(|(mean, _)| *mean).collect(),
                mean: Vec::new(),
                scale: per
                    .iter()
                    .zip(pooled.iter().zip(floors))
                    .map(|((_, var), (pool, floor))| {
                        ((m * var + shrinkage * pool) / (m + shrinkage))
                            .sqrt()
                            .max(*floor)
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Bayesian information criterion of the mixture of diagonal Gaussians on `rows`.
fn bic(rows: &[Vec<f64>], clusters: &[Cluster]) -> f64 {
    const HALF_LN_TAU: f64 = 0.918_938_533_204_672_8; // ln(2π)/2
    let log_likelihood: f64 = rows
        .iter()
        .map(|row| {
            let terms: Vec<f64> = clusters
                .iter()
                .map(|c| {
                    let log_norm: f64 = c.scale.iter().map(|s| s.ln() + HALF_LN_TAU).sum();
                    c.weight.max(f64::MIN_POSITIVE).ln()
                        - log_norm
                        - 0.5 * c.distance(row, None, &Headroom::NONE)
                })
                .collect();
            log_sum_exp(&terms)
        })
        .sum();
    let d = clusters.first().map_or(0, |c| c.center.len());
    let k = clusters.len();
    let parameters = (k * 2 * d + k.saturating_sub(1)) as f64;
    -2.0 * log_likelihood + parameters * (rows.len().max(1) as f64).ln()
}

fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

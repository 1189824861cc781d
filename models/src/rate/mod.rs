//! The per-workload rate model: catches a workload that does what it always does, but at a
//! new rate or in a new mix (a scan multiplies connects, a miner burns syscalls, a dropper
//! starts exec-ing), which set membership (novelty) cannot see.
//!
//! # Features
//!
//! Per workload and interval (e.g. 10 s) the daemon fills an [`IntervalFeatures`] from the
//! in-kernel syscall counters and the events that crossed the ring buffer, and gets a
//! [`FeatureVector`] of [`FEATURE_COUNT`] named features ([`feature_names`]):
//!
//! * `share.<group>`: the interval's syscall histogram over 16 [`SyscallGroup`]s, normalised
//!   to sum to 1 (0 everywhere for an interval without syscalls);
//! * `rate.exec`, `rate.open`, `rate.connect`, `rate.accept`: events per second;
//!   `rate.destinations`, `rate.files`: distinct destinations and files per second (bounded
//!   sets of keyed hashes); `rate.syscalls`: all syscalls per second; `rate.bytes`: bytes per
//!   second, optional (used only if every learning interval had it).
//!
//! # Model
//!
//! Rates are seen as `ln(1 + rate)` (their changes are ratios), shares as `√share` (the
//! variance-stabilising transform of a proportion). Each feature's spread has a floor (0.02 in
//! √share; 5 % relative, or one event per interval at low rates, for rates), which is what
//! makes identical learning intervals and constant features give a usable model rather than
//! a division by zero. The floor is also never below the counting noise of one interval at
//! the workload's median rates: Poisson for a rate (`√(m/T) / (1 + m)`, 10 % at 100 events per
//! interval) and multinomial for a share (`1 / (2√N)` for `N` syscalls per interval), so that
//! a quiet workload seen over short intervals, however regular while learning, does not alarm
//! on one request more or less.
//!
//! With 30–500 learning intervals and 23–24 features, a full-covariance Gaussian mixture
//! (linfa's GMM) would estimate ~300 covariance terms per component from a few dozen points
//! and is singular for constant features. So: **k-means (linfa-clustering) on standardised
//! features finds the workload's normal modes** (busy/idle, batch/serve), k from 1 to 4 by
//! BIC with at least 10 intervals per cluster; each mode becomes a *diagonal* Gaussian with
//! per-feature spreads shrunk towards the pooled within-mode spread (small modes are not
//! overconfident) and floored. The fitted centres and spreads are copied into plain structs:
//! scoring and serialisation need no linfa.
//!
//! The **statistic** of an interval is its squared standardised distance to the nearest
//! mode, `Σ_j ((x_j − μ_cj) / σ_cj)²`; the features with the largest `|z|` explain it, quoted
//! in natural units against the learning mean of that mode ("connect rate 40× baseline
//! (0.5/s → 20/s)"). One exception to the order: an event rate (exec, open, connect, accept,
//! distinct destinations or files) that the mode had less than once per interval and now has
//! at least 3 spreads above comes first ("exec rate 300/s, never above 0 in baseline"). Its
//! `|z|` is held down by the one-event floor (300 execs in a 1-s interval from none are 8
//! spreads) while the aggregates that move with it (all syscalls, shares, the accepts that the
//! connects cause) reach 20–80; it is the specific item to act on.
//!
//! **Load headroom.** The rates that follow the number of clients (all syscalls, bytes, accepts,
//! opens, connects) may rise up to [`RateConfig::load_headroom`] (4) times their mode's level
//! without counting; above it only the excess counts, and a rate the mode never had has no
//! headroom. A server learned at one load meets three times the clients at its peak (a real
//! redis then made 2.4 times its syscalls); the rates that do not follow load (execs, distinct
//! destinations and files) and the syscall mix are scored as before.
//!
//! **Shares that fall.** A share below its mode does not count. Shares sum to 1: what a change
//! adds shows as a share that rises, which counts; a share that falls is the other side of it,
//! or activity that did not happen this interval (in the application evaluation, redis's
//! health-check helper not running in an interval of three times the clients: "share of memory
//! syscalls fell to 0 %", a benign alert). Scoring applies this and the headroom, the
//! calibration does not, so both can only lower the false-alarm rate.
//!
//! # Calibration
//!
//! The learning intervals are cut into 5 contiguous blocks; each block is scored by a model
//! fitted on the others. **Transients** are set aside first: intervals whose held-out
//! statistic is beyond Tukey's far-out fence of the others (upper quartile + 3 interquartile
//! ranges of `ln(1 + statistic)`) and at least 100, when there are at most
//! `min_cluster_size − 1` of them and one interval in ten (more is a regime, which the
//! model must see, and none is set aside); the rest is cross-validated again, up to 3 rounds.
//! A container's start-up interval can be a hundred times any later one: kept, it inflated
//! the spreads of the one mode a short learning has and, scored by models fitted on the
//! steady intervals, made the exponential tail (scale = mean excess) extrapolate thresholds in
//! the thousands that no burst reached. Transients are counted in the calibration
//! ([`RateCalibration::transients`]) and kept with the model: in detection an interval beyond
//! the threshold that lies within it of the segment from a mode to a transient (the transient
//! recurring, whole or split across two intervals: a periodic job, a maintenance round) is
//! explained, not anomalous; what learning never showed is as far as before. Above the 80th
//! percentile of these held-out statistics the tail is modelled as exponential (scale = mean excess, at least 2, the chi-square tail), which
//! extrapolates a `1 − rate` quantile that 30 intervals cannot show directly. The threshold
//! is that quantile for the configured false-alarm rate (per interval, default 0.1 %), and never
//! below `min_threshold` (25: one feature 5 spreads off). [`RateScore::score`] is `1 − p` with
//! `p` the estimated exceedance probability, like the other dimensions' scores
//! ([`crate::calibrate`]).
//!
//! # Measured (synthetic web service with busy and idle modes, `tests.rs`)
//!
//! * Calibration alone (floor off), mean observed false-alarm rate over 10 seeds, 2000 fresh
//!   normal intervals each: learning 300 intervals → 1.09 % at a 1 % target, 4.9 % at 5 %;
//!   60 → 1.00 % / 3.6 %; 30 → 0.40 % / 2.2 % (held-out models see less data, which errs
//!   towards fewer alarms). With the default floor, the 0.1 % target gives 0.18 % / 0.24 % /
//!   0.13 % (the exponential tail extrapolates beyond what the held-out intervals show; before
//!   the counting-noise floor: 0.15 % / 0.16 % / 0.09 %, and 1.01 % / 0.76 % / 0.30 % at 1 %).
//!   None of these learning sets has a transient set aside.
//! * A quiet service over 1-s intervals (about 115 syscalls and 5 requests per interval) with
//!   its start-up as first learning interval: the start-up is set aside and the threshold is
//!   34 (with it, thresholds of 4 000–11 000 were measured on the real container); 300 execs
//!   and connects in one second are anomalous and named "exec rate 300/s, never above 0 in
//!   baseline".
//! * A 40× connect rate or a 20× exec rate is anomalous in every trial and named first,
//!   with `|z|` ≈ 13–18 against ≈ 1–5 for the syscall share that moves with it.
//! * Cost (release build, this 2-core VM): fitting 30 / 100 / 500 intervals takes 9 / 38 /
//!   85 ms including the 5-fold calibration (setting transients aside repeats it once per
//!   round, only when there are any); scoring an interval about 2 µs; the serialised model is
//!   5–14 KB of JSON.
//!
//! # Direction
//!
//! An anomalous interval is a **rise** (some rate well above its mode), a **drop** (the
//! syscall rate fell and nothing rose enough to be anomalous alone: the load stopped), or a
//! change of **mix** ([`RateDirection`]). A drop is not an intrusion; the daemon reports it
//! at most as informational, and by default not at all.
//!
//! Limits: a change of one or two events per interval in a rarely-seen event (one exec a
//! minute) is below what a per-interval rate can tell from noise; novelty and rules see those.
//! Fitting runs k-means several times (linfa uses rayon inside): call it from a blocking task.

mod explain;
mod features;
mod groups;
mod model;
#[cfg(test)]
mod tests;

pub use explain::{FeatureDeviation, RateDirection, RateScore};
pub use features::{
    DEFAULT_DISTINCT_LIMIT, EventKind, FEATURE_COUNT, Feature, FeatureVector, IntervalFeatures,
    RateKind, Transform, Unit, feature_names,
};
pub use groups::SyscallGroup;
pub use model::{FORMAT, FeatureBaseline, METHOD, RateCalibration, RateConfig, RateModel};

/// Why a rate model could not be fitted, built or loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RateError {
    /// Learning produced fewer intervals than the model needs.
    #[error("rate model needs at least {need} learning intervals, got {got}")]
    TooFewIntervals {
        /// Intervals given.
        got: usize,
        /// Intervals needed.
        need: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid rate-model configuration: {0}")]
    InvalidConfig(String),
    /// A feature vector holds a value that is not a finite non-negative number.
    #[error("invalid rate feature vector: {0}")]
    InvalidFeatures(String),
    /// A model (fitted or loaded) failed validation.
    #[error("invalid rate model: {0}")]
    InvalidModel(String),
}

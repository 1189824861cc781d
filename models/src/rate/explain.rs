//! The result of scoring one interval, and its words.

use serde::{Deserialize, Serialize};

use super::features::Unit;

/// Which way an interval deviates: what a rate anomaly means, and so its priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateDirection {
    /// Some rate rose (more execs, connects, files, syscalls, bytes than the mode had): what
    /// a scan, a dropper, a miner or an exfiltration looks like.
    #[default]
    Rise,
    /// Activity fell: the syscall rate is below its mode and the rates that rose (if any) are
    /// not anomalous on their own. Less activity is not an intrusion (the load stopped, the
    /// clients went away); at most informational.
    Drop,
    /// The rates are where they were, the mix of syscalls is not.
    Mix,
}

impl RateDirection {
    /// The lowercase name (as in JSON).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Rise => "rise",
            Self::Drop => "drop",
            Self::Mix => "mix",
        }
    }
}

/// The rate model's verdict on one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateScore {
    /// `1 − p`, where `p` is the estimated probability that a normal interval deviates at
    /// least this much (from the held-out learning intervals, with an exponential tail beyond
    /// them). In `0..=1`, comparable with the other dimensions' scores
    /// (`crate::calibrate`): alerting on `score ≥ 1 − rate` has about `rate` false alarms
    /// per interval.
    pub score: f64,
    /// Whether [`statistic`](Self::statistic) exceeds the calibrated
    /// [`threshold`](Self::threshold).
    pub anomalous: bool,
    /// Sum of squared standardised deviations from the nearest normal mode (cluster).
    pub statistic: f64,
    /// The calibrated threshold on the statistic.
    pub threshold: f64,
    /// Which way the interval deviates (see [`RateDirection`]).
    #[serde(default)]
    pub direction: RateDirection,
    /// The features that deviate most (at most the model's `top_features`): an event rate
    /// that the nearest mode had less than once per interval and now has several times comes
    /// first, then the others by `|z|`, largest first.
    pub top: Vec<FeatureDeviation>,
}

/// How far one feature is from its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDeviation {
    /// Feature name, e.g. `rate.connect` (see `feature_names`).
    pub name: String,
    /// Words for an alert, e.g. "connect rate".
    pub label: String,
    /// Unit of the values below.
    pub unit: Unit,
    /// Learning mean, in the feature's unit, of the normal mode this interval is nearest to
    /// (a workload with busy and idle modes is compared with the mode it is in; with one
    /// mode, the mean over all learning intervals).
    pub baseline_mean: f64,
    /// Standard deviation over all learning intervals.
    pub baseline_std: f64,
    /// Largest value over all learning intervals.
    pub baseline_max: f64,
    /// This interval's value.
    pub observed: f64,
    /// `observed / baseline_mean`; `None` when the baseline mean is 0 (the feature was never
    /// seen during learning, and any ratio would be infinite).
    pub ratio: Option<f64>,
    /// Signed deviation from the nearest normal mode in units of that mode's spread (after the
    /// model's transform: log for rates), which is what ranks the features.
    pub z: f64,
}

/// Deviations below this many spreads are not worth naming in an explanation (unless nothing
/// else is).
const EXPLAIN_MIN_Z: f64 = 2.0;

impl RateScore {
    /// A one-line explanation for an alert, e.g.
    /// `rate anomaly (score 0.9999): connect rate 40× baseline (0.5/s → 20/s)`.
    pub fn explain(&self) -> String {
        let mut named: Vec<String> = self
            .top
            .iter()
            .filter(|d| d.z.abs() >= EXPLAIN_MIN_Z)
            .map(FeatureDeviation::explain)
            .collect();
        if named.is_empty()
            && let Some(first) = self.top.first()
        {
            named.push(first.explain());
        }
        let head = if self.anomalous {
            format!("rate anomaly (score {:.4})", self.score)
        } else {
            format!("rates within baseline (score {:.4})", self.score)
        };
        if named.is_empty() {
            head
        } else {
            format!("{head}: {}", named.join("; "))
        }
    }
}

impl FeatureDeviation {
    /// E.g. `connect rate 40× baseline (0.5/s → 20/s)`.
    pub fn explain(&self) -> String {
        let mean = format_value(self.baseline_mean, self.unit);
        let observed = format_value(self.observed, self.unit);
        let label = &self.label;
        match self.ratio {
            None => format!("{label} {observed}, never above 0 in baseline"),
            Some(r) if r >= 1.0 => {
                format!(
                    "{label} {}× baseline ({mean} → {observed})",
                    format_ratio(r)
                )
            }
            Some(r) if r > 0.0 => format!(
                "{label} {}× below baseline ({mean} → {observed})",
                format_ratio(1.0 / r)
            ),
            Some(_) => format!("{label} fell to {observed} (baseline {mean})"),
        }
    }
}

fn format_ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}")
    } else if r >= 2.0 {
        trim(format!("{r:.1}"))
    } else {
        trim(format!("{r:.2}"))
    }
}

/// A value with its unit and about three significant digits.
pub(crate) fn format_value(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Share => format!("{}%", format_number(value * 100.0)),
        Unit::PerSecond => format!("{}/s", format_number(value)),
        Unit::BytesPerSecond => format!("{} B/s", format_number(value)),
    }
}

fn format_number(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return "0".to_owned();
    }
    let a = x.abs();
    let decimals = if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        // Two significant digits below 1.
        ((1.0 - a.log10().floor()) as usize).min(9)
    };
    trim(format!("{x:.decimals$}"))
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deviation(mean: f64, observed: f64, unit: Unit) -> FeatureDeviation {
        FeatureDeviation {
            name: "rate.connect".into(),
            label: "connect rate".into(),
            unit,
            baseline_mean: mean,
            baseline_std: 0.1,
            baseline_max: 1.0,
            observed,
            ratio: (mean > 0.0).then(|| observed / mean),
            z: 30.0,
        }
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(format_number(0.5), "0.5");
        assert_eq!(format_number(20.0), "20");
        assert_eq!(format_number(0.0123), "0.012");
        assert_eq!(format_number(2.345), "2.35");
        assert_eq!(format_number(13456.7), "13457");
        assert_eq!(format_number(f64::NAN), "0");
        assert_eq!(format_value(0.085, Unit::Share), "8.5%");
        assert_eq!(format_value(1500.0, Unit::BytesPerSecond), "1500 B/s");
    }

    #[test]
    fn deviations_explain_direction() {
        assert_eq!(
            deviation(0.5, 20.0, Unit::PerSecond).explain(),
            "connect rate 40× baseline (0.5/s → 20/s)"
        );
        assert_eq!(
            deviation(10.0, 0.5, Unit::PerSecond).explain(),
            "connect rate 20× below baseline (10/s → 0.5/s)"
        );
        assert_eq!(
            deviation(0.0, 3.0, Unit::PerSecond).explain(),
            "connect rate 3/s, never above 0 in baseline"
        );
        assert_eq!(
            deviation(2.0, 0.0, Unit::PerSecond).explain(),
            "connect rate fell to 0/s (baseline 2/s)"
        );
    }

    #[test]
    fn score_explains_large_deviations_only() {
        let mut small = deviation(1.0, 1.1, Unit::PerSecond);
        small.z = 0.5;
        let score = RateScore {
            score: 0.99999,
            anomalous: true,
            statistic: 900.0,
            threshold: 40.0,
            direction: RateDirection::Rise,
            top: vec![deviation(0.5, 20.0, Unit::PerSecond), small.clone()],
        };
        assert_eq!(
            score.explain(),
            "rate anomaly (score 1.0000): connect rate 40× baseline (0.5/s → 20/s)"
        );
        let quiet = RateScore {
            score: 0.3,
            anomalous: false,
            statistic: 20.0,
            threshold: 40.0,
            direction: RateDirection::Rise,
            top: vec![small],
        };
        assert_eq!(
            quiet.explain(),
            "rates within baseline (score 0.3000): connect rate 1.1× baseline (1/s → 1.1/s)"
        );
    }
}

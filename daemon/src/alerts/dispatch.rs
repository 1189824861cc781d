//! Alerts out: counts them, aggregates identical repeats, and hands them to the sinks (which
//! never block detection). The aggregator's bound reached (an open window ended early) is
//! `habitd_limit_reached_total{limit="alert_aggregator"}` and a warning.

use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::aggregate::Aggregator;
use super::alert::Alert;
use super::sinks::{AlertSinks, SinkSpec};
use crate::config::Config;
use crate::metrics::{Limit, LimitReached, Metrics};

/// How long identical repeats are folded into one summary.
const REPEAT_WINDOW: Duration = Duration::from_secs(60);
/// Most distinct anomalies tracked for aggregation.
const MAX_TRACKED: usize = 10_000;

pub struct Alerting {
    aggregator: Aggregator,
    sinks: AlertSinks,
    metrics: prometheus::IntCounterVec,
    /// The aggregator's evictions, as a reached limit.
    full: LimitReached,
    /// The aggregator's evictions already reported to `full`.
    evicted: u64,
    out: Vec<Alert>,
}

impl Alerting {
    /// Parses the configured sinks (failing on a bad one) and starts them.
    pub fn start(config: &Config, metrics: &Metrics) -> Result<Alerting> {
        let specs = config
            .alerts
            .iter()
            .map(|s| SinkSpec::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let sinks = AlertSinks::start(specs, metrics.registry())?;
        Ok(Alerting::new(
            Aggregator::new(REPEAT_WINDOW, MAX_TRACKED),
            MAX_TRACKED,
            sinks,
            metrics,
        ))
    }

    fn new(aggregator: Aggregator, bound: usize, sinks: AlertSinks, metrics: &Metrics) -> Self {
        Alerting {
            aggregator,
            sinks,
            metrics: metrics.alerts.clone(),
            full: LimitReached::new(Limit::AlertAggregator, bound, metrics),
            evicted: 0,
            out: Vec::new(),
        }
    }

    /// Counts alerts and sends them: the first of a kind at once, repeats aggregated.
    pub fn raise(&mut self, alerts: &mut Vec<Alert>) {
        for alert in alerts.drain(..) {
            let dimension = alert
                .habitd
                .novel
                .first()
                .map_or("rule", |n| n.dimension.as_str());
            self.metrics
                .with_label_values(&[dimension, alert.priority.falco_name()])
                .inc();
            self.aggregator.observe(alert, &mut self.out);
        }
        let evicted = self.aggregator.evicted();
        self.full.reached(evicted.saturating_sub(self.evicted));
        self.evicted = evicted;
        self.send_out();
    }

    /// Emits the summaries of repeats whose window ended.
    pub fn tick(&mut self, now: SystemTime) {
        let due = self.aggregator.flush_due(now);
        self.out.extend(due);
        self.send_out();
    }

    fn send_out(&mut self) {
        for alert in self.out.drain(..) {
            self.sinks.send(&alert);
        }
    }

    /// Sends pending summaries and drains the sinks.
    pub async fn shutdown(mut self) {
        let rest = self.aggregator.flush_all();
        self.out.extend(rest);
        self.send_out();
        self.sinks.shutdown().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use habit_models::priority::Priority;

    use super::*;

    fn alert(secs: u64, item: &str) -> Alert {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800 + secs);
        Alert::new(time, "r", Priority::Notice, "o", "host", "stable", "h").with_novel("exec", item)
    }

    #[tokio::test]
    async fn evictions_of_a_full_aggregator_are_a_metric_and_one_warning() {
        let metrics = Metrics::new().unwrap();
        let sinks = AlertSinks::start(Vec::new(), metrics.registry()).unwrap();
        let aggregator = Aggregator::new(REPEAT_WINDOW, 2);
        let mut alerting = Alerting::new(aggregator, 2, sinks, &metrics);
        let mut alerts = vec![alert(0, "/a"), alert(1, "/b"), alert(2, "/a")];
        alerting.raise(&mut alerts);
        assert_eq!(alerting.full.count(), 0);
        for (i, item) in ["/c", "/d", "/e"].into_iter().enumerate() {
            alerting.raise(&mut vec![alert(3 + i as u64, item)]);
        }
        assert_eq!(alerting.aggregator.evicted(), 3);
        assert_eq!(alerting.full.count(), 3);
        assert_eq!(alerting.full.lines(), 1, "one warning per period");
        assert!(
            metrics
                .render()
                .contains("habitd_limit_reached_total{limit=\"alert_aggregator\"} 3")
        );
        alerting.shutdown().await;
    }
}

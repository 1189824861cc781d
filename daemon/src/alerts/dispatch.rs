//! Alerts out: counts them, aggregates identical repeats, and hands them to the sinks (which
//! never block detection).

use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::aggregate::Aggregator;
use super::alert::Alert;
use super::sinks::{AlertSinks, SinkSpec};
use crate::config::Config;
use crate::metrics::Metrics;

/// How long identical repeats are folded into one summary.
const REPEAT_WINDOW: Duration = Duration::from_secs(60);
/// Most distinct anomalies tracked for aggregation.
const MAX_TRACKED: usize = 10_000;

pub struct Alerting {
    aggregator: Aggregator,
    sinks: AlertSinks,
    metrics: prometheus::IntCounterVec,
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
        Ok(Alerting {
            aggregator: Aggregator::new(REPEAT_WINDOW, MAX_TRACKED),
            sinks,
            metrics: metrics.alerts.clone(),
            out: Vec::new(),
        })
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

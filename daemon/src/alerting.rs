//! From findings to alerts: builds the alert of each anomaly, aggregates identical repeats,
//! counts, and hands alerts to the sinks (which never block detection).

use std::time::{Duration, SystemTime};

use anyhow::Result;

use crate::alerts::aggregate::Aggregator;
use crate::alerts::alert::Alert;
use crate::alerts::sinks::{AlertSinks, SinkSpec};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::Anomaly;

/// How long identical repeats are folded into one summary.
const REPEAT_WINDOW: Duration = Duration::from_secs(60);
/// Most distinct anomalies tracked for aggregation.
const MAX_TRACKED: usize = 10_000;

pub struct Alerting {
    aggregator: Aggregator,
    sinks: AlertSinks,
    metrics: prometheus::IntCounterVec,
    hostname: String,
    out: Vec<Alert>,
}

impl Alerting {
    /// Parses the configured sinks (failing on a bad one) and starts them.
    pub fn start(config: &Config, metrics: &Metrics, hostname: String) -> Result<Alerting> {
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
            hostname,
            out: Vec::new(),
        })
    }

    /// Turns anomalies into alerts: the first of a kind goes out at once, repeats are counted.
    pub fn raise(&mut self, anomalies: &mut Vec<Anomaly>) {
        for a in anomalies.drain(..) {
            let f = &a.finding;
            let dimension = f.dimension.alert_dimension().to_string();
            let alert = Alert::novelty(
                a.time,
                f.workload.as_str(),
                f.baseline_state.name(),
                &dimension,
                &f.item,
                f.score,
                f.priority,
                a.fields,
                &self.hostname,
            );
            self.metrics
                .with_label_values(&[dimension.as_str(), f.priority.falco_name()])
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

//! Prometheus metrics: handles registered once at start-up, updated per batch or per tick.
//!
//! Names follow Prometheus conventions: `habitd_` prefix, `_total` for counters, base units.
//! Labels stay low-cardinality (event type, drop reason, CPU), never a path or a pid.

use habit_profiles::observation::AlertDimension;
use habit_profiles::store::WorkloadState;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The `dimension` label values of `habitd_alerts_total`: the alert format's dimensions, and
/// `rule` for rule hits without novelty.
pub const ALERT_DIMENSIONS: [&str; 7] = [
    AlertDimension::Exec.name(),
    AlertDimension::File.name(),
    AlertDimension::Network.name(),
    AlertDimension::Syscall.name(),
    AlertDimension::Sequence.name(),
    AlertDimension::Rate.name(),
    "rule",
];

/// The `state` label values of `habitd_workloads`.
const WORKLOAD_STATES: [WorkloadState; 3] = [
    WorkloadState::Learning,
    WorkloadState::Stable,
    WorkloadState::Unstable,
];

/// Every metric habitd exports.
pub struct Metrics {
    registry: Registry,
    /// Attributed events by type (`habitd_events_total{kind}`: `exec`, `open`, `connect`, …),
    /// each kind's counter of each kind, resolved once (indexed by `EventBody::kind_index`):
    /// the per-event path increments an atomic, without a labelled lookup.
    events_by_kind: Vec<prometheus::IntCounter>,
    /// Records the kernel side could not deliver, by reason and CPU (cumulative, read from BPF).
    pub kernel_drops: IntCounterVec,
    /// Ring-buffer records rejected by the decoder, by reason.
    pub decode_errors: IntCounterVec,
    /// Syscalls counted in the kernel, by workload key.
    pub syscalls: IntCounterVec,
    /// 1 once every probe is attached.
    pub probes_attached: IntGauge,
    /// Workloads currently known to the resolver cache.
    pub workloads_cached: IntGauge,
    /// Workloads by learning state.
    pub workloads_by_state: IntGaugeVec,
    /// Learning progress (0..1, 1 = stable) by workload.
    pub learning_progress: GaugeVec,
    /// Items in each workload's profile or baseline.
    pub profile_items: IntGaugeVec,
    /// Seconds since each learning workload last learned something new.
    pub seconds_since_new_item: GaugeVec,
    /// Calibrated scores of observations of workloads in detection.
    pub anomaly_score: Histogram,
    /// Scoring time per observation.
    pub scorer_seconds: Histogram,
    /// Alerts raised, by dimension and priority.
    pub alerts: IntCounterVec,
    /// Static rule hits, by rule.
    pub rule_hits: IntCounterVec,
    /// Rule hits the baseline explained, by rule.
    pub alerts_suppressed: IntCounterVec,
    /// Statistics of scored threads (mean surprise per syscall, nats) as they are reported.
    pub sequence_statistic: Histogram,
    /// 6-grams whose value a workload in detection has in the kernel map, by workload.
    pub sequence_kernel_grams: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let events = IntCounterVec::new(
            Opts::new("habitd_events_total", "Attributed events by type"),
            &["type"],
        )?;
        let kernel_drops = IntCounterVec::new(
            Opts::new(
                "habitd_events_dropped_total",
                "Events lost in the kernel (ring buffer full, map full), by reason and CPU",
            ),
            &["reason", "cpu"],
        )?;
        let decode_errors = IntCounterVec::new(
            Opts::new(
                "habitd_decode_errors_total",
                "Ring-buffer records rejected by the decoder, by reason",
            ),
            &["reason"],
        )?;
        let syscalls = IntCounterVec::new(
            Opts::new(
                "habitd_syscalls_total",
                "Syscalls counted in the kernel, by workload",
            ),
            &["workload"],
        )?;
        let probes_attached = IntGauge::new(
            "habitd_probes_attached",
            "1 when every eBPF program is attached",
        )?;
        let workloads_cached = IntGauge::new(
            "habitd_workloads_cached",
            "cgroups currently attributed to a workload in the resolver cache",
        )?;
        let workloads_by_state = IntGaugeVec::new(
            Opts::new("habitd_workloads", "Workloads by learning state"),
            &["state"],
        )?;
        let learning_progress = GaugeVec::new(
            Opts::new(
                "habitd_learning_progress_ratio",
                "Learning progress towards stability (1 = stable), by workload",
            ),
            &["workload"],
        )?;
        let profile_items = IntGaugeVec::new(
            Opts::new(
                "habitd_profile_items",
                "Items in a workload's profile or baseline",
            ),
            &["workload"],
        )?;
        let seconds_since_new_item = GaugeVec::new(
            Opts::new(
                "habitd_learning_seconds_since_new_item",
                "Seconds since a workload last learned a new item",
            ),
            &["workload"],
        )?;
        let anomaly_score = Histogram::with_opts(
            HistogramOpts::new(
                "habitd_anomaly_score",
                "Calibrated scores of observations in detection (1 - score = false-alarm rate)",
            )
            .buckets(vec![0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]),
        )?;
        let scorer_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "habitd_scorer_duration_seconds",
                "Time to score one observation",
            )
            .buckets(vec![1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 1e-5, 1e-4, 1e-3]),
        )?;
        let alerts = IntCounterVec::new(
            Opts::new(
                "habitd_alerts_total",
                "Alerts raised, by dimension and priority",
            ),
            &["dimension", "priority"],
        )?;
        let rule_hits = IntCounterVec::new(
            Opts::new("habitd_rule_hits_total", "Static rule hits, by rule"),
            &["rule"],
        )?;
        let alerts_suppressed = IntCounterVec::new(
            Opts::new(
                "habitd_alerts_suppressed_total",
                "Rule hits explained by the workload's baseline and not alerted, by rule",
            ),
            &["rule"],
        )?;
        let sequence_statistic = Histogram::with_opts(
            HistogramOpts::new(
                "habitd_sequence_thread_statistic",
                "Scored threads' mean syscall surprise over their recent syscalls (nats)",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0]),
        )?;
        let sequence_kernel_grams = IntGaugeVec::new(
            Opts::new(
                "habitd_sequence_kernel_grams",
                "Syscall 6-grams valued in the kernel map for a workload in detection",
            ),
            &["workload"],
        )?;
        registry.register(Box::new(sequence_statistic.clone()))?;
        registry.register(Box::new(sequence_kernel_grams.clone()))?;
        registry.register(Box::new(rule_hits.clone()))?;
        registry.register(Box::new(alerts_suppressed.clone()))?;
        registry.register(Box::new(workloads_by_state.clone()))?;
        registry.register(Box::new(learning_progress.clone()))?;
        registry.register(Box::new(profile_items.clone()))?;
        registry.register(Box::new(seconds_since_new_item.clone()))?;
        registry.register(Box::new(anomaly_score.clone()))?;
        registry.register(Box::new(scorer_seconds.clone()))?;
        registry.register(Box::new(alerts.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(kernel_drops.clone()))?;
        registry.register(Box::new(decode_errors.clone()))?;
        registry.register(Box::new(syscalls.clone()))?;
        registry.register(Box::new(probes_attached.clone()))?;
        registry.register(Box::new(workloads_cached.clone()))?;
        // Counters whose label values are known up front exist at zero from start-up, so that
        // dashboards and `absent()` alerts work before the first alert.
        for dimension in ALERT_DIMENSIONS {
            for priority in habit_models::priority::Priority::ALL {
                alerts.with_label_values(&[dimension, priority.falco_name()]);
            }
        }
        let events_by_kind = habit_probes::EventBody::KIND_LABELS
            .iter()
            .map(|kind| events.with_label_values(&[*kind]))
            .collect();
        Ok(Self {
            registry,
            events_by_kind,
            kernel_drops,
            decode_errors,
            syscalls,
            probes_attached,
            workloads_cached,
            workloads_by_state,
            learning_progress,
            profile_items,
            seconds_since_new_item,
            anomaly_score,
            scorer_seconds,
            alerts,
            rule_hits,
            alerts_suppressed,
            sequence_statistic,
            sequence_kernel_grams,
        })
    }

    /// Creates the per-rule counters (hits, suppressions) of every loaded rule at zero.
    pub fn init_rules<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            self.rule_hits.with_label_values(&[name]);
            self.alerts_suppressed.with_label_values(&[name]);
        }
    }

    /// Clears the per-state workload counts, leaving every state at zero (not absent).
    pub fn reset_workload_states(&self) {
        self.workloads_by_state.reset();
        for state in WORKLOAD_STATES {
            self.workloads_by_state.with_label_values(&[state.name()]);
        }
    }

    /// Counts one attributed event.
    pub fn count_event(&self, body: &habit_probes::EventBody) {
        if let Some(counter) = self.events_by_kind.get(body.kind_index()) {
            counter.inc();
        }
    }

    /// Raises a counter that mirrors a cumulative count kept elsewhere (the kernel) to `total`.
    pub fn mirror(counter: &prometheus::IntCounter, total: u64) {
        let current = counter.get();
        if total > current {
            counter.inc_by(total - current);
        }
    }

    /// The registry, for components that register their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(message = "Failed to encode metrics.", %e);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counters_with_known_labels_exist_at_zero_from_start_up() {
        let m = Metrics::new().unwrap();
        m.reset_workload_states();
        m.init_rules(["Terminal shell in container"]);
        let text = m.render();
        for line in [
            "habitd_alerts_total{dimension=\"exec\",priority=\"Warning\"} 0",
            "habitd_alerts_total{dimension=\"rule\",priority=\"Critical\"} 0",
            "habitd_alerts_total{dimension=\"sequence\",priority=\"Emergency\"} 0",
            "habitd_workloads{state=\"learning\"} 0",
            "habitd_workloads{state=\"stable\"} 0",
            "habitd_workloads{state=\"unstable\"} 0",
            "habitd_rule_hits_total{rule=\"Terminal shell in container\"} 0",
            "habitd_alerts_suppressed_total{rule=\"Terminal shell in container\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        let alerts = text
            .lines()
            .filter(|l| l.starts_with("habitd_alerts_total{"))
            .count();
        assert_eq!(alerts, ALERT_DIMENSIONS.len() * 8);
    }

    #[test]
    fn a_reset_keeps_every_workload_state() {
        let m = Metrics::new().unwrap();
        m.workloads_by_state.with_label_values(&["stable"]).set(3);
        m.reset_workload_states();
        assert_eq!(m.workloads_by_state.with_label_values(&["stable"]).get(), 0);
        assert!(
            m.render()
                .contains("habitd_workloads{state=\"unstable\"} 0")
        );
    }
}

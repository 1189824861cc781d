//! Prometheus metrics: handles registered once at start-up, updated per batch or per tick.
//!
//! Names follow Prometheus conventions: `habitd_` prefix, `_total` for counters, base units.
//! Labels stay low-cardinality (event type, drop reason, CPU), never a path or a pid.
//!
//! A bounded structure that reaches its limit says so through [`LimitReached`]: the counter
//! `habitd_limit_reached_total{limit}` rises and a warning is logged, at most once a minute
//! ([`RateLimitedLog`]) with the count since the last one (principle 4: never silent loss).

use std::time::{Duration, Instant};

use habit_profiles::observation::AlertDimension;
use habit_profiles::store::WorkloadState;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
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
    /// Records lost on a full ring buffer, by workload and event type: the `ringbuf_full` drops
    /// told to the workload that lost them ([`Metrics::UNKNOWN_WORKLOAD`] when the kernel could
    /// not tell).
    pub workload_drops: IntCounterVec,
    /// Ring-buffer records rejected by the decoder, by reason.
    pub decode_errors: IntCounterVec,
    /// `--print-events` lines lost to failed writes of standard output.
    pub printed_events_dropped: IntCounter,
    /// Syscalls counted in the kernel, by workload key.
    pub syscalls: IntCounterVec,
    /// 1 once every probe is attached.
    pub probes_attached: IntGauge,
    /// When the newest event handled happened (Unix seconds): `time() -` it is how far the
    /// pipeline is behind the kernel (a stalled or overloaded daemon shows here first).
    pub events_handled_until: prometheus::Gauge,
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
    /// Sequence findings not alerted: a container's start-up or its shutdown.
    pub sequence_findings_set_aside: IntCounterVec,
    /// Times a bounded structure was full, by [`Limit`]; every label exists from start-up.
    pub limit_reached: IntCounterVec,
    /// Files of the delivered-baselines directory read, by result (`imported`, `unchanged`,
    /// `refused`; every label exists from start-up, also without a directory).
    pub baseline_files: IntCounterVec,
    /// 1 while the store accepts writes; 0 while learning is paused (a full disk).
    pub store_writable: IntGauge,
    /// Writes to the store that failed (each pauses learning until the store is writable).
    pub store_write_failures: prometheus::IntCounter,
    /// Checkpoints completed (what changed written, the store flushed): what the API showed
    /// before one is durable.
    pub store_checkpoints: prometheus::IntCounter,
    /// Response actions decided, by action (`kill`, `pause`, `stop`) and outcome (`done`,
    /// `failed`, `gone`, `refused`, `dry_run`, `rate_limited`); every label pair exists from
    /// start-up, also with the response off.
    pub response_actions: IntCounterVec,
}

impl Metrics {
    /// The `workload` of `habitd_workload_events_dropped_total` for records the kernel could not
    /// tell to a workload (a cgroup without a counter slot, a connection accepted on a listener
    /// it never saw). Not a workload key: keys are `host`, `host:…` or image references.
    pub const UNKNOWN_WORKLOAD: &'static str = "unknown";

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
        let workload_drops = IntCounterVec::new(
            Opts::new(
                "habitd_workload_events_dropped_total",
                "Events lost on a full ring buffer, by workload and event type (the \
                 habitd_events_dropped_total{reason=\"ringbuf_full\"} drops, told per workload)",
            ),
            &["workload", "type"],
        )?;
        let printed_events_dropped = IntCounter::new(
            "habitd_printed_events_dropped_total",
            "Events --print-events could not write (standard output failing or closed)",
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
        let events_handled_until = prometheus::Gauge::new(
            "habitd_events_handled_until_timestamp_seconds",
            "When the newest event the pipeline handled happened (Unix time): time() minus this \
             is how far habitd is behind the kernel",
        )?;
        let store_writable = IntGauge::new(
            "habitd_store_writable",
            "1 while the store accepts writes; 0 while learning is paused because it cannot be \
             written (a full disk): detection goes on",
        )?;
        store_writable.set(1);
        let store_write_failures = prometheus::IntCounter::new(
            "habitd_store_write_failures_total",
            "Writes to the store that failed or were refused for lack of disk space",
        )?;
        let store_checkpoints = prometheus::IntCounter::new(
            "habitd_store_checkpoints_total",
            "Checkpoints of the learning state completed (what changed written, the store \
             flushed): what the API showed before one is durable",
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
        let sequence_findings_set_aside = IntCounterVec::new(
            Opts::new(
                "habitd_sequence_findings_set_aside_total",
                "Threads whose syscall sequences would have alerted, not alerted because their \
                 container was starting (reason=\"startup\") or stopping (\"stopping\")",
            ),
            &["reason"],
        )?;
        let limit_reached = IntCounterVec::new(
            Opts::new(
                "habitd_limit_reached_total",
                "Times a bounded structure was full and something was refused, forgotten or \
                 ended early, by limit",
            ),
            &["limit"],
        )?;
        for limit in Limit::ALL {
            limit_reached.with_label_values(&[limit.label()]);
        }
        let baseline_files = IntCounterVec::new(
            Opts::new(
                "habitd_baseline_files_total",
                "Files of the baselines directory read, by result (imported, unchanged, refused)",
            ),
            &["result"],
        )?;
        for result in crate::learning::delivered::Outcome::LABELS {
            baseline_files.with_label_values(&[result]);
        }
        let response_actions = IntCounterVec::new(
            Opts::new(
                "habitd_response_actions_total",
                "Response actions decided on alerts, by action and outcome (done, failed, gone, \
                 refused, dry_run, rate_limited)",
            ),
            &["action", "outcome"],
        )?;
        for action in crate::config::ResponseAction::ALL {
            for outcome in crate::response::Outcome::ALL {
                response_actions.with_label_values(&[action.name(), outcome.name()]);
            }
        }
        registry.register(Box::new(response_actions.clone()))?;
        registry.register(Box::new(baseline_files.clone()))?;
        registry.register(Box::new(store_writable.clone()))?;
        registry.register(Box::new(store_write_failures.clone()))?;
        registry.register(Box::new(store_checkpoints.clone()))?;
        registry.register(Box::new(limit_reached.clone()))?;
        registry.register(Box::new(sequence_statistic.clone()))?;
        registry.register(Box::new(sequence_kernel_grams.clone()))?;
        registry.register(Box::new(sequence_findings_set_aside.clone()))?;
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
        registry.register(Box::new(workload_drops.clone()))?;
        registry.register(Box::new(decode_errors.clone()))?;
        registry.register(Box::new(printed_events_dropped.clone()))?;
        registry.register(Box::new(syscalls.clone()))?;
        registry.register(Box::new(probes_attached.clone()))?;
        registry.register(Box::new(events_handled_until.clone()))?;
        registry.register(Box::new(workloads_cached.clone()))?;
        // Counters whose label values are known up front exist at zero from start-up, so that
        // dashboards and `absent()` alerts work before the first alert.
        for dimension in ALERT_DIMENSIONS {
            for priority in habit_models::priority::Priority::ALL {
                alerts.with_label_values(&[dimension, priority.falco_name()]);
            }
        }
        for kind in habit_probes::EventBody::KIND_LABELS {
            workload_drops.with_label_values(&[Self::UNKNOWN_WORKLOAD, kind]);
        }
        for reason in habit_probes::decode::DecodeError::REASONS {
            decode_errors.with_label_values(&[reason]);
        }
        let events_by_kind = habit_probes::EventBody::KIND_LABELS
            .iter()
            .map(|kind| events.with_label_values(&[*kind]))
            .collect();
        Ok(Self {
            registry,
            events_by_kind,
            kernel_drops,
            workload_drops,
            decode_errors,
            printed_events_dropped,
            syscalls,
            probes_attached,
            events_handled_until,
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
            sequence_findings_set_aside,
            limit_reached,
            baseline_files,
            store_writable,
            store_write_failures,
            store_checkpoints,
            response_actions,
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

/// A limit of a bounded structure: the `limit` label of `habitd_limit_reached_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The process table is full: a new process is not tracked (its events lack `proc.*`).
    ProcTable,
    /// The set of files written by containers is full: it is forgotten wholesale.
    WrittenFiles,
    /// The rate tracker's workloads of one interval are full: a new workload's events and
    /// syscalls of the interval are not counted.
    RateWorkloads,
    /// The alert aggregator's open windows are full: the oldest is ended early.
    AlertAggregator,
    /// A learning workload's profile reached a limit (per dimension or in total): the workload
    /// became unstable (counted once per workload, as it happens).
    Profile,
}

impl Limit {
    /// Every limit, so that each label is exported (at zero) from start-up.
    pub const ALL: [Limit; 5] = [
        Limit::ProcTable,
        Limit::WrittenFiles,
        Limit::RateWorkloads,
        Limit::AlertAggregator,
        Limit::Profile,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Limit::ProcTable => "proc_table",
            Limit::WrittenFiles => "written_files",
            Limit::RateWorkloads => "rate_workloads",
            Limit::AlertAggregator => "alert_aggregator",
            Limit::Profile => "profile",
        }
    }

    /// What reaching it costs, for the log line.
    fn consequence(self) -> &'static str {
        match self {
            Limit::ProcTable => "process table full: new processes are not tracked",
            Limit::WrittenFiles => {
                "written-files set full: forgotten, so a dropped binary may not be recognised"
            }
            Limit::RateWorkloads => {
                "rate tracker full: workloads past the limit are not counted this interval"
            }
            Limit::AlertAggregator => {
                "alert aggregator full: the oldest repeat windows are ended early"
            }
            Limit::Profile => {
                "a workload's profile is full: it is unstable, learns nothing new and is \
                 matched by rules only"
            }
        }
    }
}

/// How often a reached limit is logged at most.
pub const LIMIT_LOG_PERIOD: Duration = Duration::from_secs(60);

/// A log line that is due at most once per period, carrying how many occurrences it stands for.
///
/// The first occurrence is due at once; later ones within the period are only counted, and the
/// first occurrence after the period is due with the count since the last line (itself
/// included). Time is the caller's, so that tests drive it.
#[derive(Debug)]
pub struct RateLimitedLog {
    period: Duration,
    last: Option<Instant>,
    pending: u64,
}

impl RateLimitedLog {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            pending: 0,
        }
    }

    /// Counts `n` occurrences at `now`; returns the count to log when a line is due.
    pub fn due(&mut self, now: Instant, n: u64) -> Option<u64> {
        self.pending = self.pending.saturating_add(n);
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.period)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

/// One bounded structure's limit: each time it is reached, the metric rises and a warning is
/// logged (at most once per [`LIMIT_LOG_PERIOD`]).
#[derive(Debug)]
pub struct LimitReached {
    limit: Limit,
    /// The structure's bound, for the log line.
    bound: usize,
    counter: IntCounter,
    log: RateLimitedLog,
    /// Warnings logged.
    #[cfg(test)]
    lines: u64,
}

impl LimitReached {
    /// The limit `limit` of size `bound`, counted in `metrics`.
    pub fn new(limit: Limit, bound: usize, metrics: &Metrics) -> Self {
        Self {
            limit,
            bound,
            counter: metrics.limit_reached.with_label_values(&[limit.label()]),
            log: RateLimitedLog::new(LIMIT_LOG_PERIOD),
            #[cfg(test)]
            lines: 0,
        }
    }

    /// The limit was reached `n` times (just now).
    pub fn reached(&mut self, n: u64) {
        self.reached_at(Instant::now(), n);
    }

    /// [`LimitReached::reached`] at `now`.
    pub fn reached_at(&mut self, now: Instant, n: u64) {
        if n == 0 {
            return;
        }
        self.counter.inc_by(n);
        if let Some(count) = self.log.due(now, n) {
            #[cfg(test)]
            {
                self.lines += 1;
            }
            tracing::warn!(
                message = "Limit reached.",
                limit = self.limit.label(),
                bound = self.bound,
                count_since_last_warning = count,
                total = self.counter.get(),
                what = self.limit.consequence(),
            );
        }
    }

    /// How many times it was reached (the metric's value).
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.counter.get()
    }

    /// How many warnings were logged.
    #[cfg(test)]
    pub fn lines(&self) -> u64 {
        self.lines
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

    #[test]
    fn every_limit_is_exported_at_zero_from_start_up() {
        let metrics = Metrics::new().unwrap();
        let text = metrics.render();
        for limit in Limit::ALL {
            let line = format!(
                "habitd_limit_reached_total{{limit=\"{}\"}} 0",
                limit.label()
            );
            assert!(text.contains(&line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn a_rate_limited_log_is_due_once_per_period_with_the_count_since() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut log = RateLimitedLog::new(Duration::from_secs(60));
        assert_eq!(
            log.due(at(0), 1),
            Some(1),
            "the first occurrence is logged at once"
        );
        assert_eq!(log.due(at(1), 1), None);
        assert_eq!(log.due(at(59), 3), None);
        assert_eq!(
            log.due(at(60), 1),
            Some(5),
            "one line for the period, with its count"
        );
        assert_eq!(log.due(at(61), 2), None);
        assert_eq!(log.due(at(500), 1), Some(3));
    }

    #[test]
    fn a_reached_limit_raises_the_metric_and_warns_once_per_period() {
        let metrics = Metrics::new().unwrap();
        let mut limit = LimitReached::new(Limit::WrittenFiles, 10, &metrics);
        let t0 = Instant::now();
        limit.reached_at(t0, 1);
        limit.reached_at(t0 + Duration::from_secs(30), 2);
        limit.reached_at(t0 + Duration::from_secs(30), 0);
        assert_eq!(limit.count(), 3);
        assert_eq!(limit.lines(), 1);
        limit.reached_at(t0 + LIMIT_LOG_PERIOD, 1);
        assert_eq!(limit.lines(), 2);
        assert!(
            metrics
                .render()
                .contains("habitd_limit_reached_total{limit=\"written_files\"} 4")
        );
    }
}

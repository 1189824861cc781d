//! Prometheus metrics: handles registered once at start-up, updated per batch or per tick.
//!
//! Names follow Prometheus conventions: `habitd_` prefix, `_total` for counters, base units.
//! Labels stay low-cardinality (event type, drop reason, CPU), never a path or a pid.

use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Every metric habitd exports.
pub struct Metrics {
    registry: Registry,
    /// Attributed events by type (`exec`, `open`, `connect`, …).
    pub events: IntCounterVec,
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
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(kernel_drops.clone()))?;
        registry.register(Box::new(decode_errors.clone()))?;
        registry.register(Box::new(syscalls.clone()))?;
        registry.register(Box::new(probes_attached.clone()))?;
        registry.register(Box::new(workloads_cached.clone()))?;
        Ok(Self {
            registry,
            events,
            kernel_drops,
            decode_errors,
            syscalls,
            probes_attached,
            workloads_cached,
        })
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

//! The counters tick of the pipeline: what the kernel counted since the last read (syscalls
//! per cgroup, drops per reason and CPU, records lost per cgroup and kind, syscall 6-grams)
//! goes to learning, scoring and metrics; the interval's rates are learned or scored; the slots
//! of removed cgroups are released. It runs on the pipeline's task, like the per-event path.

use std::time::{Duration, SystemTime};

use habit_probes::{EventBody, LostDelta, Probes, syscall_names};

use super::Pipeline;
use crate::alerts::alert::Alert;
use crate::attribution::Resolution;
use crate::learning::unix_ms;
use crate::metrics::Metrics;

/// A wall-clock step at least this large (seconds) is logged.
const CLOCK_STEP_LOGGED: f64 = 1.0;

impl Pipeline {
    /// Reads the in-kernel counters: syscall counts go to learning/scoring and metrics, drops
    /// to metrics; the slots of removed cgroups are released.
    pub async fn read_kernel_counters(
        &mut self,
        probes: &mut Probes,
        interval: Duration,
        alerts: &mut Vec<Alert>,
    ) {
        let now = SystemTime::now();
        self.read_syscalls(probes, interval, now, alerts).await;
        // The interval is over: learn its rates, or score them.
        let learn_now = self.learn_time(unix_ms(now));
        for (key, features) in self.rates.take() {
            if let Some(score) = self.engine.observe_interval(&key, features, learn_now)
                && self.fusion.alerts_on_rate(key.as_str(), &score)
            {
                alerts.push(self.fusion.rate_alert(key.as_str(), &score, now));
            }
        }
        self.read_drops(probes);
        self.read_lost(probes).await;
        self.release_dead_cgroups(probes).await;
        self.release_sequence_alerts(now, alerts);
        self.sync_sequences(probes).await;
        self.metrics
            .workloads_cached
            .set(self.resolver.cached_cgroups() as i64);
    }

    /// Syscall counts per cgroup since the last read: learned or scored per workload.
    async fn read_syscalls(
        &mut self,
        probes: &mut Probes,
        interval: Duration,
        now: SystemTime,
        alerts: &mut Vec<Alert>,
    ) {
        let deltas = match probes.counters.read_syscalls() {
            Ok(deltas) => deltas,
            Err(e) => {
                tracing::warn!(message = "Cannot read syscall counters.", %e);
                return;
            }
        };
        let mut findings = Vec::new();
        for d in deltas {
            let workload = match self.resolver.resolve_now(d.cgroup_id, None).await {
                Resolution::Ready(w) | Resolution::Pending(w) => w,
            };
            if workload.is_pod_sandbox() {
                continue; // infrastructure: never learned
            }
            if workload.is_unresolved() {
                // Keep the counts until the runtime has described the container.
                probes.counters.defer(&d);
                continue;
            }
            let total: u64 = d.counts.iter().map(|(_, c)| c).sum();
            self.metrics
                .syscalls
                .with_label_values(&[workload.key.as_str()])
                .inc_by(total);
            let named: Vec<(String, u64)> = d
                .counts
                .iter()
                .map(|&(nr, c)| {
                    let name =
                        syscall_names::name(nr).map_or_else(|| format!("sys_{nr}"), str::to_string);
                    (name, c)
                })
                .collect();
            self.rates
                .on_syscalls(&workload.key, d.cgroup_id, &named, now);
            let learn_now = self.learn_time(unix_ms(now));
            self.engine.observe_syscalls(
                &workload.key,
                workload.container_id.as_deref(),
                &named,
                interval,
                learn_now,
                &mut findings,
            );
            for finding in findings.drain(..).filter(|f| f.alert) {
                let mut fields = serde_json::Map::new();
                fields.insert("habitd.workload".into(), workload.key.as_str().into());
                fields.insert("cgroup.id".into(), d.cgroup_id.into());
                alerts.push(self.fusion.novelty_alert(&finding, fields, now));
            }
        }
    }

    /// The kernel's loss counters (per reason and CPU), mirrored into metrics.
    fn read_drops(&self, probes: &Probes) {
        match probes.counters.read_drops() {
            Ok(drops) => {
                for (reason, cpu, total) in drops {
                    let counter = self
                        .metrics
                        .kernel_drops
                        .with_label_values(&[reason, &cpu.to_string()]);
                    Metrics::mirror(&counter, total);
                }
            }
            Err(e) => tracing::warn!(message = "Cannot read drop counters.", %e),
        }
    }

    /// Records lost on a full ring buffer since the last read, told to their workloads. A
    /// container not described yet keeps its losses in the kernel until it is (as its syscall
    /// counts), so that they are counted under its image, not under a provisional key.
    async fn read_lost(&mut self, probes: &mut Probes) {
        let deltas = match probes.counters.read_lost() {
            Ok(deltas) => deltas,
            Err(e) => {
                tracing::warn!(message = "Cannot read the lost-record counters.", %e);
                return;
            }
        };
        for delta in deltas {
            if let Some(cgroup_id) = delta.cgroup_id {
                let workload = match self.resolver.resolve_now(cgroup_id, None).await {
                    Resolution::Ready(w) | Resolution::Pending(w) => w,
                };
                if workload.is_unresolved() {
                    probes.counters.defer_lost(&delta);
                    continue;
                }
                self.count_lost(workload.key.as_str(), &delta);
            } else {
                self.count_lost(Metrics::UNKNOWN_WORKLOAD, &delta);
            }
        }
    }

    /// Adds a workload's lost records to `habitd_workload_events_dropped_total`.
    fn count_lost(&self, workload: &str, delta: &LostDelta) {
        for &(kind, count) in &delta.counts {
            let label = EventBody::label_of_kind(kind).unwrap_or("unknown");
            self.metrics
                .workload_drops
                .with_label_values(&[workload, label])
                .inc_by(count);
        }
        tracing::debug!(message = "Records lost on a full ring buffer.", workload, counts = ?delta.counts);
    }

    /// Tells the kernel, per cgroup slot, whether its workload's syscall sequences are
    /// learned, scored or ignored, and learns what the kernel counted.
    async fn sync_sequences(&mut self, probes: &mut Probes) {
        let mut slots = Vec::new();
        for (cgroup_id, slot) in probes.counters.slots() {
            let workload = match self.resolver.resolve_now(cgroup_id, None).await {
                Resolution::Ready(w) | Resolution::Pending(w) => w,
            };
            slots.push((
                slot,
                cgroup_id,
                (!workload.is_unresolved() && !workload.is_pod_sandbox())
                    .then(|| workload.key.clone()),
            ));
        }
        if let Err(e) = self
            .sequences
            .sync(&mut probes.sequences, &slots, &mut self.engine)
        {
            tracing::warn!(message = "Cannot update the kernel's sequence maps.", %e);
        }
    }

    /// Frees the counter slots (and resolver entries) of cgroups that were removed; the records
    /// they lost since the last read are counted first.
    async fn release_dead_cgroups(&self, probes: &mut Probes) {
        let index = self.resolver.index();
        if let Err(e) = index.refresh() {
            tracing::debug!(message = "cgroup index refresh failed.", %e);
            return;
        }
        for (cgroup_id, _) in probes.counters.slots() {
            if index.lookup(cgroup_id).is_none() {
                tracing::debug!(
                    message = "Releasing the counter slot of a removed cgroup.",
                    cgroup_id
                );
                match probes.release_cgroup(cgroup_id) {
                    Ok(Some(residual)) => {
                        let workload = match self.resolver.resolve_now(cgroup_id, None).await {
                            Resolution::Ready(w) | Resolution::Pending(w) => w,
                        };
                        self.count_lost(workload.key.as_str(), &residual);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(message = "Cannot release a counter slot.", cgroup_id, %e);
                    }
                }
                self.resolver.forget(cgroup_id);
            }
        }
    }

    /// Raises the sequence alerts that waited long enough, but those of containers that
    /// stopped meanwhile (`stopping`); runs after the cgroup index was refreshed.
    fn release_sequence_alerts(&mut self, now: SystemTime, alerts: &mut Vec<Alert>) {
        let index = self.resolver.index();
        let set_aside =
            self.stopping
                .release(now, |cgroup_id| index.lookup(cgroup_id).is_some(), alerts);
        self.metrics
            .sequence_findings_set_aside
            .with_label_values(&["stopping"])
            .inc_by(set_aside);
    }

    /// Sends the sequence values decided during the last batch to the kernel.
    pub fn flush_sequences(&mut self, probes: &mut Probes) {
        self.sequences.flush(&mut probes.sequences);
    }

    /// The once-a-second tick of learning (convergence, checkpoints); a workload that became
    /// unstable is an alert in `alerts`.
    pub fn tick(&mut self, now: SystemTime, alerts: &mut Vec<Alert>) {
        let step = self.clock.resync();
        if step.abs() >= CLOCK_STEP_LOGGED {
            tracing::warn!(
                message = "The wall clock was stepped; event times follow it from now on.",
                seconds = step
            );
        }
        self.engine.tick(now);
        for (key, reason) in self.engine.take_unstable() {
            alerts.push(self.fusion.unstable_alert(key.as_str(), &reason, now));
        }
    }

    /// An operator command from the API.
    pub fn command(&mut self, command: crate::learning::Command) {
        self.engine.command(command);
    }

    /// Saves learning progress before exit.
    pub fn shutdown(&mut self) {
        self.engine.shutdown();
    }

    /// Whether a write to the store failed (see `learning::paused`): the daemon must exit
    /// without closing it.
    pub fn store_failed_for_good(&self) -> bool {
        self.engine.store_failed_for_good()
    }
}

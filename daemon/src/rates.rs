//! Per-workload interval features for the rate model: what each workload did in the current
//! counters interval (events from the pipeline, syscalls from the kernel counters).
//!
//! Two things make an interval's rates wrong, and both are dealt with here rather than left for
//! the model to learn as behaviour:
//!
//! * **Partial intervals.** The first interval after the daemon starts covers whatever time
//!   passed between attaching the probes and the first tick (the first tick of a tokio interval
//!   fires at once), and the first interval of a workload that appears later covers only part
//!   of the interval, plus its start-up: for a container, the runtime setting it up and the
//!   entrypoint loading, easily ten times any later interval. Neither is learned or scored.
//! * **Late ticks.** The counters tick can fire late (a busy runtime, a model being fitted), and
//!   missed ticks then fire in a burst. Rates are counts over the measured length of the
//!   interval, not the nominal one; an interval shorter than half the nominal length (a burst
//!   tick) is not ended but merged into the next one.
//!
//! Bounded: past [`MAX_WORKLOADS`] workloads in one interval, a new workload's events and
//! syscalls are not counted; each one refused counts in
//! `habitd_limit_reached_total{limit="rate_workloads"}` and a warning reports it.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use habit_models::rate::{EventKind, FeatureVector, IntervalFeatures};
use habit_probes::EventBody;
use habit_profiles::workload::WorkloadKey;

use crate::metrics::{Limit, LimitReached, Metrics};

/// Most workloads tracked in one interval (bounded like everything else).
const MAX_WORKLOADS: usize = 4096;

/// Most workloads remembered as seen (so that only their first interval is dropped). Past it,
/// new workloads are no longer remembered and their first interval counts like any other.
const MAX_SEEN: usize = 65_536;

/// The features of the current interval, per workload.
pub struct RateTracker {
    interval_secs: f64,
    current: HashMap<WorkloadKey, IntervalFeatures>,
    /// Most workloads in `current`.
    max_workloads: usize,
    /// Counts (and warns about) what was refused because `current` was full.
    full: LimitReached,
    /// Workloads whose partial first interval is behind them.
    seen: HashSet<WorkloadKey>,
    /// cgroups whose first (start-up) interval is behind them.
    cgroups_seen: HashSet<u64>,
    /// When the current interval started; `None` before the first tick (the partial interval
    /// since the daemon started).
    started: Option<Instant>,
}

impl RateTracker {
    /// A tracker of intervals of `interval_secs` (nominal), reporting its limit in `metrics`.
    pub fn new(interval_secs: f64, metrics: &Metrics) -> Self {
        Self::with_limit(interval_secs, MAX_WORKLOADS, metrics)
    }

    fn with_limit(interval_secs: f64, max_workloads: usize, metrics: &Metrics) -> Self {
        let interval_secs = if interval_secs.is_finite() && interval_secs > 0.0 {
            interval_secs
        } else {
            1.0
        };
        Self {
            interval_secs,
            current: HashMap::new(),
            max_workloads,
            full: LimitReached::new(Limit::RateWorkloads, max_workloads, metrics),
            seen: HashSet::new(),
            cgroups_seen: HashSet::new(),
            started: None,
        }
    }

    fn features(&mut self, key: &WorkloadKey) -> Option<&mut IntervalFeatures> {
        if !self.current.contains_key(key) {
            if self.current.len() >= self.max_workloads {
                self.full.reached(1);
                return None;
            }
            self.current
                .insert(key.clone(), IntervalFeatures::new(self.interval_secs));
        }
        self.current.get_mut(key)
    }

    /// Counts an event of `key`. Opens are counted from the kernel's syscall counts instead
    /// (the kernel sends only the first open of a path per interval).
    pub fn on_event(&mut self, key: &WorkloadKey, body: &EventBody, path: Option<&str>) {
        let Some(f) = self.features(key) else { return };
        match body {
            EventBody::Exec { .. } => {
                f.add_event(EventKind::Exec);
            }
            EventBody::Connect { remote, .. } => {
                f.add_event(EventKind::Connect);
                f.add_destination(&remote.to_string());
            }
            EventBody::Accept { .. } => {
                f.add_event(EventKind::Accept);
            }
            EventBody::Open { path: raw, .. } => {
                f.add_file(path.unwrap_or(raw));
            }
            _ => {}
        }
    }

    /// Adds the interval's syscall counts of cgroup `cgroup_id` of `key`. A cgroup's first
    /// interval is its container starting (runc, the entrypoint's set-up): not the workload's
    /// steady rate, so a replica started during detection does not look like a burst.
    pub fn on_syscalls(&mut self, key: &WorkloadKey, cgroup_id: u64, counts: &[(String, u64)]) {
        if self.cgroups_seen.len() >= MAX_SEEN {
            self.cgroups_seen.clear();
        }
        let starting = self.cgroups_seen.insert(cgroup_id) && self.started.is_some();
        let Some(f) = self.features(key) else { return };
        if starting {
            return; // the workload is present this interval, its new cgroup's start-up is not
        }
        f.add_syscalls(counts);
        let opens: u64 = counts
            .iter()
            .filter(|(name, _)| matches!(name.as_str(), "open" | "openat" | "openat2" | "creat"))
            .map(|(_, c)| c)
            .sum();
        f.add_events(EventKind::Open, opens);
    }

    /// Ends the interval: the feature vector of every workload that did something, except
    /// partial intervals (see the module documentation). Empty while the interval is shorter
    /// than half the nominal length: its counts go on into the next one.
    pub fn take(&mut self) -> Vec<(WorkloadKey, FeatureVector)> {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> Vec<(WorkloadKey, FeatureVector)> {
        let Some(started) = self.started else {
            // The daemon's first, partial interval: what ran then is not new next time.
            self.started = Some(now);
            for (key, _) in self.current.drain() {
                if self.seen.len() < MAX_SEEN {
                    self.seen.insert(key);
                }
            }
            return Vec::new();
        };
        let secs = now.saturating_duration_since(started).as_secs_f64();
        if secs < 0.5 * self.interval_secs {
            return Vec::new();
        }
        self.started = Some(now);
        let mut out = Vec::with_capacity(self.current.len());
        for (key, f) in self.current.drain() {
            if !self.seen.contains(&key) && self.seen.len() < MAX_SEEN {
                tracing::debug!(
                    message = "First interval of a workload: partial, not used for rates.",
                    workload = %key
                );
                self.seen.insert(key);
                continue;
            }
            let features = f.finish_over(secs);
            tracing::trace!(
                message = "Interval features.",
                workload = %key,
                secs,
                values = ?features.values()
            );
            out.push((key, features));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use habit_models::rate::{Feature, RateKind};

    use super::*;

    /// `n` reads and one open, from the workload's one cgroup.
    fn syscalls(tracker: &mut RateTracker, key: &WorkloadKey, n: u64) {
        let cgroup = if key.is_host() { 1 } else { 2 };
        tracker.on_syscalls(
            key,
            cgroup,
            &[("read".to_string(), n), ("openat".to_string(), 1)],
        );
    }

    fn rate(v: &FeatureVector) -> f64 {
        v.get(Feature::Rate(RateKind::Syscalls))
    }

    #[test]
    fn workloads_past_the_limit_are_a_metric_and_one_warning() {
        let metrics = Metrics::new().unwrap();
        let mut tracker = RateTracker::with_limit(1.0, 2, &metrics);
        let keys: Vec<WorkloadKey> = (0..4)
            .map(|i| WorkloadKey::from_raw(format!("docker.io/library/app{i}:1")))
            .collect();
        for key in &keys {
            syscalls(&mut tracker, key, 10);
        }
        syscalls(&mut tracker, &keys[0], 10); // a tracked workload is still counted
        assert_eq!(tracker.current.len(), 2);
        assert_eq!(tracker.full.count(), 2);
        assert_eq!(tracker.full.lines(), 1, "one warning per period");
        assert!(
            metrics
                .render()
                .contains("habitd_limit_reached_total{limit=\"rate_workloads\"} 2")
        );
    }

    #[test]
    fn a_new_cgroup_of_a_known_workload_does_not_count_its_start_up() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let key = WorkloadKey::from_raw("docker.io/library/nginx:1.25");
        let mut tracker = RateTracker::new(1.0, &Metrics::new().unwrap());
        tracker.on_syscalls(&key, 7, &[("read".to_string(), 10)]);
        assert!(tracker.take_at(at(0)).is_empty()); // the daemon's partial first interval
        tracker.on_syscalls(&key, 7, &[("read".to_string(), 100)]);
        tracker.on_syscalls(&key, 8, &[("read".to_string(), 50_000)]); // a replica starts
        let out = tracker.take_at(at(1000));
        assert_eq!(out.len(), 1);
        assert_eq!(rate(&out[0].1), 100.0);
    }

    #[test]
    fn partial_intervals_are_dropped_and_rates_use_the_measured_length() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let old = WorkloadKey::host();
        let new = WorkloadKey::from_raw("docker.io/library/nginx:1.25");
        let mut tracker = RateTracker::new(1.0, &Metrics::new().unwrap());

        // The daemon's first tick: a partial interval, dropped; `old` is known from then on.
        syscalls(&mut tracker, &old, 5000);
        assert!(tracker.take_at(at(0)).is_empty());

        // A full interval of `old`; `new` appears (its start-up): dropped once.
        syscalls(&mut tracker, &old, 99);
        syscalls(&mut tracker, &new, 10_000);
        let out = tracker.take_at(at(1000));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, old);
        assert_eq!(rate(&out[0].1), 100.0);

        // A late tick: the counts of 2 s are 2 s of rates, not a doubled rate.
        syscalls(&mut tracker, &old, 199);
        syscalls(&mut tracker, &new, 99);
        let mut out = tracker.take_at(at(3000));
        out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].0, old);
        assert_eq!(rate(&out[1].1), 100.0);
        assert_eq!(out[1].1.interval_secs(), 2.0);
        assert_eq!(rate(&out[0].1), 50.0);

        // A burst tick right after: merged into the next interval.
        syscalls(&mut tracker, &old, 9);
        assert!(tracker.take_at(at(3010)).is_empty());
        syscalls(&mut tracker, &old, 89);
        let out = tracker.take_at(at(4000));
        assert_eq!(out.len(), 1);
        assert_eq!(rate(&out[0].1), 100.0);
    }
}

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
//! * **Start-up of a container.** A container that starts (a new replica, or a restart: runc
//!   makes a new cgroup for it) spends its first seconds loading: a restarted redis opened
//!   eight times its usual distinct files and was reported as a burst. A cgroup's first
//!   [`STARTUP_INTERVALS`] intervals (the one it appeared in and the next, so a start-up
//!   straddling a tick is covered) count neither its syscalls nor its events; the workload's
//!   other containers count as usual. That is how a new container's start-up is treated.
//! * **Late ticks.** The counters tick can fire late (a busy runtime, a model being fitted), and
//!   missed ticks then fire in a burst. Rates are counts over the measured length of the
//!   interval, not the nominal one; an interval shorter than half the nominal length (a burst
//!   tick) is not ended but merged into the next one.
//!
//! Bounded: past [`MAX_WORKLOADS`] workloads in one interval, a new workload's events and
//! syscalls are not counted; each one refused counts in
//! `habitd_limit_reached_total{limit="rate_workloads"}` and a warning reports it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use habit_models::rate::{EventKind, FeatureVector, IntervalFeatures};
use habit_probes::EventBody;
use habit_profiles::workload::WorkloadKey;

use crate::metrics::{Limit, LimitReached, Metrics};

/// Most workloads tracked in one interval (bounded like everything else).
const MAX_WORKLOADS: usize = 4096;

/// Intervals of a new cgroup (a container starting or restarting) that are its start-up:
/// the one it appeared in and the next.
pub const STARTUP_INTERVALS: u32 = 2;

/// Most workloads remembered as seen (so that only their first interval is dropped). Past it,
/// new workloads are no longer remembered and their first interval counts like any other.
const MAX_SEEN: usize = 65_536;

/// The features of the current interval, per workload.
pub struct RateTracker {
    interval_secs: f64,
    /// The same, as a duration.
    interval: Duration,
    current: HashMap<WorkloadKey, IntervalFeatures>,
    /// Most workloads in `current`.
    max_workloads: usize,
    /// Counts (and warns about) what was refused because `current` was full.
    full: LimitReached,
    /// Workloads whose partial first interval is behind them.
    seen: HashSet<WorkloadKey>,
    /// cgroups seen since the daemon's first tick.
    cgroups_seen: HashSet<u64>,
    /// cgroups in (or recently past) their start-up, with when it ends (event time).
    starting: HashMap<u64, SystemTime>,
    /// The latest time of work seen (to forget start-ups long past).
    latest: SystemTime,
    /// Workloads with syscalls counted this interval (not only a starting cgroup's): the
    /// others are left out of the interval rather than seen as idle.
    counted: HashSet<WorkloadKey>,
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
            interval: Duration::from_secs_f64(interval_secs),
            current: HashMap::new(),
            max_workloads,
            full: LimitReached::new(Limit::RateWorkloads, max_workloads, metrics),
            seen: HashSet::new(),
            cgroups_seen: HashSet::new(),
            starting: HashMap::new(),
            latest: SystemTime::UNIX_EPOCH,
            counted: HashSet::new(),
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

    /// Whether work of cgroup `cgroup_id` at `at` (an event's time, or the end of the
    /// interval of syscall counts) is its start-up (see the module documentation). A cgroup
    /// first seen in the daemon's own first, partial interval is not: it was running.
    ///
    /// The window is in event time, not in ticks: on a loaded machine the ring buffer's
    /// events are processed seconds after the counters tick that first saw the cgroup, and
    /// a window of ticks would have closed before its start-up events were counted (a
    /// restarted redis was still reported as a burst of files that way).
    fn in_startup(&mut self, cgroup_id: u64, at: SystemTime) -> bool {
        if self.cgroups_seen.len() >= MAX_SEEN {
            self.cgroups_seen.clear();
        }
        self.latest = self.latest.max(at);
        if self.cgroups_seen.insert(cgroup_id)
            && self.started.is_some()
            && self.starting.len() < MAX_SEEN
        {
            // It started at `at` at the earliest: its start-up ends STARTUP_INTERVALS
            // intervals later.
            self.starting
                .insert(cgroup_id, at + self.interval * STARTUP_INTERVALS);
        }
        self.is_starting(cgroup_id, at)
    }

    /// Whether cgroup `cgroup_id` is in its start-up at `at`, as far as the work seen so far
    /// tells (see [`RateTracker::on_event`]); asks without counting anything.
    pub fn is_starting(&self, cgroup_id: u64, at: SystemTime) -> bool {
        self.starting
            .get(&cgroup_id)
            .is_some_and(|&until| at < until)
    }

    /// The nominal interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Counts an event of `key` from cgroup `cgroup_id`. Opens are counted from the kernel's
    /// syscall counts instead (the kernel sends only the first open of a path per interval).
    pub fn on_event(
        &mut self,
        key: &WorkloadKey,
        cgroup_id: u64,
        body: &EventBody,
        path: Option<&str>,
        at: SystemTime,
    ) {
        if self.in_startup(cgroup_id, at) {
            return; // the new cgroup's start-up is not the workload's rate
        }
        // Not `count`ed: an interval is measured by its syscall counts. At the end of a
        // start-up window the interval's counts can be left out (it began in the window)
        // while its later events are not: events alone made intervals of 0 syscalls.
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
    /// intervals are its container starting (runc, the entrypoint's set-up): not the
    /// workload's steady rate, so a replica started, or a container restarted, during
    /// detection does not look like a burst.
    pub fn on_syscalls(
        &mut self,
        key: &WorkloadKey,
        cgroup_id: u64,
        counts: &[(String, u64)],
        now: SystemTime,
    ) {
        // The counts cover the interval that ends now: start-up if it began in the window.
        let starting = self.in_startup(cgroup_id, now - self.interval);
        // The workload is present this interval (its first interval is partial whatever ran).
        let Some(f) = self.features(key) else { return };
        if starting {
            return; // its new cgroup's start-up is not its rate
        }
        f.add_syscalls(counts);
        let opens: u64 = counts
            .iter()
            .filter(|(name, _)| matches!(name.as_str(), "open" | "openat" | "openat2" | "creat"))
            .map(|(_, c)| c)
            .sum();
        f.add_events(EventKind::Open, opens);
        self.count(key);
    }

    /// Notes that `key` has work of a running (not starting) container this interval.
    fn count(&mut self, key: &WorkloadKey) {
        if !self.counted.contains(key) {
            self.counted.insert(key.clone());
        }
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
            self.counted.clear();
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
        let forget = self.latest - self.interval * 10;
        self.starting.retain(|_, until| *until > forget);
        let mut out = Vec::with_capacity(self.current.len());
        let counted = std::mem::take(&mut self.counted);
        for (key, f) in self.current.drain() {
            if !self.seen.contains(&key) && self.seen.len() < MAX_SEEN {
                tracing::debug!(
                    message = "First interval of a workload: partial, not used for rates.",
                    workload = %key
                );
                self.seen.insert(key);
                continue;
            }
            if !counted.contains(&key) {
                tracing::debug!(
                    message = "Interval of a workload only starting containers: not used for rates.",
                    workload = %key
                );
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

    use habit_models::rate::{Feature, RateKind};

    use super::*;

    /// `n` reads and one open, from the workload's one cgroup.
    fn syscalls(tracker: &mut RateTracker, key: &WorkloadKey, n: u64) {
        syscalls_at(tracker, key, n, wall(0));
    }

    /// A wall-clock time, `ms` after a fixed start.
    fn wall(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000) + Duration::from_millis(ms)
    }

    /// [`syscalls`] for the interval ending at `now`.
    fn syscalls_at(tracker: &mut RateTracker, key: &WorkloadKey, n: u64, now: SystemTime) {
        let cgroup = if key.is_host() { 1 } else { 2 };
        tracker.on_syscalls(
            key,
            cgroup,
            &[("read".to_string(), n), ("openat".to_string(), 1)],
            now,
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
        tracker.on_syscalls(&key, 7, &[("read".to_string(), 10)], wall(0));
        assert!(tracker.take_at(at(0)).is_empty()); // the daemon's partial first interval
        tracker.on_syscalls(&key, 7, &[("read".to_string(), 100)], wall(1000));
        tracker.on_syscalls(&key, 8, &[("read".to_string(), 50_000)], wall(1000)); // a replica starts
        let out = tracker.take_at(at(1000));
        assert_eq!(out.len(), 1);
        assert_eq!(rate(&out[0].1), 100.0);
    }

    /// Issue 11: a restarted redis (a new cgroup of a known workload) opened 8 times its
    /// usual distinct files while starting and was reported as a burst. Its start-up
    /// intervals count neither syscalls nor events; afterwards it counts like any container.
    #[test]
    fn a_restarted_container_does_not_count_its_start_up_events() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let key = WorkloadKey::from_raw("docker.io/library/redis:7");
        let mut tracker = RateTracker::new(1.0, &Metrics::new().unwrap());
        let open = |path: &str| EventBody::Open {
            dirfd: -100,
            path: path.to_string(),
            base_dir: String::new(),
            flags: 0,
            mode: 0,
            result: 3,
        };
        let files = |v: &FeatureVector| v.get(Feature::Rate(RateKind::Files));
        tracker.on_syscalls(&key, 7, &[("read".to_string(), 10)], wall(0));
        assert!(tracker.take_at(at(0)).is_empty()); // the daemon's partial first interval
        tracker.on_syscalls(&key, 7, &[("read".to_string(), 100)], wall(1000));
        tracker.on_event(&key, 7, &open("/data/dump.rdb"), None, wall(500));
        let out = tracker.take_at(at(1000));
        assert_eq!(files(&out[0].1), 1.0);
        // Restart: the old cgroup is gone, the new one loads (many files, two intervals).
        for t in [2000, 3000] {
            tracker.on_syscalls(&key, 9, &[("read".to_string(), 50_000)], wall(t));
            for i in 0..8 {
                tracker.on_event(&key, 9, &open(&format!("/lib/{i}.so")), None, wall(t - 500));
            }
            // Neither a burst nor an idle interval: left out.
            assert!(tracker.take_at(at(t)).is_empty(), "start-up at {t}");
        }
        // Start-up events processed late (a loaded pipeline) are still start-up.
        for i in 0..8 {
            tracker.on_event(&key, 9, &open(&format!("/lib/{i}.so")), None, wall(2900));
        }
        // Then it counts.
        tracker.on_syscalls(&key, 9, &[("read".to_string(), 100)], wall(4000));
        tracker.on_event(&key, 9, &open("/data/dump.rdb"), None, wall(3500));
        let out = tracker.take_at(at(4000));
        assert_eq!(rate(&out[0].1), 100.0);
        assert_eq!(files(&out[0].1), 1.0);
    }

    /// The interval that ends a start-up window: its counts began in the window (left out),
    /// its events after it. Counted, they made an interval of events and no syscalls (a
    /// learned "transient" of 0 syscalls in the evaluation's Python service).
    #[test]
    fn an_interval_with_events_but_its_counts_left_out_is_no_measurement() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let key = WorkloadKey::from_raw("docker.io/library/python:3");
        let mut tracker = RateTracker::new(1.0, &Metrics::new().unwrap());
        let open = EventBody::Open {
            dirfd: -100,
            path: "/srv/app/app.py".to_string(),
            base_dir: String::new(),
            flags: 0,
            mode: 0,
            result: 3,
        };
        tracker.on_syscalls(&key, 7, &[("read".to_string(), 10)], wall(0));
        assert!(tracker.take_at(at(0)).is_empty()); // the daemon's partial first interval
        // A new cgroup, first seen at 1000: its start-up ends at 1000 + 2 intervals.
        tracker.on_syscalls(&key, 9, &[("read".to_string(), 5_000)], wall(2000));
        assert!(tracker.take_at(at(2000)).is_empty());
        // The tick at 3500 covers 2500–3500: counts left out; an event at 3200 is past it.
        tracker.on_syscalls(&key, 9, &[("read".to_string(), 5_000)], wall(3500));
        tracker.on_event(&key, 9, &open, None, wall(3200));
        assert!(tracker.take_at(at(3500)).is_empty());
        // Then it counts.
        tracker.on_syscalls(&key, 9, &[("read".to_string(), 100)], wall(4500));
        tracker.on_event(&key, 9, &open, None, wall(4000));
        let out = tracker.take_at(at(4500));
        assert_eq!(rate(&out[0].1), 100.0);
        assert_eq!(out[0].1.get(Feature::Rate(RateKind::Files)), 1.0);
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
        syscalls_at(&mut tracker, &old, 99, wall(1000));
        syscalls_at(&mut tracker, &new, 10_000, wall(1000));
        let out = tracker.take_at(at(1000));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, old);
        assert_eq!(rate(&out[0].1), 100.0);

        // The second interval of `new`'s container is still its start-up: not counted, and
        // `new` (present only through it) is left out rather than scored as idle.
        syscalls_at(&mut tracker, &old, 99, wall(2000));
        syscalls_at(&mut tracker, &new, 5_000, wall(2000));
        let out = tracker.take_at(at(2000));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, old);

        // A late tick: the counts of 2 s are 2 s of rates, not a doubled rate.
        syscalls_at(&mut tracker, &old, 199, wall(4000));
        syscalls_at(&mut tracker, &new, 99, wall(4000));
        let mut out = tracker.take_at(at(4000));
        out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].0, old);
        assert_eq!(rate(&out[1].1), 100.0);
        assert_eq!(out[1].1.interval_secs(), 2.0);
        assert_eq!(rate(&out[0].1), 50.0);

        // A burst tick right after: merged into the next interval.
        syscalls(&mut tracker, &old, 9);
        assert!(tracker.take_at(at(4010)).is_empty());
        syscalls(&mut tracker, &old, 89);
        let out = tracker.take_at(at(5000));
        assert_eq!(out.len(), 1);
        assert_eq!(rate(&out[0].1), 100.0);
    }
}

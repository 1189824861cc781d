//! Per-workload interval features for the rate model: what each workload did in the current
//! counters interval (events from the pipeline, syscalls from the kernel counters).

use std::collections::HashMap;

use habit_models::rate::{EventKind, FeatureVector, IntervalFeatures};
use habit_probes::EventBody;
use habit_profiles::workload::WorkloadKey;

/// Most workloads tracked in one interval (bounded like everything else).
const MAX_WORKLOADS: usize = 4096;

/// The features of the current interval, per workload.
pub struct RateTracker {
    interval_secs: f64,
    current: HashMap<WorkloadKey, IntervalFeatures>,
}

impl RateTracker {
    pub fn new(interval_secs: f64) -> Self {
        Self {
            interval_secs,
            current: HashMap::new(),
        }
    }

    fn features(&mut self, key: &WorkloadKey) -> Option<&mut IntervalFeatures> {
        if !self.current.contains_key(key) {
            if self.current.len() >= MAX_WORKLOADS {
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

    /// Adds the interval's syscall counts of `key`.
    pub fn on_syscalls(&mut self, key: &WorkloadKey, counts: &[(String, u64)]) {
        let Some(f) = self.features(key) else { return };
        f.add_syscalls(counts);
        let opens: u64 = counts
            .iter()
            .filter(|(name, _)| matches!(name.as_str(), "open" | "openat" | "openat2" | "creat"))
            .map(|(_, c)| c)
            .sum();
        f.add_events(EventKind::Open, opens);
    }

    /// Ends the interval: the feature vector of every workload that did something.
    pub fn take(&mut self) -> Vec<(WorkloadKey, FeatureVector)> {
        self.current
            .drain()
            .map(|(key, f)| {
                let v = f.finish();
                tracing::debug!(message = "DBG interval features.", workload = %key, values = ?v.values());
                (key, v)
            })
            .collect()
    }
}

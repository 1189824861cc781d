//! What the engine shows: the [`WorkloadView`] of each workload (served by
//! `GET /api/v1/workloads`; the type is the API's, shared with habitctl), published as one
//! snapshot behind a lock with the per-workload metrics.
//!
//! Apart from the lifecycle because the API reads from another task: it sees only the
//! published snapshot, never the engine's state.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use habit_profiles::api::{LearningView, ModelLearningView, WorkloadView};
use habit_profiles::observation::Dimension;
use habit_profiles::profile::UnixMillis;
use habit_profiles::workload::WorkloadKey;

use super::checkpoint::windows;
use super::{Engine, Entry, Phase, unix_ms};

/// The published snapshot of every workload, for the API.
pub type Views = Arc<RwLock<Vec<WorkloadView>>>;

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

impl Engine {
    /// The snapshot the API reads.
    pub fn views(&self) -> Views {
        self.views.clone()
    }

    pub(super) fn view_of(&self, key: &WorkloadKey, now: SystemTime) -> Option<WorkloadView> {
        self.workloads.get(key).map(|e| self.view(e, unix_ms(now)))
    }

    fn view(&self, entry: &Entry, now: UnixMillis) -> WorkloadView {
        let r = &entry.record;
        let elapsed = now.saturating_sub(r.learning_started_at);
        let since_new = r.last_new_item_at.map(|t| now.saturating_sub(t));
        let sizes = Dimension::ALL
            .iter()
            .map(|&d| {
                let n = match &entry.phase {
                    Phase::Learning { profile, .. } => profile.items_in(d),
                    Phase::Detecting { baseline, .. } => baseline.items(d).count(),
                };
                (d.name().to_owned(), n)
            })
            .collect();
        let progress = match entry.phase {
            Phase::Detecting { .. } => 1.0,
            Phase::Learning { .. } => {
                // The windows this workload converges on (shorter when inheriting).
                let w = windows(&self.config, entry);
                let quiet = now.saturating_sub(w.quiet_since) as f64;
                (elapsed as f64 / w.min.max(1) as f64)
                    .min(quiet / w.stable.max(1) as f64)
                    .clamp(0.0, 0.99)
            }
        };
        let lineage = match &entry.phase {
            Phase::Detecting { baseline, .. } => baseline.metadata.inherited_from.clone(),
            Phase::Learning { carried, .. } => carried
                .as_ref()
                .map(|b| b.metadata.inherited_from.clone())
                .unwrap_or_default(),
        };
        WorkloadView {
            key: r.key.clone(),
            state: r.state,
            partial: r.partial,
            mode_forced: r.mode_forced,
            learning: LearningView {
                started_at: r.learning_started_at,
                elapsed_secs: secs(elapsed),
                last_new_item_at: r.last_new_item_at,
                secs_since_new_item: since_new.map(secs),
                progress,
                models: match entry.phase {
                    Phase::Learning { .. } => {
                        let (grams, traces) = entry.sequence.sizes();
                        Some(ModelLearningView {
                            rate_intervals: entry.intervals.len(),
                            sequence_grams: grams,
                            sequence_traces: traces,
                        })
                    }
                    Phase::Detecting { .. } => None,
                },
            },
            items: r.items,
            profile_sizes: sizes,
            alerts: r.alerts,
            unstable_reason: r.unstable_reason.map(|u| u.to_string()),
            baseline_created: r.baseline_created,
            held: entry.held.len(),
            inheriting_from: r.inheriting_from.clone().filter(|_| entry.inheriting()),
            inherited_from: lineage,
        }
    }

    /// Publishes the views for the API and the per-workload metrics.
    pub(super) fn publish(&self, now: SystemTime) {
        let now_ms = unix_ms(now);
        let mut views: Vec<WorkloadView> = self
            .workloads
            .values()
            .map(|e| self.view(e, now_ms))
            .collect();
        views.sort_by(|a, b| a.key.cmp(&b.key));
        let m = &self.metrics;
        m.reset_workload_states();
        for v in &views {
            m.workloads_by_state
                .with_label_values(&[v.state.name()])
                .inc();
            let key = v.key.as_str();
            m.learning_progress
                .with_label_values(&[key])
                .set(v.learning.progress);
            m.profile_items
                .with_label_values(&[key])
                .set(v.items as i64);
            if let Some(s) = v.learning.secs_since_new_item {
                m.seconds_since_new_item.with_label_values(&[key]).set(s);
            }
        }
        match self.views.write() {
            Ok(mut guard) => *guard = views,
            Err(poisoned) => *poisoned.into_inner() = views,
        }
    }
}

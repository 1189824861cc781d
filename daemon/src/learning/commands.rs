//! Operator commands: what the API asks of the engine (force a mode, reload an imported
//! baseline, list and decide held items), applied on the engine's task.
//!
//! Apart from the lifecycle because these are the only changes that come from outside the
//! pipeline: each is a [`Command`] sent over a channel with a reply, so the engine's state
//! stays owned by one task.

use std::time::SystemTime;

use habit_profiles::held::{HeldItem, HeldItems};
use habit_profiles::observation::{Dimension, Observation};
use habit_profiles::profile::Provenance;
use habit_profiles::store::{ForcedMode, WorkloadState};
use habit_profiles::workload::WorkloadKey;
use tokio::sync::oneshot;

use super::views::WorkloadView;
use super::{Engine, Entry, Phase, unix_ms};

/// What an operator can ask (`POST /api/v1/workloads/{key}/mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Keep learning (from a stable baseline: learn more, merged in at the next freeze).
    Learn,
    /// Detect now (a baseline frozen before convergence is `partial`).
    Detect,
    /// Forget the baseline and learn from scratch.
    Relearn,
}

/// Requests from the API to the engine's task.
pub enum Command {
    SetMode {
        key: WorkloadKey,
        mode: Mode,
        reply: oneshot::Sender<Result<WorkloadView, String>>,
    },
    /// A baseline was imported into the store: switch to it.
    Reload { key: WorkloadKey },
    /// List the items a rule flagged during learning.
    ListHeld {
        key: WorkloadKey,
        reply: oneshot::Sender<Result<Vec<HeldItem>, String>>,
    },
    /// Approve (learn) or discard a held item.
    DecideHeld {
        key: WorkloadKey,
        dimension: Dimension,
        item: String,
        approve: bool,
        reply: oneshot::Sender<Result<WorkloadView, String>>,
    },
}

impl Engine {
    /// Applies an operator's command.
    pub fn command(&mut self, command: Command) {
        match command {
            Command::SetMode { key, mode, reply } => {
                let result = self.set_mode(&key, mode).map_err(|e| format!("{e:#}"));
                self.publish(SystemTime::now());
                let view = result.and_then(|()| {
                    self.view_of(&key, SystemTime::now())
                        .ok_or_else(|| format!("unknown workload {key}"))
                });
                let _ = reply.send(view);
            }
            Command::ListHeld { key, reply } => {
                let items = self
                    .workloads
                    .get(&key)
                    .map(|e| e.held.iter().cloned().collect())
                    .ok_or_else(|| format!("unknown workload {key}"));
                let _ = reply.send(items);
            }
            Command::DecideHeld {
                key,
                dimension,
                item,
                approve,
                reply,
            } => {
                let result = self
                    .decide_held(&key, dimension, &item, approve)
                    .map_err(|e| format!("{e:#}"));
                self.publish(SystemTime::now());
                let view = result.and_then(|()| {
                    self.view_of(&key, SystemTime::now())
                        .ok_or_else(|| format!("unknown workload {key}"))
                });
                let _ = reply.send(view);
            }
            Command::Reload { key } => {
                match self.store.workloads().get(&key) {
                    Ok(Some(record)) => match self.load(record) {
                        Ok(entry) => {
                            self.workloads.insert(key, entry);
                        }
                        Err(e) => tracing::error!(message = "Reload failed.", workload = %key, %e),
                    },
                    Ok(None) => {}
                    Err(e) => tracing::error!(message = "Reload failed.", workload = %key, %e),
                }
                self.publish(SystemTime::now());
            }
        }
    }

    /// An operator's decision on a held item: approve learns it (while learning), discard
    /// forgets it.
    fn decide_held(
        &mut self,
        key: &WorkloadKey,
        dimension: Dimension,
        item: &str,
        approve: bool,
    ) -> anyhow::Result<()> {
        let now = unix_ms(SystemTime::now());
        let node = self.node.clone();
        let entry = self
            .workloads
            .get_mut(key)
            .ok_or_else(|| anyhow::anyhow!("unknown workload {key}"))?;
        if approve && !matches!(entry.phase, Phase::Learning { .. }) {
            anyhow::bail!(
                "{key} is not learning: approving needs `mode learn` (or relearn) first, so that \
                 the item is learned into a new baseline"
            );
        }
        let held = entry
            .held
            .take(dimension, item)
            .ok_or_else(|| anyhow::anyhow!("no held item {} {item} for {key}", dimension.name()))?;
        if let Phase::Learning { profile, .. } = &mut entry.phase
            && approve
        {
            let provenance = Provenance::new(node, held.containers.first().map(String::as_str));
            let _ = profile.observe(&Observation::new(dimension, item), now, &provenance);
        }
        tracing::info!(
            message = if approve { "Held item approved: learned." } else { "Held item discarded." },
            workload = %key,
            dimension = dimension.name(),
            item
        );
        entry.dirty = true;
        self.store.held().put(key, &entry.held)?;
        Ok(())
    }

    fn set_mode(&mut self, key: &WorkloadKey, mode: Mode) -> anyhow::Result<()> {
        let now = unix_ms(SystemTime::now());
        match mode {
            Mode::Relearn => {
                let record = self.store.relearn(key, now)?;
                self.store.held().put(key, &HeldItems::default())?;
                let profile = self.new_profile(key, now);
                self.workloads
                    .insert(key.clone(), Entry::learning(record, profile));
                tracing::info!(message = "Relearning.", workload = %key);
            }
            Mode::Learn => {
                let profile = self.new_profile(key, now);
                let entry = self
                    .workloads
                    .get_mut(key)
                    .ok_or_else(|| anyhow::anyhow!("unknown workload {key}"))?;
                entry.record.mode_forced = Some(ForcedMode::Learn);
                if let Phase::Detecting { baseline, .. } = &entry.phase {
                    entry.phase = Phase::Learning {
                        profile,
                        carried: Some(baseline.clone()),
                    };
                    entry.record.state = WorkloadState::Learning;
                    entry.record.learning_started_at = now;
                }
                entry.dirty = true;
                self.checkpoint(now);
            }
            Mode::Detect => {
                let entry = self
                    .workloads
                    .get_mut(key)
                    .ok_or_else(|| anyhow::anyhow!("unknown workload {key}"))?;
                if matches!(entry.phase, Phase::Learning { .. }) {
                    entry.record.mode_forced = Some(ForcedMode::Detect);
                    self.advance(key, now)?;
                }
            }
        }
        Ok(())
    }
}

//! Operator commands: what the API asks of the engine (force a mode, reload an imported
//! baseline, list and decide held items), applied on the engine's task, and the typed
//! [`CommandError`] each can fail with (the API's HTTP status follows its variant).
//!
//! Apart from the lifecycle because these are the only changes that come from outside the
//! pipeline: each is a [`Command`] sent over a channel with a reply, so the engine's state
//! stays owned by one task.

use std::time::SystemTime;

use habit_profiles::api::{Mode, WorkloadView};
use habit_profiles::error::ProfileError;
use habit_profiles::held::{HeldItem, HeldItems};
use habit_profiles::observation::Dimension;
use habit_profiles::profile::Provenance;
use habit_profiles::store::{ForcedMode, WorkloadState};
use habit_profiles::workload::WorkloadKey;
use tokio::sync::oneshot;

use super::{Engine, Entry, Phase, unix_ms};

/// Why an operator's command was refused or failed. Nothing changed unless it is `Store`
/// (which may leave a change in memory that the next checkpoint retries).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such workload: habitd has not seen it (or not since its store was emptied).
    #[error("unknown workload {0}")]
    UnknownWorkload(WorkloadKey),
    /// The workload holds no such item (decided already, or never held).
    #[error("no held item {} {item} for {key}", dimension.name())]
    NoHeldItem {
        key: WorkloadKey,
        dimension: Dimension,
        item: String,
    },
    /// Approving a held item learns it, which needs a learning workload.
    #[error(
        "{0} is not learning: approving needs `mode learn` (or relearn) first, so that the item \
         is learned into a new baseline"
    )]
    NotLearning(WorkloadKey),
    /// The baseline cannot be built: the baseline being extended (`mode learn` on a stable
    /// workload, perhaps imported) does not merge with what was learned since.
    #[error("the baseline of {key} cannot be frozen")]
    InvalidBaseline {
        key: WorkloadKey,
        #[source]
        source: ProfileError,
    },
    /// The store failed (I/O, or a value that does not encode).
    #[error("the store failed")]
    Store(#[source] ProfileError),
}

impl CommandError {
    /// Sorts an error of freezing `key`'s baseline: the store's own failures, or a baseline
    /// that is wrong.
    pub fn freezing(key: &WorkloadKey, error: ProfileError) -> CommandError {
        match error {
            ProfileError::Store { .. }
            | ProfileError::Encode { .. }
            | ProfileError::Decode { .. }
            | ProfileError::StoredBaseline { .. } => CommandError::Store(error),
            source => CommandError::InvalidBaseline {
                key: key.clone(),
                source,
            },
        }
    }
}

/// Requests from the API to the engine's task.
pub enum Command {
    SetMode {
        key: WorkloadKey,
        mode: Mode,
        reply: oneshot::Sender<Result<WorkloadView, CommandError>>,
    },
    /// Import a baseline file (validated; nothing changes on error) and switch to it. On the
    /// engine's task, so that no checkpoint of the workload's learning can land between the
    /// store's write and the switch and overwrite the imported baseline.
    Import {
        key: WorkloadKey,
        file: Vec<u8>,
        reply: oneshot::Sender<Result<habit_profiles::baseline::Baseline, ProfileError>>,
    },
    /// List the items a rule flagged during learning.
    ListHeld {
        key: WorkloadKey,
        reply: oneshot::Sender<Result<Vec<HeldItem>, CommandError>>,
    },
    /// Approve (learn) or discard a held item.
    DecideHeld {
        key: WorkloadKey,
        dimension: Dimension,
        item: String,
        approve: bool,
        reply: oneshot::Sender<Result<WorkloadView, CommandError>>,
    },
}

impl Engine {
    /// Applies an operator's command.
    pub fn command(&mut self, command: Command) {
        match command {
            Command::SetMode { key, mode, reply } => {
                let result = self.set_mode(&key, mode);
                self.publish(SystemTime::now());
                let view = result.and_then(|()| self.view_after(&key));
                let _ = reply.send(view);
            }
            Command::ListHeld { key, reply } => {
                let items = self
                    .workloads
                    .get(&key)
                    .map(|e| e.held.iter().cloned().collect())
                    .ok_or(CommandError::UnknownWorkload(key));
                let _ = reply.send(items);
            }
            Command::DecideHeld {
                key,
                dimension,
                item,
                approve,
                reply,
            } => {
                let result = self.decide_held(&key, dimension, &item, approve);
                self.publish(SystemTime::now());
                let view = result.and_then(|()| self.view_after(&key));
                let _ = reply.send(view);
            }
            Command::Import { key, file, reply } => {
                let now = unix_ms(SystemTime::now());
                // Every model is checked too (shapes, sizes), before anything is written.
                let result = self.store.import_baseline_checked(&key, &file, now, |b| {
                    habit_models::artifact::load_models(b).map(|_| ())
                });
                if result.is_ok() {
                    self.reload(key);
                }
                let _ = reply.send(result);
            }
        }
    }

    /// Replaces `key`'s state in memory with what the store holds (after an import).
    fn reload(&mut self, key: WorkloadKey) {
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

    /// An operator's decision on a held item: approve learns it (while learning), discard
    /// forgets it.
    fn decide_held(
        &mut self,
        key: &WorkloadKey,
        dimension: Dimension,
        item: &str,
        approve: bool,
    ) -> Result<(), CommandError> {
        let now = unix_ms(SystemTime::now());
        let node = self.node.clone();
        let entry = self
            .workloads
            .get_mut(key)
            .ok_or_else(|| CommandError::UnknownWorkload(key.clone()))?;
        if approve && !matches!(entry.phase, Phase::Learning { .. }) {
            return Err(CommandError::NotLearning(key.clone()));
        }
        let held = entry
            .held
            .take(dimension, item)
            .ok_or_else(|| CommandError::NoHeldItem {
                key: key.clone(),
                dimension,
                item: item.to_owned(),
            })?;
        if let Phase::Learning { profile, .. } = &mut entry.phase
            && approve
        {
            let provenance = Provenance::new(node, held.containers.first().map(String::as_str));
            let _ = profile.learn_held(&held, now, &provenance);
        }
        tracing::info!(
            message = if approve { "Held item approved: learned." } else { "Held item discarded." },
            workload = %key,
            dimension = dimension.name(),
            item
        );
        entry.dirty = true;
        self.store
            .held()
            .put(key, &entry.held)
            .map_err(CommandError::Store)
    }

    /// The workload's view once a command is applied.
    fn view_after(&self, key: &WorkloadKey) -> Result<WorkloadView, CommandError> {
        self.view_of(key, SystemTime::now())
            .ok_or_else(|| CommandError::UnknownWorkload(key.clone()))
    }

    fn set_mode(&mut self, key: &WorkloadKey, mode: Mode) -> Result<(), CommandError> {
        let now = unix_ms(SystemTime::now());
        match mode {
            Mode::Relearn => {
                let record = self.store.relearn(key, now).map_err(CommandError::Store)?;
                self.store
                    .held()
                    .put(key, &HeldItems::default())
                    .map_err(CommandError::Store)?;
                let profile = self.new_profile(key, now);
                self.workloads
                    .insert(key.clone(), Entry::learning(record, profile));
                tracing::info!(message = "Relearning.", workload = %key);
            }
            Mode::Learn => {
                let profile = self.new_profile(key, now);
                // The baseline extended, whole (its models pool with what is learned now).
                let carried = match self.workloads.get(key).map(|e| &e.phase) {
                    Some(Phase::Detecting { baseline, .. }) => Some(
                        self.stored_baseline(key, baseline)
                            .map_err(CommandError::Store)?,
                    ),
                    _ => None,
                };
                let entry = self
                    .workloads
                    .get_mut(key)
                    .ok_or_else(|| CommandError::UnknownWorkload(key.clone()))?;
                entry.record.mode_forced = Some(ForcedMode::Learn);
                if let Some(carried) = carried {
                    entry.phase = Phase::Learning {
                        profile,
                        carried: Some(carried),
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
                    .ok_or_else(|| CommandError::UnknownWorkload(key.clone()))?;
                if matches!(entry.phase, Phase::Learning { .. }) {
                    entry.record.mode_forced = Some(ForcedMode::Detect);
                    self.advance(key, now)
                        .map_err(|e| CommandError::freezing(key, e))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use habit_profiles::baseline::Baseline;
    use habit_profiles::observation::Observation;
    use habit_profiles::profile::{Profile, ProfileConfig, Provenance};
    use habit_profiles::store::{ProfileStore, WorkloadState};
    use habit_profiles::workload::WorkloadKey;
    use tokio::sync::oneshot;

    use super::Command;
    use crate::config::Learning;
    use crate::learning::{Engine, unix_ms};
    use crate::metrics::Metrics;

    /// A baseline imported while its workload is learning stays imported: the learning's next
    /// checkpoint does not write the old profile back over it.
    #[test]
    fn an_import_during_learning_survives_the_next_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ProfileStore::open(dir.path().join("db")).unwrap());
        let metrics = Arc::new(Metrics::new().unwrap());
        let config = Learning {
            checkpoint: Duration::from_secs(1),
            ..Learning::default()
        };
        let mut engine = Engine::open(store.clone(), config, "node-a".into(), metrics).unwrap();
        let key = WorkloadKey::from_raw("docker.io/library/redis:7");
        let start = SystemTime::now();
        engine.observe(
            &key,
            Some("c1"),
            &[Observation::exec("/usr/bin/redis-server")],
            unix_ms(start),
            &mut Vec::new(),
        );
        assert_eq!(engine.state(&key), WorkloadState::Learning);

        let mut profile = Profile::new(key.clone(), "node-b", 0, ProfileConfig::default());
        let here = Provenance::new("node-b", Some("c9"));
        let _ = profile.observe(&Observation::exec("/usr/bin/redis-server"), 1_000, &here);
        let file = Baseline::freeze(&profile, 600_000, false)
            .to_json_vec()
            .unwrap();
        let (reply, mut answer) = oneshot::channel();
        engine.command(Command::Import {
            key: key.clone(),
            file,
            reply,
        });
        assert!(answer.try_recv().unwrap().is_ok());

        // Well past a checkpoint (and more learning of the same workload).
        engine.observe(
            &key,
            Some("c1"),
            &[Observation::exec("/bin/sh")],
            unix_ms(start + Duration::from_secs(5)),
            &mut Vec::new(),
        );
        engine.tick(start + Duration::from_secs(5));
        assert_eq!(engine.state(&key), WorkloadState::Stable);
        let record = store.workloads().get(&key).unwrap().unwrap();
        assert_eq!(record.state, WorkloadState::Stable);
        assert!(store.baselines().get(&key).unwrap().is_some());
        assert!(store.profiles().get(&key).unwrap().is_none());
    }
}

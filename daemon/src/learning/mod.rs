//! The learning lifecycle and detection: one [`Engine`] owns every workload's profile or
//! baseline, decides when learning has converged, persists progress in sled, and scores
//! observations of workloads in detection.
//!
//! It runs on the pipeline's task (no locks per event). The HTTP API talks to it through
//! [`Command`]s and reads the [`Views`] snapshot it publishes.
//!
//! This file holds the engine's state and its lifecycle (open, new workloads, the periodic
//! tick); each other job of the engine is one module, so that each can be read alone:
//!
//! - `sequence`: what learning collects for the syscall-sequence model, and the kernel's
//!   sequence mode of a workload;
//! - `hold`: items a rule flagged during learning (never learn an attack);
//! - `inherit`: rollout inheritance (a new tag starts from its predecessor's baseline, learns
//!   what changed, and the items it adds name it);
//! - `origin`: what the container runtime says about a workload's containers (image digest
//!   and id, pod namespace and labels), recorded for the baseline's metadata;
//! - `score`: observations learned or scored, findings, the detection phase of a baseline;
//! - `checkpoint`: convergence, freezing a baseline, saving progress to sled;
//! - `commands`: what an operator asks through the API, and its typed errors;
//! - `views`: the snapshot the API serves and the per-workload metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use habit_models::novelty::Scratch;
use habit_models::rate::{FeatureVector, RateModel};
use habit_models::sequence::SequenceModel;
use habit_profiles::baseline::Baseline;
use habit_profiles::held::HeldItems;
use habit_profiles::profile::{Profile, ProfileConfig, UnixMillis};
use habit_profiles::store::{ProfileStore, WorkloadRecord, WorkloadState};
use habit_profiles::workload::WorkloadKey;

use crate::config::Learning;
use crate::metrics::Metrics;

mod checkpoint;
mod commands;
pub mod delivered;
mod hold;
mod inherit;
mod origin;
mod paused;
mod score;
mod sequence;
mod views;

pub use self::commands::{Command, CommandError};
pub use self::hold::Flag;
pub use self::score::Finding;
pub use self::sequence::SequenceMode;
pub use self::views::Views;

use self::checkpoint::ModelLearningData;
use self::score::detecting;
use self::sequence::SequenceLearning;

enum Phase {
    /// Building a profile. `carried` is a baseline being extended (`mode learn` on a stable
    /// workload), merged in at the next freeze.
    Learning {
        profile: Box<Profile>,
        carried: Option<Arc<Baseline>>,
    },
    /// Scored against a baseline (and its rate model, when learning had enough intervals).
    /// `baseline` is without its `models` (see `score::detecting`): the store has it whole.
    Detecting {
        baseline: Arc<Baseline>,
        scorer: Box<habit_models::novelty::NoveltyScorer>,
        rate: Option<Box<RateModel>>,
        sequence: Option<Arc<SequenceModel>>,
    },
}

struct Entry {
    record: WorkloadRecord,
    phase: Phase,
    /// Items a rule flagged during learning.
    held: HeldItems,
    /// Interval feature vectors seen while learning: the rate model is fitted on them.
    /// Checkpointed with the profile, like `sequence`.
    intervals: Vec<FeatureVector>,
    /// Syscall sequences seen while learning: the sequence model is fitted on them.
    sequence: SequenceLearning,
    /// Learned something since the last checkpoint.
    dirty: bool,
    /// Containers whose description was recorded in the profile (see `origin`): each is
    /// recorded once. In memory only; recording again after a restart changes nothing.
    described: std::collections::HashSet<String>,
    /// When (wall clock) this habitd first learned an event of the workload — not a counter
    /// — or resumed it from the store. An inheriting workload is quiet only from then on: the
    /// counters can make a new version known seconds before its events (its start-up, what
    /// it changed) come out of a lagging ring buffer, and nothing can be judged unchanged
    /// before they are seen.
    events_since: Option<UnixMillis>,
}

impl Entry {
    /// Learning only what changed from a predecessor's baseline (rollout inheritance): the
    /// learning windows are shorter and convergence looks only at what the predecessor did
    /// not know. Stored in the record (`inheriting_from`), so it survives a restart.
    fn inheriting(&self) -> bool {
        self.record.inheriting_from.is_some()
            && matches!(
                self.phase,
                Phase::Learning {
                    carried: Some(_),
                    ..
                }
            )
    }
}

impl Entry {
    /// A workload that starts learning from nothing at `record.learning_started_at`.
    fn learning(record: WorkloadRecord, profile: Box<Profile>) -> Entry {
        Entry {
            record,
            phase: Phase::Learning {
                profile,
                carried: None,
            },
            held: HeldItems::default(),
            intervals: Vec::new(),
            sequence: SequenceLearning::default(),
            dirty: true,
            described: Default::default(),
            events_since: None,
        }
    }
}

/// Every workload's learning or detection state.
pub struct Engine {
    store: Arc<ProfileStore>,
    config: Learning,
    /// This node's name, recorded as provenance.
    node: String,
    profile_config: ProfileConfig,
    workloads: HashMap<WorkloadKey, Entry>,
    scratch: Scratch,
    metrics: Arc<Metrics>,
    views: Views,
    last_checkpoint: SystemTime,
    /// Set while the store cannot be written (see `paused`).
    paused: Option<paused::Paused>,
    /// Workloads that became unstable since the last [`Engine::take_unstable`], with why.
    became_unstable: Vec<(WorkloadKey, String)>,
    /// A checkpoint or a freeze freed large encodings since the last tick (see `heap`).
    freed_encodings: bool,
}

pub fn unix_ms(t: SystemTime) -> UnixMillis {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Engine {
    /// Opens the engine over `store`, resuming every workload it holds: learning ones continue
    /// their profile, stable ones detect at once.
    pub fn open(
        store: Arc<ProfileStore>,
        config: Learning,
        node: String,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Engine> {
        let profile_config = ProfileConfig {
            interval_ms: config.interval.as_millis().max(1) as u64,
            ..ProfileConfig::default()
        };
        let mut engine = Engine {
            store,
            config,
            node,
            profile_config,
            workloads: HashMap::new(),
            scratch: Scratch::default(),
            metrics,
            views: Arc::default(),
            last_checkpoint: SystemTime::now(),
            paused: None,
            became_unstable: Vec::new(),
            freed_encodings: false,
        };
        for record in engine.store.workloads().list()? {
            let key = record.key.clone();
            match engine.load(record) {
                Ok(entry) => {
                    engine.workloads.insert(key, entry);
                }
                Err(e) => tracing::error!(
                    message = "Cannot resume a workload; it is left in the store untouched.",
                    workload = %key,
                    %e
                ),
            }
        }
        tracing::info!(
            message = "Workloads resumed from the store.",
            count = engine.workloads.len()
        );
        engine.publish(SystemTime::now());
        Ok(engine)
    }

    fn new_profile(&self, key: &WorkloadKey, started_at: UnixMillis) -> Box<Profile> {
        Box::new(Profile::new(
            key.clone(),
            self.node.clone(),
            started_at,
            self.profile_config,
        ))
    }

    /// Rebuilds a workload's in-memory state from its stored record. A learning workload
    /// gets back the baseline it extends: its predecessor's, when it was inheriting, or its
    /// own, when an operator forced `mode learn` on it.
    fn load(&self, mut record: WorkloadRecord) -> anyhow::Result<Entry> {
        let key = record.key.clone();
        let was_inheriting = record.inheriting_from.is_some();
        let stored = match record.state {
            WorkloadState::Learning => None,
            WorkloadState::Stable | WorkloadState::Unstable => self.store.baselines().get(&key)?,
        };
        let phase = match stored {
            Some(b) => detecting(b),
            // Learning, or unstable while still learning (a limit was hit): keep the profile.
            None => Phase::Learning {
                profile: match self.store.profiles().get(&key)? {
                    Some(p) => Box::new(p),
                    None => self.new_profile(&key, record.learning_started_at),
                },
                carried: self.carried_on_resume(&mut record),
            },
        };
        let held = self.store.held().get(&key)?;
        let learning = matches!(phase, Phase::Learning { .. });
        let mut entry = Entry {
            phase,
            held,
            intervals: Vec::new(),
            sequence: SequenceLearning::default(),
            // A record that stopped inheriting (its predecessor's baseline is gone) is saved so.
            dirty: was_inheriting && record.inheriting_from.is_none(),
            record,
            described: Default::default(),
            events_since: Some(unix_ms(SystemTime::now())),
        };
        if learning && let Some(bytes) = self.store.model_learning().get(&key)? {
            ModelLearningData::restore(&mut entry, &bytes);
        }
        Ok(entry)
    }

    /// Starts learning a workload seen for the first time.
    fn ensure(&mut self, key: &WorkloadKey, now: UnixMillis) {
        if self.workloads.contains_key(key) {
            return;
        }
        let mut entry = Entry::learning(
            WorkloadRecord::new(key.clone(), now),
            self.new_profile(key, now),
        );
        match self.predecessor(key) {
            Some((from, baseline)) => {
                tracing::info!(
                    message = "New version of a learned repository: learning what changed.",
                    workload = %key,
                    inherits = %from
                );
                if let Phase::Learning { carried, .. } = &mut entry.phase {
                    *carried = Some(Arc::new(inherit::inherited(&baseline, &from, key)));
                }
                entry.record.inheriting_from = Some(from);
            }
            None => tracing::info!(message = "New workload: learning.", workload = %key),
        }
        self.workloads.insert(key.clone(), entry);
    }

    /// The state of a workload (`Learning` for one not seen yet: it will start learning).
    pub fn state(&self, key: &WorkloadKey) -> WorkloadState {
        self.workloads
            .get(key)
            .map_or(WorkloadState::Learning, |e| match e.phase {
                Phase::Learning { .. } => WorkloadState::Learning,
                Phase::Detecting { .. } => e.record.state,
            })
    }

    /// Periodic work: convergence decisions, checkpoints, published views and metrics.
    pub fn tick(&mut self, now: SystemTime) {
        let now_ms = unix_ms(now);
        self.retry_store(now);
        // Nothing is frozen while the store cannot be written: learning goes on in memory.
        let keys: Vec<WorkloadKey> = if self.store_writable(now) {
            self.workloads.keys().cloned().collect()
        } else {
            Vec::new()
        };
        for key in keys {
            if let Err(e) = self.advance(&key, now_ms) {
                tracing::error!(message = "Learning step failed.", workload = %key, %e);
                if paused::is_store_failure(&e) {
                    self.store_failed(&e, now);
                    break;
                }
            }
        }
        let due = now
            .duration_since(self.last_checkpoint)
            .is_ok_and(|d| d >= self.config.checkpoint);
        if due {
            self.checkpoint(now_ms);
            self.last_checkpoint = now;
        }
        if std::mem::take(&mut self.freed_encodings) {
            crate::heap::release_freed();
        }
        self.publish(now);
    }

    /// The workloads that became unstable since the last call (a limit hit while learning),
    /// with the reason: each is said once, as an alert by the caller.
    pub fn take_unstable(&mut self) -> Vec<(WorkloadKey, String)> {
        std::mem::take(&mut self.became_unstable)
    }
}

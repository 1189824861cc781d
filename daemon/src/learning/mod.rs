//! The learning lifecycle and detection: one [`Engine`] owns every workload's profile or
//! baseline, decides when learning has converged, persists progress in sled, and scores
//! observations of workloads in detection.
//!
//! It runs on the pipeline's task (no locks per event). The HTTP API talks to it through
//! [`Command`]s and reads the [`WorkloadView`] snapshot it publishes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use habit_models::calibrate::calibrate;
use habit_models::novelty::{NoveltyScorer, Scratch};
use habit_models::priority::Priority;
use habit_models::rate::{FeatureVector, RateConfig, RateModel, RateScore};
use habit_models::sequence::{self, SequenceConfig, SequenceModel};
use habit_profiles::baseline::Baseline;
use habit_profiles::held::{HabitCriterion, HeldItem, HeldItems, HoldOutcome};
use habit_profiles::observation::{Dimension, Observation};
use habit_profiles::profile::{Observed, Profile, ProfileConfig, Provenance, UnixMillis};
use habit_profiles::store::{ForcedMode, ProfileStore, WorkloadRecord, WorkloadState};
use habit_profiles::workload::WorkloadKey;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// When learning ends, and how detection is calibrated.
#[derive(Debug, Clone)]
pub struct LearningConfig {
    /// Learn at least this long.
    pub min: Duration,
    /// Stable once nothing new was learned for this long (after `min`).
    pub stable: Duration,
    /// Stop learning after this long even if not converged (the baseline is `partial`).
    pub max: Duration,
    /// Learning interval: the unit of rarity and calibration (and of kernel de-duplication).
    pub interval: Duration,
    /// Target false-alarm rate per interval and dimension of the calibration.
    pub false_alarm_rate: f64,
    /// How often learning progress is written to sled (bounds what `kill -9` loses).
    pub checkpoint_every: Duration,
    /// When an item a rule flagged during learning is habitual enough to be learned.
    pub habit: HabitCriterion,
    /// This node's name, recorded as provenance.
    pub node: String,
}

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

/// A static rule that flagged an event, as learning needs it.
#[derive(Debug, Clone, Copy)]
pub struct Flag<'a> {
    pub rule: &'a str,
    /// Tagged `habitd.never_learn`: only an operator can approve what it flagged.
    pub never_learn: bool,
}

/// A novel observation of a workload in detection: what an anomaly alert reports.
#[derive(Debug, Clone)]
pub struct Finding {
    pub workload: WorkloadKey,
    pub baseline_state: WorkloadState,
    pub dimension: Dimension,
    pub item: String,
    pub score: f64,
    pub priority: Priority,
    /// The score reaches the dimension's calibrated threshold: novel enough to alert on its
    /// own. (Fused with a rule hit, any novelty counts.)
    pub alert: bool,
}

/// A workload as the API and `habitctl workloads` show it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadView {
    pub key: WorkloadKey,
    pub state: WorkloadState,
    pub partial: bool,
    pub mode_forced: Option<ForcedMode>,
    pub learning: LearningView,
    pub items: u64,
    pub profile_sizes: std::collections::BTreeMap<&'static str, usize>,
    pub alerts: u64,
    pub unstable_reason: Option<String>,
    pub baseline_created: Option<UnixMillis>,
    /// Items a rule flagged during learning, waiting to prove habitual or for an operator.
    pub held: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct LearningView {
    pub started_at: UnixMillis,
    pub elapsed_secs: f64,
    pub last_new_item_at: Option<UnixMillis>,
    pub secs_since_new_item: Option<f64>,
    /// 0..1: how far the workload is towards stability (1 once stable).
    pub progress: f64,
}

/// The published snapshot of every workload, for the API.
pub type Views = Arc<RwLock<Vec<WorkloadView>>>;

enum Phase {
    /// Building a profile. `carried` is a baseline being extended (`mode learn` on a stable
    /// workload), merged in at the next freeze.
    Learning {
        profile: Box<Profile>,
        carried: Option<Arc<Baseline>>,
    },
    /// Scored against a baseline (and its rate model, when learning had enough intervals).
    Detecting {
        baseline: Arc<Baseline>,
        scorer: Box<NoveltyScorer>,
        rate: Option<Box<RateModel>>,
        sequence: Option<Arc<SequenceModel>>,
    },
}

/// What a workload's syscall sequences are used for right now (its kernel mode).
#[derive(Clone)]
pub enum SequenceMode {
    /// Not followed (unstable, or in detection without a sequence model).
    Off,
    /// Counted; `samples` more new threads may be traced whole for calibration.
    Learn { samples: usize },
    /// Scored against this model.
    Detect(Arc<SequenceModel>),
}

/// Most calibration traces kept per learning workload (see [`SequenceLearning`]).
const MAX_SEQUENCE_TRACES: usize = 64;
/// The name of the sequence model in a baseline's `models`.
const SEQUENCE_MODEL: &str = "sequence";

/// What learning collects for the sequence model: 6-gram counts read from the kernel, and
/// whole traces of a few threads that started during learning (the model's calibration). Kept
/// in memory like the rate intervals: a restart during learning starts them again.
#[derive(Default)]
struct SequenceLearning {
    grams: std::collections::BTreeMap<u64, u64>,
    traces: Vec<Vec<u32>>,
    /// Traces still growing, by thread id.
    open: HashMap<u32, Vec<u32>>,
}

impl SequenceLearning {
    fn room(&self) -> usize {
        MAX_SEQUENCE_TRACES.saturating_sub(self.traces.len() + self.open.len())
    }

    /// One gram of a sampled thread's trace (`nsys` counts from 1 at the thread's start). A
    /// gap (a lost record) discards the trace; `end` closes it.
    fn trace_gram(&mut self, tid: u32, nsys: u64, gram: u64, end: bool) {
        if end {
            if let Some(trace) = self.open.remove(&tid)
                && !trace.is_empty()
                && self.traces.len() < MAX_SEQUENCE_TRACES
            {
                self.traces.push(trace);
            }
            return;
        }
        if nsys == 1 && self.room() == 0 && !self.open.contains_key(&tid) {
            return;
        }
        let trace = self.open.entry(tid).or_default();
        if nsys != trace.len() as u64 + 1 {
            self.open.remove(&tid);
            return;
        }
        if let Some(nr) = sequence::gram::lane_nr(gram) {
            trace.push(nr);
        }
    }

    /// Learns the model: counts (plus a carried model's), calibrated on the traces.
    fn fit(
        &mut self,
        carried: Option<&SequenceModel>,
    ) -> Result<SequenceModel, sequence::SequenceError> {
        let mut grams = std::mem::take(&mut self.grams);
        if let Some(previous) = carried {
            for (key, count) in previous.known_grams() {
                *grams.entry(key).or_insert(0) += count;
            }
        }
        let mut traces = std::mem::take(&mut self.traces);
        traces.extend(self.open.drain().map(|(_, t)| t).filter(|t| !t.is_empty()));
        let syscalls = grams.values().sum();
        let mut model = SequenceModel::from_counts(
            SequenceConfig::default(),
            grams,
            traces.len() as u64,
            syscalls,
        )?;
        model.calibrate_on_traces(&traces)?;
        Ok(model)
    }
}

/// Most learning intervals kept for fitting the rate model (8 h of 10-s intervals).
const MAX_RATE_INTERVALS: usize = 2880;
/// The name of the rate model in a baseline's `models`.
const RATE_MODEL: &str = "rate";

struct Entry {
    record: WorkloadRecord,
    phase: Phase,
    /// Items a rule flagged during learning.
    held: HeldItems,
    /// Interval feature vectors seen while learning: the rate model is fitted on them.
    intervals: Vec<FeatureVector>,
    /// Syscall sequences seen while learning: the sequence model is fitted on them.
    sequence: SequenceLearning,
    /// Learned something since the last checkpoint.
    dirty: bool,
}

/// Every workload's learning or detection state.
pub struct Engine {
    store: Arc<ProfileStore>,
    config: LearningConfig,
    profile_config: ProfileConfig,
    workloads: HashMap<WorkloadKey, Entry>,
    scratch: Scratch,
    metrics: Arc<Metrics>,
    views: Views,
    last_checkpoint: SystemTime,
}

pub fn unix_ms(t: SystemTime) -> UnixMillis {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

impl Engine {
    /// Opens the engine over `store`, resuming every workload it holds: learning ones continue
    /// their profile, stable ones detect at once.
    pub fn open(
        store: Arc<ProfileStore>,
        config: LearningConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Engine> {
        let profile_config = ProfileConfig {
            interval_ms: config.interval.as_millis().max(1) as u64,
            ..ProfileConfig::default()
        };
        let mut engine = Engine {
            store,
            config,
            profile_config,
            workloads: HashMap::new(),
            scratch: Scratch::default(),
            metrics,
            views: Arc::default(),
            last_checkpoint: SystemTime::now(),
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

    /// The snapshot the API reads.
    pub fn views(&self) -> Views {
        self.views.clone()
    }

    fn new_profile(&self, key: &WorkloadKey, started_at: UnixMillis) -> Box<Profile> {
        Box::new(Profile::new(
            key.clone(),
            self.config.node.clone(),
            started_at,
            self.profile_config,
        ))
    }

    /// Rebuilds a workload's in-memory state from its stored record.
    fn load(&self, record: WorkloadRecord) -> anyhow::Result<Entry> {
        let key = record.key.clone();
        let phase = match record.state {
            WorkloadState::Learning => Phase::Learning {
                profile: match self.store.profiles().get(&key)? {
                    Some(p) => Box::new(p),
                    None => self.new_profile(&key, record.learning_started_at),
                },
                carried: None,
            },
            WorkloadState::Stable | WorkloadState::Unstable => {
                match self.store.baselines().get(&key)? {
                    Some(b) => detecting(b),
                    // Unstable while still learning (a limit was hit): keep the profile.
                    None => Phase::Learning {
                        profile: match self.store.profiles().get(&key)? {
                            Some(p) => Box::new(p),
                            None => self.new_profile(&key, record.learning_started_at),
                        },
                        carried: None,
                    },
                }
            }
        };
        let held = self.store.held().get(&key)?;
        Ok(Entry {
            record,
            phase,
            held,
            intervals: Vec::new(),
            sequence: SequenceLearning::default(),
            dirty: false,
        })
    }

    /// Starts learning a workload seen for the first time.
    fn ensure(&mut self, key: &WorkloadKey, now: UnixMillis) {
        if self.workloads.contains_key(key) {
            return;
        }
        tracing::info!(message = "New workload: learning.", workload = %key);
        let entry = Entry {
            record: WorkloadRecord::new(key.clone(), now),
            phase: Phase::Learning {
                profile: self.new_profile(key, now),
                carried: None,
            },
            held: HeldItems::default(),
            intervals: Vec::new(),
            sequence: SequenceLearning::default(),
            dirty: true,
        };
        self.workloads.insert(key.clone(), entry);
    }

    /// One counters interval of a workload: kept for the rate model while learning, scored
    /// against it in detection. Returns the score of an anomalous interval.
    pub fn observe_interval(
        &mut self,
        key: &WorkloadKey,
        features: FeatureVector,
        now: UnixMillis,
    ) -> Option<RateScore> {
        self.ensure(key, now);
        let entry = self.workloads.get_mut(key)?;
        match &entry.phase {
            Phase::Learning { .. } => {
                if entry.intervals.len() < MAX_RATE_INTERVALS {
                    entry.intervals.push(features);
                }
                None
            }
            Phase::Detecting { rate, .. } => {
                if entry.record.state != WorkloadState::Stable {
                    return None;
                }
                let score = rate.as_ref()?.score(&features);
                tracing::debug!(
                    message = "Interval rates scored.",
                    workload = %key,
                    statistic = score.statistic,
                    threshold = score.threshold,
                    anomalous = score.anomalous
                );
                score.anomalous.then_some(score)
            }
        }
    }

    /// What the kernel should do with a workload's syscall sequences.
    pub fn sequence_mode(&self, key: &WorkloadKey) -> SequenceMode {
        let Some(entry) = self.workloads.get(key) else {
            return SequenceMode::Off;
        };
        match &entry.phase {
            Phase::Learning { .. } => SequenceMode::Learn {
                samples: entry.sequence.room(),
            },
            Phase::Detecting {
                sequence: Some(model),
                ..
            } if entry.record.state == WorkloadState::Stable => SequenceMode::Detect(model.clone()),
            Phase::Detecting { .. } => SequenceMode::Off,
        }
    }

    /// Adds 6-gram counts read from the kernel to a learning workload.
    pub fn learn_grams(&mut self, key: &WorkloadKey, counts: &[(u64, u64)]) {
        if let Some(entry) = self.learning_entry(key) {
            for &(gram, count) in counts {
                let total = entry.sequence.grams.entry(gram).or_insert(0);
                *total = total.saturating_add(count);
            }
        }
    }

    /// One gram of a sampled thread's trace (see [`SequenceLearning::trace_gram`]).
    pub fn trace_gram(&mut self, key: &WorkloadKey, tid: u32, nsys: u64, gram: u64, end: bool) {
        if let Some(entry) = self.learning_entry(key) {
            entry.sequence.trace_gram(tid, nsys, gram, end);
        }
    }

    fn learning_entry(&mut self, key: &WorkloadKey) -> Option<&mut Entry> {
        self.workloads
            .get_mut(key)
            .filter(|e| matches!(e.phase, Phase::Learning { .. }))
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

    /// Never learn an attack: the observations of an event a rule flagged while the workload
    /// learns are held, not learned, unless they are known already or prove habitual.
    pub fn hold(
        &mut self,
        key: &WorkloadKey,
        container_id: Option<&str>,
        observations: &[Observation],
        flags: &[Flag<'_>],
        now: UnixMillis,
    ) {
        if observations.is_empty() || flags.is_empty() {
            return;
        }
        self.ensure(key, now);
        let provenance = Provenance::new(self.config.node.clone(), container_id);
        let interval = now / self.profile_config.interval_ms.max(1);
        let never_learn = flags.iter().any(|f| f.never_learn);
        let criterion = self.config.habit;
        let node = self.config.node.clone();
        let Some(entry) = self.workloads.get_mut(key) else {
            return;
        };
        let Phase::Learning { profile, .. } = &mut entry.phase else {
            return;
        };
        for obs in observations {
            let item = obs.generalised();
            if profile.item(obs.dimension, &item).is_some() {
                continue; // already part of the profile (it proved habitual before)
            }
            let outcome = entry.held.hold(
                obs.dimension,
                &item,
                flags[0].rule,
                never_learn,
                now,
                interval,
                container_id,
                &node,
                criterion,
            );
            if outcome == HoldOutcome::Habitual {
                tracing::info!(
                    message = "A flagged item proved habitual: learned.",
                    workload = %key,
                    dimension = obs.dimension.name(),
                    item = %item
                );
                let _ = profile.observe(obs, now, &provenance);
            }
            entry.dirty = true;
        }
    }

    /// Learns or scores the observations of one event. Findings (novel behaviour of a stable
    /// workload) are appended to `findings`.
    pub fn observe(
        &mut self,
        key: &WorkloadKey,
        container_id: Option<&str>,
        observations: &[Observation],
        now: UnixMillis,
        findings: &mut Vec<Finding>,
    ) {
        if observations.is_empty() {
            return;
        }
        self.ensure(key, now);
        let provenance = Provenance::new(self.config.node.clone(), container_id);
        let Engine {
            workloads,
            scratch,
            metrics,
            ..
        } = self;
        let Some(entry) = workloads.get_mut(key) else {
            return;
        };
        match &mut entry.phase {
            Phase::Learning { profile, .. } => {
                for obs in observations {
                    match profile.observe(obs, now, &provenance) {
                        Observed::New | Observed::LimitReached => entry.dirty = true,
                        Observed::Known => {}
                    }
                }
            }
            Phase::Detecting { scorer, .. } => {
                if entry.record.state != WorkloadState::Stable {
                    return; // unstable: rules only, never novelty
                }
                let started = std::time::Instant::now();
                for obs in observations {
                    let score = scorer.score(obs, scratch);
                    metrics.anomaly_score.observe(score.score);
                    if score.is_novel() {
                        findings.push(Finding {
                            workload: key.clone(),
                            baseline_state: entry.record.state,
                            dimension: score.dimension,
                            item: score.item.to_owned(),
                            score: score.score,
                            priority: score.priority(),
                            alert: scorer.is_alert(&score),
                        });
                        entry.record.alerts += 1;
                    }
                }
                metrics
                    .scorer_seconds
                    .observe(started.elapsed().as_secs_f64() / observations.len() as f64);
            }
        }
    }

    /// Learns one interval of syscall counts, or scores the syscalls of a stable workload.
    pub fn observe_syscalls(
        &mut self,
        key: &WorkloadKey,
        container_id: Option<&str>,
        counts: &[(String, u64)],
        interval: Duration,
        now: UnixMillis,
        findings: &mut Vec<Finding>,
    ) {
        self.ensure(key, now);
        let provenance = Provenance::new(self.config.node.clone(), container_id);
        let Some(entry) = self.workloads.get_mut(key) else {
            return;
        };
        if let Phase::Learning { profile, .. } = &mut entry.phase {
            match profile.observe_syscall_counts(counts, interval.as_secs_f64(), now, &provenance) {
                Ok(r) if r.new_syscalls > 0 || r.limit_reached => entry.dirty = true,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(message = "Syscall counts not learned.", workload = %key, %e)
                }
            }
            return;
        }
        let observations: Vec<Observation> = counts
            .iter()
            .map(|(name, _)| Observation::syscall(name))
            .collect();
        self.observe(key, container_id, &observations, now, findings);
    }

    /// Periodic work: convergence decisions, checkpoints, published views and metrics.
    pub fn tick(&mut self, now: SystemTime) {
        let now_ms = unix_ms(now);
        let keys: Vec<WorkloadKey> = self.workloads.keys().cloned().collect();
        for key in keys {
            if let Err(e) = self.advance(&key, now_ms) {
                tracing::error!(message = "Learning step failed.", workload = %key, %e);
            }
        }
        let due = now
            .duration_since(self.last_checkpoint)
            .is_ok_and(|d| d >= self.config.checkpoint_every);
        if due {
            self.checkpoint(now_ms);
            self.last_checkpoint = now;
        }
        self.publish(now);
    }

    /// Moves one learning workload on: unstable when a limit was hit, frozen when converged
    /// (or forced, or out of time).
    fn advance(&mut self, key: &WorkloadKey, now: UnixMillis) -> anyhow::Result<()> {
        let min = self.config.min.as_millis() as u64;
        let stable = self.config.stable.as_millis() as u64;
        let max = self.config.max.as_millis() as u64;
        let Some(entry) = self.workloads.get_mut(key) else {
            return Ok(());
        };
        let Phase::Learning { profile, .. } = &entry.phase else {
            return Ok(());
        };
        entry.record.update_from_profile(profile, now);
        let elapsed = now.saturating_sub(entry.record.learning_started_at);
        let quiet = now.saturating_sub(
            entry
                .record
                .last_new_item_at
                .unwrap_or(entry.record.learning_started_at),
        );
        let converged = elapsed >= min && quiet >= stable;
        let freeze = match entry.record.mode_forced {
            Some(ForcedMode::Learn) => None,
            Some(ForcedMode::Detect) => Some(!converged),
            None if converged => Some(false),
            None if elapsed >= max => Some(true),
            None => None,
        };
        if let Some(partial) = freeze {
            self.freeze(key, now, partial)?;
        }
        Ok(())
    }

    /// Ends learning: baseline (merged with a carried one), calibration, stored atomically.
    fn freeze(&mut self, key: &WorkloadKey, now: UnixMillis, partial: bool) -> anyhow::Result<()> {
        let Some(entry) = self.workloads.get_mut(key) else {
            return Ok(());
        };
        let Phase::Learning { profile, carried } = &entry.phase else {
            return Ok(());
        };
        let mut baseline = Baseline::freeze(profile, now, partial);
        if let Some(previous) = carried {
            baseline = habit_profiles::baseline::merge(previous, &baseline)?;
        }
        calibrate(&mut baseline, self.config.false_alarm_rate);
        match RateModel::fit(&entry.intervals, &RateConfig::default()) {
            Ok(model) => {
                baseline
                    .models
                    .insert(RATE_MODEL.into(), serde_json::to_value(&model)?);
            }
            Err(e) => tracing::info!(message = "No rate model.", workload = %key, reason = %e),
        }
        let carried_sequence = carried.as_deref().and_then(sequence_model_of);
        match entry.sequence.fit(carried_sequence.as_ref()) {
            Ok(model) => {
                tracing::info!(
                    message = "Sequence model learned.",
                    workload = %key,
                    grams = model.known_len(),
                    calibration_traces = model.calibration().map_or(0, |c| c.held_out),
                );
                baseline
                    .models
                    .insert(SEQUENCE_MODEL.into(), serde_json::to_value(&model)?);
            }
            Err(e) => {
                tracing::info!(message = "No sequence model.", workload = %key, reason = %e)
            }
        }
        let mut record = entry.record.clone();
        record.update_from_baseline(&baseline, now);
        record.mode_forced = None;
        self.store.freeze(&record, &baseline)?;
        tracing::info!(
            message = "Learning done: detecting.",
            workload = %key,
            items = baseline.items_total(),
            partial,
            state = record.state.name()
        );
        entry.record = record;
        entry.phase = detecting(baseline);
        entry.intervals = Vec::new();
        entry.sequence = SequenceLearning::default();
        entry.dirty = false;
        Ok(())
    }

    /// Writes every learning workload that changed, then flushes once.
    fn checkpoint(&mut self, now: UnixMillis) {
        let mut wrote = false;
        for entry in self.workloads.values_mut() {
            if !entry.dirty {
                continue;
            }
            let Phase::Learning { profile, .. } = &entry.phase else {
                continue;
            };
            entry.record.update_from_profile(profile, now);
            let saved = self
                .store
                .checkpoint(&entry.record, profile)
                .and_then(|()| self.store.held().put(&entry.record.key, &entry.held));
            match saved {
                Ok(()) => {
                    entry.dirty = false;
                    wrote = true;
                }
                Err(e) => {
                    tracing::error!(message = "Checkpoint failed.", workload = %entry.record.key, %e)
                }
            }
        }
        if wrote && let Err(e) = self.store.flush() {
            tracing::error!(message = "Flushing the store failed.", %e);
        }
    }

    /// Saves everything (at shutdown).
    pub fn shutdown(&mut self) {
        self.checkpoint(unix_ms(SystemTime::now()));
    }

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
        let node = self.config.node.clone();
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
                self.workloads.insert(
                    key.clone(),
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
                    },
                );
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

    fn view_of(&self, key: &WorkloadKey, now: SystemTime) -> Option<WorkloadView> {
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
                (d.name(), n)
            })
            .collect();
        let progress = match entry.phase {
            Phase::Detecting { .. } => 1.0,
            Phase::Learning { .. } => {
                let min = self.config.min.as_millis().max(1) as f64;
                let stable = self.config.stable.as_millis().max(1) as f64;
                let quiet = since_new.unwrap_or(elapsed) as f64;
                (elapsed as f64 / min).min(quiet / stable).clamp(0.0, 0.99)
            }
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
            },
            items: r.items,
            profile_sizes: sizes,
            alerts: r.alerts,
            unstable_reason: r.unstable_reason.map(|u| u.to_string()),
            baseline_created: r.baseline_created,
            held: entry.held.len(),
        }
    }

    /// Publishes the views for the API and the per-workload metrics.
    fn publish(&self, now: SystemTime) {
        let now_ms = unix_ms(now);
        let mut views: Vec<WorkloadView> = self
            .workloads
            .values()
            .map(|e| self.view(e, now_ms))
            .collect();
        views.sort_by(|a, b| a.key.cmp(&b.key));
        let m = &self.metrics;
        m.workloads_by_state.reset();
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

fn detecting(baseline: Baseline) -> Phase {
    let scorer = Box::new(NoveltyScorer::new(&baseline));
    let rate = model_of::<RateModel>(&baseline, RATE_MODEL).map(Box::new);
    let sequence = sequence_model_of(&baseline).map(Arc::new);
    Phase::Detecting {
        baseline: Arc::new(baseline),
        scorer,
        rate,
        sequence,
    }
}

fn sequence_model_of(baseline: &Baseline) -> Option<SequenceModel> {
    model_of(baseline, SEQUENCE_MODEL)
}

/// A model stored in a baseline's `models`; one that does not load is logged and left out
/// (the rest of the baseline still detects).
fn model_of<M: serde::de::DeserializeOwned>(baseline: &Baseline, name: &str) -> Option<M> {
    let value = baseline.models.get(name)?;
    serde_json::from_value::<M>(value.clone())
        .map_err(|e| {
            tracing::warn!(
                message = "A model of the baseline does not load; it is not used.",
                workload = %baseline.workload,
                model = name,
                %e
            )
        })
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use habit_models::sequence::gram_keys;

    /// Feeds a trace as the kernel sends a sampled thread: one record per gram, then the end.
    fn send(learning: &mut SequenceLearning, tid: u32, trace: &[u32]) {
        for (i, key) in gram_keys(trace).enumerate() {
            learning.trace_gram(tid, i as u64 + 1, key, false);
        }
        learning.trace_gram(tid, trace.len() as u64, 0, true);
    }

    #[test]
    fn traces_are_rebuilt_from_grams_and_gaps_discard_them() {
        let mut learning = SequenceLearning::default();
        send(&mut learning, 7, &[0, 1, 2, 3]);
        assert_eq!(learning.traces, vec![vec![0, 1, 2, 3]]);
        // A lost record: the trace is dropped, not learned with a hole.
        let keys: Vec<u64> = gram_keys(&[5, 6, 7]).collect();
        learning.trace_gram(8, 1, keys[0], false);
        learning.trace_gram(8, 3, keys[2], false);
        learning.trace_gram(8, 3, 0, true);
        assert_eq!(learning.traces.len(), 1);
        assert!(learning.open.is_empty());
    }

    #[test]
    fn fit_uses_counts_traces_and_a_carried_model() {
        let path: Vec<u32> = (0..40).map(|i| [0, 1, 2, 3][i % 4]).collect();
        let mut learning = SequenceLearning::default();
        for tid in 0..6 {
            send(&mut learning, tid, &path);
        }
        learning.grams = gram_keys(&path).fold(Default::default(), |mut m, k| {
            *m.entry(k).or_insert(0) += 6;
            m
        });
        let first = learning.fit(None).unwrap();
        let calibration = first.calibration().unwrap();
        assert_eq!(calibration.held_out, 6);
        // Extending a baseline: the carried model's grams count too.
        let mut more = SequenceLearning::default();
        more.grams.insert(gram_keys(&[9]).next().unwrap(), 1);
        let extended = more.fit(Some(&first)).unwrap();
        assert_eq!(extended.known_len(), first.known_len() + 1);
    }
}

//! The sled store of workloads, in-progress profiles and baselines.
//!
//! Five trees, each wrapped in a newtype with typed accessors (so no caller handles bytes, but
//! for the models' learning data, which this crate does not know):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `workloads` | workload key | [`WorkloadRecord`] (state, learning progress, counters) |
//! | `profiles` | workload key | [`Profile`] being learned |
//! | `baselines` | workload key | [`Baseline`], as its compact file JSON |
//! | `held` | workload key | [`HeldItems`]: rule-flagged items kept out of learning |
//! | `model_learning` | workload key | what the models learn from while the profile is learned (6-gram counts, calibration traces, rate intervals): JSON the daemon writes, opaque here |
//!
//! Values are JSON (serde_json), not bincode: a baseline is stored exactly as its portable file
//! (export is a copy, and a damaged value can be read by a person), every record is
//! self-describing so a newer habitd can add optional fields, and the cost is irrelevant at
//! the write rate here (one checkpoint per workload per learning interval).
//!
//! # Durability
//!
//! sled writes to its log and flushes it in the background every 500 ms; after `kill -9` it
//! recovers a consistent prefix of the writes, and multi-tree changes made here are sled
//! transactions, so they are either wholly present or wholly absent. Operations that record a
//! decision — [`ProfileStore::import_baseline`], [`ProfileStore::freeze`],
//! [`ProfileStore::relearn`] — call [`ProfileStore::flush`] before returning, so that once the
//! API has answered, the decision survives a crash. Checkpoints of learning progress
//! ([`ProfileStore::checkpoint`]: the profile, the record and the models' learning data, in one
//! transaction) do not flush each: the daemon writes all checkpoints of an
//! interval, then calls `flush()` once; a crash loses at most the learning since then.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::baseline::Baseline;
use crate::error::ProfileError;
use crate::held::HeldItems;
use crate::profile::{Profile, UnixMillis, UnstableReason};
use crate::workload::WorkloadKey;

const WORKLOADS: &str = "workloads";
const PROFILES: &str = "profiles";
const BASELINES: &str = "baselines";
const HELD: &str = "held";
const MODEL_LEARNING: &str = "model_learning";
/// sled's page cache. Its default (1 GiB) kept every stored profile and baseline resident
/// (the engine holds what it needs in memory and reads the store only at start-up): bounded.
const CACHE_BYTES: u64 = 8 << 20;
/// Key, in sled's default tree, of the store's layout version.
const SCHEMA_KEY: &[u8] = b"habitd.schema";
/// The layout version this build writes: bump it when a tree's key or value changes
/// incompatibly, so that an old daemon refuses a newer store instead of misreading it.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a workload is in its lifecycle. `baseline_state` in alerts is this, lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadState {
    /// Building a profile; alerts only from static rules.
    Learning,
    /// Has a baseline and is scored against it.
    Stable,
    /// Hit a limit: its baseline (if any) is incomplete and alerts say so.
    Unstable,
}

impl WorkloadState {
    /// The lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            WorkloadState::Learning => "learning",
            WorkloadState::Stable => "stable",
            WorkloadState::Unstable => "unstable",
        }
    }
}

/// A mode an operator forced (`POST /api/v1/workloads/{key}/mode`), overriding the
/// convergence test until cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForcedMode {
    /// Keep learning, even if converged.
    Learn,
    /// Detect now, with a partial baseline if learning had not converged.
    Detect,
}

/// What the daemon keeps about one workload between restarts; also what
/// `GET /api/v1/workloads` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRecord {
    /// The workload.
    pub key: WorkloadKey,
    /// Its state.
    pub state: WorkloadState,
    /// Whether its baseline is partial (frozen before convergence).
    #[serde(default)]
    pub partial: bool,
    /// The mode an operator forced, if any.
    #[serde(default)]
    pub mode_forced: Option<ForcedMode>,
    /// When learning started.
    pub learning_started_at: UnixMillis,
    /// When a new item was last learned.
    #[serde(default)]
    pub last_new_item_at: Option<UnixMillis>,
    /// Items in its profile or baseline.
    #[serde(default)]
    pub items: u64,
    /// Anomaly alerts raised for it.
    #[serde(default)]
    pub alerts: u64,
    /// Why it is unstable, if it is.
    #[serde(default)]
    pub unstable_reason: Option<UnstableReason>,
    /// When its baseline was created, if it has one.
    #[serde(default)]
    pub baseline_created: Option<UnixMillis>,
    /// Rollout inheritance: while this workload learns only what changed from the baseline of
    /// an earlier version of its repository, that version's key (its learning windows are
    /// `inherit_window` times the usual ones). Stored so that a restart resumes inheriting;
    /// cleared when the workload gets its own baseline. Absent in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inheriting_from: Option<WorkloadKey>,
    /// When this record last changed.
    pub updated_at: UnixMillis,
}

impl WorkloadRecord {
    /// A workload that starts learning at `now`.
    pub fn new(key: WorkloadKey, now: UnixMillis) -> Self {
        Self {
            key,
            state: WorkloadState::Learning,
            partial: false,
            mode_forced: None,
            learning_started_at: now,
            last_new_item_at: None,
            items: 0,
            alerts: 0,
            unstable_reason: None,
            baseline_created: None,
            inheriting_from: None,
            updated_at: now,
        }
    }

    /// Copies the learning progress of `profile` (items, last new item, unstable reason; an
    /// unstable profile makes the workload unstable).
    pub fn update_from_profile(&mut self, profile: &Profile, now: UnixMillis) {
        self.learning_started_at = profile.learning_started_at();
        self.last_new_item_at = profile.last_new_item_at();
        self.items = profile.items_total() as u64;
        self.unstable_reason = profile.unstable_reason();
        if self.unstable_reason.is_some() {
            self.state = WorkloadState::Unstable;
        }
        self.updated_at = now;
    }

    /// Copies what a baseline says about the workload: it is now stable (or unstable, if the
    /// baseline says learning hit a limit), and no longer inheriting (its lineage is in the
    /// baseline's `metadata.inherited_from`).
    pub fn update_from_baseline(&mut self, baseline: &Baseline, now: UnixMillis) {
        self.inheriting_from = None;
        self.state = if baseline.unstable_reason.is_some() {
            WorkloadState::Unstable
        } else {
            WorkloadState::Stable
        };
        self.partial = baseline.partial;
        self.learning_started_at = baseline.learning.started_at;
        self.last_new_item_at = baseline.learning.last_new_item_at;
        self.items = baseline.items_total() as u64;
        self.unstable_reason = baseline.unstable_reason;
        self.baseline_created = Some(baseline.created);
        self.updated_at = now;
    }
}

/// The `workloads` tree.
#[derive(Debug, Clone)]
pub struct Workloads(sled::Tree);

impl Workloads {
    /// The record of a workload.
    pub fn get(&self, key: &WorkloadKey) -> Result<Option<WorkloadRecord>, ProfileError> {
        get_json(&self.0, WORKLOADS, "workload record", key)
    }

    /// Stores a record under its key.
    pub fn put(&self, record: &WorkloadRecord) -> Result<(), ProfileError> {
        let value = encode("workload record", &record.key, record)?;
        insert(&self.0, WORKLOADS, &record.key, value)
    }

    /// Removes a record; returns whether there was one.
    pub fn remove(&self, key: &WorkloadKey) -> Result<bool, ProfileError> {
        remove(&self.0, WORKLOADS, key)
    }

    /// Every record, in key order.
    pub fn list(&self) -> Result<Vec<WorkloadRecord>, ProfileError> {
        let mut records = Vec::new();
        for entry in self.0.iter() {
            let (key, value) = entry.map_err(|source| ProfileError::Store {
                op: "iterate",
                tree: WORKLOADS,
                key: String::new(),
                source,
            })?;
            let key = WorkloadKey::from_raw(String::from_utf8_lossy(&key).into_owned());
            records.push(decode(WORKLOADS, "workload record", &key, &value)?);
        }
        Ok(records)
    }

    /// How many workloads are recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no workload is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The `profiles` tree.
#[derive(Debug, Clone)]
pub struct Profiles(sled::Tree);

impl Profiles {
    /// The in-progress profile of a workload.
    pub fn get(&self, key: &WorkloadKey) -> Result<Option<Profile>, ProfileError> {
        get_json(&self.0, PROFILES, "profile", key)
    }

    /// Stores a profile under its workload.
    pub fn put(&self, profile: &Profile) -> Result<(), ProfileError> {
        let value = encode("profile", profile.workload(), profile)?;
        insert(&self.0, PROFILES, profile.workload(), value)
    }

    /// Removes a profile; returns whether there was one.
    pub fn remove(&self, key: &WorkloadKey) -> Result<bool, ProfileError> {
        remove(&self.0, PROFILES, key)
    }

    /// How many profiles are stored.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no profile is stored.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The `baselines` tree.
#[derive(Debug, Clone)]
pub struct Baselines(sled::Tree);

impl Baselines {
    /// The baseline of a workload, read and validated like a file.
    pub fn get(&self, key: &WorkloadKey) -> Result<Option<Baseline>, ProfileError> {
        match self.get_json(key)? {
            None => Ok(None),
            Some(bytes) => Baseline::from_json_slice(&bytes)
                .map(Some)
                .map_err(|source| ProfileError::StoredBaseline {
                    key: key.to_string(),
                    source: Box::new(source),
                }),
        }
    }

    /// The stored baseline file (compact JSON), without parsing it.
    pub fn get_json(&self, key: &WorkloadKey) -> Result<Option<Vec<u8>>, ProfileError> {
        self.0
            .get(key.as_str())
            .map(|value| value.map(|v| v.to_vec()))
            .map_err(|source| store_error("get", BASELINES, key, source))
    }

    /// Stores a baseline under its workload, after validating it.
    pub fn put(&self, baseline: &Baseline) -> Result<(), ProfileError> {
        baseline.validate()?;
        insert(
            &self.0,
            BASELINES,
            &baseline.workload,
            baseline.to_json_vec()?,
        )
    }

    /// Removes a baseline; returns whether there was one.
    pub fn remove(&self, key: &WorkloadKey) -> Result<bool, ProfileError> {
        remove(&self.0, BASELINES, key)
    }

    /// The workloads that have a baseline, in key order.
    pub fn keys(&self) -> Result<Vec<WorkloadKey>, ProfileError> {
        self.0
            .iter()
            .keys()
            .map(|key| {
                key.map(|k| WorkloadKey::from_raw(String::from_utf8_lossy(&k).into_owned()))
                    .map_err(|source| ProfileError::Store {
                        op: "iterate",
                        tree: BASELINES,
                        key: String::new(),
                        source,
                    })
            })
            .collect()
    }
}

/// The `held` tree: items a rule flagged during learning (see [`crate::held`]).
#[derive(Debug, Clone)]
pub struct Held(sled::Tree);

impl Held {
    /// The held items of a workload (empty if none).
    pub fn get(&self, key: &WorkloadKey) -> Result<HeldItems, ProfileError> {
        Ok(get_json(&self.0, HELD, "held items", key)?.unwrap_or_default())
    }

    /// Stores the held items of a workload (removes the entry when empty).
    pub fn put(&self, key: &WorkloadKey, items: &HeldItems) -> Result<(), ProfileError> {
        if items.is_empty() && items.overflow == 0 {
            return remove(&self.0, HELD, key).map(drop);
        }
        let value = encode("held items", key, items)?;
        insert(&self.0, HELD, key, value)
    }
}

/// The models' learning data of learning workloads (JSON, written with the profile by
/// [`ProfileStore::checkpoint`], removed when learning ends or restarts).
#[derive(Debug, Clone)]
pub struct ModelLearning(sled::Tree);

impl ModelLearning {
    /// The stored learning data of a workload, if any.
    pub fn get(&self, key: &WorkloadKey) -> Result<Option<Vec<u8>>, ProfileError> {
        self.0
            .get(key.as_str())
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|source| store_error("get", MODEL_LEARNING, key, source))
    }
}

/// The store. Cheap to clone (sled handles are reference-counted).
#[derive(Debug, Clone)]
pub struct ProfileStore {
    /// Where the database lives (None: a database the caller opened).
    path: Option<std::path::PathBuf>,
    db: sled::Db,
    workloads: Workloads,
    profiles: Profiles,
    baselines: Baselines,
    held: Held,
    model_learning: ModelLearning,
}

impl ProfileStore {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ProfileError> {
        let path = path.as_ref();
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| ProfileError::Store {
                op: "open",
                tree: "-",
                key: path.display().to_string(),
                source,
            })?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            ..Self::from_db(db)?
        })
    }

    /// The directory of the database (None for a database the caller opened).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// A store over an open sled database (tests pass a temporary one). Refuses a database
    /// written with a newer layout.
    pub fn from_db(db: sled::Db) -> Result<Self, ProfileError> {
        let tree_error = |tree: &'static str| {
            move |source| ProfileError::Store {
                op: "open_tree",
                tree,
                key: String::new(),
                source,
            }
        };
        let schema = db.get(SCHEMA_KEY).map_err(tree_error("-"))?;
        match schema {
            None => {
                db.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(tree_error("-"))?;
            }
            Some(bytes) if bytes.as_ref() == SCHEMA_VERSION.to_be_bytes() => {}
            Some(bytes) => {
                return Err(ProfileError::invalid(
                    "store schema",
                    format!(
                        "the store was written with layout {bytes:?}; this habitd uses \
                         {SCHEMA_VERSION}"
                    ),
                ));
            }
        }
        Ok(Self {
            path: None,
            workloads: Workloads(db.open_tree(WORKLOADS).map_err(tree_error(WORKLOADS))?),
            profiles: Profiles(db.open_tree(PROFILES).map_err(tree_error(PROFILES))?),
            baselines: Baselines(db.open_tree(BASELINES).map_err(tree_error(BASELINES))?),
            held: Held(db.open_tree(HELD).map_err(tree_error(HELD))?),
            model_learning: ModelLearning(
                db.open_tree(MODEL_LEARNING)
                    .map_err(tree_error(MODEL_LEARNING))?,
            ),
            db,
        })
    }

    /// The `held` tree.
    pub fn held(&self) -> &Held {
        &self.held
    }

    /// The `model_learning` tree.
    pub fn model_learning(&self) -> &ModelLearning {
        &self.model_learning
    }

    /// The `workloads` tree.
    pub fn workloads(&self) -> &Workloads {
        &self.workloads
    }

    /// The `profiles` tree.
    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// The `baselines` tree.
    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }

    /// Saves learning progress: the profile, the workload record and (when given) the models'
    /// learning data, atomically, so that a crash never resumes a profile with the models' data
    /// of another moment. Does not flush (see the module documentation).
    pub fn checkpoint(
        &self,
        record: &WorkloadRecord,
        profile: &Profile,
        model_learning: Option<&[u8]>,
    ) -> Result<(), ProfileError> {
        check_key(&record.key, profile.workload())?;
        let record_value = encode("workload record", &record.key, record)?;
        let profile_value = encode("profile", &record.key, profile)?;
        let key = record.key.as_str().as_bytes();
        self.transact(&record.key, |workloads, profiles, _, learning| {
            workloads.insert(key, record_value.as_slice())?;
            profiles.insert(key, profile_value.as_slice())?;
            if let Some(data) = model_learning {
                learning.insert(key, data)?;
            }
            Ok(())
        })
    }

    /// Ends learning: stores the baseline and the record, removes the profile, atomically, and
    /// flushes.
    pub fn freeze(&self, record: &WorkloadRecord, baseline: &Baseline) -> Result<(), ProfileError> {
        check_key(&record.key, &baseline.workload)?;
        baseline.validate()?;
        let record_value = encode("workload record", &record.key, record)?;
        let baseline_value = baseline.to_json_vec()?;
        let key = record.key.as_str().as_bytes();
        self.transact(&record.key, |workloads, profiles, baselines, learning| {
            workloads.insert(key, record_value.as_slice())?;
            baselines.insert(key, baseline_value.as_slice())?;
            profiles.remove(key)?;
            learning.remove(key)?;
            Ok(())
        })?;
        self.flush().map(drop)
    }

    /// Imports a baseline file for `key` (`PUT /api/v1/baselines/{key}`, `habitctl baseline
    /// import`).
    ///
    /// The file is validated completely first, and must name `key` as its workload; a file
    /// that fails changes nothing. Then, in one transaction, the baseline replaces any
    /// previous one, the workload's in-progress profile is dropped (the operator chose this
    /// baseline over further learning), and its record (created if missing, forced mode
    /// kept) becomes stable (or unstable, if the baseline says so). Flushes before returning.
    pub fn import_baseline(
        &self,
        key: &WorkloadKey,
        bytes: &[u8],
        now: UnixMillis,
    ) -> Result<Baseline, ProfileError> {
        self.import_baseline_checked(key, bytes, now, |_| Ok(()))
    }

    /// [`ProfileStore::import_baseline`] with one more check of the parsed file before
    /// anything is written (the daemon checks the models' shapes, which this crate does not
    /// know).
    pub fn import_baseline_checked(
        &self,
        key: &WorkloadKey,
        bytes: &[u8],
        now: UnixMillis,
        check: impl FnOnce(&Baseline) -> Result<(), ProfileError>,
    ) -> Result<Baseline, ProfileError> {
        let baseline = Baseline::from_json_slice(bytes)?;
        check_key(key, &baseline.workload)?;
        check(&baseline)?;
        let baseline_value = baseline.to_json_vec()?;
        let raw_key = key.as_str().as_bytes();
        self.transact(key, |workloads, profiles, baselines, learning| {
            let mut record = match workloads.get(raw_key)? {
                Some(value) => decode(WORKLOADS, "workload record", key, &value)
                    .map_err(ConflictableTransactionError::Abort)?,
                None => WorkloadRecord::new(key.clone(), now),
            };
            record.update_from_baseline(&baseline, now);
            let record_value = encode("workload record", key, &record)
                .map_err(ConflictableTransactionError::Abort)?;
            workloads.insert(raw_key, record_value)?;
            baselines.insert(raw_key, baseline_value.as_slice())?;
            profiles.remove(raw_key)?;
            learning.remove(raw_key)?;
            Ok(())
        })?;
        self.flush()?;
        Ok(baseline)
    }

    /// Starts learning again (`mode relearn`): removes the profile and the baseline, and resets
    /// the record to learning from `now` (keeping its alert count and clearing a forced
    /// mode), atomically. Flushes before returning.
    pub fn relearn(
        &self,
        key: &WorkloadKey,
        now: UnixMillis,
    ) -> Result<WorkloadRecord, ProfileError> {
        let raw_key = key.as_str().as_bytes();
        let record = self.transact(key, |workloads, profiles, baselines, learning| {
            let alerts = match workloads.get(raw_key)? {
                Some(value) => {
                    decode::<WorkloadRecord>(WORKLOADS, "workload record", key, &value)
                        .map_err(ConflictableTransactionError::Abort)?
                        .alerts
                }
                None => 0,
            };
            let mut record = WorkloadRecord::new(key.clone(), now);
            record.alerts = alerts;
            let value = encode("workload record", key, &record)
                .map_err(ConflictableTransactionError::Abort)?;
            workloads.insert(raw_key, value)?;
            profiles.remove(raw_key)?;
            baselines.remove(raw_key)?;
            learning.remove(raw_key)?;
            Ok(record)
        })?;
        self.flush()?;
        Ok(record)
    }

    /// Makes every write so far durable; returns the bytes flushed.
    pub fn flush(&self) -> Result<usize, ProfileError> {
        self.db.flush().map_err(|source| ProfileError::Store {
            op: "flush",
            tree: "-",
            key: String::new(),
            source,
        })
    }

    /// Runs `f` as one transaction over the workloads, profiles, baselines and model learning
    /// trees.
    fn transact<A>(
        &self,
        key: &WorkloadKey,
        f: impl Fn(
            &sled::transaction::TransactionalTree,
            &sled::transaction::TransactionalTree,
            &sled::transaction::TransactionalTree,
            &sled::transaction::TransactionalTree,
        ) -> Result<A, ConflictableTransactionError<ProfileError>>,
    ) -> Result<A, ProfileError> {
        let trees = (
            &self.workloads.0,
            &self.profiles.0,
            &self.baselines.0,
            &self.model_learning.0,
        );
        trees
            .transaction(|(w, p, b, l)| f(w, p, b, l))
            .map_err(|error| match error {
                TransactionError::Abort(error) => error,
                TransactionError::Storage(source) => store_error(
                    "transaction",
                    "workloads+profiles+baselines+model_learning",
                    key,
                    source,
                ),
            })
    }
}

fn check_key(expected: &WorkloadKey, found: &WorkloadKey) -> Result<(), ProfileError> {
    if expected == found {
        Ok(())
    } else {
        Err(ProfileError::WorkloadMismatch {
            expected: expected.to_string(),
            found: found.to_string(),
        })
    }
}

fn store_error(
    op: &'static str,
    tree: &'static str,
    key: &WorkloadKey,
    source: sled::Error,
) -> ProfileError {
    ProfileError::Store {
        op,
        tree,
        key: key.to_string(),
        source,
    }
}

fn encode<T: Serialize>(
    what: &'static str,
    key: &WorkloadKey,
    value: &T,
) -> Result<Vec<u8>, ProfileError> {
    serde_json::to_vec(value).map_err(|source| ProfileError::Encode {
        what,
        key: key.to_string(),
        source,
    })
}

fn decode<T: DeserializeOwned>(
    tree: &'static str,
    what: &'static str,
    key: &WorkloadKey,
    bytes: &[u8],
) -> Result<T, ProfileError> {
    serde_json::from_slice(bytes).map_err(|source| ProfileError::Decode {
        what,
        tree,
        key: key.to_string(),
        source,
    })
}

fn get_json<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    what: &'static str,
    key: &WorkloadKey,
) -> Result<Option<T>, ProfileError> {
    match tree.get(key.as_str()) {
        Ok(Some(bytes)) => decode(name, what, key, &bytes).map(Some),
        Ok(None) => Ok(None),
        Err(source) => Err(store_error("get", name, key, source)),
    }
}

fn insert(
    tree: &sled::Tree,
    name: &'static str,
    key: &WorkloadKey,
    value: Vec<u8>,
) -> Result<(), ProfileError> {
    tree.insert(key.as_str(), value)
        .map(drop)
        .map_err(|source| store_error("insert", name, key, source))
}

fn remove(tree: &sled::Tree, name: &'static str, key: &WorkloadKey) -> Result<bool, ProfileError> {
    tree.remove(key.as_str())
        .map(|old| old.is_some())
        .map_err(|source| store_error("remove", name, key, source))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::observation::{FileMode, Observation};
    use crate::profile::{ProfileConfig, Provenance};

    fn key() -> WorkloadKey {
        WorkloadKey::from_raw("docker.io/library/nginx:1.25")
    }

    fn temporary() -> ProfileStore {
        ProfileStore::from_db(sled::Config::default().temporary(true).open().unwrap()).unwrap()
    }

    fn profile() -> Profile {
        let mut p = Profile::new(key(), "node-a", 1000, ProfileConfig::default());
        let here = Provenance::new("node-a", Some("abc"));
        let _ = p.observe(&Observation::exec("/usr/sbin/nginx"), 1000, &here);
        let _ = p.observe(
            &Observation::file("/etc/nginx/nginx.conf", FileMode::Read),
            1001,
            &here,
        );
        p
    }

    fn baseline_json() -> Vec<u8> {
        crate::baseline::Baseline::freeze(&profile(), 5000, false)
            .to_json_pretty()
            .unwrap()
            .into_bytes()
    }

    /// Everything in the store, for before/after comparisons.
    fn snapshot(store: &ProfileStore) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let mut all = Vec::new();
        for (name, tree) in [
            (WORKLOADS, &store.workloads.0),
            (PROFILES, &store.profiles.0),
            (BASELINES, &store.baselines.0),
        ] {
            for entry in tree.iter() {
                let (k, v) = entry.unwrap();
                all.push((name.to_owned(), k.to_vec(), v.to_vec()));
            }
        }
        all
    }

    /// Opens a store directory, waiting for the previous handle's background flusher (which
    /// holds the directory lock for a moment after the last handle is dropped) to let go.
    fn reopen(dir: &Path) -> ProfileStore {
        for _ in 0..100 {
            match ProfileStore::open(dir) {
                Ok(store) => return store,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
        ProfileStore::open(dir).unwrap()
    }

    #[test]
    fn store_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("habit-profiles-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = profile();
        let mut record = WorkloadRecord::new(key(), 1000);
        record.update_from_profile(&p, 2000);
        {
            let store = ProfileStore::open(&dir).unwrap();
            store
                .checkpoint(&record, &p, Some(br#"{"grams":[[1,2]]}"#))
                .unwrap();
            store.flush().unwrap();
        }
        {
            let store = reopen(&dir);
            assert_eq!(store.workloads().get(&key()).unwrap().unwrap(), record);
            let back = store.profiles().get(&key()).unwrap().unwrap();
            assert_eq!(back, p);
            // The models' learning data came back with the profile, and is kept when a
            // checkpoint has none to write.
            store.checkpoint(&record, &p, None).unwrap();
            assert_eq!(
                store.model_learning().get(&key()).unwrap().as_deref(),
                Some(&br#"{"grams":[[1,2]]}"#[..])
            );
            assert_eq!(back.items_total(), 2);
            // Freeze: profile replaced by the baseline.
            let b = crate::baseline::Baseline::freeze(&back, 3000, false);
            let mut record = record.clone();
            record.update_from_baseline(&b, 3000);
            store.freeze(&record, &b).unwrap();
        }
        {
            let store = reopen(&dir);
            assert!(store.profiles().get(&key()).unwrap().is_none());
            assert!(store.model_learning().get(&key()).unwrap().is_none());
            let b = store.baselines().get(&key()).unwrap().unwrap();
            assert_eq!(b.items_total(), 2);
            let record = store.workloads().get(&key()).unwrap().unwrap();
            assert_eq!(record.state, WorkloadState::Stable);
            assert_eq!(record.baseline_created, Some(3000));
            assert_eq!(store.workloads().list().unwrap().len(), 1);
            assert_eq!(store.baselines().keys().unwrap(), [key()]);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn import_validates_then_replaces_atomically() {
        let store = temporary();
        let p = profile();
        let mut record = WorkloadRecord::new(key(), 1000);
        record.mode_forced = Some(ForcedMode::Learn);
        record.alerts = 3;
        store.checkpoint(&record, &p, None).unwrap();

        let b = store
            .import_baseline(&key(), &baseline_json(), 9000)
            .unwrap();
        assert_eq!(b.items_total(), 2);
        assert!(store.profiles().get(&key()).unwrap().is_none());
        assert_eq!(store.baselines().get(&key()).unwrap().unwrap(), b);
        let record = store.workloads().get(&key()).unwrap().unwrap();
        assert_eq!(record.state, WorkloadState::Stable);
        assert_eq!(record.mode_forced, Some(ForcedMode::Learn));
        assert_eq!(record.alerts, 3);
        assert_eq!(record.items, 2);
        assert_eq!(record.updated_at, 9000);
        // The stored value is the file, compact.
        let stored = store.baselines().get_json(&key()).unwrap().unwrap();
        assert_eq!(stored, b.to_json_vec().unwrap());
    }

    #[test]
    fn malformed_import_changes_nothing() {
        let store = temporary();
        let p = profile();
        store
            .checkpoint(&WorkloadRecord::new(key(), 1000), &p, None)
            .unwrap();
        store
            .import_baseline(&key(), &baseline_json(), 2000)
            .unwrap();
        let other = WorkloadKey::host();
        store
            .checkpoint(
                &WorkloadRecord::new(other.clone(), 1000),
                &{
                    let mut p = Profile::new(other.clone(), "n", 0, ProfileConfig::default());
                    let _ = p.observe(&Observation::exec("/bin/x"), 0, &Provenance::default());
                    p
                },
                None,
            )
            .unwrap();
        let before = snapshot(&store);

        // Truncated JSON: syntax error with position.
        let good = baseline_json();
        let e = store
            .import_baseline(&key(), &good[..good.len() / 2], 3000)
            .unwrap_err();
        assert!(
            matches!(e, ProfileError::BaselineSyntax { line, .. } if line > 1),
            "{e}"
        );
        // Valid JSON, inconsistent content.
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        v["dimensions"]["exec"]["items"]["/usr/sbin/nginx"]["intervals_seen"] = 0.into();
        let e = store
            .import_baseline(&key(), v.to_string().as_bytes(), 3000)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"items["/usr/sbin/nginx"].intervals_seen"#),
            "{e}"
        );
        // A valid baseline for another workload.
        let e = store.import_baseline(&other, &good, 3000).unwrap_err();
        assert!(matches!(e, ProfileError::WorkloadMismatch { .. }), "{e}");
        // Not a baseline at all.
        let e = store
            .import_baseline(&key(), b"[1, 2, 3]", 3000)
            .unwrap_err();
        assert!(matches!(e, ProfileError::BaselineSyntax { .. }), "{e}");

        assert_eq!(snapshot(&store), before);
    }

    #[test]
    fn relearn_clears_profile_and_baseline() {
        let store = temporary();
        let mut record = WorkloadRecord::new(key(), 0);
        record.alerts = 5;
        store.checkpoint(&record, &profile(), None).unwrap();
        store.import_baseline(&key(), &baseline_json(), 1).unwrap();
        let record = store.relearn(&key(), 7).unwrap();
        assert_eq!(record.state, WorkloadState::Learning);
        assert_eq!(record.learning_started_at, 7);
        assert_eq!(record.alerts, 5);
        assert!(store.baselines().get(&key()).unwrap().is_none());
        assert!(store.profiles().get(&key()).unwrap().is_none());
        assert_eq!(store.workloads().get(&key()).unwrap().unwrap(), record);
    }

    #[test]
    fn checkpoint_refuses_a_profile_of_another_workload() {
        let store = temporary();
        let e = store
            .checkpoint(
                &WorkloadRecord::new(WorkloadKey::host(), 0),
                &profile(),
                None,
            )
            .unwrap_err();
        assert!(matches!(e, ProfileError::WorkloadMismatch { .. }));
        assert!(store.workloads().is_empty());
    }

    #[test]
    fn damaged_values_are_reported_with_their_key() {
        let store = temporary();
        store
            .workloads
            .0
            .insert(key().as_str(), b"{not json".to_vec())
            .unwrap();
        let e = store.workloads().get(&key()).unwrap_err();
        assert!(e.to_string().contains("nginx"), "{e}");
        store
            .baselines
            .0
            .insert(key().as_str(), b"{}".to_vec())
            .unwrap();
        let e = store.baselines().get(&key()).unwrap_err();
        assert!(matches!(e, ProfileError::StoredBaseline { .. }), "{e}");
    }

    /// Records written before rollout inheritance was stored (no `inheriting_from`) read;
    /// the field round-trips, and getting a baseline clears it.
    #[test]
    fn inheriting_from_is_optional_and_cleared_by_a_baseline() {
        let mut record = WorkloadRecord::new(key(), 5);
        record.inheriting_from = Some(WorkloadKey::from_raw("docker.io/library/nginx:1.24"));
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["inheriting_from"], "docker.io/library/nginx:1.24");
        assert_eq!(
            serde_json::from_value::<WorkloadRecord>(json.clone()).unwrap(),
            record
        );
        let mut old = json;
        old.as_object_mut().unwrap().remove("inheriting_from");
        let old: WorkloadRecord = serde_json::from_value(old).unwrap();
        assert_eq!(old.inheriting_from, None);
        record.update_from_baseline(&crate::baseline::Baseline::freeze(&profile(), 9, false), 9);
        assert_eq!(record.inheriting_from, None);
    }

    #[test]
    fn newer_schema_is_refused() {
        let db = sled::Config::default().temporary(true).open().unwrap();
        db.insert(SCHEMA_KEY, &2u32.to_be_bytes()).unwrap();
        assert!(ProfileStore::from_db(db).is_err());
    }
}

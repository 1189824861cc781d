//! The baseline: a frozen, reviewable, portable profile.
//!
//! [`Baseline::freeze`] turns a [`Profile`] into a `Baseline` when a workload stops learning.
//! A baseline keeps every learned item with its counts (scorers derive rarity from them),
//! per-dimension statistics, syscall rate statistics, and optionally a [`Calibration`] computed
//! by the models crate.
//!
//! # File format
//!
//! A baseline *is* its file: it serialises to JSON as
//!
//! ```json
//! {
//!   "format": "habitd-baseline",
//!   "version": 2,
//!   "workload": "docker.io/library/nginx:1.25",
//!   "created": 1700000000000,
//!   "node": "node-a",
//!   "partial": false,
//!   "metadata": { "habitd_version": "0.1.0", "digests": ["sha256:…"], "image_ids": ["sha256:…"],
//!                 "nodes": ["node-a"], "containers": ["…"], "namespace": "shop",
//!                 "labels": { "app": "web" }, "inherited_from": ["docker.io/library/nginx:1.24"] },
//!   "learning": { "started_at": …, "ended_at": …, "last_new_item_at": …,
//!                 "intervals": 1440, "interval_ms": 60000, "rate_intervals": 1440 },
//!   "generalise": { "dir_collapse_after": 32, "net_collapse_after": 8 },
//!   "dimensions": {
//!     "exec": { "stats": { "items": 1, "observations": 3, "singletons": 0, "item_intervals": 2 },
//!               "items": { "/usr/sbin/nginx": { "first_seen": …, "last_seen": …, "count": 3,
//!                                               "intervals_seen": 2,
//!                                               "provenance": [{ "node": "node-a", "container_id": "…" }],
//!                                               "introduced_by": { "version": "docker.io/library/nginx:1.25",
//!                                                                  "digest": "sha256:…" } } } }
//!   },
//!   "syscall_rates": { "read": { "intervals": 1440, "mean": 3.2, "m2": 10.1, "max": 40.0 } },
//!   "calibration": { … },
//!   "models": { "sequence": { … }, "sequence_traces": [ … ], "rate": { … }, "rate_intervals": [ … ] }
//! }
//! ```
//!
//! Rollout inheritance shows in two places: `metadata.inherited_from` lists the baselines of
//! earlier versions this one started from, and an item that a version added over its
//! predecessor's baseline names that version in `introduced_by` (its workload key, and its
//! image's digest or id when the runtime reported them), which `habitctl baseline diff`
//! prints. `metadata.digests`, `image_ids`, `namespace` and `labels` are what the container
//! runtime reported about the containers learned from (`labels` feed the NetworkPolicy's pod
//! selector).
//!
//! The JSON Schema of this format is `profiles/schema/baseline.schema.json` (exported files
//! are tested against it); `models` are described in `habit_models::artifact`, which also
//! checks them on import. Version 1 files (no `metadata`) still read. Files larger than
//! [`MAX_FILE_BYTES`] are refused before parsing.
//!
//! Items are sorted (the maps are ordered), so two exports of the same baseline are
//! byte-identical and diff well in review. Unknown fields are rejected, so that a typo in a
//! hand-edited file is an error rather than a silently ignored setting. [`Baseline::from_json_slice`]
//! checks the `format` and `version` first (a clear error for a file that is not a baseline,
//! or from a newer habitd), then the syntax (errors carry line and column), then the content
//! ([`Baseline::validate`]: errors name the field).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::ProfileError;
use crate::generalise::{self, GeneraliseConfig, MAX_ITEM_BYTES, TRUNCATED};
use crate::observation::{Dimension, Observation};
use crate::profile::{
    Introduced, ItemStats, MAX_IMAGES, Profile, ProfileLimits, RateStats, UnixMillis,
    UnstableReason, collapse_items,
};
use crate::workload::WorkloadKey;

/// The `format` of every baseline file.
pub const FORMAT: &str = "habitd-baseline";
/// The `version` this build writes and reads. A change that old readers would misread gets a
/// new version; adding an optional field does not.
pub const VERSION: u32 = 2;
/// The oldest `version` this build still reads (version 1 lacks `metadata`: read as empty).
pub const MIN_VERSION: u32 = 1;
/// Largest baseline file accepted on import (bytes): far above any real baseline (items and
/// models are bounded), small enough that a hostile upload cannot exhaust memory.
pub const MAX_FILE_BYTES: usize = 64 << 20;
/// Most container ids kept in [`BaselineMetadata::containers`].
pub const MAX_CONTAINERS: usize = 256;

/// Who and what a baseline was learned from: reviewable context, kept through merges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineMetadata {
    /// The habitd version that wrote the file (merges keep the newest writer's, by string).
    #[serde(default)]
    pub habitd_version: String,
    /// Repository digests (`sha256:…`) of the images of the containers it was learned from,
    /// as their runtime reported them (at most [`MAX_IMAGES`], the smallest).
    #[serde(default)]
    pub digests: BTreeSet<String>,
    /// Image ids (`sha256:…` of the image configuration) of those containers: what names a
    /// locally built image, which has no repository digest (at most [`MAX_IMAGES`]).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub image_ids: BTreeSet<String>,
    /// Nodes it was learned on.
    #[serde(default)]
    pub nodes: BTreeSet<String>,
    /// Container ids it was learned from (at most [`MAX_CONTAINERS`], the smallest ones).
    #[serde(default)]
    pub containers: BTreeSet<String>,
    /// The Kubernetes namespace of its pods, when every container's pod (and every merged
    /// input) was in that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Pod labels every learned container carried, as the runtime reported them (CRI: the pod
    /// sandbox's labels without the kubelet's `io.kubernetes.*`): the NetworkPolicy's pod
    /// selector (`habitctl export netpol`). Empty outside Kubernetes.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Rollout inheritance: the baselines (workload keys) this one started from, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherited_from: Vec<String>,
}

impl BaselineMetadata {
    /// What `profile` tells about its origin: nodes and containers from its items'
    /// provenance; image digests and ids, the pods' namespace and labels from what the
    /// runtime said about its containers ([`Profile::note_container`]).
    fn of_profile(profile: &Profile) -> Self {
        let origin = profile.origin();
        let mut meta = BaselineMetadata {
            habitd_version: env!("CARGO_PKG_VERSION").to_owned(),
            digests: origin.digests.clone(),
            image_ids: origin.image_ids.clone(),
            namespace: origin.namespace().map(str::to_owned),
            labels: origin.labels.clone().unwrap_or_default(),
            ..BaselineMetadata::default()
        };
        if !profile.node().is_empty() {
            meta.nodes.insert(profile.node().to_owned());
        }
        for items in profile.dimensions().values() {
            for stats in items.values() {
                for p in &stats.provenance {
                    if !p.node.is_empty() {
                        meta.nodes.insert(p.node.clone());
                    }
                    if let Some(c) = &p.container_id {
                        meta.containers.insert(c.clone());
                    }
                }
            }
        }
        meta.bound();
        meta
    }

    /// Keeps the smallest [`MAX_CONTAINERS`] container ids and [`MAX_IMAGES`] digests and
    /// image ids (a canonical choice, so that merges do not depend on their order).
    fn bound(&mut self) {
        while self.containers.len() > MAX_CONTAINERS {
            self.containers.pop_last();
        }
        while self.digests.len() > MAX_IMAGES {
            self.digests.pop_last();
        }
        while self.image_ids.len() > MAX_IMAGES {
            self.image_ids.pop_last();
        }
    }

    /// The metadata of a merge: unions, labels every input had, the namespace if all agree.
    /// Commutative and associative.
    pub fn merge(&self, other: &BaselineMetadata) -> BaselineMetadata {
        let mut merged = BaselineMetadata {
            habitd_version: self
                .habitd_version
                .clone()
                .max(other.habitd_version.clone()),
            digests: self.digests.union(&other.digests).cloned().collect(),
            image_ids: self.image_ids.union(&other.image_ids).cloned().collect(),
            nodes: self.nodes.union(&other.nodes).cloned().collect(),
            containers: self.containers.union(&other.containers).cloned().collect(),
            namespace: match (&self.namespace, &other.namespace) {
                (Some(a), Some(b)) if a == b => Some(a.clone()),
                _ => None,
            },
            labels: self
                .labels
                .iter()
                .filter(|(k, v)| other.labels.get(*k) == Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            inherited_from: self.inherited_from.clone(),
        };
        for key in &other.inherited_from {
            if !merged.inherited_from.contains(key) {
                merged.inherited_from.push(key.clone());
            }
        }
        merged.inherited_from.sort();
        merged.bound();
        merged
    }
}

/// When and how long the workload learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearningSummary {
    /// When learning started.
    pub started_at: UnixMillis,
    /// When the last observation was made.
    pub ended_at: UnixMillis,
    /// When the last new item was learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_new_item_at: Option<UnixMillis>,
    /// Learning intervals in which anything was observed (summed by merge).
    pub intervals: u64,
    /// Length of a learning interval.
    pub interval_ms: u64,
    /// Intervals of syscall counts behind `syscall_rates`.
    pub rate_intervals: u64,
}

/// Summary statistics of one dimension, derived from its items (and checked against them on
/// load, so a hand edit that forgets to update them is caught).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimensionStats {
    /// Distinct items.
    pub items: u64,
    /// Observations over all items (sum of `count`).
    pub observations: u64,
    /// Items seen in exactly one interval: those that would have been novel had that interval
    /// been left out of learning (the numerator of the novel rate, see calibration).
    pub singletons: u64,
    /// Sum of `intervals_seen` over items: the item-occurrences per interval, times intervals.
    pub item_intervals: u64,
}

impl DimensionStats {
    /// The statistics of a set of items.
    pub fn of(items: &BTreeMap<String, ItemStats>) -> Self {
        let mut stats = DimensionStats::default();
        for item in items.values() {
            stats.items += 1;
            stats.observations = stats.observations.saturating_add(item.count);
            stats.singletons += u64::from(item.intervals_seen == 1);
            stats.item_intervals = stats.item_intervals.saturating_add(item.intervals_seen);
        }
        stats
    }
}

/// The learned items of one dimension.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineDimension {
    /// Statistics derived from `items`.
    pub stats: DimensionStats,
    /// Generalised item → its statistics.
    pub items: BTreeMap<String, ItemStats>,
}

/// How scores of a baseline map to false-alarm rates. Computed by
/// `habit_models::calibrate` (the method lives there); stored here because it is part of the
/// file, where a reviewer sees which dimensions can raise alerts at all. Profiles only check
/// that it is well-formed and belongs to this baseline's learning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Name and version of the method that produced it.
    pub method: String,
    /// The learning intervals it was fitted on (must equal `learning.intervals`).
    pub intervals: u64,
    /// The false-alarm rate the thresholds target: the probability that a learning interval of
    /// normal behaviour raises an alert, per dimension.
    pub target_false_alarm_rate: f64,
    /// Per-dimension calibration; dimensions without items are present too.
    pub per_dimension: BTreeMap<Dimension, DimensionCalibration>,
}

/// Calibration of one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimensionCalibration {
    /// Expected novel items per interval of normal behaviour.
    pub novel_rate: f64,
    /// The score of a novel item in this dimension (0..=1).
    pub novel_score: f64,
    /// Scores at or above this raise an alert.
    pub threshold: f64,
    /// Probability that an interval of normal behaviour raises a novelty alert in this
    /// dimension at `threshold` (0 when novel items score below it).
    pub expected_false_alarm_rate: f64,
}

/// A frozen profile. See the module documentation for its file format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// The workload it describes.
    pub workload: WorkloadKey,
    /// When it was frozen (or merged).
    pub created: UnixMillis,
    /// The node(s) it was learned on; merged baselines list theirs, comma-separated.
    pub node: String,
    /// Whether learning was cut short (forced to detect, or unstable) rather than converged.
    pub partial: bool,
    /// Where it was learned: digests, nodes, containers, labels, habitd version, lineage.
    #[serde(default)]
    pub metadata: BaselineMetadata,
    /// When and how long it learned.
    pub learning: LearningSummary,
    /// The collapse thresholds it was learned with.
    pub generalise: GeneraliseConfig,
    /// Why learning became unstable, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unstable_reason: Option<UnstableReason>,
    /// The learned items, per dimension (dimensions without items are omitted).
    pub dimensions: BTreeMap<Dimension, BaselineDimension>,
    /// Per-syscall rate statistics.
    #[serde(default)]
    pub syscall_rates: BTreeMap<String, RateStats>,
    /// Score calibration, if computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Fitted models of the models crate (`sequence`, `rate`) and their learning data, by
    /// name, kept as JSON so that this crate need not know their types; the models crate
    /// validates them on load (`habit_models::artifact::load_models`). Dropped by [`merge`]:
    /// `habit_models::artifact::merge_baselines` merges them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, serde_json::Value>,
}

impl Baseline {
    /// Freezes a profile at `now`. `partial` says learning did not converge (the daemon
    /// decides: forced to detect, or unstable). The calibration is left empty: the models
    /// crate computes it.
    pub fn freeze(profile: &Profile, now: UnixMillis, partial: bool) -> Baseline {
        let started_at = profile.learning_started_at();
        let dimensions = profile
            .dimensions()
            .iter()
            .filter(|(_, items)| !items.is_empty())
            .map(|(&dimension, items)| {
                let dimension_baseline = BaselineDimension {
                    stats: DimensionStats::of(items),
                    items: items.clone(),
                };
                (dimension, dimension_baseline)
            })
            .collect();
        Baseline {
            format: FORMAT.to_owned(),
            version: VERSION,
            workload: profile.workload().clone(),
            created: now,
            node: profile.node().to_owned(),
            partial,
            metadata: BaselineMetadata::of_profile(profile),
            learning: LearningSummary {
                started_at,
                ended_at: profile
                    .last_observation_at()
                    .unwrap_or(started_at)
                    .max(started_at),
                last_new_item_at: profile.last_new_item_at(),
                intervals: profile.intervals(),
                interval_ms: profile.config().interval_ms,
                rate_intervals: profile.rate_intervals(),
            },
            generalise: profile.config().generalise,
            unstable_reason: profile.unstable_reason(),
            dimensions,
            syscall_rates: profile.syscall_rates().clone(),
            calibration: None,
            models: BTreeMap::new(),
        }
    }

    /// Items over all dimensions.
    pub fn items_total(&self) -> usize {
        self.dimensions.values().map(|d| d.items.len()).sum()
    }

    /// The items of one dimension, by generalised item, in order.
    pub fn items(&self, dimension: Dimension) -> impl Iterator<Item = (&str, &ItemStats)> {
        self.dimensions
            .get(&dimension)
            .into_iter()
            .flat_map(|d| d.items.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// The statistics of one generalised item.
    pub fn item(&self, dimension: Dimension, generalised: &str) -> Option<&ItemStats> {
        self.dimensions.get(&dimension)?.items.get(generalised)
    }

    /// Whether the baseline knows an observation: its generalised item, or the collapsed
    /// directory or network it falls in, is one of its items.
    pub fn knows(&self, observation: &Observation) -> bool {
        self.knows_item(observation.dimension, &observation.generalised())
    }

    /// Whether the baseline knows a generalised item (itself, or the collapsed directory or
    /// network it falls in).
    pub fn knows_item(&self, dimension: Dimension, item: &str) -> bool {
        let Some(ours) = self.dimensions.get(&dimension) else {
            return false;
        };
        ours.items.contains_key(item)
            || generalise::collapse_key(dimension, item)
                .is_some_and(|key| ours.items.contains_key(&key))
    }

    /// Rollout inheritance: marks every item that `predecessor` (the baseline of the previous
    /// version this one started from) does not have as introduced by `version`, unless it
    /// already names the version that introduced it. Returns how many items it marked.
    pub fn mark_introduced(&mut self, predecessor: &Baseline, version: &Introduced) -> usize {
        let mut marked = 0;
        for (dimension, ours) in &mut self.dimensions {
            for (item, stats) in &mut ours.items {
                if stats.introduced_by.is_none() && !predecessor.knows_item(*dimension, item) {
                    stats.introduced_by = Some(version.clone());
                    marked += 1;
                }
            }
        }
        marked
    }

    /// The statistics of one dimension (all zero if it has no items).
    pub fn stats(&self, dimension: Dimension) -> DimensionStats {
        self.dimensions
            .get(&dimension)
            .map_or_else(DimensionStats::default, |d| d.stats)
    }

    /// The baseline file, pretty-printed (for export and review).
    pub fn to_json_pretty(&self) -> Result<String, ProfileError> {
        serde_json::to_string_pretty(self).map_err(|source| self.encode_error(source))
    }

    /// The baseline file, compact (for the store).
    pub fn to_json_vec(&self) -> Result<Vec<u8>, ProfileError> {
        serde_json::to_vec(self).map_err(|source| self.encode_error(source))
    }

    /// Reads and validates a baseline file.
    ///
    /// Checks, in order: that it is a JSON object with `"format": "habitd-baseline"` and
    /// `"version": 1`; that it parses with no unknown, missing or mistyped field
    /// ([`ProfileError::BaselineSyntax`] with line and column); that its content is
    /// consistent ([`Baseline::validate`]).
    pub fn from_json_slice(bytes: &[u8]) -> Result<Baseline, ProfileError> {
        if bytes.len() > MAX_FILE_BYTES {
            return Err(ProfileError::invalid(
                "(file)",
                format!(
                    "is {} bytes, more than the {MAX_FILE_BYTES} a baseline may have",
                    bytes.len()
                ),
            ));
        }
        #[derive(Deserialize)]
        struct Header {
            format: Option<serde_json::Value>,
            version: Option<serde_json::Value>,
        }
        let header: Header = serde_json::from_slice(bytes).map_err(|e| ProfileError::syntax(&e))?;
        match header.format {
            Some(serde_json::Value::String(format)) if format == FORMAT => {}
            Some(other) => {
                return Err(ProfileError::invalid(
                    "format",
                    format!("is {other}, expected \"{FORMAT}\""),
                ));
            }
            None => {
                return Err(ProfileError::invalid(
                    "format",
                    format!("is missing (expected \"{FORMAT}\"): not a habitd baseline file"),
                ));
            }
        }
        match header.version {
            Some(serde_json::Value::Number(n))
                if n.as_u64().is_some_and(|v| {
                    (u64::from(MIN_VERSION)..=u64::from(VERSION)).contains(&v)
                }) => {}
            Some(other) => {
                return Err(ProfileError::invalid(
                    "version",
                    format!(
                        "{other} is not supported; this habitd reads versions {MIN_VERSION} to \
                         {VERSION}"
                    ),
                ));
            }
            None => return Err(ProfileError::invalid("version", "is missing")),
        }
        let mut baseline: Baseline =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes))
                .map_err(|e| ProfileError::at_path(&e))?;
        // Older versions differ only by fields that default: read, they are this version.
        baseline.version = VERSION;
        baseline.validate()?;
        Ok(baseline)
    }

    /// Checks that the content is consistent: every count and time is possible, every item is
    /// in generalised form (so that it can ever match), the stored statistics match the items,
    /// rates are finite, and the calibration belongs to this learning. The error names the
    /// first offending field.
    pub fn validate(&self) -> Result<(), ProfileError> {
        use ProfileError as E;
        if self.format != FORMAT {
            return Err(E::invalid("format", format!("expected \"{FORMAT}\"")));
        }
        if self.version != VERSION {
            return Err(E::invalid("version", format!("expected {VERSION}")));
        }
        if let Err(e) = WorkloadKey::parse(self.workload.as_str()) {
            return Err(E::invalid("workload", e.to_string()));
        }
        let learning = &self.learning;
        if learning.interval_ms == 0 {
            return Err(E::invalid("learning.interval_ms", "must be positive"));
        }
        if learning.ended_at < learning.started_at {
            return Err(E::invalid(
                "learning.ended_at",
                "is before learning.started_at",
            ));
        }
        if self.generalise.dir_collapse_after == 0 || self.generalise.net_collapse_after == 0 {
            return Err(E::invalid(
                "generalise",
                "collapse thresholds must be at least 1",
            ));
        }
        for (dimension, dimension_baseline) in &self.dimensions {
            for (item, stats) in &dimension_baseline.items {
                validate_item(*dimension, item, stats, learning.intervals)?;
            }
            let computed = DimensionStats::of(&dimension_baseline.items);
            if computed != dimension_baseline.stats {
                return Err(E::invalid(
                    format!("dimensions.{dimension}.stats"),
                    format!(
                        "do not match the items: the file says {:?}, the items give {computed:?}",
                        dimension_baseline.stats
                    ),
                ));
            }
        }
        for (name, rate) in &self.syscall_rates {
            let field = || format!("syscall_rates.{name}");
            let finite = [rate.mean, rate.m2, rate.max]
                .iter()
                .all(|x| x.is_finite() && *x >= 0.0);
            if !finite {
                return Err(E::invalid(
                    field(),
                    "mean, m2 and max must be finite and ≥ 0",
                ));
            }
            if rate.intervals > learning.rate_intervals {
                return Err(E::invalid(
                    field(),
                    format!(
                        "covers {} intervals, more than learning.rate_intervals ({})",
                        rate.intervals, learning.rate_intervals
                    ),
                ));
            }
        }
        if let Some(calibration) = &self.calibration {
            validate_calibration(calibration, learning.intervals)?;
        }
        Ok(())
    }

    fn encode_error(&self, source: serde_json::Error) -> ProfileError {
        ProfileError::Encode {
            what: "baseline",
            key: self.workload.to_string(),
            source,
        }
    }
}

fn validate_item(
    dimension: Dimension,
    item: &str,
    stats: &ItemStats,
    intervals: u64,
) -> Result<(), ProfileError> {
    let field = |suffix: &str| format!("dimensions.{dimension}.items[{item:?}]{suffix}");
    if item.is_empty() {
        return Err(ProfileError::invalid(
            field(""),
            "an item must not be empty",
        ));
    }
    if item.len() > MAX_ITEM_BYTES {
        return Err(ProfileError::invalid(
            field(""),
            format!("is longer than {MAX_ITEM_BYTES} bytes"),
        ));
    }
    if item.chars().any(char::is_control) {
        return Err(ProfileError::invalid(
            field(""),
            "contains control characters",
        ));
    }
    if !generalise::is_collapse_key(dimension, item) && !item.ends_with(TRUNCATED) {
        let generalised = generalise::generalise(dimension, item);
        if generalised != item {
            return Err(ProfileError::invalid(
                field(""),
                format!("is not in generalised form (would never match); write {generalised:?}"),
            ));
        }
    }
    if stats.count == 0 {
        return Err(ProfileError::invalid(field(".count"), "must be at least 1"));
    }
    if stats.intervals_seen == 0 || stats.intervals_seen > stats.count {
        return Err(ProfileError::invalid(
            field(".intervals_seen"),
            format!("must be between 1 and count ({})", stats.count),
        ));
    }
    if intervals > 0 && stats.intervals_seen > intervals {
        return Err(ProfileError::invalid(
            field(".intervals_seen"),
            format!("exceeds learning.intervals ({intervals})"),
        ));
    }
    if stats.first_seen > stats.last_seen {
        return Err(ProfileError::invalid(
            field(".first_seen"),
            "is after last_seen",
        ));
    }
    if let Some(by) = &stats.introduced_by
        && by.version.trim().is_empty()
    {
        return Err(ProfileError::invalid(
            field(".introduced_by.version"),
            "must name the version (a workload key)",
        ));
    }
    Ok(())
}

fn validate_calibration(calibration: &Calibration, intervals: u64) -> Result<(), ProfileError> {
    if calibration.intervals != intervals {
        return Err(ProfileError::invalid(
            "calibration.intervals",
            format!(
                "is {} but learning.intervals is {intervals}: the calibration belongs to other \
                 learning data (recalibrate)",
                calibration.intervals
            ),
        ));
    }
    let probability = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
    if !(probability(calibration.target_false_alarm_rate)
        && calibration.target_false_alarm_rate > 0.0)
    {
        return Err(ProfileError::invalid(
            "calibration.target_false_alarm_rate",
            "must be in (0, 1]",
        ));
    }
    for (dimension, c) in &calibration.per_dimension {
        let field = |name: &str| format!("calibration.per_dimension.{dimension}.{name}");
        if !(c.novel_rate.is_finite() && c.novel_rate >= 0.0) {
            return Err(ProfileError::invalid(
                field("novel_rate"),
                "must be finite and ≥ 0",
            ));
        }
        for (name, value) in [
            ("novel_score", c.novel_score),
            ("threshold", c.threshold),
            ("expected_false_alarm_rate", c.expected_false_alarm_rate),
        ] {
            if !probability(value) {
                return Err(ProfileError::invalid(field(name), "must be in [0, 1]"));
            }
        }
    }
    Ok(())
}

/// Merges two baselines of the same workload (learned on different nodes, or in different
/// periods) into one that knows everything either knows.
///
/// Items are united: counts and intervals summed, the earliest first sighting and the latest
/// last one kept, provenance united (bounded). Directory and network collapse is applied again
/// to the union. Syscall rate statistics are combined as if the intervals had been learned
/// by one profile. The result is `partial` if either input is, and has no calibration: the
/// caller recalibrates (the intervals changed).
///
/// Fails if the workloads, interval lengths or collapse thresholds differ, since the counts
/// would not mean the same thing.
pub fn merge(left: &Baseline, right: &Baseline) -> Result<Baseline, ProfileError> {
    if left.workload != right.workload {
        return Err(ProfileError::WorkloadMismatch {
            expected: left.workload.to_string(),
            found: right.workload.to_string(),
        });
    }
    if left.learning.interval_ms != right.learning.interval_ms {
        return Err(ProfileError::MergeConflict {
            field: "learning.interval_ms",
            left: left.learning.interval_ms.to_string(),
            right: right.learning.interval_ms.to_string(),
        });
    }
    if left.generalise != right.generalise {
        return Err(ProfileError::MergeConflict {
            field: "generalise",
            left: format!("{:?}", left.generalise),
            right: format!("{:?}", right.generalise),
        });
    }
    let intervals = left.learning.intervals + right.learning.intervals;
    let max_provenance = ProfileLimits::default().provenance_per_item as usize;

    let mut dimensions = left.dimensions.clone();
    for (dimension, theirs) in &right.dimensions {
        let ours = dimensions.entry(*dimension).or_default();
        for (item, stats) in &theirs.items {
            match ours.items.get_mut(item) {
                Some(existing) => existing.absorb(stats, max_provenance, intervals),
                None => {
                    ours.items.insert(item.clone(), stats.clone());
                }
            }
        }
    }
    for (dimension, ours) in &mut dimensions {
        recollapse(
            *dimension,
            &mut ours.items,
            &left.generalise,
            max_provenance,
            intervals,
        );
        ours.stats = DimensionStats::of(&ours.items);
    }

    let mut syscall_rates = BTreeMap::new();
    let names: BTreeSet<&String> = left
        .syscall_rates
        .keys()
        .chain(right.syscall_rates.keys())
        .collect();
    for name in names {
        let l = left
            .syscall_rates
            .get(name)
            .copied()
            .unwrap_or_else(|| RateStats::zeros(left.learning.rate_intervals));
        let r = right
            .syscall_rates
            .get(name)
            .copied()
            .unwrap_or_else(|| RateStats::zeros(right.learning.rate_intervals));
        syscall_rates.insert(name.clone(), l.merge(&r));
    }

    let nodes: BTreeSet<&str> = left
        .node
        .split(',')
        .chain(right.node.split(','))
        .filter(|n| !n.is_empty())
        .collect();
    Ok(Baseline {
        format: FORMAT.to_owned(),
        version: VERSION,
        workload: left.workload.clone(),
        created: left.created.max(right.created),
        node: nodes.into_iter().collect::<Vec<_>>().join(","),
        partial: left.partial || right.partial,
        metadata: left.metadata.merge(&right.metadata),
        learning: LearningSummary {
            started_at: left.learning.started_at.min(right.learning.started_at),
            ended_at: left.learning.ended_at.max(right.learning.ended_at),
            last_new_item_at: left
                .learning
                .last_new_item_at
                .max(right.learning.last_new_item_at),
            intervals,
            interval_ms: left.learning.interval_ms,
            rate_intervals: left.learning.rate_intervals + right.learning.rate_intervals,
        },
        generalise: left.generalise,
        // The first of the two in a fixed order, so that merging does not depend on order.
        unstable_reason: match (left.unstable_reason, right.unstable_reason) {
            (Some(l), Some(r)) => Some(if format!("{l:?}") <= format!("{r:?}") {
                l
            } else {
                r
            }),
            (l, r) => l.or(r),
        },
        dimensions,
        syscall_rates,
        calibration: None,
        models: BTreeMap::new(),
    })
}

/// Applies collapse to a whole item set: items covered by an existing collapse key are folded
/// into it, then every key with more siblings than the threshold collapses.
fn recollapse(
    dimension: Dimension,
    items: &mut BTreeMap<String, ItemStats>,
    config: &GeneraliseConfig,
    max_provenance: usize,
    intervals: u64,
) {
    let Some(threshold) = config.collapse_after(dimension) else {
        return;
    };
    let mut siblings: HashMap<String, u32> = HashMap::new();
    for item in items.keys() {
        if let Some(key) = generalise::collapse_key(dimension, item) {
            *siblings.entry(key).or_default() += 1;
        }
    }
    let mut keys: Vec<String> = siblings
        .into_iter()
        .filter(|(key, count)| *count > threshold || items.contains_key(key))
        .map(|(key, _)| key)
        .collect();
    keys.sort();
    for key in keys {
        collapse_items(items, dimension, &key, max_provenance, intervals);
    }
}

/// What changed from one baseline to another, per dimension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineDiff {
    /// Dimensions with changes only.
    pub dimensions: BTreeMap<Dimension, DimensionDiff>,
    /// Syscalls with rate statistics only in the newer baseline.
    pub syscall_rates_added: Vec<String>,
    /// Syscalls with rate statistics only in the older baseline.
    pub syscall_rates_removed: Vec<String>,
}

/// Items added and removed in one dimension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DimensionDiff {
    /// Items in the newer baseline only, in order.
    pub added: Vec<String>,
    /// Items in the older baseline only, in order.
    pub removed: Vec<String>,
    /// The version that introduced each added item the newer baseline says one introduced
    /// (rollout inheritance: [`ItemStats::introduced_by`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub introduced_by: BTreeMap<String, Introduced>,
}

impl BaselineDiff {
    /// Whether the two baselines know the same items and syscalls.
    pub fn is_empty(&self) -> bool {
        self.dimensions.is_empty()
            && self.syscall_rates_added.is_empty()
            && self.syscall_rates_removed.is_empty()
    }
}

/// The items `new` knows that `old` does not (added) and the reverse (removed). Counts are not
/// compared: a diff answers "what behaviour changed", which is what a reviewer approves.
pub fn diff(old: &Baseline, new: &Baseline) -> BaselineDiff {
    let mut result = BaselineDiff::default();
    for dimension in Dimension::ALL {
        let empty = BTreeMap::new();
        let before = old.dimensions.get(&dimension).map_or(&empty, |d| &d.items);
        let after = new.dimensions.get(&dimension).map_or(&empty, |d| &d.items);
        let added: Vec<String> = after
            .keys()
            .filter(|k| !before.contains_key(*k))
            .cloned()
            .collect();
        let removed: Vec<String> = before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .cloned()
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            let introduced_by = added
                .iter()
                .filter_map(|item| {
                    let by = after.get(item)?.introduced_by.clone()?;
                    Some((item.clone(), by))
                })
                .collect();
            result.dimensions.insert(
                dimension,
                DimensionDiff {
                    added,
                    removed,
                    introduced_by,
                },
            );
        }
    }
    result.syscall_rates_added = new
        .syscall_rates
        .keys()
        .filter(|k| !old.syscall_rates.contains_key(*k))
        .cloned()
        .collect();
    result.syscall_rates_removed = old
        .syscall_rates
        .keys()
        .filter(|k| !new.syscall_rates.contains_key(*k))
        .cloned()
        .collect();
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::observation::{FileMode, Observation};
    use crate::profile::{ProfileConfig, Provenance};

    const MIN: u64 = 60_000;

    fn nginx() -> WorkloadKey {
        WorkloadKey::from_raw("docker.io/library/nginx:1.25")
    }

    fn learned(node: &str, execs: &[&str]) -> Baseline {
        let mut p = Profile::new(nginx(), node, 0, ProfileConfig::default());
        let here = Provenance::new(node, Some("c1"));
        for (i, exe) in execs.iter().enumerate() {
            let _ = p.observe(&Observation::exec(exe), i as u64 * MIN, &here);
        }
        let _ = p.observe(
            &Observation::file("/proc/42/stat", FileMode::Read),
            MIN,
            &here,
        );
        p.observe_syscall_counts(&[("read", 10)], 60.0, MIN, &here)
            .unwrap();
        Baseline::freeze(&p, 10 * MIN, false)
    }

    #[test]
    fn freeze_keeps_items_and_stats() {
        let b = learned("node-a", &["/bin/a", "/bin/b", "/bin/a"]);
        assert_eq!(b.format, FORMAT);
        assert_eq!(b.version, VERSION);
        assert_eq!(b.learning.intervals, 3);
        assert_eq!(b.items_total(), 4);
        let exec = b.stats(Dimension::Exec);
        assert_eq!(
            exec,
            DimensionStats {
                items: 2,
                observations: 3,
                singletons: 1,
                item_intervals: 3
            }
        );
        assert_eq!(
            b.item(Dimension::File, "r /proc/<pid>/stat").unwrap().count,
            1
        );
        assert_eq!(b.learning.rate_intervals, 1);
        b.validate().unwrap();
    }

    #[test]
    fn json_round_trip_is_exact_and_stable() {
        let b = learned("node-a", &["/bin/a", "/bin/b"]);
        let json = b.to_json_pretty().unwrap();
        let back = Baseline::from_json_slice(json.as_bytes()).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.to_json_pretty().unwrap(), json);
        assert!(json.contains("\"format\": \"habitd-baseline\""));
        assert!(json.contains("\"exec\": {"));
    }

    fn reject(json: &str) -> ProfileError {
        Baseline::from_json_slice(json.as_bytes()).unwrap_err()
    }

    fn valid_json() -> serde_json::Value {
        serde_json::from_str(&learned("node-a", &["/bin/a"]).to_json_pretty().unwrap()).unwrap()
    }

    /// Baselines written before the `file_change` dimension (no such key in `dimensions`, no
    /// such limit) still read, with the dimension empty; one that has it round-trips.
    #[test]
    fn file_change_dimension_is_optional_in_files() {
        let mut p = Profile::new(nginx(), "node-a", 0, ProfileConfig::default());
        let here = Provenance::new("node-a", Some("c1"));
        let rotation = Observation::file_change(
            "rename",
            "/var/log/nginx/access.log",
            Some("/var/log/nginx/access.log.1"),
        );
        let _ = p.observe(&rotation, MIN, &here);
        let b = Baseline::freeze(&p, 10 * MIN, false);
        let item = "rename /var/log/nginx/access.log -> /var/log/nginx/access.log.<num>";
        assert!(b.knows_item(Dimension::FileChange, item));
        let back = Baseline::from_json_slice(b.to_json_pretty().unwrap().as_bytes()).unwrap();
        assert_eq!(back, b);

        let mut v = valid_json();
        v["dimensions"]
            .as_object_mut()
            .unwrap()
            .remove("file_change");
        fn drop_limit(v: &mut serde_json::Value) {
            if let Some(o) = v.as_object_mut() {
                if o.contains_key("privileged") && o.contains_key("provenance_per_item") {
                    o.remove("file_change");
                }
                o.values_mut().for_each(drop_limit);
            }
        }
        drop_limit(&mut v);
        assert!(!v.to_string().contains("file_change"), "{v}");
        let old = Baseline::from_json_slice(v.to_string().as_bytes()).unwrap();
        assert_eq!(old.stats(Dimension::FileChange), DimensionStats::default());
        assert!(!old.knows_item(Dimension::FileChange, item));
    }

    #[test]
    fn rejects_wrong_format_and_version() {
        let mut v = valid_json();
        v["format"] = "something-else".into();
        let e = reject(&v.to_string());
        assert!(
            matches!(&e, ProfileError::BaselineInvalid { field, .. } if field == "format"),
            "{e}"
        );
        let mut v = valid_json();
        v["version"] = (VERSION + 1).into();
        let e = reject(&v.to_string());
        assert!(e.to_string().contains("version"), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("{} is not supported", VERSION + 1)),
            "{e}"
        );
        // Version 1 (no metadata) still reads, as this version.
        let mut v = valid_json();
        v["version"] = 1.into();
        v.as_object_mut().unwrap().remove("metadata");
        let old = Baseline::from_json_slice(v.to_string().as_bytes()).unwrap();
        assert_eq!(old.version, VERSION);
        assert_eq!(old.metadata, BaselineMetadata::default());
        let e = reject("{\"hello\": 1}");
        assert!(e.to_string().contains("not a habitd baseline"), "{e}");
    }

    #[test]
    fn a_workload_that_could_name_another_file_is_refused() {
        for key in ["../../etc/cron.d/x", "/var/lib/habitd/db", "a/./b", ""] {
            let mut v = valid_json();
            v["workload"] = key.into();
            let e = reject(&v.to_string());
            assert!(
                matches!(&e, ProfileError::BaselineInvalid { field, .. } if field == "workload"),
                "{key:?}: {e}"
            );
        }
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let json = learned("node-a", &["/bin/a"]).to_json_pretty().unwrap();
        let broken = json.replacen("\"partial\": false", "\"partial\": nope", 1);
        match reject(&broken) {
            ProfileError::BaselineSyntax {
                line,
                column,
                message,
            } => {
                let expected_line = json
                    .lines()
                    .position(|l| l.contains("\"partial\""))
                    .unwrap()
                    + 1;
                assert_eq!(line, expected_line);
                assert!(column > 1);
                assert!(!message.contains(" at line "), "{message}");
            }
            other => panic!("{other}"),
        }
        let typo = json.replacen("\"partial\"", "\"partiall\"", 1);
        let e = reject(&typo);
        assert!(e.to_string().contains("unknown field `partiall`"), "{e}");
        let e = reject(&json.replacen("\"exec\"", "\"exek\"", 1));
        assert!(e.to_string().contains("unknown variant `exek`"), "{e}");
    }

    #[test]
    fn rejects_inconsistent_content_naming_the_field() {
        let mut v = valid_json();
        v["dimensions"]["exec"]["items"]["/bin/a"]["count"] = 0.into();
        let e = reject(&v.to_string());
        assert!(
            e.to_string()
                .contains(r#"dimensions.exec.items["/bin/a"].count"#),
            "{e}"
        );

        let mut v = valid_json();
        v["dimensions"]["exec"]["stats"]["items"] = 7.into();
        let e = reject(&v.to_string());
        assert!(e.to_string().contains("dimensions.exec.stats"), "{e}");

        let mut v = valid_json();
        let item = v["dimensions"]["file"]["items"]["r /proc/<pid>/stat"].clone();
        v["dimensions"]["file"]["items"]["r /proc/77/stat"] = item;
        v["dimensions"]["file"]["stats"]["items"] = 2.into();
        v["dimensions"]["file"]["stats"]["observations"] = 2.into();
        v["dimensions"]["file"]["stats"]["singletons"] = 2.into();
        v["dimensions"]["file"]["stats"]["item_intervals"] = 2.into();
        let e = reject(&v.to_string());
        assert!(e.to_string().contains("not in generalised form"), "{e}");
        assert!(e.to_string().contains("r /proc/<pid>/stat"), "{e}");

        let mut v = valid_json();
        v["dimensions"]["exec"]["items"]["/bin/a"]["first_seen"] = u64::MAX.into();
        let e = reject(&v.to_string());
        assert!(e.to_string().contains(".first_seen"), "{e}");

        let mut v = valid_json();
        v["learning"]["interval_ms"] = 0.into();
        assert!(
            reject(&v.to_string())
                .to_string()
                .contains("learning.interval_ms")
        );

        let mut v = valid_json();
        v["calibration"] = serde_json::json!({
            "method": "m", "intervals": 99, "target_false_alarm_rate": 0.01, "per_dimension": {}
        });
        let e = reject(&v.to_string());
        assert!(e.to_string().contains("calibration.intervals"), "{e}");

        // A value of the wrong type is named by its path, not only by its line and column (a
        // dimension, an enum key, shows as `?`: the item and the position say which).
        let mut v = valid_json();
        v["dimensions"]["exec"]["items"]["/bin/a"]["count"] = "many".into();
        let e = reject(&v.to_string());
        assert!(e.to_string().contains(".items./bin/a.count`"), "{e}");
        let mut v = valid_json();
        v["learning"] = "yesterday".into();
        let e = reject(&v.to_string());
        assert!(e.to_string().contains("field `learning`"), "{e}");
    }

    #[test]
    fn merge_unites_items_and_sums_counts() {
        let a = learned("node-a", &["/bin/a", "/bin/b"]);
        let mut b = learned("node-b", &["/bin/a", "/bin/c"]);
        b.learning.started_at = 0;
        b.created += 1;
        let m = merge(&a, &b).unwrap();
        m.validate().unwrap();
        let items: Vec<&str> = m.items(Dimension::Exec).map(|(k, _)| k).collect();
        assert_eq!(items, ["/bin/a", "/bin/b", "/bin/c"]);
        let shared = m.item(Dimension::Exec, "/bin/a").unwrap();
        assert_eq!(shared.count, 2);
        assert_eq!(shared.intervals_seen, 2);
        assert_eq!(shared.first_seen, 0);
        assert_eq!(shared.provenance.len(), 2);
        assert_eq!(m.node, "node-a,node-b");
        assert_eq!(
            m.learning.intervals,
            a.learning.intervals + b.learning.intervals
        );
        assert_eq!(m.created, b.created);
        assert_eq!(m.syscall_rates["read"].intervals, 2);
        assert_eq!(m.stats(Dimension::Exec).items, 3);
        assert!(m.calibration.is_none());
        // Merging is symmetric in content.
        let m2 = merge(&b, &a).unwrap();
        assert_eq!(m2.dimensions, m.dimensions);
    }

    #[test]
    fn merge_recollapses_the_union() {
        let mut config = ProfileConfig::default();
        config.generalise.dir_collapse_after = 3;
        let here = Provenance::new("n", None);
        let build = |names: &[&str]| {
            let mut p = Profile::new(nginx(), "n", 0, config);
            for name in names {
                let _ = p.observe(&Observation::exec(&format!("/opt/{name}")), 0, &here);
            }
            Baseline::freeze(&p, 0, false)
        };
        let a = build(&["a", "b"]);
        let b = build(&["c", "d"]);
        let m = merge(&a, &b).unwrap();
        let items: Vec<&str> = m.items(Dimension::Exec).map(|(k, _)| k).collect();
        assert_eq!(items, ["/opt/*"]);
        assert_eq!(m.item(Dimension::Exec, "/opt/*").unwrap().count, 4);
        // A union with an already collapsed directory folds the siblings in.
        let c = build(&["a", "b", "c", "d"]);
        let d = build(&["zz"]);
        let m = merge(&c, &d).unwrap();
        let items: Vec<&str> = m.items(Dimension::Exec).map(|(k, _)| k).collect();
        assert_eq!(items, ["/opt/*"]);
    }

    #[test]
    fn merge_refuses_different_workloads_and_settings() {
        let a = learned("node-a", &["/bin/a"]);
        let mut b = a.clone();
        b.workload = WorkloadKey::host();
        assert!(matches!(
            merge(&a, &b),
            Err(ProfileError::WorkloadMismatch { .. })
        ));
        let mut b = a.clone();
        b.learning.interval_ms = 1;
        assert!(matches!(
            merge(&a, &b),
            Err(ProfileError::MergeConflict {
                field: "learning.interval_ms",
                ..
            })
        ));
    }

    fn version(tag: &str) -> Introduced {
        Introduced {
            version: format!("docker.io/library/nginx:{tag}"),
            digest: None,
            image_id: Some(format!("sha256:{}", "e".repeat(64))),
        }
    }

    #[test]
    fn items_a_new_version_added_name_it_and_the_diff_cites_it() {
        let old = learned("node-a", &["/bin/a"]);
        let mut new = learned("node-a", &["/bin/a", "/bin/new"]);
        assert!(new.knows_item(Dimension::Exec, "/bin/a"));
        assert!(!old.knows_item(Dimension::Exec, "/bin/new"));
        assert!(old.knows(&Observation::file("/proc/7/stat", FileMode::Read)));
        assert_eq!(new.mark_introduced(&old, &version("1.26")), 1);
        // Marking again changes nothing: an item keeps the version that introduced it.
        assert_eq!(new.mark_introduced(&old, &version("1.27")), 0);
        new.validate().unwrap();
        let json = new.to_json_pretty().unwrap();
        assert_eq!(Baseline::from_json_slice(json.as_bytes()).unwrap(), new);
        assert!(json.contains("\"introduced_by\""), "{json}");
        let d = diff(&old, &new);
        let exec = &d.dimensions[&Dimension::Exec];
        assert_eq!(exec.added, ["/bin/new"]);
        assert_eq!(exec.introduced_by["/bin/new"], version("1.26"));
        assert_eq!(
            exec.introduced_by["/bin/new"].to_string(),
            "docker.io/library/nginx:1.26 (sha256:eeeeeeeeeeee)"
        );
        // Items learned without inheritance name nothing, in the file and the diff.
        assert!(!old.to_json_pretty().unwrap().contains("introduced_by"));
        assert!(
            diff(&new, &old).dimensions[&Dimension::Exec]
                .introduced_by
                .is_empty()
        );

        // Merging keeps the version, in any order; of two versions, the same one either way.
        let plain = learned("node-b", &["/bin/new"]);
        for (l, r) in [(&new, &plain), (&plain, &new)] {
            let m = merge(l, r).unwrap();
            let by = &m.item(Dimension::Exec, "/bin/new").unwrap().introduced_by;
            assert_eq!(by.as_ref(), Some(&version("1.26")));
        }
        let mut later = learned("node-b", &["/bin/new"]);
        later.mark_introduced(&old, &version("1.27"));
        let a = merge(&new, &later).unwrap();
        let b = merge(&later, &new).unwrap();
        assert_eq!(a.dimensions, b.dimensions);

        // An empty version is refused, naming the field.
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["dimensions"]["exec"]["items"]["/bin/new"]["introduced_by"]["version"] = "".into();
        let e = reject(&v.to_string());
        assert!(e.to_string().contains(".introduced_by.version"), "{e}");
    }

    #[test]
    fn metadata_records_what_the_runtime_said_about_the_containers() {
        use crate::profile::ContainerOrigin;
        let mut p = Profile::new(nginx(), "node-a", 0, ProfileConfig::default());
        let web = BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("pod-template-hash".to_owned(), "abc".to_owned()),
        ]);
        let first = ContainerOrigin {
            digest: Some("sha256:d1"),
            image_id: Some("sha256:i1"),
            namespace: Some("shop"),
            labels: &web,
        };
        assert!(p.note_container(&first));
        assert!(
            !p.note_container(&first),
            "the same container again changes nothing"
        );
        let b = Baseline::freeze(&p, 1, false);
        assert_eq!(b.metadata.labels, web);
        assert_eq!(b.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(b.metadata.digests.len(), 1);
        assert_eq!(b.metadata.image_ids.len(), 1);

        // Another pod of the workload: labels in common only.
        let other = BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("pod-template-hash".to_owned(), "def".to_owned()),
        ]);
        assert!(p.note_container(&ContainerOrigin {
            digest: None,
            image_id: Some("sha256:i1"),
            namespace: Some("shop"),
            labels: &other,
        }));
        let b = Baseline::freeze(&p, 1, false);
        assert_eq!(
            b.metadata.labels,
            BTreeMap::from([("app".to_owned(), "web".to_owned())])
        );
        assert_eq!(b.metadata.namespace.as_deref(), Some("shop"));
        // A container outside Kubernetes: no labels in common, no one namespace.
        let none = BTreeMap::new();
        assert!(p.note_container(&ContainerOrigin {
            digest: None,
            image_id: None,
            namespace: None,
            labels: &none,
        }));
        let b = Baseline::freeze(&p, 1, false);
        assert!(b.metadata.labels.is_empty());
        assert_eq!(b.metadata.namespace, None);
        // The profile keeps it through a checkpoint (JSON), and old profiles without it read.
        let json = serde_json::to_value(&p).unwrap();
        let back: Profile = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, p);
        let mut old = json;
        old.as_object_mut().unwrap().remove("origin");
        let back: Profile = serde_json::from_value(old).unwrap();
        assert!(back.origin().labels.is_none());
    }

    #[test]
    fn diff_lists_added_and_removed() {
        let a = learned("node-a", &["/bin/a", "/bin/b"]);
        let b = learned("node-a", &["/bin/a", "/bin/c"]);
        let d = diff(&a, &b);
        assert_eq!(d.dimensions.len(), 1);
        assert_eq!(d.dimensions[&Dimension::Exec].added, ["/bin/c"]);
        assert_eq!(d.dimensions[&Dimension::Exec].removed, ["/bin/b"]);
        assert!(diff(&a, &a).is_empty());
        assert!(!d.is_empty());
    }
}

//! The profile: what one workload did while it was learning.
//!
//! A [`Profile`] holds, per [`Dimension`], every generalised item the workload produced with
//! when, how often and where it was seen ([`ItemStats`]), plus running statistics of syscall
//! rates ([`RateStats`]). It is bounded ([`ProfileLimits`]): reaching a limit refuses the new
//! item, returns [`Observed::LimitReached`] and records an [`UnstableReason`], so that the
//! daemon can mark the workload unstable instead of growing without end.
//!
//! Time is cut into learning *intervals* of [`ProfileConfig::interval_ms`]. Each item counts the
//! intervals it was seen in (`intervals_seen`), and the profile counts the intervals in which
//! anything was observed (`intervals`). Calibration uses these counts (an item seen in one
//! interval only would have been novel had that interval been held out), so **the daemon must
//! report an item at least once in every interval in which it occurs** during learning: if the
//! kernel de-duplicates already-seen items, its seen-set must be reset at each interval while
//! a workload is learning.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ProfileError;
use crate::generalise::{self, GeneraliseConfig};
use crate::observation::{Dimension, Observation};
use crate::workload::WorkloadKey;

/// Milliseconds since the Unix epoch. The daemon passes wall-clock time; nothing here reads a
/// clock, which keeps learning deterministic and testable.
pub type UnixMillis = u64;

/// Where an item was seen: which node and which container. Kept so that a reviewer of a
/// baseline can trace a surprising item back to a real run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The node (host name) the daemon ran on.
    pub node: String,
    /// The container id, absent for host processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

impl Provenance {
    /// A provenance on `node`, in `container_id` if any.
    pub fn new(node: impl Into<String>, container_id: Option<&str>) -> Self {
        Self {
            node: node.into(),
            container_id: container_id.map(str::to_owned),
        }
    }
}

/// The version of an image that introduced an item (rollout inheritance): the item was learned
/// while that version learned what changed from its predecessor's baseline, and the
/// predecessor did not know it. `habitctl baseline diff` prints it ("added by …").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Introduced {
    /// The workload key of the version (`repository:tag` or `repository@digest`).
    pub version: String,
    /// Its image's repository digest (`sha256:…`), when the runtime reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Its image id (`sha256:…` of the image's configuration), when the runtime reported one:
    /// what names a locally built image that has no repository digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

impl fmt::Display for Introduced {
    /// `docker.io/shop/web:2.1 (sha256:0123456789ab)`: the version, and its digest (else its
    /// image id) shortened to 12 hex digits as `docker images` shows ids.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.version)?;
        if let Some(id) = self.digest.as_ref().or(self.image_id.as_ref()) {
            let hex = id.strip_prefix("sha256:").unwrap_or(id);
            let short: String = hex.chars().take(12).collect();
            if id.starts_with("sha256:") {
                write!(f, " (sha256:{short})")?;
            } else {
                write!(f, " ({short})")?;
            }
        }
        Ok(())
    }
}

/// What a profile knows about one generalised item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemStats {
    /// When it was first seen.
    pub first_seen: UnixMillis,
    /// When it was last seen.
    pub last_seen: UnixMillis,
    /// How many times it was observed.
    pub count: u64,
    /// In how many distinct learning intervals it was observed (≥ 1, ≤ `count`).
    pub intervals_seen: u64,
    /// Where it was seen: the first provenance, then up to
    /// [`ProfileLimits::provenance_per_item`] − 1 other distinct ones.
    pub provenance: Vec<Provenance>,
    /// The image version that introduced it, for an item a new version added over its
    /// predecessor's baseline (rollout inheritance); absent for items learned otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introduced_by: Option<Introduced>,
}

impl ItemStats {
    /// The stats of an item seen for the first time.
    pub fn new(now: UnixMillis, provenance: &Provenance) -> Self {
        Self {
            first_seen: now,
            last_seen: now,
            count: 1,
            intervals_seen: 1,
            provenance: vec![provenance.clone()],
            introduced_by: None,
        }
    }

    /// Adds the statistics of `other` (the same item seen elsewhere or the siblings of a
    /// collapsed directory): counts summed, the earliest first sighting, the latest last one.
    /// `intervals_seen` is summed and capped at `max_intervals`, since two sets of intervals
    /// may overlap and the sum is only an upper bound. Of two versions that introduced it, the
    /// smaller (by version, then digest) is kept, so that merges do not depend on their order;
    /// an item that one input learned without inheritance keeps the other's version.
    pub fn absorb(&mut self, other: &ItemStats, max_provenance: usize, max_intervals: u64) {
        self.introduced_by = match (self.introduced_by.take(), &other.introduced_by) {
            (Some(ours), Some(theirs)) => Some(ours.min(theirs.clone())),
            (ours, theirs) => ours.or_else(|| theirs.clone()),
        };
        // The provenance of the earlier sighting comes first (ties broken by provenance), then
        // the smallest others: a canonical choice, so that merges do not depend on their order.
        let other_first = (other.first_seen, other.provenance.first());
        let first = if other_first < (self.first_seen, self.provenance.first()) {
            other.provenance.first()
        } else {
            self.provenance.first()
        }
        .cloned();
        let mut rest: Vec<Provenance> = self
            .provenance
            .iter()
            .chain(&other.provenance)
            .filter(|p| Some(*p) != first.as_ref())
            .cloned()
            .collect();
        rest.sort();
        rest.dedup();
        rest.truncate(max_provenance.saturating_sub(1));
        self.provenance = first.into_iter().chain(rest).collect();
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.count = self.count.saturating_add(other.count);
        self.intervals_seen = self
            .intervals_seen
            .saturating_add(other.intervals_seen)
            .min(max_intervals.max(1));
    }
}

/// Adds `p` to a bounded provenance list unless it is there already or the list is full.
/// Allocates only when it adds.
fn add_provenance(list: &mut Vec<Provenance>, p: &Provenance, max: usize) {
    if list.len() < max && !list.contains(p) {
        list.push(p.clone());
    }
}

/// Running statistics (Welford) of one syscall's rate, in calls per second, over learning
/// intervals. Intervals in which the syscall was not made count as rate 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateStats {
    /// How many intervals the statistics cover.
    pub intervals: u64,
    /// Mean rate (calls per second).
    pub mean: f64,
    /// Sum of squared deviations from the mean (Welford's M2).
    pub m2: f64,
    /// Highest rate seen in one interval.
    pub max: f64,
}

impl RateStats {
    /// Statistics of `intervals` intervals of rate 0: how a syscall first seen late enters.
    pub fn zeros(intervals: u64) -> Self {
        Self {
            intervals,
            ..Self::default()
        }
    }

    /// Adds one interval's rate.
    pub fn update(&mut self, rate: f64) {
        self.intervals += 1;
        let delta = rate - self.mean;
        self.mean += delta / self.intervals as f64;
        self.m2 += delta * (rate - self.mean);
        self.max = self.max.max(rate);
    }

    /// Combines the statistics of two disjoint sets of intervals (Chan et al.).
    pub fn merge(&self, other: &RateStats) -> RateStats {
        let n = self.intervals + other.intervals;
        if n == 0 {
            return RateStats::default();
        }
        let (na, nb) = (self.intervals as f64, other.intervals as f64);
        let delta = other.mean - self.mean;
        RateStats {
            intervals: n,
            // Written symmetrically, so that merging does not depend on argument order.
            mean: (self.mean * na + other.mean * nb) / n as f64,
            m2: self.m2 + other.m2 + delta * delta * na * nb / n as f64,
            max: self.max.max(other.max),
        }
    }

    /// Sample variance of the rate (0 with fewer than two intervals).
    pub fn variance(&self) -> f64 {
        if self.intervals < 2 {
            0.0
        } else {
            self.m2 / (self.intervals - 1) as f64
        }
    }

    /// Sample standard deviation of the rate.
    pub fn std_dev(&self) -> f64 {
        self.variance().sqrt()
    }
}

/// How big a profile may grow. Reaching a per-dimension or the total limit makes the profile
/// unstable: the workload does more different things than a baseline can usefully describe
/// (or it is being flooded on purpose), and the daemon should say so rather than learn on.
///
/// The defaults bound a profile to roughly 2–3 MB (an item costs ~250 bytes with its key and
/// statistics), so that a node with a hundred workloads stays within a few hundred MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileLimits {
    /// Distinct executables. 512: a busy build container runs a few hundred tools.
    pub exec: u32,
    /// Distinct parent → child edges. 1024: about twice the executables.
    pub process_edge: u32,
    /// Distinct argument shapes. 2048: after generalisation, a few per executable.
    pub args: u32,
    /// Distinct file items (path and mode). 4096: directory collapse keeps real services far
    /// below this; reaching it means the workload opens unbounded distinct paths.
    pub file: u32,
    /// Distinct listening ports. 64.
    pub listen: u32,
    /// Distinct inbound peers (per local port). 1024: network collapse groups busy clients.
    pub inbound: u32,
    /// Distinct outbound destinations. 1024.
    pub outbound: u32,
    /// Distinct syscalls. 512: more than x86-64 and arm64 define, so never reached honestly.
    pub syscall: u32,
    /// Distinct privileged operations. 256.
    pub privileged: u32,
    /// Distinct file changes (operation and path(s)). 1024: renames, deletions and truncations
    /// of a service's own files generalise and collapse like opens.
    pub file_change: u32,
    /// Items over all dimensions. 8192, below the sum of the per-dimension limits: a workload
    /// may be large in one dimension, not in all.
    pub total: u32,
    /// Provenances kept per item (the first one plus distinct others). 4: enough to show that
    /// an item came from several nodes or containers, without growing with the fleet.
    pub provenance_per_item: u32,
}

impl Default for ProfileLimits {
    fn default() -> Self {
        Self {
            exec: 512,
            process_edge: 1024,
            args: 2048,
            file: 4096,
            listen: 64,
            inbound: 1024,
            outbound: 1024,
            syscall: 512,
            privileged: 256,
            file_change: 1024,
            total: 8192,
            provenance_per_item: 4,
        }
    }
}

impl ProfileLimits {
    /// The item limit of one dimension.
    pub fn for_dimension(&self, dimension: Dimension) -> u32 {
        match dimension {
            Dimension::Exec => self.exec,
            Dimension::ProcessEdge => self.process_edge,
            Dimension::Args => self.args,
            Dimension::File => self.file,
            Dimension::Listen => self.listen,
            Dimension::Inbound => self.inbound,
            Dimension::Outbound => self.outbound,
            Dimension::Syscall => self.syscall,
            Dimension::Privileged => self.privileged,
            Dimension::FileChange => self.file_change,
        }
    }
}

/// Everything that shapes how a profile learns. Stored with the profile so that a profile
/// resumed after a restart keeps learning the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileConfig {
    /// Size limits.
    pub limits: ProfileLimits,
    /// Collapse thresholds.
    pub generalise: GeneraliseConfig,
    /// Length of a learning interval in milliseconds. 60 000: short enough that a day of
    /// learning gives ~1 400 intervals to calibrate on, long enough that periodic jobs of a
    /// few seconds fall into one interval.
    pub interval_ms: u64,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        Self {
            limits: ProfileLimits::default(),
            generalise: GeneraliseConfig::default(),
            interval_ms: 60_000,
        }
    }
}

/// What [`Profile::observe`] did with an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Observed {
    /// The item was new and has been learned.
    New,
    /// The item (or the collapsed directory or network it falls in) was known.
    Known,
    /// The item was new but a limit is reached; it was not learned and the profile is now
    /// unstable.
    LimitReached,
}

/// Why a profile stopped being able to learn everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum UnstableReason {
    /// One dimension reached its item limit.
    DimensionLimit {
        /// The dimension.
        dimension: Dimension,
        /// Its limit.
        limit: u32,
    },
    /// The profile reached its total item limit.
    TotalLimit {
        /// The limit.
        limit: u32,
    },
    /// The syscall-sequence learning reached a bound of new 6-grams (in total, or in one
    /// counters interval of one cgroup): threads making syscalls in ever new orders.
    SequenceLimit {
        /// The limit.
        limit: u32,
    },
}

impl fmt::Display for UnstableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnstableReason::DimensionLimit { dimension, limit } => {
                write!(f, "{dimension} reached its limit of {limit} items")
            }
            UnstableReason::TotalLimit { limit } => {
                write!(f, "the profile reached its limit of {limit} items")
            }
            UnstableReason::SequenceLimit { limit } => {
                write!(
                    f,
                    "syscall-sequence learning reached a limit of {limit} new 6-grams"
                )
            }
        }
    }
}

/// Most image digests and image ids a profile (and a baseline's metadata) records.
pub const MAX_IMAGES: usize = 64;

/// One container of a workload as its runtime describes it: the part a baseline records in
/// its metadata (see [`Profile::note_container`]).
#[derive(Debug, Clone, Copy)]
pub struct ContainerOrigin<'a> {
    /// The repository digest of its image (`sha256:…`), if known.
    pub digest: Option<&'a str>,
    /// The id of its image (`sha256:…`), if known.
    pub image_id: Option<&'a str>,
    /// Its pod's Kubernetes namespace, if it runs in a pod.
    pub namespace: Option<&'a str>,
    /// Its pod's labels (empty outside Kubernetes).
    pub labels: &'a BTreeMap<String, String>,
}

/// What the container runtimes said about the containers a profile learned from: the
/// baseline's `metadata.digests`, `image_ids`, `namespace` and `labels` come from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origins {
    /// Repository digests of their images (at most [`MAX_IMAGES`], the smallest).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub digests: BTreeSet<String>,
    /// Ids of their images (at most [`MAX_IMAGES`], the smallest).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub image_ids: BTreeSet<String>,
    /// Their pods' namespaces (`null` for a container outside Kubernetes). At most two are
    /// kept: two already mean that there is no one namespace.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub namespaces: BTreeSet<Option<String>>,
    /// The pod labels every described container carried (absent before the first one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

impl Origins {
    /// The one namespace every described container's pod is in, if there is one.
    pub fn namespace(&self) -> Option<&str> {
        match self.namespaces.first() {
            Some(Some(namespace)) if self.namespaces.len() == 1 => Some(namespace),
            _ => None,
        }
    }

    /// Adds one container; returns whether anything changed.
    pub fn note(&mut self, container: &ContainerOrigin<'_>) -> bool {
        let before = self.clone();
        let add = |set: &mut BTreeSet<String>, value: Option<&str>| {
            if let Some(v) = value.filter(|v| !v.is_empty())
                && !set.contains(v)
            {
                set.insert(v.to_owned());
                while set.len() > MAX_IMAGES {
                    set.pop_last();
                }
            }
        };
        add(&mut self.digests, container.digest);
        add(&mut self.image_ids, container.image_id);
        let namespace = container
            .namespace
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        if self.namespaces.len() < 2 {
            self.namespaces.insert(namespace);
        }
        match &mut self.labels {
            Some(labels) => labels.retain(|k, v| container.labels.get(k) == Some(v)),
            None => self.labels = Some(container.labels.clone()),
        }
        *self != before
    }

    fn is_empty(&self) -> bool {
        *self == Origins::default()
    }
}

/// What [`Profile::observe_syscall_counts`] learned from one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RatesObserved {
    /// Syscalls made for the first time.
    pub new_syscalls: u32,
    /// Whether a syscall was refused because a limit is reached.
    pub limit_reached: bool,
}

/// Scratch state: reused buffers and the sibling counts of collapsible items. Not persisted
/// (rebuilt on first use) and ignored by equality.
#[derive(Debug, Clone, Default)]
struct Scratch {
    item: String,
    key: String,
    /// Distinct learned items per collapse key, built lazily from the items.
    siblings: Option<HashMap<(Dimension, String), u32>>,
}

impl PartialEq for Scratch {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What one workload did while learning. See the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    workload: WorkloadKey,
    node: String,
    config: ProfileConfig,
    learning_started_at: UnixMillis,
    last_observation_at: Option<UnixMillis>,
    last_new_item_at: Option<UnixMillis>,
    intervals: u64,
    last_interval: Option<u64>,
    dimensions: BTreeMap<Dimension, BTreeMap<String, ItemStats>>,
    syscall_rates: BTreeMap<String, RateStats>,
    rate_intervals: u64,
    unstable_reason: Option<UnstableReason>,
    refused: u64,
    /// What the runtimes said about the containers it learned from (absent in profiles
    /// checkpointed by older versions: read as empty).
    #[serde(default, skip_serializing_if = "Origins::is_empty")]
    origin: Origins,
    #[serde(skip)]
    scratch: Scratch,
}

impl Profile {
    /// An empty profile of `workload`, learning on `node` from `started_at`.
    pub fn new(
        workload: WorkloadKey,
        node: impl Into<String>,
        started_at: UnixMillis,
        config: ProfileConfig,
    ) -> Self {
        Self {
            workload,
            node: node.into(),
            config,
            learning_started_at: started_at,
            last_observation_at: None,
            last_new_item_at: None,
            intervals: 0,
            last_interval: None,
            dimensions: BTreeMap::new(),
            syscall_rates: BTreeMap::new(),
            rate_intervals: 0,
            unstable_reason: None,
            refused: 0,
            origin: Origins::default(),
            scratch: Scratch::default(),
        }
    }

    /// Records what the runtime says about one container the workload runs in (its image's
    /// digest and id, its pod's namespace and labels): the frozen baseline's metadata. The
    /// daemon calls it once per container; calling it again is harmless. Returns whether
    /// anything changed.
    pub fn note_container(&mut self, container: &ContainerOrigin<'_>) -> bool {
        self.origin.note(container)
    }

    /// What the runtimes said about the containers it learned from.
    pub fn origin(&self) -> &Origins {
        &self.origin
    }

    /// Learns one observation made at `now` at `provenance`.
    ///
    /// The item is generalised; if it (or the collapsed directory or network it falls in) is
    /// known, its statistics are updated, without allocating (unless a new provenance is
    /// recorded). A new item is added, unless a limit is reached; adding it may collapse its
    /// directory or network (see [`crate::generalise`]).
    pub fn observe(
        &mut self,
        observation: &Observation,
        now: UnixMillis,
        provenance: &Provenance,
    ) -> Observed {
        // An event that reaches user space late (after a later interval was entered) counts in
        // the current interval: counting it in the interval it was made in would give its item
        // an interval the profile never counted (`intervals_seen > intervals`, a baseline
        // that fails validation and can never be frozen).
        let now = self.last_observation_at.map_or(now, |t| t.max(now));
        let interval = self.enter_interval(now);
        let dimension = observation.dimension;
        let start = self.learning_started_at;
        let interval_ms = self.config.interval_ms.max(1);
        let max_provenance = self.config.limits.provenance_per_item as usize;
        let touch = |stats: &mut ItemStats| {
            if stats.last_seen.saturating_sub(start) / interval_ms < interval {
                stats.intervals_seen += 1;
            }
            stats.last_seen = stats.last_seen.max(now);
            stats.count = stats.count.saturating_add(1);
            add_provenance(&mut stats.provenance, provenance, max_provenance);
        };

        let scratch = &mut self.scratch;
        scratch.item.clear();
        observation.generalise_into(&mut scratch.item);
        let items = self.dimensions.entry(dimension).or_default();
        if let Some(stats) = items.get_mut(scratch.item.as_str()) {
            touch(stats);
            return Observed::Known;
        }
        scratch.key.clear();
        let has_key = generalise::collapse_key_into(dimension, &scratch.item, &mut scratch.key);
        if has_key && let Some(stats) = items.get_mut(scratch.key.as_str()) {
            touch(stats);
            return Observed::Known;
        }

        if let Some(reason) = self.limit_reached(dimension) {
            self.refused += 1;
            self.unstable_reason.get_or_insert(reason);
            return Observed::LimitReached;
        }
        let item = self.scratch.item.clone();
        self.dimensions
            .entry(dimension)
            .or_default()
            .insert(item, ItemStats::new(now, provenance));
        self.last_new_item_at = Some(now);
        if has_key {
            let key = std::mem::take(&mut self.scratch.key);
            self.count_sibling(dimension, &key);
            self.scratch.key = key;
        }
        Observed::New
    }

    /// Learns an item that was held (a rule flagged it) until it proved habitual or an operator
    /// approved it, with the history it was held with: its first sighting, count and the
    /// learning intervals it was seen in. Learned as one sighting at `now`, an item held
    /// through three maintenance rounds would look like a one-off, and a single one-off in a
    /// decisive dimension (`exec`) keeps that dimension from ever alerting on its own
    /// (`habit_models::calibrate`).
    pub fn learn_held(
        &mut self,
        held: &crate::held::HeldItem,
        now: UnixMillis,
        provenance: &Provenance,
    ) -> Observed {
        let observed = self.observe(
            &Observation::new(held.dimension, &held.item),
            now,
            provenance,
        );
        if observed == Observed::New {
            let (start, intervals) = (self.learning_started_at, self.intervals);
            if let Some(stats) = self
                .dimensions
                .get_mut(&held.dimension)
                .and_then(|items| items.get_mut(held.item.as_str()))
            {
                // Never before learning started, never after this sighting (no `clamp`: a clock
                // that went backwards must not panic).
                stats.first_seen = held.first_seen.max(start).min(stats.first_seen);
                stats.count = held.count.max(stats.count);
                stats.intervals_seen = held.intervals.clamp(1, intervals.max(1));
            }
        }
        observed
    }

    /// Learns one interval of syscall counts (`(name, count)`, in any order; a syscall may
    /// appear more than once) covering `interval_secs` seconds.
    ///
    /// Each syscall with a non-zero count is also learned as a `syscall` item (so the set of
    /// syscalls, which a seccomp export needs, comes from the counters without one event per
    /// syscall). Rate statistics are kept per syscall name; pass syscalls the daemon cannot
    /// name as `sys_<nr>`.
    pub fn observe_syscall_counts<S: AsRef<str>>(
        &mut self,
        counts: &[(S, u64)],
        interval_secs: f64,
        now: UnixMillis,
        provenance: &Provenance,
    ) -> Result<RatesObserved, ProfileError> {
        if !(interval_secs.is_finite() && interval_secs > 0.0) {
            return Err(ProfileError::InvalidInterval {
                secs: interval_secs,
            });
        }
        let mut result = RatesObserved::default();
        let mut this_interval: HashMap<String, u64> = HashMap::with_capacity(counts.len());
        for (name, count) in counts {
            if *count == 0 {
                continue;
            }
            let observation = Observation::syscall(name.as_ref());
            match self.observe(&observation, now, provenance) {
                Observed::New => result.new_syscalls += 1,
                Observed::Known => {}
                Observed::LimitReached => {
                    result.limit_reached = true;
                    continue;
                }
            }
            *this_interval.entry(observation.generalised()).or_default() += count;
        }
        for (name, stats) in &mut self.syscall_rates {
            let count = this_interval.remove(name).unwrap_or(0);
            stats.update(count as f64 / interval_secs);
        }
        for (name, count) in this_interval {
            let mut stats = RateStats::zeros(self.rate_intervals);
            stats.update(count as f64 / interval_secs);
            self.syscall_rates.insert(name, stats);
        }
        self.rate_intervals += 1;
        Ok(result)
    }

    /// The workload this profile belongs to.
    pub fn workload(&self) -> &WorkloadKey {
        &self.workload
    }

    /// The node that learned it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The configuration it learns with.
    pub fn config(&self) -> &ProfileConfig {
        &self.config
    }

    /// When learning started.
    pub fn learning_started_at(&self) -> UnixMillis {
        self.learning_started_at
    }

    /// When the last observation was made.
    pub fn last_observation_at(&self) -> Option<UnixMillis> {
        self.last_observation_at
    }

    /// When a new item was last learned: the daemon's convergence test ("nothing new for
    /// `--learn-stable`") reads this.
    pub fn last_new_item_at(&self) -> Option<UnixMillis> {
        self.last_new_item_at
    }

    /// In how many learning intervals anything was observed.
    pub fn intervals(&self) -> u64 {
        self.intervals
    }

    /// How many syscall-count intervals were learned.
    pub fn rate_intervals(&self) -> u64 {
        self.rate_intervals
    }

    /// Why the profile is unstable, if it is.
    pub fn unstable_reason(&self) -> Option<UnstableReason> {
        self.unstable_reason
    }

    /// Marks the profile unstable for a limit reached outside it (the sequence model's learning
    /// data); the first reason is kept.
    pub fn mark_unstable(&mut self, reason: UnstableReason) {
        self.unstable_reason.get_or_insert(reason);
    }

    /// How many observations were refused because a limit was reached.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Items over all dimensions.
    pub fn items_total(&self) -> usize {
        self.dimensions.values().map(BTreeMap::len).sum()
    }

    /// Items in one dimension.
    pub fn items_in(&self, dimension: Dimension) -> usize {
        self.dimensions.get(&dimension).map_or(0, BTreeMap::len)
    }

    /// The items of one dimension, by generalised item, in order.
    pub fn items(&self, dimension: Dimension) -> impl Iterator<Item = (&str, &ItemStats)> {
        self.dimensions
            .get(&dimension)
            .into_iter()
            .flat_map(|items| items.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// The statistics of one generalised item.
    pub fn item(&self, dimension: Dimension, generalised: &str) -> Option<&ItemStats> {
        self.dimensions.get(&dimension)?.get(generalised)
    }

    /// Per-syscall rate statistics.
    pub fn syscall_rates(&self) -> &BTreeMap<String, RateStats> {
        &self.syscall_rates
    }

    pub(crate) fn dimensions(&self) -> &BTreeMap<Dimension, BTreeMap<String, ItemStats>> {
        &self.dimensions
    }

    /// Counts the interval of `now`; returns its index.
    fn enter_interval(&mut self, now: UnixMillis) -> u64 {
        let index = now.saturating_sub(self.learning_started_at) / self.config.interval_ms.max(1);
        if self.last_interval.is_none_or(|last| index > last) {
            self.intervals += 1;
            self.last_interval = Some(index);
        }
        self.last_observation_at = Some(self.last_observation_at.map_or(now, |t| t.max(now)));
        index
    }

    fn limit_reached(&self, dimension: Dimension) -> Option<UnstableReason> {
        let limits = &self.config.limits;
        let limit = limits.for_dimension(dimension);
        if self.items_in(dimension) >= limit as usize {
            Some(UnstableReason::DimensionLimit { dimension, limit })
        } else if self.items_total() >= limits.total as usize {
            Some(UnstableReason::TotalLimit {
                limit: limits.total,
            })
        } else {
            None
        }
    }

    /// Records one more learned item under `key`, collapsing when there are too many.
    fn count_sibling(&mut self, dimension: Dimension, key: &str) {
        let Some(threshold) = self.config.generalise.collapse_after(dimension) else {
            return;
        };
        let entry = (dimension, key.to_owned());
        let siblings = match self.scratch.siblings.take() {
            Some(mut siblings) => {
                *siblings.entry(entry.clone()).or_default() += 1;
                siblings
            }
            // Built from the items, which already include the new one.
            None => sibling_counts(&self.dimensions),
        };
        let count = siblings.get(&entry).copied().unwrap_or(0);
        let siblings = self.scratch.siblings.insert(siblings);
        if count > threshold {
            siblings.remove(&entry);
            self.collapse(dimension, key);
        }
    }

    /// Replaces every item under `key` by one item `key` that sums their statistics.
    fn collapse(&mut self, dimension: Dimension, key: &str) {
        let max_provenance = self.config.limits.provenance_per_item as usize;
        let intervals = self.intervals;
        if let Some(items) = self.dimensions.get_mut(&dimension) {
            collapse_items(items, dimension, key, max_provenance, intervals);
        }
    }
}

/// Replaces every item of `items` whose collapse key is `key` (and `key` itself, if present)
/// by one item `key` whose statistics absorb theirs.
pub(crate) fn collapse_items(
    items: &mut BTreeMap<String, ItemStats>,
    dimension: Dimension,
    key: &str,
    max_provenance: usize,
    max_intervals: u64,
) {
    let members: Vec<String> = items
        .keys()
        .filter(|item| generalise::collapse_key(dimension, item).as_deref() == Some(key))
        .cloned()
        .collect();
    let mut merged: Option<ItemStats> = items.remove(key);
    for member in members {
        if let Some(stats) = items.remove(&member) {
            match &mut merged {
                Some(acc) => acc.absorb(&stats, max_provenance, max_intervals),
                None => merged = Some(stats),
            }
        }
    }
    if let Some(merged) = merged {
        items.insert(key.to_owned(), merged);
    }
}

/// Distinct learned items per collapse key, over all collapsible dimensions.
pub(crate) fn sibling_counts(
    dimensions: &BTreeMap<Dimension, BTreeMap<String, ItemStats>>,
) -> HashMap<(Dimension, String), u32> {
    let mut counts = HashMap::new();
    let mut key = String::new();
    for (&dimension, items) in dimensions {
        for item in items.keys() {
            key.clear();
            if generalise::collapse_key_into(dimension, item, &mut key) {
                *counts.entry((dimension, key.clone())).or_default() += 1;
            }
        }
    }
    counts
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::observation::{FileMode, Proto};
    use std::net::Ipv4Addr;

    const MIN: u64 = 60_000;

    fn profile() -> Profile {
        Profile::new(
            WorkloadKey::from_raw("docker.io/library/nginx:1.25"),
            "node-a",
            0,
            ProfileConfig::default(),
        )
    }

    fn here() -> Provenance {
        Provenance::new("node-a", Some("c1"))
    }

    #[test]
    fn new_then_known_with_generalisation() {
        let mut p = profile();
        let o1 = Observation::file("/proc/1234/stat", FileMode::Read);
        let o2 = Observation::file("/proc/99/stat", FileMode::Read);
        assert_eq!(p.observe(&o1, 10, &here()), Observed::New);
        assert_eq!(p.observe(&o2, 20, &here()), Observed::Known);
        let stats = p.item(Dimension::File, "r /proc/<pid>/stat").unwrap();
        assert_eq!(
            (stats.first_seen, stats.last_seen, stats.count),
            (10, 20, 2)
        );
        assert_eq!(stats.intervals_seen, 1);
        assert_eq!(p.items_total(), 1);
        assert_eq!(p.last_new_item_at(), Some(10));
        assert_eq!(p.learning_started_at(), 0);
    }

    #[test]
    fn intervals_are_counted_per_item_and_per_profile() {
        let mut p = profile();
        let a = Observation::exec("/bin/a");
        let b = Observation::exec("/bin/b");
        let _ = p.observe(&a, 0, &here());
        let _ = p.observe(&a, 1000, &here());
        let _ = p.observe(&a, MIN + 5, &here());
        let _ = p.observe(&b, 3 * MIN, &here());
        let _ = p.observe(&a, 3 * MIN + 1, &here());
        assert_eq!(p.intervals(), 3);
        assert_eq!(p.item(Dimension::Exec, "/bin/a").unwrap().intervals_seen, 3);
        assert_eq!(p.item(Dimension::Exec, "/bin/a").unwrap().count, 4);
        assert_eq!(p.item(Dimension::Exec, "/bin/b").unwrap().intervals_seen, 1);
        // A late observation from an earlier interval neither adds an interval nor goes back.
        let _ = p.observe(&a, 5, &here());
        assert_eq!(p.intervals(), 3);
        assert_eq!(
            p.item(Dimension::Exec, "/bin/a").unwrap().last_seen,
            3 * MIN + 1
        );
    }

    #[test]
    fn a_late_observation_never_counts_an_interval_the_profile_skipped() {
        let mut p = profile();
        let a = Observation::exec("/bin/a");
        let b = Observation::exec("/bin/b");
        let _ = p.observe(&a, MIN + 1, &here());
        let _ = p.observe(&b, 5 * MIN + 1, &here());
        // Made in interval 3, which saw nothing, delivered after interval 5 was entered.
        let _ = p.observe(&a, 3 * MIN + 1, &here());
        let _ = p.observe(&a, 5 * MIN + 2, &here());
        let seen = p.item(Dimension::Exec, "/bin/a").unwrap().intervals_seen;
        assert!(seen <= p.intervals(), "{seen} > {}", p.intervals());
        let baseline = crate::baseline::Baseline::freeze(&p, 6 * MIN, false);
        assert!(baseline.validate().is_ok(), "{:?}", baseline.validate());
    }

    #[test]
    fn provenance_is_bounded_and_distinct() {
        let mut p = profile();
        let o = Observation::exec("/bin/a");
        for i in 0..10 {
            let _ = p.observe(&o, i, &Provenance::new(format!("node-{}", i % 6), None));
        }
        let stats = p.item(Dimension::Exec, "/bin/a").unwrap();
        assert_eq!(stats.provenance.len(), 4);
        assert_eq!(stats.provenance[0].node, "node-0");
    }

    #[test]
    fn dimension_limit_refuses_and_marks_unstable() {
        let mut config = ProfileConfig::default();
        config.limits.listen = 2;
        let mut p = Profile::new(WorkloadKey::host(), "n", 0, config);
        assert_eq!(
            p.observe(&Observation::listen(1, Proto::Tcp), 0, &here()),
            Observed::New
        );
        assert_eq!(
            p.observe(&Observation::listen(2, Proto::Tcp), 0, &here()),
            Observed::New
        );
        assert_eq!(
            p.observe(&Observation::listen(3, Proto::Tcp), 0, &here()),
            Observed::LimitReached
        );
        // Known items still count.
        assert_eq!(
            p.observe(&Observation::listen(1, Proto::Tcp), 0, &here()),
            Observed::Known
        );
        assert_eq!(
            p.unstable_reason(),
            Some(UnstableReason::DimensionLimit {
                dimension: Dimension::Listen,
                limit: 2
            })
        );
        assert_eq!(p.refused(), 1);
        assert_eq!(p.items_in(Dimension::Listen), 2);
        assert_eq!(
            p.unstable_reason().unwrap().to_string(),
            "listen reached its limit of 2 items"
        );
    }

    #[test]
    fn total_limit_refuses() {
        let mut config = ProfileConfig::default();
        config.limits.total = 3;
        let mut p = Profile::new(WorkloadKey::host(), "n", 0, config);
        for name in ["read", "write", "openat"] {
            assert_eq!(
                p.observe(&Observation::syscall(name), 0, &here()),
                Observed::New
            );
        }
        assert_eq!(
            p.observe(&Observation::exec("/bin/x"), 0, &here()),
            Observed::LimitReached
        );
        assert_eq!(
            p.unstable_reason(),
            Some(UnstableReason::TotalLimit { limit: 3 })
        );
    }

    #[test]
    fn directory_collapses_after_threshold() {
        let mut config = ProfileConfig::default();
        config.generalise.dir_collapse_after = 4;
        let mut p = Profile::new(WorkloadKey::host(), "n", 0, config);
        let _ = p.observe(
            &Observation::file("/etc/passwd", FileMode::Read),
            0,
            &here(),
        );
        for name in ["a", "b", "c", "d"] {
            let o = Observation::file(&format!("/var/cache/app/{name}"), FileMode::Write);
            assert_eq!(p.observe(&o, 0, &here()), Observed::New);
        }
        assert_eq!(p.items_in(Dimension::File), 5);
        // The fifth distinct name collapses the directory.
        let o = Observation::file("/var/cache/app/e", FileMode::Write);
        assert_eq!(p.observe(&o, MIN, &here()), Observed::New);
        let items: Vec<&str> = p.items(Dimension::File).map(|(k, _)| k).collect();
        assert_eq!(items, ["r /etc/passwd", "w /var/cache/app/*"]);
        let stats = p.item(Dimension::File, "w /var/cache/app/*").unwrap();
        assert_eq!(stats.count, 5);
        assert_eq!(stats.intervals_seen, 2);
        // Later names are known through the collapsed directory; other modes are not.
        let o = Observation::file("/var/cache/app/zzz", FileMode::Write);
        assert_eq!(p.observe(&o, MIN, &here()), Observed::Known);
        let o = Observation::file("/var/cache/app/zzz", FileMode::Read);
        assert_eq!(p.observe(&o, MIN, &here()), Observed::New);
        // Subdirectories are not covered.
        let o = Observation::file("/var/cache/app/sub/x", FileMode::Write);
        assert_eq!(p.observe(&o, MIN, &here()), Observed::New);
    }

    #[test]
    fn networks_collapse_after_threshold_but_not_loopback() {
        let mut config = ProfileConfig::default();
        config.generalise.net_collapse_after = 3;
        let mut p = Profile::new(WorkloadKey::host(), "n", 0, config);
        for host in 1..=4 {
            let o = Observation::outbound(Ipv4Addr::new(10, 0, 0, host).into(), 443, Proto::Tcp);
            let _ = p.observe(&o, 0, &here());
        }
        for host in 1..=4 {
            let o = Observation::outbound(Ipv4Addr::new(127, 0, 0, host).into(), 443, Proto::Tcp);
            let _ = p.observe(&o, 0, &here());
        }
        let items: Vec<&str> = p.items(Dimension::Outbound).map(|(k, _)| k).collect();
        assert_eq!(
            items,
            [
                "10.0.0.0/24 443/tcp",
                "127.0.0.1 443/tcp",
                "127.0.0.2 443/tcp",
                "127.0.0.3 443/tcp",
                "127.0.0.4 443/tcp"
            ]
        );
        let o = Observation::outbound(Ipv4Addr::new(10, 0, 0, 200).into(), 443, Proto::Tcp);
        assert_eq!(p.observe(&o, 0, &here()), Observed::Known);
        let o = Observation::outbound(Ipv4Addr::new(10, 0, 0, 200).into(), 80, Proto::Tcp);
        assert_eq!(p.observe(&o, 0, &here()), Observed::New);
    }

    #[test]
    fn collapse_survives_a_serde_round_trip() {
        let mut config = ProfileConfig::default();
        config.generalise.dir_collapse_after = 2;
        let mut p = Profile::new(WorkloadKey::host(), "n", 0, config);
        let _ = p.observe(&Observation::exec("/opt/a"), 0, &here());
        let _ = p.observe(&Observation::exec("/opt/b"), 0, &here());
        let json = serde_json::to_string(&p).unwrap();
        let mut back: Profile = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        // The sibling counts are rebuilt from the items: the third name collapses.
        let _ = back.observe(&Observation::exec("/opt/c"), 0, &here());
        let items: Vec<&str> = back.items(Dimension::Exec).map(|(k, _)| k).collect();
        assert_eq!(items, ["/opt/*"]);
    }

    #[test]
    fn syscall_counts_learn_items_and_welford_rates() {
        let mut p = profile();
        let r = p
            .observe_syscall_counts(&[("read", 10), ("write", 0)], 10.0, 0, &here())
            .unwrap();
        assert_eq!(
            r,
            RatesObserved {
                new_syscalls: 1,
                limit_reached: false
            }
        );
        let r = p
            .observe_syscall_counts(&[("read", 30), ("openat", 5)], 10.0, MIN, &here())
            .unwrap();
        assert_eq!(r.new_syscalls, 1);
        let _ = p
            .observe_syscall_counts(&[("openat".to_owned(), 5)], 10.0, 2 * MIN, &here())
            .unwrap();
        assert_eq!(p.rate_intervals(), 3);
        let read = p.syscall_rates()["read"];
        // Rates 1, 3, 0.
        assert_eq!(read.intervals, 3);
        assert!((read.mean - 4.0 / 3.0).abs() < 1e-12);
        let var =
            ((1.0f64 - 4.0 / 3.0).powi(2) + (3.0f64 - 4.0 / 3.0).powi(2) + (4.0f64 / 3.0).powi(2))
                / 2.0;
        assert!((read.variance() - var).abs() < 1e-12);
        assert_eq!(read.max, 3.0);
        // openat entered late: one zero interval before it.
        let openat = p.syscall_rates()["openat"];
        assert_eq!(openat.intervals, 3);
        assert!((openat.mean - 1.0 / 3.0).abs() < 1e-12);
        assert!(p.item(Dimension::Syscall, "openat").is_some());
        assert!(p.item(Dimension::Syscall, "write").is_none());
        assert!(
            p.observe_syscall_counts(&[("read", 1)], 0.0, 0, &here())
                .is_err()
        );
        assert!(
            p.observe_syscall_counts(&[("read", 1)], f64::NAN, 0, &here())
                .is_err()
        );
    }

    #[test]
    fn rate_stats_merge_equals_sequential() {
        let xs = [1.0, 4.0, 2.5, 0.0, 9.0, 3.0, 3.0];
        let mut all = RateStats::default();
        xs.iter().for_each(|&x| all.update(x));
        let (mut a, mut b) = (RateStats::default(), RateStats::default());
        xs[..3].iter().for_each(|&x| a.update(x));
        xs[3..].iter().for_each(|&x| b.update(x));
        let m = a.merge(&b);
        assert_eq!(m.intervals, all.intervals);
        assert!((m.mean - all.mean).abs() < 1e-12);
        assert!((m.m2 - all.m2).abs() < 1e-9);
        assert_eq!(m.max, all.max);
    }
}

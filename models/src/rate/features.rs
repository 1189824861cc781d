//! The per-interval feature vector and the builder the daemon fills from events and the
//! in-kernel syscall counters.
//!
//! Values are kept in their natural units (a share between 0 and 1, events per second) so that
//! an explanation can quote them as they are; the model applies its own transform (log for
//! rates, see [`Feature::transform`]).

use std::collections::HashSet;

use ahash::RandomState;
use serde::{Deserialize, Serialize};

use super::RateError;
use super::groups::SyscallGroup;

/// Number of features: one share per syscall group, then the rates.
pub const FEATURE_COUNT: usize = SyscallGroup::COUNT + RateKind::COUNT;

/// Default bound on the distinct destinations and files counted per interval (principle 4:
/// bounded everything). Past it an interval is marked [`FeatureVector::saturated`] and the
/// count stays at the bound.
pub const DEFAULT_DISTINCT_LIMIT: usize = 16_384;

/// A per-second rate feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKind {
    /// Program executions per second.
    Exec,
    /// File opens per second.
    Open,
    /// Outgoing connections per second.
    Connect,
    /// Accepted connections per second.
    Accept,
    /// Distinct destinations (e.g. `ip:port`) per second of interval.
    Destinations,
    /// Distinct files per second of interval.
    Files,
    /// All syscalls per second (the model sees it log-scaled, like every rate).
    Syscalls,
    /// Bytes sent and received per second, where the daemon has them (optional).
    Bytes,
}

impl RateKind {
    /// Number of rate features.
    pub const COUNT: usize = 8;

    /// All rate features, in feature order.
    pub const ALL: [RateKind; Self::COUNT] = [
        Self::Exec,
        Self::Open,
        Self::Connect,
        Self::Accept,
        Self::Destinations,
        Self::Files,
        Self::Syscalls,
        Self::Bytes,
    ];

    /// Whether the rate follows the number of clients of a server (all syscalls, bytes,
    /// accepts, opens, connects): more clients make more of them in about the same mix.
    /// Execs and distinct destinations or files do not grow with the same requests repeated.
    pub const fn follows_load(self) -> bool {
        matches!(
            self,
            Self::Syscalls | Self::Bytes | Self::Accept | Self::Open | Self::Connect
        )
    }

    /// Whether the rate counts discrete events of one kind (execs, opens, connects,
    /// accepts, distinct destinations or files), as opposed to an aggregate of everything the
    /// workload does (all syscalls, bytes). An explanation names a rare kind of event that
    /// became frequent before the aggregates that moved with it.
    pub const fn is_event_rate(self) -> bool {
        !matches!(self, Self::Syscalls | Self::Bytes)
    }
}

/// Event kinds counted by [`IntervalFeatures::add_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A program execution.
    Exec,
    /// A file open.
    Open,
    /// An outgoing connection.
    Connect,
    /// An accepted connection.
    Accept,
}

impl EventKind {
    const fn index(self) -> usize {
        match self {
            Self::Exec => 0,
            Self::Open => 1,
            Self::Connect => 2,
            Self::Accept => 3,
        }
    }
}

/// How the model sees a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// `√x`, for shares: the variance-stabilising transform of a proportion (the Hellinger
    /// geometry of histograms). A share's sampling noise then no longer depends on its size,
    /// so one floor fits all groups, and a group going from 0 % to 3 % (a new kind of work)
    /// counts as much as one going from 25 % to 36 %.
    Sqrt,
    /// `ln(1 + x)`: rates vary over orders of magnitude and their changes are multiplicative
    /// ("40× baseline"), so the model measures them as log ratios; the `1 +` keeps zero finite
    /// and makes changes of a fraction of an event per second count little.
    Log1p,
}

impl Transform {
    /// Applies the transform.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Self::Sqrt => x.max(0.0).sqrt(),
            Self::Log1p => x.max(0.0).ln_1p(),
        }
    }
}

/// Unit of a feature's value, for explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A fraction of all syscalls (shown as a percentage).
    Share,
    /// Events per second.
    PerSecond,
    /// Bytes per second.
    BytesPerSecond,
}

/// One feature of the vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Fraction of the interval's syscalls in this group.
    Share(SyscallGroup),
    /// A per-second rate.
    Rate(RateKind),
}

/// Feature names in vector order (see [`feature_names`]).
const NAMES: [&str; FEATURE_COUNT] = [
    "share.file_read",
    "share.file_write",
    "share.file_open",
    "share.file_meta",
    "share.net_setup",
    "share.net_io",
    "share.poll",
    "share.process",
    "share.memory",
    "share.time",
    "share.sync",
    "share.ipc",
    "share.signal",
    "share.identity",
    "share.privileged",
    "share.other",
    "rate.exec",
    "rate.open",
    "rate.connect",
    "rate.accept",
    "rate.destinations",
    "rate.files",
    "rate.syscalls",
    "rate.bytes",
];

/// The names of the features, in vector order: `share.<group>` for the syscall histogram
/// (see [`SyscallGroup::name`]) then `rate.<kind>`. These names are the keys of the model
/// in the baseline file, so they never change meaning; new features get new names.
pub fn feature_names() -> &'static [&'static str] {
    &NAMES
}

impl Feature {
    /// All features, in vector order.
    pub const ALL: [Feature; FEATURE_COUNT] = {
        let mut all = [Feature::Share(SyscallGroup::Other); FEATURE_COUNT];
        let mut i = 0;
        while i < SyscallGroup::COUNT {
            all[i] = Feature::Share(SyscallGroup::ALL[i]);
            i += 1;
        }
        let mut j = 0;
        while j < RateKind::COUNT {
            all[SyscallGroup::COUNT + j] = Feature::Rate(RateKind::ALL[j]);
            j += 1;
        }
        all
    };

    /// Position in the vector.
    pub const fn index(self) -> usize {
        match self {
            Self::Share(group) => group.index(),
            Self::Rate(kind) => SyscallGroup::COUNT + kind as usize,
        }
    }

    /// Stable name (see [`feature_names`]).
    pub fn name(self) -> &'static str {
        NAMES[self.index()]
    }

    /// The feature of a name, if this version knows it.
    pub fn from_name(name: &str) -> Option<Feature> {
        NAMES.iter().position(|n| *n == name).map(|i| Self::ALL[i])
    }

    /// Words for an alert, e.g. "connect rate".
    pub fn label(self) -> String {
        match self {
            Self::Share(group) => format!("share of {} syscalls", group.description()),
            Self::Rate(kind) => match kind {
                RateKind::Exec => "exec rate",
                RateKind::Open => "open rate",
                RateKind::Connect => "connect rate",
                RateKind::Accept => "accept rate",
                RateKind::Destinations => "distinct-destination rate",
                RateKind::Files => "distinct-file rate",
                RateKind::Syscalls => "syscall rate",
                RateKind::Bytes => "byte rate",
            }
            .to_owned(),
        }
    }

    /// Unit of the value.
    pub const fn unit(self) -> Unit {
        match self {
            Self::Share(_) => Unit::Share,
            Self::Rate(RateKind::Bytes) => Unit::BytesPerSecond,
            Self::Rate(_) => Unit::PerSecond,
        }
    }

    /// How the model sees the feature.
    pub const fn transform(self) -> Transform {
        match self {
            Self::Share(_) => Transform::Sqrt,
            Self::Rate(_) => Transform::Log1p,
        }
    }
}

/// One workload's behaviour during one interval, as the rate model sees it.
///
/// Invariant: every value is finite and non-negative and `interval_secs` is positive (checked
/// when built, constructed or deserialised), so no NaN reaches a model or a baseline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FeatureVectorRepr")]
pub struct FeatureVector {
    interval_secs: f64,
    values: [f64; FEATURE_COUNT],
    /// Whether `rate.bytes` was measured (it is optional: not every probe set sees payloads).
    has_bytes: bool,
    /// Whether a distinct-item count hit its bound (the count is then a lower bound).
    saturated: bool,
}

#[derive(Deserialize)]
struct FeatureVectorRepr {
    interval_secs: f64,
    values: [f64; FEATURE_COUNT],
    has_bytes: bool,
    #[serde(default)]
    saturated: bool,
}

impl TryFrom<FeatureVectorRepr> for FeatureVector {
    type Error = RateError;

    fn try_from(repr: FeatureVectorRepr) -> Result<Self, RateError> {
        let mut vector = Self::from_values(repr.interval_secs, repr.values, repr.has_bytes)?;
        vector.saturated = repr.saturated;
        Ok(vector)
    }
}

impl FeatureVector {
    /// A vector from raw values in [`feature_names`] order (for replays and offline tools).
    /// Rejects non-finite or negative values and a non-positive interval. When `has_bytes` is
    /// false the `rate.bytes` value is ignored and stored as 0.
    pub fn from_values(
        interval_secs: f64,
        mut values: [f64; FEATURE_COUNT],
        has_bytes: bool,
    ) -> Result<Self, RateError> {
        if !(interval_secs.is_finite() && interval_secs > 0.0) {
            return Err(RateError::InvalidFeatures(format!(
                "interval length {interval_secs} s is not a positive number"
            )));
        }
        for (name, value) in NAMES.iter().zip(values.iter()) {
            if !(value.is_finite() && *value >= 0.0) {
                return Err(RateError::InvalidFeatures(format!(
                    "{name} = {value} is not a finite non-negative number"
                )));
            }
        }
        if !has_bytes {
            values[Feature::Rate(RateKind::Bytes).index()] = 0.0;
        }
        Ok(Self {
            interval_secs,
            values,
            has_bytes,
            saturated: false,
        })
    }

    /// Length of the interval in seconds.
    pub fn interval_secs(&self) -> f64 {
        self.interval_secs
    }

    /// All values in [`feature_names`] order.
    pub fn values(&self) -> &[f64; FEATURE_COUNT] {
        &self.values
    }

    /// The value of one feature.
    pub fn get(&self, feature: Feature) -> f64 {
        self.values[feature.index()]
    }

    /// The value of a feature by name.
    pub fn by_name(&self, name: &str) -> Option<f64> {
        Feature::from_name(name).map(|feature| self.get(feature))
    }

    /// `(name, value)` pairs in vector order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        NAMES.iter().copied().zip(self.values.iter().copied())
    }

    /// Whether `rate.bytes` was measured.
    pub fn has_bytes(&self) -> bool {
        self.has_bytes
    }

    /// Whether a distinct count reached its bound during the interval.
    pub fn saturated(&self) -> bool {
        self.saturated
    }

    /// Mutable values, for tests that build anomalies by hand.
    #[cfg(test)]
    pub(crate) fn set(&mut self, feature: Feature, value: f64) {
        self.values[feature.index()] = value;
    }
}

/// A bounded set of distinct items, stored as 64-bit keyed hashes (no strings kept: a
/// workload that touches thousands of files per interval costs 8 bytes each, and the keyed
/// hash means crafted names cannot be chosen to collide).
#[derive(Debug, Clone)]
struct DistinctCounter {
    seen: HashSet<u64, RandomState>,
    hasher: RandomState,
    limit: usize,
    saturated: bool,
}

impl DistinctCounter {
    fn new(limit: usize) -> Self {
        Self {
            seen: HashSet::with_hasher(RandomState::new()),
            hasher: RandomState::new(),
            limit,
            saturated: false,
        }
    }

    fn add(&mut self, item: &str) {
        let key = self.hasher.hash_one(item);
        if self.seen.len() >= self.limit {
            if !self.seen.contains(&key) {
                self.saturated = true;
            }
            return;
        }
        self.seen.insert(key);
    }

    fn len(&self) -> usize {
        self.seen.len()
    }

    fn clear(&mut self) {
        self.seen.clear();
        self.saturated = false;
    }
}

/// Builds the [`FeatureVector`] of one workload for one interval.
///
/// The daemon adds the interval's syscall counts (read from the in-kernel per-workload
/// counters), the events that crossed the ring buffer, and the destinations and files they
/// named, then calls [`finish`](Self::finish) and [`clear`](Self::clear) for the next
/// interval.
///
/// Event rates come only from [`add_event`](Self::add_event) /
/// [`add_events`](Self::add_events), never implicitly from syscall counts, so nothing is
/// counted twice: where only first-seen opens cross to user space, the daemon passes the
/// kernel's `openat` counter to `add_events(EventKind::Open, n)` instead of one event per open.
#[derive(Debug, Clone)]
pub struct IntervalFeatures {
    interval_secs: f64,
    groups: [u64; SyscallGroup::COUNT],
    total: u64,
    events: [u64; 4],
    destinations: DistinctCounter,
    files: DistinctCounter,
    bytes: Option<u64>,
}

impl IntervalFeatures {
    /// A builder for an interval of `interval_secs` seconds. A non-finite or non-positive length
    /// (a clock glitch) is replaced by 1 s rather than producing infinite rates.
    pub fn new(interval_secs: f64) -> Self {
        Self::with_distinct_limit(interval_secs, DEFAULT_DISTINCT_LIMIT)
    }

    /// Like [`new`](Self::new) with a bound on the distinct destinations and files counted
    /// (at least 1).
    pub fn with_distinct_limit(interval_secs: f64, limit: usize) -> Self {
        let interval_secs = if interval_secs.is_finite() && interval_secs > 0.0 {
            interval_secs
        } else {
            1.0
        };
        let limit = limit.max(1);
        Self {
            interval_secs,
            groups: [0; SyscallGroup::COUNT],
            total: 0,
            events: [0; 4],
            destinations: DistinctCounter::new(limit),
            files: DistinctCounter::new(limit),
            bytes: None,
        }
    }

    /// Adds syscall counts by name (`[("openat", 120), ("read", 900)]`); names are grouped
    /// with [`SyscallGroup::of`].
    pub fn add_syscalls<S: AsRef<str>>(&mut self, counts: &[(S, u64)]) -> &mut Self {
        for (name, count) in counts {
            self.add_syscall(name.as_ref(), *count);
        }
        self
    }

    /// Adds one syscall's count.
    pub fn add_syscall(&mut self, name: &str, count: u64) -> &mut Self {
        self.add_group(SyscallGroup::of(name), count)
    }

    /// Adds a count to a group directly (for a caller that grouped syscall numbers itself).
    pub fn add_group(&mut self, group: SyscallGroup, count: u64) -> &mut Self {
        let slot = &mut self.groups[group.index()];
        *slot = slot.saturating_add(count);
        self.total = self.total.saturating_add(count);
        self
    }

    /// Counts one event.
    pub fn add_event(&mut self, kind: EventKind) -> &mut Self {
        self.add_events(kind, 1)
    }

    /// Counts `count` events of one kind (e.g. from a kernel counter).
    pub fn add_events(&mut self, kind: EventKind, count: u64) -> &mut Self {
        let slot = &mut self.events[kind.index()];
        *slot = slot.saturating_add(count);
        self
    }

    /// Notes a destination (e.g. `"10.0.0.5:5432"`); distinct ones are counted.
    pub fn add_destination(&mut self, destination: &str) -> &mut Self {
        self.destinations.add(destination);
        self
    }

    /// Notes a file path; distinct ones are counted.
    pub fn add_file(&mut self, path: &str) -> &mut Self {
        self.files.add(path);
        self
    }

    /// Adds transferred bytes. Once called, the interval has a `rate.bytes` value.
    pub fn add_bytes(&mut self, bytes: u64) -> &mut Self {
        self.bytes = Some(self.bytes.unwrap_or(0).saturating_add(bytes));
        self
    }

    /// Resets the builder for the next interval, keeping its allocations and length.
    pub fn clear(&mut self) {
        self.groups = [0; SyscallGroup::COUNT];
        self.total = 0;
        self.events = [0; 4];
        self.destinations.clear();
        self.files.clear();
        self.bytes = None;
    }

    /// The interval's feature vector, over the length given at construction.
    pub fn finish(&self) -> FeatureVector {
        self.finish_over(self.interval_secs)
    }

    /// The interval's feature vector over a measured length, for a caller whose intervals
    /// are not exactly the nominal length (a late timer tick makes the counts of a longer
    /// interval, and dividing them by the nominal length would report a rate rise). A
    /// non-finite or non-positive length falls back to the length given at construction.
    pub fn finish_over(&self, interval_secs: f64) -> FeatureVector {
        let secs = if interval_secs.is_finite() && interval_secs > 0.0 {
            interval_secs
        } else {
            self.interval_secs
        };
        let mut values = [0.0; FEATURE_COUNT];
        if self.total > 0 {
            let total = self.total as f64;
            for group in SyscallGroup::ALL {
                values[Feature::Share(group).index()] = self.groups[group.index()] as f64 / total;
            }
        }
        let rate = |count: f64| count / secs;
        let mut set = |kind: RateKind, value: f64| values[Feature::Rate(kind).index()] = value;
        set(
            RateKind::Exec,
            rate(self.events[EventKind::Exec.index()] as f64),
        );
        set(
            RateKind::Open,
            rate(self.events[EventKind::Open.index()] as f64),
        );
        set(
            RateKind::Connect,
            rate(self.events[EventKind::Connect.index()] as f64),
        );
        set(
            RateKind::Accept,
            rate(self.events[EventKind::Accept.index()] as f64),
        );
        set(RateKind::Destinations, rate(self.destinations.len() as f64));
        set(RateKind::Files, rate(self.files.len() as f64));
        set(RateKind::Syscalls, rate(self.total as f64));
        set(
            RateKind::Bytes,
            self.bytes.map_or(0.0, |bytes| rate(bytes as f64)),
        );
        FeatureVector {
            interval_secs: secs,
            values,
            has_bytes: self.bytes.is_some(),
            saturated: self.destinations.saturated || self.files.saturated,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names_match_features() {
        assert_eq!(feature_names().len(), FEATURE_COUNT);
        for (i, feature) in Feature::ALL.iter().enumerate() {
            assert_eq!(feature.index(), i);
            assert_eq!(Feature::from_name(feature.name()), Some(*feature));
        }
        for group in SyscallGroup::ALL {
            assert_eq!(
                Feature::Share(group).name(),
                format!("share.{}", group.name())
            );
        }
        assert_eq!(Feature::from_name("rate.nope"), None);
    }

    #[test]
    fn builder_computes_shares_and_rates() {
        let mut b = IntervalFeatures::new(10.0);
        b.add_syscalls(&[
            ("read", 50),
            ("write", 30),
            ("connect", 10),
            ("frobnicate", 10),
        ]);
        b.add_syscall("openat", 0);
        for _ in 0..5 {
            b.add_event(EventKind::Connect);
        }
        b.add_events(EventKind::Exec, 2);
        for dest in ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80"] {
            b.add_destination(dest);
        }
        b.add_file("/etc/passwd").add_file("/etc/hosts");
        let v = b.finish();
        let share = |g| v.get(Feature::Share(g));
        assert!((share(SyscallGroup::FileRead) - 0.5).abs() < 1e-12);
        assert!((share(SyscallGroup::FileWrite) - 0.3).abs() < 1e-12);
        assert!((share(SyscallGroup::NetSetup) - 0.1).abs() < 1e-12);
        assert!((share(SyscallGroup::Other) - 0.1).abs() < 1e-12);
        let shares: f64 = SyscallGroup::ALL.iter().map(|&g| share(g)).sum();
        assert!((shares - 1.0).abs() < 1e-12);
        assert_eq!(v.by_name("rate.connect"), Some(0.5));
        assert_eq!(v.by_name("rate.exec"), Some(0.2));
        assert_eq!(v.by_name("rate.destinations"), Some(0.2));
        assert_eq!(v.by_name("rate.files"), Some(0.2));
        assert_eq!(v.by_name("rate.syscalls"), Some(10.0));
        assert_eq!(v.by_name("rate.bytes"), Some(0.0));
        assert!(!v.has_bytes());
        assert!(!v.saturated());

        b.add_bytes(1000).add_bytes(500);
        let v = b.finish();
        assert!(v.has_bytes());
        assert_eq!(v.by_name("rate.bytes"), Some(150.0));

        // Over a measured length: the same counts, other rates; a bad length is ignored.
        let v = b.finish_over(20.0);
        assert_eq!(v.interval_secs(), 20.0);
        assert_eq!(v.by_name("rate.connect"), Some(0.25));
        assert_eq!(v.by_name("rate.bytes"), Some(75.0));
        assert_eq!(b.finish_over(f64::NAN), b.finish());
        assert_eq!(b.finish_over(0.0), b.finish());

        b.clear();
        let empty = b.finish();
        assert!(empty.values().iter().all(|&x| x == 0.0));
        assert!(!empty.has_bytes());
    }

    #[test]
    fn distinct_counts_are_bounded() {
        let mut b = IntervalFeatures::with_distinct_limit(1.0, 3);
        for i in 0..10 {
            b.add_file(&format!("/tmp/{i}"));
        }
        let v = b.finish();
        assert_eq!(v.by_name("rate.files"), Some(3.0));
        assert!(v.saturated());
        // Re-adding a known item at the bound does not saturate.
        let mut b = IntervalFeatures::with_distinct_limit(1.0, 2);
        b.add_file("a").add_file("b").add_file("a");
        assert!(!b.finish().saturated());
    }

    #[test]
    fn bad_interval_lengths_never_give_infinite_rates() {
        for secs in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let mut b = IntervalFeatures::new(secs);
            b.add_events(EventKind::Exec, 3);
            let v = b.finish();
            assert!(v.values().iter().all(|x| x.is_finite()), "{secs}");
            assert_eq!(v.interval_secs(), 1.0);
        }
    }

    #[test]
    fn from_values_and_serde_validate() {
        let mut values = [0.0; FEATURE_COUNT];
        values[0] = 1.0;
        values[FEATURE_COUNT - 1] = 7.0;
        let v = FeatureVector::from_values(10.0, values, false).unwrap();
        assert_eq!(
            v.by_name("rate.bytes"),
            Some(0.0),
            "bytes ignored when absent"
        );
        let json = serde_json::to_string(&v).unwrap();
        let back: FeatureVector = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);

        values[3] = -1.0;
        assert!(FeatureVector::from_values(10.0, values, false).is_err());
        values[3] = f64::NAN;
        assert!(FeatureVector::from_values(10.0, values, false).is_err());
        values[3] = 0.0;
        assert!(FeatureVector::from_values(0.0, values, false).is_err());
        let bad = json.replace("\"interval_secs\":10.0", "\"interval_secs\":-1.0");
        assert!(serde_json::from_str::<FeatureVector>(&bad).is_err());
    }
}

//! Novelty: scoring one observation against a baseline.
//!
//! [`NoveltyScorer::new`] indexes a [`Baseline`] once: per dimension, a hash map from each
//! generalised item (and each collapsed `dir/*` or network key) to its precomputed score and
//! counts, plus the number of learned items under each collapse key (the "neighbourhood" that
//! explains a novel item). [`NoveltyScorer::score`] then generalises the observation into a
//! caller-owned [`Scratch`] buffer and looks it up:
//!
//! 1. the generalised item is in the baseline → [`Familiarity::Known`];
//! 2. else its collapse key is (a learned `dir/*` or network) → [`Familiarity::KnownGeneralised`];
//! 3. else → [`Familiarity::Novel`].
//!
//! The score is the calibrated one (see [`crate::calibrate`]): `1 − score` is the probability
//! that a normal interval contains something at least as rare.
//!
//! # Cost
//!
//! The hot path (a known item) allocates nothing once the scratch buffers have grown to the
//! longest item seen: generalisation writes into the scratch, the maps are looked up with
//! `&str` (keys are `Box<str>`), and scores are precomputed per item. Keys are compared exactly
//! (no hash-only membership), so a crafted item can never pass for a known one; the hasher is
//! keyed per process (ahash), so crafted items cannot degrade the maps either. Novel items
//! allocate nothing in the scorer either; callers that keep a score beyond the next call
//! convert it with [`Score::to_owned`].

use std::collections::HashMap;

use ahash::RandomState;
use serde::{Deserialize, Serialize};

use habit_profiles::baseline::Baseline;
use habit_profiles::generalise;
use habit_profiles::observation::{self, AlertDimension, Dimension, Observation};

use crate::calibrate::{self, DEFAULT_FALSE_ALARM_RATE, Tail};
use crate::priority::Priority;

/// How familiar an observation is to the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Familiarity {
    /// Its generalised item was learned.
    Known,
    /// Its item was not learned, but its directory (`dir/*`) or network was collapsed during
    /// learning: the workload routinely uses unseen names there.
    KnownGeneralised,
    /// Never seen, not even generalised. Only novel observations raise novelty alerts.
    Novel,
}

/// How often the item, or for a novel item its neighbourhood, was seen while learning: the
/// explanation beside a score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rarity {
    /// Learning intervals in which the item (or the collapsed key it matched) was seen; 0 for
    /// a novel item.
    pub intervals_seen: u64,
    /// Observations of it while learning; 0 for a novel item.
    pub count: u64,
    /// Learning intervals in all.
    pub intervals: u64,
    /// Learned items sharing its directory or network (its collapse key); 0 when the
    /// dimension has no such neighbourhood.
    pub neighbourhood: u32,
}

/// The score of one observation. Borrows the generalised item from the [`Scratch`] it was
/// computed in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score<'a> {
    /// How familiar it is.
    pub familiarity: Familiarity,
    /// The calibrated score in `0..=1`: `1 − score` is the probability that a normal interval
    /// has an observation in this dimension at least as rare.
    pub score: f64,
    /// Its dimension.
    pub dimension: Dimension,
    /// The generalised item.
    pub item: &'a str,
    /// For [`Familiarity::KnownGeneralised`], the collapsed key it matched (`/var/cache/*`).
    pub matched: Option<&'a str>,
    /// Rarity behind the score.
    pub rarity: Rarity,
}

impl Score<'_> {
    /// Whether the observation was novel.
    pub fn is_novel(&self) -> bool {
        self.familiarity == Familiarity::Novel
    }

    /// `1 − score`: the false-alarm probability of alerting on scores this high.
    pub fn tail_probability(&self) -> f64 {
        1.0 - self.score
    }

    /// The priority of the score with the default bands.
    pub fn priority(&self) -> Priority {
        calibrate::priority_for(self.score)
    }

    /// The dimension name for alerts.
    pub fn alert_dimension(&self) -> AlertDimension {
        self.dimension.alert_dimension()
    }

    /// A copy that owns its strings (for alerts, queues, logs).
    pub fn to_owned(&self) -> OwnedScore {
        OwnedScore {
            familiarity: self.familiarity,
            score: self.score,
            dimension: self.dimension,
            item: self.item.to_owned(),
            matched: self.matched.map(str::to_owned),
            rarity: self.rarity,
        }
    }
}

/// A [`Score`] that owns its strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnedScore {
    /// How familiar it is.
    pub familiarity: Familiarity,
    /// The calibrated score in `0..=1`.
    pub score: f64,
    /// Its dimension.
    pub dimension: Dimension,
    /// The generalised item.
    pub item: String,
    /// The collapsed key it matched, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<String>,
    /// Rarity behind the score.
    pub rarity: Rarity,
}

/// Reusable buffers for [`NoveltyScorer::score`]; keep one per thread.
#[derive(Debug, Clone, Default)]
pub struct Scratch {
    item: String,
    key: String,
}

/// What the index knows about one learned item.
#[derive(Debug, Clone, Copy)]
struct Entry {
    score: f64,
    intervals_seen: u64,
    count: u64,
}

#[derive(Debug, Clone)]
struct DimensionIndex {
    items: HashMap<Box<str>, Entry, RandomState>,
    neighbourhoods: HashMap<Box<str>, u32, RandomState>,
    novel_score: f64,
    threshold: f64,
    /// The baseline names a multi-call binary (`/bin/busybox`) but none of its applets: it
    /// was learned before applets were told apart, and its binary stands for every applet.
    legacy_multi_call: bool,
}

/// Scores observations against one baseline. Immutable once built: share it between
/// threads (each with its own [`Scratch`]) and rebuild it when the baseline changes.
#[derive(Debug, Clone)]
pub struct NoveltyScorer {
    dimensions: Vec<DimensionIndex>,
    intervals: u64,
}

impl NoveltyScorer {
    /// Indexes a baseline. Scores are computed from the baseline's items (which are
    /// authoritative); alert thresholds come from its calibration if it has one, else from
    /// [`DEFAULT_FALSE_ALARM_RATE`].
    pub fn new(baseline: &Baseline) -> Self {
        let intervals = baseline.learning.intervals;
        let dimensions = Dimension::ALL
            .into_iter()
            .map(|dimension| {
                let tail = Tail::of(baseline, dimension);
                let mut items = HashMap::with_hasher(RandomState::new());
                let mut neighbourhoods = HashMap::with_hasher(RandomState::new());
                let mut key = String::new();
                for (item, stats) in baseline.items(dimension) {
                    let entry = Entry {
                        score: tail.score(stats.intervals_seen),
                        intervals_seen: stats.intervals_seen,
                        count: stats.count,
                    };
                    items.insert(Box::from(item), entry);
                    key.clear();
                    if generalise::collapse_key_into(dimension, item, &mut key) {
                        *neighbourhoods.entry(Box::from(key.as_str())).or_insert(0) += 1;
                    }
                }
                let threshold = baseline
                    .calibration
                    .as_ref()
                    .and_then(|c| c.per_dimension.get(&dimension))
                    .map_or_else(
                        || calibrate::threshold_for(DEFAULT_FALSE_ALARM_RATE),
                        |c| c.threshold,
                    );
                let legacy_multi_call =
                    matches!(dimension, Dimension::Exec | Dimension::ProcessEdge)
                        && items.keys().any(|k| observation::is_multi_call(k))
                        && !items
                            .keys()
                            .any(|k| observation::without_applet(k).is_some());
                DimensionIndex {
                    items,
                    neighbourhoods,
                    novel_score: tail.score(0),
                    threshold,
                    legacy_multi_call,
                }
            })
            .collect();
        Self {
            dimensions,
            intervals,
        }
    }

    /// Scores one observation. On return, `scratch` holds the generalised item, which the
    /// score borrows. Allocates nothing once `scratch` has grown to fit the items.
    pub fn score<'a>(&'a self, observation: &Observation, scratch: &'a mut Scratch) -> Score<'a> {
        let dimension = observation.dimension;
        scratch.item.clear();
        scratch.key.clear();
        observation.generalise_into(&mut scratch.item);
        let has_key = generalise::collapse_key_into(dimension, &scratch.item, &mut scratch.key);
        let scratch: &'a Scratch = scratch;
        let index = self.index(dimension);
        let mut rarity = Rarity {
            intervals: self.intervals,
            ..Rarity::default()
        };

        let (familiarity, entry, matched) =
            if let Some(entry) = index.items.get(scratch.item.as_str()) {
                (Familiarity::Known, Some(entry), None)
            } else if let Some(entry) = has_key
                .then(|| index.items.get(scratch.key.as_str()))
                .flatten()
            {
                (
                    Familiarity::KnownGeneralised,
                    Some(entry),
                    Some(scratch.key.as_str()),
                )
            } else if let Some((bare, entry)) = index
                .legacy_multi_call
                .then(|| observation::without_applet(&scratch.item))
                .flatten()
                .and_then(|bare| Some((bare, index.items.get(bare)?)))
            {
                (Familiarity::KnownGeneralised, Some(entry), Some(bare))
            } else {
                (Familiarity::Novel, None, None)
            };
        let score = match entry {
            Some(entry) => {
                rarity.intervals_seen = entry.intervals_seen;
                rarity.count = entry.count;
                entry.score
            }
            None => {
                if has_key {
                    rarity.neighbourhood = index
                        .neighbourhoods
                        .get(scratch.key.as_str())
                        .copied()
                        .unwrap_or(0);
                }
                index.novel_score
            }
        };
        Score {
            familiarity,
            score,
            dimension,
            item: scratch.item.as_str(),
            matched,
            rarity,
        }
    }

    /// Whether a score should raise a novelty alert: it is novel and at or above its
    /// dimension's calibrated threshold.
    pub fn is_alert(&self, score: &Score<'_>) -> bool {
        score.is_novel() && score.score >= self.index(score.dimension).threshold
    }

    /// The alert threshold of a dimension.
    pub fn threshold(&self, dimension: Dimension) -> f64 {
        self.index(dimension).threshold
    }

    /// The score a novel item gets in a dimension.
    pub fn novel_score(&self, dimension: Dimension) -> f64 {
        self.index(dimension).novel_score
    }

    /// Learned items (including collapsed keys) in a dimension.
    pub fn len(&self, dimension: Dimension) -> usize {
        self.index(dimension).items.len()
    }

    /// Whether a dimension has no learned item.
    pub fn is_empty(&self, dimension: Dimension) -> bool {
        self.len(dimension) == 0
    }

    fn index(&self, dimension: Dimension) -> &DimensionIndex {
        // `dimensions` has one entry per `Dimension::ALL`, in index order.
        &self.dimensions[dimension.index()]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use habit_profiles::observation::{FileMode, Proto};
    use habit_profiles::profile::{Profile, ProfileConfig, Provenance};
    use habit_profiles::workload::WorkloadKey;
    use std::net::Ipv4Addr;

    const MIN: u64 = 60_000;

    /// A workload learned over 10 intervals: nginx every interval, a config file every
    /// interval, a log rotated once, a cache directory that collapsed, and one backend.
    fn baseline() -> Baseline {
        let mut config = ProfileConfig::default();
        config.generalise.dir_collapse_after = 3;
        let mut p = Profile::new(WorkloadKey::host(), "n", 0, config);
        let here = Provenance::new("n", None);
        for t in 0..10 {
            let now = t * MIN;
            let _ = p.observe(&Observation::exec("/usr/sbin/nginx"), now, &here);
            let _ = p.observe(
                &Observation::file("/etc/nginx/nginx.conf", FileMode::Read),
                now,
                &here,
            );
            let _ = p.observe(
                &Observation::file(&format!("/proc/{}/stat", 100 + t), FileMode::Read),
                now,
                &here,
            );
            let _ = p.observe(
                &Observation::file(&format!("/var/cache/nginx/{t}a"), FileMode::Write),
                now,
                &here,
            );
            let _ = p.observe(
                &Observation::outbound(Ipv4Addr::new(10, 0, 0, 7).into(), 5432, Proto::Tcp),
                now,
                &here,
            );
        }
        let _ = p.observe(&Observation::exec("/usr/bin/logrotate"), 5 * MIN, &here);
        let _ = p.observe(
            &Observation::file("/etc/ssl/a.pem", FileMode::Read),
            5 * MIN,
            &here,
        );
        let mut b = Baseline::freeze(&p, 10 * MIN, false);
        calibrate::calibrate(&mut b, 0.05);
        b
    }

    /// A baseline learned before busybox's applets were told apart names `/bin/busybox`
    /// alone: after an upgrade its applets are known through it (no alert storm); a baseline
    /// that names applets tells them apart.
    #[test]
    fn busybox_applets_are_programs_and_old_baselines_still_read() {
        let learn = |items: &[Observation]| {
            let mut p = Profile::new(WorkloadKey::host(), "n", 0, ProfileConfig::default());
            let here = Provenance::new("n", None);
            for t in 0..30 {
                for o in items {
                    let _ = p.observe(o, t * MIN, &here);
                }
            }
            NoveltyScorer::new(&Baseline::freeze(&p, 30 * MIN, false))
        };
        let mut scratch = Scratch::default();
        let ps = Observation::exec_of("/bin/busybox", &["ps"]);
        let gzip = Observation::exec_of("/bin/busybox", &["gzip"]);

        let new = learn(std::slice::from_ref(&gzip));
        assert!(!new.score(&gzip, &mut scratch).is_novel());
        let s = new.score(&ps, &mut scratch);
        assert!(s.is_novel() && new.is_alert(&s), "{s:?}");

        let old = learn(&[Observation::exec("/bin/busybox")]);
        let s = old.score(&ps, &mut scratch);
        assert_eq!(s.familiarity, Familiarity::KnownGeneralised);
        assert_eq!(s.matched, Some("/bin/busybox"));
        let s = old.score(&Observation::exec("/usr/bin/nc"), &mut scratch);
        assert!(old.is_alert(&s));
    }

    #[test]
    fn known_generalised_and_novel() {
        let b = baseline();
        let scorer = NoveltyScorer::new(&b);
        let mut scratch = Scratch::default();

        let s = scorer.score(
            &Observation::file("/proc/4242/stat", FileMode::Read),
            &mut scratch,
        );
        assert_eq!(s.familiarity, Familiarity::Known);
        assert_eq!(s.item, "r /proc/<pid>/stat");
        assert_eq!(s.rarity.intervals_seen, 10);
        assert_eq!(s.rarity.intervals, 10);
        assert!(s.score < 0.1, "{}", s.score);
        assert!(!scorer.is_alert(&s));

        let s = scorer.score(
            &Observation::file("/var/cache/nginx/zz", FileMode::Write),
            &mut scratch,
        );
        assert_eq!(s.familiarity, Familiarity::KnownGeneralised);
        assert_eq!(s.matched, Some("w /var/cache/nginx/*"));
        assert_eq!(s.item, "w /var/cache/nginx/zz");
        assert!(!scorer.is_alert(&s));

        let s = scorer.score(&Observation::exec("/bin/sh"), &mut scratch);
        assert_eq!(s.familiarity, Familiarity::Novel);
        assert_eq!(s.item, "/bin/sh");
        assert_eq!(s.dimension, Dimension::Exec);
        assert_eq!(s.alert_dimension(), AlertDimension::Exec);
        assert_eq!(s.rarity.neighbourhood, 0);
        // exec (decisive): one steady-state singleton (logrotate) in 10 intervals, 2 of them
        // start-up → novel rate 2/(8 + 1 + 90).
        assert!((s.score - (-2.0f64 / 99.0).exp()).abs() < 1e-12);
        assert_eq!(s.score, scorer.novel_score(Dimension::Exec));
    }

    #[test]
    fn novel_items_report_their_neighbourhood() {
        let b = baseline();
        let scorer = NoveltyScorer::new(&b);
        let mut scratch = Scratch::default();
        let s = scorer.score(
            &Observation::file("/etc/nginx/evil.conf", FileMode::Read),
            &mut scratch,
        );
        assert!(s.is_novel());
        assert_eq!(s.rarity.neighbourhood, 1);
        let s = scorer.score(
            &Observation::outbound(Ipv4Addr::new(10, 0, 0, 8).into(), 5432, Proto::Tcp),
            &mut scratch,
        );
        assert!(s.is_novel());
        assert_eq!(s.rarity.neighbourhood, 1);
        assert_eq!(s.alert_dimension(), AlertDimension::Network);
    }

    #[test]
    fn scores_order_novel_over_rare_over_common() {
        let b = baseline();
        let scorer = NoveltyScorer::new(&b);
        let mut scratch = Scratch::default();
        let novel = scorer
            .score(
                &Observation::file("/etc/shadow", FileMode::Read),
                &mut scratch,
            )
            .score;
        let rare = scorer
            .score(
                &Observation::file("/etc/ssl/a.pem", FileMode::Read),
                &mut scratch,
            )
            .score;
        let common = scorer
            .score(
                &Observation::file("/etc/nginx/nginx.conf", FileMode::Read),
                &mut scratch,
            )
            .score;
        assert!(novel >= rare && rare > common, "{novel} {rare} {common}");
        assert!((0.0..=1.0).contains(&novel) && (0.0..=1.0).contains(&common));
    }

    #[test]
    fn alerts_use_the_calibrated_threshold() {
        let b = baseline();
        let scorer = NoveltyScorer::new(&b);
        let mut scratch = Scratch::default();
        // A novel file read: the file dimension has singletons, its score is below 0.95.
        let s = scorer.score(
            &Observation::file("/etc/passwd", FileMode::Read),
            &mut scratch,
        );
        assert!(s.is_novel());
        assert_eq!(scorer.threshold(Dimension::File), 0.95);
        assert!(!scorer.is_alert(&s));
        // A lower target alerts.
        let mut loose = b.clone();
        calibrate::calibrate(&mut loose, 0.3);
        let scorer = NoveltyScorer::new(&loose);
        let s = scorer.score(
            &Observation::file("/etc/passwd", FileMode::Read),
            &mut scratch,
        );
        assert!(scorer.is_alert(&s));
        assert_eq!(s.priority(), Priority::Notice);
        // A never-used decisive dimension (listen) alerts at 0.95: exp(-1/99).
        let s = scorer.score(&Observation::listen(4444, Proto::Tcp), &mut scratch);
        assert!((s.score - (-1.0f64 / 99.0).exp()).abs() < 1e-12);
        let owned = s.to_owned();
        assert_eq!(owned.item, "4444/tcp");
        let json = serde_json::to_value(&owned).unwrap();
        assert_eq!(json["familiarity"], "novel");
        assert_eq!(json["dimension"], "listen");
    }

    #[test]
    fn an_empty_baseline_finds_everything_novel() {
        let p = Profile::new(WorkloadKey::host(), "n", 0, ProfileConfig::default());
        let b = Baseline::freeze(&p, 0, true);
        let scorer = NoveltyScorer::new(&b);
        let mut scratch = Scratch::default();
        let s = scorer.score(&Observation::syscall("ptrace"), &mut scratch);
        assert!(s.is_novel());
        // An empty dimension has the prior: 90 quiet pseudo-intervals.
        assert!((s.score - (-1.0f64 / 91.0).exp()).abs() < 1e-12);
        assert!(scorer.is_empty(Dimension::Syscall));
    }

    mod allocations {
        //! Counts heap allocations of the current thread, to prove the hot path allocates
        //! nothing. The allocator is installed for this crate's unit-test binary only.
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
        }

        struct Counting;

        fn count() {
            let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        }

        // SAFETY: forwards every call to the system allocator unchanged; counting touches only
        // a const-initialised thread-local `Cell`, which never allocates.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                count();
                // SAFETY: same contract as the caller's.
                unsafe { System.alloc(layout) }
            }

            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                count();
                // SAFETY: same contract as the caller's.
                unsafe { System.alloc_zeroed(layout) }
            }

            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                count();
                // SAFETY: same contract as the caller's.
                unsafe { System.realloc(ptr, layout, new_size) }
            }

            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: same contract as the caller's.
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;

        /// Allocations made by this thread so far.
        pub fn so_far() -> u64 {
            ALLOCATIONS.with(Cell::get)
        }
    }

    #[test]
    fn scoring_allocates_nothing_once_warm() {
        let b = baseline();
        let scorer = NoveltyScorer::new(&b);
        let mut scratch = Scratch::default();
        let observations = [
            Observation::file("/proc/4242/stat", FileMode::Read),
            Observation::file("/var/cache/nginx/zz", FileMode::Write),
            Observation::outbound(Ipv4Addr::new(10, 0, 0, 7).into(), 5432, Proto::Tcp),
            Observation::args("/usr/bin/sleep", &["sleep", "30"]),
            Observation::file("/tmp/tmp.AbC123/x", FileMode::Write),
            Observation::exec("/bin/novel"),
        ];
        // Warm up: the scratch buffers grow to fit.
        for o in &observations {
            let _ = scorer.score(o, &mut scratch);
        }
        let before = allocations::so_far();
        let mut known = 0;
        for _ in 0..100 {
            for o in &observations {
                let s = scorer.score(o, &mut scratch);
                known += usize::from(!s.is_novel());
            }
        }
        assert_eq!(allocations::so_far() - before, 0);
        assert_eq!(known, 300);
    }
}

//! Rollout inheritance: when a new tag or digest of an image repository appears and another
//! version of it already has a stable baseline, the new workload starts from that baseline
//! (its items and models, carried and merged in at the freeze) and learns only the
//! difference, for `inherit_window` times the usual `min` and `stable` windows, then
//! detects. What the new version added is what `habitctl baseline diff OLD NEW` shows, and
//! the merged baseline names its lineage in `metadata.inherited_from`. On by default
//! (`[learning] inherit = true`).

use std::sync::Arc;

use habit_profiles::baseline::Baseline;
use habit_profiles::store::WorkloadState;
use habit_profiles::workload::WorkloadKey;

use super::{Engine, Phase};

impl Engine {
    /// The baseline a new workload inherits: the newest stable baseline of another version of
    /// its repository, if inheritance is on.
    pub(super) fn predecessor(&self, key: &WorkloadKey) -> Option<(WorkloadKey, Arc<Baseline>)> {
        if !self.config.inherit {
            return None;
        }
        let repository = key.repository()?;
        self.workloads
            .iter()
            .filter(|(k, _)| *k != key && k.repository() == Some(repository))
            .filter_map(|(k, e)| match &e.phase {
                Phase::Detecting { baseline, .. } if e.record.state == WorkloadState::Stable => {
                    Some((k.clone(), baseline.clone()))
                }
                _ => None,
            })
            .max_by(|(ka, a), (kb, b)| (a.created, ka.as_str()).cmp(&(b.created, kb.as_str())))
    }
}

/// The predecessor's baseline as the starting point of `key`: under the new key, its lineage
/// recorded.
pub(super) fn inherited(previous: &Baseline, from: &WorkloadKey, key: &WorkloadKey) -> Baseline {
    let mut baseline = previous.clone();
    baseline.workload = key.clone();
    let from = from.to_string();
    if !baseline.metadata.inherited_from.contains(&from) {
        baseline.metadata.inherited_from.push(from);
    }
    baseline
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, SystemTime};

    use habit_profiles::observation::{Dimension, Observation};
    use habit_profiles::profile::{Profile, ProfileConfig, Provenance};
    use habit_profiles::store::ProfileStore;

    use super::*;
    use crate::config::Learning;
    use crate::learning::unix_ms;
    use crate::metrics::Metrics;

    const OLD: &str = "docker.io/library/web:1.0";
    const NEW: &str = "docker.io/library/web:1.1";

    fn config(inherit: bool) -> Learning {
        Learning {
            min: Duration::from_secs(3600),
            stable: Duration::from_secs(3600),
            max: Duration::from_secs(86_400),
            interval: Duration::from_secs(60),
            inherit,
            ..Learning::default()
        }
    }

    /// An engine whose store holds a stable baseline of version 1.0.
    fn engine(inherit: bool) -> (Engine, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ProfileStore::open(dir.path().join("db")).unwrap());
        let profile_config = ProfileConfig {
            interval_ms: 60_000,
            ..ProfileConfig::default()
        };
        let mut profile = Profile::new(WorkloadKey::from_raw(OLD), "node-a", 0, profile_config);
        let here = Provenance::new("node-a", Some("c1"));
        let _ = profile.observe(&Observation::exec("/usr/bin/web"), 1_000, &here);
        let old = Baseline::freeze(&profile, 600_000, false);
        store
            .import_baseline(
                &WorkloadKey::from_raw(OLD),
                old.to_json_pretty().unwrap().as_bytes(),
                1,
            )
            .unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        let engine = Engine::open(store, config(inherit), "node-a".into(), metrics).unwrap();
        (engine, dir)
    }

    fn run_version_1_1(engine: &mut Engine) -> WorkloadKey {
        let key = WorkloadKey::from_raw(NEW);
        let now = unix_ms(SystemTime::now());
        let mut findings = Vec::new();
        engine.observe(
            &key,
            Some("c2"),
            &[
                Observation::exec("/usr/bin/web"),
                Observation::exec("/usr/bin/new-helper"),
            ],
            now,
            &mut findings,
        );
        assert!(findings.is_empty(), "learning raises nothing");
        // A third of the usual windows later.
        engine.tick(SystemTime::now() + Duration::from_secs(1250));
        key
    }

    #[test]
    fn a_new_tag_starts_from_its_predecessor_and_detects_sooner() {
        let (mut engine, _dir) = engine(true);
        let key = run_version_1_1(&mut engine);
        assert_eq!(engine.state(&key), WorkloadState::Stable);
        let baseline = engine.store.baselines().get(&key).unwrap().unwrap();
        assert_eq!(baseline.workload, key);
        assert_eq!(baseline.metadata.inherited_from, [OLD]);
        let old = engine
            .store
            .baselines()
            .get(&WorkloadKey::from_raw(OLD))
            .unwrap()
            .unwrap();
        // The unchanged behaviour is inherited; the new one is what the diff shows.
        assert_eq!(
            baseline
                .item(Dimension::Exec, "/usr/bin/web")
                .unwrap()
                .count,
            2
        );
        let diff = habit_profiles::baseline::diff(&old, &baseline);
        assert_eq!(
            diff.dimensions[&Dimension::Exec].added,
            ["/usr/bin/new-helper"]
        );
        assert!(diff.dimensions[&Dimension::Exec].removed.is_empty());
    }

    #[test]
    fn without_inheritance_a_new_tag_learns_the_full_window() {
        let (mut engine, _dir) = engine(false);
        let key = run_version_1_1(&mut engine);
        assert_eq!(engine.state(&key), WorkloadState::Learning);
    }

    #[test]
    fn host_keys_and_other_repositories_inherit_nothing() {
        let (engine, _dir) = engine(true);
        assert!(engine.predecessor(&WorkloadKey::host()).is_none());
        let other = WorkloadKey::from_raw("docker.io/library/redis:7");
        assert!(engine.predecessor(&other).is_none());
        let digest = WorkloadKey::from_raw(
            "docker.io/library/web@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        );
        assert_eq!(engine.predecessor(&digest).unwrap().0.as_str(), OLD);
    }
}

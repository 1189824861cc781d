//! Rollout inheritance: when a new tag or digest of an image repository appears and another
//! version of it already has a stable baseline, the new workload starts from that baseline
//! (its items and models, carried and merged in at the freeze) and learns only the
//! difference, then detects. On by default (`[learning] inherit = true`).
//!
//! - **Shorter windows, on what changed**: the new version learns for `inherit_window`
//!   (0.25) times the usual `min`, and is stable once it has done nothing its predecessor did
//!   not do for `inherit_window` times `stable` (behaviour the predecessor knew does not keep
//!   it learning).
//! - **What it added is recorded as such**: at the freeze, every item of the merged baseline
//!   that the predecessor's baseline did not know names the new version in `introduced_by`
//!   (its workload key, and its image's digest or id when the runtime reported them);
//!   `habitctl baseline diff OLD NEW` prints "added by …" beside it. The merged baseline names
//!   its lineage in `metadata.inherited_from`.
//! - **Survives a restart**: the workload's record stores `inheriting_from`; a restarted
//!   habitd reads the predecessor's baseline back from the store and goes on with the short
//!   windows. (If that baseline is gone, the workload learns in full.) The API view shows
//!   `inheriting_from` while it learns.

use std::sync::Arc;

use habit_profiles::baseline::Baseline;
use habit_profiles::error::ProfileError;
use habit_profiles::observation::Dimension;
use habit_profiles::profile::{Profile, UnixMillis};
use habit_profiles::store::{ForcedMode, WorkloadRecord, WorkloadState};
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
        let (from, newest) = self
            .workloads
            .iter()
            .filter(|(k, _)| *k != key && k.repository() == Some(repository))
            .filter_map(|(k, e)| match &e.phase {
                Phase::Detecting { baseline, .. } if e.record.state == WorkloadState::Stable => {
                    Some((k, baseline))
                }
                _ => None,
            })
            .max_by(|(ka, a), (kb, b)| (a.created, ka.as_str()).cmp(&(b.created, kb.as_str())))?;
        // Whole, with its models: the new version's freeze pools them.
        match self.stored_baseline(from, newest) {
            Ok(baseline) => Some((from.clone(), baseline)),
            Err(e) => {
                tracing::warn!(
                    message = "The baseline a new version would inherit cannot be read: it learns in full.",
                    workload = %key,
                    inherits = %from,
                    %e
                );
                None
            }
        }
    }

    /// A detecting workload's baseline whole, models included, as the store holds it (the
    /// copy in memory leaves them out: see `score::detecting`). `in_memory` stands in, with
    /// a warning, if the store has none (it always has one for a detecting workload).
    pub(super) fn stored_baseline(
        &self,
        key: &WorkloadKey,
        in_memory: &Arc<Baseline>,
    ) -> Result<Arc<Baseline>, ProfileError> {
        match self.store.baselines().get(key)? {
            Some(baseline) => Ok(Arc::new(baseline)),
            None => {
                tracing::warn!(
                    message = "A detecting workload's baseline is not in the store; its models are not carried.",
                    workload = %key
                );
                Ok(in_memory.clone())
            }
        }
    }

    /// The baseline a learning workload read back from the store extends: its predecessor's,
    /// when it was inheriting (if that baseline is gone or unreadable, the workload learns in
    /// full: `inheriting_from` is cleared), or its own, when an operator forced `mode learn`
    /// on it (the baseline stays in the store until the next freeze replaces it).
    pub(super) fn carried_on_resume(&self, record: &mut WorkloadRecord) -> Option<Arc<Baseline>> {
        if let Some(from) = record.inheriting_from.clone() {
            match self.store.baselines().get(&from) {
                Ok(Some(previous)) => {
                    tracing::info!(
                        message = "Resuming rollout inheritance: learning what changed.",
                        workload = %record.key,
                        inherits = %from
                    );
                    return Some(Arc::new(inherited(&previous, &from, &record.key)));
                }
                Ok(None) => tracing::warn!(
                    message = "The baseline this workload inherited is gone: it learns in full.",
                    workload = %record.key,
                    inherits = %from
                ),
                Err(e) => tracing::warn!(
                    message = "The baseline this workload inherited does not read: it learns in full.",
                    workload = %record.key,
                    inherits = %from,
                    %e
                ),
            }
            record.inheriting_from = None;
        }
        if record.mode_forced == Some(ForcedMode::Learn) {
            match self.store.baselines().get(&record.key) {
                Ok(own) => return own.map(Arc::new),
                Err(e) => tracing::warn!(
                    message = "The baseline this workload extends does not read: the next \
                               freeze replaces it with what it learns now.",
                    workload = %record.key,
                    %e
                ),
            }
        }
        None
    }
}

/// When the inheriting `profile` last learned something its predecessor's baseline does not
/// know (the first sighting of the newest such item); `None` if it learned nothing new.
pub(super) fn last_change(profile: &Profile, previous: &Baseline) -> Option<UnixMillis> {
    Dimension::ALL
        .iter()
        .flat_map(|&d| {
            profile
                .items(d)
                .filter(move |(item, _)| !previous.knows_item(d, item))
                .map(|(_, stats)| stats.first_seen)
        })
        .max()
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
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use habit_profiles::api::Mode;
    use habit_profiles::observation::{Dimension, Observation};
    use habit_profiles::profile::{ContainerOrigin, Profile, ProfileConfig, Provenance};
    use habit_profiles::store::ProfileStore;

    use super::*;
    use crate::config::Learning;
    use crate::learning::unix_ms;
    use crate::metrics::Metrics;

    const OLD: &str = "docker.io/library/web:1.0";
    const NEW: &str = "docker.io/library/web:1.1";
    const NEW_DIGEST: &str =
        "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const NEW_IMAGE_ID: &str =
        "sha256:2222222222222222222222222222222222222222222222222222222222222222";

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

    /// A store holding a stable baseline of version 1.0 (it ran /usr/bin/web and
    /// /usr/bin/cron-job).
    fn store() -> (Arc<ProfileStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ProfileStore::open(dir.path().join("db")).unwrap());
        let profile_config = ProfileConfig {
            interval_ms: 60_000,
            ..ProfileConfig::default()
        };
        let mut profile = Profile::new(WorkloadKey::from_raw(OLD), "node-a", 0, profile_config);
        let here = Provenance::new("node-a", Some("c1"));
        let _ = profile.observe(&Observation::exec("/usr/bin/web"), 1_000, &here);
        let _ = profile.observe(&Observation::exec("/usr/bin/cron-job"), 2_000, &here);
        let old = Baseline::freeze(&profile, 600_000, false);
        store
            .import_baseline(
                &WorkloadKey::from_raw(OLD),
                old.to_json_pretty().unwrap().as_bytes(),
                1,
            )
            .unwrap();
        (store, dir)
    }

    fn open(store: &Arc<ProfileStore>, inherit: bool) -> Engine {
        let metrics = Arc::new(Metrics::new().unwrap());
        Engine::open(store.clone(), config(inherit), "node-a".into(), metrics).unwrap()
    }

    /// An engine whose store holds a stable baseline of version 1.0.
    fn engine(inherit: bool) -> (Engine, tempfile::TempDir) {
        let (store, dir) = store();
        (open(&store, inherit), dir)
    }

    fn observe(engine: &mut Engine, key: &WorkloadKey, exe: &str, at: SystemTime) {
        let mut findings = Vec::new();
        engine.observe(
            key,
            Some("c2"),
            &[Observation::exec(exe)],
            unix_ms(at),
            &mut findings,
        );
        assert!(findings.is_empty(), "learning raises nothing");
    }

    /// Version 1.1 starts (its container described by the runtime) and runs its old program
    /// and a new one.
    fn start_version_1_1(engine: &mut Engine, at: SystemTime) -> WorkloadKey {
        let key = WorkloadKey::from_raw(NEW);
        let labels = BTreeMap::new();
        let origin = ContainerOrigin {
            digest: Some(NEW_DIGEST),
            image_id: Some(NEW_IMAGE_ID),
            namespace: None,
            labels: &labels,
        };
        engine.note_container(&key, "c2", &origin, unix_ms(at));
        observe(engine, &key, "/usr/bin/web", at);
        observe(engine, &key, "/usr/bin/new-helper", at);
        key
    }

    fn run_version_1_1(engine: &mut Engine) -> WorkloadKey {
        let now = SystemTime::now();
        let key = start_version_1_1(engine, now);
        // A third of the usual windows later.
        engine.tick(now + Duration::from_secs(1250));
        key
    }

    fn stored(engine: &Engine, key: &str) -> Baseline {
        engine
            .store
            .baselines()
            .get(&WorkloadKey::from_raw(key))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_new_tag_starts_from_its_predecessor_and_detects_sooner() {
        let (mut engine, _dir) = engine(true);
        let key = run_version_1_1(&mut engine);
        assert_eq!(engine.state(&key), WorkloadState::Stable);
        let baseline = stored(&engine, NEW);
        assert_eq!(baseline.workload, key);
        assert_eq!(baseline.metadata.inherited_from, [OLD]);
        let old = stored(&engine, OLD);
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
        // ...recorded as added by version 1.1, with its image's digest and id.
        let by = &diff.dimensions[&Dimension::Exec].introduced_by["/usr/bin/new-helper"];
        assert_eq!(by.version, NEW);
        assert_eq!(by.digest.as_deref(), Some(NEW_DIGEST));
        assert_eq!(by.image_id.as_deref(), Some(NEW_IMAGE_ID));
        assert_eq!(
            baseline
                .item(Dimension::Exec, "/usr/bin/new-helper")
                .unwrap()
                .introduced_by
                .as_ref(),
            Some(by)
        );
        // What the predecessor knew names no version.
        for item in ["/usr/bin/web", "/usr/bin/cron-job"] {
            let stats = baseline.item(Dimension::Exec, item).unwrap();
            assert!(stats.introduced_by.is_none(), "{item}: {stats:?}");
        }
        // The record no longer says inheriting; the view shows the lineage.
        let record = engine.store.workloads().get(&key).unwrap().unwrap();
        assert_eq!(record.inheriting_from, None);
        let view = engine.view_of(&key, SystemTime::now()).unwrap();
        assert_eq!(view.inheriting_from, None);
        assert_eq!(view.inherited_from, [OLD]);
        assert_eq!(baseline.metadata.digests.first().unwrap(), NEW_DIGEST);
    }

    #[test]
    fn without_inheritance_a_new_tag_learns_the_full_window() {
        let (mut engine, _dir) = engine(false);
        let key = run_version_1_1(&mut engine);
        assert_eq!(engine.state(&key), WorkloadState::Learning);
        let view = engine.view_of(&key, SystemTime::now()).unwrap();
        assert_eq!(view.inheriting_from, None);
    }

    /// Convergence looks only at what the predecessor did not know: the new version doing
    /// something its predecessor did (new to its own profile) late in its window does not
    /// keep it learning.
    #[test]
    fn behaviour_the_predecessor_knew_does_not_prolong_learning() {
        let (mut engine, _dir) = engine(true);
        let start = SystemTime::now();
        let key = start_version_1_1(&mut engine, start);
        // 1000 s in: the old periodic job (new to 1.1's profile, known to 1.0).
        observe(
            &mut engine,
            &key,
            "/usr/bin/cron-job",
            start + Duration::from_secs(1000),
        );
        // 1250 s: past the short min (900 s), 1250 s quiet on what changed, only 250 s since
        // the profile's last new item.
        engine.tick(start + Duration::from_secs(1250));
        assert_eq!(engine.state(&key), WorkloadState::Stable);

        // Something the predecessor never did, late, does keep it learning.
        let (mut other, _dir) = self::engine(true);
        let key = start_version_1_1(&mut other, start);
        observe(
            &mut other,
            &key,
            "/usr/bin/other-new",
            start + Duration::from_secs(1000),
        );
        other.tick(start + Duration::from_secs(1250));
        assert_eq!(other.state(&key), WorkloadState::Learning);
        other.tick(start + Duration::from_secs(1950));
        assert_eq!(other.state(&key), WorkloadState::Stable);
    }

    /// The counters can make a new version known before its events come out of a lagging
    /// ring buffer: until an event of it is learned, it does not converge (nothing can be
    /// judged unchanged before its start-up is seen).
    #[test]
    fn counters_alone_do_not_make_an_inheriting_workload_converge() {
        let (mut engine, _dir) = engine(true);
        let key = WorkloadKey::from_raw(NEW);
        let start = SystemTime::now();
        engine.observe_syscalls(
            &key,
            Some("c2"),
            &[("read".to_owned(), 5)],
            Duration::from_secs(60),
            unix_ms(start),
            &mut Vec::new(),
        );
        engine.tick(start + Duration::from_secs(1250));
        assert_eq!(engine.state(&key), WorkloadState::Learning);
        let view = engine.view_of(&key, start).unwrap();
        assert_eq!(view.inheriting_from.as_ref().map(|k| k.as_str()), Some(OLD));
        observe(&mut engine, &key, "/usr/bin/web", start);
        engine.tick(start + Duration::from_secs(2500));
        assert_eq!(engine.state(&key), WorkloadState::Stable);
    }

    /// Inheriting is stored with the workload: a restarted engine goes on learning what
    /// changed, from the predecessor's baseline, with the short windows.
    #[test]
    fn inheriting_survives_a_restart() {
        let (store, _dir) = store();
        let start = SystemTime::now();
        let key = {
            let mut engine = open(&store, true);
            let key = start_version_1_1(&mut engine, start);
            let view = engine.view_of(&key, start).unwrap();
            assert_eq!(view.inheriting_from.as_ref().map(|k| k.as_str()), Some(OLD));
            engine.shutdown();
            key
        };
        let record = store.workloads().get(&key).unwrap().unwrap();
        assert_eq!(
            record.inheriting_from.as_ref().map(|k| k.as_str()),
            Some(OLD)
        );

        let mut engine = open(&store, true);
        assert_eq!(engine.state(&key), WorkloadState::Learning);
        let view = engine.view_of(&key, start).unwrap();
        assert_eq!(view.inheriting_from.as_ref().map(|k| k.as_str()), Some(OLD));
        assert_eq!(view.inherited_from, [OLD]);
        // The short window still applies...
        engine.tick(start + Duration::from_secs(1250));
        assert_eq!(engine.state(&key), WorkloadState::Stable);
        // ...and the baseline is built on the predecessor's, the new item naming 1.1.
        let baseline = stored(&engine, NEW);
        assert_eq!(baseline.metadata.inherited_from, [OLD]);
        assert!(
            baseline
                .item(Dimension::Exec, "/usr/bin/cron-job")
                .is_some()
        );
        let helper = baseline
            .item(Dimension::Exec, "/usr/bin/new-helper")
            .unwrap();
        assert_eq!(helper.introduced_by.as_ref().unwrap().version, NEW);
    }

    /// A record written by a habitd without inheritance state (no `inheriting_from`) reads,
    /// and so does one whose predecessor's baseline is gone: it learns in full.
    #[test]
    fn old_records_read_and_a_lost_predecessor_means_learning_in_full() {
        let (store, _dir) = store();
        let start = SystemTime::now();
        let key = {
            let mut engine = open(&store, true);
            let key = start_version_1_1(&mut engine, start);
            engine.shutdown();
            key
        };
        let mut value =
            serde_json::to_value(store.workloads().get(&key).unwrap().unwrap()).unwrap();
        assert_eq!(value["inheriting_from"], OLD);
        value.as_object_mut().unwrap().remove("inheriting_from");
        let old_record: WorkloadRecord = serde_json::from_value(value).unwrap();
        assert_eq!(old_record.inheriting_from, None);

        let mut engine = open(&store, true);
        let (reply, _answer) = tokio::sync::oneshot::channel();
        engine.command(super::super::Command::SetMode {
            key: WorkloadKey::from_raw(OLD),
            mode: Mode::Relearn,
            reply,
        });
        drop(engine);
        let mut engine = open(&store, true);
        let view = engine.view_of(&key, start).unwrap();
        assert_eq!(view.inheriting_from, None);
        engine.tick(start + Duration::from_secs(1250));
        assert_eq!(engine.state(&key), WorkloadState::Learning);
    }

    /// `mode learn` on a stable workload extends its baseline; a restart keeps extending it
    /// (the stored baseline is carried again), instead of replacing it with the new learning.
    #[test]
    fn an_extension_survives_a_restart() {
        let (store, _dir) = store();
        let old = WorkloadKey::from_raw(OLD);
        {
            let mut engine = open(&store, true);
            let (reply, _answer) = tokio::sync::oneshot::channel();
            engine.command(super::super::Command::SetMode {
                key: old.clone(),
                mode: Mode::Learn,
                reply,
            });
            assert_eq!(engine.state(&old), WorkloadState::Learning);
            observe(&mut engine, &old, "/usr/bin/extra", SystemTime::now());
            engine.shutdown();
        }
        let mut engine = open(&store, true);
        let (reply, _answer) = tokio::sync::oneshot::channel();
        engine.command(super::super::Command::SetMode {
            key: old.clone(),
            mode: Mode::Detect,
            reply,
        });
        assert_eq!(engine.state(&old), WorkloadState::Stable);
        let baseline = stored(&engine, OLD);
        for item in ["/usr/bin/web", "/usr/bin/cron-job", "/usr/bin/extra"] {
            assert!(baseline.item(Dimension::Exec, item).is_some(), "{item}");
        }
        assert!(
            baseline
                .items(Dimension::Exec)
                .all(|(_, s)| s.introduced_by.is_none()),
            "an extension is not a new version"
        );
    }

    /// What the runtime says about a workload's containers ends up in its baseline's
    /// metadata: the labels all its pods carried, their one namespace, digests and ids.
    #[test]
    fn container_descriptions_become_the_baselines_metadata() {
        let (mut engine, _dir) = engine(false);
        let key = WorkloadKey::from_raw("docker.io/shop/api:3");
        let now = SystemTime::now();
        for (id, pod_hash, digest) in [("a1", "5d9c7", "sha256:aa"), ("b2", "77f1e", "sha256:bb")] {
            let labels = BTreeMap::from([
                ("app".to_owned(), "api".to_owned()),
                ("pod-template-hash".to_owned(), pod_hash.to_owned()),
            ]);
            let origin = ContainerOrigin {
                digest: Some(digest),
                image_id: Some("sha256:cc"),
                namespace: Some("shop"),
                labels: &labels,
            };
            engine.note_container(&key, id, &origin, unix_ms(now));
            engine.observe(
                &key,
                Some(id),
                &[Observation::exec("/usr/bin/api")],
                unix_ms(now),
                &mut Vec::new(),
            );
        }
        let (reply, _answer) = tokio::sync::oneshot::channel();
        engine.command(super::super::Command::SetMode {
            key: key.clone(),
            mode: Mode::Detect,
            reply,
        });
        let baseline = engine.store.baselines().get(&key).unwrap().unwrap();
        let meta = &baseline.metadata;
        assert_eq!(
            meta.labels,
            BTreeMap::from([("app".to_owned(), "api".to_owned())])
        );
        assert_eq!(meta.namespace.as_deref(), Some("shop"));
        assert_eq!(
            meta.digests.iter().map(String::as_str).collect::<Vec<_>>(),
            ["sha256:aa", "sha256:bb"]
        );
        assert_eq!(
            meta.image_ids
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["sha256:cc"]
        );
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

//! Baselines delivered with the deployment (`--baselines-dir DIR`, in Kubernetes a mounted
//! ConfigMap): every `*.json` file in the directory is a baseline file, imported at start and
//! again whenever its content changes, so a workload with a delivered baseline detects from its
//! first event instead of learning.
//!
//! The directory is polled, not watched with inotify: a ConfigMap volume is updated by swapping
//! a `..data` symlink, which inotify sees on the directory entry rather than on the files, and
//! polling a handful of small files every few seconds costs nothing. A file's workload comes
//! from its `workload` field (ConfigMap keys cannot hold the `/` and `:` of workload keys).
//!
//! Each file is imported through the engine's [`Command::Import`], so it is validated as
//! completely as an API import and a bad file changes nothing; the refusal is logged with the
//! file and the field and counted in `habitd_baseline_files_total{result="refused"}`. A file
//! equal to the baseline already stored (the usual case at a restart) is not imported again,
//! so a restart does not throw away what the store holds. Removing a file leaves the imported
//! baseline in place (`habitctl mode KEY relearn` starts over).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use habit_profiles::baseline::Baseline;
use habit_profiles::error::ProfileError;
use habit_profiles::store::ProfileStore;
use habit_profiles::workload::WorkloadKey;
use prometheus::IntCounterVec;
use tokio::sync::{mpsc, oneshot};

use super::commands::Command;

/// How often the directory is read again for changed files.
pub const POLL: Duration = Duration::from_secs(5);

/// What became of one file (the `result` label of `habitd_baseline_files_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Outcome {
    /// Imported: the workload now detects with this baseline.
    Imported,
    /// Equal to the stored baseline: nothing to do.
    Unchanged,
    /// Not a valid baseline (or the store failed): nothing changed.
    Refused,
}

impl Outcome {
    /// Every label value, in the order of the variants.
    pub const LABELS: [&'static str; 3] = ["imported", "unchanged", "refused"];

    fn label(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// A file to import: new or changed since it was last read, and parsed.
pub struct Delivery {
    path: PathBuf,
    key: WorkloadKey,
    bytes: Vec<u8>,
}

impl Delivery {
    /// The import command for this file, and where its result arrives.
    pub fn command(&self) -> (Command, oneshot::Receiver<Result<Baseline, ProfileError>>) {
        let (reply, result) = oneshot::channel();
        let command = Command::Import {
            key: self.key.clone(),
            file: self.bytes.clone(),
            reply,
        };
        (command, result)
    }
}

/// The directory and what was read from it.
pub struct BaselinesDir {
    dir: PathBuf,
    store: Arc<ProfileStore>,
    /// Each file's content hash when last read: a file is looked at again only when it changes
    /// (a refused file is not refused again every poll).
    read: HashMap<PathBuf, u64>,
    files: IntCounterVec,
}

impl BaselinesDir {
    /// Checks that `dir` is a readable directory (a typo in the flag is an error at start, not
    /// a deployment that silently learns from scratch); `files` counts the outcomes.
    pub fn open(
        dir: &Path,
        store: Arc<ProfileStore>,
        files: IntCounterVec,
    ) -> anyhow::Result<Self> {
        std::fs::read_dir(dir).map_err(|e| {
            anyhow::anyhow!("cannot read the baselines directory {}: {e}", dir.display())
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            store,
            read: HashMap::new(),
            files,
        })
    }

    /// The files that are new or changed since the last call and differ from the stored
    /// baseline of their workload, in name order. Files that cannot be read or parsed are
    /// refused here (logged, counted); the others' import result goes to [`Self::imported`].
    pub fn changed(&mut self) -> Vec<Delivery> {
        let paths = match self.json_files() {
            Ok(paths) => paths,
            Err(e) => {
                tracing::error!(
                    message = "Cannot read the baselines directory.",
                    dir = %self.dir.display(),
                    %e
                );
                return Vec::new();
            }
        };
        let mut deliveries = Vec::new();
        for path in paths {
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    // Perhaps mid-update: read again next time.
                    self.read.remove(&path);
                    self.refuse(&path, &format!("cannot be read: {e}"));
                    continue;
                }
            };
            let hash = content_hash(&bytes);
            if self.read.insert(path.clone(), hash) == Some(hash) {
                continue;
            }
            let baseline = match Baseline::from_json_slice(&bytes) {
                Ok(baseline) => baseline,
                Err(e) => {
                    self.refuse(&path, &format!("{:#}", anyhow::Error::new(e)));
                    continue;
                }
            };
            match self.store.baselines().get(&baseline.workload) {
                Ok(Some(stored)) if stored == baseline => {
                    tracing::info!(
                        message = "Delivered baseline already in the store.",
                        file = %path.display(),
                        workload = %baseline.workload
                    );
                    self.count(Outcome::Unchanged);
                    continue;
                }
                _ => {}
            }
            deliveries.push(Delivery {
                path,
                key: baseline.workload,
                bytes,
            });
        }
        deliveries
    }

    /// Records the engine's answer to a delivery's import.
    pub fn imported(&mut self, delivery: &Delivery, result: Result<Baseline, ProfileError>) {
        match result {
            Ok(baseline) => {
                tracing::info!(
                    message = "Delivered baseline imported: the workload detects.",
                    file = %delivery.path.display(),
                    workload = %delivery.key,
                    items = baseline.items_total()
                );
                self.count(Outcome::Imported);
            }
            Err(e) => self.refuse(&delivery.path, &format!("{:#}", anyhow::Error::new(e))),
        }
    }

    /// Polls the directory until the engine's command channel closes (shutdown).
    pub async fn watch(mut self, commands: mpsc::Sender<Command>) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + POLL, POLL);
        loop {
            tick.tick().await;
            for delivery in self.changed() {
                let (command, result) = delivery.command();
                if commands.send(command).await.is_err() {
                    return;
                }
                match result.await {
                    Ok(result) => self.imported(&delivery, result),
                    Err(_) => return,
                }
            }
        }
    }

    /// The directory's `*.json` files (following symlinks, as a ConfigMap's are), skipping
    /// hidden entries (a ConfigMap's `..data`).
    fn json_files(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') || !name.ends_with(".json") || !path.is_file() {
                continue;
            }
            paths.push(path);
        }
        paths.sort();
        Ok(paths)
    }

    fn refuse(&self, path: &Path, reason: &str) {
        tracing::error!(
            message = "Delivered baseline refused; nothing changed.",
            file = %path.display(),
            reason
        );
        self.count(Outcome::Refused);
    }

    fn count(&self, outcome: Outcome) {
        self.files.with_label_values(&[outcome.label()]).inc();
    }
}

/// A hash of a file's content, to notice changes (not a security check: the content is
/// validated in full when it changes).
fn content_hash(bytes: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use habit_profiles::observation::Observation;
    use habit_profiles::profile::{Profile, ProfileConfig, Provenance};
    use habit_profiles::store::WorkloadState;

    use super::*;
    use crate::config::Learning;
    use crate::learning::Engine;
    use crate::metrics::Metrics;

    const REDIS: &str = "docker.io/library/redis:7";

    /// A baseline file of `key` that learned `programs`.
    fn baseline_file(key: &str, programs: &[&str]) -> Vec<u8> {
        let mut profile = Profile::new(
            WorkloadKey::from_raw(key),
            "node-b",
            0,
            ProfileConfig::default(),
        );
        let here = Provenance::new("node-b", Some("c9"));
        for program in programs {
            let _ = profile.observe(&Observation::exec(program), 1_000, &here);
        }
        habit_profiles::baseline::Baseline::freeze(&profile, 600_000, false)
            .to_json_vec()
            .unwrap()
    }

    struct Setup {
        dir: tempfile::TempDir,
        store: Arc<ProfileStore>,
        engine: Engine,
        metrics: Arc<Metrics>,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("baselines")).unwrap();
        let store = Arc::new(ProfileStore::open(dir.path().join("db")).unwrap());
        let metrics = Arc::new(Metrics::new().unwrap());
        let engine = Engine::open(
            store.clone(),
            Learning::default(),
            "node-a".into(),
            metrics.clone(),
        )
        .unwrap();
        Setup {
            dir,
            store,
            engine,
            metrics,
        }
    }

    fn count(baselines: &BaselinesDir, outcome: Outcome) -> u64 {
        baselines.files.with_label_values(&[outcome.label()]).get()
    }

    impl Setup {
        fn write(&self, name: &str, bytes: &[u8]) {
            std::fs::write(self.dir.path().join("baselines").join(name), bytes).unwrap();
        }

        fn open(&self) -> BaselinesDir {
            BaselinesDir::open(
                &self.dir.path().join("baselines"),
                self.store.clone(),
                self.metrics.baseline_files.clone(),
            )
            .unwrap()
        }

        /// What the daemon does at start and on every poll.
        fn deliver(&mut self, baselines: &mut BaselinesDir) -> usize {
            let deliveries = baselines.changed();
            for delivery in &deliveries {
                let (command, mut result) = delivery.command();
                self.engine.command(command);
                baselines.imported(delivery, result.try_recv().unwrap());
            }
            deliveries.len()
        }

        fn stored(&self) -> Option<Baseline> {
            self.store
                .baselines()
                .get(&WorkloadKey::from_raw(REDIS))
                .unwrap()
        }
    }

    #[test]
    fn a_delivered_baseline_detects_at_once_and_a_bad_file_changes_nothing() {
        let mut s = setup();
        s.write(
            "redis.json",
            &baseline_file(REDIS, &["/usr/bin/redis-server"]),
        );
        s.write("notes.txt", b"not a baseline: ignored");
        let mut wrong_version = baseline_file("docker.io/library/nginx:1", &["/usr/sbin/nginx"]);
        let text = String::from_utf8(wrong_version).unwrap();
        wrong_version = text
            .replacen("\"version\":2", "\"version\":99", 1)
            .into_bytes();
        s.write("nginx.json", &wrong_version);

        let mut baselines = s.open();
        assert_eq!(s.deliver(&mut baselines), 1, "only redis.json parses");
        let key = WorkloadKey::from_raw(REDIS);
        assert_eq!(s.engine.state(&key), WorkloadState::Stable);
        assert_eq!(
            s.engine
                .state(&WorkloadKey::from_raw("docker.io/library/nginx:1")),
            WorkloadState::Learning,
            "a refused file creates nothing"
        );
        assert_eq!(
            (
                count(&baselines, Outcome::Imported),
                count(&baselines, Outcome::Refused)
            ),
            (1, 1)
        );

        // Nothing changed: nothing is read again (a refused file is not refused every poll).
        assert_eq!(s.deliver(&mut baselines), 0);
        assert_eq!(count(&baselines, Outcome::Refused), 1);

        // A changed file is imported again.
        let newer = baseline_file(REDIS, &["/usr/bin/redis-server", "/usr/bin/redis-cli"]);
        s.write("redis.json", &newer);
        assert_eq!(s.deliver(&mut baselines), 1);
        assert_eq!(s.stored().unwrap().items_total(), 2);

        // A bad change is refused and the stored baseline stays.
        s.write("redis.json", &newer[..newer.len() / 2]);
        assert_eq!(s.deliver(&mut baselines), 0);
        assert_eq!(count(&baselines, Outcome::Refused), 2);
        assert_eq!(s.stored().unwrap().items_total(), 2);
        assert_eq!(s.engine.state(&key), WorkloadState::Stable);
    }

    #[test]
    fn a_restart_does_not_import_what_the_store_holds() {
        let mut s = setup();
        s.write(
            "redis.json",
            &baseline_file(REDIS, &["/usr/bin/redis-server"]),
        );
        let mut first = s.open();
        assert_eq!(s.deliver(&mut first), 1);
        drop(first);
        // A new daemon over the same store (its counters registered afresh).
        s.metrics = Arc::new(Metrics::new().unwrap());
        let mut second = s.open();
        assert_eq!(s.deliver(&mut second), 0);
        assert_eq!(count(&second, Outcome::Unchanged), 1);
        assert_eq!(count(&second, Outcome::Imported), 0);
    }

    #[test]
    fn a_configmap_update_is_seen() {
        // The kubelet's layout: `web.json -> ..data/web.json`, `..data -> ..<timestamp>`, and
        // an update writes a new timestamped directory and renames a new `..data` link over
        // the old one.
        let mut s = setup();
        let root = s.dir.path().join("baselines");
        let version = |name: &str, programs: &[&str]| {
            std::fs::create_dir(root.join(name)).unwrap();
            std::fs::write(
                root.join(name).join("web.json"),
                baseline_file(REDIS, programs),
            )
            .unwrap();
            std::os::unix::fs::symlink(name, root.join("..data_tmp")).unwrap();
            std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        };
        version("..2026_12_03_01", &["/usr/bin/redis-server"]);
        std::os::unix::fs::symlink("..data/web.json", root.join("web.json")).unwrap();
        let mut baselines = s.open();
        assert_eq!(s.deliver(&mut baselines), 1, "hidden entries are not read");
        assert_eq!(s.deliver(&mut baselines), 0);
        version("..2026_12_03_02", &["/usr/bin/redis-server", "/bin/sh"]);
        assert_eq!(s.deliver(&mut baselines), 1);
        assert_eq!(s.stored().unwrap().items_total(), 2);
    }

    #[test]
    fn a_missing_directory_is_an_error_at_start() {
        let s = setup();
        let error = BaselinesDir::open(
            &s.dir.path().join("absent"),
            s.store.clone(),
            s.metrics.baseline_files.clone(),
        )
        .err()
        .unwrap();
        assert!(error.to_string().contains("absent"), "{error}");
    }
}

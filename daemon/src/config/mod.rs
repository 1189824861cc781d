//! Configuration: every setting of habitd is declared once, below, with its doc comment and
//! default value. The defaults are overlaid by an optional `--config` TOML file, which is
//! overlaid by the `habitd run` flags ([`Flags`], each an optional value of one key).
//!
//! From these declarations come the `habitd default-config` file (the defaults with the doc
//! comments, [`default_toml`]) and the help text of each flag; tests check that every flag
//! names a key and that the default file loads back to the defaults.

mod declare;
mod flags;
mod render;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use habit_profiles::held::HabitCriterion;

use declare::settings;
pub use flags::Flags;
pub use render::default_toml;

settings! {
    /// Every setting of habitd (the top level of the TOML file).
    pub struct Config {
        /// Where baselines and learning progress are stored (sled).
        pub data_dir: PathBuf = "/var/lib/habitd".into(),
        /// Baselines delivered with the deployment (e.g. a mounted ConfigMap): every `*.json`
        /// baseline file in this directory is imported at start and whenever it changes, and
        /// its workload detects at once; a bad file is refused (logged with the file and the
        /// field, counted in habitd_baseline_files_total) and changes nothing. "" = none.
        pub baselines_dir: PathBuf = PathBuf::new(),
        /// Address of the HTTP API and Prometheus /metrics.
        pub listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9477)),
        /// Falco-format rules files to load in addition to the built-in ones.
        pub rules: Vec<PathBuf> = Vec::new(),
        /// Load habitd's own default rules (shell in a container, sensitive reads, escapes,
        /// miners, …).
        pub builtin_rules: bool = true,
        /// Alert sinks: "stdout", "file:/path/alerts.jsonl", "http://host:port/path".
        pub alerts: Vec<String> = vec!["stdout".into()],
        /// Also send rule hits that the baseline explains (marked habitd.suppressed=true).
        pub alerts_include_suppressed: bool = false,
        /// Write every attributed event as a JSON line to stdout (to watch what habitd sees).
        pub print_events: bool = false,
        /// File holding the bearer token required by state-changing API calls ("" = none
        /// configured: state-changing calls are refused).
        pub api_token_file: PathBuf = PathBuf::new(),
        /// Allow `listen` on a non-loopback address without api_token_file: anyone who can
        /// reach it reads workloads, baselines and metrics (state-changing calls stay
        /// refused). Without this, such a configuration is refused at start.
        pub listen_without_token: bool = false,
        /// Log filter (tracing EnvFilter syntax, e.g. info, debug, habitd=debug); RUST_LOG
        /// takes precedence.
        pub log: String = "info".into(),
        /// When a workload's learning ends, how rarity is counted and detection calibrated.
        pub learning: Learning = Learning::default(),
        /// The eBPF probes.
        pub probes: ProbeSettings = ProbeSettings::default(),
        /// Container runtimes, asked which image a container runs.
        pub runtime: Runtime = Runtime::default(),
        /// Where the host is seen from (habitd in a container sees it through mounts).
        pub host: Host = Host::default(),
        /// Response: act on certain alerts (kill the process, pause or stop the container).
        /// Opt-in: off by default, and every action is an alert of rule "habitd response".
        pub response: Response = Response::default(),
    }
}

settings! {
    /// The `[response]` table (what it is for: the doc of [`Config::response`]).
    pub struct Response {
        /// Act on the alerts that the [response] policy selects (keys fused, min_priority,
        /// workloads, rules). false = alert only.
        pub enabled: bool = false,
        /// Decide and report as if acting (alerts of rule "habitd response" with outcome
        /// dry_run, and the metric), but do nothing to any process or container. Runs the
        /// policy also with `enabled = false`.
        pub dry_run: bool = false,
        /// What to do: "kill" (SIGKILL the alert's process, after checking by its start time
        /// that the pid still is that process), "pause" (pause its container; Docker only:
        /// refused with runtime.cri_sockets set) or "stop" (stop its container through its
        /// runtime: Docker, or CRI StopContainer).
        pub action: ResponseAction = ResponseAction::Kill,
        /// Act on fused alerts: a rule hit on behaviour the workload's baseline does not
        /// know (novel items; the alert is escalated one priority).
        pub fused: bool = true,
        /// Also act on any alert at or above this priority ("critical", "error", …), fused
        /// or not. "" = priority alone never selects an alert.
        pub min_priority: String = String::new(),
        /// Globs over workload keys ("docker.io/library/nginx:*") that may be acted on; no
        /// container glob = every container workload. Host workloads ("host",
        /// "host:sshd.service") are acted on only when a glob that starts with "host" names
        /// them ("*" never does).
        pub workloads: Vec<String> = Vec::new(),
        /// Globs over rule names ("Reverse shell*", "habitd anomaly") whose alerts may be
        /// acted on; empty = every rule.
        pub rules: Vec<String> = Vec::new(),
        /// At most this many actions per workload within `rate_window`; after that, alerts
        /// of the workload are only alerted (outcome rate_limited, counted) until the window
        /// has room again.
        pub max_actions: u32 = 3,
        /// The window of `max_actions`.
        #[serde(with = "declare::duration")]
        pub rate_window: Duration = Duration::from_secs(60),
        /// For "stop": how long the runtime lets the container's processes end after SIGTERM
        /// before it kills them (whole seconds).
        #[serde(with = "declare::duration")]
        pub stop_grace: Duration = Duration::from_secs(2),
    }
}

/// What the response does to the target of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseAction {
    /// SIGKILL the alert's process (`proc.pid`).
    Kill,
    /// Pause the alert's container (Docker).
    Pause,
    /// Stop the alert's container (Docker or CRI).
    Stop,
}

impl ResponseAction {
    /// Every action, for the metric's labels.
    pub const ALL: [ResponseAction; 3] = [
        ResponseAction::Kill,
        ResponseAction::Pause,
        ResponseAction::Stop,
    ];

    /// The name in the configuration, alerts and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            ResponseAction::Kill => "kill",
            ResponseAction::Pause => "pause",
            ResponseAction::Stop => "stop",
        }
    }
}

settings! {
    /// The `[host]` table.
    pub struct Host {
        /// The host's procfs: "/proc" on a host; in a container, where the host's /proc is
        /// mounted (the Helm chart mounts it at /host/proc). Process seeding, listener
        /// seeding, path naming and habitd's own pid are read from it.
        pub proc: PathBuf = "/proc".into(),
    }
}

settings! {
    /// The `[learning]` table (what it is for: the doc of [`Config::learning`]).
    pub struct Learning {
        /// A new workload learns for at least this long.
        #[serde(with = "declare::duration")]
        pub min: Duration = Duration::from_secs(10 * 60),
        /// After `min`, a workload that has produced nothing new for this long is stable.
        #[serde(with = "declare::duration")]
        pub stable: Duration = Duration::from_secs(30 * 60),
        /// Learning ends at the latest after this long; the baseline is then marked partial.
        #[serde(with = "declare::duration")]
        pub max: Duration = Duration::from_secs(24 * 3600),
        /// The learning interval: rarity is counted in intervals (an item seen in many
        /// intervals is habitual, one seen in one interval is rare), and each distinct file a
        /// workload opens is reported by the kernel once per interval.
        #[serde(with = "declare::duration")]
        pub interval: Duration = Duration::from_secs(60),
        /// Calibration target: the rate of novelty alerts from normal behaviour, per interval
        /// and dimension, that an anomaly score threshold corresponds to (see
        /// habitd.anomaly_score); for the syscall-sequence model, per thread.
        pub false_alarm_rate: f64 = 0.01,
        /// Send rate anomalies that are only a drop of activity (the load stopped, the
        /// clients went away), at Informational. Less activity is not an intrusion: off by
        /// default (such intervals are logged at debug).
        pub rate_drop_alerts: bool = false,
        /// How often learning progress is saved (what a crash can lose at most).
        #[serde(with = "declare::duration")]
        pub checkpoint: Duration = Duration::from_secs(2),
        /// Bytes kept free on the data directory's filesystem: with less, learning pauses
        /// (nothing is checkpointed or frozen; detection goes on, `habitd_store_writable` is
        /// 0) until there is room again. 0 writes until a write fails, which pauses learning
        /// until habitd restarts.
        pub store_reserve: u64 = 4 << 20,
        /// Never learn an attack: something a static rule flags during learning is held, and
        /// learned only once it proves habitual: seen in this many distinct learning
        /// intervals, or in `habit_min_containers` containers of the image.
        pub habit_min_intervals: u32 = HabitCriterion::default().min_intervals,
        /// A held item seen in this many containers of the image is learned (see
        /// `habit_min_intervals`). Rules tagged habitd.never_learn are never learned by
        /// themselves; `habitctl baseline held KEY` lists what is held, for an operator to
        /// decide.
        pub habit_min_containers: u32 = HabitCriterion::default().min_containers,
        /// Rollout inheritance: a new tag or digest of an image repository that already has a
        /// baseline starts from that baseline, learns only what changed for a shorter window
        /// (`min` and `stable` times `inherit_window`), and then detects.
        pub inherit: bool = true,
        /// The fraction of `min` and `stable` an inheriting workload learns for.
        pub inherit_window: f64 = 0.25,
    }
}

settings! {
    /// The `[probes]` table.
    pub struct ProbeSettings {
        /// Kernel ring buffer for events, bytes (a power of two, at least 4096).
        pub ring_buffer_bytes: u32 = 8 << 20,
        /// How often the in-kernel syscall counters are read (and the sequence maps updated).
        #[serde(with = "declare::duration")]
        pub counters_interval: Duration = Duration::from_secs(10),
        /// How often habitd checks that its programs are still attached and that the maps only
        /// it writes hold what it wrote (tamper evidence: an alert, `/healthz` and
        /// `habitd_tamper_detected_total`).
        #[serde(with = "declare::duration")]
        pub integrity_interval: Duration = Duration::from_secs(5),
        /// Learn and score the order of syscalls (per-thread 6-grams in the kernel): learning
        /// counts them, detection sends only 6-grams the workload never made. false = history
        /// only.
        pub sequences: bool = true,
    }
}

settings! {
    /// The `[runtime]` table.
    pub struct Runtime {
        /// Docker Engine API socket used to resolve container ids to images.
        pub docker_socket: PathBuf = "/var/run/docker.sock".into(),
        /// Kubernetes CRI sockets (containerd, CRI-O). Empty: the well-known ones that exist
        /// under `host_root` are used: /run/containerd/containerd.sock, /run/crio/crio.sock,
        /// /run/k3s/containerd/containerd.sock.
        pub cri_sockets: Vec<PathBuf> = Vec::new(),
        /// Where the host's root file system is (e.g. "/host" when habitd runs in a pod with
        /// the host's / mounted there), for finding the well-known CRI sockets.
        pub host_root: PathBuf = "/".into(),
        /// How long one request to a container runtime may take.
        #[serde(with = "declare::duration")]
        pub timeout: Duration = Duration::from_secs(2),
        /// A new container's first events (entrypoint, first opens) wait this long for its
        /// runtime to describe it, so that they are learned under its image; then they go on
        /// unlearned.
        #[serde(with = "declare::duration")]
        pub hold_events_for: Duration = Duration::from_secs(10),
        /// Most events waiting for their container's description, all containers together.
        pub hold_events_max: usize = 16384,
    }
}

impl Learning {
    /// When an item a rule flagged during learning is habitual enough to be learned.
    pub fn habit(&self) -> HabitCriterion {
        HabitCriterion {
            min_intervals: self.habit_min_intervals,
            min_containers: self.habit_min_containers,
        }
    }
}

impl Config {
    /// The defaults overlaid with `file` (if any), then with `overrides` (the flags, in the
    /// file's shape). Keys missing from the file keep their default; an unknown key or a bad
    /// value is an error naming the file, line, column and key.
    pub fn load(file: Option<&Path>, overrides: toml::Table) -> Result<Config> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => Config::default(),
        };
        if !overrides.is_empty() {
            let mut table = toml::Table::try_from(&config)?;
            overlay(&mut table, overrides);
            config = table.try_into().context("invalid flag value")?;
        }
        config.validate().with_context(|| match file {
            Some(p) => format!("invalid configuration (defaults < {} < flags)", p.display()),
            None => "invalid configuration (defaults < flags)".to_string(),
        })?;
        Ok(config)
    }

    /// A config file's text, checked as [`Config::load`] checks it (syntax, keys, types, then
    /// the values together), without flags. The fuzz target `config` calls this.
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let l = &self.learning;
        if l.min > l.max {
            bail!(
                "learning.min ({:?}) is longer than learning.max ({:?})",
                l.min,
                l.max
            );
        }
        if !self.probes.ring_buffer_bytes.is_power_of_two() || self.probes.ring_buffer_bytes < 4096
        {
            bail!(
                "probes.ring_buffer_bytes must be a power of two of at least 4096, not {}",
                self.probes.ring_buffer_bytes
            );
        }
        if l.interval.is_zero()
            || l.checkpoint.is_zero()
            || self.probes.counters_interval.is_zero()
            || self.probes.integrity_interval.is_zero()
        {
            bail!(
                "learning.interval, learning.checkpoint, probes.counters_interval and \
                 probes.integrity_interval must be positive"
            );
        }
        if !self.listen.ip().is_loopback()
            && self.api_token_file.as_os_str().is_empty()
            && !self.listen_without_token
        {
            bail!(
                "listen = {} is not a loopback address and no api_token_file is set: anyone who \
                 can reach it would read every baseline. Set api_token_file (--api-token-file), \
                 listen on 127.0.0.1, or set listen_without_token = true to accept this",
                self.listen
            );
        }
        if !(l.false_alarm_rate > 0.0 && l.false_alarm_rate < 1.0) {
            bail!(
                "learning.false_alarm_rate must be between 0 and 1, not {}",
                l.false_alarm_rate
            );
        }
        self.validate_response()
    }

    /// The `[response]` checks; the policy itself is compiled (and its globs checked) by
    /// [`crate::response::Policy::from_config`].
    fn validate_response(&self) -> Result<()> {
        let r = &self.response;
        crate::response::Policy::from_config(r)?;
        if r.max_actions == 0 {
            bail!(
                "response.max_actions must be at least 1 (to act on nothing, set response.enabled = false or response.dry_run = true)"
            );
        }
        if r.rate_window.is_zero() {
            bail!("response.rate_window must be positive");
        }
        if r.action == ResponseAction::Pause && !self.runtime.cri_sockets.is_empty() {
            bail!(
                "response.action = \"pause\" is not supported by CRI runtimes (runtime.cri_sockets = {:?}): CRI has no pause; use \"stop\" or \"kill\"",
                self.runtime.cri_sockets
            );
        }
        if r.action != ResponseAction::Kill
            && let Some((i, glob)) = r
                .workloads
                .iter()
                .enumerate()
                .find(|(_, g)| g.starts_with("host"))
        {
            bail!(
                "response.workloads[{i}] = {glob:?} names host workloads, which have no container to {}: use action = \"kill\", or leave the host out",
                r.action.name()
            );
        }
        if (r.enabled || r.dry_run) && !r.fused && r.min_priority.is_empty() {
            bail!(
                "the [response] policy selects no alert: set response.fused = true or a response.min_priority"
            );
        }
        Ok(())
    }
}

/// Deep-merges `top` into `base`: tables merge key by key, other values replace.
fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn load_file(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(Some(&p), toml::Table::new())
    }

    #[test]
    fn defaults_load_and_are_valid() {
        let c = Config::load(None, toml::Table::new()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.port(), 9477);
        assert_eq!(c.learning.min, Duration::from_secs(600));
        assert_eq!(c.alerts, vec!["stdout"]);
    }

    #[test]
    fn file_overrides_some_keys_and_keeps_the_rest() {
        let c = load_file("listen = \"127.0.0.1:1\"\n[learning]\nmin = \"5s\"\n").unwrap();
        assert_eq!(c.listen.port(), 1);
        assert_eq!(c.learning.min, Duration::from_secs(5));
        assert_eq!(c.learning.max, Duration::from_secs(24 * 3600));
        assert_eq!(c.probes, ProbeSettings::default());
    }

    #[test]
    fn cri_sockets_default_to_discovery_and_can_be_listed() {
        let defaults = Config::load(None, toml::Table::new()).unwrap();
        assert!(defaults.runtime.cri_sockets.is_empty());
        assert_eq!(defaults.runtime.hold_events_for, Duration::from_secs(10));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[runtime]\ncri_sockets = [\"/host/run/containerd/containerd.sock\"]\n",
        )
        .unwrap();
        let c = Config::load(Some(&p), toml::Table::new()).unwrap();
        assert_eq!(
            c.runtime.cri_sockets,
            [PathBuf::from("/host/run/containerd/containerd.sock")]
        );
    }

    #[test]
    fn overrides_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "log = \"debug\"\n[learning]\nmin = \"5s\"\nmax = \"1h\"\n",
        )
        .unwrap();
        let overrides = toml::from_str("[learning]\nmin = \"7s\"\n").unwrap();
        let c = Config::load(Some(&p), overrides).unwrap();
        assert_eq!(c.learning.min, Duration::from_secs(7));
        assert_eq!(c.learning.max, Duration::from_secs(3600));
        assert_eq!(c.log, "debug");
    }

    #[test]
    fn unknown_key_is_named_in_the_error_with_file_and_line() {
        let err = format!(
            "{:#}",
            load_file("log = \"info\"\n[learning]\nminn = \"5s\"\n").unwrap_err()
        );
        assert!(err.contains("minn"), "{err}");
        assert!(err.contains("c.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_duration_is_reported_with_its_key_and_line() {
        let err = format!(
            "{:#}",
            load_file("[learning]\nmin = \"ten minutes\"\n").unwrap_err()
        );
        assert!(err.contains("min"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("ten minutes"), "{err}");
    }

    #[test]
    fn wrong_type_is_reported_with_its_key() {
        let err = format!(
            "{:#}",
            load_file("[probes]\nsequences = \"yes\"\n").unwrap_err()
        );
        assert!(err.contains("sequences"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let err = format!("{:#}", load_file("[learning]\nmin = \"2d\"\n").unwrap_err());
        assert!(
            err.contains("learning.min") && err.contains("c.toml"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            load_file("[probes]\nring_buffer_bytes = 5000\n").unwrap_err()
        );
        assert!(err.contains("probes.ring_buffer_bytes"), "{err}");
    }

    #[test]
    fn the_response_is_off_by_default_and_its_mistakes_name_their_key() {
        let c = Config::default();
        assert!(!c.response.enabled && !c.response.dry_run);
        assert_eq!(c.response.action, ResponseAction::Kill);
        let c = load_file("[response]\nenabled = true\naction = \"stop\"\nworkloads = [\"docker.io/library/*\"]\n").unwrap();
        assert_eq!(c.response.action, ResponseAction::Stop);
        for (text, expected) in [
            ("[response]\naction = \"explode\"\n", "action"),
            ("[response]\nmax_actions = 0\n", "response.max_actions"),
            ("[response]\nrate_window = \"0s\"\n", "response.rate_window"),
            (
                "[response]\nworkloads = [\"a[\"]\n",
                "response.workloads[0]",
            ),
            ("[response]\nrules = [\"\"]\n", "response.rules[0]"),
            (
                "[response]\nmin_priority = \"loud\"\n",
                "response.min_priority",
            ),
            (
                "[response]\naction = \"stop\"\nworkloads = [\"docker.io/*\", \"host:cron.service\"]\n",
                "response.workloads[1] = \"host:cron.service\" names host workloads",
            ),
            (
                "[response]\nenabled = true\nfused = false\n",
                "set response.fused = true or a response.min_priority",
            ),
            (
                "[runtime]\ncri_sockets = [\"/run/containerd/containerd.sock\"]\n\
                 [response]\naction = \"pause\"\n",
                "response.action = \"pause\" is not supported by CRI",
            ),
        ] {
            let err = format!("{:#}", load_file(text).unwrap_err());
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.contains("c.toml"), "{text}: {err}");
        }
    }

    #[test]
    fn a_non_loopback_listener_needs_a_token_or_an_explicit_choice() {
        for addr in ["0.0.0.0:9477", "10.1.2.3:9477", "[::]:9477"] {
            let err = format!(
                "{:#}",
                load_file(&format!("listen = \"{addr}\"\n")).unwrap_err()
            );
            assert!(err.contains("api_token_file"), "{err}");
            assert!(err.contains("not a loopback address"), "{err}");
            assert!(err.contains("c.toml"), "{err}");
        }
        // Loopback needs nothing; elsewhere a token file or the explicit key.
        load_file("listen = \"127.0.0.1:9477\"\n").unwrap();
        load_file("listen = \"[::1]:9477\"\n").unwrap();
        load_file("listen = \"0.0.0.0:9477\"\napi_token_file = \"/etc/habitd/token\"\n").unwrap();
        load_file("listen = \"0.0.0.0:9477\"\nlisten_without_token = true\n").unwrap();
    }

    #[test]
    fn the_listener_defaults_to_loopback() {
        assert!(Config::default().listen.ip().is_loopback());
    }

    #[test]
    fn the_learning_section_gives_the_habit_criterion() {
        assert_eq!(Learning::default().habit(), HabitCriterion::default());
    }
}

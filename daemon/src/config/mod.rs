//! Configuration: an embedded default TOML, an optional `--config` file, then flags.
//!
//! Every flag has a key of the same name, so a deployment can be described entirely in a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The default configuration shipped in the binary (`habitd default-config` prints it).
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub rules: Vec<PathBuf>,
    pub builtin_rules: bool,
    pub alerts: Vec<String>,
    pub alerts_include_suppressed: bool,
    pub print_events: bool,
    pub api_token_file: PathBuf,
    pub log: String,
    pub learning: Learning,
    pub probes: ProbeSettings,
    pub runtime: Runtime,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Learning {
    #[serde(with = "humantime_serde_compat")]
    pub min: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub stable: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub max: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    pub false_alarm_rate: f64,
    #[serde(with = "humantime_serde_compat")]
    pub checkpoint: Duration,
    pub habit_min_intervals: u32,
    pub habit_min_containers: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSettings {
    pub ring_buffer_bytes: u32,
    #[serde(with = "humantime_serde_compat")]
    pub counters_interval: Duration,
    pub sequences: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    pub docker_socket: PathBuf,
    /// CRI sockets (containerd, CRI-O); empty = the well-known ones that exist.
    pub cri_sockets: Vec<PathBuf>,
    /// Where the host's root is mounted, for finding the well-known CRI sockets.
    pub host_root: PathBuf,
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub hold_events_for: Duration,
    pub hold_events_max: usize,
}

/// Durations written as "10m", "30s", "24h" (humantime).
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// The embedded defaults overlaid with `file` (if any). Keys missing from the file keep
    /// their default; unknown keys are an error naming the key, file, line and column.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let mut merged: toml::Table =
            toml::from_str(DEFAULT_CONFIG).context("the embedded default config is invalid")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let user: toml::Table = toml::from_str(&text)
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
            overlay(&mut merged, user);
        }
        let config: Config = merged.try_into().with_context(|| match file {
            Some(p) => format!("invalid configuration in {}", p.display()),
            None => "invalid default configuration".to_string(),
        })?;
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
        if l.interval.is_zero() || l.checkpoint.is_zero() || self.probes.counters_interval.is_zero()
        {
            bail!(
                "learning.interval, learning.checkpoint and probes.counters_interval must be positive"
            );
        }
        if !(l.false_alarm_rate > 0.0 && l.false_alarm_rate < 1.0) {
            bail!(
                "learning.false_alarm_rate must be between 0 and 1, not {}",
                l.false_alarm_rate
            );
        }
        Ok(())
    }
}

/// Deep-merges `user` into `base`: tables merge key by key, other values replace.
fn overlay(base: &mut toml::Table, user: toml::Table) {
    for (key, value) in user {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(u)) => overlay(b, u),
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

    #[test]
    fn embedded_default_loads() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.listen.port(), 9477);
        assert_eq!(c.learning.min, Duration::from_secs(600));
        assert_eq!(c.alerts, vec!["stdout"]);
    }

    #[test]
    fn file_overrides_some_keys_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "listen = \"127.0.0.1:1\"\n[learning]\nmin = \"5s\"\n").unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.listen.port(), 1);
        assert_eq!(c.learning.min, Duration::from_secs(5));
        assert_eq!(c.learning.max, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn cri_sockets_default_to_discovery_and_can_be_listed() {
        assert!(Config::load(None).unwrap().runtime.cri_sockets.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[runtime]\ncri_sockets = [\"/host/run/containerd/containerd.sock\"]\n",
        )
        .unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(
            c.runtime.cri_sockets,
            [PathBuf::from("/host/run/containerd/containerd.sock")]
        );
        assert_eq!(c.runtime.hold_events_for, Duration::from_secs(10));
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[learning]\nminn = \"5s\"\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&p)).unwrap_err());
        assert!(err.contains("minn"), "{err}");
        assert!(err.contains("c.toml"), "{err}");
    }

    #[test]
    fn bad_duration_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[learning]\nmin = \"ten minutes\"\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&p)).unwrap_err());
        assert!(err.contains("min"), "{err}");
    }
}

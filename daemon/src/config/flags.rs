//! The `habitd run` flags. Each flag is an optional value of one configuration key: its clap
//! id is the key's dotted path, its help text is the key's doc comment ([`Flags::document`]),
//! and the flags given are serialised in the config file's shape and overlaid on it, so the
//! precedence is defaults < `--config` file < flags with no code per flag.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Command};
use serde::Serialize;

use super::declare::duration;
use super::{Config, render};

/// `habitd run`'s flags; a flag not given leaves its key to the file or the default.
#[derive(Debug, Default, Args, Serialize)]
pub struct Flags {
    /// TOML configuration file (`habitd default-config` prints the defaults in this form);
    /// every flag below has a key in it, named in its help.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    baselines_dir: Option<PathBuf>,
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Repeatable; replaces the file's list.
    #[arg(long, value_name = "FILE")]
    rules: Option<Vec<PathBuf>>,
    /// Repeatable; replaces the file's list.
    #[arg(long, value_name = "SINK")]
    alerts: Option<Vec<String>>,
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    alerts_include_suppressed: Option<bool>,
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    print_events: Option<bool>,
    #[arg(long, value_name = "FILE")]
    api_token_file: Option<PathBuf>,
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    listen_without_token: Option<bool>,
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    #[command(flatten)]
    learning: LearningFlags,
    #[command(flatten)]
    runtime: RuntimeFlags,
    #[command(flatten)]
    response: ResponseFlags,
}

/// The flags of the `[response]` keys (the policy itself is configured in the file).
#[derive(Debug, Default, Args, Serialize)]
struct ResponseFlags {
    #[arg(long = "response", id = "response.enabled", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    enabled: Option<bool>,
    #[arg(long = "response-dry-run", id = "response.dry_run", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    dry_run: Option<bool>,
}

/// The flags of the `[runtime]` keys.
#[derive(Debug, Default, Args, Serialize)]
struct RuntimeFlags {
    /// Repeatable; replaces the file's list.
    #[arg(long = "cri-socket", id = "runtime.cri_sockets", value_name = "PATH")]
    cri_sockets: Option<Vec<PathBuf>>,
}

/// The flags of the `[learning]` keys.
#[derive(Debug, Default, Args, Serialize)]
struct LearningFlags {
    #[arg(long = "learn-min", id = "learning.min", value_name = "DURATION", value_parser = duration::flag)]
    min: Option<String>,
    #[arg(long = "learn-stable", id = "learning.stable", value_name = "DURATION", value_parser = duration::flag)]
    stable: Option<String>,
    #[arg(long = "learn-max", id = "learning.max", value_name = "DURATION", value_parser = duration::flag)]
    max: Option<String>,
}

impl Flags {
    /// The configuration: the defaults, then the `--config` file, then these flags.
    pub fn into_config(self) -> Result<Config> {
        let overrides = self.overrides()?;
        Config::load(self.config.as_deref(), overrides)
    }

    /// The flags given, as a TOML table in the config file's shape.
    fn overrides(&self) -> Result<toml::Table> {
        let mut table =
            toml::Table::try_from(self).context("the flags cannot be written as TOML")?;
        table.retain(|_, v| v.as_table().is_none_or(|t| !t.is_empty()));
        Ok(table)
    }

    /// Gives every flag of `run` (built from [`Flags`]) whose id is a key the key's doc comment,
    /// its key and its default as help text.
    pub fn document(run: Command) -> Command {
        let ids: Vec<String> = run
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        ids.into_iter().fold(run, |run, id| match render::key(&id) {
            Some(key) => {
                // The key's doc, then what the flag's own doc adds ("Repeatable"), then the key.
                let mut help = key.paragraph();
                let own = run.get_arguments().find(|a| a.get_id() == id.as_str());
                if let Some(own) = own.and_then(|a| a.get_help()) {
                    help.push_str(&format!(" {own}."));
                }
                help.push_str(&format!(" [key: {id}"));
                if let Some(value) = render::default_value(&id) {
                    help.push_str(&format!("; default: {value}"));
                }
                help.push(']');
                run.mut_arg(&id, |a| a.help(help))
            }
            None => run,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::FromArgMatches;
    use std::time::Duration;

    fn command() -> Command {
        Flags::document(Flags::augment_args(Command::new("run")))
    }

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        let m =
            command().try_get_matches_from(std::iter::once("run").chain(args.iter().copied()))?;
        Flags::from_arg_matches(&m)
    }

    /// Every leaf of `table` as (dotted path, value).
    fn leaves(table: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => leaves(t, &path, out),
                v => out.push((path, v.clone())),
            }
        }
    }

    #[test]
    fn every_flag_sets_the_config_key_its_id_names_and_its_help_is_that_keys_doc() {
        let cmd = command();
        let mut checked = 0;
        for arg in cmd.get_arguments().filter(|a| a.get_id() != "config") {
            let id = arg.get_id().as_str();
            let long = format!("--{}", arg.get_long().unwrap());
            // The first sample value the flag accepts (a switch takes none).
            let flags = std::iter::once(vec![long.clone()])
                .chain(["1s", "127.0.0.1:1"].map(|v| vec![long.clone(), v.to_string()]))
                .find_map(|args| parse(&args.iter().map(String::as_str).collect::<Vec<_>>()).ok())
                .unwrap_or_else(|| panic!("no sample value for {long}"));
            let mut set = Vec::new();
            leaves(&flags.overrides().unwrap(), "", &mut set);
            assert_eq!(set.len(), 1, "{long} sets {set:?}");
            let (path, value) = &set[0];
            assert_eq!(path, id, "{long} sets {path}, not the key its id names");
            // The key exists, and the value reaches the configuration.
            let key = render::key(path).unwrap_or_else(|| panic!("{long}: no key {path}"));
            assert!(
                render::default_value(path).is_some(),
                "{path} has no default"
            );
            let mut table = toml::Table::try_from(Config::default()).unwrap();
            super::super::overlay(&mut table, flags.overrides().unwrap());
            let config: Config = table.try_into().unwrap();
            let mut got = toml::Table::try_from(config).unwrap();
            for part in path.split('.') {
                got = match got.remove(part).unwrap() {
                    toml::Value::Table(t) => t,
                    v => {
                        assert_eq!(&v, value, "{long}");
                        break;
                    }
                };
            }
            // The help is the key's doc (also what default-config writes above the key).
            let help = arg.get_help().unwrap().to_string();
            assert!(help.starts_with(&key.paragraph()), "{long}: {help}");
            assert!(
                help.contains(&format!("[key: {path}; default: ")),
                "{long}: {help}"
            );
            checked += 1;
        }
        assert_eq!(checked, 16);
    }

    #[test]
    fn the_design_interface_flags_exist() {
        let f = parse(&[
            "--data-dir",
            "/d",
            "--listen",
            "127.0.0.1:1",
            "--rules",
            "a.yaml",
            "--rules",
            "b.yaml",
            "--alerts",
            "stdout",
            "--alerts",
            "file:/x",
            "--alerts-include-suppressed",
            "--api-token-file",
            "/t",
            "--learn-min",
            "1m",
            "--learn-stable",
            "2m",
            "--learn-max",
            "3m",
            "--log",
            "debug",
            "--print-events",
            "--cri-socket",
            "/run/a.sock",
            "--cri-socket",
            "/host/run/b.sock",
        ])
        .unwrap();
        let c = f.into_config().unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(c.listen.port(), 1);
        assert_eq!(c.rules, [PathBuf::from("a.yaml"), PathBuf::from("b.yaml")]);
        assert_eq!(c.alerts, ["stdout", "file:/x"]);
        assert!(c.alerts_include_suppressed && c.print_events);
        assert_eq!(c.api_token_file, PathBuf::from("/t"));
        assert_eq!(
            (c.learning.min, c.learning.stable, c.learning.max),
            (
                Duration::from_secs(60),
                Duration::from_secs(120),
                Duration::from_secs(180)
            )
        );
        assert_eq!(c.log, "debug");
        assert_eq!(
            c.runtime.cri_sockets,
            [
                PathBuf::from("/run/a.sock"),
                PathBuf::from("/host/run/b.sock")
            ]
        );
    }

    #[test]
    fn no_flags_leave_the_file_and_the_defaults() {
        let f = parse(&[]).unwrap();
        assert!(f.overrides().unwrap().is_empty());
        assert_eq!(f.into_config().unwrap(), Config::default());
    }

    #[test]
    fn flags_override_the_config_file_which_overrides_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "print_events = true\nrules = [\"f.yaml\"]\n[learning]\nmin = \"5s\"\nstable = \"6s\"\n",
        )
        .unwrap();
        let p = p.to_str().unwrap();
        let c = parse(&["--config", p, "--learn-min", "7s", "--print-events=false"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(c.learning.min, Duration::from_secs(7));
        assert_eq!(c.learning.stable, Duration::from_secs(6));
        assert_eq!(c.learning.max, Duration::from_secs(24 * 3600));
        assert!(!c.print_events);
        assert_eq!(c.rules, [PathBuf::from("f.yaml")]);
    }

    #[test]
    fn a_bad_flag_value_is_refused_by_clap() {
        let err = parse(&["--learn-min", "soon"]).unwrap_err().to_string();
        assert!(err.contains("--learn-min"), "{err}");
        assert!(parse(&["--listen", "nowhere"]).is_err());
    }
}

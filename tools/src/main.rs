//! `habitctl`: the command-line client of habitd and its offline baseline tools.
//!
//! This file is flags and dispatch only: the API calls live in [`client`], table rendering in
//! [`table`], the work on baseline files in [`offline`], and rules checks in [`rules`].
//!
//! Exit status: 0 on success, 1 when `baseline diff` finds differences or `rules check` finds
//! rules that do not load, 2 on any error (the same as for a usage error), so that a script can
//! tell "different" from "failed".

mod client;
mod eval;
mod offline;
mod rules;
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use habit_profiles::baseline::Baseline;

use crate::client::{Client, DEFAULT_API, Mode, Token};

/// What a successful command tells the shell.
enum Outcome {
    /// Done (exit 0).
    Done,
    /// `baseline diff` found differences (with --fail-on-new: new items in a listed
    /// dimension), or `rules check` skipped rules (exit 1).
    Different,
}

#[derive(Debug, Parser)]
#[command(
    name = "habitctl",
    version,
    about = "Inspect and steer habitd, and work on its baseline files",
    long_about = "Inspect and steer habitd, and work on its baseline files.\n\n\
        habitd learns how each workload (a container image, or a host service) normally \
        behaves, then flags what breaks that habit. habitctl lists the workloads and their \
        learning progress, forces a workload to learn or detect, and exports, imports, merges \
        and diffs baselines. `baseline merge` and `baseline diff` work on files alone and need \
        no daemon.",
    after_help = "Workload keys are image references normalised like Docker does \
        (nginx:1.25 means docker.io/library/nginx:1.25), `host`, or `host:<systemd unit>`.\n\n\
        Exit status: 0 on success; 1 when `baseline diff` finds differences or `rules check` \
        finds rules that do not load; 2 on error.",
    disable_help_subcommand = true
)]
struct Cli {
    /// The habitd HTTP API: the address `habitd run --listen` serves (plain HTTP).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "HABITD_API",
        default_value = DEFAULT_API
    )]
    api: String,

    /// A file holding the API bearer token (the one habitd reads from --api-token-file).
    /// Commands that change state need it. The token is the file's content, trimmed.
    #[arg(long, global = true, value_name = "FILE", env = "HABITD_TOKEN_FILE")]
    token_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the workloads habitd knows, with their learning state.
    ///
    /// Columns: the workload key; its state (learning, stable, unstable; "partial" when its
    /// baseline was frozen before learning converged, "forced" when an operator set the mode);
    /// learning progress towards stable; learned items; time since the last new item (learning
    /// converges when nothing new appears for a while); alerts raised.
    Workloads {
        /// Print the API's JSON array, pretty, instead of the table.
        #[arg(long)]
        json: bool,
    },

    /// Force a workload to learn, to detect, or to learn again from scratch.
    ///
    /// The forced mode holds until changed again (`habitctl workloads` shows it as "forced").
    /// Changes state, so it needs the API token (--token-file).
    Mode {
        /// The workload key (see `habitctl workloads`).
        key: String,
        /// The mode to force.
        #[arg(value_parser = client::mode_parser())]
        mode: Mode,
    },

    /// Export, import, merge and diff baseline files.
    #[command(subcommand)]
    Baseline(BaselineCommand),

    /// Turn a baseline into an enforcement artifact: a seccomp profile or a NetworkPolicy.
    ///
    /// SOURCE is a baseline file, or a workload key whose baseline is fetched from habitd.
    #[command(subcommand)]
    Export(ExportCommand),

    /// Check Falco-format rules files offline.
    #[command(subcommand)]
    Rules(RulesCommand),

    /// Evaluate the syscall-sequence model offline on labelled traces (ADFA-LD layout).
    ///
    /// Trains on --train, scores --normal and --attack, and prints one line per model:
    /// `model=NAME auc=… dr@1%=… dr@5%=…` (detection rates at the 1 % and 5 % false-alarm
    /// thresholds of the --normal scores). Each directory is searched recursively for .txt
    /// files holding one process's syscall numbers.
    Eval(eval::EvalArgs),
}

#[derive(Debug, Subcommand)]
enum ExportCommand {
    /// An OCI/Docker seccomp profile (JSON): errno (EPERM) by default, the learned syscalls
    /// allowed by name, plus a commented safety margin of what the container runtime itself
    /// needs (see `habit_profiles::export`). Use it with
    /// `docker run --security-opt seccomp=PROFILE` or a pod's `seccompProfile: Localhost`.
    Seccomp {
        /// A baseline file, or a workload key (fetched from habitd).
        source: String,
        /// Write it to this file instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Leave out the runtime safety margin (allow only learned syscalls).
        #[arg(long)]
        no_margin: bool,
    },
    /// A Kubernetes NetworkPolicy (networking.k8s.io/v1, JSON, which kubectl also reads as
    /// YAML): ingress from the learned peers to the learned listening ports, egress to the
    /// learned destinations, pods selected by their learned labels.
    Netpol {
        /// A baseline file, or a workload key (fetched from habitd).
        source: String,
        /// Write it to this file instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// The pod selector (repeatable KEY=VALUE); default: the learned pod labels.
        #[arg(long, value_name = "KEY=VALUE")]
        selector: Vec<String>,
        /// The policy's namespace; default: the learned one.
        #[arg(long)]
        namespace: Option<String>,
        /// The policy's name; default: habitd-<image name>.
        #[arg(long)]
        name: Option<String>,
        /// Open the learned listening ports to any peer, not only to the learned ones.
        #[arg(long)]
        any_peer: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Load rules files as habitd does and report what does not load.
    ///
    /// Like `habitd run`, loads habitd's built-in rules first (its `builtin_rules = true`
    /// default), then the files in order, so a file that appends to or overrides a built-in
    /// list, macro or rule checks as habitd runs it; the summary counts the built-in rules too.
    /// Prints each problem as `file:line: severity: kind 'name': reason`, then
    /// `loaded N of M rules`. Exits 0 when everything loaded, 1 when a rule was skipped or an
    /// item has an error, 2 when a file cannot be read.
    Check {
        /// The rules files, loaded together in this order after the built-in rules (later
        /// files may append to or override earlier ones).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Do not load the built-in rules first: check the files as `habitd run` with
        /// `builtin_rules = false` loads them.
        #[arg(long)]
        no_builtin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BaselineCommand {
    /// Download the baseline of a workload (JSON, sorted and stable: it diffs well in review).
    Export {
        /// The workload key.
        key: String,
        /// Write it to this file instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },

    /// Upload a baseline file as the baseline of a workload.
    ///
    /// The file is checked here first (format, syntax, content, workload) so that a mistake is
    /// reported with its line and column before anything is sent. Changes state, so it needs
    /// the API token (--token-file).
    Import {
        /// The workload key; it must be the workload the file names.
        key: String,
        /// The baseline file.
        file: PathBuf,
    },

    /// Merge baseline files of one workload (replicas, nodes, periods) into one that knows
    /// everything any of them knows.
    ///
    /// Works offline. Items: counts summed, earliest first-seen, latest last-seen, provenance
    /// kept, directories and networks collapsed again. Models: the sequence model rebuilt
    /// from the summed 6-gram counts and calibrated again on the pooled calibration traces;
    /// the rate model refitted on the pooled learning intervals; the novelty calibration
    /// recomputed. The result depends only on the set of files, not their order. All files
    /// must have been learned with the same interval length and collapse thresholds.
    Merge {
        /// The baseline files (at least two).
        #[arg(required = true, num_args = 2..)]
        inputs: Vec<PathBuf>,
        /// Write the merged baseline to this file instead of standard output.
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
    },

    /// List what a static rule flagged while a workload learned, held out of its baseline
    /// until it proves habitual; or approve (learn) or discard one item (needs the token).
    Held {
        /// The workload key.
        key: String,
        /// Learn this held item: DIMENSION ITEM (as listed).
        #[arg(long, num_args = 2, value_names = ["DIMENSION", "ITEM"], conflicts_with = "discard")]
        approve: Option<Vec<String>>,
        /// Forget this held item: DIMENSION ITEM (as listed).
        #[arg(long, num_args = 2, value_names = ["DIMENSION", "ITEM"])]
        discard: Option<Vec<String>>,
    },

    /// Show which items and syscalls one baseline knows that the other does not.
    ///
    /// Works offline. Counts are not compared: a diff answers "what behaviour changed".
    /// Exits 0 when there is no difference, 1 when there is one. An added item that a new
    /// image version introduced over its predecessor (rollout inheritance) names it: "added
    /// by REPOSITORY:TAG (sha256:…)".
    ///
    /// As a CI gate: with --fail-on-new, exits 1 only when NEW adds items in one of the listed
    /// dimensions (e.g. `--fail-on-new exec,outbound`: "this release starts a new process or
    /// connects somewhere new"), and 0 otherwise, whatever else changed. Exits 2 on error.
    Diff {
        /// The older baseline file.
        old: PathBuf,
        /// The newer baseline file.
        new: PathBuf,
        /// Print the diff as JSON (`{old, new, workload, dimensions: {DIM: {added, removed,
        /// introduced_by: {ITEM: {version, digest, image_id}}}}, syscall_rates_added,
        /// syscall_rates_removed, new_in}`).
        #[arg(long)]
        json: bool,
        /// Comma-separated dimensions (exec, process_edge, args, file, listen, inbound,
        /// outbound, syscall, privileged, file_change) or `all`: exit 1 only when NEW adds
        /// items in one.
        #[arg(long, value_name = "DIMENSIONS", value_delimiter = ',')]
        fail_on_new: Option<Vec<String>>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Different) => ExitCode::from(1),
        Err(error) => {
            eprintln!("habitctl: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<Outcome> {
    let client = || -> Result<Client> {
        let token = cli.token_file.as_deref().map(Token::read).transpose()?;
        Ok(Client::new(&cli.api, token)?)
    };
    match cli.command {
        Command::Workloads { json } => workloads(&client()?, json)?,
        Command::Mode { key, mode } => set_mode(&client()?, &key, mode)?,
        Command::Baseline(BaselineCommand::Export { key, output }) => {
            export(&client()?, &key, output.as_deref())?;
        }
        Command::Baseline(BaselineCommand::Import { key, file }) => {
            import(&client, &key, &file)?;
        }
        Command::Baseline(BaselineCommand::Merge { inputs, output }) => {
            merge(&inputs, output.as_deref())?;
        }
        Command::Baseline(BaselineCommand::Diff {
            old,
            new,
            json,
            fail_on_new,
        }) => return diff(&old, &new, json, fail_on_new.as_deref()),
        Command::Baseline(BaselineCommand::Held {
            key,
            approve,
            discard,
        }) => held(&client()?, &key, approve, discard)?,
        Command::Eval(args) => say(&eval::run(&args)?)?,
        Command::Export(command) => export_artifact(&client, command)?,
        Command::Rules(RulesCommand::Check { files, no_builtin }) => {
            return Ok(if rules::check(&files, !no_builtin)? {
                Outcome::Done
            } else {
                Outcome::Different
            });
        }
    }
    Ok(Outcome::Done)
}

fn workloads(client: &Client, json: bool) -> Result<()> {
    let context = || "cannot list workloads";
    if json {
        let value = client.workloads_json().with_context(context)?;
        let text = serde_json::to_string_pretty(&value).context("cannot format the JSON")?;
        say(&text)?;
    } else {
        let list = client.workloads().with_context(context)?;
        say(&table::workloads_table(&list))?;
    }
    Ok(())
}

fn set_mode(client: &Client, key: &str, mode: Mode) -> Result<()> {
    let key = client::workload_key(key);
    let shown = table::printable(key.as_str());
    let answer = client
        .set_mode(&key, mode)
        .with_context(|| format!("cannot set the mode of {shown} to {}", mode.as_str()))?;
    let state = serde_json::from_value::<client::WorkloadView>(answer)
        .ok()
        .map(|w| {
            let mut state = w.state.name().to_owned();
            if w.partial {
                state.push_str(", baseline partial");
            }
            state
        });
    match state {
        Some(state) => say(&format!("{shown}: mode {} (state: {state})", mode.as_str())),
        None => say(&format!("{shown}: mode {}", mode.as_str())),
    }
}

fn held(
    client: &Client,
    key: &str,
    approve: Option<Vec<String>>,
    discard: Option<Vec<String>>,
) -> Result<()> {
    let key = client::workload_key(key);
    let shown = table::printable(key.as_str());
    let decision = match (approve, discard) {
        (Some(v), _) => Some((true, v)),
        (None, Some(v)) => Some((false, v)),
        (None, None) => None,
    };
    if let Some((approve, args)) = decision {
        let [dimension, item] = args.as_slice() else {
            anyhow::bail!("expected DIMENSION ITEM");
        };
        client
            .decide_held(&key, approve, dimension.parse()?, item)
            .with_context(|| format!("cannot decide on a held item of {shown}"))?;
        let verb = if approve {
            "approved (learned)"
        } else {
            "discarded"
        };
        return say(&format!(
            "{shown}: {dimension} {} {verb}",
            table::printable(item)
        ));
    }
    let items = client
        .held(&key)
        .with_context(|| format!("cannot list the held items of {shown}"))?;
    let list = items.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return say(&format!("{shown}: nothing held"));
    }
    let mut out = format!(
        "{:<10} {:<50} {:>6} {:>9}  RULES\n",
        "DIMENSION", "ITEM", "COUNT", "INTERVALS"
    );
    for i in &list {
        let text = |k: &str| i[k].as_str().map(table::printable).unwrap_or_default();
        let rules: Vec<String> = i["rules"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|x| x.as_str().map(table::printable))
                    .collect()
            })
            .unwrap_or_default();
        let never = if i["never_learn"] == true {
            " (never learned by itself)"
        } else {
            ""
        };
        out.push_str(&format!(
            "{:<10} {:<50} {:>6} {:>9}  {}{never}\n",
            text("dimension"),
            text("item"),
            i["count"],
            i["intervals"],
            rules.join(", ")
        ));
    }
    say(out.trim_end())
}

fn export(client: &Client, key: &str, output: Option<&Path>) -> Result<()> {
    let key = client::workload_key(key);
    let shown = table::printable(key.as_str());
    let bytes = client.export_baseline(&key).map_err(|error| {
        let hint = if error.status() == Some(404) {
            " (no baseline yet: is it still learning? see `habitctl workloads`)"
        } else {
            ""
        };
        anyhow::Error::new(error).context(format!("cannot export the baseline of {shown}{hint}"))
    })?;
    // Export what habitd sent, byte for byte, but say so if this habitctl could not read it
    // back (a daemon of another version).
    if let Err(error) = habit_profiles::baseline::Baseline::from_json_slice(&bytes) {
        eprintln!("habitctl: warning: the exported baseline does not validate here: {error}");
    }
    offline::write_output(output, &bytes)?;
    if let Some(path) = output {
        eprintln!("exported the baseline of {shown} to {}", path.display());
    }
    Ok(())
}

fn import(client: &dyn Fn() -> Result<Client>, key: &str, file: &Path) -> Result<()> {
    let key = client::workload_key(key);
    let shown = table::printable(key.as_str());
    // Check the file before connecting: a bad file is an error with or without a daemon.
    let baseline = offline::read_for_import(file, &key)?;
    let summary = client()?
        .import_baseline(&key, &baseline.bytes)
        .with_context(|| {
            format!(
                "cannot import {} as the baseline of {shown}",
                file.display()
            )
        })?;
    // habitd answers `{"imported": key, "items": n, "partial": bool}`; anything else is shown
    // as it came.
    let stored = summary.get("items").and_then(serde_json::Value::as_u64);
    match stored {
        Some(items) => {
            let partial = summary.get("partial").and_then(serde_json::Value::as_bool);
            let partial = if partial == Some(true) {
                " (partial)"
            } else {
                ""
            };
            say(&format!(
                "imported {} as the baseline of {shown}: habitd stored {items} items{partial}",
                file.display(),
            ))?;
        }
        None => {
            say(&format!(
                "imported {} as the baseline of {shown} ({} items)",
                file.display(),
                baseline.baseline.items_total()
            ))?;
            if !summary.is_null() {
                let text =
                    serde_json::to_string_pretty(&summary).context("cannot format the JSON")?;
                say(&text)?;
            }
        }
    }
    Ok(())
}

/// A baseline from a file, or from habitd when `source` is not a file.
fn load_source(client: &dyn Fn() -> Result<Client>, source: &str) -> Result<Baseline> {
    let path = Path::new(source);
    if path.is_file() {
        return Ok(offline::read_baseline(path)?.baseline);
    }
    let key = client::workload_key(source);
    let shown = table::printable(key.as_str());
    let bytes = client()?.export_baseline(&key).with_context(|| {
        format!("{source} is not a file, and habitd has no baseline of {shown}")
    })?;
    Baseline::from_json_slice(&bytes)
        .with_context(|| format!("the baseline of {shown} from habitd does not validate"))
}

fn export_artifact(client: &dyn Fn() -> Result<Client>, command: ExportCommand) -> Result<()> {
    use habit_profiles::export;
    let (value, output, what) = match command {
        ExportCommand::Seccomp {
            source,
            output,
            no_margin,
        } => {
            let baseline = load_source(client, &source)?;
            let options = export::SeccompOptions {
                runtime_margin: !no_margin,
            };
            (
                export::seccomp_profile(&baseline, options)?,
                output,
                "seccomp profile",
            )
        }
        ExportCommand::Netpol {
            source,
            output,
            selector,
            namespace,
            name,
            any_peer,
        } => {
            let baseline = load_source(client, &source)?;
            let mut labels = std::collections::BTreeMap::new();
            for pair in &selector {
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("--selector {pair}: expected KEY=VALUE"))?;
                labels.insert(k.to_owned(), v.to_owned());
            }
            let options = export::NetpolOptions {
                name,
                namespace,
                selector: labels,
                any_peer,
            };
            (
                export::network_policy(&baseline, &options)?,
                output,
                "NetworkPolicy",
            )
        }
    };
    let text = serde_json::to_string_pretty(&value).context("cannot encode the artifact")?;
    offline::write_output(output.as_deref(), text.as_bytes())?;
    if let Some(path) = output {
        eprintln!("wrote the {what} to {}", path.display());
    }
    Ok(())
}

fn merge(inputs: &[PathBuf], output: Option<&Path>) -> Result<()> {
    let (merged, report) = offline::merge_files(inputs)?;
    let text = merged
        .to_json_pretty()
        .context("cannot encode the merged baseline")?;
    offline::write_output(output, text.as_bytes())?;
    eprintln!(
        "merged {} files{}: {} items",
        inputs.len(),
        output.map_or_else(String::new, |p| format!(" into {}", p.display())),
        merged.items_total(),
    );
    for note in report.notes {
        eprintln!("note: {note}");
    }
    Ok(())
}

fn diff(old: &Path, new: &Path, json: bool, fail_on_new: Option<&[String]>) -> Result<Outcome> {
    let gate = fail_on_new.map(offline::parse_dimensions).transpose()?;
    let result = offline::diff_files(old, new)?;
    if json {
        let value = offline::diff_json(old, new, &result, gate.as_deref());
        say(&serde_json::to_string_pretty(&value).context("cannot format the JSON")?)?;
    } else {
        say(&result.report)?;
    }
    let different = match &gate {
        Some(dimensions) => !offline::new_in(&result.diff, dimensions).is_empty(),
        None => !result.diff.is_empty(),
    };
    Ok(if different {
        Outcome::Different
    } else {
        Outcome::Done
    })
}

/// Prints to standard output (a newline is added if `text` lacks one); a closed pipe ends the
/// output quietly instead of panicking as `println!` would.
fn say(text: &str) -> Result<()> {
    offline::write_output(None, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }
}

//! The `habitd` binary: flag parsing only; the daemon and its settings live in the library.

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use habitd::Flags;

/// habitd learns how every workload on this node normally behaves and flags what breaks the
/// habit. It watches processes, files, network use and syscalls with eBPF, attributes every
/// event to a workload (container image or host service) and learns a baseline per workload.
#[derive(Parser)]
#[command(name = "habitd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (needs root). Flags override the config file, which overrides the
    /// defaults (`habitd default-config`).
    Run(Box<Flags>),
    /// Print the default configuration, every key documented (a starting point for --config).
    DefaultConfig,
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> Result<()> {
    // The run flags' help texts are the doc comments of the keys they set.
    let matches = Cli::command()
        .mut_subcommand("run", Flags::document)
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::DefaultConfig => {
            print!("{}", habitd::default_toml()?);
            Ok(())
        }
        Command::Run(flags) => {
            let config = flags.into_config()?;
            init_logging(&config.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(habitd::run(config))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_with_the_config_docs_as_flag_help_is_valid() {
        let cli = Cli::command().mut_subcommand("run", Flags::document);
        cli.clone().debug_assert();
        let run = cli
            .find_subcommand("run")
            .map(|r| r.clone().render_help().to_string());
        let help = run.unwrap_or_default();
        assert!(help.contains("--learn-min <DURATION>"), "{help}");
        assert!(
            help.contains("[key: learning.min; default: \"10m\"]"),
            "{help}"
        );
    }
}

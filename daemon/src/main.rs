//! The `habitd` binary: flag parsing only; the daemon lives in the library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use habitd::{Config, DEFAULT_CONFIG};

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
    /// embedded defaults (`habitd default-config`).
    Run(Box<RunArgs>),
    /// Print the embedded default configuration (a starting point for --config).
    DefaultConfig,
}

#[derive(Args)]
struct RunArgs {
    /// TOML configuration file; every flag below has a key of the same name.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory of the baseline store (sled).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the HTTP API and /metrics.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// A Falco-format rules file (repeatable).
    #[arg(long, value_name = "FILE")]
    rules: Vec<PathBuf>,
    /// Alert sink: stdout, file:PATH or http://… (repeatable).
    #[arg(long, value_name = "SINK")]
    alerts: Vec<String>,
    /// Also send rule hits that the baseline explains, marked suppressed.
    #[arg(long)]
    alerts_include_suppressed: bool,
    /// Write every attributed event as a JSON line to stdout.
    #[arg(long)]
    print_events: bool,
    /// File with the bearer token that state-changing API calls must present.
    #[arg(long, value_name = "FILE")]
    api_token_file: Option<PathBuf>,
    /// Minimum learning time of a new workload (e.g. 10m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    learn_min: Option<Duration>,
    /// A workload with no new behaviour for this long is stable (e.g. 30m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    learn_stable: Option<Duration>,
    /// Learning ends at the latest after this long; the baseline is then marked partial.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    learn_max: Option<Duration>,
    /// A Kubernetes CRI socket (containerd, CRI-O) to describe containers with (repeatable);
    /// without it, the well-known CRI sockets that exist are used.
    #[arg(long = "cri-socket", value_name = "PATH")]
    cri_sockets: Vec<PathBuf>,
    /// Log filter (e.g. info, debug, habitd=debug); RUST_LOG takes precedence.
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
}

impl RunArgs {
    /// The configuration: defaults, then the file, then these flags.
    fn into_config(self) -> Result<Config> {
        let mut c = Config::load(self.config.as_deref())?;
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if !self.rules.is_empty() {
            c.rules = self.rules;
        }
        if !self.alerts.is_empty() {
            c.alerts = self.alerts;
        }
        c.alerts_include_suppressed |= self.alerts_include_suppressed;
        c.print_events |= self.print_events;
        if let Some(v) = self.api_token_file {
            c.api_token_file = v;
        }
        if let Some(v) = self.learn_min {
            c.learning.min = v;
        }
        if let Some(v) = self.learn_stable {
            c.learning.stable = v;
        }
        if let Some(v) = self.learn_max {
            c.learning.max = v;
        }
        if !self.cri_sockets.is_empty() {
            c.runtime.cri_sockets = self.cri_sockets;
        }
        if let Some(v) = self.log {
            c.log = v;
        }
        Ok(c)
    }
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
    let cli = Cli::parse();
    match cli.command {
        Command::DefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
        Command::Run(args) => {
            let config = args.into_config()?;
            init_logging(&config.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(habitd::run(config))
        }
    }
}

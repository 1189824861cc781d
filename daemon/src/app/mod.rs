//! `habitd run`: wires probes, attribution, the pipeline, the response, periodic kernel reads
//! and HTTP, and tears everything down on SIGINT/SIGTERM (dropping the probes detaches them).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use habit_probes::kernel_features::KernelFeatures;
use habit_probes::{ProbeConfig, Probes};
use habit_profiles::store::ProfileStore;
use std::time::SystemTime;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::alerts::Alerting;
use crate::attribution::cgroup::CgroupIndex;
use crate::attribution::cri::{self, CriRuntime};
use crate::attribution::docker::DockerRuntime;
use crate::attribution::{ContainerRuntime, ResolverConfig, RuntimeMetrics, WorkloadResolver};
use crate::config::Config;
use crate::http::api::Api;
use crate::http::{self, AppState};
use crate::learning::Engine;
use crate::learning::delivered::BaselinesDir;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::pipeline::pending::{Pending, PendingConfig, PendingMetrics};
use crate::process::{listeners, procfs};
use crate::rates::RateTracker;
use crate::response::Responder;
use crate::rules::fusion::Fusion;
use crate::sequences::SequenceTracker;
use crate::tamper::TamperWatch;

/// Longest a shutdown spends handling what the ring buffer still held.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// A ring-buffer record the decoder rejected: counted by reason, logged at debug level.
fn count_decode_error(metrics: &Metrics, e: habit_probes::decode::DecodeError) {
    metrics.decode_errors.with_label_values(&[e.reason()]).inc();
    tracing::debug!(message = "Rejected ring-buffer record.", %e);
}

/// Runs the daemon until a termination signal.
pub async fn run(config: Config) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("habitd must run as root: it loads eBPF programs into the kernel");
    }
    crate::host::set_proc(&config.host.proc);
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);

    let index = CgroupIndex::discover().context("finding the cgroup v2 hierarchy")?;
    let runtime_metrics = RuntimeMetrics::new();
    runtime_metrics
        .register(metrics.registry())
        .context("registering runtime metrics")?;
    let cri_sockets = cri::sockets(&config.runtime.cri_sockets, &config.runtime.host_root);
    let cri_runtimes: Vec<CriRuntime> = cri_sockets
        .iter()
        .map(|socket| CriRuntime::new(socket, config.runtime.timeout))
        .collect();
    tracing::info!(
        message = "Container runtimes.",
        docker = %config.runtime.docker_socket.display(),
        cri = ?cri_sockets
    );
    let mut runtimes: Vec<Box<dyn ContainerRuntime>> = cri_runtimes
        .iter()
        .map(|r| Box::new(r.clone()) as Box<dyn ContainerRuntime>)
        .collect();
    runtimes.push(Box::new(DockerRuntime::new(&config.runtime.docker_socket)));
    let resolver = Arc::new(WorkloadResolver::with_metrics(
        index,
        runtimes,
        ResolverConfig::default(),
        runtime_metrics.clone(),
    ));
    tokio::spawn(resolver.clone().supervise());
    for runtime in cri_runtimes {
        let resolver = resolver.clone();
        tokio::spawn(runtime.watch(runtime_metrics.clone(), move || {
            resolver.forget_unresolved()
        }));
    }

    let mut probes = Probes::load(&ProbeConfig {
        self_tgid: crate::host::self_tgid(),
        ring_buffer_bytes: config.probes.ring_buffer_bytes,
        empty_only: false,
        bench_floor: habit_probes::BenchFloor::SysEnter,
        force_btf_sys_exit: false,
        object: None,
    })
    .context("loading the eBPF probes")?;
    let features = probes.kernel_features().clone();
    tracing::info!(
        programs = habit_probes::loader::PROGRAMS.len() + 1,
        results = probes.result_hook().map_or("none", |h| h.as_str()),
        lockdown = %features.lockdown,
        fentry = %KernelFeatures::describe(&features.fentry),
        lsm = %KernelFeatures::describe(&features.lsm),
        kprobes = features.kprobes,
        "Probes attached (tp_btf; optional fentry/LSM/kprobe hooks are not needed)."
    );
    metrics.probes_attached.set(1);
    let mut events = probes.take_events()?;

    let store = Arc::new(open_store(&config.data_dir)?);
    let engine = Engine::open(
        store.clone(),
        config.learning.clone(),
        hostname(),
        metrics.clone(),
    )?;
    let views = engine.views();
    let mut alerting = Alerting::start(&config, &metrics)?;
    let mut responder = Responder::new(&config, &cri_sockets, &metrics, hostname())?;
    let fusion = Fusion::new(
        crate::rules::load_rules(&config),
        config.alerts_include_suppressed,
        hostname(),
        metrics.clone(),
    )
    .with_rate_drops(config.learning.rate_drop_alerts);

    let printer = config.print_events.then(|| {
        crate::pipeline::printer::EventPrinter::new(
            Box::new(std::io::stdout()),
            metrics.printed_events_dropped.clone(),
        )
    });
    let rates = RateTracker::new(config.probes.counters_interval.as_secs_f64(), &metrics);
    let sequences = SequenceTracker::new(
        config.probes.sequences,
        config.learning.false_alarm_rate,
        metrics.clone(),
    );
    let mut pipeline = Pipeline::new(
        resolver.clone(),
        metrics.clone(),
        printer,
        engine,
        fusion,
        rates,
        sequences,
    );
    let pending_metrics = PendingMetrics::new();
    pending_metrics
        .register(metrics.registry())
        .context("registering pending-event metrics")?;
    pipeline.set_pending(Pending::new(
        PendingConfig {
            max_events: config.runtime.hold_events_max,
            max_per_cgroup: (config.runtime.hold_events_max / 8).max(1),
            deadline: config.runtime.hold_events_for,
        },
        pending_metrics,
    ));
    match procfs::scan_host_processes() {
        Ok(snapshot) => {
            let listeners = listeners::existing_listeners(&snapshot);
            let seeded = listeners
                .into_iter()
                .filter(|(key, owner)| probes.seed_listener(*key, *owner).is_ok())
                .count();
            tracing::info!(
                message = "Existing processes and listeners picked up.",
                processes = snapshot.len(),
                listeners = seeded
            );
            pipeline.seed_processes(snapshot);
        }
        Err(e) => tracing::warn!(message = "Cannot scan /proc for existing processes.", %e),
    }

    let (command_tx, mut commands) = mpsc::channel(64);
    if !config.baselines_dir.as_os_str().is_empty() {
        let dir = deliver_baselines(&config.baselines_dir, &store, &metrics, &mut pipeline)?;
        tokio::spawn(dir.watch(command_tx.clone()));
    }
    let api = Arc::new(Api {
        views,
        store: store.clone(),
        commands: command_tx,
        token: read_token(&config.api_token_file)?,
    });
    let mut tamper =
        TamperWatch::new(metrics.registry(), hostname()).context("registering tamper metrics")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = Arc::new(AppState {
        tamper: tamper.reports(),
        metrics: metrics.clone(),
        probes_attached: true.into(),
        kernel_features: serde_json::json!({
            "lockdown": features.lockdown,
            "fentry": KernelFeatures::describe(&features.fentry),
            "lsm": KernelFeatures::describe(&features.lsm),
            "kprobes": features.kprobes,
            "tracefs": features.tracefs,
        }),
    });
    let mut http_stop = stop_rx.clone();
    let server = http::serve(config.listen, state.clone(), api, async move {
        let _ = http_stop.wait_for(|s| *s).await;
    })
    .await?;
    tracing::info!(message = "Listening.", addr = %config.listen);
    if let Err(e) = crate::notify::ready() {
        tracing::warn!(message = "Cannot notify systemd of readiness.", %e);
    }

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    // Each learning interval starts a new kernel de-duplication epoch, so that every file a
    // workload opens is reported once in every interval it is opened in (rarity counts
    // intervals).
    // The first interval starts now, before the loop: a `tokio::time::interval` would tick at
    // once and start a second epoch a moment after the first events, resending them.
    let mut interval_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + config.learning.interval,
        config.learning.interval,
    );
    let mut counters_tick = tokio::time::interval(config.probes.counters_interval);
    let mut second_tick = tokio::time::interval(Duration::from_secs(1));
    let mut integrity_tick = tokio::time::interval(config.probes.integrity_interval);
    // Held events are let go as soon as their container is described, also when no new
    // event arrives.
    let mut pending_tick = tokio::time::interval(Duration::from_millis(100));
    // Epoch 0 is the kernel map's initial value: the first interval began when the probes
    // were attached.
    let mut epoch = 0u64;
    let mut batch = Vec::with_capacity(4096);
    let mut alerts = Vec::new();

    loop {
        tokio::select! {
            r = events.next_batch(&mut batch, |e| count_decode_error(&metrics, e)) => {
                r?;
                pipeline.handle_batch(&batch, &mut alerts).await;
                pipeline.flush_sequences(&mut probes);
                responder.respond(&mut alerts);
                alerting.raise(&mut alerts);
            }
            _ = interval_tick.tick() => {
                epoch += 1;
                if let Err(e) = probes.set_epoch(epoch) {
                    tracing::warn!(message = "Cannot advance the de-duplication interval.", %e);
                }
            }
            _ = counters_tick.tick() => {
                pipeline.read_kernel_counters(&mut probes, config.probes.counters_interval, &mut alerts).await;
                responder.respond(&mut alerts);
                alerting.raise(&mut alerts);
            }
            _ = integrity_tick.tick() => {
                match probes.check_integrity() {
                    Ok(found) => tamper.observe(found, SystemTime::now(), &mut alerts),
                    Err(e) => tracing::warn!(message = "Cannot check the probes' integrity.", %e),
                }
                alerting.raise(&mut alerts);
            }
            _ = second_tick.tick() => {
                let now = SystemTime::now();
                pipeline.tick(now, &mut alerts);
                alerting.raise(&mut alerts);
                alerting.tick(now);
            }
            _ = pending_tick.tick() => {
                pipeline.release_pending(&mut alerts).await;
                responder.respond(&mut alerts);
                alerting.raise(&mut alerts);
            }
            Some(response) = responder.finished() => alerting.raise(&mut vec![response]),
            Some(command) = commands.recv() => pipeline.command(command),
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
        }
    }
    let _ = stop_tx.send(true);
    state.probes_attached.store(false, Ordering::Release);
    drop(probes);
    tracing::info!("Probes detached.");
    // What the programs wrote before they were detached is handled, not lost; bounded, so
    // that a stuck runtime cannot hold the shutdown.
    events.finish();
    let _ = tokio::time::timeout(SHUTDOWN_DRAIN, async {
        while events
            .next_batch(&mut batch, |e| count_decode_error(&metrics, e))
            .await
            .is_ok()
        {
            pipeline.handle_batch(&batch, &mut alerts).await;
            responder.respond(&mut alerts);
            alerting.raise(&mut alerts);
        }
    })
    .await;
    drop(events);
    pipeline.release_all_pending(&mut alerts).await;
    alerting.raise(&mut alerts);
    pipeline.shutdown();
    alerting.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    if pipeline.store_failed_for_good() {
        // Closing a store whose write failed waits forever for its flush: exit without
        // closing it (what was flushed is recovered at the next start, as after a crash).
        tracing::warn!("The store failed a write: exiting without closing it.");
        std::process::exit(0);
    }
    Ok(())
}

/// Imports the baselines delivered in `dir` before the first event is handled, so that their
/// workloads detect from their first event; returns the directory to watch for changes.
fn deliver_baselines(
    dir: &std::path::Path,
    store: &Arc<ProfileStore>,
    metrics: &Metrics,
    pipeline: &mut Pipeline,
) -> Result<BaselinesDir> {
    let mut baselines = BaselinesDir::open(dir, store.clone(), metrics.baseline_files.clone())?;
    for delivery in baselines.changed() {
        let (command, mut result) = delivery.command();
        // The engine answers on this task, before `command` returns.
        pipeline.command(command);
        let result = result
            .try_recv()
            .context("the engine did not answer an import")?;
        baselines.imported(&delivery, result);
    }
    Ok(baselines)
}

/// Opens the baseline store, creating its directory (0700: baselines describe workloads).
fn open_store(dir: &std::path::Path) -> Result<ProfileStore> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let _ = std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
    ProfileStore::open(dir).with_context(|| format!("cannot open the store in {}", dir.display()))
}

/// The API token: the trimmed content of the file, `None` when no file is configured.
fn read_token(path: &std::path::Path) -> Result<Option<String>> {
    if path.as_os_str().is_empty() {
        tracing::warn!(
            "No --api-token-file: state-changing API calls (mode, baseline import) are refused."
        );
        return Ok(None);
    }
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the API token file {}", path.display()))?;
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!("the API token file {} is empty", path.display());
    }
    Ok(Some(token))
}

/// This node's name (provenance of learned items, `hostname` of alerts).
pub fn hostname() -> String {
    // In a Kubernetes pod the UTS hostname is the pod's: the chart passes the node's name.
    if let Ok(node) = std::env::var("NODE_NAME")
        && !node.is_empty()
    {
        return node;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

//! `habitd run`: wires probes, attribution, the pipeline, periodic kernel reads and HTTP, and
//! tears everything down on SIGINT/SIGTERM (dropping the probes detaches them).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use habit_probes::{ProbeConfig, Probes};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::Config;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::resolve::cgroup::CgroupIndex;
use crate::resolve::docker::DockerRuntime;
use crate::resolve::{ContainerRuntime, WorkloadResolver, procfs};

/// Runs the daemon until a termination signal.
pub async fn run(config: Config) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("habitd must run as root: it loads eBPF programs into the kernel");
    }
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);

    let index = CgroupIndex::discover().context("finding the cgroup v2 hierarchy")?;
    let runtimes: Vec<Box<dyn ContainerRuntime>> =
        vec![Box::new(DockerRuntime::new(&config.runtime.docker_socket))];
    let resolver = Arc::new(WorkloadResolver::new(index, runtimes));

    let mut probes = Probes::load(&ProbeConfig {
        self_tgid: std::process::id(),
        ring_buffer_bytes: config.probes.ring_buffer_bytes,
        empty_only: false,
    })
    .context("loading the eBPF probes")?;
    let caps = probes.capabilities().clone();
    tracing::info!(
        programs = habit_probes::loader::PROGRAMS.len(),
        lockdown = %caps.lockdown,
        fentry = caps.fentry,
        lsm = caps.lsm,
        kprobes = caps.kprobes,
        "Probes attached (tp_btf; optional fentry/LSM/kprobe hooks are not needed)."
    );
    metrics.probes_attached.set(1);
    let mut events = probes.take_events()?;

    let printer: Option<Box<dyn std::io::Write + Send>> = config
        .print_events
        .then(|| Box::new(std::io::BufWriter::new(std::io::stdout())) as _);
    let mut pipeline = Pipeline::new(resolver.clone(), metrics.clone(), printer);
    match procfs::scan_host_processes() {
        Ok(snapshot) => {
            tracing::info!(
                message = "Existing processes picked up.",
                count = snapshot.len()
            );
            pipeline.seed_processes(snapshot);
        }
        Err(e) => tracing::warn!(message = "Cannot scan /proc for existing processes.", %e),
    }

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let state = Arc::new(AppState {
        metrics: metrics.clone(),
        probes_attached: true.into(),
        capabilities: serde_json::json!({
            "lockdown": caps.lockdown,
            "fentry": caps.fentry,
            "lsm": caps.lsm,
            "kprobes": caps.kprobes,
            "tracefs": caps.tracefs,
        }),
    });
    let mut http_stop = stop_rx.clone();
    let server = http::serve(config.listen, state.clone(), async move {
        let _ = http_stop.wait_for(|s| *s).await;
    })
    .await?;
    tracing::info!(message = "Listening.", addr = %config.listen);

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut dedup_tick = tokio::time::interval(config.probes.dedup_interval);
    let mut counters_tick = tokio::time::interval(config.probes.counters_interval);
    let mut epoch = 0u64;
    let mut batch = Vec::with_capacity(4096);

    loop {
        tokio::select! {
            r = events.next_batch(&mut batch, |e| {
                metrics.decode_errors.with_label_values(&[e.reason()]).inc();
                tracing::debug!(message = "Rejected ring-buffer record.", %e);
            }) => {
                r?;
                pipeline.handle_batch(&batch).await;
            }
            _ = dedup_tick.tick() => {
                epoch += 1;
                if let Err(e) = probes.set_epoch(epoch) {
                    tracing::warn!(message = "Cannot advance the de-duplication interval.", %e);
                }
            }
            _ = counters_tick.tick() => {
                read_kernel_counters(&mut probes, &resolver, &metrics).await;
            }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = stop_rx.changed() => break,
        }
    }
    let _ = stop_tx.send(true);
    state.probes_attached.store(false, Ordering::Release);
    drop(events);
    drop(probes);
    tracing::info!("Probes detached.");
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

/// Reads the in-kernel syscall counters and drop counters into metrics, and returns the
/// counter slots of cgroups that no longer exist.
async fn read_kernel_counters(probes: &mut Probes, resolver: &WorkloadResolver, metrics: &Metrics) {
    match probes.counters.read_syscalls() {
        Ok(deltas) => {
            for d in deltas {
                let workload = resolver.resolve(d.cgroup_id, None).await;
                if workload.is_unresolved() {
                    // Keep the counts until the runtime has described the container.
                    probes.counters.defer(&d);
                    continue;
                }
                let total: u64 = d.counts.iter().map(|(_, c)| c).sum();
                tracing::debug!(message = "Syscalls counted.", cgroup_id = d.cgroup_id, workload = %workload.key, total);
                metrics
                    .syscalls
                    .with_label_values(&[workload.key.as_str()])
                    .inc_by(total);
            }
        }
        Err(e) => tracing::warn!(message = "Cannot read syscall counters.", %e),
    }
    match probes.counters.read_drops() {
        Ok(drops) => {
            for (reason, cpu, total) in drops {
                let counter = metrics
                    .kernel_drops
                    .with_label_values(&[reason, &cpu.to_string()]);
                Metrics::mirror(&counter, total);
            }
        }
        Err(e) => tracing::warn!(message = "Cannot read drop counters.", %e),
    }
    release_dead_cgroups(probes, resolver);
    metrics
        .workloads_cached
        .set(resolver.cached_cgroups() as i64);
}

/// Frees the counter slots (and resolver entries) of cgroups that were removed.
fn release_dead_cgroups(probes: &mut Probes, resolver: &WorkloadResolver) {
    let index = resolver.index();
    if let Err(e) = index.refresh() {
        tracing::debug!(message = "cgroup index refresh failed.", %e);
        return;
    }
    for cgroup_id in probes.counters.counted_cgroups() {
        if index.lookup(cgroup_id).is_none() {
            tracing::debug!(
                message = "Releasing the counter slot of a removed cgroup.",
                cgroup_id
            );
            if let Err(e) = probes.counters.release_cgroup(cgroup_id) {
                tracing::warn!(message = "Cannot release a counter slot.", cgroup_id, %e);
            }
            resolver.forget(cgroup_id);
        }
    }
}
